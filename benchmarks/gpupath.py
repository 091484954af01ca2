"""What each step of the GPU path gives: precision, memory format, CUDA graphs, compile, copies.

    python benchmarks/run.py --only gpupath [--device cuda] [--quick]
    python benchmarks/run.py --only compile --device cuda     # torch.compile, separately

A random ResNet-34 CTN (``torch.manual_seed(0)``) in eval mode under
``torch.inference_mode``, one batch of images with R1r mosaic palettes: 4 images of
512 x 512 on CUDA (``ctn label``'s batch), 1 image of 256 x 256 on the CPU, 1 of
128 x 128 with ``--quick``. Each case is the model forward on inputs already on the
device, timed in turns (round-robin, median of the rounds), ratio to the first case:

1. float32, NCHW tensors (the plain PyTorch baseline);
2. float32, channels_last;
3. bf16 autocast, NCHW;
4. bf16 autocast, channels_last: the :class:`~composite_tasking.inference.Predictor`
   with ``precision="bf16"`` (its default on GPUs until this benchmark showed that bf16
   does not pay there: the default is float32 + channels_last, case 2); where the device
   has no native bf16 rows 3-5 are left out;
5. the same with the plain conditioning (``fast_conditioning = False``): no
   palette-dependent shapes, the form that CUDA graphs and ``torch.compile`` can take
   whole;
6. (CUDA) case 5 captured once as a CUDA graph and replayed (``torch.cuda.CUDAGraph``;
   inputs copied into the captured buffers each time, which is timed): what launch
   overhead costs;
7. host copies, which overlap could hide: the batch's uint8 images host -> device
   from pageable and from pinned memory, and the float32 output device -> host.

Every fast case is checked against the float32 output of case 1 (max abs difference,
in the notes): bf16 cases differ by bf16 rounding, the graph replay must equal its
eager form (case 5) exactly.

``compile`` (a benchmark of its own, CUDA only, because compiling takes minutes): case
5 through ``torch.compile`` (default mode); the first call's seconds (compilation) and
the median of the calls after it.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._registry import Context, Row, benchmark, time_round_robin  # noqa: E402

NAME = "gpupath"


def _setup(ctx: Context):
    """(model, images float32 NCHW, palettes, size, batch) on the device."""
    import torch

    from composite_tasking.model import build_model
    from composite_tasking.palette import MosaicRule

    cuda = ctx.device.startswith("cuda")
    size, batch = (128, 1) if ctx.quick else ((512, 4) if cuda else (256, 1))
    torch.manual_seed(ctx.seed)
    model = build_model("ctn-resnet34", pretrained=False).to(ctx.device).eval()
    gen = torch.Generator().manual_seed(ctx.seed)
    images = torch.rand((batch, 3, size, size), generator=gen).to(ctx.device)
    pals = torch.stack([torch.from_numpy(MosaicRule().palette((size, size), rng=ctx.seed + i)).long()
                        for i in range(batch)]).to(ctx.device)  # fmt: skip
    return model, images, pals, size, batch


def _maxdiff(a, b) -> float:
    return float((a.float() - b.float()).abs().max())


@benchmark(NAME, order=28, ratio_to="float32 NCHW forward, same batch (ms rows)")
def gpupath(ctx: Context):
    """Forward ms: fp32 / channels_last / bf16 / plain conditioning / CUDA graph; host copies."""
    import contextlib
    import copy

    import torch

    from composite_tasking.device import native_bf16

    cuda = ctx.device.startswith("cuda")
    model, images, pals, size, batch = _setup(ctx)
    cl = images.contiguous(memory_format=torch.channels_last)
    bf16 = native_bf16(ctx.device)

    # the same weights in both memory formats
    model_cl = copy.deepcopy(model).to(memory_format=torch.channels_last)

    def run(x, fast=True, dtype=None, memory=torch.contiguous_format):
        m = model_cl if memory == torch.channels_last else model
        m.fast_conditioning = fast
        ac = torch.autocast(x.device.type, dtype=dtype) if dtype else contextlib.nullcontext()
        with ac:
            return m(x, pals)

    # (case, callable, notes)
    cases = [
        ("float32, NCHW", lambda: run(images), "plain PyTorch"),
        ("float32, channels_last", lambda: run(cl, memory=torch.channels_last), ""),
    ]
    if bf16:
        cases += [
            ("bf16 autocast, NCHW", lambda: run(images, dtype=torch.bfloat16), ""),
            ("bf16 autocast, channels_last", lambda: run(cl, dtype=torch.bfloat16, memory=torch.channels_last),
             "the Predictor with precision bf16"),
            ("bf16 autocast, channels_last, plain conditioning",
             lambda: run(cl, fast=False, dtype=torch.bfloat16, memory=torch.channels_last),
             "static shapes (graphable)"),
        ]  # fmt: skip
    rounds = 1 if ctx.quick else (20 if cuda else 3)
    budget = 10.0 if ctx.quick else (60.0 if cuda else 120.0)
    with torch.inference_mode():
        outs = [fn() for _, fn, _ in cases]  # warm-up, and the outputs compared below
        ctx.sync()
        times = time_round_robin([fn for _, fn, _ in cases], ctx, 1, rounds, budget)
        ref = outs[0]
        diffs = [_maxdiff(o, ref) for o in outs]
    medians = [statistics.median(t) for t in times]
    pre = f"{size}x{size}, batch {batch}: "
    for i, ((case, _, note), med, ts) in enumerate(zip(cases, medians, times)):
        notes = [note] if note else []
        if i:
            notes.append(f"max |diff| to float32 NCHW {diffs[i]:.2g}")
        notes.append(f"{batch * 1e3 / med:.1f} images/s; median of {len(ts)}")
        yield Row(NAME, pre + case, med, "ms", ratio=med / medians[0], digits=2, notes="; ".join(notes),
                  extra={"size": size, "batch": batch, "times_ms": ts, "max_abs_diff": diffs[i]})  # fmt: skip
    case = "bf16 autocast, channels_last, plain conditioning, CUDA graph replay"
    if not (cuda and bf16):
        yield Row(NAME, pre + case, None, "ms", notes="CUDA only")
    else:  # captured last: a failed capture cannot disturb the cases above
        with torch.inference_mode():
            try:
                replay, graph_out = _cuda_graph(model_cl, cl, pals)
                replay()
                ctx.sync()
                graph_times = time_round_robin([replay], ctx, 1, rounds, budget)[0]
                row = None
            except Exception as e:  # capture needs a forward without host syncs
                row = Row(NAME, pre + case, None, "ms",
                          notes=f"capture failed: {type(e).__name__}: {str(e)[:160]}")  # fmt: skip
        if row is None:
            med = statistics.median(graph_times)
            eager_plain = outs[4]
            row = Row(NAME, pre + case, med, "ms", ratio=med / medians[0], digits=2,
                      notes=f"input copied into the graph's buffer each call; max |diff| to "
                            f"float32 NCHW {_maxdiff(graph_out, ref):.2g}, to its eager form "
                            f"{_maxdiff(graph_out, eager_plain):.2g}; {batch * 1e3 / med:.1f} "
                            f"images/s; median of {len(graph_times)}",
                      extra={"size": size, "batch": batch, "times_ms": graph_times})  # fmt: skip
        yield row
    model_cl.fast_conditioning = model.fast_conditioning = True
    yield from _copies(ctx, ref, pre, batch, size)


def _cuda_graph(model, x, pals):
    """Capture the bf16 plain-conditioning forward of ``model`` (channels_last);
    (replay, output)."""
    import torch

    model.fast_conditioning = False
    static_x, static_p = x.clone(), pals.clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm-up on a side stream, as torch's docs ask
        for _ in range(3):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                model(static_x, static_p)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            static_out = model(static_x, static_p)

    def replay():
        static_x.copy_(x)
        graph.replay()
        return static_out

    return replay, static_out


def _copies(ctx: Context, out, pre: str, batch: int, size: int):
    import numpy as np
    import torch

    if not ctx.device.startswith("cuda"):
        yield Row(NAME, pre + "host <-> device copies", None, "ms", notes="CUDA only")
        return
    host = torch.from_numpy(np.random.default_rng(0).integers(0, 255, (batch, size, size, 3), np.uint8))
    pinned = host.pin_memory()
    out_host = torch.empty(out.shape, dtype=out.dtype).pin_memory()
    cases = [
        ("images host -> device, pageable", lambda: host.to(ctx.device)),
        ("images host -> device, pinned", lambda: pinned.to(ctx.device, non_blocking=True)),
        ("output device -> host, pinned", lambda: out_host.copy_(out, non_blocking=True)),
        ("output device -> host, pageable", lambda: out.cpu()),
    ]
    times = time_round_robin([fn for _, fn in cases], ctx, 2, 1 if ctx.quick else 20, 20.0)
    for (case, _), ts in zip(cases, times):
        nbytes = host.numel() if "images" in case else out.numel() * out.element_size()
        med = statistics.median(ts)
        yield Row(NAME, pre + case, med, "ms", digits=3,
                  notes=f"{nbytes / 2**20:.1f} MiB, {nbytes / med / 1e6:.1f} GB/s; median of {len(ts)}",
                  extra={"bytes": nbytes, "times_ms": ts})  # fmt: skip


@benchmark("compile", order=29, ratio_to="the same forward, eager (bf16, channels_last, plain conditioning)")
def compile_(ctx: Context):
    """torch.compile of the graphable forward: compile seconds, then ms per call (CUDA)."""
    import torch

    if not ctx.device.startswith("cuda"):
        yield Row("compile", "torch.compile", None, "ms", notes="CUDA only (minutes of compiling on a CPU)")
        return
    model, images, pals, size, batch = _setup(ctx)
    model.to(memory_format=torch.channels_last)
    model.fast_conditioning = False
    x = images.contiguous(memory_format=torch.channels_last)

    def eager():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            return model(x, pals)

    compiled_model = torch.compile(model)

    def compiled():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            return compiled_model(x, pals)

    pre = f"{size}x{size}, batch {batch}: "
    with torch.inference_mode():
        ref = eager()
        ctx.sync()
        t0 = time.perf_counter()
        try:
            out = compiled()
            ctx.sync()
        except Exception as e:
            yield Row("compile", pre + "torch.compile", None, "s",
                      notes=f"failed: {type(e).__name__}: {str(e)[:200]}")  # fmt: skip
            return
        first = time.perf_counter() - t0
        diff = _maxdiff(out, ref)
        times = time_round_robin([eager, compiled], ctx, 2, 3 if ctx.quick else 20, 60.0)
    med = [statistics.median(t) for t in times]
    yield Row("compile", pre + "first compiled call (compiling)", first, "s", digits=1,
              notes="torch.compile default mode")  # fmt: skip
    yield Row("compile", pre + "eager", med[0], "ms", ratio=1.0, digits=2,
              notes=f"median of {len(times[0])}", extra={"times_ms": times[0]})
    yield Row("compile", pre + "compiled", med[1], "ms", ratio=med[1] / med[0], digits=2,
              notes=f"max |diff| to eager {diff:.2g}; median of {len(times[1])}",
              extra={"times_ms": times[1], "max_abs_diff": diff})  # fmt: skip


if __name__ == "__main__":
    from benchmarks.run import main

    sys.exit(main(["--only", NAME, *sys.argv[1:]]))
