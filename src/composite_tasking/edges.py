"""Thin edges: non-maximum suppression of a soft edge map across the edge.

Used by the edge metric (``training.metrics.EdgeMeter`` thins predictions as seism
and BSDS do) and by labelling at a working resolution
(:mod:`composite_tasking.scale`): an edge one pixel wide at working resolution is
several pixels wide once its probabilities are interpolated to full resolution, and
:func:`thin_edges` brings its label back to one pixel.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["edge_nms", "thin_edges"]


def edge_nms(prob: np.ndarray, sigma: float = 1.0, radius: float = 1.0) -> np.ndarray:
    """Non-maximum suppression of a soft edge map (H, W) across the edge direction.

    The edge normal is the eigenvector of the most negative eigenvalue of the Hessian of
    the Gaussian-smoothed map (the direction of steepest fall-off across a ridge); a
    pixel is kept if it is not smaller than the map interpolated ``radius`` pixels away
    on both sides along that normal. Returns a bool mask of the kept pixels.
    """
    e = np.asarray(prob, dtype=np.float64)
    hxx = ndimage.gaussian_filter(e, sigma, order=(0, 2))
    hyy = ndimage.gaussian_filter(e, sigma, order=(2, 0))
    hxy = ndimage.gaussian_filter(e, sigma, order=(1, 1))
    theta = 0.5 * np.arctan2(2.0 * hxy, hxx - hyy) + 0.5 * np.pi
    dx, dy = radius * np.cos(theta), radius * np.sin(theta)
    yy, xx = np.indices(e.shape, dtype=np.float64)
    e1 = ndimage.map_coordinates(e, [yy + dy, xx + dx], order=1, mode="nearest")
    e2 = ndimage.map_coordinates(e, [yy - dy, xx - dx], order=1, mode="nearest")
    tol = 1e-7
    return (e >= e1 - tol) & (e >= e2 - tol)


def thin_edges(prob: np.ndarray, upscale: float) -> np.ndarray:
    """Where an edge map interpolated ``upscale`` times from working resolution keeps
    its ridge: :func:`edge_nms` of the map smoothed over half a working pixel (a ridge
    saturated at 1 over several pixels is a plateau, which the raw map cannot thin).
    NaN (no edges asked) counts as 0. Returns a bool mask."""
    p = np.nan_to_num(np.asarray(prob, dtype=np.float64), nan=0.0)
    sigma = max(0.5, upscale / 2.0)
    return edge_nms(ndimage.gaussian_filter(p, sigma), sigma=max(1.0, sigma))
