"""What a model spec names: ``default`` (the bundled CTN), ``palette`` (the bundled
palette network), a checkpoint folder, or a training run folder (its newest model)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["resolve_model"]


def resolve_model(spec: str | Path) -> Path:
    """``default`` (the bundled model), a checkpoint folder, or a training run folder."""
    import json

    from .checkpoint import CheckpointError

    if str(spec) in ("default", "palette"):  # the bundled CTN / palette network
        from ..weights import DEFAULT_MODEL, default_model_path

        return default_model_path(DEFAULT_MODEL if str(spec) == "default" else "palette")
    p = Path(spec)
    latest = p / "latest.json"
    if latest.is_file():  # a training run: its newest model
        try:
            pointer = json.loads(latest.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise CheckpointError(f"{latest}: not a readable JSON file ({e}); the run's newest "
                                  "checkpoint is its highest epoch-NNNN/model folder") from None  # fmt: skip
        if not isinstance(pointer, dict) or not isinstance(pointer.get("model"), str):
            raise CheckpointError(f"{latest}: names no model (expected {{\"model\": \"epoch-NNNN/model\"}})")
        _refuse_rolled_back(p, p / pointer["model"])
        return p / pointer["model"]
    if not p.exists():
        raise CheckpointError(f"model {str(spec)!r} not found: give 'default', a checkpoint folder "
                              "or a training run folder")  # fmt: skip
    return p


def _refuse_rolled_back(run: Path, model: Path) -> None:
    """A fine-tune run whose new model was rolled back (``decision.json``: not accepted,
    :mod:`composite_tasking.training.finetune`) is not a model to use by its run folder."""
    import json

    from .checkpoint import CheckpointError

    try:
        decision = json.loads((run / "decision.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if isinstance(decision, dict) and decision.get("accepted") is False:
        raise CheckpointError(f"{run} holds a fine-tune that was rolled back ({decision.get('decision')}); "
                              f"use the previous model ({decision.get('previous')}), or {model} to use "
                              "the rolled-back one anyway")  # fmt: skip
