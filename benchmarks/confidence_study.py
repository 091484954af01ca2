"""Does the confidence predict errors? Per task, before and after the calibrated score.

    python benchmarks/confidence_study.py          # the table (~10 min on 2 CPU cores)
    python benchmarks/confidence_study.py --fit    # also fit CONFIDENCE_CALIBRATION on seed 5
    python benchmarks/confidence_study.py --rule mosaic --scenes 6

The bundled model (``default``) on held-out synthetic scenes (seeds 5 and 77, never used
for training; sizes 128 and 256). Under rule ``S`` (the default) every task is decoded
everywhere (one decode per task of one encoding); ``--rule mosaic`` (or any rule) decodes
once under that rule's palette and scores each task where it is asked.

Per task, seed and size: the error rate of the labels, then for the confidence before
(the old scores: ``1 - d1/d2``, ``|2p - 1|``, ``||o|| / (1 + ||o||)``) and after
(:func:`composite_tasking.tasks.confidence_from_score` of decode_task's score): the AUROC
of the confidence as a predictor of "the label is right"
(:func:`composite_tasking.effort.right_mask`), the share of pixels above 0.99 and the
expected calibration error (ECE, 10 bins); then the reliability table of the calibrated
confidence per seed.

``--fit`` fits the logistic map ``sigmoid(a + b * score)`` of each task (edges and
saliency: one per 0/1 label) by maximum likelihood on the seed-5 scenes (both sizes) and
prints the ``CONFIDENCE_CALIBRATION`` table to paste into tasks.py; the table printed
after it still uses the constants in tasks.py.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

SEEDS = (5, 77)
SIZES = (128, 256)


def old_confidence(task, output) -> np.ndarray:
    """The confidence before calibration (until 2026-12), from the output (1, 3, H, W)."""
    import torch

    out = output.float()
    if task.kind == "classes":
        from composite_tasking.tasks import _anchor_distances

        d = torch.topk(_anchor_distances(torch.sigmoid(out), task.anchors()), k=2, dim=1, largest=False).values
        return (1.0 - d[:, 0] / d[:, 1].clamp_min(1e-12))[0].numpy()
    if task.kind == "probability":
        return (2.0 * torch.sigmoid(out).mean(dim=1) - 1.0).abs()[0].numpy()
    norm = out.square().sum(dim=1).sqrt()
    return (norm / (1.0 + norm))[0].numpy()


def collect(model, seed: int, size: int, scenes: int, rule: str) -> dict:
    """Per task: score, 0/1 label (probability tasks), old confidence and right, at the
    scored pixels of ``scenes`` scenes."""
    import torch

    from composite_tasking.effort import right_mask, truth_valid
    from composite_tasking.palette import load_rule
    from composite_tasking.synthetic import generate
    from composite_tasking.tasks import TASKS, decode_task

    parts: dict[str, list] = {t.name: [] for t in TASKS}
    mixed = None if rule.upper() == "S" else load_rule(rule)
    for i in range(scenes):
        s = generate(seed, i, size)
        image = torch.from_numpy(np.ascontiguousarray(s["image"])).permute(2, 0, 1)[None].float() / 255.0
        with torch.inference_mode():
            features = model.encode(image)
            if mixed is not None:
                pal = torch.from_numpy(mixed.palette((size, size), rng=[seed, i]).astype(np.int64))[None]
                composite = model.decode(features, pal)
        for task in TASKS:
            if mixed is None:
                pal = torch.full((1, size, size), task.palette_value, dtype=torch.long)
                with torch.inference_mode():
                    output = model.decode(features, pal)
            else:
                output = composite
            asked = (pal == task.palette_value)[0].numpy()
            truth = s[task.name]
            scored = asked & truth_valid(task, truth)
            if not scored.any():
                continue
            pred = decode_task(output, task, calibrated=False)
            label = pred.label[0].numpy()
            if task.kind == "vector":
                label = label.transpose(1, 2, 0)
            elif task.kind == "probability":
                label = (label >= 0.5).astype(np.uint8)
            right = right_mask(task, label, truth)
            binary = label[scored] if task.kind == "probability" else None
            parts[task.name].append((pred.confidence[0].numpy()[scored], binary,
                                     old_confidence(task, output)[scored], right[scored]))  # fmt: skip
    return {name: tuple(None if p[0][k] is None else np.concatenate([x[k] for x in p]) for k in range(4))
            for name, p in parts.items() if p}  # fmt: skip


def fit_logistic(x: np.ndarray, y: np.ndarray, iters: int = 100) -> tuple[float, float]:
    """Maximum-likelihood (a, b) of P(y) = sigmoid(a + b x) (Newton's method)."""
    x = x.astype(np.float64)
    X = np.column_stack([np.ones_like(x), x])
    w = np.zeros(2)
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-(X @ w)))
        hess = X.T @ (X * (p * (1 - p) + 1e-12)[:, None]) + 1e-9 * np.eye(2)
        step = np.linalg.solve(hess, X.T @ (y - p))
        w += step
        if np.abs(step).max() < 1e-9:
            break
    return float(w[0]), float(w[1])


def fit(data: dict) -> dict[str, tuple[float, ...]]:
    """CONFIDENCE_CALIBRATION from the seed-5 data (both sizes)."""
    from composite_tasking.tasks import TASKS

    table = {}
    for task in TASKS:
        rows = [data[(5, size)][task.name] for size in SIZES if task.name in data[(5, size)]]
        score = np.concatenate([r[0] for r in rows])
        right = np.concatenate([r[3] for r in rows]).astype(np.float64)
        if task.kind == "probability":
            one = np.concatenate([r[1] for r in rows]).astype(bool)
            table[task.name] = fit_logistic(score[~one], right[~one]) + fit_logistic(score[one], right[one])
        else:
            table[task.name] = fit_logistic(score, right)
    return table


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenes", type=int, default=12, help="scenes per seed and size (default 12)")
    ap.add_argument("--rule", default="S", help="S (every task everywhere, default) or a rule, e.g. mosaic")
    ap.add_argument("--fit", action="store_true", help="fit the calibration on seed 5 and print it")
    ap.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    args = ap.parse_args(argv)

    import torch

    from composite_tasking.inference import resolve_model
    from composite_tasking.model import load_checkpoint
    from composite_tasking.tasks import TASKS, confidence_from_score
    from training.calibration import ConfidenceMeter

    torch.set_num_threads(max(1, min(torch.get_num_threads(), 2)))
    model, info = load_checkpoint(resolve_model("default"))
    t0 = time.perf_counter()
    data = {(seed, size): collect(model, seed, size, args.scenes, args.rule) for seed in SEEDS for size in args.sizes}
    print(f"model default (sha256 {info.sha256[:12]}), rule {args.rule}, {args.scenes} scenes per seed and size, "
          f"{time.perf_counter() - t0:.0f} s, torch {torch.__version__}, {torch.get_num_threads()} threads")  # fmt: skip
    if args.fit:
        if 5 not in SEEDS or not all((5, s) in data for s in SIZES):
            raise SystemExit("--fit needs seed 5 at sizes 128 and 256")
        print("\nCONFIDENCE_CALIBRATION = {")
        for name, c in fit(data).items():
            print(f"    {name!r}: ({', '.join(f'{v:.3f}' for v in c)}),")
        print("}")

    print("\n| task | seed | size | pixels | error % | AUROC before | AUROC after | >0.99 before | >0.99 after "
          "| ECE before | ECE after |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    pooled = {seed: ConfidenceMeter() for seed in SEEDS}
    for task in TASKS:
        for (seed, size), per_task in data.items():
            if task.name not in per_task:
                continue
            score, binary, old, right = per_task[task.name]
            new = confidence_from_score(task, score.astype(np.float32), binary)
            before, after = ConfidenceMeter(), ConfidenceMeter()
            before.update(task, old, right)
            after.update(task, new, right)
            pooled[seed].update(task, new, right)
            b, a = before.compute()[task.name], after.compute()[task.name]
            print(f"| {task.name} | {seed} | {size} | {right.size:,} | {100 * (1 - right.mean()):.1f} "
                  f"| {b['auroc']:.3f} | {a['auroc']:.3f} | {(old > 0.99).mean():.2f} | {(new > 0.99).mean():.2f} "
                  f"| {b['ece']:.3f} | {a['ece']:.3f} |")  # fmt: skip
    for seed, meter in pooled.items():
        print(f"\nreliability of the calibrated confidence, seed {seed} (sizes {', '.join(map(str, args.sizes))}): "
              "per bin of confidence, pixels / mean confidence / accuracy")  # fmt: skip
        print("| task | " + " | ".join(f"{k / 10:.1f}-{(k + 1) / 10:.1f}" for k in range(10)) + " |")
        print("|---" * 11 + "|")
        for name, res in meter.compute().items():
            cells = [f"{b['count']:,} / {b['confidence']:.2f} / {b['accuracy']:.2f}" if b["count"] else "-"
                     for b in res["reliability"]]  # fmt: skip
            print(f"| {name} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
