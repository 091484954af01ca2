"""The sparse multi-task loss: only requested, labelled pixels count; never NaN."""

import pytest
import torch

from composite_tasking.tasks import get_task
from composite_tasking.training.losses import DEFAULT_WEIGHTS, composite_loss, focal_anchor_loss


def batch(n=2, h=8, w=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = torch.randn(n, 3, h, w, generator=g, requires_grad=True)
    palette = torch.randint(0, 6, (n, h, w), generator=g)
    normals = torch.nn.functional.normalize(torch.randn(n, 3, h, w, generator=g), dim=1)
    targets = {
        "semseg": torch.randint(0, 21, (n, h, w), generator=g),
        "parts": torch.randint(0, 7, (n, h, w), generator=g),
        "edges": torch.randint(0, 2, (n, h, w), generator=g),
        "saliency": torch.randint(0, 2, (n, h, w), generator=g),
        "normals": normals,
    }
    return out, palette, targets


def test_changing_labels_outside_the_palette_does_not_change_the_loss():
    out, palette, targets = batch()
    ref = composite_loss(out, palette, targets)
    changed = {k: v.clone() for k, v in targets.items()}
    for name, t in changed.items():
        outside = palette != get_task(name).palette_value
        if name == "normals":
            t.permute(0, 2, 3, 1)[outside] = torch.tensor([0.0, 0.0, 1.0])
        else:
            t[outside] = (t[outside] + 1) % 2
    again = composite_loss(out, palette, changed)
    for k in ref:
        assert torch.equal(ref[k], again[k]), k
    # and changing a label inside the palette does change that task's loss
    inside = palette == get_task("edges").palette_value
    changed["edges"][inside] = 1 - changed["edges"][inside]
    assert not torch.equal(composite_loss(out, palette, changed)["edges"], ref["edges"])


def test_ignored_and_zero_normals_do_not_count():
    out, palette, targets = batch()
    t2 = {k: v.clone() for k, v in targets.items()}
    sem = palette == 1
    first = sem.nonzero()[0].tolist()
    t2["semseg"][tuple(first)] = 255
    ref_pixels = composite_loss(out, palette, targets).pixels
    assert composite_loss(out, palette, t2).pixels["semseg"] == ref_pixels["semseg"] - 1
    t2["normals"][:, :, :, :] = 0
    res = composite_loss(out, palette, t2)
    assert res.pixels["normals"] == 0 and res["normals"] == 0


def test_a_task_without_pixels_contributes_zero_not_nan_and_backward_works():
    out, _, targets = batch()
    palette = torch.zeros(2, 8, 10, dtype=torch.long)  # no task anywhere
    res = composite_loss(out, palette, targets)
    assert all(float(v.detach()) == 0.0 for v in res.values())
    res["total"].backward()
    assert torch.equal(out.grad, torch.zeros_like(out))


def test_total_is_the_weighted_sum_with_the_paper_weights():
    out, palette, targets = batch()
    res = composite_loss(out, palette, targets)
    assert DEFAULT_WEIGHTS == {"semseg": 3, "parts": 4, "edges": 50, "saliency": 8, "normals": 4}
    expected = sum(DEFAULT_WEIGHTS[k] * res[k] for k in DEFAULT_WEIGHTS)
    torch.testing.assert_close(res["total"], expected)


def test_losses_are_small_for_the_right_answer_and_large_for_the_wrong_one():
    anchors = get_task("semseg").anchors()
    logit = lambda p: torch.log(p.clamp(1e-3, 1 - 1e-3) / (1 - p.clamp(1e-3, 1 - 1e-3)))
    o_right = logit(anchors[[15, 8]])  # person, cat exactly
    good = focal_anchor_loss(o_right, torch.tensor([15, 8]), anchors)
    bad = focal_anchor_loss(o_right, torch.tensor([8, 15]), anchors)
    assert good < 1e-3 < bad and torch.isfinite(good)
    # normals: 1 - cos; opposite vectors give 2
    n = torch.tensor([0.0, 0.0, 1.0]).view(1, 3, 1, 1)
    pal = torch.full((1, 1, 1), 5)
    assert composite_loss(n * 3, pal, {"normals": n})["normals"] == pytest.approx(0.0, abs=1e-6)
    assert composite_loss(-n, pal, {"normals": n})["normals"] == pytest.approx(2.0)


def test_edge_and_saliency_weights():
    out = torch.zeros(1, 3, 1, 2)  # p = 0.5 everywhere: BCE = log 2 per pixel
    y = torch.tensor([[[1, 0]]])
    import math

    e = composite_loss(out, torch.full((1, 1, 2), 3), {"edges": y})["edges"]
    assert float(e) == pytest.approx(math.log(2) * (0.95 + 0.05) / 2, rel=1e-5)
    y3 = torch.tensor([[[1, 0, 0, 0]]])  # 25% positive: weights 0.75 / 0.25
    s = composite_loss(torch.zeros(1, 3, 1, 4), torch.full((1, 1, 4), 4), {"saliency": y3})["saliency"]
    assert float(s) == pytest.approx(math.log(2) * (0.75 + 3 * 0.25) / 4, rel=1e-5)


def test_gradients_are_finite_even_exactly_on_an_anchor():
    anchors = get_task("parts").anchors()
    o = torch.log(anchors[1:2].clamp(1e-6, 1 - 1e-6) / (1 - anchors[1:2].clamp(1e-6, 1 - 1e-6)))
    o = o.clone().requires_grad_(True)
    loss = focal_anchor_loss(o, torch.tensor([1]), anchors)
    loss.backward()
    assert torch.isfinite(o.grad).all()


def test_a_float16_output_with_no_pixel_asked_gives_zero_not_nan():
    """fp16 autocast: summing a large float16 output overflows to inf, and inf * 0 is NaN;
    the loss's zero is taken in float32."""
    out = torch.full((2, 3, 256, 256), -20.0, dtype=torch.float16)
    pal = torch.zeros((2, 256, 256), dtype=torch.long)
    res = composite_loss(out, pal, {"edges": torch.zeros((2, 256, 256), dtype=torch.uint8)})
    assert float(res["total"]) == 0.0
