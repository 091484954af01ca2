"""`ctn label`'s inputs, outputs, flags and exit codes, as a user meets them: real `ctn`
subprocesses on real files (images of 48 x 64 pixels, a tiny random CTN on the CPU).

Exit codes: 0 all done; 1 finished, some inputs skipped; 2 usage error, nothing written
(found before torch is imported, so these runs are quick); 3 stopped by an error of the
file system (the store stays valid: the same command resumes); 130 interrupted.
"""

import os
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from composite_tasking.store import LabelStore

CTN = [sys.executable, "-m", "composite_tasking.cli"]
# one thread per process (the machine is shared); never inherit a torchrun environment
ENV = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
ENV.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
ROOT = os.geteuid() == 0


def ctn(*args, env=None, timeout=300, **kw):
    return subprocess.run([*CTN, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env={**ENV, **(env or {})}, **kw)  # fmt: skip


def label(*args, ckpt=None, **kw):
    model = ["--model", ckpt] if ckpt is not None else []
    return ctn("label", *args, *model, "--device", "cpu", "--rule", "mosaic", **kw)


def png(path, seed=0, size=(48, 64)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
    return path


def assert_usage_error(res, *words):
    """Exit 2 with one line on stderr naming what is wrong, and no traceback."""
    assert res.returncode == 2, (res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ctn label: "), res.stderr
    for w in words:
        assert str(w) in lines[0], (w, lines[0])
    assert "Traceback" not in res.stderr and res.stdout == ""


def counts(res):
    """(labelled, already complete, skipped) from the summary line."""
    import re

    m = re.search(r"labelled (\d+) image\(s\) into .*; (\d+) already complete; (\d+) skipped", res.stdout)
    assert m, res.stdout
    return tuple(map(int, m.groups()))


@pytest.fixture
def photos(tmp_path):
    d = tmp_path / "photos"
    png(d / "a.png", 0)
    png(d / "b.png", 1)
    return d


# --------------------------------------------------------------- outputs: exit 2 and 3


def test_out_below_a_file_is_a_usage_error_and_writes_nothing(tmp_path, photos):
    (tmp_path / "file.txt").write_text("x")
    res = label(photos, "--out", tmp_path / "file.txt" / "sub.zarr")
    assert_usage_error(res, tmp_path / "file.txt" / "sub.zarr", "is not a folder")
    (tmp_path / "store-file").write_text("x")
    assert_usage_error(label(photos, "--out", tmp_path / "store-file"), "is a file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt", "photos", "store-file"]


@pytest.fixture
def read_only_place(tmp_path):
    """A folder no store can be written in: chmod 0o555, or (as root, who writes there
    anyway) /sys, where root may not create anything."""
    if ROOT:
        if not os.path.isdir("/sys/kernel"):
            pytest.skip("running as root without /sys")
        yield Path("/sys/kernel"), "Permission denied"
        return
    d = tmp_path / "read-only"
    d.mkdir()
    d.chmod(0o555)
    yield d, "Permission denied"
    d.chmod(0o755)


def test_a_store_in_a_read_only_place_is_a_usage_error(photos, read_only_place):
    place, reason = read_only_place
    out = place / f"ctn-test-{os.getpid()}" / "labels.zarr"
    res = label(photos, "--out", out)
    assert_usage_error(res, out, f"cannot write in {place}: {reason}")
    assert not out.parent.exists()


def test_the_preview_path_is_checked_before_labelling(tmp_path, photos, read_only_place):
    out = tmp_path / "s.zarr"
    (tmp_path / "sheet").mkdir()
    assert_usage_error(label(photos, "--out", out, "--preview", tmp_path / "sheet"), "is a folder")
    assert_usage_error(label(photos, "--out", out, "--preview", tmp_path / "sheet.jpg"), "PNG", ".png")
    (tmp_path / "file.txt").write_text("x")
    assert_usage_error(label(photos, "--out", out, "--preview", tmp_path / "file.txt" / "p.png"),
                       "is not a folder")  # fmt: skip
    place, reason = read_only_place
    assert_usage_error(label(photos, "--out", out, "--preview", place / "p.png"), f"cannot write in {place}", reason)
    assert not out.exists()  # nothing labelled


def _file_size_limit(limit):
    def set_limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))  # writes past it: EFBIG (Python ignores SIGXFSZ)

    return set_limit


def test_a_write_error_stops_with_exit_3_and_the_same_command_resumes(tmp_path, photos, tiny_checkpoint):
    """A file system that refuses a write mid-run (here: a file size limit, as a full disk
    would) stops the run with one line naming the path and the OS's reason, exit 3; the
    store stays valid and the same command finishes it."""
    out = tmp_path / "s.zarr"
    png(photos / "c.png", 2, (64, 64))
    args = [photos, "--out", out, "--no-preview"]
    res = label(*args, ckpt=tiny_checkpoint, preexec_fn=_file_size_limit(4096))
    assert res.returncode == 3, (res.stdout, res.stderr)
    err = [ln for ln in res.stderr.splitlines() if ln.startswith("ctn label:")]
    assert len(err) == 1 and "Traceback" not in res.stderr, res.stderr
    assert "File too large" in err[0] and str(out) in err[0] and "run the same command again" in err[0]
    assert "while writing image" in err[0]  # the image it was writing

    res = label(*args, ckpt=tiny_checkpoint)
    assert res.returncode == 0, res.stderr
    store = LabelStore(out)
    assert store.ids() == store.ids(complete_only=False) == ["a.png", "b.png", "c.png"]


def test_no_space_left_is_exit_3_with_one_line(tmp_path, photos, tiny_checkpoint, monkeypatch, capsys):
    import errno

    from composite_tasking import cli
    from composite_tasking.store import LabelStore as Store

    def full(self, image_id, *a, **kw):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path / image_id / "zarr.json"))

    monkeypatch.setattr(Store, "write_sample", full)
    out = tmp_path / "s.zarr"
    code = cli.main(["label", str(photos), "--out", str(out), "--model", str(tiny_checkpoint), "--device", "cpu",
                     "--rule", "mosaic"])  # fmt: skip
    assert code == cli.EXIT_STOPPED == 3
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"ctn label: stopped: {out / 'a.png' / 'zarr.json'}: No space left on device")


@pytest.mark.skipif(ROOT, reason="root writes into read-only folders")
def test_a_read_only_store_stops_with_exit_3(tmp_path, photos, tiny_checkpoint):
    out = tmp_path / "s.zarr"
    assert label(photos, "--out", out, "--no-preview", ckpt=tiny_checkpoint).returncode == 0
    for p in [out, *out.rglob("*")]:
        p.chmod(p.stat().st_mode & 0o555)
    try:
        res = label(photos, "--out", out, "--no-preview", "--overwrite", ckpt=tiny_checkpoint)
    finally:
        for p in [out, *out.rglob("*")]:
            p.chmod(p.stat().st_mode | 0o200)
    assert res.returncode == 3 and "Permission denied" in res.stderr and "Traceback" not in res.stderr


# ----------------------------------------------------------------------------- inputs


def test_a_store_inside_the_input_folder_is_not_labelled_on_the_next_run(photos, tiny_checkpoint):
    args = [photos, "--out", photos / "labels.zarr", "--no-preview"]
    first = label(*args, ckpt=tiny_checkpoint)
    assert first.returncode == 0 and counts(first) == (2, 0, 0), first.stdout + first.stderr
    again = label(*args, ckpt=tiny_checkpoint)
    assert again.returncode == 0 and counts(again) == (0, 2, 0), again.stdout + again.stderr
    assert "skipped" not in again.stdout.replace("0 skipped", "") and "ignored" not in again.stdout


def test_the_preview_inside_the_input_folder_is_not_labelled_on_the_next_run(photos, tiny_checkpoint):
    args = [photos, "--out", photos / "labels"]  # no .zarr suffix: excluded by name
    first = label(*args, ckpt=tiny_checkpoint)
    assert first.returncode == 0 and (photos / "labels-preview.png").is_file(), first.stderr
    again = label(*args, ckpt=tiny_checkpoint)
    assert again.returncode == 0 and counts(again) == (0, 2, 0), again.stdout + again.stderr
    assert "ignored" not in again.stdout


def test_symlinked_folders_are_labelled_and_broken_links_named(tmp_path, photos, tiny_checkpoint):
    elsewhere = tmp_path / "elsewhere"
    png(elsewhere / "far.png", 3)
    (photos / "linked").symlink_to(elsewhere, target_is_directory=True)
    (photos / "loop").symlink_to(photos, target_is_directory=True)
    (photos / "gone.png").symlink_to(tmp_path / "deleted.png")
    out = tmp_path / "s.zarr"
    res = label(photos, "--out", out, "--no-preview", ckpt=tiny_checkpoint)
    assert res.returncode == 1 and counts(res) == (3, 0, 1), res.stdout + res.stderr
    assert f"  skipped {photos / 'gone.png'}: broken symbolic link" in res.stdout
    assert len(LabelStore(out).ids()) == 3


def test_non_image_files_are_ignored_images_that_fail_skipped_named_files_tried(tmp_path, photos, tiny_checkpoint):
    import tifffile

    nan = np.random.default_rng(5).random((48, 64)).astype(np.float32)
    nan[:8] = np.nan
    tifffile.imwrite(photos / "float.tif", nan)
    (photos / "README.txt").write_text("how these photos were taken\n")
    (photos / "a.json").write_text("{}")
    out = tmp_path / "s.zarr"
    res = label(photos, "--out", out, "--no-preview", ckpt=tiny_checkpoint)
    # a folder with a README and a sidecar can be labelled completely: exit 0
    assert res.returncode == 0 and counts(res) == (3, 0, 0), res.stdout + res.stderr
    assert "ignored 2 non-image file(s) (.json, .txt)" in res.stdout
    assert "Warning" not in res.stderr  # no numpy RuntimeWarning in the progress output
    image = LabelStore(out).read_sample("float.tif").image
    assert (image[:8] == 0).all() and image[8:].max() == 255  # NaN -> 0, scaled by the rest

    (photos / "fake.jpg").write_text("not a JPEG\n")  # an image by its name: read, fails, named
    res = label(photos, photos / "README.txt", tmp_path / "missing.png", "--out", out, "--no-preview",
                ckpt=tiny_checkpoint)  # fmt: skip
    assert res.returncode == 1 and counts(res) == (0, 3, 3), res.stdout + res.stderr
    for path, reason in [(photos / "fake.jpg", "not an image"), (photos / "README.txt", "not an image"),
                         (tmp_path / "missing.png", "no such file or folder")]:  # fmt: skip
        assert f"  skipped {path}: {reason}" in res.stdout, res.stdout


def test_no_existing_input_is_a_usage_error_and_creates_nothing(tmp_path):
    out = tmp_path / "s.zarr"
    assert_usage_error(label("nope", tmp_path / "nope2", "--out", out, cwd=tmp_path), "no such file or folder: nope")
    (tmp_path / "link.png").symlink_to(tmp_path / "gone.png")
    assert_usage_error(label(tmp_path / "link.png", "--out", out), "broken symbolic link")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.png"]


# ----------------------------------------------------------------------------- flags


def test_torchrun_variables_are_checked_and_named(tmp_path, photos):
    out = tmp_path / "s.zarr"
    assert_usage_error(label(photos, "--out", out, env={"WORLD_SIZE": "abc"}), "WORLD_SIZE", "'abc'")
    assert_usage_error(label(photos, "--out", out, env={"WORLD_SIZE": "2", "RANK": "5"}), "RANK", "'5'", "0 to 1")
    assert_usage_error(label(photos, "--out", out, env={"WORLD_SIZE": "2", "RANK": "x"}), "RANK", "'x'")
    assert_usage_error(label(photos, "--out", out, env={"WORLD_SIZE": "2"}), "RANK is not")
    assert_usage_error(label(photos, "--out", out, env={"WORLD_SIZE": "0"}), "WORLD_SIZE", "'0'")
    assert not out.exists()


def test_device_values_are_checked_and_listed(tmp_path, photos):
    out = tmp_path / "s.zarr"
    for bad in ("gpu", "cuda:x", "metal"):
        res = ctn("label", photos, "--out", out, "--device", bad)
        assert_usage_error(res, "--device takes auto, cpu, cuda, cuda:I or mps", repr(bad))
    import torch

    from composite_tasking.device import mps_available

    if not torch.cuda.is_available():
        assert_usage_error(ctn("label", photos, "--out", out, "--device", "cuda:0"), "no CUDA device")
    if not mps_available():  # accepted where torch reports it; here a clear refusal
        assert_usage_error(ctn("label", photos, "--out", out, "--device", "mps"), "no MPS device")
    assert not out.exists()


def test_auto_picks_cuda_then_mps_then_the_cpu(monkeypatch):
    """As micro-sam and cellpose do (issue #18 item 4). No Apple GPU here: torch's answers
    are replaced, the choice is what is tested."""
    import torch

    from composite_tasking.device import pick_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert pick_device("auto") == torch.device("mps") and pick_device("mps") == torch.device("mps")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert pick_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError, match="no MPS device"):
        pick_device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert pick_device("auto") == torch.device("cuda")
    # under torchrun each process of a machine takes the GPU of its LOCAL_RANK
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setenv("LOCAL_RANK", "2")
    assert pick_device("auto") == torch.device("cuda", 2)


def test_palette_model_needs_palette_from_net(tmp_path, photos):
    res = ctn("label", photos, "--out", tmp_path / "s.zarr", "--palette-model", "default")
    assert_usage_error(res, "--palette-model", "--palette-from net", "semantics")


def test_a_palette_folder_takes_no_rule(tmp_path, photos, tiny_checkpoint):
    """--palette-from DIR: the palettes come from the folder; --rule with it is a usage
    error naming both (exit 2, nothing written), and without it no rule is recorded."""
    pals = tmp_path / "pals"
    pals.mkdir()
    for name in ("a.png", "b.png"):
        Image.fromarray(np.full((48, 64), 3, np.uint8)).save(pals / name)
    out = tmp_path / "s.zarr"
    res = label(photos, "--out", out, "--palette-from", pals, "--no-preview", ckpt=tiny_checkpoint)  # --rule mosaic
    assert_usage_error(res, f"--palette-from {pals}", "leave out --rule mosaic")
    assert not out.exists()
    res = ctn("label", photos, "--out", out, "--palette-from", pals, "--model", tiny_checkpoint,
              "--device", "cpu", "--no-preview")  # fmt: skip
    assert res.returncode == 0 and counts(res) == (2, 0, 0), res.stderr
    st = LabelStore(out, mode="r")
    assert [k for i in st.ids() for k in st.image_attrs(i) if k.startswith("rule")] == []


def test_tile_and_overlap_limits(tmp_path, photos):
    out = tmp_path / "s.zarr"
    assert_usage_error(ctn("label", photos, "--out", out, "--tile", "63"), "--tile takes 64 or more")
    assert_usage_error(ctn("label", photos, "--out", out, "--tile", "256", "--overlap", "128"),
                       "--overlap takes 0 to 127 pixels with --tile 256")  # fmt: skip
    help_text = " ".join(ctn("label", "--help").stdout.split())
    assert "64 or more" in help_text and "0 to TILE/2 - 1" in help_text and "min(128, TILE/4)" in help_text
    assert not out.exists()


def test_flags_reach_label_images(tmp_path, photos, monkeypatch):
    """The shard (from --shard or RANK/WORLD_SIZE), the overlap and the palette model
    handed to label_images, explicitly."""
    from composite_tasking import cli
    from composite_tasking import label as label_module
    from composite_tasking.label import LabelSummary

    seen = {}

    def fake_label_images(inputs, store_path, **kwargs):
        seen.clear()
        seen.update(kwargs)
        return LabelSummary(Path(store_path))

    monkeypatch.setattr(label_module, "label_images", fake_label_images)
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    base = ["label", str(photos), "--out", str(tmp_path / "s.zarr")]
    assert cli.main(base) == 0
    assert seen["shard"] == (0, 1) and seen["overlap"] == 128 and seen["tile"] == 1024
    assert seen["palette_model"] == "default"
    assert cli.main([*base, "--tile", "256"]) == 0 and seen["overlap"] == 64
    assert cli.main([*base, "--tile", "64"]) == 0 and seen["overlap"] == 16
    assert cli.main([*base, "--tile", "64", "--overlap", "0"]) == 0 and seen["overlap"] == 0
    assert cli.main([*base, "--palette-from", "net", "--palette-model", "pm"]) == 0 and seen["palette_model"] == "pm"
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "2")
    assert cli.main(base) == 0 and seen["shard"] == (2, 3)
    assert cli.main([*base, "--shard", "0/2"]) == 0 and seen["shard"] == (0, 2)  # --shard wins
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.delenv("RANK")
    assert cli.main(base) == 0 and seen["shard"] == (0, 1)


def test_a_tile_of_256_is_accepted(tmp_path, photos, tiny_checkpoint):
    res = label(photos, "--out", tmp_path / "s.zarr", "--tile", 256, "--no-preview", ckpt=tiny_checkpoint)
    assert res.returncode == 0 and counts(res) == (2, 0, 0), res.stderr


def test_demo_help_says_what_mosaic_does():
    res = ctn("demo", "--help")
    text = " ".join(res.stdout.split())
    assert res.returncode == 0 and "four of the five tasks" in text and "every task somewhere" not in text
