"""The sparse multi-task loss of eq. (4): each task only where the palette asks for it.

Supplementary E and the authors' code:

========  =====================================================================  ======
task      loss over the pixels the palette gives the task (and that have a label)  lambda
========  =====================================================================  ======
semseg    focal loss (gamma = 2) over softmax(l), l_i = 1 / (||sigmoid(o) - a_i|| + eps)   3
parts     same, with the human-part anchors                                          4
edges     binary cross-entropy on each of the 3 channels, weights 0.95 (edge) / 0.05    50
saliency  binary cross-entropy on each channel, weights = inverse class frequency     8
          in the batch, normalised to sum to 1
normals   1 - cosine similarity between o and the label; all-zero labels skipped     4
========  =====================================================================  ======

Each task's loss is the mean over its pixels; the total is the weighted sum. A task with
no pixel in the batch contributes exactly zero (never NaN) and keeps the graph connected
so that ``backward()`` works whatever the palette.

Variants (a recipe's ``loss`` mapping, :data:`LOSS_DEFAULTS`; the defaults are the paper's
loss above, unchanged), studied in docs/results.md ("Why semantics learn slowly"):

- ``semantic: distance`` replaces the class logits ``l_i = 1 / d_i`` of semseg and parts by
  ``l_i = -d_i^2 / temperature`` (``d_i = ||sigmoid(o) - a_i||``), the same focal loss
  over their softmax. The class with the largest logit is still the nearest anchor, so
  the decoding (nearest anchor of ``sigmoid(O)``) is the same for both.
- ``output_penalty: w`` adds ``w`` times, for every task present, the mean over its pixels
  of ``relu(|o| - OUTPUT_BOUND)^2`` (each raw channel): the raw output kept within
  +-:data:`OUTPUT_BOUND`, where ``sigmoid`` is within 1/3000 of 0 or 1 and still has a
  gradient. The decoding does not change.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F

from composite_tasking.tasks import IGNORE, TASKS, get_task

__all__ = ["DEFAULT_WEIGHTS", "LOSS_DEFAULTS", "SEMANTIC_LOSSES", "OUTPUT_BOUND", "focal_anchor_loss",
           "composite_loss", "palette_loss", "LossResult"]  # fmt: skip

DEFAULT_WEIGHTS: dict[str, float] = {t.name: t.loss_weight for t in TASKS}
#: the class logits of semseg and parts: the paper's ``1 / d`` or ``-d^2 / temperature``
SEMANTIC_LOSSES = ("paper", "distance")
#: a recipe's ``loss`` mapping: every key and its default (the paper's loss)
LOSS_DEFAULTS: dict[str, object] = {"semantic": "paper", "temperature": 0.01, "output_penalty": 0.0}
#: ``output_penalty`` penalises raw outputs beyond +-OUTPUT_BOUND (sigmoid(8) = 0.99966)
OUTPUT_BOUND = 8.0

#: smallest anchor distance used in l_i = 1 / d: keeps gradients finite on an anchor
_MIN_DIST = 1e-6


def focal_anchor_loss(o: torch.Tensor, target: torch.Tensor, anchors: torch.Tensor,
                      gamma: float = 2.0, semantic: str = "paper", temperature: float = 0.01) -> torch.Tensor:  # fmt: skip
    """Mean focal loss of eq. (5)'s class probabilities.

    ``o`` (P, 3) raw outputs of the selected pixels, ``target`` (P,) class ids,
    ``anchors`` (C, 3) in [0, 1]. ``semantic``: the class logits, ``paper`` (eq. 5,
    ``1 / d``) or ``distance`` (``-d^2 / temperature``).
    """
    s = torch.sigmoid(o)
    d2 = (s.unsqueeze(1) - anchors.unsqueeze(0)).square().sum(-1)  # (P, C)
    if semantic == "paper":
        d = (d2 + 1e-12).sqrt().clamp_min(_MIN_DIST)
        logits = 1.0 / d
    elif semantic == "distance":
        logits = -d2 / float(temperature)
    else:
        raise ValueError(f"semantic loss is {' or '.join(SEMANTIC_LOSSES)}, not {semantic!r}")
    logp = torch.log_softmax(logits, dim=1)
    logp_t = logp.gather(1, target.unsqueeze(1)).squeeze(1)
    p_t = logp_t.exp()
    return (-(1.0 - p_t).pow(gamma) * logp_t).mean()


def _weighted_bce(o: torch.Tensor, y: torch.Tensor, w_pos, w_neg) -> torch.Tensor:
    # o (P, 3) logits, y (P,) in {0, 1}: the same label on each of the three channels
    y3 = y.unsqueeze(1).expand_as(o)
    w = torch.where(y3 > 0.5, torch.as_tensor(w_pos, dtype=o.dtype, device=o.device),
                    torch.as_tensor(w_neg, dtype=o.dtype, device=o.device))  # fmt: skip
    return F.binary_cross_entropy_with_logits(o, y3, weight=w, reduction="mean")


class LossResult(dict):
    """``{task: loss}`` for the tasks present plus ``"total"``; ``pixels`` counts per task."""

    pixels: dict[str, int]


def composite_loss(
    output: torch.Tensor,
    palette: torch.Tensor,
    targets: Mapping[str, torch.Tensor],
    weights: Mapping[str, float] | None = None,
    focal_gamma: float = 2.0,
    loss: Mapping[str, object] | None = None,
) -> LossResult:
    """Eq. (4) for a batch. ``output`` (N, 3, H, W) raw; ``palette`` (N, H, W) task id + 1;
    ``targets`` in the dataset format (class maps int64 with 255 ignore, edges/saliency
    0/1/255, normals (N, 3, H, W) with zeros invalid). Tasks missing from ``targets``
    are skipped. ``loss``: a recipe's ``loss`` mapping (:data:`LOSS_DEFAULTS` for the
    keys it leaves out; None: the paper's loss); with an ``output_penalty`` the result
    also holds ``output_penalty`` (unweighted, summed over the tasks present)."""
    weights = DEFAULT_WEIGHTS if weights is None else weights
    opts: dict[str, Any] = {**LOSS_DEFAULTS, **(loss or {})}
    penalty_weight = float(opts["output_penalty"])
    penalty = None
    o = output.float().permute(0, 2, 3, 1)  # (N, H, W, 3)
    zero = output.float().sum() * 0.0  # float16 sums overflow to inf, and inf * 0 is NaN
    result = LossResult()
    result.pixels = {}
    total = zero
    for name, target in targets.items():
        task = get_task(name)
        mask = palette == task.palette_value
        if task.kind == "vector":
            y = target.float().permute(0, 2, 3, 1)  # (N, H, W, 3)
            mask = mask & (y.abs().sum(-1) > 0)
        else:
            mask = mask & (target != IGNORE)
        n = int(mask.sum())
        result.pixels[task.name] = n
        if n == 0:
            task_loss = zero
        elif task.kind == "classes":
            task_loss = focal_anchor_loss(o[mask], target[mask].long(), task.anchors(o.device), focal_gamma,
                                          str(opts["semantic"]), float(opts["temperature"]))  # fmt: skip
        elif task.kind == "vector":
            task_loss = (1.0 - F.cosine_similarity(o[mask], y[mask], dim=-1, eps=1e-8)).mean()
        elif task.name == "edges":
            task_loss = _weighted_bce(o[mask], target[mask].float(), 0.95, 0.05)
        else:  # saliency: inverse class frequency in the batch, normalised to sum to 1
            y = target[mask].float()
            pos = y.mean()
            task_loss = _weighted_bce(o[mask], y, 1.0 - pos, pos)
        result[task.name] = task_loss
        total = total + float(weights.get(task.name, 0.0)) * task_loss
        if penalty_weight > 0:
            p = zero if n == 0 else F.relu(o[mask].abs() - OUTPUT_BOUND).square().mean()
            penalty = p if penalty is None else penalty + p
    if penalty is not None:
        result["output_penalty"] = penalty
        total = total + penalty_weight * penalty
    result["total"] = total
    return result


def palette_loss(logits: torch.Tensor, palette: torch.Tensor, semseg: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy of the palette network against a rule's palette (N, H, W).

    Padding added by augmentation has palette 0 *and* no semantic label; those pixels
    are ignored, so "no task" is learned only where a rule really asks for no task.
    """
    target = palette.long()
    if semseg is not None:
        target = torch.where((target == 0) & (semseg == IGNORE), torch.full_like(target, -100), target)
    if not bool((target != -100).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float(), target, ignore_index=-100)
