"""Evaluate a model on a data set under a rule: metrics per task, the loss, Delta_m.

Rule ``S`` (the paper's Table 1 protocol) decodes every task everywhere: one encoding per
image, one decode per task. Any other rule decodes once with the rule's palette and
scores each task on the pixels the palette gave it (Tables 2-4).

Beside the metrics, each task's *effort* (:mod:`composite_tasking.effort`: the share of
its palette pixels and the regions a person must repaint to reach the truth, against
painting from scratch) and how well its confidence predicts errors
(:mod:`.calibration`: AUROC, reliability table) are measured on the same decoded labels.
The region of a task is the pixels the palette asks for it: under rule S the whole image.

``scale`` (:mod:`composite_tasking.scale`): the model runs at a working resolution and
its output is brought back to the labels' own size before anything is scored, as
``ctn label --scale`` labels (the edge labels thinned as the store holds them).
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from composite_tasking.effort import EffortMeter, right_mask
from composite_tasking.prediction import THRESHOLD
from composite_tasking.tasks import IGNORE, decode_task, get_task

from .calibration import ConfidenceMeter
from .losses import composite_loss
from .metrics import TaskMetrics, primary

__all__ = ["evaluate_loader", "evaluate"]

LABEL_KEYS = ("semseg", "parts", "edges", "saliency", "normals")


def _valid(task, label: torch.Tensor) -> torch.Tensor:
    if get_task(task).kind == "vector":
        return label.abs().sum(1) > 0
    return label != 255


def _store_layout(task, pred, truth: torch.Tensor, upscale: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """A decoded prediction and its truth as numpy in the label store's layout (what a
    person would correct): probabilities thresholded to 0/1 at THRESHOLD as the store
    holds them (255 where not decoded; edges thinned when ``upscale`` > 1, as
    :func:`~composite_tasking.prediction.decode_labels` does), normals (N, H, W, 3)."""
    kind = get_task(task).kind
    label, truth = pred.label.cpu(), truth.cpu()
    if kind == "probability":
        binary = label >= THRESHOLD
        if get_task(task).name == "edges" and upscale > 1:
            from composite_tasking.edges import thin_edges

            prob = torch.where(pred.valid.cpu(), label, torch.nan).numpy()
            binary = binary & torch.from_numpy(np.stack([thin_edges(p, upscale) for p in prob]))
        label = torch.where(pred.valid.cpu(), binary.to(torch.uint8), IGNORE)
    elif kind == "vector":
        return label.permute(0, 2, 3, 1).numpy(), truth.permute(0, 2, 3, 1).numpy()
    return label.numpy(), truth.numpy()


class _Scaled:
    """A batch encoded at its working resolution (:mod:`composite_tasking.scale`), whose
    decodes come back at the batch's own size, task by task."""

    def __init__(self, model, image: torch.Tensor, shape: tuple[int, int], ctx):
        from composite_tasking.inference import resize_images

        self.model, self.ctx, self.full = model, ctx, tuple(image.shape[-2:])
        self.shape = shape
        self.small = resize_images(image, shape).contiguous(memory_format=torch.channels_last)
        with ctx():
            self.enc = model.encode(self.small)

    def decode(self, palette: torch.Tensor) -> torch.Tensor:
        """The composite output (N, 3, H, W) at full size under the full-size ``palette``."""
        from composite_tasking.scale import downsample_palette, upsample_composite

        pal = palette.cpu().numpy().astype(np.uint8)
        small = np.stack([downsample_palette(p, self.shape) for p in pal])
        with self.ctx():
            out = self.model.decode(self.enc, torch.from_numpy(small).to(palette.device).long()).float().cpu().numpy()
        full = []
        for i in range(len(pal)):

            def more(extra, region, i=i):  # a stroke thinner than a working pixel: this image again
                with self.ctx():
                    enc = self.model.encode(self.small[i : i + 1])
                    o = self.model.decode(enc, torch.from_numpy(extra)[None].to(palette.device).long())
                return o[0].float().cpu().numpy()

            full.append(upsample_composite(more, pal[i], small[i], out[i], self.model.config.tasks))
        return torch.from_numpy(np.stack(full)).to(palette.device)


@torch.inference_mode()
def evaluate_loader(model, loader, device, rule: str = "S", autocast=None, loss_weights=None,
                    progress=None, should_stop=None, scale="none", loss=None) -> dict:  # fmt: skip
    """Run ``model`` over ``loader``; returns ``{"loss", "metrics", "primary", "images",
    "rule", "effort", "confidence"}`` (``effort``: :class:`EffortMeter`'s figures per task
    and their mean; ``confidence``: :class:`.calibration.ConfidenceMeter`'s). ``scale``:
    the working resolution (:mod:`composite_tasking.scale`; ``none``: every pixel); the
    loss is then the full-size output's. ``loss``: a recipe's ``loss`` variants (None:
    the paper's loss, :func:`.losses.composite_loss`)."""
    from composite_tasking.scale import parse_scale, trained_size, working_shape

    scale = parse_scale(scale)
    trained = trained_size(getattr(model, "provenance", None))
    model.eval()
    tasks = list(model.config.tasks)
    meters = TaskMetrics(tasks)
    effort, confidence = EffortMeter(), ConfidenceMeter()
    loss_sum, batches, images = 0.0, 0, 0
    ctx = (lambda: torch.autocast(device.type, dtype=autocast)) if autocast else contextlib.nullcontext
    total = len(loader) if hasattr(loader, "__len__") else None
    for i, batch in enumerate(loader):
        if should_stop is not None and should_stop():
            break
        image = batch["image"].to(device).contiguous(memory_format=torch.channels_last)
        palette = batch["palette"].to(device)
        targets = {k: batch[k].to(device) for k in LABEL_KEYS if k in batch}
        full = tuple(image.shape[-2:])
        ws = working_shape(full, scale, trained)
        scaled = None if tuple(ws) == full else _Scaled(model, image, ws, ctx)
        upscale = 0.0 if scaled is None else max(full) / max(ws)
        if scaled is not None:
            out = scaled.decode(palette)
        else:
            with ctx():
                enc = model.encode(image)
                out = model.decode(enc, palette)
        loss_sum += float(composite_loss(out.float(), palette, targets, loss_weights, loss=loss)["total"])
        batches += 1
        images += image.shape[0]
        for task in tasks:
            if task not in targets:
                continue
            label = targets[task]
            valid = _valid(task, label)
            if rule == "S":
                value = get_task(task).palette_value
                if scaled is not None:
                    o = scaled.decode(torch.full_like(palette, value))
                else:
                    with ctx():
                        o = model.decode(enc, torch.full_like(palette, value))
                region = None  # the whole image
            else:
                o = out
                region = palette == get_task(task).palette_value
                valid = valid & region
                if not valid.any():  # the rule asks for this task nowhere here: not scored
                    continue
                region = region.cpu().numpy()
            pred = decode_task(o.float(), task, valid)
            meters.update(task, pred.label.cpu(), label.cpu(), valid.cpu())
            decoded, truth = _store_layout(task, pred, label, upscale)
            effort.update_batch(task, decoded, truth, region)
            # a broken model's NaN output has no confidence (a fine-tune's check must score it)
            conf = torch.nan_to_num(pred.confidence, nan=0.0)
            confidence.update(task, conf, right_mask(task, decoded, truth), pred.valid)
        if progress is not None:
            progress(i + 1, total)
    results = meters.compute()
    return {"loss": loss_sum / max(batches, 1), "metrics": results, "primary": primary(results),
            "images": images, "rule": rule, "effort": effort.compute(),
            "confidence": confidence.compute()}  # fmt: skip


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
             workers: int = 0, precision: str = "fp32", progress=None, scale="none") -> dict:  # fmt: skip
    """Evaluate on a data spec (``synthetic:seed=K,n=N``, ``pascal-mt:ROOT``: its val split
    unless the spec names one, a store: the images with corrections or ground truth
    unless the spec says ``select: all``). Images of different sizes are batched by size.
    A store whose stored palettes were made under another rule than ``rule`` is refused
    (they would be scored instead of the rule's); rule S and S:<task> pass."""
    from composite_tasking.device import pick_autocast_dtype, pick_device

    from .data import build_dataset, check_palettes, ordered_loader

    dev = pick_device(device)
    palette_net = model.config.kind == "palette"
    if palette_net and (rule == "S" or rule.startswith("S:")):
        raise ValueError("a palette network is scored against the palettes of a rule: give the "
                         "rule it predicts (e.g. --rule R2), not S")  # fmt: skip
    dataset = build_dataset(data, "mosaic" if rule == "S" else rule, None, default_split="val")
    check_palettes(dataset, rule, purpose="score")
    loader = ordered_loader(dataset, batch_size, workers)
    model = model.to(dev).to(memory_format=torch.channels_last)
    autocast = pick_autocast_dtype(precision, dev)
    if palette_net:  # palette mIoU against the rule's palettes (section 6.2)
        with torch.inference_mode():
            result = evaluate_palette_loader(model, loader, dev, autocast, progress=progress)
        return {**result, "rule": rule}
    result = evaluate_loader(model, loader, dev, rule, autocast, progress=progress, scale=scale)
    from composite_tasking.scale import parse_scale

    return {**result, "scale": str(parse_scale(scale))}
