"""Checkpoints: weights as safetensors plus a JSON config; loading never unpickles.

A checkpoint is a folder::

    NAME/
      config.json        format, version, model config, tasks, classes, provenance
      model.safetensors  every parameter and buffer (BatchNorm statistics included)

:func:`load_checkpoint` accepts the folder, its ``config.json`` or its
``model.safetensors``. Pickle files (``.pt``, ``.pth``, ``.ckpt``, ``.pkl``, ``.bin``)
are refused: unpickling can run arbitrary code.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..__about__ import __version__
from ..files import file_sha256
from ..tasks import get_task
from .base import ModelConfig
from .registry import build_model

__all__ = [
    "CheckpointError",
    "CheckpointInfo",
    "save_checkpoint",
    "load_checkpoint",
    "read_checkpoint_info",
    "newest_in_run",
    "json_safe",
    "state_dict_mismatch",
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "FORMAT",
    "FORMAT_VERSION",
]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT = "composite-tasking-checkpoint"
FORMAT_VERSION = 1
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".bin", ".tar")


class CheckpointError(ValueError):
    """A checkpoint is missing, malformed, or in a refused format."""


@dataclass
class CheckpointInfo:
    path: Path  # the checkpoint folder
    config: ModelConfig
    meta: dict[str, Any]  # the whole config.json
    sha256: str  # of model.safetensors: identifies the weights
    provenance: dict[str, Any] = field(default_factory=dict)


def json_safe(value):
    """NaN and infinities (a metric with nothing to score) as null: strict JSON, which
    every JSON reader accepts (``json.dumps`` writes bare ``NaN`` tokens otherwise).
    Readers of such files take null where a NaN was."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def _some(names, shown: int = 3) -> str:
    names = sorted(names)
    more = len(names) - shown
    return ", ".join(names[:shown]) + (f" and {more} more" if more > 0 else "")


def state_dict_mismatch(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> str | None:
    """Why ``state`` cannot be loaded into ``model`` (missing and unexpected keys, shapes),
    a few names of each and how many more; None when it fits."""
    own = model.state_dict()
    missing = set(own) - set(state)
    unexpected = set(state) - set(own)
    shapes = {k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape)}
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s) ({_some(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s) ({_some(unexpected)})")
    if shapes:
        k = sorted(shapes)[0]
        parts.append(f"{len(shapes)} of another shape ({_some(shapes)}; e.g. {k}: "
                     f"{tuple(state[k].shape)} stored, {tuple(own[k].shape)} expected)")  # fmt: skip
    return "; ".join(parts) or None


def _task_table(tasks) -> dict[str, Any]:
    table = {}
    for name in tasks:
        t = get_task(name)
        entry: dict[str, Any] = {"id": t.id, "kind": t.kind}
        if t.kind == "classes":
            entry["classes"] = list(t.classes)
            entry["anchors_255"] = [list(a) for a in t.anchors_255]
        table[name] = entry
    return table


def _atomic_write_bytes(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; checkpoints are shared files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(model, path: str | Path, provenance: dict[str, Any] | None = None,
                    dtype: torch.dtype | None = None) -> Path:  # fmt: skip
    """Write ``model`` (CTN, MHN, STN or palette network) as a checkpoint folder.

    ``dtype=torch.float16`` stores the parameters in half precision (half the size, for
    shipping; buffers such as BatchNorm statistics stay float32); loading casts them back
    to the model's float32.

    Both files are written to temporary names and renamed into place, weights first, so
    an interrupted save never leaves a config pointing at half-written weights.
    """
    path = Path(path)
    if path.suffix in PICKLE_SUFFIXES:
        raise CheckpointError(f"{path}: checkpoints are folders of safetensors + JSON, not pickles")
    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    if dtype is not None:
        # Parameters only, and only where they fit: BatchNorm statistics of a decoder
        # can exceed float16's range (running_var ~1e10 seen) and stay float32.
        params = {k for k, _ in model.named_parameters()}
        for k, v in state.items():
            if k in params and v.is_floating_point():
                low = v.to(dtype)
                if bool(torch.isfinite(low).all()):
                    state[k] = low
    weights = path / WEIGHTS_NAME
    _atomic_write_bytes(weights, lambda tmp: save_file(state, tmp, metadata={"format": FORMAT}))
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "package_version": __version__,
        "torch_version": torch.__version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "model": model.config.to_dict(),
        "tasks": _task_table(model.config.tasks),
        "weights_sha256": file_sha256(weights),
        "weights_dtype": str(dtype or torch.float32).removeprefix("torch."),
        "provenance": provenance or {},
    }
    text = json.dumps(json_safe(meta), indent=2, allow_nan=False) + "\n"
    _atomic_write_bytes(path / CONFIG_NAME, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return path


def _folder(path: str | Path) -> Path:
    path = Path(path)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise CheckpointError(
            f"{path}: refusing to load a pickle file ({path.suffix}); unpickling can execute "
            "arbitrary code. Convert it once, in a trusted environment, to a checkpoint "
            "folder (config.json + model.safetensors) with save_checkpoint()."
        )
    if path.is_file() and path.name in (CONFIG_NAME, WEIGHTS_NAME):
        path = path.parent
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.is_dir() and not (path / CONFIG_NAME).exists() and (path / "latest.json").is_file():
        newest = newest_in_run(path)  # a training run folder: its newest model, as the CLI takes it
        if newest is not None:  # (None only if latest.json went away meanwhile)
            path = newest
    if not path.is_dir():
        raise CheckpointError(f"{path} is not a checkpoint: expected a folder with {CONFIG_NAME} and {WEIGHTS_NAME}")
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        if not (path / name).is_file():
            raise CheckpointError(f"checkpoint {path} has no {name}")
    return path


def read_checkpoint_info(path: str | Path) -> CheckpointInfo:
    """Read and validate a checkpoint's config without loading the weights."""
    folder = _folder(path)
    cfg_path = folder / CONFIG_NAME
    try:
        meta = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{cfg_path}: not a readable JSON file ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{cfg_path}: not a {FORMAT} config (format = {meta.get('format')!r})"
                              if isinstance(meta, dict) else f"{cfg_path}: not a JSON object")  # fmt: skip
    version = meta.get("format_version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise CheckpointError(f"{cfg_path}: format_version must be an integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{cfg_path}: format version {version} is newer than this package "
            f"reads ({FORMAT_VERSION}); update napari-composite-tasking"
        )
    for key, kind in (("model", dict), ("tasks", dict), ("provenance", dict), ("weights_sha256", str)):
        if key in meta and not isinstance(meta[key], kind):
            what = "a mapping" if kind is dict else "a string"
            raise CheckpointError(f"{cfg_path}: {key!r} must be {what}, got {type(meta[key]).__name__} "
                                  f"{str(meta[key])[:80]}")  # fmt: skip
    try:
        config = ModelConfig.from_dict(meta["model"])
        expected = _task_table(config.tasks)
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{cfg_path}: invalid model config: {e}") from None
    # The class tables are data of the package; a checkpoint trained with other anchors
    # would decode to wrong classes, so a mismatch is an error, not a warning.
    stored = meta.get("tasks", {})
    for name, entry in expected.items():
        if name in stored and stored[name] != entry:
            raise CheckpointError(
                f"{cfg_path}: task {name!r} was trained with a different class table or anchors than this package uses"
            )
    return CheckpointInfo(folder, config, meta, meta.get("weights_sha256", ""),
                          meta.get("provenance", {}))  # fmt: skip


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu", verify: bool = True):
    """Load a checkpoint -> (model in eval mode, CheckpointInfo).

    ``verify`` checks the weights' sha256 against the config, so a truncated or swapped
    weights file is caught before it produces wrong labels.
    """
    info = read_checkpoint_info(path)
    weights = info.path / WEIGHTS_NAME
    digest = file_sha256(weights)
    if verify and info.sha256 and digest != info.sha256:
        raise CheckpointError(
            f"{weights}: sha256 {digest[:12]}... does not match the config's "
            f"{info.sha256[:12]}...; the weights file was changed or is incomplete"
        )
    info.sha256 = digest
    try:
        state = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{weights}: not a readable safetensors file ({e})") from None
    model = build_model(info.config, pretrained=False)
    problem = state_dict_mismatch(model, state)
    if problem:
        raise CheckpointError(f"{weights} does not fit its config ({info.path / CONFIG_NAME}): {problem}")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:  # pragma: no cover - the check above finds what this would
        raise CheckpointError(f"{weights} does not fit its config: {str(e)[:300]}") from None
    # how it was trained travels with the model: the working resolution of ``--scale
    # auto`` is its training size (composite_tasking.scale.trained_size)
    # nn.Module.__setattr__ is typed for tensors and modules; it takes any value
    model.provenance = info.provenance  # type: ignore[assignment]
    return model.to(device).eval(), info


# ------------------------------------------------------------------ training runs
def newest_in_run(run: str | Path) -> Path | None:
    """The newest model of a training run folder (its ``latest.json``), or None when
    ``run`` is no run folder; a broken pointer, or a fine-tune that was rolled back, is
    a :class:`CheckpointError` that says what to use instead."""
    run = Path(run)
    latest = run / "latest.json"
    if not latest.is_file():
        return None
    try:
        pointer = json.loads(latest.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{latest}: not a readable JSON file ({e}); the run's newest "
                              "checkpoint is its highest epoch-NNNN/model folder") from None  # fmt: skip
    if not isinstance(pointer, dict) or not isinstance(pointer.get("model"), str):
        raise CheckpointError(f'{latest}: names no model (expected {{"model": "epoch-NNNN/model"}})')
    _refuse_rolled_back(run, run / pointer["model"])
    return run / pointer["model"]


def _refuse_rolled_back(run: Path, model: Path) -> None:
    """A fine-tune run whose new model was rolled back (``decision.json``: not accepted,
    :mod:`composite_tasking.training.finetune`) is not a model to use by its run folder."""
    import json

    try:
        decision = json.loads((run / "decision.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if isinstance(decision, dict) and decision.get("accepted") is False:
        raise CheckpointError(f"{run} holds a fine-tune that was rolled back ({decision.get('decision')}); "
                              f"use the previous model ({decision.get('previous')}), or {model} to use "
                              "the rolled-back one anyway")  # fmt: skip
