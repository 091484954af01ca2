"""Run the benchmarks and print one table.

    python benchmarks/run.py [--only NAME] [--device cpu|cuda] [--json OUT] [--quick]
    python benchmarks/run.py --from-json OUT [--only NAME]    # reprint a saved run

Every module in ``benchmarks/`` registers its benchmark (see ``_registry.py``); this
runs all of them (except the opt-in studies, e.g. ``semantics``: those only when named),
or the ones named by ``--only`` (repeatable, or comma-separated), and
prints a header line describing the machine, then one Markdown table with the columns
benchmark, case, value, unit, ratio, notes. Ratios compare values of the same run.

Exit codes: 0 all benchmarks ran; 1 some benchmark failed (the others still ran and
are printed); 2 usage error (unknown benchmark, CUDA asked for but absent).
Progress goes to stderr, the table to stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._registry import (  # noqa: E402
    Context,
    Row,
    available_threads,
    discover,
    format_table,
    machine_info,
    machine_line,
    rows_to_json,
)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="benchmarks/run.py",
        description="Run the napari-composite-tasking benchmarks and print one table.",
    )
    p.add_argument("--only", action="append", metavar="NAME",
                   help="run only this benchmark (repeatable or comma-separated); see --list")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="where models run (default: cpu)")
    p.add_argument("--json", metavar="OUT", type=Path,
                   help="also write the rows and the machine description as JSON")
    p.add_argument("--quick", action="store_true",
                   help="smaller inputs and fewer repeats: a smoke run, not a measurement")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: every CPU this process may use)")
    p.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    p.add_argument("--from-json", metavar="FILE", type=Path,
                   help="print the table of an earlier --json run (measures nothing)")
    return p  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    registry = discover()

    if args.list:
        for b in registry.values():
            print(f"{b.name:12s} {b.description}{' (only with --only)' if b.opt_in else ''}")
        return 0

    selected = [n for n, b in registry.items() if not b.opt_in]  # opt-in: only when named
    if args.only:
        selected = [n.strip() for item in args.only for n in item.split(",") if n.strip()]
        unknown = [n for n in selected if n not in registry]
        if unknown:
            print(f"error: unknown benchmark(s) {', '.join(unknown)}; "
                  f"known: {', '.join(registry)}", file=sys.stderr)  # fmt: skip
            return 2
        selected = [n for n in registry if n in selected]  # registry order

    if args.from_json is not None:
        return _reprint(args.from_json, selected)

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        why = ("this torch build has no CUDA support" if torch.version.cuda is None
               else f"torch {torch.__version__} (CUDA {torch.version.cuda}) finds no CUDA device")  # fmt: skip
        print(f"error: --device cuda was asked for, but CUDA is not available: {why}. "
              "Run with --device cpu (the default).", file=sys.stderr)  # fmt: skip
        return 2
    if args.threads is not None and args.threads < 1:
        print("error: --threads must be at least 1", file=sys.stderr)
        return 2

    threads = args.threads or available_threads()
    torch.set_num_threads(threads)
    ctx = Context(device=args.device, quick=args.quick, threads=threads)
    info = machine_info(ctx)
    load = info.get("load_avg_1min")
    if load is not None and load > 0.5 * info["cpus_available"]:
        print(f"warning: load average {load:.2f} on {info['cpus_available']} CPUs: other work is "
              "running, so timings will be slower and noisier than on a quiet machine",
              file=sys.stderr)  # fmt: skip

    rows: list[Row] = []
    failed: list[str] = []
    for name in selected:
        b = registry[name]
        print(f"[{name}] running ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        try:
            new = list(b.func(ctx))  # all of a benchmark's rows, or none
        except Exception:
            failed.append(name)
            print(f"[{name}] FAILED:\n{traceback.format_exc()}", file=sys.stderr, flush=True)
            continue
        rows.extend(new)
        print(f"[{name}] done in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)

    ratio_to = {n: registry[n].ratio_to for n in selected if registry[n].ratio_to}
    _print(info, rows, ratio_to, failed)

    if args.json is not None:
        data = rows_to_json(rows, info, ratio_to)
        data["failed"] = failed
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return 1 if failed else 0


def _print(info: dict, rows: list[Row], ratio_to: dict[str, str], failed: list[str]) -> None:
    print(machine_line(info))
    print()
    print(format_table(rows))
    if ratio_to:
        print()
        for n, ref in ratio_to.items():
            print(f"ratio ({n}): relative to {ref}, measured in this run")
    if failed:
        print(f"\nfailed: {', '.join(failed)} (see stderr)")


def _reprint(path: Path, selected: list[str]) -> int:
    """The table of an earlier ``--json`` run, limited to the selected benchmarks."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        rows = [Row(**r) for r in data["rows"] if r["benchmark"] in selected]
        info, ratio_to = data["machine"], data.get("ratio_to", {})
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f"error: {path} is not the JSON of a benchmarks/run.py run: {e}", file=sys.stderr)
        return 2
    if not rows:
        print(f"error: {path} holds no rows of {', '.join(selected)}", file=sys.stderr)
        return 2
    _print(info, rows, {n: r for n, r in ratio_to.items() if n in selected},
           [n for n in data.get("failed", []) if n in selected])  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
