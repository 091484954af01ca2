"""The ``ctn`` command.

Exit codes: 0 all done; 1 finished but some inputs were skipped; 2 usage error (a clear
message, nothing written).
"""

from __future__ import annotations

import argparse
import platform
import sys
from importlib import metadata

from .__about__ import __version__

EXIT_OK, EXIT_PARTIAL, EXIT_USAGE = 0, 1, 2


def _dist_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def devices() -> list[str]:
    """The compute devices torch sees, one line each."""
    import torch

    lines = [f"cpu: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            lines.append(f"cuda:{i}: {p.name}, {p.total_memory / 2**30:.0f} GiB")
    else:
        lines.append("cuda: not available")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        lines.append("mps: available")
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
            out.append(f"  {name:<15} {cfg.kind.upper()}  encoder {cfg.encoder:<9} {n / 1e6:7.2f} M parameters")
    out.append("")
    out.append("bundled model: none yet (the training issue adds it)")
    print("\n".join(out))
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ctn",
        description="CompositeTasking: one network, many tasks, a Task Palette says which task where.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("info", help="versions, devices, tasks, rules and model presets")
    p.set_defaults(func=cmd_info)
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
