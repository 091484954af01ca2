"""Fine-tuning and evaluating on a label store, as a user runs it: a store written by
``ctn synth`` (ground truth) and one written by ``ctn label --rule R2`` (pseudo-labels
with their palettes), real ``ctn`` processes, tiny sizes (ResNet-18, 64 px and 48 x 80
images: a store's images differ in size).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from composite_tasking.datasets import DatasetError, StoreRuleError, check_stored_palettes, training_ids
from composite_tasking.store import LabelStore
from composite_tasking.training.recipe import Recipe, RecipeError
from composite_tasking.training.trainer import LATEST, Trainer

pytestmark = pytest.mark.usefixtures("one_thread_module")

#: a fine-tuning recipe sized for these tests: one step of two 64 px crops per epoch
FINETUNE = {
    "name": "finetune-test", "train": {"kind": "synthetic", "seed": 0, "n": 2, "size": 64}, "val": None,
    "rule": "R2", "optimizer": {"lr_decoder": 1.0e-4, "lr_encoder": 1.0e-5},
    "schedule": {"kind": "none"}, "augment": {"crop": 64, "hflip": True, "scale": None, "photometric": False},
    "epochs": 1, "batch_size": 2, "workers": 0, "precision": "fp32", "max_steps_per_epoch": 1,
    "bn_recalibration_batches": 1,
}  # fmt: skip


def env1() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def ctn(*args, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "composite_tasking.cli", *map(str, args)],
                          capture_output=True, text=True, env=env1(), timeout=timeout)  # fmt: skip


def digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}  # fmt: skip


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_checkpoint):
    """``ctn synth`` (4 scenes of 64 px, 2 of 48 x 80) and ``ctn label --rule R2`` of its
    images with a random ResNet-18 CTN: ``ground-truth.zarr`` (no palettes) and
    ``labels.zarr`` (pseudo-labels, the R2 palettes, rule recorded)."""
    root = tmp_path_factory.mktemp("world")
    for args in (["--n", 4, "--size", 64], ["--n", 2, "--size", "48x80", "--start", 4]):
        r = ctn("synth", root, *args)
        assert r.returncode == 0, r.stderr
    r = ctn("label", root / "images", "--out", root / "labels.zarr", "--model", tiny_checkpoint,
            "--rule", "R2", "--device", "cpu", "--no-preview")  # fmt: skip
    assert r.returncode == 0, r.stderr
    recipe = root / "finetune.yaml"
    recipe.write_text(yaml.safe_dump(FINETUNE), encoding="utf-8")
    return {"root": root, "gt": root / "ground-truth.zarr", "labels": root / "labels.zarr",
            "recipe": recipe, "model": tiny_checkpoint}  # fmt: skip


def copy_store(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# ------------------------------------------------------------- the rule of the palettes
def test_a_rule_the_stored_palettes_contradict_is_refused(world, tmp_path):
    """The store's palettes were made by ``ctn label --rule R2``; a stored palette wins
    over the rule, so training or scoring "under R3" would really be under R2."""
    store, model = world["labels"], world["model"]
    ids = LabelStore(store).ids()
    assert all(LabelStore(store).image_attrs(i)["rule"] == "R2" for i in ids)
    before = digests(store)
    r = ctn("finetune", "--model", model, "--data", store, "--all-images", "--rule", "R3",
            "--out", tmp_path / "ft", "--config", world["recipe"], "--device", "cpu")  # fmt: skip
    assert r.returncode == 2, r.stderr
    err = r.stderr
    assert str(store) in err and f"{len(ids)} image(s)" in err and ids[0] in err, err
    assert "rule R2, not R3" in err and "ctn label --rule R3" in err and "--rule R2 to train" in err, err
    assert "Traceback" not in err and not (tmp_path / "ft").exists()

    r = ctn("evaluate", "--model", model, "--data", store, "--all-images", "--rule", "R3", "--device", "cpu")
    assert r.returncode == 2 and "rule R2, not R3" in r.stderr and "--rule R2 to score" in r.stderr, r.stderr
    # rule S asks for no palette from the data: any store; the images differ in size
    r = ctn("evaluate", "--model", model, "--data", store, "--all-images", "--device", "cpu", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["images"] == len(ids)
    assert digests(store) == before

    # under the rule the palettes were made with it trains, and the checkpoint says so
    r = ctn("finetune", "--model", model, "--data", store, "--all-images", "--rule", "R2",
            "--out", tmp_path / "ft2", "--config", world["recipe"], "--device", "cpu")  # fmt: skip
    assert r.returncode == 0, r.stderr
    config = json.loads((tmp_path / "ft2" / "epoch-0001" / "model" / "config.json").read_text())
    assert config["provenance"]["recipe"]["rule"] == "R2"
    assert config["provenance"]["recipe"]["train"] == {"kind": "store", "root": str(store), "select": "all",
                                                       "size": 256}  # fmt: skip
    assert digests(store) == before


def test_palettes_painted_by_hand_and_stores_without_palettes_pass(world, tmp_path):
    # ctn synth's ground truth has no palettes: the rule makes them from the stored semseg
    check_stored_palettes(world["gt"], "R3")
    store = copy_store(world["labels"], tmp_path / "labels.zarr")
    st = LabelStore(store, mode="a")
    first, *rest = st.ids()
    for i in rest:
        st.remove(i)
    assert st.image_attrs(first)["rule"] == "R2"
    sample = st.read_sample(first)
    # a palette a person painted: rewritten without a recorded rule
    st.write_sample(first, {"image": sample.image, "palette": sample.palette, **sample.labels},
                    provenance=dict(sample.provenance), overwrite=True)  # fmt: skip
    assert "rule" not in st.image_attrs(first)
    check_stored_palettes(store, "R3")
    with pytest.raises(StoreRuleError, match="rule R2, not R3"):
        check_stored_palettes(world["labels"], "R3")


# --------------------------------------------------------------- which images train
def test_finetune_trains_on_corrections_and_ground_truth_only(world, tmp_path):
    store = copy_store(world["labels"], tmp_path / "labels.zarr")
    n = len(LabelStore(store))
    r = ctn("finetune", "--model", world["model"], "--data", store, "--rule", "R2",
            "--out", tmp_path / "ft", "--config", world["recipe"], "--device", "cpu")  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert str(store) in r.stderr and f"holds {n} image(s)" in r.stderr and "--all-images" in r.stderr
    assert not (tmp_path / "ft").exists()

    # a person corrects a task of one image: that image alone trains
    st = LabelStore(store, mode="a")
    chosen = st.ids()[2]
    task, label = next((t, v) for t, v in st.read_sample(chosen).labels.items() if t != "normals")
    label = label.copy()
    label[:4, :4] = 0
    st.update_labels(chosen, {task: label}, provenance={task: "corrected"})
    assert training_ids(store) == [chosen]
    assert training_ids(store, "all") == st.ids()
    spec = {"kind": "store", "root": str(store)}
    trainer = Trainer(Recipe.from_dict({**FINETUNE, "init": str(world["model"]), "train": spec}),
                      tmp_path / "api", device="cpu")  # fmt: skip
    assert trainer.train_set.ids == [chosen]
    every = Trainer(Recipe.from_dict({**FINETUNE, "init": str(world["model"]), "train": {**spec, "select": "all"}}),
                    tmp_path / "api-all", device="cpu")  # fmt: skip
    assert every.train_set.ids == st.ids()
    # ground truth trains too
    assert training_ids(world["gt"]) == LabelStore(world["gt"]).ids()
    with pytest.raises(RecipeError, match="select"):
        Recipe.from_dict({**FINETUNE, "train": {**spec, "select": "pseudo"}})
    with pytest.raises(DatasetError, match="--all-images"):
        training_ids(world["labels"])


# ---------------------------------------------------------------- images of any size
def test_evaluate_batches_images_of_one_size(world):
    """The store holds four 64 x 64 and two 48 x 80 images (batches of 5 would mix them):
    they are batched by size, and the metrics are those of one image at a time."""
    from composite_tasking.model import load_checkpoint
    from composite_tasking.training.evaluate import evaluate

    r = ctn("evaluate", "--model", world["model"], "--data", world["gt"], "--batch-size", 5, "--device",
            "cpu", "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    batched = json.loads(r.stdout)
    assert batched["images"] == 6
    model, _ = load_checkpoint(world["model"])
    single = evaluate(model, str(world["gt"]), device="cpu", batch_size=1)
    for task, value in single["primary"].items():
        assert batched["primary"][task] == pytest.approx(value, rel=1e-4, abs=1e-4), task


# ------------------------------------------------------------------------ the model
def test_rule_s_is_refused_for_a_palette_network_checkpoint(tmp_path):
    r = ctn("finetune", "--model", "palette", "--data", "synthetic:seed=7,n=8,size=64", "--rule", "S",
            "--out", tmp_path / "x", "--device", "cpu")  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert "palette network" in r.stderr and "rule S" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "x").exists()


# --------------------------------------------------------------------- the run folder
def test_an_out_that_is_not_a_run_is_refused(world, tmp_path):
    store = copy_store(world["labels"], tmp_path / "labels.zarr")
    before = digests(store)
    args = ["finetune", "--model", world["model"], "--data", store, "--all-images", "--rule", "R2",
            "--config", world["recipe"], "--device", "cpu"]  # fmt: skip
    r = ctn(*args, "--out", store)
    assert r.returncode == 2, r.stderr
    assert str(store) in r.stderr and "not a run folder" in r.stderr and "Traceback" not in r.stderr
    r = ctn(*args, "--out", store / "run")
    assert r.returncode == 2 and "inside the label store" in r.stderr, r.stderr
    assert digests(store) == before
    other = tmp_path / "notes"
    other.mkdir()
    (other / "todo.txt").write_text("keep me")
    from composite_tasking.cli import main

    assert main([*map(str, args), "--out", str(other)]) == 2
    assert sorted(p.name for p in other.iterdir()) == ["todo.txt"]
    # a new folder and an empty one are fine (the run folder of the napari widget is new)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([*map(str, args), "--out", str(empty)]) == 0
    assert (empty / LATEST).is_file()
