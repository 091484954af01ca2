"""`ctn label`'s contact sheet (issue #18): made from the store after the run (a re-run,
a resumed run and a shard show the first complete images of all the inputs), laid out
with titles, names and a legend, pictures letterboxed to keep their aspect, written
atomically, and a failure to write it named as the preview's, not the store's.

A tiny random CTN on the CPU, the mosaic rule, images of 48 x 64 pixels, each one solid
colour of its own so that it can be found on the sheet.
"""

import errno
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from PIL import Image, ImageDraw

from composite_tasking import cli
from composite_tasking.label import label_images
from composite_tasking.store import LabelStore

pytestmark = pytest.mark.usefixtures("one_thread")

THUMB = 160
TITLES = ("image", "Task Palette", "pseudo-labels")
# far from the task and class colours, grey, black and white, and from any unit normal's
# (n + 1) / 2 (these would need |n| > 1.1)
COLOURS = [(230, 20, 200), (20, 200, 230), (200, 230, 20), (120, 20, 230), (230, 120, 20)]


@pytest.fixture(scope="module")
def predictor(tiny_checkpoint):
    from composite_tasking.inference import Predictor

    return Predictor(tiny_checkpoint, device="cpu")


def write_images(folder: Path, sizes) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for k, size in enumerate(sizes):
        names.append(f"im-{k}.png")
        iio.imwrite(folder / names[-1], np.full((*size, 3), COLOURS[k], np.uint8))
    return names


def run(folder, out, predictor, **kw):
    return label_images([folder], out, rule="mosaic", model=predictor, batch_size=2, pipeline=False, **kw)


def found(sheet: np.ndarray) -> dict[int, tuple[int, int, int, int]]:
    """Image k's picture on the sheet: (top, bottom, left, right), ends exclusive."""
    out = {}
    for k, colour in enumerate(COLOURS):
        ys, xs = np.nonzero(np.all(np.abs(sheet[..., :3].astype(int) - colour) <= 2, axis=-1))
        if len(ys):
            out[k] = (ys.min(), ys.max() + 1, xs.min(), xs.max() + 1)
    return out


def rows_in_order(sheet: np.ndarray) -> list[int]:
    """The images shown in the image column, top to bottom."""
    boxes = found(sheet)
    assert all(right <= THUMB for _, _, _, right in boxes.values()), boxes  # the first column only
    return sorted(boxes, key=lambda k: boxes[k][0])


def store_files(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_a_full_disk_names_the_preview_leaves_no_temporary_file_and_a_rerun_writes_it(
        tmp_path, tiny_checkpoint, monkeypatch, capsys):  # fmt: skip
    folder = tmp_path / "in"
    write_images(folder, [(48, 64)] * 3)
    out, preview = tmp_path / "s.zarr", tmp_path / "sheets" / "s-preview.png"
    args = ["label", str(folder), "--out", str(out), "--rule", "mosaic", "--model", str(tiny_checkpoint),
            "--device", "cpu", "--preview", str(preview)]  # fmt: skip
    save = Image.Image.save

    def disk_full(self, fp, *a, **kw):  # writes a part, then the disk is full
        if hasattr(fp, "write"):
            fp.write(b"\x89PNG\r\n\x1a\n")
        else:
            Path(fp).write_bytes(b"\x89PNG\r\n\x1a\n")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", disk_full)
    assert cli.main(args) == 1  # partial: the labels are complete, the preview missing
    err = capsys.readouterr().err
    assert f"the preview {preview} was not written: No space left on device" in err, err
    assert "store" in err and "is valid" in err and "stopped" not in err, err
    assert LabelStore(out).ids() == ["im-0.png", "im-1.png", "im-2.png"]
    assert sorted(p.name for p in (tmp_path / "sheets").iterdir()) == []  # no temporary file, no preview

    monkeypatch.setattr(Image.Image, "save", save)
    before = store_files(out)
    assert cli.main(args) == 0
    stdout = capsys.readouterr().out
    assert "labelled 0 image(s)" in stdout and "3 already complete" in stdout and f"preview: {preview}" in stdout
    assert rows_in_order(iio.imread(preview)) == [0, 1, 2]  # every image, though none was labelled now
    assert sorted(p.name for p in (tmp_path / "sheets").iterdir()) == ["s-preview.png"]
    assert store_files(out) == before  # the preview only reads the store


def test_a_failed_preview_is_in_the_summary_not_raised(tmp_path, predictor, monkeypatch):
    folder = tmp_path / "in"
    write_images(folder, [(48, 64)] * 2)

    def disk_full(self, fp, *a, **kw):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", disk_full)
    preview = tmp_path / "p.png"
    summary = run(folder, tmp_path / "s.zarr", predictor, preview=preview)
    assert summary.done == ["im-0.png", "im-1.png"] and summary.preview is None and not summary.ok
    assert str(preview) in summary.preview_error and "No space left on device" in summary.preview_error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "s.zarr"]


def test_after_an_interrupted_run_and_a_resume_the_preview_shows_both_runs_images(tmp_path, predictor):
    folder = tmp_path / "in"
    names = write_images(folder, [(48, 64)] * 5)
    out, preview = tmp_path / "s.zarr", tmp_path / "p.png"
    polls = []
    first = run(folder, out, predictor, preview=preview, should_stop=lambda: polls.append(1) or len(polls) > 1)
    assert first.stopped and first.done == names[:2]
    assert rows_in_order(iio.imread(preview)) == [0, 1]
    second = run(folder, out, predictor, preview=preview)
    assert second.done == names[2:] and second.skipped_complete == names[:2]
    assert rows_in_order(iio.imread(preview)) == [0, 1, 2, 3, 4]  # a row per image, in input order


def test_each_shards_preview_shows_the_first_complete_images_of_all_inputs(tmp_path, predictor):
    folder = tmp_path / "in"
    write_images(folder, [(48, 64)] * 5)
    out = tmp_path / "s.zarr"
    run(folder, out, predictor, preview=tmp_path / "0.png", shard=(0, 2))
    assert rows_in_order(iio.imread(tmp_path / "0.png")) == [0, 2, 4]  # shard 1 has not run yet
    run(folder, out, predictor, preview=tmp_path / "1.png", shard=(1, 2))
    assert rows_in_order(iio.imread(tmp_path / "1.png")) == [0, 1, 2, 3, 4]


def test_a_non_square_image_keeps_its_aspect(tmp_path, predictor):
    folder = tmp_path / "in"
    write_images(folder, [(48, 64), (64, 48)])  # landscape, portrait
    summary = run(folder, tmp_path / "s.zarr", predictor, preview=tmp_path / "p.png")
    boxes = found(iio.imread(summary.preview))
    (t0, b0, l0, r0), (t1, b1, l1, r1) = boxes[0], boxes[1]
    assert (b0 - t0, r0 - l0) == (120, 160)  # 48 x 64 fitted into 160 x 160: 120 x 160
    assert (b1 - t1, r1 - l1) == (160, 120)
    assert l1 == 20  # centred in its box


def test_the_sheet_has_column_titles_names_and_a_legend(tmp_path, predictor, monkeypatch):
    folder = tmp_path / "in"
    names = write_images(folder, [(48, 64)] * 3)
    drawn = []
    text = ImageDraw.ImageDraw.text

    def recording(self, xy, txt, *a, **kw):
        drawn.append(txt)
        return text(self, xy, txt, *a, **kw)

    monkeypatch.setattr(ImageDraw.ImageDraw, "text", recording)
    summary = run(folder, tmp_path / "s.zarr", predictor, preview=tmp_path / "p.png")
    sheet = iio.imread(summary.preview)
    assert set(TITLES) <= set(drawn) and set(names) <= set(drawn)
    palettes = [LabelStore(summary.store).read_sample(i).palette for i in names]
    from composite_tasking.tasks import TASKS

    asked = [t.name for t in TASKS if any((p == t.palette_value).any() for p in palettes)]
    assert asked and set(asked) <= set(drawn)  # the legend names the palette's tasks
    boxes = found(sheet)
    top = min(t for t, _, _, _ in boxes.values())
    # above the pictures: the title band, with black text in it
    assert top > 20 and (sheet[: top - 20, :, :3].max(axis=-1) < 100).any()
    # between a row's picture (its box: 20 px of letterbox under it) and the next: its id
    order = sorted(boxes, key=lambda k: boxes[k][0])
    for k, nxt in zip(order, order[1:]):
        band = sheet[boxes[k][1] + 20 : boxes[nxt][0] - 20, :THUMB, :3]
        assert band.size and (band.max(axis=-1) < 100).any(), k
    # taller than the pictures alone: titles, names and the legend
    assert sheet.shape[0] > len(names) * (THUMB + 2) + 3 * 12
