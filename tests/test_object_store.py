"""Label stores and input images in an object store (``s3://``, issue #18 item 3), against
a real S3-compatible server: moto's, in server mode, on 127.0.0.1 (a free port), with
a bucket per test.

``ctn label`` runs as real subprocesses where the local tests run it so (two shards
writing one store at once; killed, then resumed); the rest calls the command line's
``main`` in this process (each ``ctn`` subprocess costs seconds of torch import).
"""

import json
import logging
import os
import socket
import subprocess
import sys
import time
import uuid

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from _processes import kill_when
from _scenes import scene_folder
from composite_tasking.cli import main as ctn
from composite_tasking.export import read_manifest
from composite_tasking.store import LabelStore
from composite_tasking.store.location import LocationError, Remote, locate, parse_storage_options

SIZE = (64, 80)
N = 8
VOLATILE = {"created", "updated", "run"}
CTN_LABEL = [sys.executable, "-m", "composite_tasking.cli", "label"]


@pytest.fixture(scope="session")
def moto_endpoint():
    """moto's S3 server on 127.0.0.1, a free port, for the session."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3(moto_endpoint, monkeypatch, tmp_path):
    """Credentials and the endpoint in the AWS environment variables, and a new bucket:
    ``s3.url(key)``, ``s3.fs`` (s3fs), ``s3.env`` (for subprocesses)."""
    import s3fs

    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "CTN_STORAGE_OPTIONS",
                 "RANK", "WORLD_SIZE", "LOCAL_RANK"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))

    class S3:
        bucket = f"ctn-{uuid.uuid4().hex[:12]}"
        endpoint = moto_endpoint
        fs = s3fs.S3FileSystem(skip_instance_cache=True, use_listings_cache=False)
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

        def url(self, key: str) -> str:
            return f"s3://{self.bucket}/{key}"

    s = S3()
    s.fs.mkdir(s.bucket)
    yield s
    try:
        s.fs.rm(s.bucket, recursive=True)
    except OSError:  # pragma: no cover - a process of a failed test still writing: the server goes anyway
        pass


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return scene_folder(tmp_path_factory.mktemp("images"), N, SIZE)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    from composite_tasking.model import build_model, save_checkpoint

    torch.manual_seed(0)
    return save_checkpoint(build_model("ctn-resnet18").eval(), tmp_path_factory.mktemp("model") / "ctn")


@pytest.fixture(scope="module")
def reference(folder, ckpt, tmp_path_factory):
    """The same images labelled into a local store, in this process: what every store in
    a bucket must equal."""
    from composite_tasking.label import label_images

    out = tmp_path_factory.mktemp("ref") / "labels.zarr"
    torch.set_num_threads(1)
    label_images([folder], out, model=str(ckpt), device="cpu", batch_size=1, preview=None)
    return out


def content(store_path) -> dict:
    """Every image's arrays and attributes (less times and run ids), by id."""
    store = LabelStore(store_path)
    out = {}
    for image_id in store.ids(complete_only=False):
        s = store.read_sample(image_id)
        attrs = {k: v for k, v in s.attrs.items() if k not in VOLATILE}
        out[image_id] = (attrs, s.image, s.palette, s.labels, s.maps)
    return out


def assert_same(a, b, ignore=()):
    """The same images, labels, maps and attributes (less ``ignore``; with "image"
    ignored, the pixels too: one store keeps them by reference)."""
    ca, cb = content(a), content(b)
    assert sorted(ca) == sorted(cb)
    for image_id, (attrs, *arrays) in ca.items():
        other_attrs, *others = cb[image_id]
        drop = lambda d: {k: v for k, v in d.items() if k not in ignore}  # noqa: E731
        assert drop(attrs) == drop(other_attrs), image_id
        for x, y in zip(arrays, others):
            if "image" in ignore and x is arrays[0]:
                continue
            if isinstance(x, dict):
                assert sorted(x) == sorted(y)
                for k in x:
                    assert np.array_equal(x[k], y[k], equal_nan=x[k].dtype.kind == "f"), (image_id, k)
            else:
                assert (x is None and y is None) or np.array_equal(x, y), image_id


def label_args(folder, out, ckpt, *extra):
    return [str(folder), "--out", out, "--model", str(ckpt), "--device", "cpu", "--batch-size", "1", *extra]


def complete_in_bucket(s3, key: str) -> int:
    """Images with their completion marker, from their zarr.json objects (cheap to poll)."""
    n = 0
    for meta in s3.fs.glob(f"{s3.bucket}/{key}/*/zarr.json"):
        try:
            n += json.loads(s3.fs.cat_file(meta))["attributes"]["composite_tasking"]["complete"] is True
        except (OSError, ValueError, KeyError):
            pass
    return n


# ------------------------------------------------------------------------ ctn label


def test_two_shards_in_two_processes_write_one_bucket_store_then_export(s3, folder, ckpt, reference, tmp_path):
    out = s3.url("sharded.zarr")
    args = label_args(folder, out, ckpt)
    procs = [subprocess.Popen([*CTN_LABEL, *args, "--shard", "0/2"], env=s3.env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE),
             subprocess.Popen([*CTN_LABEL, *args], env={**s3.env, "RANK": "1", "WORLD_SIZE": "2"}, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)]  # fmt: skip
    try:
        results = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (stdout, stderr) in zip(procs, results):
        assert p.returncode == 0, stderr
        assert f"labelled {N // 2} image(s) into {out}; 0 already complete; 0 skipped" in stdout
    assert_same(out, reference)
    keys = s3.fs.find(s3.bucket)
    assert not [k for k in keys if "claims" in k or k.endswith(".tmp")]  # every claim released
    assert not s3.fs.exists(f"{s3.bucket}/sharded-preview.png")

    # ctn export reads the store from the bucket: the same files as from the local store
    assert ctn(["export", out, str(tmp_path / "from-s3"), "--format", "png", "--select", "all"]) == 0
    assert ctn(["export", str(reference), str(tmp_path / "local"), "--format", "png", "--select", "all"]) == 0
    files = sorted(p.relative_to(tmp_path / "local") for p in (tmp_path / "local").rglob("*.png"))
    assert files and files == sorted(p.relative_to(tmp_path / "from-s3") for p in (tmp_path / "from-s3").rglob("*.png"))
    for f in files:
        assert np.array_equal(iio.imread(tmp_path / "local" / f), iio.imread(tmp_path / "from-s3" / f)), f
    assert read_manifest(tmp_path / "from-s3")["store"]["path"] == out


def test_killed_then_resumed_equals_an_uninterrupted_run(s3, folder, ckpt, reference, capsys):
    out = s3.url("killed.zarr")
    args = label_args(folder, out, ckpt)
    proc = subprocess.Popen([*CTN_LABEL, *args], env=s3.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kill_when(proc, lambda: complete_in_bucket(s3, "killed.zarr") >= 2, poll=0.02)
    store = LabelStore(out)
    before = store.ids()
    assert 2 <= len(before) < N
    if len(store.ids(complete_only=False)) == len(before):
        # the kill fell between two images: leave what a kill inside a write leaves, an
        # image without its completion marker, which the next run must redo
        key = f"{s3.bucket}/killed.zarr/{before[-1]}/zarr.json"
        doc = json.loads(s3.fs.cat_file(key))
        doc["attributes"]["composite_tasking"]["complete"] = False
        s3.fs.pipe_file(key, json.dumps(doc).encode())
        before = before[:-1]
    assert len(store.ids(complete_only=False)) > len(before) == len(store.ids())
    stamps = {i: s3.fs.info(f"{s3.bucket}/killed.zarr/{i}/zarr.json")["ETag"] for i in before}

    capsys.readouterr()
    assert ctn(["label", *args, "--resume"]) == 0  # in this process: a ctn start costs seconds
    assert f"labelled {N - len(before)} image(s) into {out}; {len(before)} already complete" in capsys.readouterr().out
    assert {i: s3.fs.info(f"{s3.bucket}/killed.zarr/{i}/zarr.json")["ETag"] for i in before} == stamps
    assert_same(out, reference)


def test_images_read_from_a_bucket_by_reference(s3, folder, ckpt, reference, monkeypatch):
    """Inputs from s3:// (a prefix), stored by reference: the same ids and labels as the
    local folder's; a rerun skips them; an object written again is relabelled."""
    s3.fs.put(str(folder) + "/", f"{s3.bucket}/photos", recursive=True)
    s3.fs.pipe_file(f"{s3.bucket}/photos/notes.txt", b"not an image")
    out = s3.url("labels.zarr")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    args = label_args(s3.url("photos"), out, ckpt, "--reference")
    assert ctn(["label", *args]) == 0
    store = LabelStore(out)
    assert store.ids() == LabelStore(reference).ids()
    info = store.image_attrs("sub__scene-6.png")["image"]
    assert info["stored"] is False and info["source"] == s3.url("photos/sub/scene-6.png")
    assert info["sha256_of"] == "file" and info["size"] > 0 and info["mtime_ns"] > 0
    assert_same(out, reference, ignore={"image", "shape"})  # the same labels; the pixels by reference
    sample = store.read_sample("scene-0.png")
    assert np.array_equal(store.image_pixels(sample), iio.imread(folder / "scene-0.png"))
    assert store.source_problem("scene-0.png") is None

    before = store.image_attrs("scene-1.png")
    assert ctn(["label", *args]) == 0  # nothing to do: every object is the one labelled
    assert LabelStore(out).image_attrs("scene-1.png")["updated"] == before["updated"]
    time.sleep(1.1)  # LastModified has whole seconds
    s3.fs.pipe_file(f"{s3.bucket}/photos/scene-1.png", (folder / "scene-2.png").read_bytes())
    assert LabelStore(out).source_problem("scene-1.png")[1].startswith("changed")
    assert ctn(["label", *args]) == 0
    now = LabelStore(out).image_attrs("scene-1.png")["image"]
    assert now["sha256"] != before["image"]["sha256"]  # relabelled: the new picture
    assert LabelStore(out).source_problem("scene-1.png") is None


# ------------------------------------------------------------ training and napari


def test_evaluate_and_finetune_read_a_store_in_a_bucket(s3, tmp_path, ckpt, monkeypatch):
    """``ctn evaluate --data s3://...``; fine-tuning on it (one step, through the API that
    ``ctn finetune --data`` calls with the URL)."""
    from composite_tasking.synthetic.export import STORE_NAME, write_synthetic

    local = tmp_path / "synth"
    write_synthetic(local, 2, 64, 3)
    store_dir = local / STORE_NAME
    s3.fs.put(str(store_dir) + "/", f"{s3.bucket}/gt.zarr", recursive=True)
    url = s3.url("gt.zarr")
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)  # leave the test's threads be
    assert ctn(["evaluate", "--model", str(ckpt), "--data", url, "--device", "cpu", "--json"]) == 0
    from composite_tasking.training.finetune import finetune

    result = finetune(url, str(ckpt), tmp_path / "run", rule="R2", epochs=1, max_steps_per_epoch=1, batch_size=1,
                      holdout=0, device="cpu")  # fmt: skip
    assert result.runs["ctn"].checkpoint is not None
    assert any((tmp_path / "run").rglob("*.safetensors"))


def test_the_napari_reader_opens_a_store_in_a_bucket(s3, reference):
    s3.fs.put(str(reference) + "/", f"{s3.bucket}/labels.zarr", recursive=True)
    from composite_tasking._napari.store_io import napari_get_reader, store_target

    url = s3.url("labels.zarr")
    assert store_target(url) == (locate(url), None)
    assert store_target(url + "/scene-0.png") == (locate(url), ["scene-0.png"])
    assert store_target(s3.url("nothing.zarr")) is None
    reader = napari_get_reader(url + "/scene-0.png")
    layers = reader(url)
    image = LabelStore(reference).read_sample("scene-0.png").image
    assert layers[0][2] == "image" and np.array_equal(np.asarray(layers[0][0]), image)
    assert any(kind == "labels" for _, _, kind in layers)


# --------------------------------------------------------------- store and errors


def test_claims_and_creation_in_a_bucket_are_exclusive(s3):
    from composite_tasking.label.claims import Claims
    from composite_tasking.store.remote_io import create_root

    out = s3.url("claims.zarr")
    a, b = Claims(out, "run-a"), Claims(out, "run-b")
    assert a.claim("x.png") and a.claim("x.png")
    assert not b.claim("x.png")  # the other run's (this process: alive)
    assert s3.fs.exists(f"{s3.bucket}/.claims.zarr.claims/x.png.json")
    a.release_all()
    assert b.claim("x.png")
    b.release_all()
    assert not s3.fs.find(f"{s3.bucket}/.claims.zarr.claims")

    root = locate(s3.url("race.zarr"))
    assert create_root(root, {"composite_tasking": {"format": "ctn-label-store", "format_version": 2}})
    assert not create_root(root, {"composite_tasking": {"other": 1}})  # taken: nothing replaced
    assert LabelStore(root, mode="a").attrs["format"] == "ctn-label-store"


def test_a_bucket_store_is_refused_in_one_line_naming_the_url(s3, capsys, folder):
    missing = f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/labels.zarr"
    assert ctn(["label", str(folder), "--out", missing]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and missing in err and "does not exist" in err

    unreachable = ["--storage-option", "endpoint_url=http://127.0.0.1:9"]
    assert ctn(["label", str(folder), "--out", s3.url("x.zarr"), *unreachable]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and s3.url("x.zarr") in err and "cannot reach" in err and "127.0.0.1:9" in err

    assert ctn(["export", s3.url("none.zarr"), "out", "--format", "png"]) == 2
    assert "no label store at " + s3.url("none.zarr") in capsys.readouterr().err
    assert ctn(["label", str(folder), "--out", s3.url("x.zarr"), "--storage-option", "novalue"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err
    with pytest.raises(LocationError, match="does not exist"):
        LabelStore(missing, mode="a")
    # refused credentials (moto takes any): the message of what s3fs raises then
    refused = str(Remote(s3.url("x.zarr")).error(PermissionError("Access Denied"), "reading the store"))
    assert s3.url("x.zarr") in refused and "refused access" in refused and "AWS_ACCESS_KEY_ID" in refused


def test_storage_options_reach_the_store_and_a_local_path_stays_a_path(s3, monkeypatch, tmp_path):
    assert parse_storage_options(["anon=false", "client_kwargs.region_name=eu-west-1", "endpoint_url=http://h:1"]) == {
        "anon": False, "client_kwargs": {"region_name": "eu-west-1"}, "endpoint_url": "http://h:1"}
    monkeypatch.delenv("AWS_ENDPOINT_URL")  # the endpoint from the storage options alone
    store = LabelStore(s3.url("opts.zarr"), mode="a", storage_options={"endpoint_url": s3.endpoint})
    assert isinstance(store.path, Remote) and str(store.path) == s3.url("opts.zarr")
    assert s3.fs.exists(f"{s3.bucket}/opts.zarr/zarr.json")
    assert locate(tmp_path) == tmp_path and LabelStore(tmp_path / "l.zarr", mode="a").path == tmp_path / "l.zarr"
