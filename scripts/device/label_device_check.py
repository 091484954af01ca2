"""Checks of ``ctn label``'s device path that the CPU test suite cannot make: run on a
GPU machine before its benchmark (``scripts/device/gpu_label.sh``), or on a CPU as a dry run.

1. Batches in flight: ``Predictor.start_batch`` on three batches, then their results in
   order: each equals ``predict_batch`` of that batch alone (on CUDA the outputs come back
   through pinned buffers while later batches compute; none may be overwritten); on a
   machine with several GPUs, on the last one too (its events and copies must wait on
   that GPU's stream, not GPU 0's).
2. ``label_images`` on a folder of JPEGs, pipelined with writer processes (one batch in
   flight, shared memory) against one step after another: the same images, palettes and
   labels (float maps within 1e-4; on a GPU two runs need not be bit-identical).
3. No shared memory of the writer processes is left afterwards.

    python scripts/device/label_device_check.py [--device cuda] [--images 48] [--size 96]

Prints one line per check and exits 1 at the first failure.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--images", type=int, default=48)
    ap.add_argument("--size", type=int, default=96)
    args = ap.parse_args(argv)

    import imageio.v3 as iio
    import numpy as np

    from composite_tasking.inference import Predictor
    from composite_tasking.label import label_images
    from composite_tasking.palette import MosaicRule
    from composite_tasking.store import LabelStore
    from composite_tasking.synthetic import generate

    predictor = Predictor("default", device=args.device)
    print(f"device {predictor.device}, precision {predictor.precision}", flush=True)
    size = (args.size, args.size + 32)

    # 1. batches in flight
    batches = [[generate(11, 4 * b + i, size)["image"] for i in range(4)] for b in range(3)]
    palettes = [[MosaicRule().palette(size, rng=4 * b + i) for i in range(4)] for b in range(3)]
    import torch

    predictors = [predictor]
    if predictor.device.type == "cuda" and torch.cuda.device_count() > 1:
        predictors.append(Predictor("default", device=f"cuda:{torch.cuda.device_count() - 1}"))
    for pred in predictors:
        started = [pred.start_batch(im, pa, decode=False) for im, pa in zip(batches, palettes)]
        for b, pending in enumerate(started):
            got = pending.result()
            alone = pred.predict_batch(batches[b], palettes[b], decode=False)
            for (p1, o1), (p2, o2) in zip(got, alone):
                if not np.array_equal(p1, p2) or not np.allclose(o1, o2, rtol=1e-4, atol=1e-4):
                    print(f"FAIL 1: on {pred.device}, batch {b}'s result differs from predicting it alone "
                          f"(max |diff| {np.abs(o1 - o2).max():.3g})")  # fmt: skip
                    return 1
        print(f"ok 1: three batches in flight on {pred.device} give what each gives alone", flush=True)

    # 2. label_images, pipelined with writer processes vs one step after another
    with tempfile.TemporaryDirectory(prefix="ctn-label-check-") as tmp:
        tmp = Path(tmp)
        folder = tmp / "images"
        folder.mkdir()
        for i in range(args.images):
            iio.imwrite(folder / f"im-{i:03d}.jpg", generate(12, i, size)["image"], quality=90)
        runs = {}
        for name, kw in (("sequential", dict(pipeline=False)),
                         ("pipelined", dict(pipeline=True, writer_processes=True, writers=4))):  # fmt: skip
            t0 = time.perf_counter()
            summary = label_images([folder], tmp / f"{name}.zarr", rule="mosaic", model=predictor,
                                   batch_size=4, preview=None, **kw)  # fmt: skip
            runs[name] = summary
            t = summary.timings
            print(f"   {name}: {len(summary.done)} images in {time.perf_counter() - t0:.1f} s; labelling thread "
                  + ", ".join(f"{k} {t[k]:.2f}" for k in ("read", "palette", "predict", "wait", "hand", "finish"))
                  + f" s; writers busy {t['writers_busy']:.2f} s", flush=True)  # fmt: skip
            if len(summary.done) != args.images or summary.failed:
                print(f"FAIL 2: {name}: {len(summary.done)} done, failed {summary.failed}")
                return 1
        a, b = LabelStore(runs["sequential"].store), LabelStore(runs["pipelined"].store)
        for image_id in a.ids():
            sa, sb = a.read_sample(image_id), b.read_sample(image_id)
            if sorted(sa.labels) != sorted(sb.labels) or not np.array_equal(sa.palette, sb.palette) \
                    or not np.array_equal(sa.image, sb.image):
                print(f"FAIL 2: {image_id}: other tasks, palette or image")
                return 1
            for k, la in sa.labels.items():
                lb = sb.labels[k]
                agree = np.mean(np.isclose(la, lb, atol=1e-4) if la.dtype.kind == "f" else la == lb)
                if agree < 0.999:
                    print(f"FAIL 2: {image_id}/{k}: only {agree:.4f} of the pixels agree")
                    return 1
            for k, ma in sa.maps.items():
                if not np.allclose(ma, sb.maps[k], rtol=1e-4, atol=1e-4, equal_nan=True):
                    print(f"FAIL 2: {image_id}/maps/{k} differs")
                    return 1
        print(f"ok 2: {args.images} images pipelined (writer processes, shared memory) = one step after another",
              flush=True)  # fmt: skip

    # 3. shared memory removed
    shm = Path("/dev/shm")
    left = sorted(p.name for p in shm.glob("ctn-label-*")) if shm.is_dir() else []
    if left:
        print(f"FAIL 3: shared memory left: {left[:5]}")
        return 1
    print("ok 3: no shared memory left", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
