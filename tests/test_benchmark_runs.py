"""The region, stroke, precision, training, gpupath and compile benchmarks run and report what they claim
(quick sizes; timings are not checked, only that the rows are there and consistent)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "region.json"
    r = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--threads", "1",
         "--only", "region,stroke,precision,training,gpupath,compile", "--json", str(out)],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(out.read_text(encoding="utf-8"))["rows"]


def test_region_rows_cover_each_coverage_with_plain_and_region(rows):
    region = [r for r in rows if r["benchmark"] == "region"]
    assert len(region) == 8
    covs = sorted({r["extra"]["coverage"] for r in region})
    assert covs == [0.05, 0.2, 0.5, 1.0]
    for r in region:
        assert r["value"] > 0
        if r["case"].endswith(", plain"):
            assert r["ratio"] == 1.0
        else:
            assert 0 < r["extra"]["decoded_share"] <= 1 and "target" in r["notes"]
    share = {r["extra"]["coverage"]: r["extra"]["decoded_share"] for r in region}
    assert share[0.05] < share[0.2] < share[0.5] <= share[1.0]


def test_stroke_rows(rows):
    stroke = [r for r in rows if r["benchmark"] == "stroke"]
    assert [r["case"].split(", ", 1)[1] for r in stroke] == [
        "full predict (encode + decode + labels) + layer update",
        "full predict on cached features + layer update",
        "re-predict after a 64x64 stroke + layer update",
    ]
    assert stroke[0]["ratio"] == 1.0 and "% of the image" in stroke[2]["notes"]


def test_precision_rows(rows):
    from composite_tasking.device import cpu_has_bf16

    prec = [r for r in rows if r["benchmark"] == "precision"]
    if not cpu_has_bf16():
        assert len(prec) == 1 and "not native" in prec[0]["case"]
        return
    cases = [r["case"] for r in prec]
    assert any(c.endswith("fp32") for c in cases) and any(c.endswith("bf16") for c in cases)
    labels = [r for r in prec if r["unit"] == "%"]
    assert {r["case"].split(":")[0] for r in labels} >= {"semseg", "parts", "edges", "saliency"}
    assert all(0 <= r["value"] <= 100 for r in labels)
    (normals,) = [r for r in prec if r["unit"] == "deg"]
    assert 0 <= normals["value"] < 90


def test_training_rows(rows):
    from composite_tasking.device import cpu_has_bf16

    train = [r for r in rows if r["benchmark"] == "training"]
    assert [r["extra"]["precision"] for r in train] == (["fp32", "bf16"] if cpu_has_bf16() else ["fp32"])
    assert all(r["value"] > 0 and r["unit"] == "images/s" for r in train)
    assert train[0]["ratio"] == 1.0


def test_gpupath_rows_on_a_cpu(rows):
    from composite_tasking.device import cpu_has_bf16

    gp = [r for r in rows if r["benchmark"] == "gpupath"]
    timed = [r for r in gp if r["value"] is not None]
    cases = [r["case"].split(": ", 1)[1] for r in timed]
    expected = ["float32, NCHW", "float32, channels_last"]
    if cpu_has_bf16():
        expected += ["bf16 autocast, NCHW", "bf16 autocast, channels_last",
                     "bf16 autocast, channels_last, plain conditioning"]
    assert cases == expected
    assert timed[0]["ratio"] == 1.0 and all(r["value"] > 0 and r["unit"] == "ms" for r in timed)
    # every fast case computes the same function (float32 layouts to rounding, bf16 to bf16)
    assert timed[1]["extra"]["max_abs_diff"] < 1e-3
    assert all(r["extra"]["max_abs_diff"] < 0.1 for r in timed[2:])
    # the CUDA-only cases say so instead of inventing numbers
    cuda_only = [r for r in gp if r["value"] is None]
    assert len(cuda_only) == 2 and all(r["notes"] == "CUDA only" for r in cuda_only)
    comp = [r for r in rows if r["benchmark"] == "compile"]
    assert len(comp) == 1 and comp[0]["value"] is None and "CUDA only" in comp[0]["notes"]
