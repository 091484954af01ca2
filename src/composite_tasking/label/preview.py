"""The contact sheet a labelling run writes beside its store."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import numpy as np

from ..prediction import Prediction
from ..tasks import get_task

__all__ = ["contact_sheet"]


def _composite_picture(pred: Prediction) -> np.ndarray:
    from ..visualize import colorize

    h, w = pred.palette.shape
    pic = np.zeros((h, w, 3), np.uint8)
    for name, t in pred.tasks.items():
        region = pred.palette == get_task(name).palette_value
        pic[region] = colorize(name, t.label)[region]
    return pic


def contact_sheet(rows: list[tuple[np.ndarray, Prediction]], path: Path, thumb: int = 160) -> Path:
    """A PNG: per image, the image, its palette and the composite pseudo-labels."""
    import imageio.v3 as iio
    from PIL import Image

    from ..visualize import colorize_palette, grid

    def fit(a: np.ndarray) -> np.ndarray:
        return np.asarray(Image.fromarray(a).resize((thumb, thumb), Image.NEAREST))

    pics = [[fit(img), fit(colorize_palette(p.palette)), fit(_composite_picture(p))] for img, p in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    # a name of its own: shards finishing together write the same preview path
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp.png")
    iio.imwrite(tmp, grid(pics))
    os.replace(tmp, path)
    return path
