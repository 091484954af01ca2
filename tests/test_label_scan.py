"""How `ctn label` finds image files and names them (issue #18): an unreadable subfolder
is skipped and named (exit 1), not a stop that blames the store (exit 3); another name
of an image found already (a symbolic link) is said in the summary, a symbolic link loop
is named as one; the images of `ctn synth` labelled into their ground-truth store keep
their ids (ground truth kept, nothing labelled twice); ids keep the letters of any
script; a store whose ids an earlier version made ASCII-only resumes under them.

Real files on disk (images of 48 x 64 pixels), a tiny random CTN on the CPU; `ctn label`
as a subprocess, or in-process (`cli.main`) where a folder is made unreadable by a
monkeypatch (root reads every folder).
"""

import errno
import os
import re
import shutil
import subprocess
import sys
import unicodedata

import numpy as np
import pytest
from PIL import Image

from composite_tasking.store import LabelStore

pytestmark = pytest.mark.usefixtures("one_thread")

CTN = [sys.executable, "-m", "composite_tasking.cli"]
ENV = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
ENV.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
ROOT = os.geteuid() == 0


def ctn(*args, timeout=300):
    return subprocess.run([*CTN, *map(str, args)], capture_output=True, text=True, timeout=timeout, env=ENV)


def label(*args, ckpt):
    return ctn("label", *args, "--model", ckpt, "--device", "cpu", "--rule", "mosaic", "--no-preview")


def png(path, seed=0, size=(48, 64)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
    return path


def counts(text):
    """(labelled, already complete, skipped) from the summary line."""
    m = re.search(r"labelled (\d+) image\(s\) into .*; (\d+) already complete; (\d+) skipped", text)
    assert m, text
    return tuple(map(int, m.groups()))


@pytest.fixture
def photos(tmp_path):
    d = tmp_path / "photos"
    png(d / "a.png", 0)
    png(d / "b.png", 1)
    return d


@pytest.fixture(scope="module")
def predictor(tiny_checkpoint):
    from composite_tasking.inference import Predictor

    return Predictor(tiny_checkpoint, device="cpu")


def run(inputs, out, predictor, **kw):
    from composite_tasking.label import label_images

    return label_images(inputs, out, model=predictor, rule="mosaic", batch_size=2, pipeline=False, **kw)


# ------------------------------------------------------------ an unreadable subfolder


def unreadable(monkeypatch, folder):
    """``folder`` as a folder of mode 000 is to anyone but root: it cannot be listed, and
    nothing inside can be looked at (stat: EACCES); the folder itself can."""
    folder = os.path.abspath(folder)
    real_scandir, real_stat, real_lstat = os.scandir, os.stat, os.lstat

    def denied(path):
        return PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))

    def inside(path):
        return isinstance(path, (str, os.PathLike)) and os.path.dirname(os.path.abspath(os.fspath(path))) == folder

    def scandir(path="."):
        if isinstance(path, (str, os.PathLike)) and os.path.abspath(os.fspath(path)) == folder:
            raise denied(path)
        return real_scandir(path)

    def stat(path, *a, **kw):
        if inside(path):
            raise denied(path)
        return real_stat(path, *a, **kw)

    def lstat(path, *a, **kw):
        if inside(path):
            raise denied(path)
        return real_lstat(path, *a, **kw)

    monkeypatch.setattr(os, "scandir", scandir)
    monkeypatch.setattr(os, "stat", stat)
    monkeypatch.setattr(os, "lstat", lstat)


def test_an_unreadable_subfolder_is_skipped_and_named_and_the_rest_labelled(tmp_path, photos, tiny_checkpoint,
                                                                           monkeypatch, capsys):  # fmt: skip
    """Was: exit 3, "stopped: photos/locked/zarr.json: Permission denied" (is_zarr_folder
    raised before the scanner could say the folder cannot be read)."""
    from composite_tasking import cli
    from composite_tasking.images import is_zarr_folder

    locked = photos / "locked"
    png(locked / "inside.png", 2)
    png(photos / "z" / "c.png", 3)  # a folder after it is searched too
    out = tmp_path / "s.zarr"
    unreadable(monkeypatch, locked)
    code = cli.main(["label", str(photos), "--out", str(out), "--model", str(tiny_checkpoint), "--device", "cpu",
                     "--rule", "mosaic", "--no-preview"])  # fmt: skip
    res = capsys.readouterr()
    assert code == cli.EXIT_PARTIAL == 1, (res.out, res.err)
    assert counts(res.out) == (3, 0, 1)
    assert f"  skipped {locked}: cannot read the folder: Permission denied" in res.out.splitlines()
    assert "stopped" not in res.err and "zarr.json" not in res.out + res.err
    assert is_zarr_folder(locked) is False  # never raises
    monkeypatch.undo()
    assert LabelStore(out).ids() == ["a.png", "b.png", "z__c.png"]


@pytest.mark.skipif(ROOT, reason="root reads a folder of mode 000")
def test_an_unreadable_subfolder_for_real(tmp_path, photos, tiny_checkpoint):
    locked = photos / "locked"
    png(locked / "inside.png", 2)
    locked.chmod(0)
    try:
        res = label(photos, "--out", tmp_path / "s.zarr", ckpt=tiny_checkpoint)
    finally:
        locked.chmod(0o755)
    assert res.returncode == 1 and counts(res.stdout) == (2, 0, 1), res.stdout + res.stderr
    assert f"  skipped {locked}: cannot read the folder: Permission denied" in res.stdout


# ------------------------------------------------------------- symbolic links


def test_a_symbolic_link_to_an_image_of_the_folder_is_labelled_once_and_said(tmp_path, photos, tiny_checkpoint):
    """Was: labelled once, silently (exit 0, nothing said)."""
    (photos / "link.png").symlink_to("a.png")
    (photos / "0first.png").symlink_to("b.png")  # the link sorts first: the file is the other name
    out = tmp_path / "s.zarr"
    res = label(photos, "--out", out, ckpt=tiny_checkpoint)
    assert res.returncode == 0 and counts(res.stdout) == (2, 0, 0), res.stdout + res.stderr
    lines = res.stdout.splitlines()
    assert "found 2 image file(s) again under another name: each is read once, under the name found first" in lines
    assert f"  {photos / 'link.png'}: a symbolic link to {photos / 'a.png'}" in lines
    assert f"  {photos / 'b.png'}: where the symbolic link {photos / '0first.png'} leads" in lines
    assert LabelStore(out).ids() == ["0first.png", "a.png"]
    again = label(photos, "--out", out, ckpt=tiny_checkpoint)  # resumed: said again, labelled never twice
    assert again.returncode == 0 and counts(again.stdout) == (0, 2, 0), again.stdout + again.stderr
    assert f"  {photos / 'link.png'}: a symbolic link to {photos / 'a.png'}" in again.stdout.splitlines()


def test_a_symbolic_link_loop_is_named_as_a_loop(tmp_path, photos, tiny_checkpoint):
    """Was: "broken symbolic link", for a link that leads back to itself."""
    (photos / "self.png").symlink_to("self.png")
    (photos / "x.png").symlink_to("y.png")
    (photos / "y.png").symlink_to("x.png")
    (photos / "gone.png").symlink_to(tmp_path / "deleted.png")  # broken: said so, as before
    (tmp_path / "named-loop.png").symlink_to("named-loop.png")  # named on the command line
    res = label(photos, tmp_path / "named-loop.png", "--out", tmp_path / "s.zarr", ckpt=tiny_checkpoint)
    assert res.returncode == 1 and counts(res.stdout) == (2, 0, 5), res.stdout + res.stderr
    lines = res.stdout.splitlines()
    for name in ("self.png", "x.png", "y.png"):
        assert f"  skipped {photos / name}: symbolic link loop" in lines, res.stdout
    assert f"  skipped {tmp_path / 'named-loop.png'}: symbolic link loop" in lines
    assert f"  skipped {photos / 'gone.png'}: broken symbolic link" in lines
    # the only input a loop: a usage error that says so
    res = label(tmp_path / "named-loop.png", "--out", tmp_path / "t.zarr", ckpt=tiny_checkpoint)
    assert res.returncode == 2 and "(a symbolic link loop)" in res.stderr, res.stderr


# ------------------------------------------------------------- ctn synth's images


def test_synth_images_labelled_into_their_ground_truth_store_keep_their_ids(tmp_path, tiny_checkpoint):
    """`ctn synth OUT` then `ctn label OUT/images --out OUT/ground-truth.zarr`: the images
    are found under their synth ids (the store records their PNGs relative to itself),
    their ground truth kept. Was: every image labelled again as `synth-s5-000000.png`."""
    from composite_tasking.synthetic.export import STORE_NAME, synthetic_id

    out = tmp_path / "synth"
    assert ctn("synth", out, "--n", 3, "--size", "48x64", "--seed", 5).returncode == 0
    synth_ids = [synthetic_id(5, i) for i in range(3)]
    before = LabelStore(out / STORE_NAME, mode="r").image_records()
    res = label(out / "images", "--out", out / STORE_NAME, ckpt=tiny_checkpoint)
    assert res.returncode == 0 and counts(res.stdout) == (0, 0, 0), res.stdout + res.stderr
    assert "kept 3 image(s) with ground truth" in res.stdout
    st = LabelStore(out / STORE_NAME, mode="r")
    assert st.ids() == synth_ids and st.image_records() == before  # nothing written, nothing relabelled
    # moved with its store: found still; a new image beside them is labelled
    moved = tmp_path / "moved"
    shutil.move(out, moved)
    png(moved / "images" / "extra.png", 7)
    res = label(moved / "images", "--out", moved / STORE_NAME, ckpt=tiny_checkpoint)
    assert res.returncode == 0 and counts(res.stdout) == (1, 0, 0), res.stdout + res.stderr
    assert "kept 3 image(s)" in res.stdout
    assert LabelStore(moved / STORE_NAME, mode="r").ids() == ["extra.png", *synth_ids]


# ------------------------------------------------------------- ids in any script


NAMES = {  # file name -> its id
    "café.png": "café.png",
    "東京 駅.png": "東京_駅.png",  # a space, as ever, -> '_'
    "नमस्ते.png": "नमस्ते.png",  # combining vowel signs and virama kept
    unicodedata.normalize("NFD", "résumé.png"): unicodedata.normalize("NFC", "résumé.png"),  # as macOS names it
    "smile🙂.png": "smile_.png",  # a symbol: '_'
}


def test_ids_keep_the_letters_of_any_script(tmp_path, predictor):
    """Was: `caf_.png`, `_____.png`, ... (every non-ASCII character an underscore)."""
    from composite_tasking.label import image_ids

    folder = tmp_path / "photos"
    for k, name in enumerate(NAMES):
        png(folder / name, k)
    png(folder / "über" / "straße.png", 9)
    out = tmp_path / "s.zarr"
    summary = run([folder], out, predictor)
    expected = sorted([*NAMES.values(), "über__straße.png"])
    assert sorted(summary.done) == expected and summary.failed == []
    store = LabelStore(out, mode="r")
    assert store.ids() == expected
    assert store.read_sample("東京_駅.png").image.shape == (48, 64, 3)
    assert run([folder], out, predictor).done == []  # resumed: found under them
    # a long path: at most 200 characters and 200 bytes (it names a folder), its end kept
    long = png(folder / ("京" * 60) / ("東" * 40 + ".png"), 10)  # 306 bytes in UTF-8 below the folder
    (new,) = image_ids([long], [folder])
    assert len(new.encode("utf-8")) <= 200 and re.fullmatch(r"京+__東{40}\.png-[0-9a-f]{8}", new), new


def _ascii_id(whole):  # how ids were made before (a copy: the store under test was written by it)
    return re.sub(r"[^A-Za-z0-9._-]", "_", whole).lstrip(".") or "image"


def test_a_store_with_the_ascii_ids_of_before_resumes_under_them(tmp_path, predictor, monkeypatch):
    """A store written before ids kept other letters holds `caf_.png`: resumed in place
    (its recorded source) or from a moved folder (its pixels), the images are found
    under those ids, not labelled again under new ones; a new file gets a new id."""
    import composite_tasking.image_ids as ids_module

    folder = tmp_path / "photos"
    png(folder / "café.png", 0)
    png(folder / "日本.png", 1)
    png(folder / "plain.png", 2)
    out = tmp_path / "s.zarr"
    monkeypatch.setattr(ids_module, "_legible", _ascii_id, raising=False)  # the rule of before
    assert run([folder], out, predictor).done == ["caf_.png", "plain.png", "__.png"]
    monkeypatch.undo()
    resumed = run([folder], out, predictor)
    assert resumed.done == [] and resumed.skipped_complete == ["caf_.png", "plain.png", "__.png"]
    moved = tmp_path / "moved"
    shutil.move(folder, moved)
    png(moved / "naïve.png", 3)
    again = run([moved], out, predictor)
    assert again.done == ["naïve.png"] and again.skipped_complete == ["caf_.png", "plain.png", "__.png"]
    assert LabelStore(out, mode="r").ids() == sorted(["__.png", "caf_.png", "naïve.png", "plain.png"])
