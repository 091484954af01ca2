"""Concurrent runs of ``ctn label`` on one store share the work (issue #18, item 5: two
identical runs at once both labelled everything)."""

import json
import os
import socket
import subprocess
import sys
import time

import imageio.v3 as iio
import numpy as np
import pytest

from composite_tasking.label import label_images
from composite_tasking.label.claims import Claims
from composite_tasking.store import LabelStore

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def predictor(tiny_checkpoint):
    from composite_tasking.inference import Predictor

    return Predictor(tiny_checkpoint, device="cpu")


def folder_of(tmp_path, n):
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        iio.imwrite(folder / f"im{i:02d}.png", rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    return folder


def put_claim(store, image_id, pid, run="another-run", host=None, age=0.0):
    claims = Claims(store).folder
    claims.mkdir(parents=True, exist_ok=True)
    (claims / f"{image_id}.json").write_text(json.dumps(
        {"run": run, "pid": pid, "host": host or socket.gethostname(), "time": time.time() - age}))


def test_an_image_another_live_run_claimed_is_left_to_it(tmp_path, predictor):
    folder = folder_of(tmp_path, 3)
    out = tmp_path / "s.zarr"
    put_claim(out, "im01.png", os.getpid())  # a live process of this machine holds it
    summary = label_images([folder], out, rule="mosaic", model=predictor, batch_size=1, pipeline=False)
    assert summary.elsewhere == ["im01.png"] and summary.done == ["im00.png", "im02.png"] and summary.ok
    assert LabelStore(out).ids() == ["im00.png", "im02.png"]
    # this run's own claims are gone; the other run's stays until it releases it
    assert [p.name for p in Claims(out).folder.iterdir()] == ["im01.png.json"]
    (Claims(out).folder / "im01.png.json").unlink()
    again = label_images([folder], out, rule="mosaic", model=predictor, batch_size=1, pipeline=False)
    assert again.done == ["im01.png"] and again.elsewhere == []
    assert not Claims(out).folder.exists()


def test_a_claim_of_a_run_that_is_gone_is_taken_over(tmp_path, predictor):
    folder = folder_of(tmp_path, 2)
    out = tmp_path / "s.zarr"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    put_claim(out, "im00.png", dead.pid)  # its process ended (killed mid-run)
    put_claim(out, "im01.png", 1, host="another-machine", age=2 * 3600)  # another machine's, long ago
    summary = label_images([folder], out, rule="mosaic", model=predictor, batch_size=1, pipeline=False)
    assert summary.done == ["im00.png", "im01.png"] and summary.elsewhere == []
    assert not Claims(out).folder.exists()


def test_two_identical_runs_at_once_label_each_image_once(tmp_path, tiny_checkpoint):
    n = 12
    folder = folder_of(tmp_path, n)
    out = tmp_path / "s.zarr"
    LabelStore(out, mode="w")  # made first, as the first of two runs would
    cmd = [sys.executable, "-m", "composite_tasking.cli", "label", str(folder), "--out", str(out), "--rule",
           "mosaic", "--model", str(tiny_checkpoint), "--device", "cpu", "--batch-size", "1", "--no-preview"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]  # fmt: skip
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (stdout, stderr) in zip(procs, outs):
        assert p.returncode == 0, stderr
    labelled = [int(stdout.split("labelled ", 1)[1].split(" ", 1)[0]) for stdout, _ in outs]
    assert sum(labelled) == n, outs  # each image once, whichever run got it
    assert sorted(LabelStore(out).ids()) == [f"im{i:02d}.png" for i in range(n)]
    assert not Claims(out).folder.exists()
