"""Regenerate the figures in docs/images that are made from code (not screenshots).

    .venv/bin/python scripts/maintainer/make_figures.py
"""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio

from composite_tasking.synthetic import generate
from composite_tasking.visualize import colorize, grid

DOCS = Path(__file__).resolve().parents[2] / "docs" / "images"
TASKS = ("semseg", "parts", "edges", "saliency", "normals")


def synthetic_grid(path: Path, seed: int = 2021, n: int = 6, size: int = 160) -> Path:
    """Rows of scenes: the image, then its five exact labels (grey = ignore)."""
    rows = []
    for i in range(n):
        s = generate(seed, i, size)
        rows.append([s["image"]] + [colorize(t, s[t]) for t in TASKS])
    iio.imwrite(path, grid(rows, pad=3), optimize=True)
    return path


if __name__ == "__main__":
    DOCS.mkdir(parents=True, exist_ok=True)
    print(synthetic_grid(DOCS / "synthetic-grid.png"))
