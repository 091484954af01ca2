"""Test helper (no fixture): the folder of synthetic scenes the label tests use."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio

from composite_tasking.synthetic import generate


def scene_folder(d: Path, n: int, size: int) -> Path:
    """``n`` scenes of seed 5 as PNGs in ``d``, those from the seventh on in ``d/sub``
    (so that ids include a sub-folder); returns ``d``."""
    (d / "sub").mkdir()
    for i in range(n):
        iio.imwrite(d / ("sub" if i >= 6 else "") / f"scene-{i}.png", generate(5, i, size)["image"])
    return d
