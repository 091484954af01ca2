"""Breaking the rule (paper section 6.4, Table 3) on the synthetic world.

Evaluates a model under R3 and R2, fine-tunes it R2 -> R3 on N synthetic images, and
evaluates again; prints per-task metrics and Delta_m against the model before
fine-tuning (positive = better), and writes everything as JSON.

    .venv/bin/python scripts/paper/rule_transfer.py --model RUN_OR_CHECKPOINT --out runs/r2-r3 \
        [--n 200] [--eval-n 100] [--size 128] [--epochs 1]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from composite_tasking.inference import resolve_model
from composite_tasking.model import load_checkpoint
from composite_tasking.training.evaluate import evaluate
from composite_tasking.training.metrics import delta_m
from composite_tasking.training.recipe import builtin_recipe
from composite_tasking.training.trainer import Trainer


def _delta(model: dict, base: dict) -> float:
    """Delta_m over the tasks whose baseline is not 0 (a relative change needs one)."""
    tasks = [t for t in model if t in base and base[t]]
    return delta_m({t: model[t] for t in tasks}, {t: base[t] for t in tasks})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--n", type=int, default=200, help="fine-tuning images")
    ap.add_argument("--eval-n", type=int, default=100)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = f"synthetic:seed=424243,n={args.eval_n},size={args.size}"  # held out
    start = resolve_model(args.model)

    def ev(path, rule):
        model, _ = load_checkpoint(path)
        return evaluate(model, data, rule=rule, device=args.device, batch_size=8)

    t0 = time.perf_counter()
    before = {r: ev(start, r) for r in ("R3", "R2")}
    recipe = builtin_recipe("finetune", {
        "init": str(start), "rule": "R3", "epochs": args.epochs,
        "train": {"kind": "synthetic", "seed": 7, "n": args.n, "size": args.size}})  # fmt: skip
    t1 = time.perf_counter()
    trainer = Trainer(recipe, out / "finetune", device=args.device)
    trainer.fit()
    finetune_s = time.perf_counter() - t1
    tuned = out / "finetune" / f"epoch-{trainer.epoch:04d}" / "model"
    after = {r: ev(tuned, r) for r in ("R3", "R2")}
    result = {
        "model": str(start), "finetune_images": args.n, "epochs": args.epochs,
        "finetune_seconds": finetune_s, "total_seconds": time.perf_counter() - t0,
        "before": {r: v["primary"] for r, v in before.items()},
        "after": {r: v["primary"] for r, v in after.items()},
        "delta_m_R3": _delta(after["R3"]["primary"], before["R3"]["primary"]),
        "delta_m_R2": _delta(after["R2"]["primary"], before["R2"]["primary"]),
    }  # fmt: skip
    (out / "rule_transfer.json").write_text(json.dumps(result, indent=2))
    for rule in ("R3", "R2"):
        print(f"rule {rule}:")
        for task, v in before[rule]["primary"].items():
            print(f"  {task:<9} before {v:7.2f}   after {after[rule]['primary'].get(task, float('nan')):7.2f}")
        print(f"  Delta_m after vs before: {result[f'delta_m_{rule}']:+.2f}%")
    print(f"fine-tuning on {args.n} images: {finetune_s:.0f} s; JSON in {out / 'rule_transfer.json'}")


if __name__ == "__main__":
    main()
