"""Metrics of training/metrics.py against hand-computed cases and the paper's tables."""

import math

import numpy as np
import pytest
import torch

from composite_tasking.tasks import IGNORE, decode_task, get_task
from composite_tasking.training.metrics import (
    PRIMARY,
    EdgeMeter,
    NormalsMeter,
    SaliencyMeter,
    SegmentationMeter,
    TaskMetrics,
    delta_m,
    edge_nms,
    has_person,
    primary,
)

# --------------------------------------------------------------------- segmentation


def test_segmentation_by_hand():
    gt = np.array([[0, 0, 1, 1], [2, 2, 2, 255]])
    pr = np.array([[0, 1, 1, 1], [2, 2, 0, 1]])
    r = SegmentationMeter(4).compute()  # empty meter: nothing present
    assert math.isnan(r["mIoU"]) and math.isnan(r["pixel_acc"])
    m = SegmentationMeter(4)
    m.update(pr, gt)
    r = m.compute()
    # class 0: TP 1 (0,0); FP 1 (1,2); FN 1 (0,1) -> 1/3
    # class 1: TP 2; FP 1 (0,1); FN 0 -> 2/3   (pixel (1,3) is ignored)
    # class 2: TP 2; FP 0; FN 1 -> 2/3
    # class 3: never in GT nor prediction -> NaN, not in the mean
    assert r["IoU"][:3] == pytest.approx([100 / 3, 200 / 3, 200 / 3])
    assert math.isnan(r["IoU"][3])
    assert r["mIoU"] == pytest.approx((100 / 3 + 400 / 3) / 3)
    assert r["pixel_acc"] == pytest.approx(100 * 5 / 7)


def test_segmentation_class_only_predicted_counts_as_zero():
    m = SegmentationMeter(3)
    m.update(np.array([[0, 2]]), np.array([[0, 0]]))
    r = m.compute()
    # class 0: TP 1, FN 1 -> 50; class 2: FP 1 -> 0; class 1: absent -> NaN
    assert r["IoU"][0] == pytest.approx(50) and r["IoU"][2] == 0 and math.isnan(r["IoU"][1])
    assert r["mIoU"] == pytest.approx(25)


def test_segmentation_ignore_and_valid_mask_and_images(rng):
    gt = rng.integers(0, 21, (3, 16, 16))
    gt[:, :4] = IGNORE
    pred = gt.copy()
    pred[:, :4] = rng.integers(0, 21, (3, 4, 16))  # garbage on ignored pixels
    valid = np.ones_like(gt, dtype=bool)
    valid[:, :, 8:] = False
    pred[:, :, 8:] = 255  # decode_task's value outside the valid mask
    pred[2] = 0  # image 2 is wrong everywhere but is excluded
    m = SegmentationMeter(21)
    m.update(torch.from_numpy(pred), torch.from_numpy(gt), torch.from_numpy(valid),
             images=[True, True, False])  # fmt: skip
    r = m.compute()
    assert r["mIoU"] == pytest.approx(100) and r["pixel_acc"] == pytest.approx(100)
    assert m.confusion.sum() == 2 * 12 * 8
    assert m.num_images == 2


def test_segmentation_out_of_range_prediction_is_a_miss():
    m = SegmentationMeter(2)
    m.update(np.array([[0, 255]]), np.array([[0, 1]]))
    r = m.compute()
    assert r["IoU"] == pytest.approx([100, 0])
    assert r["pixel_acc"] == pytest.approx(50)


def test_segmentation_accumulates_over_batches(rng):
    gt = rng.integers(0, 7, (6, 20, 20))
    pred = np.where(rng.random(gt.shape) < 0.7, gt, rng.integers(0, 7, gt.shape))
    one, two = SegmentationMeter(7), SegmentationMeter(7)
    one.update(pred, gt)
    for i in range(0, 6, 2):
        two.update(pred[i : i + 2], gt[i : i + 2])
    assert one.compute() == two.compute()


def test_has_person():
    parts = np.full((3, 4, 4), IGNORE)
    parts[1] = 0
    parts[2, 0, 0] = 3
    assert has_person(parts).tolist() == [False, False, True]
    assert has_person(parts[2]) is True
    sem = np.zeros((2, 4, 4), int)
    sem[1, 2, 2] = 15  # person in VOC order
    assert has_person(sem, kind="semseg").tolist() == [False, True]
    with pytest.raises(ValueError):
        has_person(sem, kind="depth")


# ------------------------------------------------------------------------- saliency


def test_saliency_by_hand():
    gt = np.array([[[1, 1, 0, 0]], [[0, 0, 0, 255]]])
    pr = np.array([[[0.9, 0.4, 0.6, 0.1]], [[0.1, 0.1, 0.1, 0.9]]])
    m = SaliencyMeter(thresholds=[0.3, 0.5], beta_squared=1.0)
    m.update(pr, gt)
    # image 0, t=0.3: pred {0,1,2} -> TP 2, P 2/3, R 1, IoU 2/3
    #          t=0.5: pred {0,2}   -> TP 1, P 1/2, R 1/2, IoU 1/3
    # image 1 (pixel 3 ignored): empty GT, empty prediction at both thresholds
    #          -> P 0, R 0, IoU 1 (ASTMT's conventions)
    c = m.curves()
    assert c["precision"] == pytest.approx([1 / 3, 1 / 4])
    assert c["recall"] == pytest.approx([1 / 2, 1 / 4])
    assert c["iou"] == pytest.approx([5 / 6, 2 / 3])
    r = m.compute()
    f03 = 2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2)
    assert r["maxF"] == pytest.approx(100 * f03)
    fb = 1.3 * (1 / 3) * (1 / 2) / (0.3 * (1 / 3) + 1 / 2)
    assert r["maxF_beta03"] == pytest.approx(100 * fb)
    assert r["max_mIoU"] == pytest.approx(100 * 5 / 6)
    assert r["threshold"] == pytest.approx(0.3)


def test_saliency_threshold_is_inclusive_and_perfect_is_100():
    gt = np.array([[[1, 0]]])
    m = SaliencyMeter(thresholds=[0.5])
    m.update(np.array([[[0.5, 0.49]]]), gt)
    r = m.compute()
    assert r["maxF"] == pytest.approx(100) and r["max_mIoU"] == pytest.approx(100)


def test_saliency_ignore_and_valid_mask(rng):
    gt = (rng.random((4, 32, 32)) > 0.5).astype(np.uint8)
    pred = gt.astype(np.float32) * 0.8 + 0.1
    gt[:, :5] = IGNORE
    pred[:, :5] = rng.random((4, 5, 32))
    valid = rng.random(gt.shape) > 0.3
    pred[~valid] = np.nan  # decode_task's value outside the mask
    m = SaliencyMeter()
    m.update(torch.from_numpy(pred), torch.from_numpy(gt), torch.from_numpy(valid))
    r = m.compute()
    assert r["maxF"] == pytest.approx(100) and r["max_mIoU"] == pytest.approx(100)
    assert m.num_images == 4
    # an image without any evaluated pixel is not counted
    m.update(pred[:1], gt[:1], np.zeros_like(valid[:1]))
    assert m.num_images == 4


# -------------------------------------------------------------------------- normals


def _vec(*v):
    return np.array(v, dtype=np.float64)


def test_normals_by_hand():
    # four pixels (1 x 4 image): errors 0, 90, 45, and an invalid (zero) label
    gt = np.stack([_vec(0, 0, 1), _vec(0, 0, 1), _vec(1, 0, 0), _vec(0, 0, 0)], 1)
    pr = np.stack([_vec(0, 0, 3), _vec(2, 0, 0), _vec(1, 1, 0), _vec(1, 0, 0)], 1)
    gt, pr = gt[None, :, None, :], pr[None, :, None, :]  # (1, 3, 1, 4)
    m = NormalsMeter()
    m.update(pr, gt)
    r = m.compute()
    assert m.count == 3
    assert r["mean"] == pytest.approx(45)
    assert r["median"] == pytest.approx(45, abs=1e-3)
    assert r["rmse"] == pytest.approx(math.sqrt((0 + 90**2 + 45**2) / 3))
    assert r["11.25"] == pytest.approx(100 / 3)
    assert r["22.5"] == pytest.approx(100 / 3)
    assert r["30"] == pytest.approx(100 / 3)


def test_normals_perfect_valid_mask_and_zero_prediction(rng):
    gt = rng.normal(size=(2, 3, 8, 8))
    gt /= np.linalg.norm(gt, axis=1, keepdims=True)
    gt[:, :, 0] = 0  # invalid rows
    pred = torch.from_numpy(gt * 7.0)
    m = NormalsMeter()
    m.update(pred, torch.from_numpy(gt))
    r = m.compute()
    assert r["mean"] == pytest.approx(0, abs=1e-6)
    assert r["median"] == pytest.approx(0, abs=1e-3)
    assert r["rmse"] == pytest.approx(0, abs=1e-6)
    assert r["11.25"] == r["22.5"] == r["30"] == pytest.approx(100)
    assert m.count == 2 * 7 * 8
    # outside the valid mask the prediction may be anything (decode_task gives zeros)
    valid = np.zeros((2, 8, 8), bool)
    valid[:, 4:] = True
    bad = pred.clone()
    bad[:, :, :4] = 0
    m2 = NormalsMeter()
    m2.update(bad, gt, valid)
    assert m2.compute()["mean"] == pytest.approx(0, abs=1e-6)
    # a zero prediction on a valid pixel is 90 degrees off
    m3 = NormalsMeter()
    m3.update(np.zeros((1, 3, 1, 1)), _vec(0, 0, 1).reshape(1, 3, 1, 1))
    assert m3.compute()["mean"] == pytest.approx(90)


def test_normals_median_of_even_count_and_accumulation():
    m = NormalsMeter()
    # angles 10 and 20 degrees, in two updates
    for deg in (10, 20):
        a = math.radians(deg)
        pred = _vec(math.sin(a), 0, math.cos(a)).reshape(1, 3, 1, 1)
        m.update(pred, _vec(0, 0, 1).reshape(1, 3, 1, 1))
    r = m.compute()
    assert r["mean"] == pytest.approx(15)
    assert r["median"] == pytest.approx(15, abs=1e-3)
    assert r["11.25"] == pytest.approx(50) and r["22.5"] == pytest.approx(100)


# ---------------------------------------------------------------------------- edges


def _line_image(col, n=256, value=1.0):
    a = np.zeros((1, n, n), np.float32)
    a[0, :, col] = value
    return a


def test_edge_tolerance_is_0_0075_of_the_diagonal():
    m = EdgeMeter()
    assert m.max_dist((256, 256)) == pytest.approx(0.0075 * math.hypot(256, 256))
    assert 2.7 < m.max_dist((256, 256)) < 2.72


@pytest.mark.parametrize("thin", ["nms", None])
@pytest.mark.parametrize("shift,expected", [(0, 100.0), (1, 100.0), (2, 100.0), (10, 0.0)])
def test_edge_shift(thin, shift, expected):
    gt = _line_image(100).astype(np.uint8)
    m = EdgeMeter(thin=thin)
    m.update(_line_image(100 + shift), gt)
    assert m.compute()["odsF"] == pytest.approx(expected)


def test_edge_by_hand():
    # GT: one column of 256 pixels. Prediction: the column shifted by 1 px (matched),
    # plus 64 pixels of another column 20 px away (false positives), 128 GT pixels of
    # the first column missing from the prediction (rows 128..255).
    gt = _line_image(100).astype(np.uint8)
    pr = np.zeros_like(gt, dtype=np.float32)
    pr[0, :128, 101] = 0.8
    pr[0, :64, 120] = 0.8
    m = EdgeMeter(thin=None)
    m.update(pr, gt)
    r = m.compute()
    # predicted rows 0..127 of column 101 reach GT rows up to 127 + 2 (|dy| <= 2.7)
    prec, rec = 128 / 192, 130 / 256
    assert r["precision"] == pytest.approx(100 * prec)
    assert r["recall"] == pytest.approx(100 * rec)
    assert r["odsF"] == pytest.approx(100 * 2 * prec * rec / (prec + rec))
    assert r["threshold"] <= 0.8


def test_edge_threshold_selects_best_f():
    gt = _line_image(50).astype(np.uint8)
    pr = _line_image(50, value=0.6)
    pr[0, :, 200] = 0.3  # a weaker false edge far away
    m = EdgeMeter(thresholds=[0.2, 0.5], thin=None)
    m.update(pr, gt)
    c = m.curves()
    # t=0.2: P 1/2, R 1; t=0.5: P 1, R 1
    assert c["precision"] == pytest.approx([0.5, 1.0])
    assert c["recall"] == pytest.approx([1.0, 1.0])
    r = m.compute()
    assert r["odsF"] == pytest.approx(100) and r["threshold"] == pytest.approx(0.5)


def test_edge_ods_is_over_the_split_not_per_image():
    # image A is best at a low threshold, image B at a high one; ODS picks one threshold
    gt = np.concatenate([_line_image(50), _line_image(50)]).astype(np.uint8)
    pr = np.concatenate([_line_image(50, value=0.3), _line_image(50, value=0.9)])
    pr[1, :, 200] = 0.4  # B: a false edge that only a low threshold admits
    m = EdgeMeter(thresholds=[0.2, 0.5], thin=None)
    m.update(pr, gt)
    # t=0.2: matched 512/768 predictions, recall 1 -> F = 0.8
    # t=0.5: precision 1, recall 1/2 -> F = 2/3
    assert m.compute()["odsF"] == pytest.approx(80)


def test_edge_ignore_and_valid_mask():
    gt = _line_image(100).astype(np.uint8)
    pr = _line_image(100)
    pr[0, :, 180] = 1.0  # false edge ...
    gt[0, :, 170:190] = IGNORE  # ... on ignored pixels
    valid = np.ones_like(gt, dtype=bool)
    valid[0, :, 220:] = False
    pr[0, :, 230] = 1.0  # false edge outside the valid mask
    gt[0, :, 240] = 1  # GT edge outside the valid mask: not required
    m = EdgeMeter()
    m.update(torch.from_numpy(pr), torch.from_numpy(gt), torch.from_numpy(valid))
    r = m.compute()
    assert r["odsF"] == pytest.approx(100)
    assert m.sum_r == 256


def test_edge_nms_thins_blurred_edges():
    gt = _line_image(100).astype(np.uint8)
    pr = np.zeros_like(gt, dtype=np.float32)
    for d in range(-3, 4):  # a 7-px wide blurred edge, peak on the GT
        pr[0, :, 100 + d] = 1.0 - 0.12 * abs(d)
    keep = edge_nms(pr[0])
    assert keep[:, 100].all() and not keep[:, [97, 98, 99, 101, 102, 103]].any()
    thick = EdgeMeter(thin=None, thresholds=[0.5])
    thick.update(pr, gt)
    thin = EdgeMeter(thin="nms", thresholds=[0.5])
    thin.update(pr, gt)
    # without thinning the columns at +-3 px (beyond 2.7 px) are false positives
    assert thick.compute()["precision"] == pytest.approx(100 * 5 / 7)
    assert thin.compute()["precision"] == pytest.approx(100)
    assert thin.compute()["recall"] == pytest.approx(100)


def test_edge_nms_keeps_one_pixel_lines_of_any_orientation():
    img = np.zeros((64, 64))
    img[10, 5:60] = 1  # horizontal
    img[5:60, 40] = 0.7  # vertical
    i = np.arange(15, 55)
    img[i, i - 10] = 0.9  # diagonal
    keep = edge_nms(img)
    assert keep[img > 0].mean() > 0.95


def test_edge_skeleton_option():
    pytest.importorskip("skimage")
    gt = _line_image(30, n=64).astype(np.uint8)
    pr = np.zeros_like(gt, dtype=np.float32)
    pr[0, :, 29:32] = 0.9  # a 3-px wide binary band: NMS cannot thin a plateau
    m = EdgeMeter(thin="skeleton", thresholds=[0.5])
    m.update(pr, gt)
    r = m.compute()
    assert r["odsF"] == pytest.approx(100, abs=3)
    assert m.sum_p[0] <= 64 + 4


def test_edge_no_ground_truth_is_nan():
    m = EdgeMeter()
    m.update(_line_image(10, n=32), np.zeros((1, 32, 32), np.uint8))
    assert math.isnan(m.compute()["odsF"])


# -------------------------------------------------------------------------- Delta_m

TASKS5 = ("edges", "semseg", "parts", "normals", "saliency")
# Supplementary, Tables 7-15: Delta_m relative to the chosen model (this row).
CHOSEN = (68.60, 62.45, 52.59, 16.93, 67.81)
SUPPLEMENTARY_ROWS = [
    # (table, row), values in TASKS5 order, printed Delta_m
    (("7", "2 convs"), (68.60, 61.93, 51.49, 17.15, 67.56), -0.92),
    (("7", "3 convs"), (68.30, 62.01, 52.28, 17.16, 67.60), -0.68),
    (("8", "1x1"), (66.20, 61.50, 51.05, 17.87, 67.16), -2.89),
    (("9", "6 ch"), (68.50, 62.35, 52.99, 17.08, 67.65), -0.13),
    (("9", "9 ch"), (68.50, 62.42, 52.50, 17.39, 67.89), -0.59),
    (("10", "nearest"), (67.60, 60.92, 51.37, 17.20, 67.51), -1.65),
    (("11", "3 layers"), (68.00, 7.61, 42.62, 16.37, 71.53), -19.77),
    (("11", "9 layers"), (68.70, 62.29, 52.18, 16.95, 67.43), -0.31),
    (("11", "12 layers"), (52.80, 36.46, 13.69, 67.60, 44.93), -94.33),
    (("12", "32"), (68.70, 62.14, 51.86, 16.95, 67.46), -0.47),
    (("12", "64"), (68.60, 62.06, 52.67, 17.06, 67.86), -0.23),
    (("12", "256"), (68.40, 60.36, 51.53, 17.11, 67.35), -1.48),
    (("13", "ResNet18"), (67.40, 60.40, 49.25, 17.25, 66.87), -2.93),
    (("13", "ResNet50"), (69.40, 62.34, 53.81, 16.64, 68.19), 1.12),
    (("13", "ResNet101"), (69.60, 63.75, 55.78, 16.71, 69.55), 2.69),
    (("14", "l1"), (67.60, 58.91, 49.20, 19.77, 67.53), -6.15),
    (("15", "gamma 0"), (68.40, 61.39, 51.93, 17.29, 67.40), -1.19),
    (("15", "gamma 1"), (68.10, 61.99, 51.61, 17.46, 67.05), -1.52),
    (("15", "gamma 3"), (68.70, 61.60, 51.39, 17.06, 67.88), -0.83),
]


def test_delta_m_table7_row2_and_table8():
    base = dict(zip(TASKS5, CHOSEN))
    t7 = dict(zip(TASKS5, (68.60, 61.93, 51.49, 17.15, 67.56)))
    t8 = dict(zip(TASKS5, (66.20, 61.50, 51.05, 17.87, 67.16)))
    assert round(delta_m(t7, base), 2) == -0.92
    assert round(delta_m(t8, base), 2) == -2.89
    assert delta_m(base, base) == 0.0


@pytest.mark.parametrize("where,values,printed", SUPPLEMENTARY_ROWS, ids=lambda x: str(x))
def test_delta_m_supplementary_tables(where, values, printed):
    assert delta_m(dict(zip(TASKS5, values)), dict(zip(TASKS5, CHOSEN))) == pytest.approx(
        printed, abs=0.005
    )


def test_delta_m_table12_512_channels_within_rounding():
    # printed -85.26 %; the printed (rounded) metrics give -85.246 %
    row = dict(zip(TASKS5, (1.40, 11.22, 4.53, 30.87, 18.64)))
    assert delta_m(row, dict(zip(TASKS5, CHOSEN))) == pytest.approx(-85.26, abs=0.02)


def test_delta_m_main_tables():
    stn = dict(zip(TASKS5, (69.50, 63.69, 58.76, 15.58, 69.38)))  # Table 1, S STN
    ctn = dict(zip(TASKS5, (68.60, 62.45, 52.59, 16.93, 67.81)))
    mhn = dict(zip(TASKS5, (68.10, 60.77, 54.21, 16.44, 67.21)))
    assert delta_m(ctn, stn) == pytest.approx(-4.93, abs=0.005)
    assert delta_m(mhn, stn) == pytest.approx(-4.60, abs=0.005)
    # Table 3: four tasks (no semseg), testing rule R3, baseline trained on R3
    t4 = ("edges", "parts", "normals", "saliency")
    r3 = dict(zip(t4, (70.20, 61.19, 18.34, 75.35)))
    r2_on_r3 = dict(zip(t4, (69.70, 59.41, 20.11, 65.21)))
    finetuned = dict(zip(t4, (69.70, 60.91, 18.68, 75.00)))
    assert delta_m(r2_on_r3, r3) == pytest.approx(-6.68, abs=0.005)
    assert delta_m(finetuned, r3) == pytest.approx(-0.87, abs=0.005)


def test_delta_m_nested_results_and_aliases():
    base = {t: {PRIMARY[t]: v, "other": -1.0} for t, v in zip(TASKS5, CHOSEN)}
    model = {t: {PRIMARY[t]: v} for t, v in zip(TASKS5, (68.60, 61.93, 51.49, 17.15, 67.56))}
    assert delta_m(model, base) == pytest.approx(-0.9185, abs=1e-4)
    # one task, lower is better: 10 % more error is -10 %
    assert delta_m({"normal": 22.0}, {"normals": 20.0}) == pytest.approx(-10)
    assert delta_m({"sal": 22.0}, {"saliency": 20.0}) == pytest.approx(10)
    with pytest.raises(KeyError):
        delta_m({"edges": 1.0}, {"semseg": 1.0})


def test_primary_table():
    assert PRIMARY == {"edges": "odsF", "semseg": "mIoU", "parts": "mIoU",
                       "normals": "mean", "saliency": "max_mIoU"}  # fmt: skip


# ---------------------------------------------------------------------- TaskMetrics


def _logit(p):
    p = torch.as_tensor(p, dtype=torch.float32).clamp(0.02, 0.98)
    return torch.log(p / (1 - p))


def _class_output(labels: torch.Tensor, task: str) -> torch.Tensor:
    anchors = get_task(task).anchors()  # (C, 3) in [0, 1]
    return _logit(anchors[labels].permute(0, 3, 1, 2))


def test_task_metrics_with_decoded_predictions():
    n, h, w = 2, 32, 32
    g = torch.Generator().manual_seed(0)
    sem = torch.randint(0, 21, (n, h, w), generator=g)
    parts = torch.randint(0, 7, (n, h, w), generator=g)
    parts[1] = IGNORE  # image without a person
    edges = torch.zeros(n, h, w, dtype=torch.uint8)
    edges[:, :, 10] = 1
    sal = (torch.rand(n, h, w, generator=g) > 0.5).to(torch.uint8)
    normals = torch.nn.functional.normalize(torch.randn(n, 3, h, w, generator=g), dim=1)

    valid = torch.zeros(n, h, w, dtype=torch.bool)
    valid[:, :, :20] = True
    outputs = {
        "semseg": _class_output(sem, "semseg"),
        "parts": _class_output(parts.clamp(max=6), "parts"),
        "edges": _logit(edges.float()).unsqueeze(1).expand(n, 3, h, w),
        "saliency": _logit(sal.float()).unsqueeze(1).expand(n, 3, h, w),
        "normals": normals * 3.0,
    }
    labels = {"semseg": sem, "parts": parts, "edges": edges, "saliency": sal, "normals": normals}
    # ground truth disagrees outside the valid mask: must not matter
    spoiled = {k: v.clone() for k, v in labels.items()}
    spoiled["semseg"][:, :, 25:] = (sem[:, :, 25:] + 1) % 21
    spoiled["normals"][:, :, :, 25:] *= -1
    spoiled["saliency"][:, :, 25:] = 1 - sal[:, :, 25:]
    spoiled["edges"][:, :, 28] = 1

    tm = TaskMetrics()
    for task, out in outputs.items():
        pred = decode_task(out, task, valid)
        if task == "parts":
            tm.update(task, pred, spoiled[task])  # TaskPrediction: its valid is the mask
        else:
            tm.update(task, pred.label, spoiled[task], valid)
    res = tm.compute()
    assert res["semseg"]["mIoU"] == pytest.approx(100)
    assert res["parts"]["mIoU"] == pytest.approx(100)
    assert tm.meters["parts"].num_images == 1  # the image without a person is skipped
    assert res["edges"]["odsF"] == pytest.approx(100)
    assert res["saliency"]["max_mIoU"] == pytest.approx(100)
    assert res["normals"]["mean"] == pytest.approx(0, abs=1e-4)
    prim = primary(res)
    assert prim == TaskMetrics.primary(res)
    assert set(prim) == set(TASKS5)
    assert delta_m(prim, prim) == 0.0


def test_task_metrics_only_updated_tasks_and_reset():
    tm = TaskMetrics(["semseg", "sal"])
    assert set(tm.meters) == {"semseg", "saliency"}
    assert tm.compute() == {}
    tm.update("semseg", np.zeros((1, 4, 4), int), np.zeros((1, 4, 4), int))
    assert set(tm.compute()) == {"semseg"}
    with pytest.raises(KeyError):
        tm.update("normals", np.zeros((1, 3, 4, 4)), np.zeros((1, 3, 4, 4)))
    tm.reset()
    assert tm.compute() == {}


def test_task_metrics_images_flag_for_probability_tasks():
    tm = TaskMetrics(["saliency"])
    gt = np.zeros((2, 4, 4), np.uint8)
    gt[:, :2] = 1
    pred = gt.astype(np.float32)
    pred[1] = 1 - pred[1]  # a wrong image, excluded by the flag
    tm.update("saliency", pred, gt, images=[True, False])
    assert tm.compute()["saliency"]["max_mIoU"] == pytest.approx(100)


def test_speed_200_images_256(rng):
    """The whole suite of meters takes 200 images of 256 x 256 (~5 s on a laptop-class
    CPU: the time is the benchmarks' to check, not a test's) and scores a perfect
    prediction perfectly."""
    n, h, w = 20, 256, 256  # 10 batches of 20 = 200 images
    sem = torch.from_numpy(rng.integers(0, 21, (n, h, w)))
    prob = torch.from_numpy(rng.random((n, h, w)).astype(np.float32))
    binary = (prob > 0.9).to(torch.uint8)
    vec = torch.randn(n, 3, h, w)
    tm = TaskMetrics()
    for _ in range(10):
        tm.update("semseg", sem, sem)
        tm.update("parts", sem % 7, sem % 7)
        tm.update("edges", prob, binary)
        tm.update("saliency", prob, binary)
        tm.update("normals", vec, vec)
    results = tm.compute()
    assert results["semseg"]["mIoU"] == pytest.approx(100)
    assert results["parts"]["mIoU"] == pytest.approx(100)
    assert results["normals"]["mean"] == pytest.approx(0, abs=1e-3)
