"""Synthetic world: scenes per second on one CPU core (target >= 50/s at 256 x 256).

Measured in a child process with every thread pool limited to one thread, so the number
means "one core" whatever the machine. Each scene includes all five exact labels.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._registry import Context, Row, benchmark  # noqa: E402

TARGET = 50.0
_CHILD = """
import json, sys, time
from composite_tasking.synthetic import generate
size, n = int(sys.argv[1]), int(sys.argv[2])
generate(0, 10**6, size)  # warm-up: imports, noise bank
t = time.perf_counter()
for i in range(n):
    generate(0, i, size)
print(json.dumps({"per_s": n / (time.perf_counter() - t)}))
"""


def scenes_per_second(size: int, n: int) -> float:
    env = {**os.environ, **{k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                             "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")}}  # fmt: skip
    out = subprocess.run([sys.executable, "-c", _CHILD, str(size), str(n)], env=env,
                         capture_output=True, text=True, check=True)  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])["per_s"]


@benchmark("synthetic", order=40, ratio_to="the target of 50 scenes/s at 256 x 256")
def run(ctx: Context):
    n = 20 if ctx.quick else 200
    for size in ((128, 256) if ctx.quick else (128, 256, 512)):
        v = scenes_per_second(size, n)
        yield Row("synthetic", f"scenes/s, {size}x{size}, 1 core", v, "scenes/s",
                  ratio=v / TARGET, notes="image + 5 labels", digits=1)  # fmt: skip


if __name__ == "__main__":
    from benchmarks._registry import format_table

    print(format_table(list(run(Context(device="cpu", quick="--quick" in sys.argv, threads=1)))))
