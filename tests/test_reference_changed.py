"""A ``--reference`` label store whose source image changed on disk (issue #18), as a user
meets it: real ``ctn`` processes on a folder of three 48 x 64 PNGs, rule mosaic, a tiny
random CTN on the CPU.

The store keeps each image's path, sha256, size and mtime instead of its pixels. When one
file is replaced (same size and other content, or another size):

- ``ctn label`` again relabels it (named as changed), not "already complete"; an image a
  person checked is kept as it is and named, exit 1;
- ``ctn evaluate`` and ``ctn finetune`` refuse the store in one line naming the store,
  the image and its file (exit 2, no traceback), before anything runs; ``finetune``
  leaves no run folder behind and an existing ``--out`` as it was;
- the data set reads such an image through ``LabelStore.image_pixels`` (sha256-checked).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from composite_tasking.store import LabelStore

pytestmark = pytest.mark.usefixtures("one_thread_module")

SIZE = (48, 64)
IDS = ["a.png", "b.png", "c.png"]


def env1() -> dict:
    # one thread per process (the machine is shared); never inherit a torchrun environment
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    return {**env, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def ctn(*args, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "composite_tasking.cli", *map(str, args)],
                          capture_output=True, text=True, env=env1(), timeout=timeout, check=False)  # fmt: skip


def picture(seed: int, shape=SIZE) -> np.ndarray:
    """A smooth random picture (not noise: PNG sizes then differ between pictures)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((shape[1], shape[0]), Image.BILINEAR))


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    import torch

    from composite_tasking.model import build_model, save_checkpoint

    torch.manual_seed(0)
    return save_checkpoint(build_model("ctn-resnet18").eval(), tmp_path_factory.mktemp("ckpt") / "ctn")


@pytest.fixture(scope="module")
def labelled_once(tmp_path_factory, model):
    """A folder of three PNGs labelled by reference (``ctn label --reference``): copied
    by :func:`labelled` for each test, with the recorded paths moved to the copy."""
    root = tmp_path_factory.mktemp("labelled")
    folder = root / "images"
    folder.mkdir()
    for k, name in enumerate(IDS):
        Image.fromarray(picture(k)).save(folder / name)
    store = root / "S.zarr"
    r = label(folder, store, model)
    assert r.returncode == 0, r.stderr
    assert "labelled 3 image(s)" in r.stdout, r.stdout
    return root


def label(folder: Path, store: Path, model) -> subprocess.CompletedProcess:
    return ctn("label", folder, "--out", store, "--reference", "--rule", "mosaic", "--model", model,
               "--device", "cpu", "--no-preview")  # fmt: skip


def labelled(labelled_once: Path, dst: Path) -> tuple[Path, Path]:
    """(folder, store): a copy of the labelled folder and its store, the store's recorded
    sources (absolute paths) moved to the copy; the files keep their mtimes."""
    shutil.copytree(labelled_once / "images", dst / "images")  # copy2: mtimes kept
    shutil.copytree(labelled_once / "S.zarr", dst / "S.zarr")
    old, new = str((labelled_once / "images").resolve()), str((dst / "images").resolve())
    for meta in (dst / "S.zarr").glob("*/zarr.json"):
        text = meta.read_text(encoding="utf-8")
        meta.write_text(text.replace(json.dumps(old)[1:-1], json.dumps(new)[1:-1]), encoding="utf-8")
    return dst / "images", dst / "S.zarr"


def change(path: Path, shape=SIZE) -> None:
    """Another picture in the file (of ``shape``)."""
    Image.fromarray(picture(99, shape)).save(path)


def file_sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


SHAPES = {"same size": SIZE, "another size": (56, 40)}


# ------------------------------------------------------------------------ ctn label


def test_labelling_records_the_file_size_and_mtime_beside_its_sha256(labelled_once):
    store = LabelStore(labelled_once / "S.zarr")
    for image_id in IDS:
        info = store.image_attrs(image_id)["image"]
        path = labelled_once / "images" / image_id
        st = path.stat()
        assert info["stored"] is False and info["source"] == str(path.resolve())
        assert info["sha256"] == file_sha256(path) and info["sha256_of"] == "file"
        assert (info["size"], info["mtime_ns"]) == (st.st_size, st.st_mtime_ns)


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_label_again_relabels_an_image_whose_file_changed(labelled_once, tmp_path, model, shape):
    folder, store = labelled(labelled_once, tmp_path)
    change(folder / "b.png", shape)
    r = label(folder, store, model)
    assert r.returncode == 0, r.stderr
    assert "labelled 1 image(s)" in r.stdout and "2 already complete" in r.stdout, r.stdout
    assert "relabelled 1 image(s) stored by reference whose file changed since they were labelled: b.png" in r.stdout
    s = LabelStore(store)
    info = s.image_attrs("b.png")["image"]
    st = (folder / "b.png").stat()
    assert info["sha256"] == file_sha256(folder / "b.png")
    assert (info["size"], info["mtime_ns"]) == (st.st_size, st.st_mtime_ns)
    got = s.read_sample("b.png")
    assert tuple(s.image_attrs("b.png")["shape"]) == shape and got.palette.shape == shape
    assert s.image_pixels(got).shape[:2] == shape
    # now complete: the next run relabels nothing
    r = label(folder, store, model)
    assert r.returncode == 0 and "labelled 0 image(s)" in r.stdout and "3 already complete" in r.stdout, r.stdout
    assert "relabelled" not in r.stdout


def test_a_store_written_before_sizes_and_mtimes_hashes_the_files(labelled_once, tmp_path, model):
    """A store that records only the sha256: an unchanged file is complete (hashed, equal),
    a changed one is relabelled; the files' mtimes alone decide nothing."""
    folder, store = labelled(labelled_once, tmp_path)
    for meta in store.glob("*/zarr.json"):
        data = json.loads(meta.read_text(encoding="utf-8"))
        info = data["attributes"]["composite_tasking"]["image"]
        info.pop("size", None), info.pop("mtime_ns", None)
        meta.write_text(json.dumps(data), encoding="utf-8")
    os.utime(folder / "a.png", ns=(1, 1))  # touched, same bytes
    change(folder / "c.png")
    r = label(folder, store, model)
    assert r.returncode == 0, r.stderr
    assert "labelled 1 image(s)" in r.stdout and "2 already complete" in r.stdout, r.stdout
    assert "whose file changed since they were labelled: c.png" in r.stdout, r.stdout


def test_a_checked_image_whose_file_changed_is_kept_and_named(labelled_once, tmp_path, model):
    folder, store = labelled(labelled_once, tmp_path)
    LabelStore(store, mode="r+").mark_reviewed("b.png", ["semseg"])
    before = LabelStore(store).image_attrs("b.png")
    change(folder / "b.png")
    r = label(folder, store, model)
    assert r.returncode == 1, r.stderr  # the store no longer matches the folder: a person decides
    assert "labelled 0 image(s)" in r.stdout and "2 already complete" in r.stdout, r.stdout
    assert "of these, 1 image(s) stored by reference whose file changed" in r.stdout, r.stdout
    assert "b.png; their labels belong to the old picture" in r.stdout, r.stdout
    assert LabelStore(store).image_attrs("b.png") == before  # never overwritten


# ------------------------------------------------------------ ctn evaluate / finetune


def assert_refused(r: subprocess.CompletedProcess, command: str, store: Path, folder: Path) -> None:
    err = r.stderr
    assert r.returncode == 2, (r.returncode, err)
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith(f"ctn {command}:")]
    assert len(lines) == 1, err
    line = lines[0]
    assert f"label store {store}" in line and "image 'b.png'" in line, line
    assert str((folder / "b.png").resolve()) in line and "changed since the image was labelled" in line, line


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_evaluate_refuses_a_store_whose_file_changed(labelled_once, tmp_path, model, shape):
    folder, store = labelled(labelled_once, tmp_path)
    cmd = ["evaluate", "--model", model, "--data", store, "--all-images", "--rule", "mosaic", "--device", "cpu",
           "--json"]  # fmt: skip
    if shape == SIZE:  # the store as labelled is scored
        r = ctn(*cmd)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["images"] == 3
    change(folder / "b.png", shape)
    r = ctn(*cmd)
    assert_refused(r, "evaluate", store, folder)
    assert r.stdout == ""


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_finetune_refuses_a_store_whose_file_changed_and_leaves_no_run_folder(labelled_once, tmp_path, model,
                                                                            shape):  # fmt: skip
    folder, store = labelled(labelled_once, tmp_path)
    change(folder / "b.png", shape)
    cmd = ["finetune", "--model", model, "--data", store, "--all-images", "--epochs", 1, "--device", "cpu"]
    r = ctn(*cmd, "--out", tmp_path / "run")
    assert_refused(r, "finetune", store, folder)
    assert not (tmp_path / "run").exists()
    # an --out that exists is left as it was: an empty folder, or one holding something
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine", encoding="utf-8")
    for out in ("empty", "notes"):
        r = ctn(*cmd, "--out", tmp_path / out)
        assert_refused(r, "finetune", store, folder)
    assert list((tmp_path / "empty").iterdir()) == []
    assert [p.name for p in (tmp_path / "notes").iterdir()] == ["keep.txt"]
    assert (tmp_path / "notes" / "keep.txt").read_text(encoding="utf-8") == "mine"


# ---------------------------------------------------------------- in the process


def test_the_data_set_reads_by_reference_through_image_pixels(labelled_once, tmp_path):
    """A file changed after the run's check (same size: nothing else would tell) is
    refused when read, naming the store, the image and the file."""
    from composite_tasking.datasets import DatasetError, StoreDataset

    folder, store = labelled(labelled_once, tmp_path)
    ds = StoreDataset(store, ids=["b.png"])
    first = ds[0]["image"]
    assert tuple(first.shape[-2:]) == SIZE
    change(folder / "b.png")
    with pytest.raises(DatasetError) as e:
        ds[0]
    text = str(e.value)
    assert f"label store {store}" in text and "image 'b.png'" in text and str((folder / "b.png").resolve()) in text
    assert "changed since the image was labelled" in text


def test_a_finetune_that_fails_before_its_first_epoch_leaves_no_run_folder(labelled_once, tmp_path, model,
                                                                         monkeypatch):  # fmt: skip
    """The run folder a fine-tune made is removed when it fails before any epoch is
    saved (here a file changes after the check: the first batch fails)."""
    from composite_tasking import datasets
    from composite_tasking.datasets import DatasetError
    from composite_tasking.training.finetune import finetune

    folder, store = labelled(labelled_once, tmp_path)
    change(folder / "b.png")
    monkeypatch.setattr(datasets, "check_sources", lambda *a, **k: None, raising=False)  # as if changed after it
    with pytest.raises(DatasetError, match="image 'b.png'"):
        finetune(store, model, tmp_path / "run", select="all", epochs=1, device="cpu")
    assert not (tmp_path / "run").exists()


def test_file_state_reads_the_file_only_when_its_size_or_mtime_changed(tmp_path, monkeypatch):
    from composite_tasking.store import sources

    path = tmp_path / "x.png"
    Image.fromarray(picture(1)).save(path)
    st = path.stat()
    info = {"stored": False, "sha256": file_sha256(path), "sha256_of": "file", "size": st.st_size,
            "mtime_ns": st.st_mtime_ns}  # fmt: skip
    read = []
    real = sources.file_sha256
    monkeypatch.setattr(sources, "file_sha256", lambda p: read.append(p) or real(p))
    assert sources.file_state(info, path) is None and read == []  # size and mtime: nothing read
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched: read, same bytes
    assert sources.file_state(info, path) is None and len(read) == 1
    legacy = {k: v for k, v in info.items() if k not in ("size", "mtime_ns")}
    assert sources.file_state(legacy, path) is None and len(read) == 2  # nothing but the sha256: read
    data = bytearray(path.read_bytes())
    data[-5] ^= 1  # other bytes, same length
    path.write_bytes(bytes(data))
    assert sources.file_state(info, path) == "changed" and sources.file_state(legacy, path) == "changed"
    path.write_bytes(bytes(data) + b"x")  # another length: changed without reading
    n = len(read)
    assert sources.file_state(info, path) == "changed" and len(read) == n
    assert sources.file_state(info, tmp_path / "gone.png") == "missing"
    assert sources.file_state({"sha256": "0" * 64, "sha256_of": "pixels"}, path) is None


@pytest.mark.parametrize("processes", [False, True], ids=["writer threads", "writer processes"])
def test_every_writer_records_the_bytes_the_reader_decoded(labelled_once, tmp_path, model, processes,
                                                           monkeypatch):  # fmt: skip
    """The sha256, size and mtime recorded come with the bytes the reader decoded, to
    writer threads and writer processes alike (in this process the store cannot hash
    the file itself: a file changed meanwhile would get the new picture's sha256)."""
    from composite_tasking.label import label_images
    from composite_tasking.store import writing

    def no_hashing(path):
        raise AssertionError(f"the store hashed {path} itself")

    monkeypatch.setattr(writing, "file_sha256", no_hashing)
    folder = tmp_path / "images"
    shutil.copytree(labelled_once / "images", folder)
    summary = label_images([folder], tmp_path / "S.zarr", rule="mosaic", model=str(model), device="cpu",
                           store_image=False, pipeline=True, writers=1, writer_processes=processes)  # fmt: skip
    assert summary.done == IDS and summary.ok
    store = LabelStore(tmp_path / "S.zarr")
    for image_id in IDS:
        info, st = store.image_attrs(image_id)["image"], (folder / image_id).stat()
        assert info["sha256"] == file_sha256(folder / image_id) and info["sha256_of"] == "file"
        assert (info["size"], info["mtime_ns"]) == (st.st_size, st.st_mtime_ns)
