"""Tiles of a large image: overlapping windows and the linear ramps that blend them."""

from __future__ import annotations

import numpy as np

__all__ = ["blend_ramp", "tile_starts"]


def blend_ramp(n: int, overlap: int, at_start: bool, at_end: bool) -> np.ndarray:
    w = np.ones(n, np.float32)
    if overlap > 0:
        r = (np.arange(overlap, dtype=np.float32) + 0.5) / overlap
        if not at_start:
            w[:overlap] = np.minimum(w[:overlap], r)
        if not at_end:
            w[-overlap:] = np.minimum(w[-overlap:], r[::-1])
    return w


def tile_starts(n: int, tile: int, overlap: int) -> list[int]:
    """Start offsets covering [0, n) with windows of ``tile`` overlapping by >= ``overlap``."""
    if n <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, n - tile, step)) + [n - tile]
    return sorted(set(starts))
