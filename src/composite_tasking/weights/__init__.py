"""The bundled models: checkpoint folders shipped inside the package.

``ctn/`` holds the default CTN (config.json + model.safetensors), trained on the
synthetic world; ``palette/`` the palette network that predicts R2 Task Palettes from
the image (``--palette-from net``, the plugin's "fill from palette network");
``default_model_path(name)`` finds them.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

__all__ = ["DEFAULT_MODEL", "default_model_path"]

DEFAULT_MODEL = "ctn"


def default_model_path(name: str = DEFAULT_MODEL) -> Path:
    """The folder of a bundled checkpoint; a clear error when it is not shipped."""
    from composite_tasking.model.checkpoint import CheckpointError

    path = Path(str(resources.files(__name__) / name))
    if not (path / "config.json").is_file():
        raise CheckpointError(
            f"no bundled model {name!r} in {path.parent}: this installation ships none yet. "
            "Give a checkpoint folder or a training run folder instead."
        )
    return path
