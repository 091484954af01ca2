"""Predicting at the scale the model knows: large images with ``--scale auto`` against
``none`` (every pixel), and against the same scenes at the model's own size.

    python benchmarks/run.py --only scale [--device cuda] [--quick]

The same synthetic scenes (seed 5, the held-out seed of docs/results.md) are rendered
at 256 pixels (the bundled CTN's training size) and at 768 and 1024 pixels: the same
objects, three and four times larger. For each size and scale:

- the metrics of ``ctn evaluate --rule S`` (every task everywhere, the paper's Table 1
  protocol), computed at the size the scenes were rendered at (the labels are brought
  back to full resolution before scoring); ratio: to the 256-pixel result, and the
  notes give the difference in points (normals: degrees);
- the time to predict one image under a four-task mosaic palette (the labelling cost:
  encoder, decoder, bringing the labels back to full size, decoding them): the first
  4 scenes of each size predicted in turns (round-robin: one warm-up round, then 3
  timed rounds; the median round over 4), so that other work on the machine slows
  every case alike; ratio: to the 256-pixel time.

Then ``ctn label`` (the real command, in a subprocess, one image) on a 3000 x 2000 JPEG
of a synthetic scene with ``--scale auto`` (run before and after, the mean) and with
``--scale none``: seconds of the whole command (ratio: to none). ``--quick``: 2 scenes, 384 pixels for the large size,
a 600 x 900 photo, no ``none`` run at full size (a smoke run, not a measurement).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._registry import Context, Row, benchmark, time_round_robin  # noqa: E402

TASKS = ("semseg", "parts", "edges", "saliency", "normals")
UNITS = {"semseg": "mIoU %", "parts": "mIoU %", "edges": "odsF %", "saliency": "max mIoU %", "normals": "deg"}


def _photo_run(path: Path, scale: str, device: str, out: Path) -> float:
    cmd = [sys.executable, "-m", "composite_tasking.cli", "label", str(path), "--out", str(out),
           "--rule", "mosaic", "--device", device, "--scale", scale, "--no-preview"]  # fmt: skip
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    seconds = time.perf_counter() - t0
    if res.returncode != 0:
        raise RuntimeError(f"ctn label --scale {scale} failed: {res.stderr[-1000:]}")
    return seconds


@benchmark("scale", order=27, ratio_to="the 256-pixel scenes (metrics, time), --scale none (photo)")
def scale(ctx: Context):
    """Large images at the working resolution (--scale auto) against every pixel."""
    import numpy as np
    from PIL import Image

    from composite_tasking.inference import Predictor, resolve_model
    from composite_tasking.model import load_checkpoint
    from composite_tasking.palette import load_rule
    from composite_tasking.synthetic import generate
    from composite_tasking.training.evaluate import evaluate

    n = 2 if ctx.quick else 12
    sizes = (384,) if ctx.quick else (768, 1024)
    configs = [(256, "none")] + [(s, "auto") for s in sizes] + ([] if ctx.quick else [(768, "none")])
    model, _ = load_checkpoint(resolve_model("default"))
    mosaic = load_rule("mosaic")
    results, cases = {}, []
    timed = 2 if ctx.quick else 4
    for size, mode in configs:
        print(f"  scale: {n} scenes at {size} px, --scale {mode}", file=sys.stderr)
        res = evaluate(model, f"synthetic:seed=5,n={n},size={size}", rule="S", device=ctx.device,
                       batch_size=4, scale=mode)  # fmt: skip
        results[(size, mode)] = res["primary"]
        predictor = Predictor(model, device=ctx.device, scale=mode)
        images = [generate(5, i, size)["image"] for i in range(timed)]
        palettes = [mosaic.palette((size, size), rng=np.random.default_rng(i)) for i in range(timed)]

        def case(predictor=predictor, images=images, palettes=palettes):
            for im, pal in zip(images, palettes):
                predictor.predict(im, pal)

        cases.append(case)
    print(f"  scale: timing {len(cases)} cases in turns", file=sys.stderr)
    rounds = time_round_robin(cases, ctx, warmup=1, rounds=1 if ctx.quick else 3)
    seconds = {c: statistics.median(t) / 1e3 / timed for c, t in zip(configs, rounds)}
    base = results[(256, "none")]
    for (size, mode), prim in results.items():
        t = seconds[(size, mode)]
        yield Row("scale", f"{size} px, --scale {mode}: predict an image (mosaic palette)", t, "s",
                  ratio=t / seconds[(256, "none")], digits=3,
                  extra={"size": size, "scale": mode, "scenes": n})  # fmt: skip
        for task in TASKS:
            v, b = prim[task], base[task]
            yield Row("scale", f"{size} px, --scale {mode}: {task}", v, UNITS[task], ratio=v / b,
                      notes=f"{v - b:+.1f} vs 256 px", extra={"size": size, "scale": mode, "task": task,
                                                               "base": b})  # fmt: skip

    h, w = (600, 900) if ctx.quick else (2000, 3000)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        photo = tmp / f"photo-{w}x{h}.jpg"
        Image.fromarray(generate(5, 0, (h, w))["image"]).save(photo, quality=92)
        runs: dict[str, list[float]] = {}
        for k, mode in enumerate(("auto",) if ctx.quick else ("auto", "none", "auto")):
            print(f"  scale: ctn label a {w} x {h} JPEG, --scale {mode}", file=sys.stderr)
            runs.setdefault(mode, []).append(_photo_run(photo, mode, ctx.device, tmp / f"{mode}-{k}.zarr"))
        runs = {mode: statistics.mean(t) for mode, t in runs.items()}
        for mode, t in runs.items():
            yield Row("scale", f"ctn label, one {w} x {h} JPEG, --scale {mode}", t, "s",
                      ratio=t / runs["none"] if "none" in runs else None, digits=1,
                      notes="whole command (start-up, model load, write)",
                      extra={"photo": [h, w], "scale": mode})  # fmt: skip


if __name__ == "__main__":
    from benchmarks.run import main

    raise SystemExit(main(["--only", "scale", *sys.argv[1:]]))
