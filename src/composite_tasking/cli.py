"""The ``ctn`` command.

Exit codes: 0 all done; 1 finished but some inputs were skipped; 2 usage error (a clear
message, nothing written); 3 (``ctn label``) stopped by an error of the file system or
the OS (a full disk, a read-only place; the message names the path and the reason): the
store stays valid, fix the cause and re-run to resume; 130 interrupted.
"""

from __future__ import annotations

import argparse
import errno
import math
import os
import platform
import re
import sys
import tempfile
from pathlib import Path
from importlib import metadata

from .__about__ import __version__

EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, EXIT_STOPPED = 0, 1, 2, 3


def _dist_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def devices() -> list[str]:
    """The compute devices torch sees, one line each."""
    import torch

    from .device import cpu_has_bf16

    bf16 = "native bf16 (--precision bf16 pays)" if cpu_has_bf16() else "no native bf16"
    lines = [f"cpu: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, {bf16}"]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            lines.append(f"cuda:{i}: {p.name}, {p.total_memory / 2**30:.0f} GiB")
    else:
        lines.append("cuda: not available")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        lines.append("mps: available")
    return lines


def _bundled_lines() -> list[str]:
    from .model import read_checkpoint_info
    from .model.checkpoint import CheckpointError
    from .weights import default_model_path

    lines = ["bundled models:"]
    for name in ("ctn", "palette"):
        try:
            info = read_checkpoint_info(default_model_path(name))
        except CheckpointError:
            lines.append(f"  {name}: not shipped in this installation")
            continue
        cfg = info.config
        val = (info.provenance.get("val") or {}).get("primary") or {}
        metrics = ", ".join(f"{k} {v:.1f}" for k, v in val.items() if isinstance(v, (int, float)))
        lines.append(f"  {name}: {cfg.kind} {cfg.encoder}, sha256 {info.sha256[:12]}, {info.path}")
        if metrics:
            lines.append(f"    validation: {metrics}")
    lines.append("  what they know: the synthetic world they were trained on (ctn synth); on photos their "
                 "classes are guesses. For photos, train the paper's model on PASCAL-MT: ctn train --config "
                 "ctn-pascal-mt --data pascal-mt:ROOT (docs/finetune.md)")  # fmt: skip
    return lines


def cmd_info(args: argparse.Namespace) -> int:
    import torch

    from .model import PRESETS, build_model, count_parameters
    from .palette import BUILTIN_RULES
    from .tasks import TASKS

    out = [f"napari-composite-tasking {__version__}", f"python {platform.python_version()}"]
    for dist in ("torch", "torchvision", "numpy", "zarr", "safetensors", "napari", "npe2"):
        out.append(f"{dist} {_dist_version(dist)}")
    out.append("")
    out.append("devices:")
    out += [f"  {d}" for d in devices()]
    out.append("")
    out.append("tasks (palette value = id + 1):")
    for t in TASKS:
        extra = f", {t.num_classes} classes" if t.kind == "classes" else ""
        out.append(f"  {t.palette_value}  {t.name:<9} {t.title} ({t.kind}{extra})")
    out.append("")
    out.append("rules: " + ", ".join(BUILTIN_RULES) + ", or a YAML rule file")
    out.append("")
    out.append("model presets:")
    with torch.device("meta"):  # count parameters without allocating them
        for name, cfg in PRESETS.items():
            n = count_parameters(build_model(cfg))
            out.append(f"  {name:<17} {cfg.kind.upper():<7}  encoder {cfg.encoder:<9} {n / 1e6:7.2f} M parameters")
    out.append("")
    out += _bundled_lines()
    print("\n".join(out))
    return EXIT_OK


class _Bar:
    """A tqdm bar as a ``progress(done, total)`` callback for the core's long operations."""

    def __init__(self, desc: str, unit: str):
        from tqdm import tqdm

        self._tqdm = tqdm
        self.bar = None
        self.desc, self.unit = desc, unit

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            self.bar = self._tqdm(total=total, desc=self.desc, unit=self.unit, dynamic_ncols=True)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _size(text: str) -> tuple[int, int]:
    try:
        parts = [int(p) for p in text.lower().replace("x", ",").split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be S or HxW, got {text!r}") from None
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"size must be S or HxW with positive numbers, got {text!r}")
    return parts[0], parts[1]


def _minutes(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected minutes (a number), got {text!r}") from None
    if not v > 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"expected minutes > 0, got {text!r}")
    return v


def _scale(text: str) -> str:
    from composite_tasking.scale import parse_scale

    try:
        return str(parse_scale(text))
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _scale_arg(p: argparse.ArgumentParser, default: str) -> None:
    from composite_tasking.scale import SCALE_HELP

    p.add_argument("--scale", type=_scale, default=default, help=f"{SCALE_HELP} (default {default})")


def _nonneg(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {v}")
    return v


def _world(text: str) -> str:
    from .synthetic.worlds import WORLDS

    if text not in WORLDS:
        raise argparse.ArgumentTypeError(f"unknown world {text!r}; known worlds: {', '.join(WORLDS)}")
    return text


def cmd_synth(args: argparse.Namespace) -> int:
    from .store import StoreError
    from .synthetic.export import write_synthetic

    bar = _Bar("synth", "scene")
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


def _train_progress():
    """tqdm bars for training: one per epoch, losses per task in the postfix."""
    from tqdm import tqdm

    state = {"bar": None}

    def progress(event: dict) -> None:
        if "epoch_done" in event:
            rec = event["epoch_done"]
            if state["bar"] is not None:
                state["bar"].close()
                state["bar"] = None
            val = rec.get("val", {}).get("primary")
            line = f"epoch {rec['epoch']}: {rec['images_per_s']:.1f} images/s"
            if val:
                line += "; val " + ", ".join(f"{k} {v:.2f}" for k, v in val.items())
            tqdm.write(line)
            return
        bar = state["bar"]
        if bar is None:
            bar = state["bar"] = tqdm(total=event["steps"], desc=f"epoch {event['epoch']}/{event['epochs']}",
                                      unit="step", dynamic_ncols=True)  # fmt: skip
        bar.update(event["step"] - bar.n)
        bar.set_postfix({k: f"{v:.3g}" for k, v in event["loss"].items()}, refresh=False)

    return progress


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
        trainer = Trainer(recipe, out, resume=resume, device=device, progress=_train_progress(),
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
        _use_storage_options(args)
    except _Usage as e:
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
    bars = _train_progress()

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
    from .inference import resolve_model

    return resolve_model(spec)


def _print_table(result: dict) -> None:
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
        bar = None if args.json else _Bar("evaluate", "batch")
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
        _print_table(result)
    return EXIT_OK


def _print_review(items: list, shown: list) -> None:
    """The ``ctn review`` table: one line per image, its worst region beside it."""
    ranked = sum(i.status == "ranked" for i in items)
    print(f"{len(items)} image(s): {ranked} ranked by expected effort, {len(items) - ranked} "
          f"checked or without confidence (listed last)")  # fmt: skip
    rows = []
    for item in shown:
        if item.status != "ranked":
            note = f"{item.status}" + (f": {', '.join(item.checked)}" if item.checked else "")
            rows.append((item, "-", "-", note, ""))
            continue
        tasks = " ".join(f"{t} {v['share']:.0f}%" for t, v in item.tasks.items())
        if item.checked:
            tasks += f" (checked: {', '.join(item.checked)})"
        worst = "-"
        if item.regions:
            r = item.regions[0]
            y0, x0, y1, x1 = r["bbox"]
            worst = f"{r['task']} y {y0}:{y1} x {x0}:{x1} ({r['pixels']} px)"
        rows.append((item, f"{item.expected_share:.2f}", str(item.expected_regions), tasks, worst))
    wid = max([len(r.image_id) for r in shown] + [5])
    wtask = max([len(r[3]) for r in rows if r[4]] + [5])
    print(f"{'rank':>4}  {'image':<{wid}} {'expected %':>10} {'regions':>7}  {'tasks (expected %)':<{wtask}}  worst region")
    for item, share, regions, tasks, worst in rows:
        print(f"{item.rank:>4}  {item.image_id:<{wid}} {share:>10} {regions:>7}  {tasks:<{wtask}}  {worst}".rstrip())
    if len(shown) < len(items):
        print(f"... {len(items) - len(shown)} more (--top)")


def cmd_review(args: argparse.Namespace) -> int:
    import json

    from composite_tasking.model.checkpoint import json_safe
    from composite_tasking.review import ReviewError, rank_store
    from composite_tasking.store import StoreError

    try:
        tasks = None if args.tasks is None else [t for t in args.tasks.split(",") if t.strip()]
        items = rank_store(args.store, tasks, regions_per_image=args.regions)
    except (ReviewError, StoreError, KeyError, FileNotFoundError) as e:
        print(f"ctn review: {e.args[0] if isinstance(e, KeyError) else e}", file=sys.stderr)
        return EXIT_USAGE
    shown = items if args.top is None else items[: args.top]
    if args.json:
        print(json.dumps(json_safe({"store": str(Path(args.store)), "images": len(items),
                                    "ranking": [i.to_dict() for i in shown]}), indent=2, allow_nan=False))  # fmt: skip
    else:
        _print_review(items, shown)
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    from .export import ExportError, export_store
    from .store import StoreError

    try:
        _use_storage_options(args)
    except _Usage as e:
        print(f"ctn export: {e}", file=sys.stderr)
        return EXIT_USAGE
    bar = _Bar("export", "image")
    try:
        summary = export_store(args.store, args.out, format=args.format, select=args.select,
                               color=args.color, overwrite=args.overwrite, tasks=args.tasks,
                               split=args.split, progress=bar)  # fmt: skip
    except KeyboardInterrupt:
        bar.close()
        print(f"\ninterrupted: nothing was written to {args.out}", file=sys.stderr)
        return 130
    except (ExportError, StoreError) as e:
        bar.close()
        print(f"ctn export: {e}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as e:
        bar.close()
        print(f"ctn export: stopped: {_os_error(e, Path(args.out))}; nothing was written to {args.out}",
              file=sys.stderr)  # fmt: skip
        return EXIT_STOPPED
    bar.close()
    print("\n".join(summary.lines()))
    return EXIT_OK if summary.ok else EXIT_PARTIAL


def cmd_import(args: argparse.Namespace) -> int:
    from .import_labels import ImportLabelsError, import_labels
    from .store import StoreError

    bar = _Bar("import", "image")
    try:
        summary = import_labels(args.root, args.store, layout=args.layout, as_=args.as_, tasks=args.tasks,
                                overwrite=args.overwrite, progress=bar)  # fmt: skip
    except KeyboardInterrupt:
        bar.close()
        print("\ninterrupted: every image imported so far is complete; run the same command again to import "
              "the rest (images already imported with these labels are left as they are)", file=sys.stderr)  # fmt: skip
        return 130
    except (ImportLabelsError, StoreError) as e:
        bar.close()
        print(f"ctn import: {e}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as e:
        bar.close()
        print(f"ctn import: stopped: {_os_error(e, Path(args.store))}. Every image imported before is complete "
              "and the store is valid: fix this and run the same command again", file=sys.stderr)  # fmt: skip
        return EXIT_STOPPED
    bar.close()
    print("\n".join(summary.lines()))
    return EXIT_OK if summary.ok else EXIT_PARTIAL


class _Usage(Exception):
    """A usage error of ``ctn label`` found before anything is written (exit 2)."""


def _default_overlap(tile: int) -> int:
    """--overlap when not given: 128 pixels, less for tiles under 512 (below tile / 2)."""
    return min(128, tile // 4)


def _check_tile(tile: int, overlap: int | None) -> int:
    """The overlap to use, or :class:`_Usage` with the real limits."""
    if tile < 64:
        raise _Usage(f"--tile takes 64 or more pixels, got {tile}")
    if overlap is None:
        return _default_overlap(tile)
    if not 0 <= overlap < tile // 2:
        raise _Usage(f"--overlap takes 0 to {tile // 2 - 1} pixels with --tile {tile} (below half a "
                     f"tile), got {overlap}")  # fmt: skip
    return overlap


def _check_device(spec: str) -> None:
    from .device import DEVICES, pick_device

    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", spec):  # before torch is imported: at once
        raise _Usage(f"--device takes {DEVICES} (I: the index of a CUDA device), got {spec!r}")
    if spec.startswith("cuda") or spec == "mps":
        try:
            pick_device(spec)
        except ValueError as e:
            raise _Usage(f"--device {spec}: {e}") from None


def _check_writable(path: Path, what: str) -> None:
    """:class:`_Usage` unless ``path`` can be written: its nearest existing folder above
    is a folder this process can create files in (tried with a hidden file, removed)."""
    place = path.parent
    while not os.path.lexists(place) and place != place.parent:
        place = place.parent
    if not place.is_dir():
        raise _Usage(f"{what} {path}: {place} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".ctn-write-test-", dir=place)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise _Usage(f"{what} {path}: cannot write in {place}: {e.strerror or e}") from None


def _use_storage_options(args: argparse.Namespace) -> None:
    """``--storage-option KEY=VALUE`` (repeatable): the options of every object-store URL
    the command opens (store.location), in ``args.storage_options``; :class:`_Usage`
    when one is malformed."""
    from .store.location import parse_storage_options, use_storage_options

    try:
        args.storage_options = parse_storage_options(getattr(args, "storage_option", None)) or None
    except ValueError as e:
        raise _Usage(str(e)) from None
    use_storage_options(args.storage_options)


def _check_bucket(url: str) -> None:
    """:class:`_Usage` (one line, naming the URL) unless the bucket of ``url`` can be used."""
    from .store.location import LocationError, locate

    try:
        locate(url).check()
    except LocationError as e:
        raise _Usage(str(e)) from None


def _check_outputs(out: Path | None, preview: Path | None) -> None:
    if out is None:  # a store in an object store
        pass
    elif out.is_dir():
        pass  # an existing store: opening it says whether it can be written
    elif os.path.lexists(out):
        raise _Usage(f"--out {out} is a file; the label store is a folder (e.g. labels.zarr)")
    else:
        _check_writable(out, "--out")
    if preview is None:
        return
    if preview.is_dir():
        raise _Usage(f"--preview {preview} is a folder; give the path of a .png file")
    if preview.suffix.lower() != ".png":
        raise _Usage(f"--preview {preview}: the contact sheet is a PNG; give a path ending in .png")
    _check_writable(preview, "--preview")


def _check_inputs(inputs: list[str], urls: bool = False) -> None:
    """:class:`_Usage` when not one input exists (a mistyped name: nothing to label);
    ``urls``: object-store inputs were given too (listed when the run starts)."""
    if urls or any(os.path.exists(p) for p in inputs):
        return

    def why(p: str) -> str:
        if not os.path.islink(p):
            return p
        try:
            os.stat(p)
        except OSError as e:
            if e.errno == errno.ELOOP:
                return f"{p} (a symbolic link loop)"
        return f"{p} (a broken symbolic link)"

    raise _Usage(f"no such file or folder: {', '.join(map(why, inputs))}")


def _os_error(e: OSError, where_else: Path) -> str:
    """One line: the path(s) (``where_else`` when the error names none: a write into an
    open file), the OS's reason, and what was being done (the exception's notes)."""
    reason = e.strerror or str(e)
    where = e.filename if e.filename is not None else where_else
    if where is not None and e.filename2 is not None:
        where = f"{where} -> {e.filename2}"
    text = f"{where}: {reason}"
    notes = [n.strip() for n in getattr(e, "__notes__", ()) if str(n).strip()]
    return text + (f" ({'; '.join(notes)})" if notes else "")


def _same_file(path: str, first: str) -> str:
    """How ``path`` leads to the file listed as ``first`` (``ctn label``'s summary)."""
    if os.path.islink(path):
        return f"a symbolic link to {first}"
    if os.path.islink(first):
        return f"where the symbolic link {first} leads"
    return f"the same file as {first} (through a symbolic link to a folder)"


def cmd_label(args: argparse.Namespace) -> int:
    from .shards import ShardError, parse_shard, shard_from_environment

    from .store.location import is_url

    remote = is_url(args.out)  # an object store's URL: kept as given (store.location)
    out = args.out if remote else Path(args.out)
    if args.preview:
        preview = Path(args.preview)
    else:  # beside a local store; none by default beside a bucket's (--preview PATH makes one here)
        preview = None if remote else out.with_name(out.name.removesuffix(".zarr") + "-preview.png")
    if args.no_preview:
        preview = None
    try:
        _use_storage_options(args)
        if args.resume and args.overwrite:
            raise _Usage("--resume and --overwrite exclude each other")
        if args.palette_model is not None and args.palette_from != "net":
            raise _Usage(f"--palette-model is the palette network of --palette-from net; with "
                         f"--palette-from {args.palette_from} it would be ignored")  # fmt: skip
        if args.rule is not None and args.palette_from not in ("semantics", "net") and Path(args.palette_from).is_dir():
            raise _Usage(f"--palette-from {args.palette_from}: the palettes come from that folder, "
                         f"not from a rule; leave out --rule {args.rule}")  # fmt: skip
        overlap = _check_tile(args.tile, args.overlap)
        _check_device(args.device)
        try:
            # explicit, so that label_images does not read the environment again
            shard = parse_shard(args.shard) if args.shard is not None else (shard_from_environment() or (0, 1))
        except ShardError as e:
            raise _Usage(str(e)) from None
        _check_inputs([i for i in args.inputs if not is_url(i)], any(map(is_url, args.inputs)))
        if remote:  # the bucket checked at once (one line when it is missing, refused or unreachable)
            _check_bucket(out)
            _check_outputs(None, preview)
        else:
            _check_outputs(out, preview)
    except _Usage as e:  # found before torch is imported: at once
        print(f"ctn label: {e}", file=sys.stderr)
        return EXIT_USAGE
    from .label import LabelError, format_timings, label_images
    from .model.checkpoint import CheckpointError
    from .palette import RuleError

    bar = _Bar("label", "image")
    try:
        summary = label_images(
            args.inputs, out, rule=args.rule, palette_from=args.palette_from, model=args.model,
            palette_model=args.palette_model or "default",
            device=args.device, batch_size=args.batch_size, tile=args.tile, precision=args.precision,
            overwrite=args.overwrite, shard=shard, store_image=not args.reference,
            preview=preview, progress=bar, writers=args.writers, overlap=overlap, scale=args.scale,
            storage_options=args.storage_options,
        )  # fmt: skip
    except KeyboardInterrupt:
        bar.close()
        again = ("the same command without --overwrite continues relabelling (with it, relabelling "
                 "starts over)") if args.overwrite else "run the same command again to continue"  # fmt: skip
        print(f"\ninterrupted: every image written so far is complete; {again}", file=sys.stderr)
        return 130
    except (LabelError, RuleError, CheckpointError, ValueError) as e:
        bar.close()
        print(f"ctn label: {e}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as e:
        bar.close()
        print(f"ctn label: stopped: {_os_error(e, out)}. Every image written before is complete and the "
              f"store is valid: fix this and run the same command again to continue", file=sys.stderr)  # fmt: skip
        return EXIT_STOPPED
    bar.close()
    print(f"labelled {len(summary.done)} image(s) into {summary.store}; "
          f"{len(summary.skipped_complete)} already complete; {len(summary.failed)} skipped")  # fmt: skip
    for path, reason in summary.failed:
        print(f"  skipped {path}: {reason}")
    if summary.duplicates:
        print(f"found {len(summary.duplicates)} image file(s) again under another name: each is read once, "
              f"under the name found first")  # fmt: skip
        for path, first in summary.duplicates[:10]:
            print(f"  {path}: {_same_file(path, first)}")
        if len(summary.duplicates) > 10:
            print(f"  ... {len(summary.duplicates) - 10} more")
    if summary.elsewhere:
        print(f"left {len(summary.elsewhere)} image(s) to another run labelling this store at the same "
              "time (run the command again once it ended to check that nothing is missing)")  # fmt: skip
    if summary.changed:
        print(f"relabelled {len(summary.changed)} image(s) stored by reference whose file changed since they "
              f"were labelled: {_names(summary.changed)}")  # fmt: skip
    if summary.kept:
        print(f"kept {len(summary.kept)} image(s) with ground truth, a person's corrections or saved from napari "
              f"(never relabelled)")  # fmt: skip
    if summary.kept_changed:
        print(f"  of these, {len(summary.kept_changed)} image(s) stored by reference whose file changed since "
              f"they were labelled: {_names(summary.kept_changed)}; their labels belong to the old picture and "
              "were left as they are: restore the file, or remove the image from the store to label the new "
              "picture (docs/label-folder.md)")  # fmt: skip
    if summary.ignored:
        from .images import suffixes_of

        names = summary.ignored[:10] + ([f"... {len(summary.ignored) - 10} more"] if len(summary.ignored) > 10 else [])
        print(f"ignored {len(summary.ignored)} non-image file(s) ({', '.join(suffixes_of(summary.ignored))}): "
              f"{', '.join(names)}")  # fmt: skip
    if summary.preview:
        print(f"preview: {summary.preview}")
    if summary.preview_error:  # exit 1: finished, the preview missing
        print(f"ctn label: {summary.preview_error}", file=sys.stderr)
    if args.timings:
        print(format_timings(summary.timings))
    return EXIT_OK if summary.ok else EXIT_PARTIAL


def _names(ids: list[str], most: int = 10) -> str:
    """Up to ``most`` image ids, then how many more."""
    return ", ".join(ids[:most]) + (f", ... {len(ids) - most} more" if len(ids) > most else "")


def cmd_demo(args: argparse.Namespace) -> int:
    """The main job on the shipped samples: label them with the bundled model."""
    from .samples import sample_paths

    out = Path(args.out)
    label_args = build_parser().parse_args([
        "label", *map(str, sample_paths()), "--out", str(out / "labels.zarr"), "--model", args.model,
        "--rule", args.rule, "--device", args.device, "--preview", str(out / "preview.png"),
        "--precision", args.precision, "--scale", args.scale, *(["--overwrite"] if args.overwrite else []),
    ])  # fmt: skip
    return cmd_label(label_args)


def cmd_annotate(args: argparse.Namespace) -> int:
    """napari with the plugin's widgets docked and the images (or label stores) loaded.

    What can be opened is opened; every input that cannot is named on stderr with the
    reason, and the exit code is then 1. When no input exists at all (a mistyped path),
    nothing is opened: exit code 2."""
    missing = [p for p in args.images if not Path(p).exists()]
    if missing and len(missing) == len(args.images):
        print(f"ctn annotate: no such file or folder: {', '.join(missing)}", file=sys.stderr)
        return EXIT_USAGE
    try:
        import napari
    except ImportError:
        print("ctn annotate: needs napari and a Qt binding: pip install 'napari[pyqt6]'",
              file=sys.stderr)  # fmt: skip
        return EXIT_USAGE
    from ._napari.annotate import open_annotator

    _viewer, _widgets, problems = open_annotator(args.images, model=args.model, device=args.device,
                                                 store=args.store, order=args.order.replace("-", " "),
                                                 freeze_imports=True)  # fmt: skip
    for path, reason in problems:
        print(f"ctn annotate: skipped {path}: {reason}", file=sys.stderr)
    napari.run()
    return EXIT_PARTIAL if problems else EXIT_OK


def _add_storage_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--storage-option", action="append", default=None, metavar="KEY=VALUE",
                   help="an option of the object store behind s3://... URLs (repeatable; fsspec's, e.g. "
                        "endpoint_url=http://127.0.0.1:9000, anon=true); credentials and the endpoint also "
                        "come from the AWS environment variables (docs/label-folder.md)")  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ctn",
        description="CompositeTasking: one network, many tasks, a Task Palette says which task where.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("info", help="versions, devices, tasks, rules and model presets",
                       description="Print the versions of the package and of torch, the devices torch sees "
                       "(and whether bf16 pays on this CPU), the tasks, the built-in rules, the model "
                       "presets with their sizes, and whether the bundled models are installed.")  # fmt: skip
    p.set_defaults(func=cmd_info)

    p = sub.add_parser(
        "synth",
        help="generate synthetic scenes: PNG images and their exact ground truth as a label store",
        description="Write N scenes of the synthetic world to OUT/images/*.png and their "
        "ground truth for all five tasks to OUT/ground-truth.zarr. Re-running continues an "
        "interrupted run.",
    )
    p.add_argument("out", help="output folder")
    p.add_argument("--n", type=_nonneg, required=True, help="number of scenes")
    p.add_argument("--size", type=_size, default=(256, 256), help="S or HxW (default 256)")
    p.add_argument("--seed", type=_nonneg, default=0, help="world seed (default 0)")
    p.add_argument("--start", type=_nonneg, default=0, help="index of the first scene (default 0)")
    p.add_argument("--world", type=_world, default="default",
                   help="default (the training world) or shifted (a world the bundled models "
                        "never saw: other lighting, textures, camera and object mix); "
                        "see docs/synthetic.md")  # fmt: skip
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser(
        "label",
        help="auto-label images or folders into a label store (OME-Zarr)",
        description="Predict pseudo-labels for every image under a Task Palette made by a rule, "
        "and write them into a zarr label store. Re-running continues an interrupted run.",
    )
    p.add_argument("inputs", nargs="+", help="image files or folders (searched recursively), or s3:// URLs "
                                             "of images or prefixes")
    p.add_argument("--out", required=True, help="the label store (e.g. labels.zarr, or s3://bucket/labels.zarr)")
    p.add_argument("--rule", default=None,
                   help="R2 (default), R3, S:<task>, mosaic, random or a YAML rule file; with "
                        "--palette-from net the rule the network was trained for")  # fmt: skip
    p.add_argument("--palette-from", default="semantics",
                   help="semantics (the rule on the predicted classes, default), net, or a folder "
                        "of palette PNGs named like the images (values = task id + 1)")  # fmt: skip
    p.add_argument("--model", default="default", help="'default' (bundled), a checkpoint folder or a run folder")
    p.add_argument("--palette-model", default=None,
                   help="only with --palette-from net: the palette network ('default' = bundled, "
                        "the default; or a folder)")  # fmt: skip
    p.add_argument("--device", default="auto", help="auto (CUDA, else MPS, else cpu), cpu, cuda, cuda:I, mps")
    p.add_argument("--batch-size", type=_nonneg, default=4,
                   help="images of one size predicted together (default 4; a GPU gains from more)")
    p.add_argument("--writers", type=_nonneg, default=None, metavar="N",
                   help="writers of the store when the model runs on a GPU: processes that also "
                        "decode the labels from 64 images on (default min(12, cores - 2)), "
                        "threads below (default min(4, cores - 1)); 0: write in the "
                        "labelling thread")  # fmt: skip
    _scale_arg(p, default="auto")
    p.add_argument("--tile", type=_nonneg, default=1024,
                   help="tile images larger than this many pixels per side at the working "
                        "resolution (64 or more; default 1024)")
    p.add_argument("--overlap", type=_nonneg, default=None,
                   help="pixels neighbouring tiles share, blended across (0 to TILE/2 - 1; default "
                        "min(128, TILE/4))")  # fmt: skip
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                   help="auto: float32 (on GPUs too: bf16 did not pay on an H200); bf16 on a CPU "
                        "with native bf16 is ~1.7x faster with labels that differ slightly "
                        "(docs/benchmarks.md)")  # fmt: skip
    g = p.add_mutually_exclusive_group()
    g.add_argument("--resume", action="store_true", help="skip images already complete (the default)")
    g.add_argument("--overwrite", action="store_true", help="relabel everything, also with another model or rule")
    p.add_argument("--shard", default=None,
                   help="I/N: label every N-th image starting at image I, counting from 0 (0/2 and 1/2 "
                        "share a folder between two processes); torchrun's RANK/WORLD_SIZE set it")  # fmt: skip
    p.add_argument("--reference", action="store_true", help="store a path and sha256 instead of the pixels")
    p.add_argument("--preview", default=None,
                   help="the contact sheet, a .png file (default: next to a local store, "
                        "STORE-preview.png; none for a store in a bucket)")  # fmt: skip
    p.add_argument("--no-preview", action="store_true", help="write no contact sheet")
    p.add_argument("--timings", action="store_true",
                   help="print where the time went: the labelling thread's shares (model, "
                        "reading, handing to the writers, ...) and how busy the writers were")  # fmt: skip
    _add_storage_option(p)
    p.set_defaults(func=cmd_label)

    p = sub.add_parser("demo", help="label the bundled sample images with the bundled model (store + preview)",
                       description="The main job on the six bundled sample scenes: ctn label with the "
                       "bundled model into OUT/labels.zarr and a contact sheet OUT/preview.png. "
                       "Re-running continues; --overwrite relabels.")  # fmt: skip
    p.add_argument("--out", default="demo-out", help="output folder (default demo-out)")
    p.add_argument("--rule", default="mosaic",
                   help="default mosaic: four rectangles around a random point, each a different "
                        "task (four of the five tasks per image); R2 needs semantics the bundled "
                        "model predicts only in part")  # fmt: skip
    p.add_argument("--model", default="default",
                   help="'default' (bundled), a checkpoint folder or a run folder")
    p.add_argument("--device", default="auto", help="auto (CUDA, else MPS, else cpu), cpu, cuda, cuda:I, mps")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                   help="as for ctn label")
    _scale_arg(p, default="auto")
    p.add_argument("--overwrite", action="store_true", help="relabel an existing demo store")
    p.set_defaults(func=cmd_demo)

    from composite_tasking.training.recipe import builtin_recipe_names  # yaml, no torch

    recipes = ", ".join(builtin_recipe_names())
    p = sub.add_parser("train", help="train a model from a recipe (YAML)",
                       description="Train a CTN, an MHN, STNs or a palette network as a recipe says "
                       "(model, data, rule, losses, optimiser, schedule; docs/finetune.md), writing a "
                       f"checkpoint per epoch into OUT. Built-in recipes: {recipes}.")  # fmt: skip
    p.add_argument("--config", required=True,
                   help=f"a recipe file, or a built-in recipe by name: {recipes}")
    p.add_argument("--out", required=True,
                   help="run folder (newest checkpoint, history, curves): a new or empty folder, "
                        "or the run to continue with --resume")  # fmt: skip
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--data", default=None,
                   help="train on this instead of the recipe's data: pascal-mt:ROOT[,split=S] (validated "
                        "on its val split; ctn-pascal-mt needs it) | synthetic:seed=K,n=N[,size=S] | "
                        "STORE.zarr")  # fmt: skip
    p.add_argument("--epochs", type=_nonneg, default=None, help="override the recipe's epochs")
    p.add_argument("--device", default="auto", help="auto (CUDA, else MPS, else cpu), cpu, cuda, cuda:I, mps")
    p.add_argument("--max-minutes", type=_minutes, default=None, metavar="M",
                   help="stop after M minutes of wall time, keeping the last finished epoch "
                        "(continue with --resume)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("finetune", help="fine-tune a model on a store, a data set or a new rule",
                       description="Fine-tune a CTN (and the palette network) on what a person checked "
                       "in a label store (the corrected pixels, and every pixel of reviewed tasks; "
                       "--all-images: every pseudo-label), or on a data set under a rule. On a store, "
                       "some checked images are held out and decide whether the new model replaces "
                       "the old one (docs/finetune.md).")  # fmt: skip
    p.add_argument("--model", required=True, help="'default', a checkpoint folder or a run folder")
    p.add_argument("--data", required=True,
                   help="pascal-mt:ROOT[,split=train|val] (default split train) | "
                        "synthetic:seed=K,n=N[,size=S][,world=W] | STORE.zarr: a store trains on "
                        "the pixels a person checked (corrected, reviewed or ground truth; see "
                        "--all-images), its images padded to the largest, at most 256 px (a "
                        "recipe's augment: {crop: S} changes it)")  # fmt: skip
    p.add_argument("--rule", default=None,
                   help="R2, R3, S:<task>, mosaic, random or a YAML rule file: the rule to train "
                        "under; needed for a data set, optional for a store, whose images train "
                        "under their stored palettes (the rule makes the palettes of images stored "
                        "without one, and a palette a rule made that contradicts it is refused)")  # fmt: skip
    p.add_argument("--palette-model", default=None, metavar="CKPT",
                   help="with a store: also fine-tune this palette network ('palette' = the "
                        "bundled one) on the palettes a person chose, into OUT/palette (a store "
                        "with edited palettes only fine-tunes it alone, into OUT)")  # fmt: skip
    p.add_argument("--holdout", type=float, default=0.2, metavar="F",
                   help="with a store of 5 or more checked images: hold out this share of them "
                        "and keep the new model only if its effort on them did not rise "
                        "(exit 1 and the previous model otherwise); 0 = no check (default 0.2)")  # fmt: skip
    p.add_argument("--all-images", action="store_true",
                   help="with a store: also train on the images holding only pseudo-labels "
                        "(a model's output nobody checked): self-training")  # fmt: skip
    p.add_argument("--out", required=True,
                   help="run folder: a new or empty folder, or the run to continue with --resume")
    p.add_argument("--config", default=None,
                   help=f"a recipe file or built-in recipe to start from (default: finetune; built-in: {recipes})")
    p.add_argument("--epochs", type=_nonneg, default=None, help="override the recipe's epochs")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--device", default="auto", help="auto (CUDA, else MPS, else cpu), cpu, cuda, cuda:I, mps")
    p.add_argument("--max-minutes", type=_minutes, default=None, metavar="M",
                   help="stop after M minutes of wall time, keeping the last finished epoch")
    _add_storage_option(p)
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser(
        "annotate",
        help="label a folder (or a label store) in napari, one image at a time",
        description="Open napari with the Label images dock (images one at a time: Previous, Next, "
        "Save and next; the task legend; Predict; the class list) and the Fine-tune dock, on the "
        "series of the given folders of images, image files and label store (.zarr), at its first "
        "image not yet reviewed. Everything is saved to the label store: the one given, or "
        "<folder>-labels.zarr beside the first folder.",
    )
    p.add_argument("images", nargs="*", help="folders of images, image files, and at most one label store")
    p.add_argument("--store", default=None, help="the label store to save to (default: the store given "
                   "as an input, else <folder>-labels.zarr beside the first folder)")  # fmt: skip
    p.add_argument("--order", default="file", choices=["file", "correct-next"],
                   help="file order, or correct-next: the images whose pseudo-labels are expected "
                   "to need most corrections first (needs a store written by ctn label)")  # fmt: skip
    p.add_argument("--model", default=None, help="'default' (bundled), a checkpoint folder or a "
                   "run folder (default: the plugin's setting)")  # fmt: skip
    p.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:I, mps (default: the plugin's setting)")
    p.set_defaults(func=cmd_annotate)

    p = sub.add_parser("evaluate", help="metrics of a model on a data set under a rule",
                       description="The paper's metric per task (semseg and parts mIoU, edges odsF, "
                       "saliency max mIoU, normals mean angle), the loss, the correction effort and "
                       "how well the confidence predicts errors (AUROC), on a data set or the checked "
                       "images of a label store, under rule S (every task everywhere, the paper's "
                       "Table 1) or a palette rule.")  # fmt: skip
    p.add_argument("--model", required=True, help="'default', a checkpoint folder or a run folder")
    p.add_argument("--data", required=True,
                   help="pascal-mt:ROOT[,split=train|val] (default split val) | "
                        "synthetic:seed=K,n=N[,size=S] | STORE.zarr (its images with corrected or "
                        "ground-truth labels)")  # fmt: skip
    p.add_argument("--rule", default="S",
                   help="S (every task everywhere, default) or a palette rule (a store's stored "
                        "palettes made under another rule are refused)")  # fmt: skip
    p.add_argument("--all-images", action="store_true",
                   help="with a store: also score against the images holding only pseudo-labels "
                        "(a model's output nobody checked)")  # fmt: skip
    p.add_argument("--batch-size", type=_nonneg, default=8, help="images per batch (default 8)")
    p.add_argument("--device", default="auto", help="auto (CUDA, else MPS, else cpu), cpu, cuda, cuda:I, mps")
    _scale_arg(p, default="none")
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    _add_storage_option(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "review",
        help="rank a label store's images by the correction effort their confidence maps predict",
        description="Correct next: rank the images of a label store by the share of their "
        "pseudo-labelled palette pixels expected to be wrong (from the stored confidence maps), "
        "with each image's low-confidence regions. Images a person checked are listed last.",
    )
    p.add_argument("store", help="the label store (e.g. labels.zarr)")
    p.add_argument("--top", type=_nonneg, default=None, metavar="K", help="show only the first K images")
    p.add_argument("--tasks", default=None, help="comma-separated tasks to weigh (default: all)")
    p.add_argument("--regions", type=_nonneg, default=5, metavar="R",
                   help="low-confidence regions listed per image in --json (default 5)")
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    p.set_defaults(func=cmd_review)

    p = sub.add_parser(
        "export",
        help="export a label store's labels as PASCAL-MT, PNG or TIFF files",
        description="Write the labels of the complete images of a label store, one file per image "
        "and task, with the images, to a new folder OUT: in the PASCAL-MT layout (pascal-mt:OUT "
        "loads it back), or a folder per task of PNG or TIFF files; 255 = ignore. By default only "
        "the pixels a person checked (docs/export.md).",
    )
    p.add_argument("store", help="the label store (e.g. labels.zarr)")
    p.add_argument("out", help="a new or empty folder (or an earlier export, with --overwrite)")
    p.add_argument("--format", required=True, choices=("pascal-mt", "png", "tiff"),
                   help="pascal-mt: JPEGImages, semseg/VOC12, human_parts, ... and an ImageSets "
                        "list; png / tiff: images/ and a folder per task")  # fmt: skip
    p.add_argument("--select", default="checked", choices=("checked", "corrected", "reviewed", "all"),
                   help="checked (default): the pixels a person checked (a corrected task's other "
                        "pixels are 255); corrected: every pixel of corrected, reviewed and "
                        "ground-truth tasks; reviewed: reviewed and ground-truth tasks only; all: "
                        "pseudo-labels too")  # fmt: skip
    p.add_argument("--color", action="store_true",
                   help="class maps as palette PNGs (VOC colour map; edges and saliency black / "
                        "white) holding the same values")  # fmt: skip
    p.add_argument("--tasks", default=None, help="comma-separated tasks to export (default: all)")
    p.add_argument("--split", default="train",
                   help="pascal-mt: the name of the list file ImageSets/Context/SPLIT.txt (default train)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT when it holds an earlier export")
    _add_storage_option(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "import",
        help="import existing labels (PASCAL-MT, per-task PNG or TIFF folders) into a label store",
        description="Import the labels of a folder in the layouts ctn export writes (PASCAL-MT: JPEGImages, "
        "semseg/VOC12, human_parts, edges, sal_distill, normals_distill; png / tiff: images/ and a folder "
        "per task) into a label store, as ground truth or as pseudo-labels to correct in napari (ctn "
        "annotate STORE). Files that cannot be imported (unreadable, another size than their image, "
        "values their task does not have, a label with no image) are named and their image skipped; "
        "exit 1 then. Images the store holds with other labels are skipped unless --overwrite "
        "(docs/export.md).",
    )
    p.add_argument("root", help="the folder of images and labels (e.g. a ctn export)")
    p.add_argument("store", help="the label store to import into (e.g. labels.zarr); made when absent")
    p.add_argument("--layout", default="auto", choices=("auto", "pascal-mt", "png", "tiff"),
                   help="auto (default): an export's own, pascal-mt when ROOT has JPEGImages/, else png or "
                        "tiff by the label files beside images/")  # fmt: skip
    p.add_argument("--as", dest="as_", default="ground-truth", choices=("ground-truth", "pseudo"),
                   help="ground-truth (default): a person's labels, never relabelled; pseudo: labels to "
                        "correct, with a palette asking each pixel for the first task (in --tasks order) "
                        "labelled there")  # fmt: skip
    p.add_argument("--tasks", default=None,
                   help="comma-separated tasks to import, in the order that decides a pseudo palette "
                        "(default: semseg,parts,edges,saliency,normals)")  # fmt: skip
    p.add_argument("--overwrite", action="store_true",
                   help="replace the images the store holds with other labels (whole images; pseudo-labels "
                        "never replace a person's work)")  # fmt: skip
    p.set_defaults(func=cmd_import)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
