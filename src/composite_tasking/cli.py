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


def _nonneg(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {v}")
    return v


def cmd_synth(args: argparse.Namespace) -> int:
    from .store import StoreError
    from .synthetic.export import write_synthetic

    bar = _Bar("synth", "scene")
    try:
        summary = write_synthetic(args.out, args.n, args.size, args.seed, args.start, progress=bar)
    except KeyboardInterrupt:
        bar.close()
        print(f"interrupted; what was written is complete. Re-run the same command to continue.",
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ctn",
        description="CompositeTasking: one network, many tasks, a Task Palette says which task where.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("info", help="versions, devices, tasks, rules and model presets")
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
    p.set_defaults(func=cmd_synth)
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
