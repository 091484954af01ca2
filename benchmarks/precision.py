"""bf16 autocast against float32 in the Predictor: time, and how much the labels differ.

    python benchmarks/run.py --only precision [--device cuda] [--quick]

The bundled model (``default``) predicts the bundled sample scenes under the R1r mosaic
(each image gets the four-task mosaic its id draws, so every task is covered) with
``Predictor(precision="fp32")`` and ``Predictor(precision="bf16")`` on the same device,
channels-last, batch 1, encoder features not cached. Where bf16 is not native (a CPU
without avx512_bf16 / amx_bf16) the bf16 rows are left out: the Predictor would fall
back to float32 there.

Rows: the time per image of each precision (ratio: to float32); then, per task, how
the bf16 labels differ from the float32 ones on the pixels the palette gives the task:
the share of pixels whose class (semseg, parts) or 0/1 label (edges, saliency, at 0.5)
differs, the largest probability difference, and the mean and 99th-percentile angle
between the normals. These are the numbers docs/benchmarks.md quotes for the CPU bf16
path; they depend on the model (the bundled one) and on the images.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._registry import Context, Row, benchmark, time_round_robin  # noqa: E402


def label_differences(a, b) -> dict[str, dict[str, float]]:
    """Per task of two :class:`~composite_tasking.inference.Prediction` of one image and
    palette: share of differing labels, max probability difference, normal angles."""
    import numpy as np

    from composite_tasking.tasks import get_task

    out = {}
    for name, ta in a.tasks.items():
        tb = b.tasks[name]
        asked = a.palette == get_task(name).palette_value
        d = {"pixels": int(asked.sum())}
        if ta.label.ndim == 3:  # normals: unit vectors
            cos = np.clip((ta.label[asked] * tb.label[asked]).sum(-1), -1.0, 1.0)
            ang = np.degrees(np.arccos(cos))
            d["mean_deg"] = float(ang.mean())
            d["p99_deg"] = float(np.percentile(ang, 99))
        else:
            d["label_diff"] = float((ta.label[asked] != tb.label[asked]).mean())
        if ta.prob is not None:
            d["prob_max_diff"] = float(np.abs(ta.prob[asked] - tb.prob[asked]).max())
        out[name] = d
    return out


@benchmark("precision", order=26, ratio_to="float32, same device (time rows)")
def precision(ctx: Context):
    """Predictor float32 vs bf16 autocast: time per image and label differences."""
    from composite_tasking.device import native_bf16
    from composite_tasking.images import read_image
    from composite_tasking.inference import Predictor
    from composite_tasking.palette import MosaicRule
    from composite_tasking.samples import sample_paths

    if not native_bf16(ctx.device):
        yield Row("precision", "bf16 not native on this device", None, "", notes="rows left out")
        return
    images = [read_image(p) for p in sample_paths()[: 2 if ctx.quick else None]]
    preds = {p: Predictor("default", device=ctx.device, precision=p) for p in ("fp32", "bf16")}
    rule = MosaicRule()
    palettes = [rule.palette(im.shape[:2], rng=i) for i, im in enumerate(images)]

    def run(p):
        return [preds[p].predict(im, pal) for im, pal in zip(images, palettes)]

    rounds = 1 if ctx.quick else 3
    times = time_round_robin([lambda: run("fp32"), lambda: run("bf16")], ctx, 1, rounds, 60.0)
    per_image = [statistics.median(t) / len(images) for t in times]
    h, w = images[0].shape[:2]
    for p, t in zip(("fp32", "bf16"), per_image):
        yield Row("precision", f"predict {h}x{w}, {p}", t, "ms", ratio=t / per_image[0], digits=1,
                  notes=f"{len(images)} sample scenes, R1r mosaic, bundled model; {rounds} rounds")  # fmt: skip
    a, b = run("fp32"), run("bf16")
    diffs: dict[str, list[dict]] = {}
    for pa, pb in zip(a, b):
        for name, d in label_differences(pa, pb).items():
            diffs.setdefault(name, []).append(d)
    for name, ds in diffs.items():
        px = sum(d["pixels"] for d in ds)
        if "mean_deg" in ds[0]:
            mean = sum(d["mean_deg"] * d["pixels"] for d in ds) / px
            p99 = max(d["p99_deg"] for d in ds)
            yield Row("precision", f"{name}: bf16 vs fp32 normals", mean, "deg", digits=3,
                      notes=f"mean angle over {px} px; worst image's 99th percentile {p99:.3f} deg")  # fmt: skip
            continue
        share = sum(d["label_diff"] * d["pixels"] for d in ds) / px
        notes = f"{px} px asked"
        if "prob_max_diff" in ds[0]:
            notes += f"; max probability difference {max(d['prob_max_diff'] for d in ds):.4f}"
        yield Row("precision", f"{name}: bf16 labels differing from fp32", 100 * share, "%",
                  digits=3, notes=notes, extra={"per_image": ds})  # fmt: skip
    del preds
