"""Forward latency of predicting the five tasks on one image: CTN vs MHN and STN.

    python benchmarks/run.py --only latency [--device cuda] [--quick]

One RGB image, batch 1, 256 x 256 (128 x 128 with ``--quick``); models with random
weights (time does not depend on the weights) in eval mode under
``torch.inference_mode``. Every case is warmed up, then the cases are timed in turns
(round-robin, ``repeats`` rounds), so that other load on the machine hits them alike;
the table shows each case's median wall time in ms (on CUDA after
``torch.cuda.synchronize``).

Cases:

- CTN, one composite pass: ``model(image, palette)`` with an R1r mosaic palette; the
  reference of the ratio column. The same pass with an Rrnd palette (all five tasks,
  one per pixel at random) shows that the cost does not depend on the palette.
- CTN, five S passes sharing one encoding: ``encode`` once, then ``decode`` with the
  palette S:<task> for each task -- every task everywhere, what the feature cache gives.
- CTN, five full S passes: encoding again for each task (no cache).
- MHN: ``encode`` once, then each of the five task heads (``decode`` with S:<task>).
- STN: the five single-task networks (``encode`` runs the five encoders, then each
  task's decoder).
- CTN encoder only and decoder only: where the time of one composite pass goes.

The composite pass answers a different question from the others: it predicts each task
only where the palette asks for it, which is what CompositeTasking is for.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._registry import Context, Row, benchmark, time_round_robin  # noqa: E402


@benchmark("latency", order=20, ratio_to="CTN one composite pass (R1r mosaic palette)")
def latency(ctx: Context):
    """Forward latency, five tasks on one image: CTN composite / 5 S passes, MHN, STN."""
    import torch

    from composite_tasking.model import build_model
    from composite_tasking.palette import MosaicRule, RandomRule, SingleTaskRule
    from composite_tasking.tasks import TASK_NAMES

    size = 128 if ctx.quick else 256
    warmup, repeats = (1, 1) if ctx.quick else (1, 5)
    dev = torch.device(ctx.device)
    gen = torch.Generator().manual_seed(ctx.seed)
    image = torch.rand((1, 3, size, size), generator=gen).to(dev)

    def pal(rule) -> torch.Tensor:
        p = rule.palette((size, size), rng=ctx.seed)
        return torch.from_numpy(p).long().unsqueeze(0).to(dev)

    mosaic, rnd = pal(MosaicRule()), pal(RandomRule())
    singles = [pal(SingleTaskRule(t)) for t in TASK_NAMES]
    k = len(singles)

    def build(preset):
        torch.manual_seed(ctx.seed)
        return build_model(preset, pretrained=False).to(dev).eval()

    ctn, mhn, stn = build("ctn-resnet34"), build("mhn-resnet34"), build("stn-resnet34")

    def ctn_shared():
        enc = ctn.encode(image)
        return [ctn.decode(enc, p) for p in singles]

    def mhn_all():
        enc = mhn.encode(image)
        return [mhn.decode(enc, p) for p in singles]

    def stn_all():
        enc = stn.encode(image)  # the k encoders
        return [stn.decode(enc, p) for p in singles]  # each task's own decoder

    with torch.inference_mode():
        ctn_encoded = ctn.encode(image)
    cases = [
        ("CTN, 1 composite pass, R1r mosaic palette", lambda: ctn(image, mosaic),
         f"{len(torch.unique(mosaic))} tasks, each in its quadrant"),
        ("CTN, 1 composite pass, Rrnd palette", lambda: ctn(image, rnd),
         f"{len(torch.unique(rnd))} tasks, one per pixel at random"),
        (f"CTN, {k} S passes sharing 1 encoding", ctn_shared,
         f"encode once, decode {k}x: every task everywhere"),
        (f"CTN, {k} full S passes", lambda: [ctn(image, p) for p in singles],
         f"encode + decode {k}x (no feature cache)"),
        (f"MHN, 1 encoding + {k} heads", mhn_all, f"shared encoder, {k} plain decoders"),
        (f"STN, {k} networks", stn_all, f"{k} encoders + {k} decoders"),
        ("CTN, encoder only", lambda: ctn.encode(image), "part of a composite pass"),
        ("CTN, decoder only (1 palette)", lambda: ctn.decode(ctn_encoded, mosaic),
         "part of a composite pass: what a cached encoding leaves"),
    ]  # fmt: skip
    with torch.inference_mode():
        times = time_round_robin([fn for _, fn, _ in cases], ctx, warmup, repeats)
    del ctn, mhn, stn

    medians = [statistics.median(t) for t in times]
    for (case, _, notes), median, ts in zip(cases, medians, times):
        yield Row("latency", case, median, "ms", ratio=median / medians[0], digits=1,
                  notes=f"{notes}; {size}x{size}, median of {repeats}",
                  extra={"size": size, "batch": 1, "warmup": warmup, "times_ms": ts})  # fmt: skip
