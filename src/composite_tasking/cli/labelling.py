"""The commands of label stores: ``ctn label``, ``demo``, ``annotate``, ``review``,
``export`` and ``import``."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .checks import (EXIT_OK, EXIT_PARTIAL, EXIT_STOPPED, EXIT_USAGE, Usage, check_bucket, check_device,
                     check_inputs, check_outputs, check_tile, os_error, set_storage_options)  # fmt: skip
from .parser import build_parser
from .progress import Bar


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
    print(
        f"{'rank':>4}  {'image':<{wid}} {'expected %':>10} {'regions':>7}  {'tasks (expected %)':<{wtask}}  worst region"
    )
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
    from ..export import ExportError, export_store
    from ..store import StoreError

    try:
        set_storage_options(args)
    except Usage as e:
        print(f"ctn export: {e}", file=sys.stderr)
        return EXIT_USAGE
    bar = Bar("export", "image")
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
        print(f"ctn export: stopped: {os_error(e, Path(args.out))}; nothing was written to {args.out}",
              file=sys.stderr)  # fmt: skip
        return EXIT_STOPPED
    bar.close()
    print("\n".join(summary.lines()))
    return EXIT_OK if summary.ok else EXIT_PARTIAL


def cmd_import(args: argparse.Namespace) -> int:
    from ..import_labels import ImportLabelsError, import_labels
    from ..store import StoreError

    bar = Bar("import", "image")
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
        print(f"ctn import: stopped: {os_error(e, Path(args.store))}. Every image imported before is complete "
              "and the store is valid: fix this and run the same command again", file=sys.stderr)  # fmt: skip
        return EXIT_STOPPED
    bar.close()
    print("\n".join(summary.lines()))
    return EXIT_OK if summary.ok else EXIT_PARTIAL


def _same_file(path: str, first: str) -> str:
    """How ``path`` leads to the file listed as ``first`` (``ctn label``'s summary)."""
    if os.path.islink(path):
        return f"a symbolic link to {first}"
    if os.path.islink(first):
        return f"where the symbolic link {first} leads"
    return f"the same file as {first} (through a symbolic link to a folder)"


def cmd_label(args: argparse.Namespace) -> int:
    from ..shards import ShardError, parse_shard, shard_from_environment

    from ..store.location import is_url

    remote = is_url(args.out)  # an object store's URL: kept as given (store.location)
    out = args.out if remote else Path(args.out)
    preview: Path | None
    if args.preview:
        preview = Path(args.preview)
    else:  # beside a local store; none by default beside a bucket's (--preview PATH makes one here)
        preview = None if remote else out.with_name(out.name.removesuffix(".zarr") + "-preview.png")
    if args.no_preview:
        preview = None
    try:
        set_storage_options(args)
        if args.resume and args.overwrite:
            raise Usage("--resume and --overwrite exclude each other")
        if args.palette_model is not None and args.palette_from != "net":
            raise Usage(f"--palette-model is the palette network of --palette-from net; with "
                         f"--palette-from {args.palette_from} it would be ignored")  # fmt: skip
        if args.rule is not None and args.palette_from not in ("semantics", "net") and Path(args.palette_from).is_dir():
            raise Usage(f"--palette-from {args.palette_from}: the palettes come from that folder, "
                         f"not from a rule; leave out --rule {args.rule}")  # fmt: skip
        overlap = check_tile(args.tile, args.overlap)
        check_device(args.device)
        try:
            # explicit, so that label_images does not read the environment again
            shard = parse_shard(args.shard) if args.shard is not None else (shard_from_environment() or (0, 1))
        except ShardError as e:
            raise Usage(str(e)) from None
        check_inputs([i for i in args.inputs if not is_url(i)], any(map(is_url, args.inputs)))
        if remote:  # the bucket checked at once (one line when it is missing, refused or unreachable)
            check_bucket(args.out)
            check_outputs(None, preview)
        else:
            check_outputs(out, preview)
    except Usage as e:  # found before torch is imported: at once
        print(f"ctn label: {e}", file=sys.stderr)
        return EXIT_USAGE
    from ..label import LabelError, format_timings, label_images
    from ..model.checkpoint import CheckpointError
    from ..palette import RuleError

    bar = Bar("label", "image")
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
        print(f"ctn label: stopped: {os_error(e, out)}. Every image written before is complete and the "
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
        from ..images import suffixes_of

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
    from ..samples import sample_paths

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
    from .._napari.annotate import open_annotator

    _viewer, _widgets, problems = open_annotator(args.images, model=args.model, device=args.device,
                                                 store=args.store, order=args.order.replace("-", " "),
                                                 freeze_imports=True)  # fmt: skip
    for path, reason in problems:
        print(f"ctn annotate: skipped {path}: {reason}", file=sys.stderr)
    napari.run()
    return EXIT_PARTIAL if problems else EXIT_OK
