"""Does a confidence predict errors? AUROC and a reliability table, per task.

A confidence map is useful to a person only if its *ranking* separates right labels from
wrong ones (look where it is low and you find the errors): that is the AUROC of the
confidence as a score for "the label is right" (1 perfect, 0.5 no better than chance). Its
*values* should mean what they say as well: of the pixels at confidence 0.8, about 80 %
right; the reliability table (10 equal bins of [0, 1]) and the expected calibration
error (ECE) show that.

"Right" per pixel is :func:`composite_tasking.effort.right_mask`: the class, the 0/1
edge or saliency label exactly (no edge tolerance here: a confidence is scored per
pixel), a normal within ``NORMALS_EFFORT_DEG`` of the truth.

The reliability table and the ECE are exact over every pixel; the AUROC is exact over up
to ``cap`` pixels per task, a uniform sample (seeded, so the same run gives the same
number) beyond.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.stats import rankdata

from composite_tasking.tasks import get_task

from .metrics import as_numpy

__all__ = ["auroc", "ConfidenceMeter", "RELIABILITY_BINS"]

#: the reliability table's bins: equal parts of [0, 1]
RELIABILITY_BINS = 10


def auroc(scores, right) -> float:
    """Area under the ROC curve of ``scores`` as a predictor of ``right`` (bool): the
    probability that a random right pixel scores higher than a random wrong one, ties
    counted half (Mann-Whitney U from average ranks; exact). NaN when either class is
    empty; a NaN score is an error (pass only the pixels a confidence is defined at)."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    r = np.asarray(right, dtype=bool).ravel()
    if s.shape != r.shape:
        raise ValueError(f"auroc: {s.size} scores but {r.size} right/wrong flags")
    if np.isnan(s).any():
        raise ValueError(f"auroc: {int(np.isnan(s).sum())} of {s.size} scores are NaN; pass only "
                         "the pixels where the confidence is defined")  # fmt: skip
    n_right = int(r.sum())
    n_wrong = r.size - n_right
    if n_right == 0 or n_wrong == 0:
        return math.nan
    ranks = rankdata(s)  # average ranks: ties count half
    u = ranks[r].sum() - n_right * (n_right + 1) / 2.0
    return float(u / (n_right * n_wrong))


class _TaskSample:
    """Up to ``cap`` (confidence, right) pairs: bottom-k of seeded random keys, i.e. a
    uniform sample without replacement of every pair seen, whatever the batching."""

    def __init__(self, cap: int, rng: np.random.Generator):
        self.cap, self.rng = cap, rng
        self.conf = np.empty(0, np.float32)
        self.right = np.empty(0, bool)
        self.keys = np.empty(0, np.float64)
        self.bins = np.zeros((3, RELIABILITY_BINS), np.float64)  # count, sum conf, sum right
        self.pixels = 0

    def add(self, conf: np.ndarray, right: np.ndarray) -> None:
        self.pixels += conf.size
        b = np.minimum((conf * RELIABILITY_BINS).astype(np.int64), RELIABILITY_BINS - 1)
        self.bins[0] += np.bincount(b, minlength=RELIABILITY_BINS)
        self.bins[1] += np.bincount(b, weights=conf, minlength=RELIABILITY_BINS)
        self.bins[2] += np.bincount(b, weights=right, minlength=RELIABILITY_BINS)
        keys = self.rng.random(conf.size)
        self.conf = np.concatenate([self.conf, conf])
        self.right = np.concatenate([self.right, right])
        self.keys = np.concatenate([self.keys, keys])
        if self.keys.size > 2 * self.cap:  # prune now and then, not at every batch
            self._prune()

    def _prune(self) -> None:
        if self.keys.size > self.cap:
            keep = np.argpartition(self.keys, self.cap - 1)[: self.cap]
            self.conf, self.right, self.keys = self.conf[keep], self.right[keep], self.keys[keep]

    def compute(self) -> dict[str, Any]:
        self._prune()
        count, conf_sum, right_sum = self.bins
        table, ece = [], 0.0
        for k in range(RELIABILITY_BINS):
            n = int(count[k])
            c = conf_sum[k] / n if n else math.nan
            a = right_sum[k] / n if n else math.nan
            table.append({"low": k / RELIABILITY_BINS, "high": (k + 1) / RELIABILITY_BINS, "count": n,
                          "confidence": float(c), "accuracy": float(a)})  # fmt: skip
            if n:
                ece += n / self.pixels * abs(a - c)
        return {"auroc": auroc(self.conf, self.right), "ece": float(ece) if self.pixels else math.nan,
                "accuracy": float(right_sum.sum() / self.pixels) if self.pixels else math.nan,
                "pixels": self.pixels, "sampled": int(self.conf.size), "reliability": table}  # fmt: skip


class ConfidenceMeter:
    """AUROC, reliability table and ECE of each task's confidence, over a split.

    ``update(task, confidence, right, valid=None)`` once per batch (numpy arrays or torch
    tensors of one shape, e.g. (N, H, W)): ``confidence`` in [0, 1], ``right`` bool
    (:func:`composite_tasking.effort.right_mask`), ``valid`` the pixels to score (where
    the task was asked and the truth is defined). ``compute()`` -> ``{task: {"auroc",
    "ece", "accuracy", "pixels", "sampled", "reliability": [{"low", "high", "count",
    "confidence", "accuracy"}, ...]}}``; percentages are not used here: all in 0..1.
    ``cap``: pixels kept per task for the AUROC (a uniform sample, seeded by ``seed``).
    """

    def __init__(self, cap: int = 2_000_000, seed: int = 0):
        if cap < 1:
            raise ValueError(f"cap must be at least 1 pixel, got {cap}")
        self.cap, self.seed = int(cap), int(seed)
        self.reset()

    def reset(self) -> None:
        self._tasks: dict[str, _TaskSample] = {}

    def update(self, task, confidence, right, valid=None) -> None:
        name = get_task(task).name
        conf, ok = as_numpy(confidence), as_numpy(right)
        if conf.shape != ok.shape:
            raise ValueError(f"task {name!r}: confidence shape {conf.shape} does not match right {ok.shape}")
        sel = np.ones(conf.shape, bool) if valid is None else as_numpy(valid).astype(bool, copy=False)
        if sel.shape != conf.shape:
            raise ValueError(f"task {name!r}: valid shape {sel.shape} does not match confidence {conf.shape}")
        c = conf[sel].astype(np.float32, copy=False)
        if np.isnan(c).any():
            raise ValueError(f"task {name!r}: the confidence is NaN at {int(np.isnan(c).sum())} scored "
                             "pixels; give valid=False there")  # fmt: skip
        if name not in self._tasks:  # one generator per task: a task's sample does not depend on the others
            self._tasks[name] = _TaskSample(self.cap, np.random.default_rng([self.seed, get_task(name).id]))
        self._tasks[name].add(np.clip(c, 0.0, 1.0), ok[sel].astype(bool, copy=False))

    def compute(self) -> dict[str, dict[str, Any]]:
        return {name: t.compute() for name, t in self._tasks.items() if t.pixels}
