"""Effort (composite_tasking.effort), confidence AUROC and reliability
(composite_tasking.training.calibration), and what `ctn evaluate` reports of both."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from composite_tasking.effort import (
    EDGE_TOLERANCE_PX,
    NORMALS_EFFORT_DEG,
    EffortMeter,
    expected_effort,
    low_confidence_regions,
    must_change,
    right_mask,
    task_effort,
)
from composite_tasking.training.calibration import ConfidenceMeter, auroc

CTN = [sys.executable, "-m", "composite_tasking.cli"]


def _unit(deg: float) -> np.ndarray:
    """A unit normal ``deg`` degrees away from (0, 0, 1)."""
    r = math.radians(deg)
    return np.array([math.sin(r), 0.0, math.cos(r)], np.float32)


# ------------------------------------------------------------------------------ effort


def test_class_effort_counts_changed_pixels_and_8_connected_strokes():
    truth = np.zeros((10, 10), np.uint8)
    truth[2:6, 2:6] = 15  # a person
    truth[9, :] = 255  # ignore: never counted
    label = truth.copy()
    label[2:4, 2:4] = 0  # 4 pixels of the person missed
    label[4, 4] = 3  # touches the block above only diagonally: the same stroke
    label[0, 8:10] = 7  # 2 pixels elsewhere, a second stroke
    label[9, 0:5] = 1  # ignored truth: whatever the label says
    region = np.ones((10, 10), bool)
    region[:, 9] = False  # the palette asks for semseg everywhere but the last column
    e = task_effort("semseg", label, truth, region)
    # 9 x 9 region pixels with a valid truth; (0, 9) lies outside the region
    assert e["pixels"] == 81
    assert e["changed"] == 4 + 1 + 1
    assert e["share"] == pytest.approx(6 / 81)
    assert e["regions"] == 2
    # from scratch: the background around the person (one component) and the person
    assert e["scratch_share"] == 1.0 and e["scratch_regions"] == 2


def test_scratch_regions_count_every_component_of_every_value():
    truth = np.zeros((10, 10), np.uint8)
    truth[1:3, 1:3] = 1
    truth[6:8, 6:8] = 1  # two separate blobs of class 1
    truth[:, 4] = 2  # a wall of class 2 splits the background into left and right
    e = task_effort("parts", truth, truth)
    assert e["changed"] == 0 and e["regions"] == 0 and e["share"] == 0.0
    assert e["scratch_regions"] == 2 + 1 + 2  # class 0 left/right, class 2, two of class 1


def test_edges_shifted_by_one_pixel_need_no_effort_but_two_do():
    assert EDGE_TOLERANCE_PX == 1
    truth = np.zeros((10, 10), np.uint8)
    truth[:, 4] = 1
    shifted = np.zeros_like(truth)
    shifted[:, 5] = 1
    e = task_effort("edges", shifted, truth)
    assert e["changed"] == 0 and e["regions"] == 0
    # the exact per-pixel test (confidence scoring) still calls both columns wrong
    assert (~right_mask("edges", shifted, truth)).sum() == 20
    far = np.zeros_like(truth)
    far[:, 6] = 1  # two pixels off: erase one line, paint the other
    e = task_effort("edges", far, truth)
    assert e["changed"] == 20 and e["regions"] == 2
    # saliency has no tolerance: a one-pixel shift of a mask is a change
    sal = np.zeros((10, 10), np.uint8)
    sal[2:6, 2:6] = 1
    assert task_effort("saliency", np.roll(sal, 1, axis=1), sal)["changed"] == 8


def test_normals_effort_has_a_threshold_between_20_and_25_degrees():
    assert NORMALS_EFFORT_DEG == 22.5
    truth = np.broadcast_to(_unit(0.0), (10, 10, 3)).copy()
    truth[0, 0] = 0.0  # invalid truth
    label = np.broadcast_to(_unit(20.0), (10, 10, 3)).copy()
    label[5:7, 5:8] = _unit(25.0)
    label[0, 1] = 0.0  # no prediction: wrong
    e = task_effort("normals", label, truth)
    assert e["pixels"] == 99 and e["changed"] == 6 + 1 and e["regions"] == 2
    assert e["scratch_regions"] == 1
    right = right_mask("normals", label, truth)
    assert right[9, 9] and not right[5, 5] and not right[0, 0] and not right[0, 1]


def test_effort_meter_weights_shares_by_pixels_and_skips_images_without_truth():
    meter = EffortMeter()
    truth = np.zeros((10, 10), np.uint8)
    wrong = truth.copy()
    wrong[0, 0:10] = 1  # 10 of 100 pixels, one stroke
    meter.update("semseg", wrong, truth)
    half = np.zeros((10, 10), bool)
    half[:, :5] = True
    meter.update("semseg", truth, truth, half)  # 50 pixels, all right
    meter.update("semseg", truth, np.full_like(truth, 255))  # no valid truth: not an image of semseg
    meter.update_batch("edges", np.zeros((2, 10, 10), np.uint8), np.zeros((2, 10, 10), np.uint8))
    out = meter.compute()
    assert out["semseg"]["images"] == 2 and out["semseg"]["pixels"] == 150
    assert out["semseg"]["share"] == pytest.approx(100 * 10 / 150)
    assert out["semseg"]["regions"] == 0.5 and out["semseg"]["scratch_regions"] == 1.0
    assert out["edges"]["share"] == 0.0 and out["edges"]["images"] == 2
    assert out["mean"]["share"] == pytest.approx(100 * 10 / 150 / 2) and out["mean"]["tasks"] == 2


def test_region_and_shape_mismatches_name_the_task():
    with pytest.raises(ValueError, match="semseg.*region shape"):
        must_change("semseg", np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.uint8), np.ones((3, 4), bool))
    with pytest.raises(ValueError, match="edges.*label shape"):
        right_mask("edges", np.zeros((4, 5), np.uint8), np.zeros((4, 4), np.uint8))


def test_expected_effort_from_a_confidence_map():
    conf = np.full((10, 10), np.nan, np.float32)
    conf[:, :5] = 0.9
    conf[1:3, 1:3] = 0.2  # a low-confidence blob of 4 pixels
    conf[8, 4] = 0.4  # and one of a single pixel
    e = expected_effort(conf)
    assert e["pixels"] == 50 and e["regions"] == 2
    assert e["changed"] == pytest.approx(45 * 0.1 + 4 * 0.8 + 0.6, rel=1e-5)
    assert e["share"] == pytest.approx(e["changed"] / 50)
    regions = low_confidence_regions(conf)
    assert [r["bbox"] for r in regions] == [[1, 1, 3, 3], [8, 4, 9, 5]]
    assert regions[0]["pixels"] == 4 and regions[0]["expected"] == pytest.approx(3.2, rel=1e-5)
    assert math.isnan(expected_effort(np.full((3, 3), np.nan, np.float32))["share"])


# ------------------------------------------------------------------------ calibration


def test_auroc_on_hand_made_scores():
    right = np.array([True, True, True, False, False])
    assert auroc([0.9, 0.8, 0.7, 0.2, 0.1], right) == 1.0
    assert auroc([0.1, 0.2, 0.3, 0.8, 0.9], right) == 0.0
    assert auroc([0.5] * 5, right) == 0.5
    # one tie across the classes (0.7 right vs 0.7 wrong) of the 6 pairs counts half
    assert auroc([0.9, 0.7, 0.1, 0.7, 0.05], [True, True, False, False, False]) == pytest.approx(5.5 / 6)
    assert math.isnan(auroc([0.1, 0.2], [True, True]))
    with pytest.raises(ValueError, match="NaN"):
        auroc([0.1, np.nan], [True, False])


def test_confidence_meter_reliability_and_a_capped_sample():
    conf = torch.tensor([[[0.05, 0.15, 0.95, 0.95], [0.95, 0.95, 0.5, 0.0]]])  # (1, 2, 4)
    right = torch.tensor([[[False, False, True, True], [True, False, True, True]]])
    valid = torch.ones_like(right)
    valid[0, 1, 3] = False  # not scored
    meter = ConfidenceMeter()
    meter.update("saliency", conf, right, valid)
    out = meter.compute()["saliency"]
    assert out["pixels"] == 7 and out["sampled"] == 7
    bins = out["reliability"]
    assert [b["count"] for b in bins] == [1, 1, 0, 0, 0, 1, 0, 0, 0, 4]
    assert bins[9]["accuracy"] == 0.75 and bins[9]["confidence"] == pytest.approx(0.95)
    assert math.isnan(bins[2]["accuracy"])
    assert out["ece"] == pytest.approx((0.05 + 0.15 + 0.5 + 4 * 0.2) / 7, rel=1e-5)
    assert out["auroc"] == pytest.approx(auroc(conf[valid].numpy(), right[valid].numpy()))

    # beyond the cap the AUROC comes from a seeded uniform sample: same data, same number
    rng = np.random.default_rng(0)
    c = rng.random((4, 50, 50)).astype(np.float32)
    r = rng.random((4, 50, 50)) < c  # right more often where confident
    runs = []
    for _ in range(2):
        m = ConfidenceMeter(cap=3000, seed=7)
        for k in range(4):
            m.update("normals", c[k], r[k])
        runs.append(m.compute()["normals"])
    assert runs[0]["sampled"] == 3000 and runs[0]["pixels"] == 10000
    assert runs[0]["auroc"] == runs[1]["auroc"]
    assert runs[0]["auroc"] == pytest.approx(auroc(c, r), abs=0.03)
    assert sum(b["count"] for b in runs[0]["reliability"]) == 10000  # the table is exact


def test_ctn_evaluate_json_reports_effort_and_confidence():
    res = subprocess.run([*CTN, "evaluate", "--model", "default", "--data", "synthetic:seed=5,n=2,size=64",
                          "--json"], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert res.returncode == 0, res.stderr
    result = json.loads(res.stdout)
    tasks = ("semseg", "parts", "edges", "saliency", "normals")
    effort, confidence = result["effort"], result["confidence"]
    for task in tasks:
        e = effort[task]
        assert 0.0 <= e["share"] <= 100.0 and e["scratch_share"] == 100.0, task
        assert e["images"] >= 1 and e["pixels"] > 0 and e["scratch_regions"] >= 1, task
        c = confidence[task]
        assert c["auroc"] is None or 0.0 <= c["auroc"] <= 1.0, task
        assert len(c["reliability"]) == 10 and sum(b["count"] for b in c["reliability"]) == c["pixels"]
    # under rule S every task is asked everywhere: each task's pixels are the valid truth
    assert effort["normals"]["pixels"] == 2 * 64 * 64
    # the bundled model labels edges, saliency and normals far cheaper than painting them
    for task in ("edges", "saliency", "normals"):
        assert effort[task]["share"] < 50.0, (task, effort[task])
    assert effort["mean"]["tasks"] == 5



def test_evaluate_table_prints_effort_and_auroc_per_task(capsys):
    from composite_tasking.cli import print_table

    effort = {"edges": {"share": 3.07, "regions": 53.1, "scratch_regions": 3.7},
              "mean": {"share": 3.07, "regions": 53.1, "scratch_regions": 3.7}}
    confidence = {"edges": {"auroc": 0.911, "ece": 0.042}, "normals": {"auroc": float("nan"), "ece": 0.1}}
    print_table({"rule": "S", "images": 2, "loss": 1.0, "metrics": {"edges": {"odsF": 88.9}},
                 "effort": effort, "confidence": confidence})  # fmt: skip
    lines = capsys.readouterr().out.splitlines()
    head = next(i for i, line in enumerate(lines) if "changed %" in line)
    assert lines[head].split() == ["task", "changed", "%", "regions", "scratch", "regions", "AUROC", "ECE"]
    assert lines[head + 1].split() == ["edges", "3.07", "53.1", "3.7", "0.911", "0.042"]
    assert lines[head + 2].split() == ["normals", "-", "-", "-", "-", "0.100"]  # NaN: nothing scored
    assert lines[head + 3].split() == ["mean", "3.07", "53.1", "3.7"]
