"""Effort: how much a person must change a task's labels to turn them into the truth.

A labelling assistant is worth what it saves a person. For one task of one image, inside
the task's *region* (the pixels the Task Palette asks for that task), the effort is:

- ``share``: the fraction of the region's pixels with a valid truth whose label must
  change;
- ``regions``: the number of 8-connected components of the pixels that must change, a
  proxy for brush strokes (one stroke repaints one blob, however many pixels it has).

From scratch (no pseudo-labels) a person paints every pixel: ``scratch_share`` is 1, and
``scratch_regions`` counts the 8-connected components of every truth value inside the
region (each a stroke or a fill; for normals, the components of the region).

When a label must change, per task kind (:attr:`composite_tasking.tasks.Task.kind`):

- classes (semseg, parts; uint8 ids, truth 255 = ignore): ``label != truth``;
- probability (edges, saliency): the 0/1 map thresholded at
  :data:`composite_tasking.prediction.THRESHOLD`, as the store holds it, with ``label !=
  truth``; for edges up to :data:`EDGE_TOLERANCE_PX` of shift is forgiven (see there);
- vector (normals; (H, W, 3) unit vectors, all-zero truth = invalid): the angle to the
  truth is above :data:`NORMALS_EFFORT_DEG`.

:func:`right_mask` is the per-pixel "label is right" test that both the effort and the
confidence scores (``composite_tasking.training.calibration``) use; it is exact (no edge
tolerance): it scores a confidence per pixel, the effort scores what a person repaints.

:func:`expected_effort` estimates the same figures without the truth, from a confidence
map (the probability that a label is right): what ``ctn review`` ranks a store by.

numpy and scipy.ndimage only: no torch, Qt or napari at import, so a store's effort can be
measured anywhere the store can be read.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import ndimage

from .tasks import IGNORE, get_task

__all__ = [
    "EDGE_TOLERANCE_PX",
    "NORMALS_EFFORT_DEG",
    "LOW_CONFIDENCE",
    "truth_valid",
    "right_mask",
    "must_change",
    "count_regions",
    "task_effort",
    "EffortMeter",
    "expected_effort",
    "low_confidence_regions",
]

#: Edges: a predicted edge pixel within this many pixels (Chebyshev distance, i.e. in the
#: 3 x 3 neighbourhood for 1) of a true edge pixel is right, and a true edge pixel with a
#: predicted edge that near is covered. A person does not repaint an edge drawn one pixel
#: off: at the width of an edge (one or two pixels) it is the same stroke, and the edge
#: benchmarks forgive more (``maxDist`` = 0.75 % of the image diagonal, 2.7 px at 256 x 256,
#: training/metrics.py). Exact pixels would count every such edge twice: once where it
#: is, once where it should be.
EDGE_TOLERANCE_PX = 1

#: Normals: a label more than this many degrees off the truth must change. Normal
#: estimation reports the share of pixels within 11.25, 22.5 and 30 degrees; 22.5 is the
#: middle one: a normal within it gives the right shading and the right plane, one beyond
#: it visibly faces another way, which a person would repaint.
NORMALS_EFFORT_DEG = 22.5

#: A pixel whose confidence (probability that its label is right) is below this is more
#: likely wrong than right: :func:`expected_effort` counts its connected regions as the
#: strokes a person will likely need.
LOW_CONFIDENCE = 0.5

_COS_NORMALS = math.cos(math.radians(NORMALS_EFFORT_DEG))


def _kind(task) -> str:
    t = get_task(task)
    return t.kind


def _eight(ndim: int) -> np.ndarray:
    """8-connectivity in the last two axes, none across the leading ones (images of a
    batch never join)."""
    s = np.zeros((3,) * ndim, dtype=bool)
    s[(1,) * (ndim - 2)] = True
    return s


def _dilate(mask: np.ndarray, px: int) -> np.ndarray:
    """``mask`` grown by ``px`` pixels in the last two axes (a (2 px + 1) square)."""
    if px <= 0 or not mask.any():
        return mask
    return ndimage.binary_dilation(mask, structure=_eight(mask.ndim), iterations=px)


def truth_valid(task, truth) -> np.ndarray:
    """Where ``truth`` says something: not :data:`IGNORE` (maps), not all zero (normals)."""
    truth = np.asarray(truth)
    if _kind(task) == "vector":
        return np.any(truth != 0, axis=-1)
    return truth != IGNORE


def right_mask(task, label, truth) -> np.ndarray:
    """Per pixel, is ``label`` right? False where the truth is invalid.

    Maps (``(..., H, W)``): classes ``label == truth``; binary maps (edges, saliency:
    0/1) ``label == truth`` exactly, *without* the edge tolerance of :func:`must_change`
    (a per-pixel score for confidences). Normals (``(..., H, W, 3)``): the angle to the
    truth is at most :data:`NORMALS_EFFORT_DEG`; a zero label is wrong.
    """
    label, truth = np.asarray(label), np.asarray(truth)
    if label.shape != truth.shape:
        raise ValueError(f"task {get_task(task).name!r}: label shape {label.shape} does not "
                         f"match truth shape {truth.shape}")  # fmt: skip
    valid = truth_valid(task, truth)
    if _kind(task) == "vector":
        p, g = label.astype(np.float32, copy=False), truth.astype(np.float32, copy=False)
        dot = (p * g).sum(axis=-1)
        norms = np.sqrt(np.square(p).sum(axis=-1) * np.square(g).sum(axis=-1))
        # angle <= threshold  <=>  cos(angle) >= cos(threshold), with |p||g| > 0
        return valid & (norms > 0) & (dot >= np.float32(_COS_NORMALS) * norms)
    return valid & (label == truth)


def must_change(task, label, truth, region=None) -> np.ndarray:
    """The pixels of ``region`` (default: everywhere) with a valid truth whose label a
    person must change: not :func:`right_mask`, except that an edge within
    :data:`EDGE_TOLERANCE_PX` of where it should be needs no change."""
    name = get_task(task).name
    truth = np.asarray(truth)
    valid = truth_valid(name, truth)
    if region is not None:
        region = np.asarray(region, dtype=bool)
        if region.shape != valid.shape:
            raise ValueError(f"task {name!r}: region shape {region.shape} does not match "
                             f"the label's {valid.shape}")  # fmt: skip
        valid &= region
    wrong = valid & ~right_mask(name, label, truth)
    if name == "edges" and EDGE_TOLERANCE_PX > 0:
        label = np.asarray(label)
        true_edge = truth == 1
        pred_edge = label == 1
        near_true = _dilate(true_edge, EDGE_TOLERANCE_PX)
        near_pred = _dilate(pred_edge, EDGE_TOLERANCE_PX)
        forgiven = (pred_edge & ~true_edge & near_true) | (true_edge & ~pred_edge & near_pred)
        wrong &= ~forgiven
    return wrong


def count_regions(mask) -> int:
    """8-connected components of ``mask`` in its last two axes, summed over any leading
    (image) axes."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return 0
    return int(ndimage.label(mask, structure=_eight(mask.ndim))[1])


def _scratch_regions(task, truth: np.ndarray, inside: np.ndarray) -> int:
    if _kind(task) == "vector":
        return count_regions(inside)
    return sum(count_regions(inside & (truth == v)) for v in np.unique(truth[inside]))


def task_effort(task, label, truth, region=None) -> dict[str, Any]:
    """Effort of one task of one image (or of a batch: leading axes are images, summed).

    ``label`` and ``truth`` in the store's layout (classes uint8 ids, binary 0/1 maps,
    255 = ignore; normals (..., H, W, 3)); ``region`` (..., H, W) bool, the pixels the
    palette asks for the task (default everywhere). Returns ``pixels`` (region pixels
    with a valid truth), ``changed``, ``share`` (changed / pixels), ``regions`` (strokes
    to repaint), ``scratch_share`` and ``scratch_regions`` (from nothing); shares are NaN
    when ``pixels`` is 0.
    """
    name = get_task(task).name
    truth = np.asarray(truth)
    change = must_change(name, label, truth, region)
    inside = truth_valid(name, truth)
    if region is not None:
        inside &= np.asarray(region, dtype=bool)
    pixels, changed = int(inside.sum()), int(change.sum())
    return {
        "share": changed / pixels if pixels else math.nan,
        "pixels": pixels,
        "changed": changed,
        "regions": count_regions(change),
        "scratch_share": 1.0 if pixels else math.nan,
        "scratch_regions": _scratch_regions(name, truth, inside) if pixels else 0,
    }


class EffortMeter:
    """Effort per task accumulated over images.

    ``update(task, label, truth, region)`` once per image, or ``update_batch`` with a
    leading image axis; ``compute()`` -> ``{task: {"share", "scratch_share" (both in %,
    pixel-weighted over images), "regions", "scratch_regions" (mean per image),
    "images", "pixels", "changed"}, "mean": {the same four figures averaged over the
    tasks, "tasks"}}``. An image counts for a task only when the task has pixels with a
    valid truth in its region there (a parts map of an image without a person, or a
    palette that asks nothing of the task, is not an image of that task).
    """

    _FIGURES = ("share", "scratch_share", "regions", "scratch_regions")

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self._sums: dict[str, dict[str, int]] = {}

    def update(self, task, label, truth, region=None) -> None:
        name = get_task(task).name
        e = task_effort(name, label, truth, region)
        if not e["pixels"]:
            return
        s = self._sums.setdefault(name, dict.fromkeys(("images", "pixels", "changed", "regions", "scratch_regions"), 0))
        s["images"] += 1
        for key in ("pixels", "changed", "regions", "scratch_regions"):
            s[key] += e[key]

    def update_batch(self, task, labels, truths, regions=None) -> None:
        """:meth:`update` for each image of a batch (image axis first)."""
        labels, truths = np.asarray(labels), np.asarray(truths)
        if len(labels) != len(truths):
            raise ValueError(f"{len(labels)} labels but {len(truths)} truths")
        for i in range(len(truths)):
            self.update(task, labels[i], truths[i], None if regions is None else np.asarray(regions)[i])

    def compute(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for name, s in self._sums.items():
            n, px = s["images"], s["pixels"]
            out[name] = {"share": 100.0 * s["changed"] / px, "scratch_share": 100.0,
                         "regions": s["regions"] / n, "scratch_regions": s["scratch_regions"] / n,
                         "images": n, "pixels": px, "changed": s["changed"]}  # fmt: skip
        if out:
            mean = {k: float(np.mean([out[t][k] for t in out])) for k in self._FIGURES}
            out["mean"] = {**mean, "tasks": len(out)}
        return out


def low_confidence_regions(confidence, threshold: float = LOW_CONFIDENCE) -> list[dict[str, Any]]:
    """The 8-connected regions where ``confidence`` (H, W) is below ``threshold``, most
    expected changes first: ``{"bbox": [y0, x0, y1, x1] (end exclusive), "pixels",
    "expected"}`` where ``expected`` is the sum of ``1 - confidence`` over the region
    (the number of its pixels expected to be wrong). NaN (outside the task) is never
    low."""
    conf = np.asarray(confidence, dtype=np.float32)
    if conf.ndim != 2:
        raise ValueError(f"expected a confidence map (H, W), got shape {conf.shape}")
    with np.errstate(invalid="ignore"):
        low = conf < threshold  # NaN compares False
    if not low.any():
        return []
    ids, n = ndimage.label(low, structure=_eight(2))
    index = np.arange(1, n + 1)
    pixels = ndimage.sum_labels(low, ids, index)
    expected = ndimage.sum_labels(np.where(low, 1.0 - conf, 0.0), ids, index)
    regions: list[dict[str, Any]] = [
        {"bbox": [sl[0].start, sl[1].start, sl[0].stop, sl[1].stop], "pixels": int(p), "expected": float(e)}
        for sl, p, e in zip(ndimage.find_objects(ids), pixels, expected)]  # fmt: skip
    regions.sort(key=lambda r: (-r["expected"], r["bbox"]))
    return regions


def expected_effort(confidence, region=None) -> dict[str, Any]:
    """The effort :func:`task_effort` would measure, expected from a confidence map
    (float in [0, 1], the probability that each label is right; NaN outside the task).

    ``region`` (default: where ``confidence`` is not NaN). ``share`` = mean of ``1 -
    confidence`` over the region (NaN when it is empty), ``changed`` its sum (pixels
    expected to change), ``regions`` = 8-connected components of confidence below
    :data:`LOW_CONFIDENCE`, ``pixels`` the region's size.
    """
    conf = np.asarray(confidence, dtype=np.float32)
    inside = ~np.isnan(conf)
    if region is not None:
        inside &= np.asarray(region, dtype=bool)
    pixels = int(inside.sum())
    wrong = float((1.0 - conf[inside]).sum(dtype=np.float64))
    return {"share": wrong / pixels if pixels else math.nan, "changed": wrong, "pixels": pixels,
            "regions": count_regions(inside & (np.where(inside, conf, 1.0) < LOW_CONFIDENCE))}  # fmt: skip
