"""How long the GUI thread may wait, measured against the machine it runs on.

The responsiveness tests bound the longest wait of napari's event loop grossly (a job
that blocked the loop outright would wait seconds). On a machine loaded by other work,
everything the GUI thread does takes longer, and a fixed bound would fail for the
machine's sake, not the code's. :func:`load_factor` times a small fixed piece of work
against its time on this project's 2-core machine when idle; :func:`wait_bound` scales
a bound by it, and never below the fixed bound (a faster or idle machine gets exactly
that).
"""

from __future__ import annotations

import statistics
import time

import numpy as np

#: the reference work's median time on the project's 2-core CPU, idle (2026-12-08:
#: 12-16 ms; 35-43 ms with four busy processes beside it)
IDLE_SECONDS = 0.014


def _work() -> int:
    np.sort(np.random.default_rng(0).random(200_000))  # numpy, as the jobs do
    return sum(i * i for i in range(60_000))  # and Python holding the GIL


def load_factor(repeats: int = 5) -> float:
    """How many times slower than idle this machine runs now (at least 1)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        _work()
        times.append(time.perf_counter() - t0)
    return max(1.0, statistics.median(times) / IDLE_SECONDS)


def wait_bound(fixed: float, factor: float) -> float:
    """``fixed`` seconds, scaled by the machine's :func:`load_factor`."""
    return fixed * factor
