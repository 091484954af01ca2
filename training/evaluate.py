"""Evaluate a model on a data set under a rule: metrics per task, the loss, Delta_m.

Rule ``S`` (the paper's Table 1 protocol) decodes every task everywhere: one encoding per
image, one decode per task. Any other rule decodes once with the rule's palette and
scores each task on the pixels the palette gave it (Tables 2-4).
"""

from __future__ import annotations

import contextlib

import torch

from composite_tasking.tasks import decode_task, get_task

from .losses import composite_loss
from .metrics import TaskMetrics, primary

__all__ = ["evaluate_loader", "evaluate"]

LABEL_KEYS = ("semseg", "parts", "edges", "saliency", "normals")


def _valid(task, label: torch.Tensor) -> torch.Tensor:
    if get_task(task).kind == "vector":
        return label.abs().sum(1) > 0
    return label != 255


@torch.inference_mode()
def evaluate_loader(model, loader, device, rule: str = "S", autocast=None, loss_weights=None,
                    progress=None, should_stop=None) -> dict:  # fmt: skip
    """Run ``model`` over ``loader``; returns ``{"loss", "metrics", "primary", "images"}``."""
    model.eval()
    tasks = list(model.config.tasks)
    meters = TaskMetrics(tasks)
    loss_sum, batches, images = 0.0, 0, 0
    ctx = (lambda: torch.autocast(device.type, dtype=autocast)) if autocast else contextlib.nullcontext
    total = len(loader) if hasattr(loader, "__len__") else None
    for i, batch in enumerate(loader):
        if should_stop is not None and should_stop():
            break
        image = batch["image"].to(device).contiguous(memory_format=torch.channels_last)
        palette = batch["palette"].to(device)
        targets = {k: batch[k].to(device) for k in LABEL_KEYS if k in batch}
        with ctx():
            enc = model.encode(image)
            out = model.decode(enc, palette)
        loss_sum += float(composite_loss(out.float(), palette, targets, loss_weights)["total"])
        batches += 1
        images += image.shape[0]
        for task in tasks:
            if task not in targets:
                continue
            label = targets[task]
            valid = _valid(task, label)
            if rule == "S":
                value = get_task(task).palette_value
                with ctx():
                    o = model.decode(enc, torch.full_like(palette, value))
            else:
                o = out
                valid = valid & (palette == get_task(task).palette_value)
                if not valid.any():  # the rule asks for this task nowhere here: not scored
                    continue
            pred = decode_task(o.float(), task, valid)
            meters.update(task, pred.label.cpu(), label.cpu(), valid.cpu())
        if progress is not None:
            progress(i + 1, total)
    results = meters.compute()
    return {"loss": loss_sum / max(batches, 1), "metrics": results, "primary": primary(results),
            "images": images, "rule": rule}  # fmt: skip


@torch.inference_mode()
def evaluate_palette_loader(model, loader, device, autocast=None, progress=None) -> dict:
    """Palette mIoU of a palette network against the rule palettes of ``loader``
    (classes: no task and each task; the paper reports 75.04% on PASCAL-MT)."""
    from .losses import palette_loss
    from .metrics import SegmentationMeter

    model.eval()
    meter = SegmentationMeter(len(model.config.tasks) + 1, ignore=-1)
    loss_sum, batches, images = 0.0, 0, 0
    for i, batch in enumerate(loader):
        image = batch["image"].to(device).contiguous(memory_format=torch.channels_last)
        target = batch["palette"].to(device)
        ctx = torch.autocast(device.type, dtype=autocast) if autocast else contextlib.nullcontext()
        with ctx:
            logits = model(image)
        semseg = batch.get("semseg")
        loss_sum += float(palette_loss(logits, target, None if semseg is None else semseg.to(device)))
        valid = torch.ones_like(target, dtype=torch.bool)
        if semseg is not None:  # augmentation padding: no task and no label
            valid = ~((target == 0) & (semseg.to(device) == 255))
        meter.update(logits.argmax(1).cpu(), target.cpu(), valid.cpu())
        batches += 1
        images += image.shape[0]
        if progress is not None:
            progress(i + 1, len(loader))
    res = meter.compute()
    return {"loss": loss_sum / max(batches, 1), "metrics": {"palette": res},
            "primary": {"palette": res["mIoU"]}, "images": images}  # fmt: skip


def evaluate(model, data, rule: str = "S", device: str = "auto", batch_size: int = 8,
             workers: int = 0, precision: str = "fp32", progress=None) -> dict:  # fmt: skip
    """Evaluate on a data spec (``synthetic:seed=K,n=N``, ``pascal-mt:ROOT``: its val split
    unless the spec names one, a store: the images with corrections or ground truth
    unless the spec says ``select: all``). Images of different sizes are batched by size.
    A store whose stored palettes were made under another rule than ``rule`` is refused
    (they would be scored instead of the rule's); rule S and S:<task> pass."""
    from .trainer import _ordered_loader, build_dataset, check_palettes, pick_autocast_dtype, pick_device

    dev = pick_device(device)
    palette_net = model.config.kind == "palette"
    if palette_net and (rule == "S" or rule.startswith("S:")):
        raise ValueError("a palette network is scored against the palettes of a rule: give the "
                         "rule it predicts (e.g. --rule R2), not S")  # fmt: skip
    dataset = build_dataset(data, "mosaic" if rule == "S" else rule, None, default_split="val")
    check_palettes(dataset, rule, purpose="score")
    loader = _ordered_loader(dataset, batch_size, workers)
    model = model.to(dev).to(memory_format=torch.channels_last)
    autocast = pick_autocast_dtype(precision, dev)
    if palette_net:  # palette mIoU against the rule's palettes (section 6.2)
        with torch.inference_mode():
            result = evaluate_palette_loader(model, loader, dev, autocast, progress=progress)
        return {**result, "rule": rule}
    return evaluate_loader(model, loader, dev, rule, autocast, progress=progress)
