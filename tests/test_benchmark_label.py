"""The ``label`` benchmark runs (``--quick``) and reports every row with a positive value.

Run as a subprocess, as a user runs it; ``--quick`` keeps it small (8 JPEGs of 64 x 64,
20 vs 100 images of 32 x 32 for the memory rows), so the numbers are a smoke test, not
measurements.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "benchmarks" / "run.py"


@pytest.fixture(scope="module")
def label_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench-label") / "label.json"
    r = subprocess.run([sys.executable, str(RUN), "--only", "label", "--quick", "--threads", "1",
                        "--json", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=900)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    return r, json.loads(out.read_text(encoding="utf-8"))


def test_label_benchmark_rows(label_run):
    r, data = label_run
    assert data["failed"] == []
    rows = {row["extra"]["key"]: row for row in data["rows"]}
    assert all(row["benchmark"] == "label" for row in data["rows"])
    expected = {"peak_fp32_matmul", "peak_fp32_conv", "model_ips_64_b4", "model_gflops_64_b4", "model_ips_128_b2",
                "model_gflops_128_b2", "e2e_mosaic", "e2e_R2", "cli_mosaic",
                "mem_peak_20", "mem_peak_100"}  # fmt: skip
    expected |= {f"phase_{rule}_{p}" for rule in ("mosaic", "R2")
                 for p in ("read", "palette", "forward", "decode", "write", "other")}  # fmt: skip
    timings = ("read", "palette", "predict", "wait", "hand", "finish", "other")
    expected |= {f"timing_{rule}_{k}" for rule in ("mosaic", "R2") for k in (*timings, "writers_busy")}
    expected |= {"store_writes_thread", "store_writes_threads", "store_writes_processes",
                 "store_writes_processes_pipe"}  # fmt: skip
    if Path("/dev/shm").is_dir():
        expected.add("store_writes_processes_shm")
    assert expected <= set(rows), sorted(expected - set(rows))
    for key, row in rows.items():
        if key.startswith(("phase_", "timing_")):
            continue
        assert row["value"] is not None and row["value"] > 0, (key, row)
        assert row["ratio"] is None or row["ratio"] > 0, (key, row)
    # throughput: end-to-end over model-only at the same size; forward time is measured
    for key in ("e2e_mosaic", "e2e_R2", "cli_mosaic"):
        assert rows[key]["unit"] == "images/s" and rows[key]["ratio"] > 0
    assert rows["phase_mosaic_forward"]["value"] > 0 and rows["phase_R2_forward"]["value"] > 0
    assert rows["phase_mosaic_write"]["value"] > 0 and rows["phase_mosaic_read"]["value"] > 0
    # the phases of a labelling add up to its time (shares sum to 1)
    for rule in ("mosaic", "R2"):
        shares = [rows[f"phase_{rule}_{p}"]["ratio"] for p in ("read", "palette", "forward",
                                                               "decode", "write", "other")]  # fmt: skip
        assert sum(shares) == pytest.approx(1.0, abs=1e-6)
        # the pipelined runs' own clock: the labelling thread's time, all of it
        shares = [rows[f"timing_{rule}_{k}"]["ratio"] for k in timings]
        assert sum(shares) == pytest.approx(1.0, abs=1e-6) and min(shares) >= 0
        assert rows[f"timing_{rule}_predict"]["value"] > 0  # on a CPU the forward itself
        busy = rows[f"timing_{rule}_writers_busy"]
        assert busy["value"] > 0 and 0 < busy["ratio"] <= 1 and busy["extra"]["writers"] >= 1
    # roofline: FLOPs counted, multiply-add = 2 FLOPs, fraction of a measured peak
    g = rows["model_gflops_64_b4"]["extra"]
    assert g["flops_per_multiply_add"] == 2
    assert g["flops_per_image"] > 1e9 and g["peak_flops_per_s"] > 0
    # memory: both children measured, in MB, ratio to the smaller run
    assert rows["mem_peak_20"]["unit"] == "MB" and rows["mem_peak_20"]["ratio"] == 1.0
    assert rows["mem_peak_100"]["value"] > 100  # torch alone is more than that
    # the printed table has the rows
    assert "| label " in r.stdout and "ratio (label):" in r.stdout
