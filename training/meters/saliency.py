"""Saliency: max mIoU and max F over thresholds, per image then averaged, as ASTMT's
and MTI-Net's ``eval_sal``.

The protocol (where the conventions come from: :mod:`composite_tasking.training.metrics`):

``SaliencyMeter``
    For each threshold ``t`` in ``linspace(0.2, 0.9, 15)`` the prediction is binarised
    (``prob >= t``; ASTMT writes ``>``, the same for continuous probabilities), and per
    image precision, recall and IoU are computed; each is averaged over the images.
    ``max_mIoU`` = max over t of the mean IoU (the paper's "Sal"). ``maxF`` = max over t
    of the F-measure of the *mean* precision and *mean* recall, as in ASTMT's and
    MTI-Net's ``eval_sal``, which use beta^2 = 1 (``2 P R / (P + R)``), not the
    beta^2 = 0.3 of the salient-object-detection literature; ``maxF`` therefore uses
    ``beta_squared=1`` by default, and ``maxF_beta03`` reports beta^2 = 0.3 as well.
    Per image, as in ASTMT's ``jaccard``/``precision_recall``: IoU = 1 when both the
    ground truth and the prediction are empty, precision = 0 when nothing is predicted,
    recall = 0 when the ground truth is empty. Label 255 and pixels outside
    ``valid_mask`` are ignored (MTI-Net's meter passes no void mask); an image with no
    evaluated pixel is skipped. Ground truth is salient where ``label > 0.5``.
"""

from __future__ import annotations

import math

import numpy as np

from composite_tasking.tasks import IGNORE

from .inputs import check_same, count_at_least, map_batch, pct, valid_batch

__all__ = ["SALIENCY_THRESHOLDS", "SaliencyMeter"]

SALIENCY_THRESHOLDS = np.linspace(0.2, 0.9, 15)


class SaliencyMeter:
    """Saliency as ASTMT/MTI-Net ``eval_sal``: per-image P/R/IoU per threshold, averaged.

    ``update(prediction, label, valid_mask=None)``: probabilities (N, H, W) in [0, 1],
    labels 0/1 with 255 ignored (salient where ``label > 0.5``).

    ``compute()`` -> ``{"maxF", "maxF_beta03", "max_mIoU", "threshold"}`` (% except the
    threshold, which is the one giving ``max_mIoU``). ``maxF`` uses ``beta_squared``
    (default 1, as ASTMT's and MTI-Net's ``eval_sal``), ``maxF_beta03`` beta^2 = 0.3.
    """

    def __init__(self, thresholds=SALIENCY_THRESHOLDS, beta_squared: float = 1.0,
                 ignore: int = IGNORE):  # fmt: skip
        self.thresholds = np.sort(np.asarray(thresholds, dtype=np.float64).ravel())
        if self.thresholds.size == 0:
            raise ValueError("need at least one threshold")
        self.beta_squared = float(beta_squared)
        self.ignore = ignore
        self.reset()

    def reset(self):
        t = len(self.thresholds)
        self._prec = np.zeros(t)
        self._rec = np.zeros(t)
        self._iou = np.zeros(t)
        self.num_images = 0

    def update(self, prediction, label, valid_mask=None):
        gt = map_batch(label, "label")
        pred = map_batch(prediction, "prediction").astype(np.float64, copy=False)
        check_same(pred.shape, gt.shape, "saliency")
        valid = valid_batch(valid_mask, gt.shape)
        region = valid & (gt != self.ignore)
        positive = region & (gt > 0.5)
        thr = self.thresholds
        for i in range(gt.shape[0]):
            r = region[i]
            if not r.any():
                continue
            p = pred[i]
            predicted = count_at_least(p[r], thr).astype(np.float64)  # tp + fp
            tp = count_at_least(p[positive[i]], thr).astype(np.float64)
            n_pos = float(positive[i].sum())  # tp + fn
            union = predicted + n_pos - tp
            self._prec += tp / (predicted + 1e-12)
            self._rec += tp / (n_pos + 1e-12)
            self._iou += np.where(union > 0, tp / np.maximum(union, 1), 1.0)
            self.num_images += 1

    def curves(self) -> dict[str, np.ndarray]:
        """Mean precision, recall and IoU per threshold (fractions)."""
        n = max(self.num_images, 1)
        return {"thresholds": self.thresholds, "precision": self._prec / n,
                "recall": self._rec / n, "iou": self._iou / n}  # fmt: skip

    @staticmethod
    def _f(p: np.ndarray, r: np.ndarray, b2: float) -> np.ndarray:
        return (1.0 + b2) * p * r / (b2 * p + r + 1e-12)

    def compute(self) -> dict[str, float]:
        if self.num_images == 0:
            return {"maxF": math.nan, "maxF_beta03": math.nan, "max_mIoU": math.nan,
                    "threshold": math.nan}  # fmt: skip
        c = self.curves()
        best = int(np.argmax(c["iou"]))
        return {
            "maxF": pct(self._f(c["precision"], c["recall"], self.beta_squared).max()),
            "maxF_beta03": pct(self._f(c["precision"], c["recall"], 0.3).max()),
            "max_mIoU": pct(c["iou"][best]),
            "threshold": float(self.thresholds[best]),
        }
