"""Checkpoints: safetensors + JSON, bit-identical round trips, no pickles."""

import json
import pickle

import pytest
import torch

from composite_tasking.model import (
    CheckpointError,
    build_model,
    load_checkpoint,
    read_checkpoint_info,
    save_checkpoint,
)


@pytest.mark.parametrize("preset", ["ctn-resnet18", "mhn-resnet18"])
def test_saved_and_loaded_checkpoint_gives_bit_identical_outputs(tmp_path, preset, ctn18):
    model = ctn18 if preset.startswith("ctn") else build_model(preset).eval()
    folder = save_checkpoint(model, tmp_path / "ckpt", provenance={"recipe": "test", "epochs": 0})
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    loaded, info = load_checkpoint(folder)
    assert not loaded.training
    x = torch.rand(2, 3, 45, 70)
    p = torch.randint(0, 6, (2, 45, 70))
    with torch.inference_mode():
        assert torch.equal(model(x, p), loaded(x, p))
    assert info.config == model.config
    assert info.provenance == {"recipe": "test", "epochs": 0}
    assert len(info.sha256) == 64
    # the config file or the weights file name the checkpoint too
    for alias in (folder / "config.json", folder / "model.safetensors"):
        assert read_checkpoint_info(alias).path == folder


def test_config_records_architecture_tasks_classes_and_version(tmp_path, ctn18):
    meta = json.loads((save_checkpoint(ctn18, tmp_path / "c") / "config.json").read_text())
    assert meta["model"]["kind"] == "ctn" and meta["model"]["encoder"] == "resnet18"
    assert meta["model"]["tasks"] == ["semseg", "parts", "edges", "saliency", "normals"]
    assert meta["tasks"]["semseg"]["classes"][15] == "person"
    assert meta["tasks"]["parts"]["anchors_255"][1] == [0, 0, 255]
    assert meta["package_version"] and meta["created"] and meta["format_version"] == 1


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".ckpt"])
def test_pickle_checkpoints_are_refused_without_being_opened(tmp_path, suffix):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / f"model{suffix}"
    path.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(CheckpointError, match="refusing to load a pickle"):
        load_checkpoint(path)
    assert not marker.exists()


def test_tampered_or_incomplete_checkpoints_are_reported(tmp_path, ctn18):
    folder = save_checkpoint(ctn18, tmp_path / "c")
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256"):
        load_checkpoint(folder)

    weights.unlink()
    with pytest.raises(CheckpointError, match="has no model.safetensors"):
        load_checkpoint(folder)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing")


def test_checkpoint_with_other_anchors_or_bad_config_is_refused(tmp_path, ctn18):
    folder = save_checkpoint(ctn18, tmp_path / "c")
    cfg = folder / "config.json"
    meta = json.loads(cfg.read_text())
    meta["tasks"]["parts"]["anchors_255"][1] = [1, 2, 3]
    cfg.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="different class table"):
        load_checkpoint(folder)
    meta["tasks"] = {}
    meta["model"]["encoder"] = "vgg"
    cfg.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="unknown encoder 'vgg'"):
        load_checkpoint(folder)
    cfg.write_text("{not json")
    with pytest.raises(CheckpointError, match="not a readable JSON"):
        load_checkpoint(folder)


def test_resaving_over_a_checkpoint_replaces_it_whole(tmp_path, ctn18):
    folder = save_checkpoint(ctn18, tmp_path / "c")
    other = build_model("ctn-resnet18").eval()
    save_checkpoint(other, folder)
    loaded, _ = load_checkpoint(folder)
    x, p = torch.rand(1, 3, 32, 32), torch.ones(1, 32, 32, dtype=torch.long)
    with torch.inference_mode():
        assert torch.equal(loaded(x, p), other(x, p))
    assert not [f for f in folder.iterdir() if f.name.startswith(".")]  # no temp files left


def test_half_precision_checkpoint_is_half_the_size_and_loads_as_float32(tmp_path, ctn18):
    full = save_checkpoint(ctn18, tmp_path / "f32")
    half = save_checkpoint(ctn18, tmp_path / "f16", dtype=torch.float16)
    size = lambda p: (p / "model.safetensors").stat().st_size  # noqa: E731
    assert size(half) < 0.55 * size(full)
    model, info = load_checkpoint(half)
    assert info.meta["weights_dtype"] == "float16"
    assert all(p.dtype == torch.float32 for p in model.parameters())
    x, p = torch.rand(1, 3, 64, 64), torch.randint(0, 6, (1, 64, 64))
    with torch.inference_mode():
        ref = ctn18(x, p)
        assert (model(x, p) - ref).abs().max() <= 1e-2 * ref.abs().max() + 1e-4


def test_half_precision_keeps_statistics_that_do_not_fit_in_float16(tmp_path, ctn18):
    import copy

    model = copy.deepcopy(ctn18)
    bn = model.decoder.decs[0].norm
    bn.running_var.fill_(2.5e10)  # seen in a real decoder; inf in float16
    loaded, _ = load_checkpoint(save_checkpoint(model, tmp_path / "h", dtype=torch.float16))
    assert torch.equal(loaded.decoder.decs[0].norm.running_var, bn.running_var)
