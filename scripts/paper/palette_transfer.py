"""How many edited palettes teach the palette network a new rule (paper section 6.3-6.4).

A user corrects R2 palettes into R3 palettes on a few images and fine-tunes the palette
network on them (the plugin's Fine-tune widget does this with a store's edited
palettes); how many such images does it take? For each N, the palette network (trained
on R2) is fine-tuned on the R3 palettes of N synthetic scenes (the same number of
training steps for every N, built-in ``finetune`` recipe: Adam 1e-4 decoder / 1e-5
encoder), then evaluated on held-out scenes: palette mIoU under R3 (the new rule) and
under R2 (what it forgets). Prints a table and writes JSON.

    .venv/bin/python scripts/paper/palette_transfer.py --model palette --out runs/palette-r3 \
        [--n 0 4 16 64] [--steps 60] [--eval-n 100] [--size 128]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

from composite_tasking.training.data import build_dataset, collate
from composite_tasking.training.evaluate import evaluate_palette_loader
from composite_tasking.training.recipe import builtin_recipe
from composite_tasking.training.trainer import Trainer

from composite_tasking.device import pick_device
from composite_tasking.inference import resolve_model
from composite_tasking.model import load_checkpoint


def palette_miou(path: Path, data: str, rule: str, device: str) -> float:
    import torch

    model, _ = load_checkpoint(path)
    dev = pick_device(device)
    loader = torch.utils.data.DataLoader(build_dataset(data, rule), batch_size=8, collate_fn=collate)
    model = model.to(dev).to(memory_format=torch.channels_last)
    with torch.inference_mode():
        return float(evaluate_palette_loader(model, loader, dev)["primary"]["palette"])  # percent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="palette", help="palette network ('palette' = the bundled one)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--n", type=int, nargs="+", default=[0, 4, 16, 64], help="edited images")
    ap.add_argument("--steps", type=int, default=60, help="fine-tuning steps of 8 images, any N")
    ap.add_argument("--eval-n", type=int, default=100)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = resolve_model(args.model)
    data = f"synthetic:seed=424244,n={args.eval_n},size={args.size}"  # held out
    rows = []
    for n in args.n:
        t0 = time.perf_counter()
        path = start
        if n > 0:
            batch = min(8, n)
            steps_per_epoch = math.ceil(n / batch)
            recipe = builtin_recipe("finetune", {
                "init": str(start), "rule": "R3", "batch_size": batch, "workers": 0,
                "epochs": math.ceil(args.steps / steps_per_epoch),
                "train": {"kind": "synthetic", "seed": 7, "n": n, "size": args.size}})  # fmt: skip
            trainer = Trainer(recipe, out / f"n{n}", device=args.device)
            trainer.fit()
            path = out / f"n{n}" / f"epoch-{trainer.epoch:04d}" / "model"
        row = {"n": n, "R3": palette_miou(path, data, "R3", args.device),
               "R2": palette_miou(path, data, "R2", args.device),
               "seconds": time.perf_counter() - t0}  # fmt: skip
        rows.append(row)
        print(f"N={n:4d}: palette mIoU R3 {row['R3']:.2f}%, R2 {row['R2']:.2f}% "
              f"({row['seconds']:.0f} s)", flush=True)  # fmt: skip
    result = {"model": str(start), "steps": args.steps, "eval": data, "rows": rows}
    (out / "palette_transfer.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    print("\n| edited images | palette mIoU R3 | palette mIoU R2 |\n|---:|---:|---:|")
    for r in rows:
        print(f"| {r['n']} | {r['R3']:.2f}% | {r['R2']:.2f}% |")


if __name__ == "__main__":
    main()
