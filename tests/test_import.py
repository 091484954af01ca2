"""`ctn import` (issue #18, item 2): existing labels (a PASCAL-MT-layout folder, per-task PNG
or TIFF folders) into a label store, as ground truth or as pseudo-labels to correct.

The round trip runs the real commands: `ctn synth` -> `ctn export` -> `ctn import`, and
the imported store's labels equal the synth store's, array for array. Two things differ by
design and are asserted as such: a task whose map holds no labelled pixel (parts of a scene
without a person: all 255) is no label of the image, so an export leaves it out (png) or
fills it with an all-ignore file (pascal-mt) and the import leaves it out; and normals
come back within the PNG encoding's rounding: each component within 2/255 of the stored
vector (decoded and renormalised to unit length, docs/export.md), exact from TIFF.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from composite_tasking.image_ids import image_ids
from composite_tasking.import_labels import ImportLabelsError, detect_layout, import_labels
from composite_tasking.store import LabelStore, StoreError
from composite_tasking.tasks import IGNORE, TASK_NAMES, palette_value
from test_datasets import pascal_root  # noqa: F401  (a fixture: a tiny PASCAL-MT in its own files)

#: normals after the PNG encoding: each component within 2/255 (docs/export.md)
NORMALS_PNG_TOL = 2 / 255


def ctn(*args, timeout=180):
    return subprocess.run([sys.executable, "-m", "composite_tasking.cli", *map(str, args)],
                          check=False, capture_output=True, text=True, timeout=timeout)  # fmt: skip


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """`ctn synth --n 3 --size 48x64`, and its ground truth exported as pascal-mt and png."""
    root = tmp_path_factory.mktemp("world")
    res = ctn("synth", root / "synth", "--n", 3, "--size", "48x64")
    assert res.returncode == 0, res.stderr
    out = {"root": root, "store": root / "synth" / "ground-truth.zarr"}
    for fmt in ("pascal-mt", "png"):
        res = ctn("export", out["store"], root / fmt, "--format", fmt)
        assert res.returncode == 0, res.stderr
        out[fmt] = root / fmt
    return out


def assert_same_labels(original: Path, imported: Path, normals_tol: float) -> None:
    """Every image, every task: the same array (a task absent on one side: all ignore on
    the other), the same provenance for every task with labels."""
    a, b = LabelStore(original), LabelStore(imported)
    assert b.ids() == a.ids()
    for image_id in a.ids():
        sa, sb = a.read_sample(image_id), b.read_sample(image_id)
        assert sb.shape == sa.shape
        for task in TASK_NAMES:
            want, got = sa.labels.get(task), sb.labels.get(task)
            if got is None:  # left out: only a map without one labelled pixel
                assert want is None or not sa.valid[task].any(), (image_id, task)
                continue
            assert want is not None, (image_id, task)
            assert sb.provenance[task] == sa.provenance[task] == "ground-truth"
            if task == "normals":
                assert np.array_equal(np.any(got != 0, -1), np.any(want != 0, -1))
                assert np.abs(got - want).max() <= normals_tol, (image_id, np.abs(got - want).max())
            else:
                assert got.dtype == np.uint8 and np.array_equal(got, want), (image_id, task)
        assert sb.palette is None and sb.image.shape == sa.image.shape


# -------------------------------------------------------------------------- round trips


def test_pascal_mt_export_imports_back_to_the_synth_store(world, tmp_path):
    store = tmp_path / "back.zarr"
    res = ctn("import", world["pascal-mt"], store)
    assert res.returncode == 0, res.stderr
    assert "imported 3 image(s)" in res.stdout and "(pascal-mt, as ground-truth)" in res.stdout
    assert "skipped 0" in res.stdout
    assert_same_labels(world["store"], store, NORMALS_PNG_TOL)
    # a scene without a person: parts all 255 in the synth store, left out here
    gt = LabelStore(world["store"])
    assert any(not gt.read_sample(i).valid["parts"].any() for i in gt.ids())
    # the image is the JPEG's pixels, each recording its file: ctn label (and ctn
    # annotate) of these files find them under these ids
    s = LabelStore(store)
    jpegs = sorted((world["pascal-mt"] / "JPEGImages").iterdir())
    assert image_ids(jpegs, [world["pascal-mt"] / "JPEGImages"], s) == s.ids()
    first = s.read_sample(s.ids()[0])
    assert first.image_source == str(jpegs[0].resolve())
    assert np.array_equal(first.image, np.asarray(Image.open(jpegs[0]).convert("RGB")))
    # the same command again: nothing to do, nothing skipped
    res = ctn("import", world["pascal-mt"], store)
    assert res.returncode == 0, res.stderr
    assert "imported 0 image(s)" in res.stdout and "3 already in the store with these labels" in res.stdout


def test_png_export_imports_back_pixels_too(world, tmp_path):
    store = tmp_path / "back.zarr"
    res = ctn("import", world["png"], store, "--layout", "png")
    assert res.returncode == 0, res.stderr
    assert_same_labels(world["store"], store, NORMALS_PNG_TOL)
    a, b = LabelStore(world["store"]), LabelStore(store)
    for image_id in a.ids():  # lossless images: the same pixels
        assert np.array_equal(b.read_sample(image_id).image, a.image_pixels(a.read_sample(image_id)))


def test_tiff_export_imports_back_normals_exactly(world, tmp_path):
    pytest.importorskip("tifffile")  # the tiff layout's normals are float32 TIFFs
    res = ctn("export", world["store"], tmp_path / "tiff", "--format", "tiff")
    assert res.returncode == 0, res.stderr
    assert detect_layout(tmp_path / "tiff") == "tiff"
    summary = import_labels(tmp_path / "tiff", tmp_path / "back.zarr")
    assert summary.ok and len(summary.imported) == 3
    assert_same_labels(world["store"], tmp_path / "back.zarr", normals_tol=0.0)


def test_a_folder_that_is_no_export_gets_the_ids_ctn_label_gives(world, tmp_path):
    """micro-sam style: images/ and a semseg/ folder of PNGs, no manifest; the label of
    a TIFF image is a PNG with the image's name."""
    root = tmp_path / "seg"
    (root / "images" / "day1").mkdir(parents=True)
    (root / "semseg" / "day1").mkdir(parents=True)
    src = sorted((world["png"] / "images").iterdir())
    shutil.copy(src[0], root / "images" / "day1" / "a.png")
    Image.open(src[1]).save(root / "images" / "day1" / "b.tif")
    shutil.copy(world["png"] / "semseg" / src[0].name, root / "semseg" / "day1" / "a.png")
    shutil.copy(world["png"] / "semseg" / src[1].name, root / "semseg" / "day1" / "b.png")
    summary = import_labels(root, tmp_path / "s.zarr", tasks="seg")
    assert summary.ok and summary.tasks == {"semseg": 2}
    files = [root / "images/day1/a.png", root / "images/day1/b.tif"]
    assert summary.imported == image_ids(files, [root / "images"]) == ["day1__a.png", "day1__b.tif"]
    want = np.asarray(Image.open(world["png"] / "semseg" / src[1].name))
    assert np.array_equal(LabelStore(tmp_path / "s.zarr").read_sample("day1__b.tif").labels["semseg"], want)


def test_pascal_mt_files_read_as_the_loader_reads_them(pascal_root, tmp_path):
    """PASCAL-MT's own files (parts as PASCAL-Part .mat, edges from the LabelMap, normals
    masked to NYU classes, semseg under pascal-context; test_datasets' fixture): what
    PascalMT.load gives, and the ids ctn label gives the JPEGs."""
    from composite_tasking.datasets import PascalMT

    summary = import_labels(pascal_root, tmp_path / "p.zarr")
    assert summary.ok and summary.imported == ["2008_000001.jpg", "2008_000002.jpg", "2008_000003.jpg"]
    s = LabelStore(tmp_path / "p.zarr")
    for split in ("train", "val"):
        loader = PascalMT(pascal_root, split)
        for name in loader.ids:
            want, got = loader.load(name), s.read_sample(f"{name}.jpg")
            assert np.array_equal(got.image, want["image"])
            for task in TASK_NAMES:
                if task not in got.labels:  # no labelled pixel (a scene without a person's parts)
                    assert not (np.any(want[task] != 0, -1) if task == "normals" else want[task] != IGNORE).any()
                    continue
                assert np.array_equal(got.labels[task], want[task]), (name, task)
    assert set(s.read_sample("2008_000001.jpg").labels) == set(TASK_NAMES)


# -------------------------------------------------------------------------- pseudo-labels


def test_as_pseudo_gives_a_palette_napari_opens_for_correction(world, tmp_path):
    store = tmp_path / "pseudo.zarr"
    res = ctn("import", world["png"], store, "--as", "pseudo", "--tasks", "parts,saliency")
    assert res.returncode == 0, res.stderr
    assert "left out where the palette asks for an earlier task" in res.stdout and "saliency" in res.stdout
    s, gt = LabelStore(store), LabelStore(world["store"])
    for image_id in s.ids():
        got, want = s.read_sample(image_id), gt.read_sample(image_id)
        parts_px = want.labels["parts"] != IGNORE
        # the palette asks for parts where parts has labels, for saliency everywhere else
        expected = np.where(parts_px, palette_value("parts"), palette_value("saliency"))
        assert np.array_equal(got.palette, expected)
        assert set(got.provenance.values()) == {"pseudo"} and got.attrs["palette_origin"] == "import"
        # synth parts are dense (0 off the person) when a person is in view, else all 255
        if parts_px.any():
            assert np.array_equal(got.labels["parts"], want.labels["parts"]) and "saliency" not in got.labels
        else:
            assert "parts" not in got.labels and np.array_equal(got.labels["saliency"], want.labels["saliency"])
    assert {len(s.read_sample(i).labels) for i in s.ids()} == {1}  # one image of each kind at least
    assert len({tuple(s.read_sample(i).labels) for i in s.ids()}) == 2
    # ctn label sees pseudo-labels (not a person's work), the annotator opens them
    from composite_tasking.label.settings import person_made

    assert not any(person_made(r) for r in s.image_records().values())
    pytest.importorskip("napari")
    from composite_tasking._napari.palette_layer import METADATA_KEY, PALETTE_KIND
    from composite_tasking._napari.store_io import read_store
    from composite_tasking._napari.task_layers import TASK_KIND

    for image_id in s.ids():
        own = [a["metadata"][METADATA_KEY] for _, a, kind in read_store(str(store), ids=[image_id])
               if kind == "labels"]  # fmt: skip
        assert [o["kind"] for o in own].count(PALETTE_KIND) == 1
        tasks = {(o["task"], o["provenance"]) for o in own if o["kind"] == TASK_KIND}
        assert tasks == {(t, "pseudo") for t in s.read_sample(image_id).labels}  # the labels to correct


def test_a_pixel_labelled_by_several_tasks_asks_for_the_first_in_tasks_order(tmp_path):
    """Partial labels: semseg on the left half only (255 on the right), saliency everywhere."""
    root = tmp_path / "f"
    for d in ("images", "semseg", "sal"):
        (root / d).mkdir(parents=True)
    Image.fromarray(np.full((8, 10, 3), 90, np.uint8)).save(root / "images" / "a.png")
    sem = np.full((8, 10), IGNORE, np.uint8)
    sem[:, :4] = 15
    sal = np.ones((8, 10), np.uint8)
    Image.fromarray(sem).save(root / "semseg" / "a.png")
    Image.fromarray(sal).save(root / "sal" / "a.png")
    for order, first in (("semseg,saliency", "semseg"), ("saliency,semseg", "saliency")):
        summary = import_labels(root, tmp_path / f"{first}.zarr", as_="pseudo", tasks=order)
        got = LabelStore(tmp_path / f"{first}.zarr").read_sample("a.png")
        if first == "semseg":
            assert np.array_equal(got.palette[:, :4], np.full((8, 4), palette_value("semseg")))
            assert np.array_equal(got.palette[:, 4:], np.full((8, 6), palette_value("saliency")))
            assert np.array_equal(got.labels["saliency"][:, :4], np.full((8, 4), IGNORE))
            assert got.valid["semseg"].sum() == 32 and got.valid["saliency"].sum() == 48
            assert summary.left_out == {"saliency": 32}
        else:
            assert (got.palette == palette_value("saliency")).all() and "semseg" not in got.labels
            assert summary.left_out == {"semseg": 32}
        assert summary.ok and got.provenance == {t: "pseudo" for t in got.labels}


def test_pseudo_labels_never_replace_a_persons_work(world, tmp_path):
    store = tmp_path / "s.zarr"
    assert import_labels(world["png"], store, as_="pseudo", tasks="semseg").ok
    ls = LabelStore(store, mode="r+")
    first = ls.ids()[0]
    fixed = ls.read_sample(first).labels["semseg"].copy()
    fixed[:4] = 0 if fixed[0, 0] else 1
    ls.correct(first, {"semseg": fixed})
    summary = import_labels(world["png"], store, as_="pseudo", tasks="semseg", overwrite=True)
    assert [w for w, _ in summary.skipped] == [str(world["png"] / "images" / f"{first}.png")]
    assert "a person's work" in summary.skipped[0][1]
    assert np.array_equal(LabelStore(store).read_sample(first).labels["semseg"], fixed)
    assert summary.unchanged == ls.ids()[1:]


# ------------------------------------------------------------------- bad files, the store


def test_bad_files_are_named_and_skipped_the_rest_imported(world, tmp_path):
    root = tmp_path / "bad"
    shutil.copytree(world["png"], root)
    ids = sorted(p.stem for p in (root / "images").iterdir())
    Image.fromarray(np.zeros((40, 64), np.uint8)).save(root / "semseg" / f"{ids[0]}.png")  # another size
    Image.fromarray(np.full((48, 64), 30, np.uint8)).save(root / "edges" / f"{ids[1]}.png")  # 30: no edge value
    Image.fromarray(np.zeros((48, 64), np.uint8)).save(root / "saliency" / "lost.png")  # no image
    (root / "semseg" / "README.txt").write_text("class ids 0..20")  # no label: not read, not named
    res = ctn("import", root, tmp_path / "s.zarr")
    assert res.returncode == 1, res.stderr
    assert "imported 1 image(s)" in res.stdout and "skipped 3" in res.stdout
    lines = res.stdout.splitlines()
    assert any(f"skipped {root / 'semseg' / ids[0]}.png: the label is 40x64" in ln and "its image 48x64" in ln
               for ln in lines)  # fmt: skip
    assert any(f"skipped {root / 'edges' / ids[1]}.png: class value 30 is not 0..1 or 255" in ln for ln in lines)
    assert any(f"skipped {root / 'saliency' / 'lost.png'}: saliency labels with no image" in ln for ln in lines)
    assert "README" not in res.stdout
    assert LabelStore(tmp_path / "s.zarr").ids() == [ids[2]]
    # an unreadable file, through the API
    (root / "normals" / f"{ids[2]}.png").write_bytes(b"not a png")
    summary = import_labels(root, tmp_path / "t.zarr", tasks="normals")
    assert [(w, "cannot read" in why) for w, why in summary.skipped][-1] == (str(root / "normals" / f"{ids[2]}.png"),
                                                                              True)  # fmt: skip
    assert summary.imported == ids[:2]


def test_other_labels_in_the_store_are_kept_unless_overwrite(world, tmp_path):
    store = tmp_path / "s.zarr"
    root = tmp_path / "png"
    shutil.copytree(world["png"], root)
    assert import_labels(root, store, tasks="semseg,edges").ok
    first = LabelStore(store).ids()[0]
    before = LabelStore(store).read_sample(first).labels["semseg"].copy()
    sem = np.asarray(Image.open(root / "semseg" / f"{first}.png")).copy()
    sem[:5] = 0 if sem[0, 0] else 1
    Image.fromarray(sem).save(root / "semseg" / f"{first}.png")
    summary = import_labels(root, store, tasks="semseg,edges")
    assert not summary.ok and summary.imported == [] and len(summary.unchanged) == 2
    assert "--overwrite replaces it" in summary.skipped[0][1] and first in summary.skipped[0][1]
    assert np.array_equal(LabelStore(store).read_sample(first).labels["semseg"], before)  # kept
    summary = import_labels(root, store, tasks="semseg,edges", overwrite=True)
    assert summary.ok and summary.imported == summary.replaced == [first]
    assert np.array_equal(LabelStore(store).read_sample(first).labels["semseg"], sem)


def test_usage_errors_exit_2_and_write_nothing(world, tmp_path):
    store = tmp_path / "s.zarr"
    res = ctn("import", tmp_path / "missing", store)
    assert res.returncode == 2 and "no such folder" in res.stderr
    res = ctn("import", world["png"], store, "--layout", "coco")
    assert res.returncode == 2 and "invalid choice: 'coco'" in res.stderr
    res = ctn("import", world["png"], store, "--tasks", "depth")
    assert res.returncode == 2 and "unknown task 'depth'" in res.stderr
    res = ctn("import", world["root"] / "synth", store)  # images/ with no task folder
    assert res.returncode == 2 and "nothing to import" in res.stderr
    assert not store.exists()
    other = tmp_path / "notes"
    other.mkdir()
    (other / "a.txt").write_text("mine")
    with pytest.raises(StoreError, match="not a label store"):
        import_labels(world["png"], other)
    assert [p.name for p in other.iterdir()] == ["a.txt"]
    with pytest.raises(ImportLabelsError, match="neither a PASCAL-MT folder"):
        import_labels(other, store)
    with pytest.raises(ImportLabelsError, match="no JPEGImages/ folder"):
        import_labels(world["png"], store, layout="pascal-mt")
    assert not store.exists()


def test_a_full_disk_stops_with_exit_3_and_what_was_written_stays_complete(world, tmp_path, monkeypatch, capsys):
    from composite_tasking import cli

    real = LabelStore.write_sample
    calls = []

    def full_after_one(self, *args, **kwargs):
        calls.append(args[0])
        if len(calls) > 1:
            raise OSError(28, "No space left on device", str(self.path))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(LabelStore, "write_sample", full_after_one)
    store = tmp_path / "s.zarr"
    assert cli.main(["import", str(world["png"]), str(store)]) == 3
    assert "No space left on device" in capsys.readouterr().err
    assert LabelStore(store).ids() == calls[:1]  # the image written before: complete
    monkeypatch.setattr(LabelStore, "write_sample", real)
    assert cli.main(["import", str(world["png"]), str(store)]) == 0  # the same command finishes it
    assert "imported 2 image(s)" in capsys.readouterr().out and len(LabelStore(store).ids()) == 3
