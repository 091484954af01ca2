"""What a prediction shows, as arrays (numpy only: the Predict widget's worker makes
them, off the GUI thread): one plane per task and role, and the confidence."""

from __future__ import annotations

import numpy as np

from ..tasks import TASKS

__all__ = ["confidence_map", "normals_rgba", "task_planes"]


def normals_rgba(normals: np.ndarray) -> np.ndarray:
    """(H, W, 3) unit normals (zeros = not predicted) -> (H, W, 4) float RGBA in [0, 1]:
    ``(n + 1) / 2`` and alpha 1 where predicted, all 0 elsewhere. (napari draws NaN in
    a one-channel image transparent, but NaN in an RGB image black: hence the alpha.)"""
    n = np.asarray(normals, np.float32)
    valid = np.any(n != 0, axis=-1)
    rgba = np.zeros((*n.shape[:2], 4), np.float32)
    rgba[..., :3] = (np.clip(n, -1.0, 1.0) + 1.0) * 0.5
    rgba[..., 3] = valid
    rgba[~valid, :3] = 0.0
    return rgba


def confidence_map(prediction, shape: tuple[int, int]) -> np.ndarray:
    """One confidence map for all tasks (each pixel asks for one task); NaN elsewhere."""
    conf = np.full(shape, np.nan, np.float32)
    for t in prediction.tasks.values():
        region = ~np.isnan(t.confidence)
        conf[region] = t.confidence[region]
    return conf


def task_planes(prediction, thresholded: bool) -> list[tuple[str | None, str, np.ndarray]]:
    """(task, role, data) of every layer a prediction shows, in TASKS order, then the
    confidence: only tasks the palette asked for."""
    out: list[tuple[str | None, str, np.ndarray]] = []
    for task in TASKS:
        t = prediction.tasks.get(task.name)
        if t is None:
            continue
        if task.kind == "classes":
            out.append((task.name, "label", t.label))
        elif task.kind == "probability":
            out.append((task.name, "prob", t.prob))
            if thresholded:
                out.append((task.name, "label", t.label))
        else:
            out.append((task.name, "normals", normals_rgba(t.label)))
    shape = prediction.palette.shape
    out.append((None, "confidence", confidence_map(prediction, shape)))
    return out
