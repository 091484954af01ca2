"""`ctn label` as a user runs it: real subprocesses, a real store on disk.

A tiny random CTN (ResNet-18) on the CPU, 8 synthetic images of 64 x 80 pixels. The
uninterrupted runs (rules R2 and mosaic, batch size 1) are made once per session and are
the reference that killed-and-resumed, sharded and overwritten runs must equal exactly.
"""

import json
import os
import re
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
import zarr
from PIL import Image

from _processes import kill_when
from _scenes import scene_folder
from composite_tasking.images import read_image
from composite_tasking.store import LabelStore
from composite_tasking.synthetic import generate
from composite_tasking.tasks import IGNORE, NO_TASK, get_task

CTN_LABEL = [sys.executable, "-m", "composite_tasking.cli", "label"]
# one thread per process (the machine is shared); never inherit a torchrun environment
ENV = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
ENV.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
SIZE = (64, 80)
N = 8
IDS = sorted([f"scene-{i}.png" for i in range(6)] + ["sub__scene-6.png", "sub__scene-7.png"])
VOLATILE = {"created", "updated", "run"}  # timestamps and the id of the run that wrote an image: all two runs may differ in


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory):
    """A tiny random CTN checkpoint, and another model (one weight changed)."""
    from composite_tasking.model import build_model
    from composite_tasking.model.checkpoint import save_checkpoint

    d = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    model = build_model("ctn-resnet18").eval()
    ckpt = save_checkpoint(model, d / "ctn")
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] += 0.5
    other = save_checkpoint(model, d / "other")
    return ckpt, other


@pytest.fixture(scope="session")
def ckpt(checkpoints):
    return checkpoints[0]


@pytest.fixture(scope="session")
def folder(tmp_path_factory):
    return scene_folder(tmp_path_factory.mktemp("images"), N, SIZE)


def label(*args, timeout=300, env=ENV):
    return subprocess.run([*CTN_LABEL, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env)  # fmt: skip


def start(*args, env=ENV, **kw):
    return subprocess.Popen([*CTN_LABEL, *map(str, args)], env=env, **kw)


@pytest.fixture(scope="session")
def reference(tmp_path_factory, folder, ckpt):
    """rule -> (store, stdout, stderr) of an uninterrupted run; both rules run at once."""
    d = tmp_path_factory.mktemp("reference")
    runs = {}
    for rule in ("R2", "mosaic"):
        out = d / f"ref-{rule}.zarr"
        proc = start(folder, "--out", out, "--rule", rule, "--model", ckpt, "--device", "cpu",
                     "--batch-size", 1, "--timings", stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                     text=True)  # fmt: skip
        runs[rule] = (out, proc)
    done = {}

    def get(rule):
        if rule not in done:
            out, proc = runs[rule]
            stdout, stderr = proc.communicate(timeout=300)
            assert proc.returncode == 0, stderr
            done[rule] = (out, stdout, stderr)
        return done[rule]

    yield get
    for _, proc in runs.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# ------------------------------------------------------------------------- helpers


def strip(attrs):
    if isinstance(attrs, dict):
        return {k: strip(v) for k, v in attrs.items() if k not in VOLATILE}
    if isinstance(attrs, list):
        return [strip(v) for v in attrs]
    return attrs


def store_content(path) -> dict:
    """{node path: attributes, or (attributes, dtype, chunks, values)} of a whole store."""
    root = zarr.open_group(str(path), mode="r", zarr_format=3)
    out = {"": strip(root.attrs.asdict())}
    for name, node in root.members(max_depth=None):
        if isinstance(node, zarr.Array):
            out[name] = (strip(node.attrs.asdict()), node.dtype, node.chunks, node[...])
        else:
            out[name] = strip(node.attrs.asdict())
    return out


def assert_same_store(a, b):
    ca, cb = store_content(a), store_content(b)
    assert sorted(ca) == sorted(cb)
    for key, va in ca.items():
        vb = cb[key]
        if isinstance(va, tuple):
            assert va[:3] == vb[:3], key
            assert np.array_equal(va[3], vb[3], equal_nan=va[1].kind == "f"), key  # bit-identical
        else:
            assert va == vb, key


def n_complete(store) -> int:
    """Completely written images, from the groups' zarr.json (cheap enough to poll)."""
    n = 0
    for meta in store.glob("*/zarr.json"):
        try:
            n += json.loads(meta.read_text())["attributes"]["composite_tasking"]["complete"] is True
        except (OSError, ValueError, KeyError):
            pass
    return n


def snapshot(path) -> dict:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def summary_line(done, complete, skipped, store):
    return (f"labelled {done} image(s) into {store}; {complete} already complete; "
            f"{skipped} skipped")  # fmt: skip


def check_labels(store_path, rule):
    """Every image complete, pseudo, with a palette and labels only where it asks."""
    store = LabelStore(store_path)
    assert store.ids() == store.ids(complete_only=False)
    for image_id in store.ids():
        s = store.read_sample(image_id)
        assert s.palette is not None and s.palette.dtype == np.uint8
        assert set(np.unique(s.palette)) <= {NO_TASK, 1, 2, 3, 4, 5}
        assert s.labels and set(s.provenance.values()) == {"pseudo"} and set(s.provenance) == set(s.labels)
        assert s.attrs["rule"] == rule and s.attrs["complete"] is True
        for name, lab in s.labels.items():
            task = get_task(name)
            region = s.palette == task.palette_value
            assert region.any(), name  # a task is stored only when the palette asks for it
            if task.kind == "vector":
                assert (lab[~region] == 0).all()
                np.testing.assert_allclose(np.linalg.norm(lab[region], axis=-1), 1, atol=1e-2)
            else:
                assert (lab[~region] == IGNORE).all(), name
                top = task.num_classes if task.kind == "classes" else 2
                assert lab[region].max() < top, name
            conf = s.maps[f"confidence_{name}"]
            assert np.isnan(conf[~region]).all() and (conf[region] >= 0).all() and (conf[region] <= 1).all()
        for name in ("edges", "saliency"):
            if name in s.labels:
                prob = s.maps[f"{name}_prob"]
                assert np.array_equal(s.labels[name] == 1, prob >= 0.5)
    return store


# --------------------------------------------------------------------------- tests


def test_a_folder_becomes_a_valid_ome_zarr_store_with_a_preview(folder, ckpt, reference):
    from composite_tasking.model.checkpoint import read_checkpoint_info

    out, stdout, stderr = reference("R2")
    assert summary_line(N, 0, 0, out) in stdout
    # --timings: the labelling thread's shares, summing to 100 % (up to rounding); no writers on a CPU
    line = stdout.strip().splitlines()[-1]
    m = re.fullmatch(r"time [\d.]+ s, labelling thread: waiting for the reader (\d+)%, palettes (\d+)%, "
                     r"starting batches (\d+)%, waiting for them (\d+)%, handing to the writers (\d+)%, "
                     r"waiting for the writers at the end (\d+)%, other (\d+)%", line)
    assert m, line
    assert 95 <= sum(map(int, m.groups())) <= 105 and int(m.group(3)) > 50  # the model, on a CPU
    # the progress bar: count, elapsed < remaining (ETA), images per second
    assert re.search(r"8/8 \[\d\d:\d\d<\d\d:\d\d, +[\d.]+(image/s|s/image)\]", stderr), stderr  # tqdm: s/image below 1 image/s
    store = check_labels(out, "R2")
    assert store.ids() == IDS
    assert store.attrs["labelling"]["model_sha256"] == read_checkpoint_info(ckpt).sha256
    assert store.attrs["labelling"]["rule"] == "R2"
    for image_id in IDS:
        s = store.read_sample(image_id)
        src = folder / image_id.replace("__", "/")
        assert np.array_equal(s.image, iio.imread(src)) and s.attrs["image"]["source"] == str(src)
    # the contact sheet: a row per image of 160 px pictures (image, palette, composite),
    # each with its id under it, titles and a legend (tests/test_label_preview.py)
    preview = out.with_name("ref-R2-preview.png")
    assert f"preview: {preview}" in stdout
    sheet = iio.imread(preview)
    assert sheet.shape[1:] == (3 * 162 - 2, 3) and sheet.shape[0] > N * (160 + 10) + 2 * 10

    # other tools: ome-zarr-models validates each image group, ome-zarr-py reads it
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader
    from ome_zarr_models.v05 import Image as OmeImage

    for image_id in IDS:
        image = OmeImage.from_zarr(zarr.open_group(str(out / image_id), mode="r"))
        assert image.labels.label_paths[0] == "palette"
        assert image.labels.label_paths == store.image_attrs(image_id)["labels"]
    nodes = list(Reader(parse_url(str(out / IDS[0])))())
    assert np.array_equal(np.asarray(nodes[0].data[0]), np.moveaxis(iio.imread(folder / IDS[0]), -1, 0))
    by_name = {n.metadata.get("name"): n for n in nodes[1:] if n.data}
    assert "palette" in by_name
    assert np.array_equal(np.asarray(by_name["palette"].data[0]), store.read_sample(IDS[0]).palette)


def test_napari_ome_zarr_reads_an_image_group(reference):
    pytest.importorskip("napari_ome_zarr")
    from napari_ome_zarr import napari_get_reader

    out = reference("R2")[0]
    group = out / IDS[0]
    reader = napari_get_reader(str(group))
    assert callable(reader)
    layers = reader(str(group))
    kinds = [kind for _, _, kind in layers]
    assert kinds[0] == "image" and "labels" in kinds
    data, meta, _ = layers[0]
    assert data[0].shape == (3, *SIZE) and meta["channel_axis"] == 0
    palette = LabelStore(out).read_sample(IDS[0]).palette
    assert any(np.array_equal(np.asarray(d[0]), palette) for d, _, k in layers if k == "labels")


@pytest.mark.parametrize("rule", ["R2", "mosaic"])
def test_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path, folder, ckpt, reference, rule):
    ref = reference(rule)[0]
    out = tmp_path / "killed.zarr"
    args = [folder, "--out", out, "--rule", rule, "--model", ckpt, "--device", "cpu", "--batch-size", 1]
    proc = start(*args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kill_when(proc, lambda: n_complete(out) >= 2, poll=0.005)
    before = LabelStore(out).ids()
    assert 2 <= len(before) < N
    if len(LabelStore(out).ids(complete_only=False)) == len(before):
        # the kill fell between two images: leave what a kill inside a write leaves, a
        # group without its completion marker, which the next run must redo
        meta = out / before[-1] / "zarr.json"
        doc = json.loads(meta.read_text())
        doc["attributes"]["composite_tasking"]["complete"] = False
        meta.write_text(json.dumps(doc))
        before = before[:-1]
    assert len(LabelStore(out).ids(complete_only=False)) > len(before) == len(LabelStore(out).ids())
    stamps = {i: (out / i / "zarr.json").stat().st_mtime_ns for i in before}

    res = label(*args, "--resume")
    assert res.returncode == 0, res.stderr
    # only the rest was labelled: no image done twice
    assert summary_line(N - len(before), len(before), 0, out) in res.stdout
    assert {i: (out / i / "zarr.json").stat().st_mtime_ns for i in before} == stamps
    assert_same_store(out, ref)
    check_labels(out, rule)


def test_two_shards_in_two_processes_equal_one_run(tmp_path, folder, ckpt, reference):
    ref = reference("R2")[0]
    out = tmp_path / "sharded.zarr"
    args = [folder, "--out", out, "--model", ckpt, "--device", "cpu", "--batch-size", 1]
    # one by --shard, the other as torchrun starts it (rank and world size in the environment)
    procs = [start(*args, "--shard", "0/2", stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True),
             start(*args, env={**ENV, "RANK": "1", "WORLD_SIZE": "2"}, stdout=subprocess.PIPE,
                   stderr=subprocess.PIPE, text=True)]  # fmt: skip
    results = [p.communicate(timeout=300) for p in procs]
    for p, (stdout, stderr) in zip(procs, results):
        assert p.returncode == 0, stderr
        assert summary_line(N // 2, 0, 0, out) in stdout
    assert_same_store(out, ref)
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left


def bomb_png(path, w=20000, h=20000):
    """A valid 1-bit black PNG of w x h pixels (400 Mpx in ~50 kB), written without PIL."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    z = zlib.compressobj(9)
    rows = bytes(1 + (w + 7) // 8) * 1000
    idat = b"".join(z.compress(rows) for _ in range(h // 1000)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def test_bad_inputs_are_skipped_by_name_and_the_rest_labelled(tmp_path, ckpt):
    import tifffile
    from ome_zarr_models.v05 import Image as OmeImage

    d = tmp_path / "mixed"
    (d / "more").mkdir(parents=True)
    img = generate(2, 0, (48, 64))["image"]
    good = {
        "scene.png": lambda p: iio.imwrite(p, img),
        "gray.png": lambda p: Image.fromarray(img[..., 0]).save(p),
        "rgba.png": lambda p: Image.fromarray(np.dstack([img, np.full(img.shape[:2], 100, np.uint8)])).save(p),
        "deep16.tif": lambda p: tifffile.imwrite(p, img[..., 1].astype(np.uint16) * 257),
        "more/rgb16.tif": lambda p: tifffile.imwrite(p, img.astype(np.uint16) * 257, photometric="rgb"),
        "photo.webp": lambda p: Image.fromarray(img).save(p, lossless=True),
        "paint.bmp": lambda p: Image.fromarray(img).save(p),
    }
    for name, write in good.items():
        write(d / name)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(img).save(d / "rotated.jpg", exif=exif, quality=95)
    good["rotated.jpg"] = None
    (d / "zero.png").write_bytes(b"")
    png, jpg = (d / "scene.png").read_bytes(), (d / "rotated.jpg").read_bytes()
    (d / "half.png").write_bytes(png[: len(png) // 2])
    (d / "half.jpg").write_bytes(jpg[: len(jpg) // 2])
    (d / "letter.jpg").write_text("Dear reader, this is not a JPEG.\n")
    (d / "notes.txt").write_text("not an image type\n")
    bomb_png(d / "more" / "bomb.png")
    bad = {"zero.png": "empty file (0 bytes)", "half.png": "truncated", "half.jpg": "truncated",
           "letter.jpg": "not an image", "more/bomb.png": "decompression bomb"}  # fmt: skip

    out = tmp_path / "mixed.zarr"
    res = label(d, "--out", out, "--rule", "mosaic", "--model", ckpt, "--device", "cpu", "--batch-size", 4)
    assert res.returncode == 1, res.stderr
    assert summary_line(len(good), 0, len(bad), out) in res.stdout
    for name, reason in bad.items():
        line = next((ln for ln in res.stdout.splitlines() if ln.startswith(f"  skipped {d / name}: ")), None)
        assert line is not None and reason in line, (name, res.stdout)
    # not an image type: named, not tried, not a reason for exit code 1
    assert f"ignored 1 non-image file(s) (.txt): {d / 'notes.txt'}" in res.stdout

    store = check_labels(out, "mosaic")
    ids = sorted(n.replace("/", "__") for n in good)
    assert store.ids() == ids and store.ids(complete_only=False) == ids
    for name in good:
        s = store.read_sample(name.replace("/", "__"))
        assert np.array_equal(s.image, read_image(d / name)), name
        OmeImage.from_zarr(zarr.open_group(str(out / name.replace("/", "__")), mode="r"))
    images = {n: store.read_sample(n.replace("/", "__")).image for n in good}
    assert images["rotated.jpg"].shape == (64, 48, 3)  # EXIF orientation applied
    assert np.array_equal(images["gray.png"], np.repeat(img[..., :1], 3, axis=2))
    assert np.array_equal(images["deep16.tif"], np.repeat(img[..., 1:2], 3, axis=2))
    assert np.array_equal(images["more/rgb16.tif"], img)
    blend = (img.astype(int) * 100 + 255 * 155) / 255  # alpha 100 over white
    assert np.abs(images["rgba.png"] - blend).max() <= 1
    assert np.array_equal(images["scene.png"], img) and np.array_equal(images["paint.bmp"], img)


def test_another_model_or_rule_is_refused_unless_overwrite(tmp_path, folder, checkpoints, reference):
    ckpt, other = checkpoints
    ref = reference("R2")[0]
    refused, relabelled = tmp_path / "refused.zarr", tmp_path / "relabelled.zarr"
    shutil.copytree(ref, refused)
    shutil.copytree(ref, relabelled)
    before = snapshot(refused)
    common = [folder, "--device", "cpu", "--batch-size", 1]
    pipes = dict(stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    procs = [start(*common, "--out", refused, "--model", other, "--rule", "mosaic", **pipes),
             start(*common, "--out", relabelled, "--model", ckpt, "--rule", "mosaic", "--overwrite", **pipes)]
    (out1, err1), (out2, err2) = (p.communicate(timeout=300) for p in procs)

    assert procs[0].returncode == 2, err1
    # each setting is compared: the message names both differences, and the way out
    assert "--rule R2 (stored) vs mosaic (asked)" in err1 and "--model " in err1 and "--overwrite" in err1
    assert snapshot(refused) == before  # unchanged, and no preview written
    assert not refused.with_name("refused-preview.png").exists()

    assert procs[1].returncode == 0, err2
    assert summary_line(N, 0, 0, relabelled) in out2
    assert_same_store(relabelled, reference("mosaic")[0])  # as if written by mosaic alone

def test_resume_and_overwrite_exclude_each_other():
    from composite_tasking.cli import build_parser

    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["label", "x", "--out", "y.zarr", "--resume", "--overwrite"])
    assert e.value.code == 2


# ------------------------------------------------- the pipeline, in-process (label_images)
# Reader and writer threads overlap I/O with the model; they must change nothing but the
# time. A tiny random CTN (conftest's tiny_checkpoint) on images of 32 x 40 pixels.


@pytest.fixture(scope="module")
def small_folder(tmp_path_factory):
    """In sorted order: im-0..3, an unreadable file, an image of another size, im-4..6."""
    d = tmp_path_factory.mktemp("pipeline-images")
    for i in range(7):
        iio.imwrite(d / f"im-{i}.png", generate(3, i, (32, 40))["image"])
    iio.imwrite(d / "im-4-wide.png", generate(3, 7, (32, 48))["image"])  # a batch of its own
    (d / "im-3b.png").write_bytes(b"")
    return d


SMALL_IDS = ["im-0.png", "im-1.png", "im-2.png", "im-3.png", "im-4-wide.png", "im-4.png", "im-5.png", "im-6.png"]


@pytest.fixture(scope="module")
def tiny_predictor(tiny_checkpoint):
    from composite_tasking.inference import Predictor

    return Predictor(tiny_checkpoint, device="cpu")


def label_threads():
    import threading

    return [t for t in threading.enumerate() if t.name.startswith("ctn-label")]


@pytest.mark.parametrize("rule", ["mosaic", "R2"])
def test_the_pipeline_labels_exactly_as_a_sequential_run(tmp_path, small_folder, tiny_predictor, rule):
    from composite_tasking.label import label_images

    runs = {}
    for pipeline in (False, True):
        calls = []
        summary = label_images([small_folder], tmp_path / f"{pipeline}.zarr", rule=rule, model=tiny_predictor,
                               batch_size=3, preview=tmp_path / f"{pipeline}.png", pipeline=pipeline,
                               progress=lambda d, t: calls.append((d, t)))  # fmt: skip
        runs[pipeline] = summary, calls
        assert not label_threads()
    (seq, seq_calls), (pip, pip_calls) = runs[False], runs[True]
    assert pip.done == seq.done == SMALL_IDS  # input order
    assert pip.failed == seq.failed and [p for p, _ in pip.failed] == [str(small_folder / "im-3b.png")]
    assert pip_calls == seq_calls == [(i, 9) for i in range(1, 10)]
    assert not pip.stopped and not seq.stopped
    assert_same_store(seq.store, pip.store)
    assert np.array_equal(iio.imread(seq.preview), iio.imread(pip.preview))
    assert tiny_predictor.cache_size == 4 and not tiny_predictor._cache


@pytest.mark.parametrize("pipeline, writers", [(True, 1), (True, 0), (False, 1)])
def test_a_failed_write_is_raised_naming_the_image_and_no_thread_is_left(
        tmp_path, small_folder, tiny_predictor, monkeypatch, pipeline, writers):  # fmt: skip
    """Nothing is written after the failed image: with one writer thread, with the
    labelling thread writing (writers=0: the batch in flight is not written either),
    and one step after another."""
    import errno
    import threading

    from composite_tasking.label import label_images

    write_sample = LabelStore.write_sample
    tried = []

    def disk_full_at_the_third(self, image_id, *args, **kwargs):
        tried.append(image_id)
        if len(tried) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return write_sample(self, image_id, *args, **kwargs)

    monkeypatch.setattr(LabelStore, "write_sample", disk_full_at_the_third)
    before = set(threading.enumerate())
    out = tmp_path / "full.zarr"
    with pytest.raises(OSError) as e:
        label_images([small_folder], out, rule="mosaic", model=tiny_predictor, batch_size=2,
                     preview=None, pipeline=pipeline, writers=writers)  # fmt: skip
    assert e.value.errno == errno.ENOSPC
    assert tried == SMALL_IDS[:3]  # one writer: nothing written after the failed image
    assert any("'im-2.png'" in note for note in getattr(e.value, "__notes__", [])), e.value
    monkeypatch.undo()
    assert LabelStore(out).ids() == SMALL_IDS[:2]  # complete; the failed one is redone next run
    assert not label_threads()
    assert not [t for t in set(threading.enumerate()) - before if not t.daemon]
    # the next run finishes the store
    summary = label_images([small_folder], out, rule="mosaic", model=tiny_predictor, batch_size=2, preview=None)
    assert summary.done == SMALL_IDS[2:] and summary.skipped_complete == SMALL_IDS[:2]
    assert LabelStore(out).ids() == SMALL_IDS


@pytest.mark.parametrize("pipeline", [False, True])
def test_stopping_writes_what_was_predicted_and_leaves_the_rest(tmp_path, small_folder, tiny_predictor, pipeline):
    """Pipelined, the first batch is still in flight when the stop is asked: written too."""
    from composite_tasking.label import label_images

    polls = []
    calls = []
    out = tmp_path / "stopped.zarr"
    summary = label_images([small_folder], out, rule="mosaic", model=tiny_predictor, batch_size=3,
                           preview=None, should_stop=lambda: polls.append(1) or len(polls) > 1,
                           progress=lambda d, t: calls.append(d), pipeline=pipeline)  # fmt: skip
    assert summary.stopped and len(polls) == 2
    assert summary.done == SMALL_IDS[:3] == LabelStore(out).ids() == LabelStore(out).ids(complete_only=False)
    assert calls == [1, 2, 3] and not label_threads()


def test_pipelined_the_next_batch_starts_before_the_last_is_handed_over(
        tmp_path, small_folder, tiny_predictor, monkeypatch):  # fmt: skip
    """One batch in flight: batch k+1 is started on the device before batch k's outputs
    are waited for and handed to the writers (a GPU computes while the host works);
    one step after another without pipelining."""
    from composite_tasking.inference import PendingBatch, Predictor
    from composite_tasking.label import label_images

    events = []
    start_batch, result = Predictor.start_batch, PendingBatch.result

    def logged_start(self, images, *args, **kwargs):
        pending = start_batch(self, images, *args, **kwargs)
        pending.k = sum(e[0] == "start" for e in events)
        events.append(("start", pending.k))
        return pending

    def logged_result(self):
        events.append(("result", self.k))
        return result(self)

    monkeypatch.setattr(Predictor, "start_batch", logged_start)
    monkeypatch.setattr(PendingBatch, "result", logged_result)
    for pipeline in (True, False):
        events.clear()
        summary = label_images([small_folder], tmp_path / f"{pipeline}.zarr", rule="mosaic",
                               model=tiny_predictor, batch_size=2, preview=None, pipeline=pipeline)  # fmt: skip
        assert summary.done == SMALL_IDS
        # batches: im-0,1 | im-2,3 | im-4-wide | im-4,5 | im-6 (the unreadable file skipped)
        n = 5
        if pipeline:
            assert events == [("start", 0)] + [e for k in range(1, n) for e in (("start", k), ("result", k - 1))] + [
                ("result", n - 1)]
        else:
            assert events == [e for k in range(n) for e in (("start", k), ("result", k))]


def test_an_error_with_a_batch_in_flight_writes_it_before_raising(tmp_path, small_folder, tiny_predictor,
                                                                   monkeypatch):  # fmt: skip
    from composite_tasking.inference import Predictor
    from composite_tasking.label import label_images

    start_batch = Predictor.start_batch
    started = []

    def fails_at_the_second(self, *args, **kwargs):
        started.append(1)
        if len(started) == 2:
            raise RuntimeError("the device fell over")
        return start_batch(self, *args, **kwargs)

    monkeypatch.setattr(Predictor, "start_batch", fails_at_the_second)
    out = tmp_path / "error.zarr"
    with pytest.raises(RuntimeError, match="fell over"):
        label_images([small_folder], out, rule="mosaic", model=tiny_predictor, batch_size=2,
                     preview=None, pipeline=True, writers=1)  # fmt: skip
    assert LabelStore(out).ids() == SMALL_IDS[:2]  # the batch in flight when it failed
    assert not label_threads()


@pytest.mark.parametrize("pipeline", [False, True])
def test_the_summary_says_where_the_labelling_threads_time_went(tmp_path, small_folder, tiny_predictor, pipeline):
    from composite_tasking.label import TIMINGS, format_timings, label_images

    summary = label_images([small_folder], tmp_path / "t.zarr", rule="mosaic", model=tiny_predictor,
                           batch_size=2, preview=None, pipeline=pipeline, writers=2 if pipeline else None)  # fmt: skip
    t = summary.timings
    assert set(t) == {*TIMINGS, "total", "writers", "writers_busy"}
    assert all(v >= 0 for v in t.values())
    assert sum(t[k] for k in TIMINGS) == pytest.approx(t["total"], rel=1e-6)
    assert t["read"] > 0 and t["predict"] > 0 and t["hand"] > 0 and t["writers_busy"] > 0
    assert t["writers"] == (2 if pipeline else 0)
    if not pipeline:  # the labelling thread wrote: within its hand-over
        assert t["writers_busy"] <= t["hand"]
    line = format_timings(t)
    assert line.startswith(f"time {t['total']:.1f} s, labelling thread: waiting for the reader ")
    assert ("2 writer(s) busy" in line) == pipeline
    assert format_timings({}) == "time: nothing timed"


def test_a_semantic_rule_encodes_each_image_once_with_batches_larger_than_the_cache(
        tmp_path, small_folder, tiny_predictor, monkeypatch):  # fmt: skip
    from composite_tasking.label import label_images

    encode = tiny_predictor.model.encode
    encoded = []
    monkeypatch.setattr(tiny_predictor.model, "encode", lambda x: encoded.append(x.shape[0]) or encode(x))
    files = [small_folder / f"im-{i}.png" for i in range(6)]
    assert tiny_predictor.cache_size == 4
    summary = label_images(files, tmp_path / "r2.zarr", rule="R2", model=tiny_predictor, batch_size=6,
                           preview=None)  # fmt: skip
    assert summary.done == [f.name for f in files]
    assert encoded == [1] * 6  # one encoder pass per image: palette and prediction share it
    assert tiny_predictor.cache_size == 4 and not tiny_predictor._cache
    # where the decoder is not region-limited (CUDA), one pass per batch
    monkeypatch.setattr(tiny_predictor, "region_decoding", False)
    encoded.clear()
    summary = label_images(files, tmp_path / "r2-batched.zarr", rule="R2", model=tiny_predictor, batch_size=6,
                           preview=None)  # fmt: skip
    assert summary.done == [f.name for f in files] and encoded == [6]
    assert not tiny_predictor._cache


def test_precision_is_chosen_and_recorded_per_image(tmp_path, small_folder, tiny_checkpoint):
    """--precision bf16 labels in bf16 autocast (on any CPU: emulated where not native)
    and says so in each image's attributes; the default on a CPU is float32."""
    from composite_tasking.label import label_images
    from composite_tasking.store import LabelStore

    files = [small_folder / "im-0.png", small_folder / "im-1.png"]
    for precision, expected in (("bf16", "bf16"), ("auto", "fp32")):
        store = tmp_path / f"{precision}.zarr"
        summary = label_images(files, store, rule="mosaic", model=tiny_checkpoint, device="cpu",
                               precision=precision)  # fmt: skip
        assert summary.ok and len(summary.done) == 2
        s = LabelStore(store, mode="r")
        assert {s.image_attrs(i)["precision"] for i in s.ids()} == {expected}
    r = label(*files, "--out", tmp_path / "x.zarr", "--model", tiny_checkpoint, "--precision", "fp64")
    assert r.returncode == 2 and "--precision" in r.stderr


# ------------------------------------------------- several writer threads (writers=N)


def test_several_writers_label_exactly_as_a_sequential_run(
        tmp_path, small_folder, tiny_predictor, monkeypatch):  # fmt: skip
    import threading

    from composite_tasking.label import label_images

    seq = label_images([small_folder], tmp_path / "seq.zarr", rule="mosaic", model=tiny_predictor,
                       batch_size=3, preview=None, pipeline=False)  # fmt: skip
    write_sample = LabelStore.write_sample
    lock, active, overlapped = threading.Lock(), [0], threading.Event()

    def write_waiting_for_company(self, image_id, *args, **kwargs):
        # the first image's writer waits (a while at most) until another writer is writing
        with lock:
            active[0] += 1
            if active[0] > 1:
                overlapped.set()
        try:
            if image_id == SMALL_IDS[0]:
                overlapped.wait(timeout=20)
            return write_sample(self, image_id, *args, **kwargs)
        finally:
            with lock:
                active[0] -= 1

    monkeypatch.setattr(LabelStore, "write_sample", write_waiting_for_company)
    calls = []
    pip = label_images([small_folder], tmp_path / "pip.zarr", rule="mosaic", model=tiny_predictor,
                       batch_size=3, preview=None, pipeline=True, writers=3,
                       progress=lambda d, t: calls.append((d, t)))  # fmt: skip
    assert overlapped.is_set()  # two images were written at once
    assert not label_threads()
    assert pip.done == seq.done == SMALL_IDS  # input order, whatever order they finished in
    assert pip.failed == seq.failed and calls == [(i, 9) for i in range(1, 10)]
    assert_same_store(seq.store, pip.store)
    assert LabelStore(pip.store).ids(complete_only=False) == SMALL_IDS


def test_a_failed_write_among_several_writers_stops_all_and_names_the_image(
        tmp_path, small_folder, tiny_predictor, monkeypatch):  # fmt: skip
    # batch 1: a re-run batches the remaining images differently, and a batch of other
    # images changes float rounding (~1e-8), so the store would not be bit-identical
    import errno

    from composite_tasking.label import label_images

    write_sample = LabelStore.write_sample

    def disk_full_at_im_2(self, image_id, *args, **kwargs):
        if image_id == "im-2.png":
            raise OSError(errno.ENOSPC, "No space left on device")
        return write_sample(self, image_id, *args, **kwargs)

    monkeypatch.setattr(LabelStore, "write_sample", disk_full_at_im_2)
    out = tmp_path / "full.zarr"
    with pytest.raises(OSError) as e:
        label_images([small_folder], out, rule="mosaic", model=tiny_predictor, batch_size=1,
                     preview=None, pipeline=True, writers=3)  # fmt: skip
    assert e.value.errno == errno.ENOSPC
    assert any("'im-2.png'" in note for note in getattr(e.value, "__notes__", [])), e.value
    assert not label_threads()
    monkeypatch.undo()
    store = LabelStore(out)
    done = store.ids()
    # the images before the failed one are complete; writers may have finished some after it
    assert set(SMALL_IDS[:2]) <= set(done) and "im-2.png" not in done
    assert store.ids(complete_only=False) == done  # every image written is complete
    check_labels(out, "mosaic")
    # the next run finishes the store, as one uninterrupted run writes it
    summary = label_images([small_folder], out, rule="mosaic", model=tiny_predictor, batch_size=1,
                           preview=None, writers=3)  # fmt: skip
    assert summary.skipped_complete == done and "im-2.png" in summary.done
    ref = label_images([small_folder], tmp_path / "ref.zarr", rule="mosaic", model=tiny_predictor,
                       batch_size=1, preview=None, pipeline=False)  # fmt: skip
    assert_same_store(out, ref.store)


def test_the_writers_flag_is_passed_on_and_validated(tmp_path, monkeypatch):
    from composite_tasking import label as label_module
    from composite_tasking.cli import build_parser, main
    from composite_tasking.label import LabelError, LabelSummary, label_images

    parser = build_parser()
    assert parser.parse_args(["label", "x", "--out", "y.zarr"]).writers is None
    for bad in ("-1", "two"):
        with pytest.raises(SystemExit) as e:
            parser.parse_args(["label", "x", "--out", "y.zarr", "--writers", bad])
        assert e.value.code == 2
    seen = {}

    def fake_label_images(inputs, store_path, **kwargs):
        seen.update(kwargs)
        return LabelSummary(store_path)

    monkeypatch.setattr(label_module, "label_images", fake_label_images)
    assert main(["label", str(tmp_path), "--out", str(tmp_path / "s.zarr"), "--writers", "3"]) == 0
    assert seen["writers"] == 3
    monkeypatch.undo()
    with pytest.raises(LabelError, match="--writers"):
        label_images([tmp_path], tmp_path / "s.zarr", writers=-1)
    assert not (tmp_path / "s.zarr").exists()  # a usage error: nothing written


# ------------------------------------------------- writer processes (writer_processes=True)
# Spawned processes decode the network's output and write the store (without torch); these
# tests use two.


def label_children():
    import multiprocessing

    return multiprocessing.active_children()


def shared_segments() -> set[str]:
    """The shared-memory buffers of ctn label's writer processes now on this machine (Linux)."""
    shm = Path("/dev/shm")
    return {p.name for p in shm.glob("ctn-label-*")} if shm.is_dir() else set()


@pytest.mark.parametrize("rule, shared", [("mosaic", True), ("R2", True), ("mosaic", False)])
def test_writer_processes_label_exactly_as_a_sequential_run(tmp_path, small_folder, tiny_predictor, rule,
                                                            shared, monkeypatch):  # fmt: skip
    """The arrays go to the processes through shared memory, all of it removed at the end;
    or, where /dev/shm has no room, through the pipe: the same store either way."""
    from composite_tasking import _writer_process
    from composite_tasking.label import label_images

    packed = []
    pack = _writer_process.SharedSlots.pack

    def logged_pack(self, arrays):
        result = pack(self, arrays)
        packed.append(result is not None)
        return result

    monkeypatch.setattr(_writer_process.SharedSlots, "pack", logged_pack)
    if not shared:
        monkeypatch.setattr(_writer_process, "_room_for", lambda nbytes: False)
    before = shared_segments()
    seq = label_images([small_folder], tmp_path / "seq.zarr", rule=rule, model=tiny_predictor, batch_size=3,
                       preview=tmp_path / "seq.png", pipeline=False)  # fmt: skip
    calls = []
    pro = label_images([small_folder], tmp_path / "pro.zarr", rule=rule, model=tiny_predictor, batch_size=3,
                       preview=tmp_path / "pro.png", pipeline=True, writers=2, writer_processes=True,
                       progress=lambda d, t: calls.append((d, t)))  # fmt: skip
    assert not label_children() and not label_threads()
    assert pro.done == seq.done == SMALL_IDS  # input order, whatever order they finished in
    assert pro.failed == seq.failed and calls == [(i, 9) for i in range(1, 10)]
    assert not pro.stopped
    assert_same_store(seq.store, pro.store)
    assert LabelStore(pro.store).ids(complete_only=False) == SMALL_IDS
    # the preview is made from the store, the same in both
    assert np.array_equal(iio.imread(seq.preview), iio.imread(pro.preview))
    assert tiny_predictor.cache_size == 4 and not tiny_predictor._cache
    assert packed == [shared] * len(SMALL_IDS)
    assert shared_segments() == before


def test_shared_slots_carry_arrays_and_grow_for_a_larger_image(monkeypatch):
    from composite_tasking import _writer_process as wp

    slots = wp.SharedSlots()
    try:
        rng = np.random.default_rng(0)
        small = (rng.integers(0, 255, (24, 32, 3), dtype=np.uint8), rng.integers(0, 6, (24, 32)).astype(np.uint8),
                 rng.normal(size=(3, 24, 32)).astype(np.float32))  # fmt: skip
        descriptors, buf = slots.pack(small)
        assert [d.shape for d in descriptors] == [a.shape for a in small]
        views = [wp._unpack(d) for d in descriptors]  # as a writer process opens them
        assert all(np.array_equal(v, a) and v.dtype == a.dtype for v, a in zip(views, small))
        assert all(d.offset % 64 == 0 for d in descriptors)
        second, buf2 = slots.pack(small)  # the first is still in flight: a second buffer
        assert buf2.name != buf.name and len(slots.names()) == 2
        slots.release(buf)
        slots.release(buf2)
        again, buf3 = slots.pack(small)  # a free buffer is used again
        assert buf3.name in (buf.name, buf2.name) and len(slots.names()) == 2
        slots.release(buf3)
        big = tuple(np.repeat(np.repeat(a, 4, axis=-2), 4, axis=-1) for a in small[1:])
        del views
        attached = set(wp._ATTACHED)
        big_descriptors, buf4 = slots.pack(big)  # larger than a free buffer: one is replaced
        assert len(slots.names()) == 2 and buf4.size >= sum(a.nbytes for a in big)
        replaced = attached - set(slots.names())
        assert len(replaced) == 1 and not replaced & shared_segments()
        big_views = [wp._unpack(d) for d in big_descriptors]  # a writer process meets the new one
        assert all(np.array_equal(v, a) for v, a in zip(big_views, big))
        if Path("/dev/shm").is_dir():  # Linux: the replaced buffer is let go at once
            assert not replaced & set(wp._ATTACHED)
        del big_views
        monkeypatch.setattr(wp, "_room_for", lambda nbytes: False)
        held = slots.pack(small)  # the other buffer is free: no new memory needed
        assert held is not None and held[1].name != buf4.name
        assert slots.pack(small) is None  # none free, no room for another: the caller sends the arrays
        monkeypatch.setattr(wp, "SHARED_MAX_BYTES", 10)
        slots.release(buf4)
        assert slots.pack(small) is None  # too large for shared memory
    finally:
        for shm in list(wp._ATTACHED.values()):
            try:
                shm.close()
            except BufferError:
                pass
        wp._ATTACHED.clear()
        names = slots.names()
        slots.close()
    assert not slots.names() and not set(names) & shared_segments()


@pytest.mark.filterwarnings("ignore:Object at im-2.png is not recognized")
def test_a_failed_write_in_a_writer_process_stops_the_run_naming_the_image(tmp_path, small_folder, tiny_predictor):
    from composite_tasking.label import label_images

    out = tmp_path / "blocked.zarr"
    LabelStore(out, mode="w")
    blocker = out / "im-2.png"
    blocker.write_text("a file where the image's group goes: creating the group fails\n")
    with pytest.raises(OSError) as e:
        label_images([small_folder], out, rule="mosaic", model=tiny_predictor, batch_size=1,
                     preview=None, pipeline=True, writers=2, writer_processes=True)  # fmt: skip
    text = " ".join([str(e.value), *getattr(e.value, "__notes__", [])])
    assert "im-2.png" in text, text
    assert not label_children() and not label_threads()  # every writer process has ended
    assert not shared_segments()  # nor is any of their shared memory left
    done = LabelStore(out).ids()
    # the images before the failed one are complete; the processes may have finished some after it
    assert set(SMALL_IDS[:2]) <= set(done) and "im-2.png" not in done
    assert LabelStore(out).ids(complete_only=False) == done  # every image written is complete
    check_labels(out, "mosaic")
    # the next run, once the file is gone, finishes the store as one uninterrupted run writes it
    # (batches of one image: how a resumed run batches the rest changes the float rounding)
    blocker.unlink()
    summary = label_images([small_folder], out, rule="mosaic", model=tiny_predictor, batch_size=1,
                           preview=None)  # fmt: skip
    assert summary.skipped_complete == done and "im-2.png" in summary.done
    ref = label_images([small_folder], tmp_path / "ref.zarr", rule="mosaic", model=tiny_predictor,
                       batch_size=1, preview=None, pipeline=False)  # fmt: skip
    assert_same_store(out, ref.store)


def test_writer_processes_leave_torch_alone(tmp_path):
    """A writer process imports the store, numpy decoding and the task table, not torch
    (~400 MB and seconds of start-up each); it writes an image all the same."""
    from composite_tasking.label.writers import ProcessWriter
    from composite_tasking.tasks import TASK_NAMES

    LabelStore(tmp_path / "s.zarr", mode="w")
    writer = ProcessWriter(tmp_path / "s.zarr", {"rule": "mosaic"}, True, TASK_NAMES, limit=2, processes=1)
    try:
        assert writer.ready(timeout=120)
        probe = "sorted(m for m in ('torch', 'zarr', 'numpy') if m in __import__('sys').modules)"
        assert writer._executor.submit(eval, probe).result(timeout=60) == ["numpy", "zarr"]
        rng = np.random.default_rng(0)
        palette = rng.integers(0, 6, (24, 32)).astype(np.uint8)
        writer.submit((str(tmp_path / "a.png"), "a.png", rng.integers(0, 255, (24, 32, 3), dtype=np.uint8),
                       palette, rng.normal(size=(3, 24, 32)).astype(np.float32), 0.0))  # fmt: skip
    finally:
        writer.close()
    writer.check()
    assert LabelStore(tmp_path / "s.zarr").ids() == ["a.png"]
    assert not label_children()


def test_writer_processes_are_used_for_many_images_only_when_pipelining(
        tmp_path, small_folder, tiny_predictor, monkeypatch):  # fmt: skip
    from composite_tasking.label import LabelError, label_images
    from composite_tasking.label import pipeline as label_module

    made = []

    class NoProcesses(Exception):
        pass

    def process_writer(*args, **kwargs):
        made.append(kwargs)
        raise NoProcesses

    monkeypatch.setattr(label_module, "ProcessWriter", process_writer)

    def run(name, **kw):
        return label_images([small_folder], tmp_path / f"{name}.zarr", rule="mosaic", model=tiny_predictor,
                            batch_size=3, preview=None, **kw)  # fmt: skip

    # fewer than PROCESS_MIN_IMAGES images (9): writer threads
    assert label_module.PROCESS_MIN_IMAGES == 64
    assert run("few", pipeline=True).done == SMALL_IDS and not made
    # processes are never used without pipelining, nor with writers=0
    assert run("seq", pipeline=False, writer_processes=True).done == SMALL_IDS and not made
    assert run("zero", pipeline=True, writers=0, writer_processes=True).done == SMALL_IDS and not made
    # False keeps threads whatever the number of images
    monkeypatch.setattr(label_module, "PROCESS_MIN_IMAGES", 5)
    assert run("false", pipeline=True, writer_processes=False).done == SMALL_IDS and not made
    # from PROCESS_MIN_IMAGES images on, or when asked: processes, default_writer_processes() of them
    with pytest.raises(NoProcesses):
        run("many", pipeline=True)
    with pytest.raises(NoProcesses):
        run("asked", pipeline=True, writers=3, writer_processes=True)
    assert [m["processes"] for m in made] == [label_module.default_writer_processes(), 3]
    assert not label_threads()
    assert 1 <= label_module.default_writer_processes() <= 12
    with pytest.raises(LabelError, match="writer_processes"):
        label_images([tmp_path], tmp_path / "s.zarr", writer_processes="yes")


def test_predict_batch_without_decoding_gives_the_outputs_that_decode_into_the_predictions(
        tiny_predictor, tiny_checkpoint):  # fmt: skip
    from composite_tasking.inference import Predictor, decode_labels
    from composite_tasking.palette import MosaicRule

    tiled = Predictor(tiny_checkpoint, device="cpu", tile=64, overlap=16)
    for predictor, size in ((tiny_predictor, (32, 40)), (tiled, (64, 80))):  # one pass; tiles
        images = [generate(3, i, size)["image"] for i in range(2)]
        palettes = [MosaicRule().palette(size, rng=i).astype(np.int64) for i in range(2)]
        preds = predictor.predict_batch(images, palettes)
        raw = predictor.predict_batch(images, palettes, decode=False)
        assert len(raw) == len(preds) == 2
        for (pal, out), pred in zip(raw, preds):
            assert pal.dtype == np.uint8 and out.dtype == np.float32 and out.shape == (3, *size)
            assert np.array_equal(pal, pred.palette) and np.array_equal(out, pred.output)
            tasks = decode_labels(out, pal, predictor.tasks)
            assert tasks.keys() == pred.tasks.keys()
            for name, t in tasks.items():
                assert np.array_equal(t.label, pred.tasks[name].label)
                assert np.array_equal(t.confidence, pred.tasks[name].confidence, equal_nan=True)
    assert tiny_predictor.predict_batch([], [], decode=False) == []


def test_predict_batch_with_a_semantic_rule_makes_each_images_palette_from_its_own_semantics(
        tiny_predictor, tiny_checkpoint):  # fmt: skip
    """predict_batch(rule=R2): one encoder pass for the batch, decoded for semantics
    everywhere, then under each image's R2 palette: the palettes are the ones the rule makes
    from each image's predicted semantics, and the outputs those of one image at a time (up
    to the float rounding of another batch size); tiled images go one at a time."""
    from composite_tasking.inference import Predictor
    from composite_tasking.palette import load_rule

    tiled = Predictor(tiny_checkpoint, device="cpu", tile=64, overlap=16)
    batched = Predictor(tiny_checkpoint, device="cpu")
    batched.region_decoding = False  # as on CUDA: the batch in one pass
    r2 = load_rule("R2")
    for predictor, size in ((batched, (32, 40)), (tiny_predictor, (32, 40)), (tiled, (64, 80))):
        images = [generate(4, i, size)["image"] for i in range(3)]
        batch = predictor.predict_batch(images, rule="R2", decode=False)
        for image, (pal, out) in zip(images, batch):
            sem = predictor.semantics(image)
            assert np.array_equal(pal, r2.palette(semantics=sem))
            one = predictor.predict(image, pal)
            np.testing.assert_allclose(out, one.output, rtol=1e-4, atol=1e-4)
        single = predictor.predict_batch(images[:1], rule="R2")[0]
        alone = predictor.predict(images[0], rule="R2")
        assert np.array_equal(single.palette, alone.palette)
        np.testing.assert_allclose(single.output, alone.output, rtol=1e-5, atol=1e-5)
    assert not tiled._cache and not tiny_predictor._cache and not batched._cache
    with pytest.raises(ValueError, match="palettes or a semantic rule"):
        tiny_predictor.predict_batch(images, None)
    with pytest.raises(ValueError, match="no palette from semantics"):
        tiny_predictor.predict_batch(images, rule="mosaic")
