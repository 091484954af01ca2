"""Evaluation metrics of the five tasks, accumulated over a split, and Delta_m.

Every meter follows the same pattern: ``update(prediction, label, valid_mask)`` once per
batch, ``compute()`` once at the end; ``reset()`` starts again. Inputs may be numpy
arrays or (CPU or GPU) torch tensors; everything is computed in numpy on the CPU.
All percentages are in 0..100.

Conventions, and where they come from
-------------------------------------

The paper (section 5.3) evaluates "in concordance with recent multi-tasking work [34, 22]",
i.e. ASTMT (Maninis et al., CVPR 2019, ``fblib/evaluation`` in facebookresearch/astmt)
and the PASCAL-MT protocol shared by MTI-Net (``evaluation/`` in
SimonVandenhende/Multi-Task-Learning-PyTorch). We follow those scripts except where noted.

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

``NormalsMeter``
    Angular error in degrees between the prediction and the ground truth, pooled over all
    valid pixels of the split (ground truth of zero norm = invalid), as ASTMT's
    ``eval_normals``: ``mean`` (the paper's mErr), ``median``, ``rmse`` and the % of
    pixels with error ``< 11.25``, ``< 22.5``, ``< 30``. Both vectors are normalised (the
    angle is computed as ``atan2(|p x g|, p . g)``, exact for small angles); a prediction
    of zero norm has error 90 degrees (as ASTMT's normalise-then-arccos gives). The
    median comes from a histogram with 0.001 degree bins (memory does not grow with the
    split); everything else is exact.

``EdgeMeter`` (ODS F-measure, a Python approximation of seism / BSDS)
    The paper uses seism (Pont-Tuset & Marques), which, like the BSDS benchmark's
    ``evaluate_bdry``, for each threshold binarises the soft map (``pb >= t``), thins it
    (``bwmorph(.., 'thin', inf)``), and matches predicted and ground-truth boundary
    pixels *one-to-one* (``correspondPixels``, a min-cost bipartite assignment) within
    ``maxDist = 0.0075 x image diagonal``; matched/total counts of predictions and of
    ground-truth pixels are summed over the split, and ODS is the best F over the
    thresholds. Here, instead of the bipartite assignment:

    - a predicted edge pixel is a true positive if *some* ground-truth edge pixel lies
      within ``maxDist`` (Euclidean distance between pixel centres, by
      ``scipy.ndimage.distance_transform_edt``);
    - a ground-truth edge pixel is recalled if *some* predicted edge pixel lies within
      ``maxDist`` (a maximum filter over a disk of radius ``maxDist``, the same test).

    So several predictions may match one ground-truth pixel and vice versa, which makes
    precision and recall slightly higher than BSDS's for thick or doubled edges. Thinning
    is ``thin="nms"`` by default: non-maximum suppression of the soft map across the edge
    (orientation from the Hessian of the Gaussian-smoothed map, as Dollar's
    ``edgesNms``), done once per image so all thresholds cost one pass; a plateau (a
    thick binary edge) is not thinned by it. ``thin="skeleton"`` thins each binarised
    map like ``bwmorph 'thin'`` (scikit-image, optional; ~0.6 s per 256 x 256 image
    against ~13 ms with "nms"); ``thin=None``
    does no thinning (a blurred, thick prediction then gets optimistic precision). The
    thresholds default to BSDS's ``linspace(1/100, 99/100, 99)``; ODS is the maximum
    over them without BSDS's interpolation between neighbouring thresholds. Label 255
    and pixels outside ``valid_mask`` are ignored: they are neither predictions nor
    ground truth (so a ground-truth edge just outside the evaluated region cannot match).
    The tolerance uses the diagonal of the whole image, not of the evaluated region.

``delta_m`` (section 6.1)
    ``Delta_m = 100 / T * sum_i (-1)^{l_i} (M_m,i - M_b,i) / M_b,i`` with ``l_i = 1`` for
    normals (lower mean error is better), on one number per task (:data:`PRIMARY`):
    edges odsF, semseg mIoU, parts mIoU, normals mean error, saliency max mIoU. This
    reproduces the Delta_m columns of the paper's tables (e.g. Table 7 row 2: -0.92 %,
    Table 8: -2.89 %, Table 3: -6.68 % over 4 tasks); in Tables 7-15 the baseline is the
    chosen model, in Tables 1-3 the single-task network.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

import numpy as np
from scipy import ndimage

from composite_tasking.edges import edge_nms
from composite_tasking.tasks import IGNORE, SEMSEG_CLASSES, TASK_NAMES, get_task

__all__ = [
    "PRIMARY",
    "LOWER_IS_BETTER",
    "SegmentationMeter",
    "SaliencyMeter",
    "NormalsMeter",
    "EdgeMeter",
    "TaskMetrics",
    "has_person",
    "edge_nms",
    "delta_m",
    "primary",
]

#: the single number per task used by Delta_m and the paper's tables
PRIMARY: dict[str, str] = {
    "edges": "odsF",
    "semseg": "mIoU",
    "parts": "mIoU",
    "normals": "mean",
    "saliency": "max_mIoU",
}
#: tasks whose primary number is better when lower (l_i = 1 in section 6.1)
LOWER_IS_BETTER: frozenset[str] = frozenset({"normals"})

SALIENCY_THRESHOLDS = np.linspace(0.2, 0.9, 15)
#: BSDS ``evaluate_bdry`` with nthresh = 99: linspace(1/(n+1), 1 - 1/(n+1), n)
EDGE_THRESHOLDS = np.linspace(0.01, 0.99, 99)
_PERSON = SEMSEG_CLASSES.index("person")


# ----------------------------------------------------------------------------- helpers
def as_numpy(x) -> np.ndarray:
    """numpy view of a numpy array or a torch tensor (any device)."""
    if hasattr(x, "detach"):
        x = x.detach()
        if x.is_floating_point() and x.element_size() < 4:  # float16 / bfloat16
            x = x.float()
        return x.cpu().numpy()
    return np.asarray(x)


def _map_batch(x, name: str) -> np.ndarray:
    """(N, H, W) from (H, W), (N, H, W) or (N, 1, H, W)."""
    a = as_numpy(x)
    if a.ndim == 2:
        a = a[None]
    elif a.ndim == 4 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 3:
        raise ValueError(f"{name}: expected (N, H, W), got shape {a.shape}")
    return a


def _vector_batch(x, name: str) -> np.ndarray:
    """(N, 3, H, W) from (3, H, W) or (N, 3, H, W)."""
    a = as_numpy(x)
    if a.ndim == 3:
        a = a[None]
    if a.ndim != 4 or a.shape[1] != 3:
        raise ValueError(f"{name}: expected (N, 3, H, W), got shape {a.shape}")
    return a


def _valid_batch(valid_mask, shape: tuple[int, int, int]) -> np.ndarray:
    if valid_mask is None:
        return np.ones(shape, dtype=bool)
    v = _map_batch(valid_mask, "valid_mask").astype(bool, copy=False)
    if v.shape != shape:
        v = np.broadcast_to(v, shape)
    return v


def _image_selection(images, n: int) -> np.ndarray:
    if images is None:
        return np.ones(n, dtype=bool)
    sel = np.asarray(as_numpy(images), dtype=bool).reshape(-1)
    if sel.size == 1:
        sel = np.full(n, bool(sel[0]))
    if sel.size != n:
        raise ValueError(f"images: expected {n} flags, got {sel.size}")
    return sel


def _check_same(a: tuple, b: tuple, what: str):
    if a != b:
        raise ValueError(f"{what}: prediction shape {a} does not match label shape {b}")


def _count_at_least(values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """``[(values >= t).sum() for t in thresholds]`` for sorted thresholds, in one pass.

    NaN values are never counted.
    """
    v = values.ravel()
    v = v[~np.isnan(v)] if v.dtype.kind == "f" else v
    k = np.searchsorted(thresholds, v, side="right")  # number of thresholds <= v
    hist = np.bincount(k, minlength=len(thresholds) + 1)
    return hist[::-1].cumsum()[::-1][1:].astype(np.int64)


def _pct(x: float) -> float:
    return float(100.0 * x)


# --------------------------------------------------------------------- segmentation
def has_person(labels, kind: str = "parts"):
    """Whether each image contains a person.

    ``labels`` (H, W) or (N, H, W): a human-parts label (``kind="parts"``: any part id
    1..254, i.e. not background 0 nor ignore 255) or a semantic label
    (``kind="semseg"``: any pixel of class ``person``). Returns a bool for one image,
    else a bool array (N,). Parts are scored only on images where this is True.
    """
    a = as_numpy(labels)
    single = a.ndim == 2
    a = _map_batch(a, "labels").reshape(a.shape[0] if not single else 1, -1)
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
        gt = _map_batch(label, "label")
        pred = _map_batch(prediction, "prediction")
        _check_same(pred.shape, gt.shape, "segmentation")
        valid = _valid_batch(valid_mask, gt.shape)
        sel = _image_selection(images, gt.shape[0])
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
            "mIoU": _pct(miou),
            "IoU": [_pct(x) for x in iou],
            "pixel_acc": _pct(tp.sum() / total) if total else math.nan,
        }


# ------------------------------------------------------------------------- saliency
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
        gt = _map_batch(label, "label")
        pred = _map_batch(prediction, "prediction").astype(np.float64, copy=False)
        _check_same(pred.shape, gt.shape, "saliency")
        valid = _valid_batch(valid_mask, gt.shape)
        region = valid & (gt != self.ignore)
        positive = region & (gt > 0.5)
        thr = self.thresholds
        for i in range(gt.shape[0]):
            r = region[i]
            if not r.any():
                continue
            p = pred[i]
            predicted = _count_at_least(p[r], thr).astype(np.float64)  # tp + fp
            tp = _count_at_least(p[positive[i]], thr).astype(np.float64)
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
            "maxF": _pct(self._f(c["precision"], c["recall"], self.beta_squared).max()),
            "maxF_beta03": _pct(self._f(c["precision"], c["recall"], 0.3).max()),
            "max_mIoU": _pct(c["iou"][best]),
            "threshold": float(self.thresholds[best]),
        }


# -------------------------------------------------------------------------- normals
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
        gt = _vector_batch(label, "label")
        pred = _vector_batch(prediction, "prediction")
        _check_same(pred.shape, gt.shape, "normals")
        n, _, h, w = gt.shape
        valid = _valid_batch(valid_mask, (n, h, w))
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
            out[key] = _pct(self._below[j] / self.count)
        return out


# ---------------------------------------------------------------------------- edges
def _disk(radius: float) -> np.ndarray:
    k = int(math.floor(radius))
    yy, xx = np.mgrid[-k : k + 1, -k : k + 1]
    return (xx * xx + yy * yy) <= radius * radius


class EdgeMeter:
    """ODS F-measure of edge maps with a matching tolerance (see the module notes).

    ``update(prediction, label, valid_mask=None)``: edge probabilities (N, H, W), labels
    0/1 with 255 ignored (edge where ``label > 0.5``).

    ``compute()`` -> ``{"odsF", "precision", "recall"}`` in % at the ODS threshold, and
    ``"threshold"``.
    """

    def __init__(self, tolerance: float = 0.0075, thresholds=EDGE_THRESHOLDS,
                 thin: str | None = "nms", ignore: int = IGNORE):  # fmt: skip
        if thin not in (None, "none", "nms", "skeleton"):
            raise ValueError(f"thin must be None, 'nms' or 'skeleton', got {thin!r}")
        self.tolerance = float(tolerance)
        self.thresholds = np.sort(np.asarray(thresholds, dtype=np.float64).ravel())
        if self.thresholds.size == 0:
            raise ValueError("need at least one threshold")
        self.thin = None if thin == "none" else thin
        self.ignore = ignore
        if self.thin == "skeleton":
            from skimage.morphology import thin as _thin  # optional dependency

            self._skeleton = _thin
        self.reset()

    def reset(self):
        t = len(self.thresholds)
        self.cnt_p = np.zeros(t, dtype=np.int64)  # matched predictions
        self.sum_p = np.zeros(t, dtype=np.int64)  # predictions
        self.cnt_r = np.zeros(t, dtype=np.int64)  # matched ground-truth pixels
        self.sum_r = 0  # ground-truth edge pixels
        self.num_images = 0

    def max_dist(self, shape: tuple[int, int]) -> float:
        """Matching tolerance in pixels for an image of ``shape`` (H, W)."""
        return self.tolerance * math.hypot(shape[0], shape[1])

    def update(self, prediction, label, valid_mask=None):
        gt = _map_batch(label, "label")
        pred = _map_batch(prediction, "prediction").astype(np.float64, copy=False)
        _check_same(pred.shape, gt.shape, "edges")
        valid = _valid_batch(valid_mask, gt.shape)
        region = valid & (gt != self.ignore)
        edges = region & (gt > 0.5)
        max_dist = self.max_dist(gt.shape[1:])
        disk = _disk(max_dist)
        for i in range(gt.shape[0]):
            r = region[i]
            if not r.any():
                continue
            g = edges[i]
            p = np.where(r & np.isfinite(pred[i]), pred[i], 0.0)
            if g.any():
                near_gt = ndimage.distance_transform_edt(~g) <= max_dist
            else:
                near_gt = np.zeros_like(g)
            if self.thin == "skeleton":
                self._update_skeleton(p, r, g, near_gt, max_dist)
            else:
                if self.thin == "nms":
                    p = np.where(edge_nms(p), p, -np.inf)
                p = np.where(r, p, -np.inf)
                self.sum_p += _count_at_least(p[r], self.thresholds)
                self.cnt_p += _count_at_least(p[r & near_gt], self.thresholds)
                if g.any():
                    # best prediction within max_dist of each pixel
                    reach = ndimage.maximum_filter(p, footprint=disk, mode="constant",
                                                   cval=-np.inf)  # fmt: skip
                    self.cnt_r += _count_at_least(reach[g], self.thresholds)
            self.sum_r += int(g.sum())
            self.num_images += 1

    def _update_skeleton(self, p, r, g, near_gt, max_dist):
        for j, t in enumerate(self.thresholds):
            b = self._skeleton((p >= t) & r)
            self.sum_p[j] += int(b.sum())
            self.cnt_p[j] += int((b & near_gt).sum())
            if g.any() and b.any():
                d = ndimage.distance_transform_edt(~b)
                self.cnt_r[j] += int((d[g] <= max_dist).sum())

    def curves(self) -> dict[str, np.ndarray]:
        """Precision, recall and F per threshold (fractions)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            prec = np.where(self.sum_p > 0, self.cnt_p / np.maximum(self.sum_p, 1), 0.0)
            rec = (self.cnt_r / self.sum_r) if self.sum_r > 0 else np.zeros(len(self.thresholds))
            f = np.where(prec + rec > 0, 2 * prec * rec / np.maximum(prec + rec, 1e-300), 0.0)
        return {"thresholds": self.thresholds, "precision": prec, "recall": rec, "f": f}

    def compute(self) -> dict[str, float]:
        if self.num_images == 0 or self.sum_r == 0:
            # no ground-truth edge: recall (hence F) is undefined
            return {"odsF": math.nan, "precision": math.nan, "recall": math.nan,
                    "threshold": math.nan}  # fmt: skip
        c = self.curves()
        best = int(np.argmax(c["f"]))
        return {
            "odsF": _pct(c["f"][best]),
            "precision": _pct(c["precision"][best]),
            "recall": _pct(c["recall"][best]),
            "threshold": float(self.thresholds[best]),
        }


# -------------------------------------------------------------------------- Delta_m
def _canonical(d: Mapping) -> dict:
    return {get_task(k).name: v for k, v in d.items()}


def _primary_value(task: str, value, table: Mapping[str, str]) -> float:
    if isinstance(value, Mapping):
        return float(value[table[task]])
    return float(value)


def delta_m(model_metrics: Mapping, baseline_metrics: Mapping,
            lower_is_better: Iterable[str] = LOWER_IS_BETTER,
            primary_metrics: Mapping[str, str] = PRIMARY) -> float:  # fmt: skip
    """Average per-task relative difference of section 6.1, in %.

    ``Delta_m = 100/T sum_i (-1)^{l_i} (M_m,i - M_b,i) / M_b,i`` over the tasks of
    ``model_metrics`` (each must be in ``baseline_metrics``). Values are either one number
    per task or the ``{metric: value}`` dicts of :meth:`TaskMetrics.compute`, from which
    :data:`PRIMARY` picks the number. ``l_i = 1`` for tasks in ``lower_is_better``.
    Positive = better than the baseline.
    """
    model = _canonical(model_metrics)
    base = _canonical(baseline_metrics)
    lower = {get_task(t).name for t in lower_is_better}
    if not model:
        raise ValueError("no tasks to compare")
    terms = []
    for task in model:
        if task not in base:
            raise KeyError(f"task {task!r} has no baseline value")
        m = _primary_value(task, model[task], primary_metrics)
        b = _primary_value(task, base[task], primary_metrics)
        if b == 0:
            raise ZeroDivisionError(f"baseline value of {task!r} is 0")
        sign = -1.0 if task in lower else 1.0
        terms.append(sign * (m - b) / b)
    return 100.0 * float(np.mean(terms))


def primary(results: Mapping[str, Mapping[str, Any]],
            table: Mapping[str, str] = PRIMARY) -> dict[str, float]:  # fmt: skip
    """``{task: the task's primary number}`` from ``{task: {metric: value}}``."""
    return {task: float(m[table[get_task(task).name]]) for task, m in results.items()}


# ---------------------------------------------------------------------- TaskMetrics
def _default_meter(task: str):
    t = get_task(task)
    if t.kind == "classes":
        return SegmentationMeter(t.num_classes)
    if t.name == "edges":
        return EdgeMeter()
    if t.name == "saliency":
        return SaliencyMeter()
    return NormalsMeter()


class TaskMetrics:
    """One meter per task, fed with decoded predictions and canonical labels.

    ``TaskMetrics(tasks=TASK_NAMES, meters=None)``; ``meters`` maps task names to meters
    replacing the defaults (e.g. ``{"edges": EdgeMeter(thin=None)}``).

    ``update(task, prediction, label, valid_mask=None, images=None)``:

    - ``prediction``: the ``label`` of :func:`composite_tasking.tasks.decode_task`
      (classes: int map (N, H, W); probability: float map (N, H, W); vector:
      (N, 3, H, W)), or the ``TaskPrediction`` itself (its ``valid`` is then the default
      ``valid_mask``);
    - ``label``: semseg/parts int with 255 ignore; edges/saliency 0/1/255; normals
      (N, 3, H, W) float with all-zero = invalid;
    - ``valid_mask`` (N, H, W) bool: the pixels the palette gave the task;
    - ``images`` (N,) bool: images to score. For ``parts`` it defaults to (and is
      always combined with) :func:`has_person` of the parts label.

    ``compute()`` -> ``{task: {metric: value}}`` for the tasks that were updated.
    """

    def __init__(self, tasks: Iterable[str] | None = None, meters: Mapping[str, Any] | None = None):
        names = [get_task(t).name for t in (TASK_NAMES if tasks is None else tasks)]
        self.meters = {name: _default_meter(name) for name in names}
        for name, meter in (meters or {}).items():
            self.meters[get_task(name).name] = meter
        self._updated: set[str] = set()

    def reset(self):
        for m in self.meters.values():
            m.reset()
        self._updated.clear()

    def update(self, task, prediction, label, valid_mask=None, images=None):
        name = get_task(task).name
        if name not in self.meters:
            raise KeyError(f"task {name!r} is not tracked; tracked: {', '.join(self.meters)}")
        if hasattr(prediction, "label") and hasattr(prediction, "valid"):
            if valid_mask is None:
                valid_mask = prediction.valid
            prediction = prediction.label
        meter = self.meters[name]
        if name == "parts":
            person = np.atleast_1d(has_person(label, "parts"))
            sel = person if images is None else person & _image_selection(images, person.size)
            meter.update(prediction, label, valid_mask, images=sel)
        elif isinstance(meter, SegmentationMeter):
            meter.update(prediction, label, valid_mask, images=images)
        else:
            if images is not None:
                sel = _image_selection(images, as_numpy(label).shape[0])
                prediction, label = as_numpy(prediction)[sel], as_numpy(label)[sel]
                valid_mask = None if valid_mask is None else as_numpy(valid_mask)[sel]
            meter.update(prediction, label, valid_mask)
        self._updated.add(name)

    def update_decoded(self, decoded: Mapping[str, Any], labels: Mapping[str, Any]):
        """Update from :func:`composite_tasking.tasks.decode_output`'s dict and a dict of
        labels; tasks without a label are skipped."""
        for task, pred in decoded.items():
            if task in labels:
                self.update(task, pred, labels[task])

    def compute(self) -> dict[str, dict[str, Any]]:
        return {name: m.compute() for name, m in self.meters.items() if name in self._updated}

    @staticmethod
    def primary(results: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
        """``{task: primary number}`` (see :data:`PRIMARY`)."""
        return primary(results)
