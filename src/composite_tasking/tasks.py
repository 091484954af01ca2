"""The five CompositeTasking tasks as data, and how the 3-channel output decodes to each.

The CTN predicts one 3-vector ``o`` per pixel whatever the task (paper, section 4).
This module holds, for every task, what that vector means:

========  ===================  =========================================================
task      kind                 decoding of the output ``O`` (N, 3, H, W)
========  ===================  =========================================================
semseg    classes (21)         nearest class anchor of ``sigmoid(O)`` (Table 5, /255)
parts     classes (7)          nearest class anchor of ``sigmoid(O)`` (Table 6, /255)
edges     probability          mean over the 3 channels of ``sigmoid(O)``
saliency  probability          mean over the 3 channels of ``sigmoid(O)``
normals   vector               ``O / ||O||`` (unit vector, camera space)
========  ===================  =========================================================

Task ids follow the authors' public code (semseg 0, parts 1, edges 2, saliency 3,
normals 4). In a Task Palette the value is ``task id + 1`` and 0 means "no task", which
is also napari's background label.

Class ids of ``semseg`` are the standard PASCAL VOC order used by the PASCAL-MT label
files (0 background, 1 aeroplane, ..., 20 tvmonitor); Table 5 lists the classes in a
different order, so its anchors are attached here by *name*.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:
    import torch
# torch is imported where it is used: the task table, its anchors as numpy and
# decode_labels_numpy serve the store's writer processes, which do without torch
# (~400 MB and a second of start-up each)

__all__ = [
    "IGNORE",
    "NO_TASK",
    "Task",
    "TASKS",
    "TASK_NAMES",
    "SEMSEG_CLASSES",
    "PARTS_CLASSES",
    "TaskPrediction",
    "get_task",
    "task_id",
    "palette_value",
    "class_probabilities",
    "CONFIDENCE_CALIBRATION",
    "confidence_from_score",
    "decode_task",
    "decode_output",
]

#: Label value meaning "undefined / not requested" in every integer label map.
IGNORE = 255
#: Palette value meaning "no task requested at this pixel".
NO_TASK = 0

# Standard PASCAL VOC order, as in the PASCAL-MT semseg PNGs.
SEMSEG_CLASSES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip

# Table 5 of the supplementary material: class name -> anchor (x1, x2, x3) in 0..255.
_SEMSEG_ANCHORS_TABLE5: dict[str, tuple[int, int, int]] = {
    "background": (0, 0, 0),
    "cat": (0, 0, 64),
    "aeroplane": (0, 0, 128),
    "chair": (0, 0, 192),
    "pottedplant": (0, 64, 0),
    "sheep": (0, 64, 128),
    "bicycle": (0, 128, 0),
    "cow": (0, 128, 64),
    "bird": (0, 128, 128),
    "diningtable": (0, 128, 192),
    "sofa": (0, 192, 0),
    "train": (0, 192, 128),
    "boat": (128, 0, 0),
    "dog": (128, 0, 64),
    "bottle": (128, 0, 128),
    "horse": (128, 0, 192),
    "tvmonitor": (128, 64, 0),
    "bus": (128, 128, 0),
    "motorbike": (128, 128, 64),
    "car": (128, 128, 128),
    "person": (128, 128, 192),
}

# Table 6: human parts, in label order.
PARTS_CLASSES: tuple[str, ...] = (
    "background", "head", "torso", "upper_arm", "lower_arm", "upper_leg", "lower_leg",
)  # fmt: skip
_PARTS_ANCHORS_TABLE6: dict[str, tuple[int, int, int]] = {
    "background": (0, 0, 0),
    "head": (0, 0, 255),
    "torso": (0, 255, 0),  # "neck & torso"
    "upper_arm": (255, 0, 0),
    "lower_arm": (0, 255, 255),
    "upper_leg": (255, 0, 255),
    "lower_leg": (255, 255, 0),
}

#: eps of eq. (5): l_i = 1 / (||o - a_i|| + eps)
ANCHOR_EPS = 1e-8

#: Confidence = the probability that a pixel's label is right, a logistic map of a score
#: per task: ``sigmoid(a + b * score)`` (docs/model.md, "Confidence"). Scores: classes the
#: distance of ``sigmoid(o)`` from the boundary between its two nearest anchors, ``(d2^2 -
#: d1^2) / (2 |a1 - a2|)``; edges and saliency ``|e|``, the log-odds of the
#: probability ``e = log(p / (1 - p))`` computed without float saturation, with one
#: ``(a, b)`` for pixels labelled 0 and one for pixels labelled 1 (the two kinds of error
#: differ: a predicted edge is wrong far more often than a predicted non-edge); normals
#: ``ln ||o||``, the log length of the raw output. Constants: fitted to the bundled model
#: (``default``) on held-out synthetic scenes of seed 5 (sizes 128 and 256, every task
#: everywhere) by ``python benchmarks/confidence_study.py --fit``, checked on seed 77.
CONFIDENCE_CALIBRATION: dict[str, tuple[float, ...]] = {
    "semseg": (-2.924, 40.837),  # (a, b) of the distance from the class boundary
    "parts": (-3.810, 27.192),  # (a, b) of the distance from the class boundary
    "edges": (4.169, 1.209, -3.880, 1.287),  # (a, b) of |e|: label 0, then label 1
    "saliency": (-2.218, 2.343, -2.279, 1.150),  # (a, b) of |e|: label 0, then label 1
    "normals": (-2.290, 3.576),  # (a, b) of ln ||o||
}

Kind = Literal["classes", "probability", "vector"]


@dataclass(frozen=True)
class Task:
    """One prediction task: identity, appearance in the palette, and output decoding."""

    id: int
    name: str
    title: str
    #: colour of this task in the Task Palette (RGB, 0..255)
    color: tuple[int, int, int]
    kind: Kind
    classes: tuple[str, ...] = ()
    #: class anchors in the 0..255 scale of Tables 5/6, one row per class in label order
    anchors_255: tuple[tuple[int, int, int], ...] = ()
    #: loss weight lambda_k of eq. (4), supplementary E
    loss_weight: float = 1.0
    description: str = field(default="", compare=False)

    @property
    def palette_value(self) -> int:
        """The value that requests this task in a Task Palette (id + 1)."""
        return self.id + 1

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def anchors(self, device=None, dtype=None) -> torch.Tensor:
        """Class anchors in the sigmoid output space [0, 1], shape (C, 3) (float32 unless
        ``dtype``)."""
        import torch

        return torch.tensor(self.anchors_numpy(), dtype=dtype or torch.float32, device=device)

    def anchors_numpy(self) -> np.ndarray:
        """:meth:`anchors` as a float32 numpy array (the same values)."""
        if self.kind != "classes":
            raise ValueError(f"task {self.name!r} has no class anchors (kind {self.kind!r})")
        return np.asarray(self.anchors_255, dtype=np.float32) / np.float32(255.0)

    def anchor_gaps(self) -> np.ndarray:
        """Distances between the anchors (C, C), float32 (the diagonal 1: never used)."""
        a = self.anchors_numpy()
        gaps = np.sqrt(np.square(a[:, None] - a[None]).sum(axis=-1))
        np.fill_diagonal(gaps, 1.0)
        return gaps

    def class_colors(self) -> np.ndarray:
        """RGB colour of each class (the anchors double as the paper's class colours)."""
        return np.asarray(self.anchors_255, dtype=np.uint8)


def _anchors(classes: tuple[str, ...], table: dict[str, tuple[int, int, int]]):
    return tuple(table[c] for c in classes)


TASKS: tuple[Task, ...] = (
    Task(
        0, "semseg", "Semantic segmentation", (31, 119, 180), "classes",
        SEMSEG_CLASSES, _anchors(SEMSEG_CLASSES, _SEMSEG_ANCHORS_TABLE5), 3.0,
        "which of the 21 PASCAL classes a pixel belongs to",
    ),
    Task(
        1, "parts", "Human parts", (255, 127, 14), "classes",
        PARTS_CLASSES, _anchors(PARTS_CLASSES, _PARTS_ANCHORS_TABLE6), 4.0,
        "which body part of a person a pixel belongs to",
    ),
    Task(
        2, "edges", "Semantic edges", (44, 160, 44), "probability", loss_weight=50.0,
        description="probability that a pixel lies on a boundary between objects",
    ),
    Task(
        3, "saliency", "Saliency", (214, 39, 40), "probability", loss_weight=8.0,
        description="probability that a pixel belongs to a conspicuous object",
    ),
    Task(
        4, "normals", "Surface normals", (148, 103, 189), "vector", loss_weight=4.0,
        description="unit surface normal in camera space",
    ),
)  # fmt: skip

TASK_NAMES: tuple[str, ...] = tuple(t.name for t in TASKS)
_BY_NAME = {t.name: t for t in TASKS}
# Names people type; each maps to one task.
_ALIASES = {
    "seg": "semseg", "segmentation": "semseg", "semantic": "semseg",
    "human_parts": "parts", "humanparts": "parts", "edge": "edges",
    "sal": "saliency", "normal": "normals", "surface_normals": "normals",
}  # fmt: skip


def get_task(key: str | int | Task) -> Task:
    """Look a task up by name (or a common alias), id, or return it if already a Task."""
    if isinstance(key, Task):
        return key
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        if 0 <= int(key) < len(TASKS):
            return TASKS[int(key)]
        raise KeyError(f"no task with id {key}; ids are 0..{len(TASKS) - 1}")
    name = str(key).strip().lower().replace("-", "_")
    name = _ALIASES.get(name, name)
    if name not in _BY_NAME:
        raise KeyError(f"unknown task {key!r}; known tasks: {', '.join(TASK_NAMES)}")
    return _BY_NAME[name]


def task_id(key: str | int | Task) -> int:
    return get_task(key).id


def palette_value(key: str | int | Task) -> int:
    return get_task(key).palette_value


def class_probabilities(output: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """Eq. (5) and the softmax after it: class probabilities from the 3-vector output.

    ``output`` is the raw network output (N, 3, H, W); ``anchors`` (C, 3) in [0, 1].
    Returns (N, C, H, W). The distances are measured in the sigmoid space of the output.
    """
    import torch

    o = torch.sigmoid(output.float())
    d = _anchor_distances(o, anchors)
    return torch.softmax(1.0 / (d + ANCHOR_EPS), dim=1)


def _anchor_distances(o: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    # (N, 3, H, W) vs (C, 3) -> (N, C, H, W) Euclidean distances
    diff = o.unsqueeze(1) - anchors.to(o).view(1, -1, 3, 1, 1)
    return diff.square().sum(dim=2).sqrt()


@dataclass
class TaskPrediction:
    """A decoded task label, defined only where ``valid`` is True.

    ``label``: int64 class map (classes), float probability map (probability) or
    (N, 3, H, W) unit vectors (vector); ``confidence`` in [0, 1]; both are filled with
    the task's invalid value (IGNORE / nan / 0) outside ``valid``.
    """

    task: Task
    label: torch.Tensor
    confidence: torch.Tensor
    valid: torch.Tensor


def confidence_from_score(task: str | int | Task, score, label=None):
    """The calibrated confidence of a task's score (:data:`CONFIDENCE_CALIBRATION`):
    ``sigmoid(a + b * score)``, for edges and saliency with the ``(a, b)`` of each
    pixel's 0/1 ``label`` (bool or 0/1). numpy arrays (float32 out) or torch tensors."""
    task = get_task(task)
    c = CONFIDENCE_CALIBRATION[task.name]
    if task.kind == "probability" and label is None:
        raise ValueError(f"task {task.name!r}: its confidence needs the 0/1 label")
    if isinstance(score, np.ndarray):
        f = np.float32
        if task.kind == "probability":
            one = np.asarray(label).astype(bool)
            x = np.where(one, f(c[2]), f(c[0])) + np.where(one, f(c[3]), f(c[1])) * score
        else:
            x = f(c[0]) + f(c[1]) * score
        with np.errstate(over="ignore"):  # exp(88+) is inf, and 1 / inf the right 0
            return f(1.0) / (f(1.0) + np.exp(-x.astype(f, copy=False)))
    import torch

    if task.kind == "probability":
        one = label.bool()
        x = torch.where(one, c[2], c[0]) + torch.where(one, c[3], c[1]) * score
    else:
        x = c[0] + c[1] * score
    return torch.sigmoid(x)


def decode_task(output: torch.Tensor, task: str | int | Task, valid: torch.Tensor | None = None,
                calibrated: bool = True):  # fmt: skip
    """Decode the output (N, 3, H, W) as one task everywhere ``valid`` (N, H, W) is True.

    The confidence is the probability that the pixel's label is right: a logistic map
    (:func:`confidence_from_score`, constants :data:`CONFIDENCE_CALIBRATION`) of a
    score per kind (``calibrated=False`` returns the score itself, to fit the map):

    - classes: ``(d2^2 - d1^2) / (2 |a1 - a2|)``, the distance of ``sigmoid(o)`` from the
      boundary (the bisecting plane) between its nearest anchor ``a1`` and second nearest
      ``a2``: how far the output is from another class. The softmax of eq. (5)
      saturates (``1/d`` is huge near an anchor), so its top-1/top-2 margin is almost
      always 1 and says little; the ratio ``1 - d1 / d2`` (the score until 2026-12) ranks
      errors worse on held-out scenes (docs/model.md).
    - probability: ``|e|``, the log-odds ``e = log(p / (1 - p))`` of the probability, with
      ``1 - p`` computed as the mean of ``sigmoid(-O)`` (``|2p - 1|`` is exactly 1 in float
      once every logit is above ~17); the map's constants depend on the 0/1 label.
    - vector: ``ln ||o||``; a short raw vector means the decoder's evidence for a
      direction is weak (the cosine loss leaves the length free), and the log keeps the
      very long ones (``||o||`` can reach the thousands) apart.
    """
    import torch

    task = get_task(task)
    n, c, h, w = output.shape
    if c != 3:
        raise ValueError(f"expected a 3-channel output, got {c} channels")
    if valid is None:
        valid = torch.ones((n, h, w), dtype=torch.bool, device=output.device)
    out = output.float()
    binary = None
    if task.kind == "classes":
        d = _anchor_distances(torch.sigmoid(out), task.anchors(out.device))
        top2 = torch.topk(d, k=2, dim=1, largest=False)
        label = top2.indices[:, 0]
        gap = torch.from_numpy(task.anchor_gaps()).to(out.device)[label, top2.indices[:, 1]]
        d1, d2 = top2.values[:, 0], top2.values[:, 1]
        score = (d2.square() - d1.square()) / (2.0 * gap)
        label = torch.where(valid, label, torch.full_like(label, IGNORE))
    elif task.kind == "probability":
        label = torch.sigmoid(out).mean(dim=1)
        q = torch.sigmoid(-out).mean(dim=1)  # 1 - p, exact where p rounds to 1
        tiny = torch.finfo(torch.float32).tiny
        score = (label.clamp_min(tiny).log() - q.clamp_min(tiny).log()).abs()
        binary = label >= 0.5
        label = torch.where(valid, label, torch.full_like(label, math.nan))
    else:  # vector
        # not out.norm(dim=1): torch's strided norm over channels is ~60x slower on a CPU
        norm = out.square().sum(dim=1, keepdim=True).sqrt()
        label = out / norm.clamp_min(1e-12)
        score = norm.squeeze(1).clamp_min(1e-30).log()
        label = torch.where(valid.unsqueeze(1), label, torch.zeros_like(label))
    conf = confidence_from_score(task, score, binary) if calibrated else score
    conf = torch.where(valid, conf, torch.zeros_like(conf))
    return TaskPrediction(task, label, conf, valid)


def decode_output(output: torch.Tensor, palette: torch.Tensor) -> dict[str, TaskPrediction]:
    """Decode a composite output by its Task Palette: each task only where it was asked.

    ``palette`` (N, H, W) holds task id + 1 per pixel, 0 = no task. Pixels with no task
    are invalid in every returned label. Only tasks present in the palette are returned.
    """
    if palette.shape != output.shape[:1] + output.shape[2:]:
        raise ValueError(
            f"palette shape {tuple(palette.shape)} does not match output {tuple(output.shape)} (expected (N, H, W))"
        )
    import torch

    present = torch.unique(palette).tolist()
    result = {}
    for task in TASKS:
        if task.palette_value in present:
            result[task.name] = decode_task(output, task, palette == task.palette_value)
    return result
