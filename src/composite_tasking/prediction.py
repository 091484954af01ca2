"""Predictions as numpy: the per-task labels of a composite output, decoded without torch.

:func:`decode_labels` turns the network's composite output (3, H, W) and its Task
Palette into each task's label, probability and confidence, only where the palette asks
for the task. It is numpy only, so that ``ctn label``'s writer processes, which decode
and write the store, need not import torch (~400 MB and seconds of start-up each); the
Predictor decodes with it too, so every path gives the same labels. It computes what
:func:`composite_tasking.tasks.decode_task` (torch, used by training and evaluation on
the device) computes, pixel for pixel up to float rounding (``tests/test_tasks.py``
compares the two).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .tasks import IGNORE, TASKS, confidence_from_score

__all__ = ["TaskOutput", "Prediction", "decode_labels", "empty_task_output", "THRESHOLD"]

#: probability at and above which an edge / salient pixel is labelled 1
THRESHOLD = 0.5


@dataclass
class TaskOutput:
    """One task's pseudo-label for one image, defined where the palette asked for it.

    ``label``: class map uint8 (semseg, parts) or 0/1 map (edges, saliency, thresholded at
    0.5), 255 elsewhere; for normals (H, W, 3) float32 unit vectors, zeros elsewhere.
    ``prob``: probability map (edges, saliency) float32, NaN elsewhere; else None.
    ``confidence``: float32 in [0, 1], NaN elsewhere.
    """

    label: np.ndarray
    prob: np.ndarray | None
    confidence: np.ndarray


@dataclass
class Prediction:
    palette: np.ndarray  # (H, W) uint8
    output: np.ndarray  # (3, H, W) float32 composite output
    tasks: dict[str, TaskOutput]
    #: the (palette, output) pair at the working resolution it was predicted at (None:
    #: at the image's own resolution); lets a re-predict after a stroke redo only its box
    working: tuple[np.ndarray, np.ndarray] | None = None

    def to_sample(self, image: np.ndarray | None = None) -> dict:
        """The canonical sample (labels, palette) plus float maps, for the label store."""
        sample: dict = {"palette": self.palette}
        if image is not None:
            sample["image"] = image
        conf = {}
        for name, t in self.tasks.items():
            sample[name] = t.label
            if t.prob is not None:
                sample[f"{name}_prob"] = t.prob
            conf[name] = t.confidence
        sample["confidence"] = conf
        return sample


def _sigmoid(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):  # exp(88+) is inf, and 1 / inf the right 0
        return np.float32(1.0) / (np.float32(1.0) + np.exp(-x))


def decode_labels(output: np.ndarray, palette: np.ndarray, tasks, thin_edges: float = 0.0) -> dict[str, TaskOutput]:
    """Per-task labels and confidences of the composite ``output`` (3, H, W) float32
    where ``palette`` (H, W) asks for each of ``tasks`` (names); numpy in, numpy out,
    computed only at the pixels each task is asked for.

    As :func:`composite_tasking.tasks.decode_task`: classes are the nearest anchor to the
    sigmoid of the output (eq. 5); probabilities the mean of the three sigmoids, labelled
    1 from :data:`THRESHOLD`; normals the output divided by its length. The confidence is
    the probability that the label is right, a logistic map
    (:func:`~composite_tasking.tasks.confidence_from_score`) of the score: the distance
    ``(d2^2 - d1^2) / (2 |a1 - a2|)`` from the boundary between the two nearest anchors,
    ``|log(p / (1 - p))|`` (per 0/1 label) or ``ln length``.

    ``thin_edges``: the output was interpolated this many times from a working
    resolution (:mod:`composite_tasking.scale`); above 1, an edge label is 1 only on the
    ridge of the edge probabilities (:func:`composite_tasking.edges.thin_edges`), so
    edges stay one pixel wide. 0 (default): no thinning, the network's own resolution.
    """
    out = np.asarray(output, dtype=np.float32)
    pal = np.asarray(palette)
    if out.ndim != 3 or out.shape[0] != 3 or out.shape[1:] != pal.shape:
        raise ValueError(f"expected output (3, H, W) and palette (H, W), got {out.shape} and {pal.shape}")
    shape = pal.shape
    result = {}
    for task in TASKS:
        if task.name not in tasks:
            continue
        valid = pal == task.palette_value
        if not valid.any():
            continue
        o = out[:, valid]  # (3, K): only the pixels asked for this task
        conf = np.full(shape, np.nan, np.float32)
        if task.kind == "classes":
            s = np.ascontiguousarray(_sigmoid(o).T)  # (K, 3)
            anchors = task.anchors_numpy()  # (C, 3)
            # rank the anchors by squared distance minus |s|^2 (one small matmul: 3x faster
            # than every difference), then measure the two nearest exactly
            score = np.square(anchors).sum(axis=1)[None, :] - np.float32(2.0) * (s @ anchors.T)  # (K, C)
            k = np.arange(len(s))
            nearest = score.argmin(axis=1)
            score[k, nearest] = np.inf
            second = score.argmin(axis=1)
            d1 = np.sqrt(np.square(s - anchors[nearest]).sum(axis=1))
            d2 = np.sqrt(np.square(s - anchors[second]).sum(axis=1))
            swap = d2 < d1  # the ranking's rounding near a class boundary: trust the exact distances
            nearest, second = np.where(swap, second, nearest), np.where(swap, nearest, second)
            d1, d2 = np.minimum(d1, d2), np.maximum(d1, d2)
            # distance from the boundary between the two nearest anchors
            score = (np.square(d2) - np.square(d1)) / (np.float32(2.0) * task.anchor_gaps()[nearest, second])
            conf[valid] = confidence_from_score(task, score)
            label = np.full(shape, IGNORE, np.uint8)
            label[valid] = nearest.astype(np.uint8)
            result[task.name] = TaskOutput(label, None, conf)
        elif task.kind == "probability":
            p = _sigmoid(o).mean(axis=0, dtype=np.float32)
            q = _sigmoid(-o).mean(axis=0, dtype=np.float32)  # 1 - p, exact where p rounds to 1
            tiny = np.finfo(np.float32).tiny
            evidence = np.abs(np.log(np.maximum(p, tiny)) - np.log(np.maximum(q, tiny)))
            prob = np.full(shape, np.nan, np.float32)
            prob[valid] = p
            binary = p >= THRESHOLD
            if task.name == "edges" and thin_edges > 1 and binary.any():
                from .edges import thin_edges as _thin

                ys, xs = np.nonzero(valid)
                pad = int(math.ceil(2 * thin_edges)) + 2  # the smoothing's reach
                y0, y1 = max(0, ys.min() - pad), min(shape[0], ys.max() + 1 + pad)
                x0, x1 = max(0, xs.min() - pad), min(shape[1], xs.max() + 1 + pad)
                keep = np.zeros(shape, bool)
                keep[y0:y1, x0:x1] = _thin(prob[y0:y1, x0:x1], thin_edges)
                binary &= keep[valid]
            conf[valid] = confidence_from_score(task, evidence, binary)
            label = np.full(shape, IGNORE, np.uint8)
            label[valid] = binary.astype(np.uint8)
            result[task.name] = TaskOutput(label, prob, conf)
        else:  # vector
            length = np.sqrt(np.square(o).sum(axis=0))
            normals = np.zeros((*shape, 3), np.float32)
            normals[valid] = (o / np.maximum(length, np.float32(1e-12))).T
            conf[valid] = confidence_from_score(task, np.log(np.maximum(length, np.float32(1e-30))))
            result[task.name] = TaskOutput(normals, None, conf)
    return result


def empty_task_output(task, shape: tuple[int, int]) -> TaskOutput:
    """A task's output where the palette asks for nothing (see :class:`TaskOutput`)."""
    nan = np.full(shape, np.nan, np.float32)
    if task.kind == "vector":
        return TaskOutput(np.zeros((*shape, 3), np.float32), None, nan)
    prob = nan.copy() if task.kind == "probability" else None
    return TaskOutput(np.full(shape, IGNORE, np.uint8), prob, nan)
