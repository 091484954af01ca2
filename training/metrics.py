"""Evaluation metrics of the five tasks, accumulated over a split, and Delta_m.

Every meter follows the same pattern: ``update(prediction, label, valid_mask)`` once per
batch, ``compute()`` once at the end; ``reset()`` starts again. Inputs may be numpy
arrays or (CPU or GPU) torch tensors; everything is computed in numpy on the CPU.
All percentages are in 0..100.

The meters are in :mod:`.meters`, one module per task family, each with its protocol in
its docstring. This module holds what combines them: :class:`TaskMetrics` (one meter per
task), the primary number of each task (:data:`PRIMARY`) and Delta_m; the meters,
:func:`has_person`, :func:`as_numpy` and the default thresholds are importable from here
as well.

Conventions, and where they come from
-------------------------------------

The paper (section 5.3) evaluates "in concordance with recent multi-tasking work [34, 22]",
i.e. ASTMT (Maninis et al., CVPR 2019, ``fblib/evaluation`` in facebookresearch/astmt)
and the PASCAL-MT protocol shared by MTI-Net (``evaluation/`` in
SimonVandenhende/Multi-Task-Learning-PyTorch). We follow those scripts except where noted.

In brief (each meter's module says it in full):

``SegmentationMeter`` (semseg, 21 classes; parts, 7 classes): :mod:`.meters.segmentation`
    mIoU from TP/FP/FN per class summed over the split; a class absent from both the
    ground truth and the prediction is left out of the mean; parts only on images that
    contain a person (:func:`has_person`).

``SaliencyMeter``: :mod:`.meters.saliency`
    per-image precision, recall and IoU per threshold, averaged over the images;
    ``max_mIoU`` (the paper's "Sal") and ``maxF`` (beta^2 = 1, as ASTMT and MTI-Net).

``NormalsMeter``: :mod:`.meters.normals`
    angular error in degrees pooled over the valid pixels: mean (the paper's mErr),
    median, rmse, % below 11.25, 22.5 and 30.

``EdgeMeter`` (ODS F-measure, a Python approximation of seism / BSDS): :mod:`.meters.edges`
    a predicted edge pixel counts when a ground-truth edge pixel lies within
    ``0.0075 x image diagonal``, and the other way round (not one-to-one as in BSDS);
    ODS is the best F over the thresholds.

``delta_m`` (section 6.1)
    ``Delta_m = 100 / T * sum_i (-1)^{l_i} (M_m,i - M_b,i) / M_b,i`` with ``l_i = 1`` for
    normals (lower mean error is better), on one number per task (:data:`PRIMARY`):
    edges odsF, semseg mIoU, parts mIoU, normals mean error, saliency max mIoU. This
    reproduces the Delta_m columns of the paper's tables (e.g. Table 7 row 2: -0.92 %,
    Table 8: -2.89 %, Table 3: -6.68 % over 4 tasks); in Tables 7-15 the baseline is the
    chosen model, in Tables 1-3 the single-task network.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import numpy as np

from composite_tasking.edges import edge_nms
from composite_tasking.tasks import TASK_NAMES, get_task

from .meters import (
    EDGE_THRESHOLDS as EDGE_THRESHOLDS,
    SALIENCY_THRESHOLDS as SALIENCY_THRESHOLDS,
    EdgeMeter,
    NormalsMeter,
    SaliencyMeter,
    SegmentationMeter,
    as_numpy,
    has_person,
)
from .meters.inputs import image_selection

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
            sel = person if images is None else person & image_selection(images, person.size)
            meter.update(prediction, label, valid_mask, images=sel)
        elif isinstance(meter, SegmentationMeter):
            meter.update(prediction, label, valid_mask, images=images)
        else:
            if images is not None:
                sel = image_selection(images, as_numpy(label).shape[0])
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
