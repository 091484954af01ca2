"""The real-data recipe (issue #17, item 3): the paper's CTN on PASCAL-MT, trained end to
end on a tiny PASCAL-MT with a stand-in for torchvision's ImageNet weights placed where
torch's cache looks (no download: these machines have no internet)."""

import json
import os
import subprocess
import sys

import pytest
import torch
from test_datasets import pascal_root  # noqa: F401  (a fixture: a tiny PASCAL-MT in its own files)

from composite_tasking.model.encoder import imagenet_weights_path
from composite_tasking.training.recipe import load_recipe

MARK = 0.0123  # the stand-in's first convolution: every weight this value


def test_the_recipe_says_what_the_paper_says():
    r = load_recipe("ctn-pascal-mt")
    assert r.model == {"preset": "ctn-resnet34", "pretrained": True}
    assert r.optimizer == {"lr_decoder": 1.0e-3, "lr_encoder": 1.0e-5, "weight_decay": 1.0e-5}
    assert r.rule == "mosaic" and r.batch_size == 10 and r.epochs == 100
    assert r.schedule == {"kind": "step", "factor": 0.3, "milestones": [60, 80, 94]}
    assert r.augment["crop"] == 256 and r.train["kind"] == "pascal-mt" and r.val["split"] == "val"


@pytest.mark.slow
def test_ctn_train_on_pascal_mt_starts_from_the_imagenet_weights_in_torchs_cache(tmp_path, pascal_root,  # noqa: F811
                                                                                monkeypatch):  # fmt: skip
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    weights = imagenet_weights_path("resnet34")
    import torchvision

    state = torchvision.models.resnet34(weights=None).state_dict()
    state["conv1.weight"].fill_(MARK)
    weights.parent.mkdir(parents=True)
    torch.save(state, weights)
    ctn = [sys.executable, "-m", "composite_tasking.cli", "train", "--config", "ctn-pascal-mt"]
    # without --data: the recipe's PASCAL_MT folder does not exist here, said in one line
    elsewhere = tmp_path / "elsewhere"  # (the fixture's root is tmp_path/PASCAL_MT: not here)
    elsewhere.mkdir()
    res = subprocess.run([*ctn, "--out", str(tmp_path / "none")], capture_output=True, text=True, env=env,
                         cwd=elsewhere, timeout=600)  # fmt: skip
    assert res.returncode == 2 and "PASCAL_MT" in res.stderr and "Traceback" not in res.stderr, res.stderr
    run = tmp_path / "run"
    res = subprocess.run([*ctn, "--data", f"pascal-mt:{pascal_root}", "--epochs", "1", "--device", "cpu",
                          "--out", str(run)], capture_output=True, text=True, env=env, timeout=900)  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    model = run / json.loads((run / "latest.json").read_text())["model"]
    config = json.loads((model / "config.json").read_text())
    recipe = config["provenance"]["recipe"]
    assert recipe["name"] == "ctn-pascal-mt" and recipe["train"]["root"] == str(pascal_root)
    assert {k: recipe["val"][k] for k in ("kind", "root", "split")} == {"kind": "pascal-mt", "root": str(pascal_root),
                                                                       "split": "val"}  # fmt: skip
    from composite_tasking.model import load_checkpoint

    net, _ = load_checkpoint(model)
    conv1 = net.encoder.stem[0].weight.detach()
    # one step at the encoder's 1e-5 rate: still the stand-in's weights, not a random init
    assert torch.allclose(conv1, torch.full_like(conv1, MARK), atol=1e-3)
