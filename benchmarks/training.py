"""Training throughput: images/s of the Trainer, float32 against bf16 autocast.

    python benchmarks/run.py --only training [--device cuda] [--quick]

The real :class:`~composite_tasking.training.trainer.Trainer` on the recipe of the
bundled model (``ctn-synthetic-cpu``: ResNet-18 CTN, 128 x 128 synthetic scenes made on
the fly, R1r mosaic palettes, augmentation, batch 8, AdamW, gradient clipping) for one
epoch of a few steps, once with ``precision: fp32`` and once with ``bf16`` (where the
device has native bf16: CPUs with avx512_bf16 / amx_bf16, GPUs with bf16), no
validation. On CUDA the GPU recipe (``ctn-synthetic``: ResNet-34 at 256 x 256, batch 32,
its 12 data workers) is measured too. The value is the Trainer's own images/s of the epoch (data making and
loading included, checkpoint writing and BatchNorm recalibration excluded); the ratio
is over float32 of the same recipe. ``--quick``: 64 x 64 scenes, 3 steps.

This is what planning a training run needs: how many images an hour of this machine
trains (the bundled model: 4 epochs x 2,000 images in about 4 hours of a busy 2-core
CPU, docs/results.md).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._registry import Context, Row, benchmark  # noqa: E402


def _images_per_s(recipe_name: str, precision: str, ctx: Context, size: int, steps: int) -> tuple[float, int, int]:
    """(images/s, batch size, data workers) of one epoch of ``steps`` steps."""
    from composite_tasking.training.recipe import builtin_recipe
    from composite_tasking.training.trainer import Trainer

    base = builtin_recipe(recipe_name)
    # on the CPU one worker (the model needs the cores); on CUDA the recipe's workers,
    # as a GPU run uses them
    workers = 0 if ctx.quick else (base.workers if ctx.device.startswith("cuda") else 1)
    recipe = builtin_recipe(recipe_name, {
        "epochs": 1, "max_steps_per_epoch": steps, "val": None, "precision": precision,
        "workers": workers, "bn_recalibration_batches": 0,
        "train": {"kind": "synthetic", "seed": ctx.seed, "n": 10_000, "size": size},
    })  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="ctn-bench-train-") as tmp:
        trainer = Trainer(recipe, Path(tmp) / "run", device=ctx.device)
        history = trainer.fit()
    return float(history[-1]["images_per_s"]), int(recipe.batch_size), workers


@benchmark("training", order=40, ratio_to="float32, same recipe and device")
def training(ctx: Context):
    """Trainer images/s, float32 vs bf16 autocast (recipe of the bundled model)."""
    from composite_tasking.device import native_bf16

    cases = [("ctn-synthetic-cpu", 64 if ctx.quick else 128, 3 if ctx.quick else 12)]
    if ctx.device.startswith("cuda") and not ctx.quick:
        cases.append(("ctn-synthetic", 256, 30))
    precisions = ("fp32", "bf16") if native_bf16(ctx.device) else ("fp32",)
    for name, size, steps in cases:
        ref = None
        for prec in precisions:
            ips, batch, workers = _images_per_s(name, prec, ctx, size, steps)
            ref = ref or ips
            yield Row("training", f"{name} ({size}x{size}, batch {batch}), {prec}", ips, "images/s",
                      ratio=ips / ref, digits=2,
                      notes=f"1 epoch of {steps} steps, {workers} data worker(s); "
                            f"images/h {ips * 3600:,.0f}",
                      extra={"recipe": name, "size": size, "steps": steps, "precision": prec})  # fmt: skip
