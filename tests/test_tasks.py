"""Decoding the 3-channel output into each task's label, with the paper's anchors."""

import numpy as np
import pytest
import torch

from composite_tasking.tasks import (
    IGNORE,
    PARTS_CLASSES,
    SEMSEG_CLASSES,
    TASK_NAMES,
    TASKS,
    class_probabilities,
    confidence_from_score,
    decode_output,
    decode_task,
    get_task,
)


def logit(p):
    p = torch.as_tensor(p, dtype=torch.float32).clamp(1e-4, 1 - 1e-4)
    return torch.log(p / (1 - p))


def output_at(values_255):
    """A (1, 3, 1, len) output whose sigmoid equals the given RGB anchors / 255."""
    v = torch.tensor(values_255, dtype=torch.float32) / 255.0  # (L, 3)
    return logit(v).T.reshape(1, 3, 1, -1)


def test_task_table_matches_the_public_code_ids():
    assert TASK_NAMES == ("semseg", "parts", "edges", "saliency", "normals")
    assert [t.palette_value for t in TASKS] == [1, 2, 3, 4, 5]
    assert [t.loss_weight for t in TASKS] == [3, 4, 50, 8, 4]
    assert len({t.color for t in TASKS}) == 5
    assert get_task("seg") is TASKS[0] and get_task(4).name == "normals"
    with pytest.raises(KeyError, match="unknown task 'depth'"):
        get_task("depth")


def test_semseg_decodes_to_the_table5_anchor_of_each_class_by_name():
    # Table 5 rows (class name, anchor), typed from the paper in the paper's order
    table5 = [("background", (0, 0, 0)), ("cat", (0, 0, 64)), ("aeroplane", (0, 0, 128)),
              ("chair", (0, 0, 192)), ("pottedplant", (0, 64, 0)), ("sheep", (0, 64, 128)),
              ("bicycle", (0, 128, 0)), ("cow", (0, 128, 64)), ("bird", (0, 128, 128)),
              ("diningtable", (0, 128, 192)), ("sofa", (0, 192, 0)), ("train", (0, 192, 128)),
              ("boat", (128, 0, 0)), ("dog", (128, 0, 64)), ("bottle", (128, 0, 128)),
              ("horse", (128, 0, 192)), ("tvmonitor", (128, 64, 0)), ("bus", (128, 128, 0)),
              ("motorbike", (128, 128, 64)), ("car", (128, 128, 128)),
              ("person", (128, 128, 192))]  # fmt: skip
    out = output_at([a for _, a in table5])
    pred = decode_task(out, "semseg")
    expected = [SEMSEG_CLASSES.index(name) for name, _ in table5]
    assert pred.label[0, 0].tolist() == expected
    # the label ids are the PASCAL VOC ids of the PASCAL-MT files
    assert SEMSEG_CLASSES.index("person") == 15 and SEMSEG_CLASSES.index("aeroplane") == 1
    assert pred.confidence.min() > 0.85  # right on an anchor: as far from another class as it gets


def test_parts_decode_to_table6_anchors():
    table6 = {"head": (0, 0, 255), "torso": (0, 255, 0), "upper_arm": (255, 0, 0),
              "lower_arm": (0, 255, 255), "upper_leg": (255, 0, 255),
              "lower_leg": (255, 255, 0), "background": (0, 0, 0)}  # fmt: skip
    out = output_at(list(table6.values()))
    assert decode_task(out, "parts").label[0, 0].tolist() == [PARTS_CLASSES.index(k) for k in table6]


def test_nearest_anchor_wins_between_anchors_and_confidence_drops_at_the_midpoint():
    # between car (128,128,128) and person (128,128,192): nearer to person
    out = output_at([(128, 128, 170), (128, 128, 160.0)])
    pred = decode_task(out, "semseg")
    assert pred.label[0, 0, 0] == SEMSEG_CLASSES.index("person")
    # the score is the distance from the boundary between the two nearest classes: 0 when
    # equidistant, and the confidence is then the lowest the calibration gives
    score = decode_task(out, "semseg", calibrated=False).confidence[0, 0]
    assert score[1] < 1e-3 and score[0] > 0.02
    assert pred.confidence[0, 0, 1] < 0.1 < pred.confidence[0, 0, 0]


def test_class_probabilities_follow_eq5():
    anchors = get_task("parts").anchors()
    out = output_at([(10, 240, 5)])
    probs = class_probabilities(out, anchors)[0, :, 0, 0]
    o = torch.sigmoid(out[0, :, 0, 0])
    l = 1.0 / ((o - anchors).norm(dim=1) + 1e-8)
    torch.testing.assert_close(probs, torch.softmax(l, 0))
    assert probs.argmax() == PARTS_CLASSES.index("torso")


def test_edges_and_saliency_are_the_mean_of_sigmoids_with_calibrated_log_odds_as_confidence():
    out = torch.tensor([0.0, 2.0, -2.0]).view(1, 3, 1, 1)
    pred = decode_task(out, "edges")
    p = torch.sigmoid(out).mean()
    assert pred.label.item() == pytest.approx(p.item())
    evidence = abs(np.log(p.item() / (1 - p.item())))
    expected = confidence_from_score("edges", np.float32([evidence]), np.array([p.item() >= 0.5]))
    assert pred.confidence.item() == pytest.approx(float(expected[0]), rel=1e-5)
    sure = decode_task(torch.full((1, 3, 1, 1), 8.0), "saliency")
    assert sure.label.item() > 0.99 and sure.confidence.item() > 0.99


@pytest.mark.parametrize("logit", [20.0, 40.0, -20.0, -40.0])
def test_the_probability_score_does_not_saturate_where_p_rounds_to_0_or_1(logit):
    """Beyond a logit of ~17 the float32 probability is exactly 1 (``|2p - 1|``, the old
    confidence, too); the score, the log-odds of p, is still the logit."""
    out = torch.full((1, 3, 1, 1), logit)
    assert (2 * decode_task(out, "edges").label - 1).abs().item() == 1.0
    score = decode_task(out, "edges", calibrated=False).confidence.item()
    assert score == pytest.approx(abs(logit), rel=1e-4)
    from composite_tasking.prediction import decode_labels

    pal = np.full((1, 1), get_task("edges").palette_value, np.uint8)
    got = decode_labels(out[0].numpy(), pal, ["edges"])["edges"].confidence[0, 0]
    assert got == pytest.approx(decode_task(out, "edges").confidence.item(), rel=1e-6)


def test_the_normals_score_is_the_log_length_so_long_outputs_stay_apart():
    lengths = torch.tensor([0.5, 3.0, 300.0, 3000.0])
    out = torch.zeros(1, 3, 1, 4)
    out[0, 2, 0] = lengths
    torch.testing.assert_close(decode_task(out, "normals", calibrated=False).confidence[0, 0], lengths.log())
    conf = decode_task(out, "normals").confidence[0, 0]
    assert (conf.diff() >= 0).all() and conf[1] > conf[0] and ((conf > 0) & (conf <= 1)).all()


def test_normals_are_unit_vectors():
    out = torch.randn(2, 3, 5, 7) * 3
    pred = decode_task(out, "normals")
    torch.testing.assert_close(pred.label.norm(dim=1), torch.ones(2, 5, 7))
    assert ((pred.confidence > 0) & (pred.confidence < 1)).all()


def test_decoding_by_palette_marks_unrequested_pixels_invalid_in_every_label():
    out = torch.randn(1, 3, 4, 6)
    palette = torch.tensor([[[0, 1, 2, 3, 4, 5]] * 4])
    preds = decode_output(out, palette)
    assert set(preds) == set(TASK_NAMES)
    for task in TASKS:
        pred = preds[task.name]
        col = task.palette_value
        assert pred.valid[0, :, col].all() and pred.valid.sum() == 4
        assert (pred.confidence[~pred.valid] == 0).all()
        if task.kind == "classes":
            assert (pred.label[~pred.valid] == IGNORE).all()
            assert (pred.label[pred.valid] < task.num_classes).all()
        elif task.kind == "probability":
            assert torch.isnan(pred.label[~pred.valid]).all()
            assert not torch.isnan(pred.label[pred.valid]).any()
        else:
            assert (pred.label.permute(0, 2, 3, 1)[~pred.valid] == 0).all()
    # a palette with only no-task pixels decodes to nothing
    assert decode_output(out, torch.zeros(1, 4, 6, dtype=torch.long)) == {}


def test_anchors_are_in_the_sigmoid_range_and_distinct():
    for task in TASKS:
        if task.kind == "classes":
            a = task.anchors()
            assert a.min() >= 0 and a.max() <= 1
            assert len(np.unique(a.numpy(), axis=0)) == task.num_classes
            torch.testing.assert_close(a * 255, torch.tensor(task.anchors_255, dtype=torch.float32))


def test_numpy_decode_labels_equals_torch_decode_task():
    """prediction.decode_labels (numpy, only at the pixels asked for: the writer processes
    use it without torch) gives decode_task's labels and confidences (torch, the whole
    map, used by training and evaluation), up to float rounding."""
    from composite_tasking.prediction import THRESHOLD, decode_labels

    rng = np.random.default_rng(0)
    h, w = 48, 64
    out = (rng.normal(size=(3, h, w)) * 3).astype(np.float32)
    out[:, :8] *= 40  # saturated sigmoids: |2p - 1| would be exactly 1 there
    out[:, 8:12] *= 1000  # raw normals in the thousands
    pal = rng.integers(0, len(TASKS) + 1, (h, w)).astype(np.uint8)
    got = decode_labels(out, pal, TASK_NAMES)
    assert set(got) == set(TASK_NAMES)
    o = torch.from_numpy(out)[None]
    for task in TASKS:
        valid = torch.from_numpy(pal == task.palette_value)[None]
        ref = decode_task(o, task, valid)
        v = valid[0].numpy()
        g = got[task.name]
        assert np.isnan(g.confidence[~v]).all()
        np.testing.assert_allclose(g.confidence[v], ref.confidence[0].numpy()[v], rtol=1e-5, atol=1e-6)
        if task.kind == "classes":
            assert (g.label[~v] == IGNORE).all()
            # saturated sigmoids (the first rows) sit at exact ties of several anchors,
            # which the two decoders may break differently (the confidence is the same)
            v = v.copy()
            v[:12] = False
            assert (g.label[v] == ref.label[0].numpy()[v]).mean() > 0.999
        elif task.kind == "probability":
            p = ref.label[0].numpy()
            np.testing.assert_allclose(g.prob[v], p[v], rtol=1e-5, atol=1e-6)
            assert np.isnan(g.prob[~v]).all() and (g.label[~v] == IGNORE).all()
            assert ((g.label[v] == 1) == (p[v] >= THRESHOLD)).mean() > 0.999
        else:
            n = ref.label[0].numpy().transpose(1, 2, 0)
            np.testing.assert_allclose(g.label[v], n[v], rtol=1e-5, atol=1e-6)
            assert (g.label[~v] == 0).all()
    # a task the palette asks nowhere, or one not wanted, is left out
    assert set(decode_labels(out, np.zeros_like(pal), TASK_NAMES)) == set()
    assert set(decode_labels(out, pal, ("edges",))) == {"edges"}


def test_numpy_decode_labels_confidence_stays_in_range_at_a_class_boundary():
    """A sigmoid output almost equidistant from two anchors: the numpy decoder ranks the
    anchors by a matmul whose rounding may swap the two nearest; it keeps the exact
    nearest, so the confidence is never negative (the store refuses values below 0)."""
    from composite_tasking.prediction import decode_labels

    o = np.array([2.3929693698883057, 0.10005974769592285, 0.10005925595760345], np.float32).reshape(3, 1, 1)
    pal = np.full((1, 1), get_task("parts").palette_value, np.uint8)
    got = decode_labels(o, pal, ["parts"])["parts"]
    assert 0.0 <= got.confidence[0, 0] <= 1.0
    ref = decode_task(torch.from_numpy(o)[None], "parts")
    d = np.linalg.norm(get_task("parts").anchors_numpy() - 1 / (1 + np.exp(-o.reshape(3))), axis=1)
    assert got.label[0, 0] in set(np.flatnonzero(d <= d.min() + 1e-6)) and ref.confidence.min() >= 0
