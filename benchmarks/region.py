"""Compute only what the palette asks for: region-limited decoding and palette strokes.

    python benchmarks/run.py --only region,stroke [--device cuda] [--quick]

Both use the paper's CTN (ResNet-34, random weights: time does not depend on them),
channels-last, eval mode, ``torch.inference_mode``, float32, batch 1, one 512 x 512
image (256 x 256 with ``--quick``). Cases take turns (round-robin) so that other load
on the machine hits them alike; each row is a median.

``region``: a forward pass (encode + decode) with the plain decoder (every pixel) against
the same pass decoding only the region the palette asks for
(``decode(..., region="palette")``, :mod:`composite_tasking.model.region`), for palettes
covering 100%, 50%, 20% and 5% of the image (an R1r mosaic inside a centred square, no
task outside). The ratio is region / plain at the same coverage. The target (issue:
"compute only what the palette asks for") is a time within 1.5x of proportional to the
covered area plus its halo, taken here as the square grown by 8 px on each side (one
stride-8 cell; the stride-1 halo is 3 px): at 20% coverage <= 0.34.

``stroke``: the interactive case of the plugin, in the core (no napari): a 64 x 64
palette stroke near the middle of a 512 x 512 image, off the 32 px grid (the worse
case), under an R1r mosaic, then :meth:`Predictor.repredict` (cached encoder features;
decodes only the box the stroke can reach, ``change_box``, and the labels there) against a full
:meth:`Predictor.predict` of the same image (encode, decode, labels; the reference). A
full predict on cached features is shown too. Each case then updates napari Labels /
Image layers with the result as the plugin does (``update_task_layer``: only changed
pixels written; layers without a viewer, so drawing is not included; left out when
napari is not installed); calls alternate between the two palettes so that every call
changes the layers. Target: the stroke costs <= 25% of the full predict.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._registry import Context, Row, benchmark, time_round_robin  # noqa: E402

COVERAGES = (1.0, 0.5, 0.2, 0.05)
#: the halo counted with the covered area for the target (px each side)
TARGET_HALO = 8


def _model(ctx: Context):
    import torch

    from composite_tasking.model import build_model

    torch.manual_seed(ctx.seed)
    return build_model("ctn-resnet34", pretrained=False).to(ctx.device).eval().to(
        memory_format=torch.channels_last
    )


def _square_palette(size: int, coverage: float, seed: int):
    """An R1r mosaic inside a centred square covering ``coverage`` of the image."""
    import numpy as np

    from composite_tasking.palette import MosaicRule

    side = max(1, round(size * coverage**0.5))
    y0 = (size - side) // 2
    pal = np.zeros((size, size), np.uint8)
    pal[y0 : y0 + side, y0 : y0 + side] = MosaicRule().palette((side, side), rng=seed)
    grown = min(size, side + 2 * TARGET_HALO) ** 2 / size**2
    return pal, side, grown


@benchmark("region", order=27, ratio_to="plain forward (every pixel), same coverage")
def region(ctx: Context):
    """Forward time, plain vs region-limited decoding, by palette coverage."""
    import torch

    from composite_tasking.model.base import pad_to_stride
    from composite_tasking.model.region import windows_for_region

    size = 256 if ctx.quick else 512
    rounds = 1 if ctx.quick else 5
    budget = 15.0 if ctx.quick else 90.0
    dev = torch.device(ctx.device)
    model = _model(ctx)
    gen = torch.Generator().manual_seed(ctx.seed)
    image = torch.rand((1, 3, size, size), generator=gen).to(dev)
    image = image.contiguous(memory_format=torch.channels_last)
    cases, info = [], []
    for cov in COVERAGES:
        pal, side, grown = _square_palette(size, cov, ctx.seed)
        p = torch.from_numpy(pal).long()[None].to(dev)
        wins = windows_for_region(pad_to_stride(p) > 0)
        decoded = sum(w.area for w in wins) / (size * size)
        info.append((cov, side, grown, decoded))
        cases.append(lambda p=p: model(image, p))
        cases.append(lambda p=p: model.decode(model.encode(image), p, region="palette"))
    with torch.inference_mode():
        times = time_round_robin(cases, ctx, 1, rounds, budget)
    medians = [statistics.median(t) for t in times]
    for i, (cov, side, grown, decoded) in enumerate(info):
        plain, fast = medians[2 * i], medians[2 * i + 1]
        target = min(1.0, grown) * 1.5
        name = f"{size}x{size}, {100 * cov:g}% covered ({side}x{side})"
        extra = {"size": size, "coverage": cov, "side": side, "decoded_share": decoded}
        yield Row("region", f"{name}, plain", plain, "ms", ratio=1.0, digits=1,
                  notes=f"{len(times[2 * i])} rounds", extra={**extra, "times_ms": times[2 * i]})  # fmt: skip
        ok = "meets" if fast / plain <= target else "MISSES"
        yield Row("region", f"{name}, region", fast, "ms", ratio=fast / plain, digits=1,
                  notes=(f"windows {100 * decoded:.0f}% of the image; {ok} the target "
                         f"<= {target:.2f}"),
                  extra={**extra, "target": target, "times_ms": times[2 * i + 1]})  # fmt: skip
    del model


@benchmark("stroke", order=28,
           ratio_to="full predict of the same image (encode, decode, labels, layer update)")
def stroke(ctx: Context):
    """A 64 x 64 palette stroke: re-predict only what it reaches vs a full predict."""
    import numpy as np
    import torch

    from composite_tasking.inference import Predictor
    from composite_tasking.model.region import change_box
    from composite_tasking.palette import MosaicRule

    size = 256 if ctx.quick else 512
    rounds = 1 if ctx.quick else 5
    budget = 15.0 if ctx.quick else 60.0
    predictor = Predictor(_model(ctx), device=ctx.device, precision="fp32", tile=max(1024, size))
    rgb = np.random.default_rng(ctx.seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    pal = MosaicRule().palette((size, size), rng=ctx.seed)
    y0 = size // 2 - 16  # off the stride-32 grid: the stroke touches 3 x 3 cells
    edited = pal.copy()
    edited[y0 : y0 + 64, y0 : y0 + 64] = pal[y0, y0] % 5 + 1  # another task there
    before = predictor.predict(rgb, pal, key="bench")
    changed = torch.from_numpy(edited != pal)
    box = change_box(changed, predictor.model.decoder)
    share = box.area / size**2

    try:  # the layers the plugin shows (napari layers work without a viewer)
        from composite_tasking._napari.task_layers import new_task_layer, task_planes, update_task_layer
    except ImportError:  # napari not installed: the core alone
        new_task_layer = None
    layers = {}
    if new_task_layer is not None:
        both = predictor.predict(rgb, edited)  # every task of either palette gets a layer
        for pr in (before, both):
            for task, role, data in task_planes(pr, thresholded=True):
                if (task, role) not in layers:
                    layers[task, role] = new_task_layer(data, task=task, role=role, key="bench",
                                                        name=f"{task}-{role}")  # fmt: skip

    def show(prediction):
        for task, role, data in task_planes(prediction, thresholded=True):
            update_task_layer(layers[task, role], data)
        return prediction

    def toggling(step):
        """Each call goes from the current palette to the other one (so every call
        really changes the layers), through ``step(target palette, current prediction)``."""
        state = {"pal": pal, "pred": before}

        def fn():
            target = edited if state["pal"] is pal else pal
            pr = step(target, state["pred"])
            if layers:
                show(pr)
            state["pal"], state["pred"] = target, pr

        return fn

    shown = " + layer update" if layers else ""
    cases = [
        (f"full predict (encode + decode + labels){shown}", toggling(lambda t, _: predictor.predict(rgb, t)), ""),
        (f"full predict on cached features{shown}",
         toggling(lambda t, _: predictor.predict(rgb, t, key="bench")), "decode + labels"),
        (f"re-predict after a 64x64 stroke{shown}",
         toggling(lambda t, prev: predictor.repredict(rgb, t, prev, key="bench")),
         f"cached features; decodes the box the stroke reaches ({box.y1 - box.y0}x{box.x1 - box.x0}, "
         f"{100 * share:.0f}% of the image)"),
    ]  # fmt: skip
    times = time_round_robin([fn for _, fn, _ in cases], ctx, 1, rounds, budget)
    medians = [statistics.median(t) for t in times]
    for (name, _, notes), med, ts in zip(cases, medians, times):
        ratio = med / medians[0]
        if name.startswith("re-predict"):
            notes += f"; {'meets' if ratio <= 0.25 else 'MISSES'} the target <= 0.25"
        yield Row("stroke", f"{size}x{size} R1r mosaic, {name}", med, "ms", ratio=ratio,
                  digits=1, notes=notes.strip("; "), extra={"size": size, "times_ms": ts})  # fmt: skip
    del predictor
