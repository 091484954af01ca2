"""The palette network: predicts a rule's palette; trained like the CTN; used by ctn label."""

import numpy as np
import pytest
import torch

from composite_tasking.inference import Predictor
from composite_tasking.label import label_images
from composite_tasking.model import PaletteNet, build_model, load_checkpoint, save_checkpoint
from composite_tasking.store import LabelStore
from composite_tasking.synthetic import generate
from composite_tasking.training.recipe import Recipe
from composite_tasking.training.trainer import Trainer


def test_palette_net_outputs_one_logit_per_task_and_no_task():
    net = build_model("palette-resnet18").eval()
    assert isinstance(net, PaletteNet)
    x = torch.rand(2, 3, 45, 70)
    assert net(x).shape == (2, 6, 45, 70)
    p = net.predict(x)
    assert p.shape == (2, 45, 70) and p.min() >= 0 and p.max() <= 5


def test_training_the_palette_net_lowers_its_loss_and_reports_palette_miou(tmp_path):
    torch.set_num_threads(1)
    r = Recipe.from_dict({
        "name": "pn", "model": {"preset": "palette-resnet18"},
        "train": {"kind": "synthetic", "seed": 0, "n": 4, "size": 32},
        "val": {"kind": "synthetic", "seed": 0, "n": 4, "size": 32}, "rule": "R2",
        "epochs": 4, "batch_size": 4, "workers": 0, "precision": "fp32", "augment": None,
        "optimizer": {"lr_decoder": 3e-3, "lr_encoder": 3e-3}, "bn_recalibration_batches": 1,
    })  # fmt: skip
    history = Trainer(r, tmp_path / "run").fit()
    first, last = history[0]["train_loss"]["palette"], history[-1]["train_loss"]["palette"]
    assert last < 0.8 * first
    assert 0 <= history[-1]["val"]["primary"]["palette"] <= 100
    model, info = load_checkpoint(tmp_path / "run" / "epoch-0004" / "model")
    assert info.config.kind == "palette"


def test_ctn_label_palette_from_net_uses_the_networks_palette(tmp_path):
    torch.manual_seed(0)
    save_checkpoint(build_model("ctn-resnet18").eval(), tmp_path / "ctn")
    pnet = build_model("palette-resnet18").eval()
    save_checkpoint(pnet, tmp_path / "pn")
    import imageio.v3 as iio

    img = generate(3, 0, 48)["image"]
    iio.imwrite(tmp_path / "a.png", img)
    summary = label_images([tmp_path / "a.png"], tmp_path / "s.zarr", model=str(tmp_path / "ctn"),
                           palette_from="net", palette_model=str(tmp_path / "pn"), device="cpu")  # fmt: skip
    assert summary.ok and summary.done == ["a.png"]
    stored = LabelStore(tmp_path / "s.zarr").read_sample("a.png")
    expected = Predictor(tmp_path / "ctn", device="cpu", palette_model=pnet).palette_from_net(img)
    assert np.array_equal(stored.palette, expected)
    assert LabelStore(tmp_path / "s.zarr").attrs["labelling"]["palette_from"] == "net"


def test_a_ctn_is_not_a_palette_network(tmp_path):
    save_checkpoint(build_model("ctn-resnet18").eval(), tmp_path / "ctn")
    p = Predictor(tmp_path / "ctn", device="cpu", palette_model=str(tmp_path / "ctn"))
    with pytest.raises(ValueError, match="not a palette network"):
        p.palette_net


def test_ctn_evaluate_scores_a_palette_network_by_palette_miou(tmp_path, capsys):
    import json

    from composite_tasking.cli import main

    save_checkpoint(build_model("palette-resnet18").eval(), tmp_path / "pal")
    code = main(["evaluate", "--model", str(tmp_path / "pal"), "--data", "synthetic:seed=3,n=4,size=32",
                 "--rule", "R2", "--device", "cpu", "--json"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    result = json.loads(out)
    assert result["rule"] == "R2" and result["images"] == 4
    assert 0 <= result["metrics"]["palette"]["mIoU"] <= 100
    assert main(["evaluate", "--model", str(tmp_path / "pal"), "--data", "synthetic:seed=3,n=4,size=32",
                 "--rule", "S", "--device", "cpu"]) == 2  # fmt: skip
    assert "palette network" in capsys.readouterr().err
