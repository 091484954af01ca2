"""What a model spec names: ``default`` (the bundled CTN), ``palette`` (the bundled
palette network), a checkpoint folder, or a training run folder (its newest model)."""

from __future__ import annotations

from pathlib import Path

from .checkpoint import CheckpointError, newest_in_run

__all__ = ["resolve_model"]


def resolve_model(spec: str | Path) -> Path:
    """``default`` (the bundled model), a checkpoint folder, or a training run folder."""
    if str(spec) in ("default", "palette"):  # the bundled CTN / palette network
        from ..weights import DEFAULT_MODEL, default_model_path

        return default_model_path(DEFAULT_MODEL if str(spec) == "default" else "palette")
    p = Path(spec)
    newest = newest_in_run(p)
    if newest is not None:
        return newest
    if not p.exists():
        raise CheckpointError(f"model {str(spec)!r} not found: give 'default', a checkpoint folder "
                              "or a training run folder")  # fmt: skip
    return p
