"""The ``latency`` benchmark (params, FLOPs and time: CTN vs MHN and STN) runs and its
rows hold together.

Run in-process on a quick Context with small images (64 x 64), ResNet-18 models and one
torch thread, so it takes seconds; the timings are a smoke test, the FLOP counts and their order are
what is checked.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import latency as lat  # noqa: E402
from benchmarks._registry import Context  # noqa: E402

SIZE = 64


@pytest.fixture(scope="module")
def rows():
    mp = pytest.MonkeyPatch()
    mp.setattr(lat, "QUICK_SIZES", (SIZE,))
    mp.setattr(lat, "PRESETS",
               {"CTN": "ctn-resnet18", "MHN": "mhn-resnet18", "STN": "stn-resnet18"})  # fmt: skip
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 threads on a shared machine wait for each other
    try:
        return list(lat.latency(Context(device="cpu", quick=True, threads=1)))
    finally:
        torch.set_num_threads(threads)
        mp.undo()


def _by_unit(rows, unit):
    return {r.case.split(": ", 1)[1]: r for r in rows if r.unit == unit}


def test_every_row_is_positive_and_of_the_latency_benchmark(rows):
    assert {r.unit for r in rows} == {"params", "ms", "GFLOP"}
    for r in rows:
        assert r.benchmark == "latency"
        assert r.value is not None and r.value > 0, r
        assert r.ratio is not None and r.ratio > 0, r
    sizes = {r.extra["size"] for r in rows if r.unit != "params"}
    assert sizes == {SIZE}
    assert all(r.case.startswith(f"{SIZE}x{SIZE}: ") for r in rows if r.unit != "params")


def test_both_model_kinds_and_the_baselines_are_present(rows):
    kinds = {r.extra["model"] for r in rows}
    assert kinds == {"CTN", "MHN", "STN"}
    ms, gf = _by_unit(rows, "ms"), _by_unit(rows, "GFLOP")
    assert set(ms) <= set(gf)  # every timed case has its FLOPs
    assert set(gf) - set(ms) == {"CTN, 1 composite pass, plain conditioning"}
    assert {"MHN, 1 encoding + 5 heads", "STN, 5 networks", lat.REF} <= set(ms)


def test_parameters_follow_the_models(rows):
    assert [r.case for r in rows if r.unit == "params"] == [
        "CTN: parameters", "MHN: parameters", "STN: parameters"]
    params = {r.extra["model"]: r for r in rows if r.unit == "params"}
    total = {k: r.value for k, r in params.items()}
    assert total["CTN"] < total["MHN"] < total["STN"]
    assert params["CTN"].ratio == 1.0
    for k, r in params.items():
        assert r.ratio == pytest.approx(total[k] / total["CTN"])
        e = r.extra
        assert e["encoder"] + e["task_mlp"] + e["decoder"] + e["other"] == e["total"] == r.value


def test_flops_are_ordered_as_the_architectures_say(rows):
    gf = {c: r.extra["flops"] for c, r in _by_unit(rows, "GFLOP").items()}
    comp = gf[lat.REF]
    assert gf["STN, 5 networks"] > gf["MHN, 1 encoding + 5 heads"] > comp
    assert gf["CTN, 5 S passes sharing 1 encoding"] > comp
    assert gf["CTN, 5 full S passes"] > gf["CTN, 5 S passes sharing 1 encoding"]
    # encoder + decoder = one composite pass (both counted on the same mosaic palette)
    assert gf["CTN, encoder only"] + gf["CTN, decoder only (1 palette)"] == comp
    # the fast conditioning counts fewer FLOPs than the plain path; Rrnd mixes more cells
    plain = gf["CTN, 1 composite pass, plain conditioning"]
    assert comp < gf["CTN, 1 composite pass, Rrnd palette"] <= plain
    # 5 full S passes = the shared-encoding case + 4 more encodings
    extra_encodes = gf["CTN, 5 full S passes"] - gf["CTN, 5 S passes sharing 1 encoding"]
    assert extra_encodes == 4 * gf["CTN, encoder only"]


def test_ratios_compare_like_with_like(rows):
    for unit in ("ms", "GFLOP"):
        by = _by_unit(rows, unit)
        ref = by[lat.REF]
        assert ref.ratio == 1.0
        for r in by.values():
            assert r.ratio == pytest.approx(r.value / ref.value, rel=1e-6 if unit == "ms" else 1e-3)
    gf = _by_unit(rows, "GFLOP")
    for r in gf.values():
        assert r.ratio == pytest.approx(r.extra["flops"] / gf[lat.REF].extra["flops"])
    ms = _by_unit(rows, "ms")
    for c, r in ms.items():
        assert r.extra["flops"] == gf[c].extra["flops"]
        assert len(r.extra["times_ms"]) == 1  # --quick: one round
