"""Surface normals: the angular error, pooled over the valid pixels of a split, as
ASTMT's ``eval_normals``.

The protocol (where the conventions come from: :mod:`composite_tasking.training.metrics`):

``NormalsMeter``
    Angular error in degrees between the prediction and the ground truth, pooled over all
    valid pixels of the split (ground truth of zero norm = invalid), as ASTMT's
    ``eval_normals``: ``mean`` (the paper's mErr), ``median``, ``rmse`` and the % of
    pixels with error ``< 11.25``, ``< 22.5``, ``< 30``. Both vectors are normalised (the
    angle is computed as ``atan2(|p x g|, p . g)``, exact for small angles); a prediction
    of zero norm has error 90 degrees (as ASTMT's normalise-then-arccos gives). The
    median comes from a histogram with 0.001 degree bins (memory does not grow with the
    split); everything else is exact.
"""

from __future__ import annotations

import math

import numpy as np

from .inputs import check_same, pct, valid_batch, vector_batch

__all__ = ["NormalsMeter"]


class NormalsMeter:
    """Angular error of surface normals, pooled over all valid pixels of the split.

    ``update(prediction, label, valid_mask=None)``: (N, 3, H, W) vectors (any length;
    both are normalised); ground truth of zero norm (or non-finite) is invalid.

    ``compute()`` -> ``{"mean", "median", "rmse"}`` in degrees and
    ``{"11.25", "22.5", "30"}``: % of pixels with error below each.
    """

    #: histogram bin width for the median, in degrees
    BIN = 1e-3
    LIMITS = (11.25, 22.5, 30.0)

    def __init__(self):
        self.reset()

    def reset(self):
        self.count = 0
        self._sum = 0.0
        self._sumsq = 0.0
        self._below = np.zeros(len(self.LIMITS), dtype=np.int64)
        self._hist = np.zeros(int(round(180.0 / self.BIN)) + 1, dtype=np.int64)

    @staticmethod
    def angles(prediction, label) -> np.ndarray:
        """Angle in degrees between (M, 3) predictions and (M, 3) labels; 90 for zero p."""
        p = np.asarray(prediction, dtype=np.float64)
        g = np.asarray(label, dtype=np.float64)
        return NormalsMeter._angles(p[:, 0], p[:, 1], p[:, 2], g[:, 0], g[:, 1], g[:, 2])

    @staticmethod
    def _angles(px, py, pz, gx, gy, gz) -> np.ndarray:
        px, py, pz = (np.where(np.isfinite(c), c, 0.0) for c in (px, py, pz))
        dot = px * gx + py * gy + pz * gz
        cross = np.sqrt(np.square(py * gz - pz * gy) + np.square(pz * gx - px * gz)
                        + np.square(px * gy - py * gx))  # fmt: skip
        ang = np.degrees(np.arctan2(cross, dot))
        ang[(px == 0) & (py == 0) & (pz == 0)] = 90.0
        return ang

    def update(self, prediction, label, valid_mask=None):
        gt = vector_batch(label, "label")
        pred = vector_batch(prediction, "prediction")
        check_same(pred.shape, gt.shape, "normals")
        n, _, h, w = gt.shape
        valid = valid_batch(valid_mask, (n, h, w))
        region = valid & np.isfinite(gt).all(axis=1) & (np.abs(gt).sum(axis=1) > 0)
        if not region.any():
            return
        g = [gt[:, k][region].astype(np.float64) for k in range(3)]
        p = [pred[:, k][region].astype(np.float64) for k in range(3)]
        ang = self._angles(*p, *g)
        self.count += ang.size
        self._sum += float(ang.sum())
        self._sumsq += float(np.square(ang).sum())
        for j, lim in enumerate(self.LIMITS):
            self._below[j] += int((ang < lim).sum())
        idx = np.clip((ang / self.BIN).astype(np.int64), 0, self._hist.size - 1)
        self._hist += np.bincount(idx, minlength=self._hist.size)

    def _median(self) -> float:
        # rank of the median (average of the two middle ones for an even count),
        # linearly interpolated inside its histogram bin
        cum = np.cumsum(self._hist)

        def value(rank: float) -> float:  # rank in 0..count-1
            b = int(np.searchsorted(cum, rank + 1, side="left"))
            before = cum[b - 1] if b > 0 else 0
            frac = (rank - before + 0.5) / self._hist[b]
            return (b + frac) * self.BIN

        lo, hi = (self.count - 1) // 2, self.count // 2
        return float(0.5 * (value(lo) + value(hi)))

    def compute(self) -> dict[str, float]:
        if self.count == 0:
            return {k: math.nan for k in ("mean", "median", "rmse", "11.25", "22.5", "30")}
        out = {
            "mean": self._sum / self.count,
            "median": self._median(),
            "rmse": math.sqrt(self._sumsq / self.count),
        }
        for j, key in enumerate(("11.25", "22.5", "30")):
            out[key] = pct(self._below[j] / self.count)
        return out
