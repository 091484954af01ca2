"""Training end to end: the real Trainer, real checkpoints on disk, real ``ctn`` processes.

Everything is tiny (ResNet-18 CTN, 32 px synthetic scenes, a few images, no workers, one
thread). A new process costs ~5 s of imports, so the commands whose exit code or process
boundary matters run as processes (``ctn train``, ``ctn finetune``, torchrun) and the
quick usage errors run ``ctn``'s ``main`` in this process.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from composite_tasking.model import load_checkpoint
from composite_tasking.model.checkpoint import CheckpointError
from composite_tasking.training import trainer as trainer_mod
from composite_tasking.training.recipe import Recipe, RecipeError, load_recipe
from composite_tasking.training.trainer import LATEST, Trainer, TrainingDiverged

pytestmark = pytest.mark.usefixtures("one_thread_module")

ALL_TASKS = {"semseg", "parts", "edges", "saliency", "normals"}
R3_TASKS = {"parts", "edges", "saliency", "normals"}  # R3 has no segmentation


def recipe_dict(**overrides) -> dict:
    data = {
        "name": "tiny",
        "model": {"preset": "ctn-resnet18", "pretrained": False},
        "train": {"kind": "synthetic", "seed": 1, "n": 8, "size": 32},
        "val": {"kind": "synthetic", "seed": 2, "n": 4, "size": 32},
        "rule": "mosaic",
        "augment": {"hflip": True, "scale": [0.8, 1.25], "photometric": True},
        "optimizer": {"lr_decoder": 1.0e-3, "lr_encoder": 1.0e-3, "weight_decay": 1.0e-5},
        "schedule": {"kind": "plateau", "factor": 0.3, "patience": 0},
        "epochs": 2,
        "batch_size": 4,
        "workers": 0,
        "precision": "fp32",
        "seed": 0,
    }
    data.update(overrides)
    return data


def make_recipe(**overrides) -> Recipe:
    return Recipe.from_dict(recipe_dict(**overrides))


def write_recipe(path: Path, **overrides) -> Path:
    path.write_text(yaml.safe_dump(recipe_dict(**overrides)), encoding="utf-8")
    return path


def env1() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def ctn(*args, cwd=None, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "composite_tasking.cli", *map(str, args)],
                          capture_output=True, text=True, env=env1(), cwd=cwd, timeout=timeout)  # fmt: skip


def ctn_here(capsys, *args) -> tuple[int, str, str]:
    """``ctn`` in this process (the same ``main`` as the command, without the ~5 s of
    importing torch in a new process): (exit code, stdout, stderr)."""
    from composite_tasking.cli import main

    capsys.readouterr()
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): sha256(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def newest(run: Path) -> Path:
    return run / json.loads((run / LATEST).read_text())["state"]


def replace_bytes(path: Path, data: bytes) -> None:
    """Damage a file of a run copy: a new file, never a write into the (hard-linked) old one."""
    path.unlink()
    path.write_bytes(data)


def flip_byte(path: Path, offset: int = -100) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    replace_bytes(path, bytes(data))


def truncate(path: Path, size: int) -> None:
    replace_bytes(path, path.read_bytes()[:size])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def run_a(tmp_path_factory):
    """An uninterrupted two-epoch run (with augmentation and validation)."""
    out = tmp_path_factory.mktemp("train") / "run-a"
    t = Trainer(make_recipe(), out, device="cpu")
    t.fit()
    return t


def _link_or_copy(src, dst):
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


@pytest.fixture
def run_copy(run_a, tmp_path):
    """A copy of run A's folder, free to damage (through :func:`replace_bytes`).

    The files are hard links (a run is ~220 MB): the trainer never writes into a file, it
    writes new ones and renames them into place, so run A stays as it was."""
    dst = tmp_path / "run"
    shutil.copytree(run_a.out, dst, copy_function=_link_or_copy)
    return dst


# ------------------------------------------------------------------------ learning
def test_loss_falls_on_a_fixed_set(tmp_path):
    """Four epochs over the same batch of 4 scenes (no augmentation): the loss drops clearly."""
    recipe = make_recipe(rule="S:normals", val=None, augment=None, epochs=4, schedule={"kind": "none"},
                         train={"kind": "synthetic", "seed": 1, "n": 4, "size": 32})  # fmt: skip
    history = Trainer(recipe, tmp_path / "run", device="cpu").fit()
    losses = [h["train_loss"]["total"] for h in history]
    assert len(losses) == 4 and all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.6 * losses[0], losses


@pytest.mark.parametrize("preset", ["mhn-resnet18", "stn-resnet18"])
def test_rule_s_trains_every_task_at_every_pixel(tmp_path, preset):
    """Rule S (complete labels, the paper's MHN / STN baselines): the loss is every task's
    loss at every labelled pixel, whatever palette the data carries; a label changed
    anywhere changes it. A few epochs on a fixed set lower it."""
    from composite_tasking.training.losses import composite_loss

    recipe = make_recipe(model={"preset": preset, "pretrained": False}, rule="S", val=None, augment=None,
                         epochs=3, schedule={"kind": "none"},
                         train={"kind": "synthetic", "seed": 1, "n": 4, "size": 32})  # fmt: skip
    trainer = Trainer(recipe, tmp_path / "run", device="cpu")
    batch = next(iter(trainer._loader(trainer.train_set, 0, shuffle=False)))
    targets = {t: batch[t] for t in ALL_TASKS}
    model = trainer.model.eval()
    with torch.no_grad():
        got = trainer._losses(model, batch["image"], batch["palette"], targets)
        assert set(got) == ALL_TASKS | {"total"}
        total = 0.0
        for k, task in enumerate(model.config.tasks):  # by hand: one single-task palette per task
            pal = torch.full_like(batch["palette"], k + 1)
            one = composite_loss(model(batch["image"], pal), pal, {task: targets[task]}, recipe.loss_weights)
            torch.testing.assert_close(got[task], one[task])
            total += float(one["total"])
        assert float(got["total"]) == pytest.approx(total, rel=1e-5)
        # the data's palette does not matter; every pixel's label does
        other = trainer._losses(model, batch["image"], torch.zeros_like(batch["palette"]), targets)
        assert float(other["total"]) == pytest.approx(float(got["total"]), rel=1e-6)
        sal = targets["saliency"].clone()
        sal[:, 0, 0] = 1 - sal[:, 0, 0].clamp(max=1)
        changed = trainer._losses(model, batch["image"], batch["palette"], {**targets, "saliency": sal})
        assert float(changed["saliency"]) != float(got["saliency"])
    history = trainer.fit()
    losses = [h["train_loss"]["total"] for h in history]
    assert len(losses) == 3 and losses[-1] < losses[0], losses


def test_rule_s_is_refused_for_the_palette_network():
    with pytest.raises(RecipeError, match="rule S"):
        make_recipe(model={"preset": "palette-resnet18", "pretrained": False}, rule="S")


def test_curves_and_history(run_a):
    out = run_a.out
    png = out / "curves.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    for h in history:
        assert math.isfinite(h["train_loss"]["total"])
        assert set(h["val"]["metrics"]) == ALL_TASKS  # validation under rule S
    # the newest state only; its state.json holds the same history
    assert sorted(p.name for p in out.iterdir()) == ["curves.png", "epoch-0002", "history.json", LATEST]
    assert json.loads((out / "epoch-0002" / "state.json").read_text())["history"] == history


def test_a_stop_mid_epoch_drops_that_epoch_and_writes_nothing_of_it(tmp_path):
    """should_stop is asked before every step: a stop in epoch 2 leaves epoch 1's
    checkpoint as the newest, and a resume redoes epoch 2."""
    recipe = make_recipe(val=None, augment=None, epochs=2, schedule={"kind": "none"},
                         train={"kind": "synthetic", "seed": 1, "n": 8, "size": 32}, batch_size=2)  # fmt: skip
    asked = []

    def should_stop():
        asked.append(1)
        # epoch 1 (4 steps): asked at its start and before steps 2-4 (4 times); epoch 2:
        # at its start and before step 2 (no), before step 3: stop, mid-epoch
        return len(asked) > 6

    t = Trainer(recipe, tmp_path / "run", device="cpu", should_stop=should_stop)
    history = t.fit()
    assert [h["epoch"] for h in history] == [1]
    assert json.loads((tmp_path / "run" / LATEST).read_text())["epoch"] == 1
    assert t.epoch == 1 and len(asked) == 7
    again = Trainer(recipe, tmp_path / "run", device="cpu", resume=True)
    assert again.epoch == 1 and [h["epoch"] for h in again.fit()] == [1, 2]


# -------------------------------------------------------------------------- resume
def _optimizer_tensors(opt) -> dict[str, torch.Tensor]:
    return {f"{pid}.{k}": v for pid, st in opt.state_dict()["state"].items()
            for k, v in st.items() if torch.is_tensor(v)}  # fmt: skip


def test_resume_is_bit_identical(run_a, tmp_path):
    out = tmp_path / "run-b"
    Trainer(make_recipe(epochs=1), out, device="cpu").fit()
    assert json.loads((out / LATEST).read_text())["epoch"] == 1
    b = Trainer(make_recipe(), out, device="cpu", resume=True)
    assert b.epoch == 1
    b.fit()
    assert b.epoch == 2

    sa, sb = run_a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys()
    differ = [k for k in sa if not torch.equal(sa[k], sb[k])]
    assert not differ, f"weights differ after resume: {differ[:5]}"

    ta, tb = _optimizer_tensors(run_a.optimizer), _optimizer_tensors(b.optimizer)
    assert ta.keys() == tb.keys() and len(ta) > 0
    differ = [k for k in ta if not torch.equal(ta[k], tb[k])]
    assert not differ, f"optimizer state differs after resume: {differ[:5]}"
    # hyper-parameters: the same after a JSON round trip (betas come back as a list)
    groups = lambda t: json.loads(json.dumps(t.optimizer.state_dict()["param_groups"]))  # noqa: E731
    assert groups(run_a) == groups(b)
    assert run_a.schedule.state() == b.schedule.state()
    assert [h["train_loss"] for h in run_a.history] == [h["train_loss"] for h in b.history]
    # and the files on disk agree
    fa, fb = newest(run_a.out), newest(out)
    assert sha256(fa / "model" / "model.safetensors") == sha256(fb / "model" / "model.safetensors")
    assert sha256(fa / "optimizer.safetensors") == sha256(fb / "optimizer.safetensors")


# ---------------------------------------------------------------- damaged checkpoints
def test_corrupt_model_refused_api(run_copy):
    weights = newest(run_copy) / "model" / "model.safetensors"
    flip_byte(weights)
    with pytest.raises(CheckpointError, match="model.safetensors") as e:
        Trainer(make_recipe(epochs=3), run_copy, device="cpu", resume=True)
    assert str(weights) in str(e.value)


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_corrupt_optimizer_refused_api(run_copy, damage):
    opt = newest(run_copy) / "optimizer.safetensors"
    if damage == "truncate":
        truncate(opt, opt.stat().st_size // 2)
    else:  # a flipped byte in the tensor data: only the recorded digest notices
        flip_byte(opt)
    with pytest.raises(CheckpointError) as e:
        Trainer(make_recipe(epochs=3), run_copy, device="cpu", resume=True)
    assert str(opt) in str(e.value)


def test_corrupt_state_json_refused_api(run_copy):
    state = newest(run_copy) / "state.json"
    truncate(state, 50)
    with pytest.raises(CheckpointError, match="state.json") as e:
        Trainer(make_recipe(epochs=3), run_copy, device="cpu", resume=True)
    assert str(state) in str(e.value)


def test_corrupt_checkpoint_refused_cli(run_copy, tmp_path, capsys):
    recipe = write_recipe(tmp_path / "recipe.yaml", epochs=3)
    weights = newest(run_copy) / "model" / "model.safetensors"
    flip_byte(weights)
    before = digests(run_copy)
    r = ctn("train", "--config", recipe, "--out", run_copy, "--resume")
    assert r.returncode == 2, r.stderr
    assert str(weights) in r.stderr and "Traceback" not in r.stderr
    code, out, err = ctn_here(capsys, "evaluate", "--model", run_copy, "--data", "synthetic:seed=5,n=2,size=32",
                              "--json")  # fmt: skip
    assert code == 2 and str(weights) in err and out == "", err
    assert digests(run_copy) == before  # nothing written


def test_truncated_optimizer_refused_cli(run_copy, tmp_path, capsys):
    recipe = write_recipe(tmp_path / "recipe.yaml", epochs=3)
    opt = newest(run_copy) / "optimizer.safetensors"
    truncate(opt, 1000)
    code, _, err = ctn_here(capsys, "train", "--config", recipe, "--out", run_copy, "--resume")
    assert code == 2 and str(opt) in err, err
    assert sorted(p.name for p in run_copy.iterdir()) == ["curves.png", "epoch-0002", "history.json", LATEST]


# ------------------------------------------------------------------------ divergence
def test_nan_loss_stops_and_keeps_checkpoint_api(run_copy, monkeypatch):
    before = digests(run_copy)
    latest = (run_copy / LATEST).read_text()
    real = trainer_mod.composite_loss
    calls = {"n": 0}

    def nan_at_second_step(*args, **kwargs):
        result = real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 2:
            result["total"] = result["total"] * math.nan
        return result

    monkeypatch.setattr(trainer_mod, "composite_loss", nan_at_second_step)
    t = Trainer(make_recipe(epochs=4), run_copy, device="cpu", resume=True)
    with pytest.raises(TrainingDiverged, match=r"epoch 3, step 2: the loss is nan"):
        t.fit()
    assert digests(run_copy) == before
    assert (run_copy / LATEST).read_text() == latest
    assert not any(p.name.startswith(".") for p in run_copy.iterdir())


def test_nan_weights_are_never_saved(run_copy, monkeypatch):
    """A finite loss with non-finite weights after the step must not become a checkpoint
    (one step per epoch: the next loss, which would be NaN, is never computed)."""
    before = digests(run_copy)
    t = Trainer(make_recipe(epochs=3, max_steps_per_epoch=1), run_copy, device="cpu", resume=True)
    step = t.optimizer.step

    def poisoned_step(*args, **kwargs):
        out = step(*args, **kwargs)
        with torch.no_grad():
            next(t.model.parameters()).fill_(math.inf)
        return out

    monkeypatch.setattr(t.optimizer, "step", poisoned_step)
    with pytest.raises(TrainingDiverged, match="weights became NaN or infinite"):
        t.fit()
    assert digests(run_copy) == before


def test_nan_loss_cli_exit_1(run_copy, tmp_path):
    """A rate of 1e30 blows the weights up in one step: exit 1, epoch 2 stays as it was."""
    recipe = write_recipe(tmp_path / "recipe.yaml", epochs=3, val=None,
                          optimizer={"lr_decoder": 1.0e30, "lr_encoder": 1.0e30})  # fmt: skip
    before = digests(run_copy)
    latest = json.loads((run_copy / LATEST).read_text())
    r = ctn("train", "--config", recipe, "--out", run_copy, "--resume")
    assert r.returncode == 1, r.stderr
    assert "training stopped" in r.stderr and "epoch 3" in r.stderr and "Traceback" not in r.stderr
    assert digests(run_copy) == before
    assert json.loads((run_copy / LATEST).read_text()) == latest and latest["state"] == "epoch-0002"
    model, info = load_checkpoint(run_copy / latest["model"])  # verifies the digest
    assert all(torch.isfinite(v).all() for v in model.state_dict().values() if v.is_floating_point())
    # and the run still resumes with a sane recipe
    assert Trainer(make_recipe(epochs=3), run_copy, device="cpu", resume=True).epoch == 2


# --------------------------------------------------------------------------- the CLI
def test_train_refuses_misuse(run_copy, tmp_path, capsys):
    recipe = write_recipe(tmp_path / "recipe.yaml")
    before = digests(run_copy)
    code, _, err = ctn_here(capsys, "train", "--config", recipe, "--out", run_copy)
    assert code == 2 and "--resume" in err and str(run_copy) in err, err
    assert digests(run_copy) == before

    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = ctn_here(capsys, "train", "--config", recipe, "--out", empty, "--resume")
    assert code == 2 and "nothing to resume" in err and str(empty) in err, err
    assert list(empty.iterdir()) == []

    typo = tmp_path / "typo.yaml"
    typo.write_text(yaml.safe_dump({**recipe_dict(), "learning_rate": 0.1}))
    code, _, err = ctn_here(capsys, "train", "--config", typo, "--out", tmp_path / "new")
    assert code == 2 and "learning_rate" in err and str(typo) in err, err

    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [tiny\nepochs: 2\n")
    code, _, err = ctn_here(capsys, "train", "--config", bad, "--out", tmp_path / "new")
    assert code == 2 and "not valid YAML" in err and str(bad) in err, err
    assert not (tmp_path / "new").exists()


def test_finetune_then_evaluate(run_a, tmp_path, capsys):
    out = tmp_path / "ft"
    r = ctn("finetune", "--model", run_a.out, "--data", "synthetic:seed=3,n=8,size=32", "--rule", "R3",
            "--out", out, "--epochs", "1", cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    ckpt = out / "epoch-0001" / "model"
    _, info = load_checkpoint(ckpt)
    init = newest(run_a.out) / "model"
    assert info.provenance["init_sha256"] == sha256(init / "model.safetensors")
    assert Path(info.provenance["init"]) == init
    assert info.provenance["recipe"]["rule"] == "R3" and info.provenance["recipe"]["val"] is None
    assert info.provenance["recipe"]["train"]["n"] == 8

    def evaluate(rule: str) -> dict:
        args = ["evaluate", "--model", out, "--data", "synthetic:seed=5,n=4,size=32", "--rule", rule, "--json"]
        code, stdout, err = ctn_here(capsys, *args)
        assert code == 0, err

        def no_nan(token):
            raise AssertionError(f"not strict JSON: {token}")

        return json.loads(stdout, parse_constant=no_nan)

    s = evaluate("S")
    assert s["rule"] == "S" and s["images"] == 4
    assert set(s["metrics"]) == set(s["primary"]) == ALL_TASKS
    assert s["model"]["sha256"] == sha256(ckpt / "model.safetensors")
    r3 = evaluate("R3")
    assert r3["rule"] == "R3" and set(r3["metrics"]) == set(r3["primary"]) == R3_TASKS
    assert all(isinstance(v, float) for v in r3["primary"].values())


# --------------------------------------------------------------------------- DDP
def _torchrun(tmp_path, *args, timeout=180) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", str(free_port()), *map(str, args)]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, env=env1(), cwd=tmp_path, timeout=timeout)


def test_ddp_two_gloo_processes(tmp_path):
    # 8 scenes, 2 per step: each rank's shard has 2 steps, max_steps_per_epoch keeps 1
    recipe = write_recipe(tmp_path / "recipe.yaml", epochs=1, max_steps_per_epoch=1, val=None,
                          augment=None, batch_size=2)  # fmt: skip
    out = tmp_path / "ddp"
    r = _torchrun(tmp_path, "-m", "composite_tasking.cli", "train", "--config", recipe, "--out", out,
                  "--device", "cpu")  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["curves.png", "epoch-0001", "history.json", LATEST]
    assert sorted(p.name for p in (out / "epoch-0001").iterdir()) == ["model", "optimizer.safetensors",
                                                                      "state.json"]  # fmt: skip
    assert r.stdout.count("epoch 1:") == 1  # rank 0 alone reports the epoch
    assert len(json.loads((out / "history.json").read_text())) == 1
    load_checkpoint(out / "epoch-0001" / "model")


DDP_SYNC = """
import json, math, os, sys
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from composite_tasking.training.recipe import Recipe, RecipeError, load_recipe
from composite_tasking.training.trainer import Trainer


def replica(rank, out, recipe, port):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2",
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
    torch.set_num_threads(1)
    t = Trainer(Recipe.from_dict(json.loads(recipe)), out, device="cpu")
    if t.rank == 0:  # rank 0 (which alone validates) sees a plateau: it lowers the rate
        t.schedule.best = -math.inf
    t.fit()
    vec = torch.cat([p.detach().flatten() for p in t.model.parameters()]
                    + [torch.tensor([g["lr"] for g in t.optimizer.param_groups])])
    every = [torch.empty_like(vec) for _ in range(t.world)]
    dist.all_gather(every, vec)
    same = all(torch.equal(every[0], v) for v in every)
    print(f"rank {t.rank}: lr {[g['lr'] for g in t.optimizer.param_groups]}, replicas equal: {same}",
          flush=True)
    dist.destroy_process_group()
    if not same:
        sys.exit(3)


if __name__ == "__main__":
    # two gloo processes forked after the imports (torchrun would import torch three times)
    mp.start_processes(replica, args=tuple(sys.argv[1:4]), nprocs=2, start_method="fork")
"""


def test_ddp_replicas_share_the_schedule(tmp_path):
    """Rank 0 drives the plateau schedule; the other ranks must follow its rate, or the
    replicas' weights drift apart."""
    script = tmp_path / "sync.py"
    script.write_text(DDP_SYNC)
    recipe = recipe_dict(epochs=2, max_steps_per_epoch=1, val=None, augment=None, batch_size=2,
                         schedule={"kind": "plateau", "factor": 0.5, "patience": 0})  # fmt: skip
    r = subprocess.run([sys.executable, str(script), str(tmp_path / "ddp"), json.dumps(recipe), str(free_port())],
                       capture_output=True, text=True, env=env1(), cwd=tmp_path, timeout=180)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("replicas equal: True") == 2
    assert r.stdout.count("lr [0.0005, 0.0005]") == 2


def test_max_minutes_stops_after_the_last_finished_epoch(tmp_path, capsys, monkeypatch):
    """``ctn train --max-minutes M``: the clock runs out during epoch 2 of 5; epoch 1 is
    the newest checkpoint, exit 0, and ``--resume`` continues from it."""
    from composite_tasking.cli import training as cli  # the module whose clock runs --max-minutes

    recipe = write_recipe(tmp_path / "recipe.yaml", epochs=5, val=None, augment=None,
                          schedule={"kind": "none"}, batch_size=2)  # fmt: skip
    clock = {"t": 1000.0, "calls": 0}

    def fake_now():
        # the first call sets the deadline (30 s ahead); each later call (before every
        # epoch and every step after an epoch's first) advances the clock by 5 s. Epoch 1
        # (4 steps) asks 4 times (+20 s); epoch 2 asks at its start and at its step 2:
        # +30 s, out of time in the middle of epoch 2
        clock["calls"] += 1
        clock["t"] += 0.0 if clock["calls"] == 1 else 5.0
        return clock["t"]

    monkeypatch.setattr(cli, "_now", fake_now)
    code, out, err = ctn_here(capsys, "train", "--config", recipe, "--out", tmp_path / "run",
                              "--max-minutes", "0.5")  # fmt: skip
    monkeypatch.undo()
    assert code == 0, err
    latest = json.loads((tmp_path / "run" / LATEST).read_text())
    assert latest["epoch"] == 1, out
    assert "time limit of 0.5 min reached after 1 of 5 epoch(s)" in out and "--resume" in out
    # --resume continues (the clock is real again: it finishes)
    code, out, err = ctn_here(capsys, "train", "--config", recipe, "--out", tmp_path / "run", "--resume")
    assert code == 0 and json.loads((tmp_path / "run" / LATEST).read_text())["epoch"] == 5, err

    for bad in ("0", "-1", "soon", "inf"):
        with pytest.raises(SystemExit) as e:
            ctn_here(capsys, "train", "--config", recipe, "--out", tmp_path / "x", "--max-minutes", bad)
        assert e.value.code == 2
    assert "--max-minutes" in capsys.readouterr().err


# --------------------------------------------------------------------- recipe checks
@pytest.mark.parametrize("change, words", [
    ({"optimizer": {"lr": 1.0e-2}}, ["optimizer", "'lr'", "lr_decoder, lr_encoder"]),
    ({"schedule": {"kind": "step", "milestone": [1]}}, ["schedule", "'milestone'", "milestones"]),
    ({"schedule": {"kind": "step", "patience": 3}}, ["schedule", "'patience'", "kind, factor, milestones"]),
    ({"augment": {"hfilp": False}}, ["augment", "'hfilp'", "hflip"]),
    ({"model": {"preset": "ctn-resnet18", "pretrainde": True}}, ["model", "'pretrainde'", "pretrained"]),
    ({"loss_weights": {"semseeg": 1}}, ["loss_weights", "'semseeg'", "semseg"]),
    ({"train": {"kind": "synthetic", "seed": 1, "n": 8, "sise": 32}}, ["train", "'sise'", "seed, n, size"]),
    ({"optimizer": {"lr_decoder": "fast"}}, ["optimizer.lr_decoder", "'fast'"]),
    ({"optimizer": {"lr_decoder": 0}}, ["optimizer.lr_decoder", "> 0", "got 0"]),
    ({"optimizer": {"lr_decoder": 1.0e-3, "lr_encoder": -1.0e-5}}, ["optimizer.lr_encoder", "-1e-05"]),
    ({"loss_weights": {"edges": -50}}, ["loss_weights.edges", "-50"]),
    ({"loss_weights": {"edges": ".inf"}}, ["loss_weights.edges", "inf"]),
    ({"grad_clip": 0}, ["grad_clip", "got 0"]),
    ({"max_steps_per_epoch": 0}, ["max_steps_per_epoch", "got 0"]),
    ({"epochs": 0}, ["epochs", "got 0"]),
    ({"batch_size": "four"}, ["batch_size", "'four'"]),
    ({"train": {"kind": "synthetic", "seed": 1, "n": 0}}, ["train", "n must be an integer >= 1", "got 0"]),
])  # fmt: skip
def test_a_typo_or_a_bad_value_anywhere_in_a_recipe_is_an_error(tmp_path, change, words):
    """Recipe.validate reads every nested key and value the trainer reads: an error names
    the key, the value or the allowed keys, and the file."""
    path = tmp_path / "recipe.yaml"
    data = recipe_dict(**change)
    if change.get("loss_weights", {}).get("edges") == ".inf":
        text = yaml.safe_dump(recipe_dict()).replace("rule: mosaic", "rule: mosaic\nloss_weights: {edges: .inf}")
        path.write_text(text)
    else:
        path.write_text(yaml.safe_dump(data))
    with pytest.raises(RecipeError) as e:
        load_recipe(path)
    msg = str(e.value)
    assert str(path) in msg and all(w in msg for w in words), msg


def test_recipe_numbers_yaml_reads_as_strings_and_a_frozen_encoder_are_accepted(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe_dict()).replace("lr_decoder: 0.001", "lr_decoder: 1e-3")
                    .replace("lr_encoder: 0.001", "lr_encoder: 0"))  # fmt: skip
    r = load_recipe(path)
    assert r.optimizer["lr_decoder"] == 1e-3 and r.optimizer["lr_encoder"] == 0


def test_bad_recipe_value_via_the_cli(tmp_path, capsys):
    recipe = write_recipe(tmp_path / "fast.yaml", optimizer={"lr_decoder": "fast", "lr_encoder": 1e-5})
    code, _, err = ctn_here(capsys, "train", "--config", recipe, "--out", tmp_path / "run")
    assert code == 2 and "optimizer.lr_decoder" in err and "'fast'" in err and str(recipe) in err, err
    assert "could not convert" not in err and not (tmp_path / "run").exists()


def test_help_names_the_pascal_mt_split_and_the_store_images():
    from composite_tasking.cli import build_parser

    commands = build_parser()._subparsers._group_actions[0].choices
    helps = {c: {a.dest: a.help or "" for a in commands[c]._actions} for c in ("finetune", "evaluate")}
    for command, split in (("finetune", "default split train"), ("evaluate", "default split val")):
        data = helps[command]["data"]
        assert "pascal-mt:ROOT[,split=train|val]" in data and split in data, data
        assert "all_images" in helps[command]
    assert "256 px" in helps["finetune"]["data"] and "self-training" in helps["finetune"]["all_images"]


# ------------------------------------------------------------------ resume, JSON, Ctrl-C
def test_resume_with_another_architecture_is_a_short_error(run_copy, tmp_path):
    recipe = write_recipe(tmp_path / "r34.yaml", model={"preset": "ctn-resnet34", "pretrained": False}, epochs=3)
    before = digests(run_copy)
    r = ctn("train", "--config", recipe, "--out", run_copy, "--resume")
    assert r.returncode == 2, r.stderr
    err = r.stderr
    assert "differs from the run's" in err and str(newest(run_copy) / "model") in err, err
    assert "Traceback" not in err and len(err) < 1000, err
    assert digests(run_copy) == before


def test_resume_lists_changed_recipe_values(run_copy, tmp_path, capsys):
    recipe = write_recipe(tmp_path / "more.yaml", epochs=3, grad_clip=5.0)
    code, out, err = ctn_here(capsys, "train", "--config", recipe, "--out", run_copy, "--resume",
                              "--device", "cpu")  # fmt: skip
    assert code == 0, err
    line = next(ln for ln in out.splitlines() if "recipe values changed" in ln)
    assert "epochs: 2 -> 3" in line and "grad_clip: None -> 5.0" in line, line
    assert json.loads((run_copy / LATEST).read_text())["epoch"] == 3


def test_a_state_json_without_a_key_is_named(run_copy):
    state = newest(run_copy) / "state.json"
    data = json.loads(state.read_text())
    del data["schedule"]
    replace_bytes(state, json.dumps(data).encode())
    with pytest.raises(CheckpointError) as e:
        Trainer(make_recipe(epochs=3), run_copy, device="cpu", resume=True)
    assert str(state) in str(e.value) and "'schedule'" in str(e.value)


def test_run_files_are_strict_json(run_a):
    """A metric with nothing to score (a class absent from the validation scenes) is
    NaN in memory and null on disk; resuming reads it back (test_resume_*)."""

    def no_nan(token):
        raise AssertionError(f"not strict JSON: {token}")

    folder = newest(run_a.out)
    history = json.loads((run_a.out / "history.json").read_text(), parse_constant=no_nan)
    json.loads((folder / "state.json").read_text(), parse_constant=no_nan)
    json.loads((folder / "model" / "config.json").read_text(), parse_constant=no_nan)
    assert any(v is None for h in history for v in h["val"]["metrics"]["semseg"]["IoU"])


def test_ctrl_c_says_whether_an_epoch_was_saved(tmp_path, capsys, monkeypatch):
    from composite_tasking.cli import training as cli  # the module that draws the progress bars

    def interrupt_at_step(stop_epoch):
        def progress(event):
            if event.get("epoch") == stop_epoch and event.get("step") == 1:
                raise KeyboardInterrupt  # what Ctrl-C raises
        return lambda: progress

    recipe = write_recipe(tmp_path / "recipe.yaml", epochs=2, val=None, augment=None, batch_size=4)
    monkeypatch.setattr(cli, "train_progress", interrupt_at_step(1))
    code, _, err = ctn_here(capsys, "train", "--config", recipe, "--out", tmp_path / "run")
    assert code == 130 and "nothing was saved" in err and "--resume" not in err, err
    monkeypatch.setattr(cli, "train_progress", interrupt_at_step(2))
    code, _, err = ctn_here(capsys, "train", "--config", recipe, "--out", tmp_path / "run2")
    assert code == 130 and "epoch 1, the last complete one, is saved" in err and "--resume" in err, err
