"""Colour pictures of labels and palettes (numpy only): previews, figures, docs.

Class colours are the paper's class anchors (Tables 5 and 6 say they double as the class
colours); palettes use the task colours of :mod:`.tasks`; normals use the usual
``(n + 1) / 2`` RGB encoding; ignored pixels are grey.
"""

from __future__ import annotations

import numpy as np

from .tasks import IGNORE, TASKS, get_task

__all__ = ["colorize", "colorize_palette", "grid", "IGNORE_RGB"]

IGNORE_RGB = np.array([96, 96, 96], np.uint8)


def _lut(colors: np.ndarray) -> np.ndarray:
    lut = np.tile(IGNORE_RGB, (256, 1))
    lut[: len(colors)] = colors
    return lut


def colorize(task: str, label: np.ndarray) -> np.ndarray:
    """An RGB uint8 picture (H, W, 3) of one task's label as stored in a sample."""
    t = get_task(task)
    label = np.asarray(label)
    if t.kind == "classes":
        return _lut(t.class_colors())[label]
    if t.kind == "vector":
        valid = np.linalg.norm(label, axis=-1) > 0
        rgb = ((np.clip(label, -1, 1) + 1) * 127.5 + 0.5).astype(np.uint8)
        rgb[~valid] = IGNORE_RGB
        return rgb
    # probability or binary 0/1/255 maps
    if label.dtype == np.uint8:
        out = np.repeat((np.minimum(label, 1) * 255).astype(np.uint8)[..., None], 3, axis=-1)
        out[label == IGNORE] = IGNORE_RGB
        return out
    p = np.nan_to_num(np.asarray(label, np.float32), nan=-1)
    out = np.repeat((np.clip(p, 0, 1) * 255 + 0.5).astype(np.uint8)[..., None], 3, axis=-1)
    out[p < 0] = IGNORE_RGB
    return out


def colorize_palette(palette: np.ndarray) -> np.ndarray:
    """Task colours per pixel; no task is black."""
    lut = np.zeros((256, 3), np.uint8)
    for t in TASKS:
        lut[t.palette_value] = t.color
    return lut[np.asarray(palette)]


def grid(rows: list[list[np.ndarray]], pad: int = 2, fill: int = 255) -> np.ndarray:
    """Tile equally sized RGB pictures into one picture, rows x columns."""
    h, w = rows[0][0].shape[:2]
    ncol = max(len(r) for r in rows)
    out = np.full((len(rows) * (h + pad) - pad, ncol * (w + pad) - pad, 3), fill, np.uint8)
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            if img.shape[:2] != (h, w):
                raise ValueError(f"picture ({i}, {j}) is {img.shape[:2]}, expected {(h, w)}")
            out[i * (h + pad) : i * (h + pad) + h, j * (w + pad) : j * (w + pad) + w] = img
    return out
