"""Segmentation: mIoU over a split (semseg, 21 classes; parts, 7 classes), and which
images contain a person (parts are scored only on those).

The protocol (where the conventions come from: :mod:`composite_tasking.training.metrics`):

``SegmentationMeter`` (semseg, 21 classes; parts, 7 classes)
    TP/FP/FN per class summed over the whole split (a confusion matrix), IoU = TP /
    (TP + FP + FN), mIoU = mean IoU. Label 255 and pixels outside ``valid_mask`` are
    ignored. A class that is absent from both the ground truth and the prediction over
    the split has IoU NaN and is left out of the mean. (ASTMT's ``eval_semseg`` instead
    gives such a class IoU 0 and keeps it in the mean; on the full PASCAL-MT val split
    every class occurs, so the two agree there; on small splits ours is the meaningful
    one.) A predicted id outside ``0..C-1`` inside the evaluated pixels counts as a miss
    (FN of the true class, FP of no class).

    Human parts are scored only on images that contain a person: pass ``images=`` (a
    boolean per image) to ``update``, e.g. ``images=has_person(parts_label)`` or
    ``has_person(semseg_label, kind="semseg")``. :class:`TaskMetrics` does this for the
    ``parts`` task by itself (an image counts if its parts label has any part 1..6).
    ASTMT's ``eval_human_parts`` skips images whose label is all 0 or all 255, which is
    the same on PASCAL-MT (images without a person are all 255 there).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from composite_tasking.tasks import IGNORE, SEMSEG_CLASSES

from .inputs import as_numpy, check_same, image_selection, map_batch, pct, valid_batch

__all__ = ["has_person", "SegmentationMeter"]

_PERSON = SEMSEG_CLASSES.index("person")


def has_person(labels, kind: str = "parts"):
    """Whether each image contains a person.

    ``labels`` (H, W) or (N, H, W): a human-parts label (``kind="parts"``: any part id
    1..254, i.e. not background 0 nor ignore 255) or a semantic label
    (``kind="semseg"``: any pixel of class ``person``). Returns a bool for one image,
    else a bool array (N,). Parts are scored only on images where this is True.
    """
    a = as_numpy(labels)
    single = a.ndim == 2
    a = map_batch(a, "labels").reshape(a.shape[0] if not single else 1, -1)
    if kind == "parts":
        hit = ((a > 0) & (a != IGNORE)).any(axis=1)
    elif kind == "semseg":
        hit = (a == _PERSON).any(axis=1)
    else:
        raise ValueError(f"kind must be 'parts' or 'semseg', got {kind!r}")
    return bool(hit[0]) if single else hit


class SegmentationMeter:
    """mIoU over a split from an accumulated confusion matrix (semseg, parts).

    ``update(prediction, label, valid_mask=None, images=None)``: int label maps
    (N, H, W); pixels with ``label == ignore`` or outside ``valid_mask`` are skipped;
    ``images`` (N,) bool keeps only the flagged images (for parts: the images that
    contain a person, see :func:`has_person`).

    ``compute()`` -> ``{"mIoU": %, "IoU": [% or NaN per class], "pixel_acc": %}``;
    classes absent from both ground truth and prediction over the split are NaN and not
    in the mean.
    """

    def __init__(self, num_classes: int, ignore: int = IGNORE):
        if num_classes < 1:
            raise ValueError("num_classes must be >= 1")
        self.num_classes = int(num_classes)
        self.ignore = ignore
        self.reset()

    def reset(self):
        # rows: ground truth; columns: prediction, the last column = "no valid class"
        self.confusion = np.zeros((self.num_classes, self.num_classes + 1), dtype=np.int64)
        self.num_images = 0

    def update(self, prediction, label, valid_mask=None, images=None):
        gt = map_batch(label, "label")
        pred = map_batch(prediction, "prediction")
        check_same(pred.shape, gt.shape, "segmentation")
        valid = valid_batch(valid_mask, gt.shape)
        sel = image_selection(images, gt.shape[0])
        if not sel.any():
            return
        gt, pred, valid = gt[sel], pred[sel], valid[sel]
        c = self.num_classes
        gt = gt.astype(np.int64, copy=False)
        keep = valid & (gt != self.ignore) & (gt >= 0) & (gt < c)
        g = gt[keep]
        p = pred[keep]
        if p.dtype.kind == "f":
            p = np.where(np.isfinite(p), p, -1)
        p = p.astype(np.int64)
        p = np.where((p >= 0) & (p < c), p, c)
        self.confusion += np.bincount(g * (c + 1) + p, minlength=c * (c + 1)).reshape(c, c + 1)
        self.num_images += int(keep.reshape(keep.shape[0], -1).any(axis=1).sum())

    def compute(self) -> dict[str, Any]:
        cm = self.confusion
        c = self.num_classes
        tp = np.diag(cm[:, :c]).astype(np.float64)
        fn = cm.sum(axis=1) - tp
        fp = cm[:, :c].sum(axis=0) - tp
        denom = tp + fp + fn
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = np.where(denom > 0, tp / np.maximum(denom, 1), np.nan)
        total = cm.sum()
        present = ~np.isnan(iou)
        miou = float(iou[present].mean()) if present.any() else math.nan
        return {
            "mIoU": pct(miou),
            "IoU": [pct(x) for x in iou],
            "pixel_acc": pct(tp.sum() / total) if total else math.nan,
        }
