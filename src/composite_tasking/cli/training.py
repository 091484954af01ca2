"""The commands of models and data: ``ctn synth``, ``train``, ``finetune`` and ``evaluate``."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from .checks import EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, Usage, set_storage_options
from .progress import Bar, train_progress


def cmd_synth(args: argparse.Namespace) -> int:
    from ..store import StoreError
    from ..synthetic.export import write_synthetic

    bar = Bar("synth", "scene")
    try:
        summary = write_synthetic(args.out, args.n, args.size, args.seed, args.start, config=args.world,
                                  progress=bar)  # fmt: skip
    except KeyboardInterrupt:
        bar.close()
        print("interrupted; what was written is complete. Re-run the same command to continue.",
              file=sys.stderr)  # fmt: skip
        return 130
    except (StoreError, OSError) as e:
        bar.close()
        print(f"ctn synth: {e}", file=sys.stderr)
        return EXIT_USAGE
    bar.close()
    print(f"{summary.written} scene(s) written, {summary.skipped} already there: "
          f"images in {summary.out / 'images'}, ground truth in {summary.store}")  # fmt: skip
    return EXIT_OK


def _now() -> float:
    """The clock of ``--max-minutes`` (a function, so tests can run it fast)."""
    import time

    return time.monotonic()


def _run_training(recipe, out, resume, device, max_minutes: float | None = None) -> int:
    import json

    from composite_tasking.training.trainer import LATEST, Trainer, TrainingDiverged

    deadline = None if max_minutes is None else _now() + 60.0 * max_minutes
    out_of_time = False

    def should_stop() -> bool:
        nonlocal out_of_time
        out_of_time = deadline is not None and _now() >= deadline
        return out_of_time

    try:
        trainer = Trainer(recipe, out, resume=resume, device=device, progress=train_progress(),
                          should_stop=should_stop)  # fmt: skip
        if trainer.resume_changes:
            print(f"resuming {out}; recipe values changed since the run started: "
                  f"{'; '.join(trainer.resume_changes)}")  # fmt: skip
        trainer.fit()
    except TrainingDiverged as e:
        print(f"ctn: training stopped: {e}", file=sys.stderr)
        return EXIT_PARTIAL
    except KeyboardInterrupt:
        try:
            saved = json.loads((Path(out) / LATEST).read_text(encoding="utf-8"))["epoch"]
        except (OSError, ValueError, KeyError, TypeError):
            saved = None
        if saved:
            print(f"\ninterrupted; epoch {saved}, the last complete one, is saved in {out}: "
                  "continue with --resume", file=sys.stderr)  # fmt: skip
        else:
            print(f"\ninterrupted before the first epoch finished: nothing was saved in {out}",
                  file=sys.stderr)  # fmt: skip
        return 130
    newest = Path(out) / f"epoch-{trainer.epoch:04d}" / "model"
    if out_of_time and trainer.epoch < recipe.epochs:
        print(f"time limit of {max_minutes:g} min reached after {trainer.epoch} of {recipe.epochs} "
              f"epoch(s) (an unfinished epoch is dropped); newest model: {newest}; "
              f"continue with --resume")  # fmt: skip
        return EXIT_OK
    print(f"done: {trainer.epoch} epoch(s); newest model: {newest}")
    return EXIT_OK


def cmd_train(args: argparse.Namespace) -> int:
    from composite_tasking.datasets import DatasetError
    from composite_tasking.training.recipe import RecipeError, load_recipe

    from composite_tasking.training.recipe import parse_data_spec

    overrides = {}
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    try:
        if args.data is not None:  # the recipe's training data replaced (and a PASCAL-MT's val split)
            data = parse_data_spec(args.data, "train", "--data")
            overrides["train"] = data.to_dict()
            if data.kind == "pascal-mt":
                overrides["val"] = {**data.to_dict(), "split": "val"}
        recipe = load_recipe(args.config, overrides)
    except RecipeError as e:
        print(f"ctn train: {e}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return _run_training(recipe, args.out, args.resume, args.device, args.max_minutes)
    except (DatasetError, FileExistsError, FileNotFoundError, ValueError) as e:
        print(f"ctn train: {e}", file=sys.stderr)
        return EXIT_USAGE


def _data_arg(args: argparse.Namespace, split: str):
    """``--data`` (a PASCAL-MT spec without a split: ``split``) with ``--all-images``."""
    from dataclasses import replace

    from composite_tasking.training.recipe import RecipeError, parse_data_spec

    try:
        set_storage_options(args)
    except Usage as e:
        raise RecipeError(str(e)) from None
    data = parse_data_spec(args.data, split)
    if args.all_images:
        if data.kind != "store":
            raise RecipeError(f"--all-images chooses the images of a label store; --data "
                              f"{args.data} is not one")  # fmt: skip
        data = replace(data, select="all")
    return data


def cmd_finetune(args: argparse.Namespace) -> int:
    from composite_tasking.datasets import DatasetError
    from composite_tasking.model import CheckpointError
    from composite_tasking.training.recipe import RecipeError, builtin_recipe, load_recipe

    try:
        model = _model_path(args.model)
        data = _data_arg(args, "train")
        if not 0 <= args.holdout < 1:
            raise RecipeError(f"--holdout takes a share in [0, 1), got {args.holdout:g}")
        if data.kind == "store" and not args.resume:
            return _finetune_store(args, data)
        if args.palette_model is not None:
            raise RecipeError(f"--palette-model fine-tunes the palette network on the palettes of a label "
                              f"store; --data {args.data} is not one")  # fmt: skip
        if args.rule is None:
            raise RecipeError(f"--data {args.data}: give the rule to train under (--rule R2, R3, ...); "
                              "only a label store brings palettes of its own")  # fmt: skip
        overrides = {"init": str(model), "train": data.to_dict(), "rule": args.rule}
        if args.epochs is not None:
            overrides["epochs"] = args.epochs
        recipe = load_recipe(args.config, overrides) if args.config else builtin_recipe("finetune", overrides)
        return _run_training(recipe, args.out, args.resume, args.device, args.max_minutes)
    except (RecipeError, DatasetError, CheckpointError, FileExistsError, FileNotFoundError, ValueError) as e:
        print(f"ctn finetune: {e}", file=sys.stderr)
        return EXIT_USAGE


def _finetune_store(args: argparse.Namespace, data) -> int:
    """``ctn finetune --data STORE``: :func:`composite_tasking.training.finetune.finetune`
    (what a person checked, the held-out decision); exit 1 when a model was rolled back."""
    from tqdm import tqdm

    from composite_tasking.training.finetune import FinetuneCancelled, finetune

    deadline = None if args.max_minutes is None else _now() + 60.0 * args.max_minutes
    bars = train_progress()

    def progress(event: dict) -> None:
        if event.get("stage") == "start":
            tqdm.write(f"{event['network']}: fine-tuning on {event['images']} image(s) -> {event['out']}")
        elif event.get("stage") == "score":
            tqdm.write(f"{event['network']}: scoring {event['which']} fine-tuning on "
                       f"{event['images']} held-out image(s)")  # fmt: skip
        else:
            bars(event)

    def should_stop() -> bool:
        return deadline is not None and _now() >= deadline

    try:
        result = finetune(data.root, args.model, args.out, palette_model=args.palette_model, rule=args.rule,
                          select=data.select, holdout=args.holdout, epochs=args.epochs, config=args.config,
                          device=args.device, progress=progress, should_stop=should_stop)  # fmt: skip
    except FinetuneCancelled as e:
        why = f" at the time limit of {args.max_minutes:g} min" if deadline is not None else ""
        print(f"ctn finetune: {e}{why}; nothing was put in use", file=sys.stderr)
        return EXIT_PARTIAL
    except KeyboardInterrupt:
        print(f"\ninterrupted; nothing was put in use ({args.out} keeps any finished epoch)", file=sys.stderr)
        return 130
    print(result.summary())
    for network, run in result.runs.items():
        print(f"{network}: new model {run.checkpoint}" + ("" if run.accepted else " (rolled back, not in use)"))
    return EXIT_OK if result.accepted else EXIT_PARTIAL


def _model_path(spec: str) -> Path:
    from ..inference import resolve_model

    return resolve_model(spec)


def print_table(result: dict) -> None:
    from composite_tasking.training.metrics import PRIMARY

    print(f"rule {result['rule']}, {result['images']} image(s), loss {result['loss']:.4f}")
    print(f"{'task':<10} {'metric':<10} {'value':>9}   other metrics")
    for task, metrics in result["metrics"].items():
        key = PRIMARY.get(task, "mIoU")  # "palette": a palette network's palette mIoU
        others = ", ".join(f"{k} {v:.2f}" for k, v in metrics.items()
                           if k != key and isinstance(v, (int, float)))  # fmt: skip
        print(f"{task:<10} {key:<10} {metrics[key]:9.2f}   {others}")
    effort, confidence = result.get("effort") or {}, result.get("confidence") or {}
    if effort or confidence:  # a palette network has neither
        _print_effort(effort, confidence)


def _num(value, spec: str) -> str:
    """``value`` formatted by ``spec``, or "-" when it is missing or NaN (nothing scored)."""
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def _print_effort(effort: dict, confidence: dict) -> None:
    """The effort to correct each task to the truth against painting it from scratch
    (docs/effort.md), and whether its confidence finds the errors (AUROC, ECE)."""
    print()
    print("effort to correct (inside the palette) vs from scratch; confidence as an error finder")
    print(f"{'task':<10} {'changed %':>9} {'regions':>8} {'scratch regions':>16} {'AUROC':>7} {'ECE':>6}")
    for task in [t for t in effort if t != "mean"] + [t for t in confidence if t not in effort]:
        e, c = effort.get(task, {}), confidence.get(task, {})
        print(f"{task:<10} {_num(e.get('share'), '9.2f'):>9} {_num(e.get('regions'), '8.1f'):>8} "
              f"{_num(e.get('scratch_regions'), '16.1f'):>16} {_num(c.get('auroc'), '7.3f'):>7} "
              f"{_num(c.get('ece'), '6.3f'):>6}")  # fmt: skip
    if "mean" in effort:
        m = effort["mean"]
        print(f"{'mean':<10} {_num(m['share'], '9.2f'):>9} {_num(m['regions'], '8.1f'):>8} "
              f"{_num(m['scratch_regions'], '16.1f'):>16}")  # fmt: skip
    print("changed %: palette pixels whose label must change (from scratch: 100); regions: "
          "connected areas to repaint per image")  # fmt: skip


def cmd_evaluate(args: argparse.Namespace) -> int:
    import json

    from composite_tasking.datasets import DatasetError
    from composite_tasking.model import load_checkpoint
    from composite_tasking.model.checkpoint import CheckpointError, json_safe
    from composite_tasking.training.evaluate import evaluate
    from composite_tasking.training.recipe import RecipeError

    try:
        data = _data_arg(args, "val")
        model, info = load_checkpoint(_model_path(args.model))
        bar = None if args.json else Bar("evaluate", "batch")
        result = evaluate(model, data, rule=args.rule, device=args.device,
                          batch_size=args.batch_size, progress=bar, scale=args.scale)  # fmt: skip
        if bar is not None:
            bar.close()
    except (CheckpointError, RecipeError, DatasetError, FileNotFoundError, ValueError) as e:
        print(f"ctn evaluate: {e}", file=sys.stderr)
        return EXIT_USAGE
    result["model"] = {"path": str(info.path), "sha256": info.sha256}
    if args.json:
        print(json.dumps(json_safe(result), indent=2, allow_nan=False))
    else:
        print_table(result)
    return EXIT_OK
