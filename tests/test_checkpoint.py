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


def _edit_config(folder, **changes):
    cfg = folder / "config.json"
    meta = json.loads(cfg.read_text())
    meta.update(changes)
    cfg.write_text(json.dumps(meta))
    return cfg


@pytest.mark.parametrize("changes, words", [
    ({"tasks": ["semseg"]}, "'tasks' must be a mapping"),
    ({"format_version": "one"}, "format_version must be an integer, got 'one'"),
    ({"provenance": "trained"}, "'provenance' must be a mapping"),
    ({"model": ["ctn"]}, "'model' must be a mapping"),
])  # fmt: skip
def test_a_config_of_the_wrong_types_is_a_checkpoint_error_naming_the_file(tmp_path, ctn18, changes, words):
    cfg = _edit_config(save_checkpoint(ctn18, tmp_path / "c"), **changes)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(cfg.parent)
    assert str(cfg) in str(e.value) and words in str(e.value)


def test_weights_of_another_architecture_are_named_briefly(tmp_path, ctn18):
    """ResNet-18 weights under a ResNet-34 config: a few key names and how many more,
    not torch's list of thousands of characters."""
    folder = save_checkpoint(ctn18, tmp_path / "c")
    meta = json.loads((folder / "config.json").read_text())
    meta["model"]["encoder"] = "resnet34"
    (folder / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(folder, verify=False)
    msg = str(e.value)
    assert str(folder / "model.safetensors") in msg and str(folder / "config.json") in msg
    assert "missing key(s)" in msg and "more" in msg and len(msg) < 700, msg


def test_a_run_folder_with_a_broken_latest_json_is_named(tmp_path):
    from composite_tasking.inference import resolve_model

    run = tmp_path / "run"
    run.mkdir()
    (run / "latest.json").write_text('{"state": "epoch-0001" "model": 3}')
    with pytest.raises(CheckpointError) as e:
        resolve_model(run)
    assert str(run / "latest.json") in str(e.value) and "not a readable JSON" in str(e.value)
    (run / "latest.json").write_text('{"state": "epoch-0001"}')
    with pytest.raises(CheckpointError, match="names no model"):
        resolve_model(run)


def test_config_json_is_strict_json_with_null_for_nan(tmp_path, ctn18):
    folder = save_checkpoint(ctn18, tmp_path / "c", provenance={"val": {"parts": float("nan"), "edges": 1.5}})

    def no_nan(token):
        raise AssertionError(f"not strict JSON: {token}")

    meta = json.loads((folder / "config.json").read_text(), parse_constant=no_nan)
    assert meta["provenance"]["val"] == {"parts": None, "edges": 1.5}
    assert read_checkpoint_info(folder).provenance["val"]["parts"] is None


def test_a_training_run_folder_loads_as_its_newest_model(tmp_path, ctn18, monkeypatch):
    """load_checkpoint takes what the CLI takes (issue #18: it refused a run folder), and
    the Predictor records the model by an absolute path (a path relative to where ctn ran
    means nothing later)."""
    from composite_tasking.inference import Predictor

    run = tmp_path / "run"
    save_checkpoint(ctn18, run / "epoch-0002" / "model")
    (run / "latest.json").write_text(json.dumps({"model": "epoch-0002/model"}))
    model, info = load_checkpoint(run)
    assert info.path == run / "epoch-0002" / "model"
    monkeypatch.chdir(tmp_path)
    predictor = Predictor("run", device="cpu")
    assert predictor.model_id == str(run / "epoch-0002" / "model") and predictor.model_id.startswith("/")
