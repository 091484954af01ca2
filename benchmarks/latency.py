"""Parameters, FLOPs and forward latency of predicting the five tasks on one image:
CTN vs the MHN and STN baselines (the comparison of the paper's Figure 5).

    python benchmarks/run.py --only latency [--device cuda] [--quick]

One RGB image, batch 1, at 256 x 256 and 512 x 512 (128 x 128 only with ``--quick``);
models (ResNet-34 encoders) with random weights (time and FLOPs do not depend on the
weights) in eval mode under ``torch.inference_mode``, NCHW tensors.

Rows, in this order:

- **params** (unit ``params``, once): the parameters of the CTN, the MHN and the STN
  for the five tasks, from :func:`benchmarks.params.split_parameters` (the ``params``
  benchmark has the full split); ratio to the CTN.
- then, per size, **ms**: each case's median wall time (on CUDA after
  ``torch.cuda.synchronize``); ratio to the CTN's composite pass with the R1r mosaic
  palette *at the same size*;
- and **GFLOP**: the FLOPs of one call of each case, counted with
  ``torch.utils.flop_counter.FlopCounterMode`` on the real tensors (the palette-aware
  conditioning depends on the palette's values, so the count follows the palette).
  That counter sums convolutions and matrix products (``mm``, ``addmm``, ``bmm``, ...)
  only, one multiply-add = 2 FLOPs; elementwise ops (BatchNorm, activations, the
  modulation ``gamma * x + beta``), interpolation, pooling and gathers are not counted,
  though they take time. Ratio to the same CTN composite pass, in GFLOP, same size.

The CTN decodes with the palette-aware ("fast") conditioning,
``CompositeTaskingNet.fast_conditioning = True``, its default: the conditioning MLP
runs on the K+1 table rows and on the pyramid cells that mix tasks, and every other
cell gathers its gamma and beta. The FLOPs are those of what runs; one more GFLOP row
gives the plain conditioning (``fast_conditioning = False``: the 1x1 MLP at every pixel
of every level, the same count for any palette), which is higher. Only the FLOPs of
the plain path are counted, not its time (the ``conditioning`` benchmark times both).

Cases:

- CTN, one composite pass: ``model(image, palette)`` with an R1r mosaic palette; the
  reference of the ratio column. The same pass with an Rrnd palette (all five tasks,
  one per pixel at random: every pyramid cell above stride 1 mixes tasks, the fast
  conditioning's worst case).
- CTN, five S passes sharing one encoding: ``encode`` once, then ``decode`` with the
  palette S:<task> for each task -- every task everywhere, what the feature cache gives.
- CTN, five full S passes: encoding again for each task (no cache).
- MHN: ``encode`` once, then each of the five task heads (``decode`` with S:<task>).
- STN: the five single-task networks (``encode`` runs the five encoders, then each
  task's decoder).
- CTN encoder only and decoder only: where the time of one composite pass goes.

Timing: at each size, the FLOP-counting call of every case is also its warm-up; then
the cases are timed in turns (round-robin), so that other load on the machine hits them
alike: up to 5 rounds at 256 x 256 and 3 at 512 x 512 (at least 1), fewer when the next
round would overrun the size's time budget (45 s and 110 s of timed rounds); the notes
say how many rounds each median is of; ``--quick``: 1 round. On a quiet 2-core CPU a
round takes ~5 s at 256 x 256 and ~20 s at 512 x 512, so the default run should take
~2-3 min with every round; on the same CPU at load 3-5 it took 5 min with 1 round per
size (the FLOP-counting calls and the first round cannot be cut).

The composite pass answers a different question from the others: it predicts each task
only where the palette asks for it, which is what CompositeTasking is for; the others
predict every task everywhere.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._registry import Context, Row, benchmark, time_round_robin  # noqa: E402
from benchmarks.params import split_parameters  # noqa: E402

#: image sizes (square) of a full run and of ``--quick``
SIZES = (256, 512)
QUICK_SIZES = (128,)
#: most timed rounds per size (default 5) and the time budget of the timed rounds (s)
MAX_ROUNDS = {512: 3}
BUDGET_S = {256: 45.0, 512: 110.0}
#: the models compared: kind -> preset
PRESETS = {"CTN": "ctn-resnet34", "MHN": "mhn-resnet34", "STN": "stn-resnet34"}

REF = "CTN, 1 composite pass, R1r mosaic palette"


def count_flops(fn) -> int:
    """FLOPs of one call of ``fn`` as ``FlopCounterMode`` counts them (convolutions and
    matrix products only; one multiply-add = 2 FLOPs)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        fn()
    return int(fc.get_total_flops())


def _m(n: int) -> str:
    return f"{n / 1e6:.2f} M"


def _param_notes(kind: str, p: dict[str, int], k: int) -> str:
    if kind == "CTN":
        return (f"encoder {_m(p['encoder'])} + task MLP {_m(p['task_mlp'])} + decoder "
                f"{_m(p['decoder'])}: one network for all {k} tasks")  # fmt: skip
    n_enc = k if kind == "STN" else 1
    enc = f"{k} x {_m(p['encoder'] // k)}" if n_enc > 1 else _m(p["encoder"])
    return f"encoder {enc} + decoders {k} x {_m(p['decoder'] // k)}"


@benchmark("latency", order=20,
           ratio_to="per unit: params -> the CTN; ms and GFLOP -> the CTN's one composite "
                    "pass with the R1r mosaic palette at the same image size")  # fmt: skip
def latency(ctx: Context):
    """Params, FLOPs and latency, five tasks on one image: CTN composite / 5 S passes, MHN, STN."""
    import torch

    from composite_tasking.model import build_model
    from composite_tasking.palette import MosaicRule, RandomRule, SingleTaskRule
    from composite_tasking.tasks import TASK_NAMES

    sizes = QUICK_SIZES if ctx.quick else SIZES
    dev = torch.device(ctx.device)

    def build(preset):
        torch.manual_seed(ctx.seed)
        return build_model(preset, pretrained=False).to(dev).eval()

    models = {kind: build(preset) for kind, preset in PRESETS.items()}
    ctn, mhn, stn = models["CTN"], models["MHN"], models["STN"]

    # ---- parameters (do not depend on the size)
    split = {kind: split_parameters(m) for kind, m in models.items()}
    for kind, p in split.items():
        k = len(models[kind].config.tasks)
        yield Row("latency", f"{kind}: parameters", p["total"], "params",
                  ratio=p["total"] / split["CTN"]["total"], notes=_param_notes(kind, p, k),
                  digits=0, extra={"preset": PRESETS[kind], "model": kind, **p})  # fmt: skip

    for size in sizes:
        gen = torch.Generator().manual_seed(ctx.seed)
        image = torch.rand((1, 3, size, size), generator=gen).to(dev)

        def pal(rule, size=size) -> torch.Tensor:
            p = rule.palette((size, size), rng=ctx.seed)
            return torch.from_numpy(p).long().unsqueeze(0).to(dev)

        mosaic, rnd = pal(MosaicRule()), pal(RandomRule())
        singles = [pal(SingleTaskRule(t)) for t in TASK_NAMES]
        k = len(singles)

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
        # (name, model kind, callable, notes)
        cases = [
            (REF, "CTN", lambda: ctn(image, mosaic),
             f"{len(torch.unique(mosaic))} tasks, each in its quadrant"),
            ("CTN, 1 composite pass, Rrnd palette", "CTN", lambda: ctn(image, rnd),
             f"{len(torch.unique(rnd))} tasks, one per pixel at random"),
            (f"CTN, {k} S passes sharing 1 encoding", "CTN", ctn_shared,
             f"encode once, decode {k}x: every task everywhere"),
            (f"CTN, {k} full S passes", "CTN", lambda: [ctn(image, p) for p in singles],
             f"encode + decode {k}x (no feature cache)"),
            (f"MHN, 1 encoding + {k} heads", "MHN", mhn_all, f"shared encoder, {k} plain decoders"),
            (f"STN, {k} networks", "STN", stn_all, f"{k} encoders + {k} decoders"),
            ("CTN, encoder only", "CTN", lambda: ctn.encode(image), "part of a composite pass"),
            ("CTN, decoder only (1 palette)", "CTN", lambda: ctn.decode(ctn_encoded, mosaic),
             "part of a composite pass: what a cached encoding leaves"),
        ]  # fmt: skip

        # FLOPs of one call of each case; the counting call is also the case's warm-up
        with torch.inference_mode():
            flops = [count_flops(fn) for _, _, fn, _ in cases]
            ctx.sync()
            ctn.fast_conditioning = False
            try:
                plain_flops = count_flops(cases[0][2])
            finally:
                del ctn.fast_conditioning  # back to the class default
            rounds = 1 if ctx.quick else MAX_ROUNDS.get(size, 5)
            budget = None if ctx.quick else BUDGET_S.get(size)
            times = time_round_robin([fn for _, _, fn, _ in cases], ctx, 0, rounds, budget)
        del ctn_encoded

        pre = f"{size}x{size}: "
        medians = [statistics.median(t) for t in times]
        for (case, kind, _, notes), median, ts, f in zip(cases, medians, times, flops):
            n = len(ts)
            yield Row("latency", pre + case, median, "ms", ratio=median / medians[0], digits=1,
                      notes=f"{notes}; median of {n} round{'s' if n != 1 else ''}",
                      extra={"size": size, "batch": 1, "model": kind, "warmup": 1,
                             "times_ms": ts, "flops": f})  # fmt: skip
        for i, ((case, kind, _, _), f) in enumerate(zip(cases, flops)):
            note = f"{f / 1e9 * 1e3 / max(medians[i], 1e-9):.1f} GFLOP/s achieved"
            if i < 2:
                note = (f"palette-aware conditioning, what runs (plain path: "
                        f"{plain_flops / 1e9:.2f} GFLOP); " + note)  # fmt: skip
            yield Row("latency", pre + case, f / 1e9, "GFLOP", ratio=f / flops[0], digits=2,
                      notes=note,
                      extra={"size": size, "model": kind, "flops": f,
                             "conditioning": "fast" if kind == "CTN" and "encoder only" not in case
                             else None})  # fmt: skip
        yield Row("latency", pre + "CTN, 1 composite pass, plain conditioning", plain_flops / 1e9,
                  "GFLOP", ratio=plain_flops / flops[0], digits=2,
                  notes="fast_conditioning = False: 1x1 MLP at every pixel of every level, "
                        "any palette (FLOPs only, not timed)",
                  extra={"size": size, "model": "CTN", "flops": plain_flops,
                         "conditioning": "plain"})  # fmt: skip
    del ctn, mhn, stn, models


if __name__ == "__main__":
    from benchmarks.run import main

    sys.exit(main(["--only", "latency", *sys.argv[1:]]))
