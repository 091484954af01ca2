"""The benchmark registry, the rows benchmarks return, and the one table they make.

Adding a benchmark = adding a module ``benchmarks/NAME.py`` with::

    from benchmarks._registry import Context, Row, benchmark

    @benchmark("NAME", order=30, ratio_to="what the ratio column compares with")
    def run(ctx: Context):
        yield Row("NAME", "a case", 1.23, "ms", ratio=1.0, notes="...")

``run.py`` imports every module of this folder whose name does not start with ``_``
(so nothing else needs editing), runs the selected benchmarks in ``order`` and prints
their rows as one table; ``--json`` writes the same rows with the machine description.
Ratios are always computed from values measured in the same run.
"""

from __future__ import annotations

import datetime as _dt
import importlib
import os
import pkgutil
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

__all__ = [
    "time_round_robin",
    "Row",
    "Context",
    "Benchmark",
    "BENCHMARKS",
    "benchmark",
    "discover",
    "available_threads",
    "machine_info",
    "machine_line",
    "format_table",
    "rows_to_json",
]


@dataclass
class Row:
    """One line of the table.

    ``value`` is a number in ``unit``, printed with ``digits`` decimals (0 = integer with
    thousands separators); ``ratio`` is ``value`` divided by the benchmark's reference
    case measured in the same run (see :func:`benchmark`'s ``ratio_to``); ``extra``
    holds exact, machine-readable details that only go to the JSON file.
    """

    benchmark: str
    case: str
    value: float | int | None
    unit: str
    ratio: float | None = None
    notes: str = ""
    digits: int = 2
    extra: dict[str, Any] = field(default_factory=dict)

    def value_text(self) -> str:
        if self.value is None:
            return "-"
        if self.digits == 0:
            return f"{int(round(self.value)):,}"
        return f"{self.value:.{self.digits}f}"

    def ratio_text(self) -> str:
        return "-" if self.ratio is None else f"{self.ratio:.2f}x"


@dataclass(frozen=True)
class Context:
    """What a benchmark may depend on; chosen once by ``run.py`` for the whole run."""

    device: str  # "cpu" or "cuda"
    quick: bool  # smaller and fewer measurements (smoke runs, tests)
    threads: int  # torch CPU threads in use
    seed: int = 0

    def sync(self) -> None:
        """Wait for the device, so that a timer measures finished work."""
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()


@dataclass(frozen=True)
class Benchmark:
    name: str
    func: Callable[[Context], Iterable[Row]]
    order: int
    ratio_to: str
    description: str
    #: runs only when named by ``--only`` (a study of an hour or more, not a timing)
    opt_in: bool = False


#: name -> Benchmark, filled by the @benchmark decorator when a module is imported
BENCHMARKS: dict[str, Benchmark] = {}


def benchmark(name: str, *, order: int = 100, ratio_to: str = "", description: str = "",
              opt_in: bool = False):  # fmt: skip
    """Register ``func(ctx) -> Iterable[Row]`` as the benchmark ``name``.

    ``ratio_to`` names the reference case of the ratio column (shown under the table);
    ``order`` sorts benchmarks in the table (lower first); ``opt_in``: run only when
    named by ``--only`` (a long study, not part of a plain run).
    """

    def register(func: Callable[[Context], Iterable[Row]]):
        old = BENCHMARKS.get(name)
        # A module run as a script (``python benchmarks/params.py``) registers itself as
        # __main__ and again when discovered: same file, same benchmark.
        if old is not None and old.func.__code__.co_filename != func.__code__.co_filename:
            raise ValueError(
                f"benchmark {name!r} is registered twice: in {old.func.__code__.co_filename} "
                f"and {func.__code__.co_filename}"
            )
        doc = description or next(iter((func.__doc__ or "").strip().splitlines()), "")
        BENCHMARKS[name] = Benchmark(name, func, order, ratio_to, doc, opt_in)
        return func

    return register


def discover() -> dict[str, Benchmark]:
    """Import every benchmark module in this folder; return the registry, sorted."""
    here = Path(__file__).resolve().parent
    for info in pkgutil.iter_modules([str(here)]):
        if info.name.startswith("_") or info.name == "run":
            continue
        importlib.import_module(f"{__package__ or 'benchmarks'}.{info.name}")
    return dict(sorted(BENCHMARKS.items(), key=lambda kv: (kv[1].order, kv[0])))


def available_threads() -> int:
    """CPU cores this process may run on (the affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine_info(ctx: Context) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cpus_available": available_threads(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "device": ctx.device,
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "quick": ctx.quick,
    }
    try:  # other work on the machine skews timings: say how busy it was
        info["load_avg_1min"] = round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        pass
    if ctx.device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name()
        info["cuda"] = torch.version.cuda
    return info


def machine_line(info: dict[str, Any]) -> str:
    dev = info["device"] + (f" ({info['gpu']}, CUDA {info['cuda']})" if "gpu" in info else "")
    parts = [
        f"machine: {info['cpu']}, {info['torch_threads']} torch threads "
        f"({info['cpus_available']} CPUs available)",
        f"torch {info['torch']}",
        f"python {info['python']}",
        f"device {dev}",
        info["date"],
    ]
    if "load_avg_1min" in info:
        parts.append(f"load avg {info['load_avg_1min']:.2f} at start")
    if info.get("quick"):
        parts.append("--quick")
    return " | ".join(parts)


def format_table(rows: list[Row]) -> str:
    """The rows as one aligned Markdown pipe table (pasteable into the docs)."""
    head = ["benchmark", "case", "value", "unit", "ratio", "notes"]
    body = [[r.benchmark, r.case, r.value_text(), r.unit, r.ratio_text(), r.notes] for r in rows]
    right = {2, 4}  # numbers are right-aligned
    widths = [max(len(x) for x in col) for col in zip(head, *body)]

    def line(cells):
        return "| " + " | ".join(
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))
        ) + " |"

    rule = "|" + "|".join(
        "-" * (w + 1) + ":" if i in right else "-" * (w + 2) for i, w in enumerate(widths)
    ) + "|"
    return "\n".join([line(head), rule, *(line(b) for b in body)])


def rows_to_json(rows: list[Row], info: dict[str, Any], ratio_to: dict[str, str]) -> dict:
    return {
        "machine": info,
        "ratio_to": ratio_to,
        "rows": [asdict(r) for r in rows],
    }


def time_round_robin(cases, ctx: "Context", warmup: int = 1, rounds: int = 5,
                     budget_s: float | None = None) -> list[list[float]]:  # fmt: skip
    """Wall times in ms of each callable of ``cases``: ``warmup`` untimed rounds, then up
    to ``rounds`` timed rounds (at least one; fewer when the next round would overrun
    ``budget_s`` seconds counted from the start).

    The cases take turns (round-robin) rather than running one after the other, so that
    other work on the machine, which comes and goes, slows all cases alike instead of
    whichever happened to run at the time.
    """
    import time

    t_start = time.perf_counter()
    for _ in range(warmup):
        for fn in cases:
            fn()
            ctx.sync()
    last = time.perf_counter() - t_start
    times: list[list[float]] = [[] for _ in cases]
    for r in range(rounds):
        t_round = time.perf_counter()
        if budget_s is not None and r > 0 and t_round - t_start + last > budget_s:
            break
        for i, fn in enumerate(cases):
            ctx.sync()
            t0 = time.perf_counter()
            fn()
            ctx.sync()
            times[i].append((time.perf_counter() - t0) * 1e3)
        last = time.perf_counter() - t_round
    return times
