"""Decode time of the CTN with plain vs palette-aware ("fast") conditioning.

    python benchmarks/run.py --only conditioning [--device cuda] [--quick]
    python benchmarks/conditioning.py [--quick] [--device cuda]

The CTN (ResNet-34, random weights: time does not depend on them) decodes one cached
encoding under a palette, batch 1, in eval mode under ``torch.inference_mode``, with the
model and the image channels-last (as the Predictor runs it). Cases, at 256 x 256 and
512 x 512 (128 x 128 with ``--quick``):

- palettes: ``S:semseg`` (one task everywhere), the R1r mosaic (a few big regions),
  R2 on the exact semantic labels of a synthetic scene (object-shaped regions), and
  Rrnd (a task per pixel at random: every cell above stride 1 mixes tasks);
- precisions: float32, and bf16 autocast where the device has native bf16 (CPUs with
  avx512_bf16 / amx_bf16, see ``composite_tasking.device.cpu_has_bf16``; otherwise
  the bf16 rows are left out, as the Predictor would fall back to float32);
- paths: ``plain`` (``CompositeTaskingNet.fast_conditioning = False``: the 1x1
  conditioning MLP on the embedding at every pixel of every level) and ``fast``;
- at the first size, the mosaic also with contiguous (NCHW) tensors, to show what
  channels-last gives (not with ``--quick``).

The ratio column is each case's median over the median of the plain float32 case of
the same size and palette (same layout), all measured in this run; the notes give the
fast path's gain over the plain path at the same precision, and the share of pyramid
cells that still run the MLP (cells mixing tasks, all levels together). The cases take
turns (round-robin; one warm-up round at the first size), so that other load hits them
alike; the number of rounds (up to 5, at least 1) is cut to keep the run within its time
budget (~2 min, ``--quick`` ~15 s), so on a busy machine a median may be of 1 round.
"""

from __future__ import annotations

import os
import statistics
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._registry import Context, Row, benchmark, time_round_robin  # noqa: E402

PALETTES = ("S:semseg", "R1r mosaic", "R2 (synthetic scene)", "Rrnd random")


def _palettes(size: int, seed: int):
    import numpy as np
    import torch

    from composite_tasking.palette import MosaicRule, RandomRule, SingleTaskRule, load_rule
    from composite_tasking.synthetic import generate

    sem = generate(seed, 0, size)["semseg"]
    arrays = [
        SingleTaskRule("semseg").palette((size, size)),
        MosaicRule().palette((size, size), rng=seed),
        load_rule("R2").palette(semantics=sem),
        RandomRule().palette((size, size), rng=seed),
    ]
    return [torch.from_numpy(np.ascontiguousarray(a)).long()[None] for a in arrays]


def _mixed_share(model, palette) -> tuple[float, list[int]]:
    """Share of pyramid cells (all levels) that mix tasks, and the count per level."""
    from composite_tasking.model.base import pad_to_stride

    maps = model.pure_maps(pad_to_stride(palette))
    counts = [m.num_mixed for m in maps]
    return sum(counts) / sum(m.index.numel() for m in maps), counts


@benchmark("conditioning", order=25,
           ratio_to="the plain path, float32, same size, palette and layout")  # fmt: skip
def conditioning(ctx: Context):
    """CTN decode time, plain vs palette-aware conditioning, float32 and bf16."""
    import torch

    from composite_tasking.device import native_bf16
    from composite_tasking.model import build_model

    sizes = (128,) if ctx.quick else (256, 512)
    budgets = {128: 12.0} if ctx.quick else {256: 40.0, 512: 65.0}  # seconds
    max_rounds = 1 if ctx.quick else 5
    dev = torch.device(ctx.device)
    bf16 = native_bf16(ctx.device)
    precisions = ("fp32", "bf16") if bf16 else ("fp32",)

    torch.manual_seed(ctx.seed)
    nchw = build_model("ctn-resnet34", pretrained=False).to(dev).eval()
    cl = build_model("ctn-resnet34", pretrained=False).to(dev).eval()
    cl.load_state_dict(nchw.state_dict())
    cl = cl.to(memory_format=torch.channels_last)

    def autocast(prec):
        return torch.autocast(dev.type, dtype=torch.bfloat16, enabled=prec == "bf16")

    for si, size in enumerate(sizes):
        gen = torch.Generator().manual_seed(ctx.seed)
        image = torch.rand((1, 3, size, size), generator=gen).to(dev)
        palettes = [p.to(dev) for p in _palettes(size, ctx.seed)]
        layouts = {"channels_last": (cl, image.contiguous(memory_format=torch.channels_last))}
        if si == 0 and not ctx.quick:
            layouts["NCHW"] = (nchw, image)
        enc = {}
        with torch.inference_mode():
            for lay, (model, img) in layouts.items():
                for prec in precisions:
                    with autocast(prec):
                        enc[lay, prec] = model.encode(img)
        shares = [_mixed_share(cl, p) for p in palettes]

        cases = []  # (layout, palette index, precision, path)
        for lay in layouts:
            pals = range(len(palettes)) if lay == "channels_last" else [1]  # NCHW: mosaic
            cases += [(lay, pi, prec, path) for pi in pals for prec in precisions
                      for path in ("plain", "fast")]  # fmt: skip

        def make(lay, pi, prec, path):
            model = layouts[lay][0]
            e, p, fast = enc[lay, prec], palettes[pi], path == "fast"

            def fn():
                model.fast_conditioning = fast
                with autocast(prec):
                    return model.decode(e, p)

            return fn

        with torch.inference_mode():
            times = time_round_robin([make(*c) for c in cases], ctx, int(si == 0), max_rounds, budgets[size])
        for model, _ in layouts.values():
            model.__dict__.pop("fast_conditioning", None)  # back to the class default
        medians = {c: statistics.median(t) for c, t in zip(cases, times)}
        try:
            load = f"; load avg {os.getloadavg()[0]:.2f}"
        except (AttributeError, OSError):
            load = ""
        for c, ts in zip(cases, times):
            lay, pi, prec, path = c
            ref = medians[lay, pi, "fp32", "plain"]
            share, counts = shares[pi]
            notes = f"{len(ts)} round{'s' if len(ts) != 1 else ''}{load}"
            if path == "fast":
                gain = medians[lay, pi, prec, "plain"] / medians[c]
                notes = (f"speed-up {gain:.2f}x over plain {prec}; "
                         f"MLP on {100 * share:.1f}% of cells; {notes}")  # fmt: skip
            name = f"{size}x{size} {PALETTES[pi]}, {prec}, {path}"
            if lay == "NCHW":
                name += ", NCHW"
            yield Row("conditioning", name, medians[c], "ms", ratio=medians[c] / ref, digits=1,
                      notes=notes,
                      extra={"size": size, "palette": PALETTES[pi], "precision": prec,
                             "path": path, "layout": lay, "times_ms": ts,
                             "mixed_cells_per_level": counts})  # fmt: skip
    del nchw, cl


if __name__ == "__main__":
    import argparse

    import torch

    from benchmarks._registry import available_threads, format_table, machine_info, machine_line

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    args = ap.parse_args()
    ctx = Context(device=args.device, quick=args.quick, threads=available_threads())
    torch.set_num_threads(ctx.threads)
    print(machine_line(machine_info(ctx)) + "\n")
    print(format_table(list(conditioning(ctx))))
