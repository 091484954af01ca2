"""Sample images shipped with the package: scenes of the synthetic world (seed 424242,
indices 0-5, 256 x 256), held out from every training recipe's seeds. ``ctn demo`` labels
them with the bundled model; napari offers them as sample data."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

__all__ = ["samples_dir", "sample_paths"]


def samples_dir() -> Path:
    return Path(str(resources.files(__name__)))


def sample_paths() -> list[Path]:
    return sorted(samples_dir().glob("*.png"))
