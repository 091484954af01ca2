"""What every meter of :mod:`composite_tasking.training.metrics` takes, and the counting
they share: inputs may be numpy arrays or (CPU or GPU) torch tensors, made numpy arrays
on the CPU (:func:`as_numpy`); label and prediction maps are batched as (N, H, W)
(:func:`map_batch`) or (N, 3, H, W) (:func:`vector_batch`), with a valid mask
(:func:`valid_batch`) and a selection of images (:func:`image_selection`)."""

from __future__ import annotations

import numpy as np

__all__ = [
    "as_numpy",
    "map_batch",
    "vector_batch",
    "valid_batch",
    "image_selection",
    "check_same",
    "count_at_least",
    "pct",
]


def as_numpy(x) -> np.ndarray:
    """numpy view of a numpy array or a torch tensor (any device)."""
    if hasattr(x, "detach"):
        x = x.detach()
        if x.is_floating_point() and x.element_size() < 4:  # float16 / bfloat16
            x = x.float()
        return x.cpu().numpy()
    return np.asarray(x)


def map_batch(x, name: str) -> np.ndarray:
    """(N, H, W) from (H, W), (N, H, W) or (N, 1, H, W)."""
    a = as_numpy(x)
    if a.ndim == 2:
        a = a[None]
    elif a.ndim == 4 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 3:
        raise ValueError(f"{name}: expected (N, H, W), got shape {a.shape}")
    return a


def vector_batch(x, name: str) -> np.ndarray:
    """(N, 3, H, W) from (3, H, W) or (N, 3, H, W)."""
    a = as_numpy(x)
    if a.ndim == 3:
        a = a[None]
    if a.ndim != 4 or a.shape[1] != 3:
        raise ValueError(f"{name}: expected (N, 3, H, W), got shape {a.shape}")
    return a


def valid_batch(valid_mask, shape: tuple[int, int, int]) -> np.ndarray:
    if valid_mask is None:
        return np.ones(shape, dtype=bool)
    v = map_batch(valid_mask, "valid_mask").astype(bool, copy=False)
    if v.shape != shape:
        v = np.broadcast_to(v, shape)
    return v


def image_selection(images, n: int) -> np.ndarray:
    if images is None:
        return np.ones(n, dtype=bool)
    sel = np.asarray(as_numpy(images), dtype=bool).reshape(-1)
    if sel.size == 1:
        sel = np.full(n, bool(sel[0]))
    if sel.size != n:
        raise ValueError(f"images: expected {n} flags, got {sel.size}")
    return sel


def check_same(a: tuple, b: tuple, what: str):
    if a != b:
        raise ValueError(f"{what}: prediction shape {a} does not match label shape {b}")


def count_at_least(values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """``[(values >= t).sum() for t in thresholds]`` for sorted thresholds, in one pass.

    NaN values are never counted.
    """
    v = values.ravel()
    v = v[~np.isnan(v)] if v.dtype.kind == "f" else v
    k = np.searchsorted(thresholds, v, side="right")  # number of thresholds <= v
    hist = np.bincount(k, minlength=len(thresholds) + 1)
    return hist[::-1].cumsum()[::-1][1:].astype(np.int64)


def pct(x: float) -> float:
    return float(100.0 * x)
