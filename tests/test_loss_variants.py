"""The loss variants of a recipe's ``loss`` (training/losses.py): the paper's loss stays the
default, ``semantic: distance`` gives the class logits -d^2/T, ``output_penalty`` keeps the
raw output within +-OUTPUT_BOUND; the recipe checks the keys."""

import math

import pytest
import torch

from composite_tasking.tasks import get_task
from composite_tasking.training.losses import OUTPUT_BOUND, composite_loss, focal_anchor_loss
from composite_tasking.training.recipe import RecipeError, builtin_recipe


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def test_the_distance_logits_on_a_hand_made_case():
    # two anchors, one pixel whose sigmoid output is (0.25, 0, 0) (the last two channels
    # are -30: sigmoid 1e-13, so d^2 to the anchors is 0.0625 and 0.5625 up to 1e-13)
    anchors = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    o = torch.tensor([[_logit(0.25), -30.0, -30.0]], dtype=torch.float64)
    t = 0.1
    # logits -0.625 and -5.625: p(class 0) = 1 / (1 + e^-5)
    p0 = 1.0 / (1.0 + math.exp(-5.0))
    for target, p in ((0, p0), (1, 1.0 - p0)):
        want = -((1.0 - p) ** 2) * math.log(p)
        got = focal_anchor_loss(o, torch.tensor([target]), anchors.double(), 2.0, "distance", t)
        assert float(got) == pytest.approx(want, rel=1e-9)
    # gamma 0: the plain cross-entropy
    got = focal_anchor_loss(o, torch.tensor([0]), anchors.double(), 0.0, "distance", t)
    assert float(got) == pytest.approx(-math.log(p0), rel=1e-9)


def test_the_paper_loss_is_the_default_and_unchanged():
    g = torch.Generator().manual_seed(0)
    out = torch.randn(2, 3, 6, 7, generator=g) * 3
    palette = torch.randint(0, 6, (2, 6, 7), generator=g)
    targets = {"semseg": torch.randint(0, 21, (2, 6, 7), generator=g),
               "parts": torch.randint(0, 7, (2, 6, 7), generator=g)}  # fmt: skip
    ref = composite_loss(out, palette, targets)
    for loss in (None, {}, {"semantic": "paper"}, {"semantic": "paper", "temperature": 5.0, "output_penalty": 0}):
        res = composite_loss(out, palette, targets, loss=loss)
        assert set(res) == set(ref)
        for k in ref:
            assert torch.equal(res[k], ref[k]), (loss, k)
    # the paper's eq. (5) by hand on the semseg pixels
    mask = palette == get_task("semseg").palette_value
    s = torch.sigmoid(out.permute(0, 2, 3, 1)[mask])
    d = torch.cdist(s, get_task("semseg").anchors())
    logp = torch.log_softmax(1.0 / d, 1).gather(1, targets["semseg"][mask][:, None])[:, 0]
    assert float(ref["semseg"]) == pytest.approx(float((-(1 - logp.exp()) ** 2 * logp).mean()), rel=1e-4)
    distance = composite_loss(out, palette, targets, loss={"semantic": "distance"})
    assert not torch.equal(distance["semseg"], ref["semseg"])


def test_far_from_every_anchor_the_distance_logits_pull_to_the_target_where_the_paper_pushes_away():
    # semseg background (anchor 0, 0, 0) asked for, the output at +9: sigmoid 0.9999, in
    # the far corner (d = 1.73 from the target, 0.6 or more from every anchor). The 1/d
    # logits are flat there; the nearer wrong anchors repel more than the far target
    # attracts, so the paper's gradient, tiny, drives the output further into the corner
    # (larger raw outputs); -d^2/T pulls it towards the target with a gradient ~300-800x larger.
    anchors = get_task("semseg").anchors().double()
    target = torch.tensor([0])
    grads = {}
    for semantic in ("paper", "distance"):
        o = torch.full((1, 3), 9.0, dtype=torch.float64, requires_grad=True)
        focal_anchor_loss(o, target, anchors, 2.0, semantic, 0.01).backward()
        grads[semantic] = o.grad
    assert (grads["distance"] > 1e-2).all()  # a descent step lowers o: towards background
    assert (grads["paper"] < 0).all() and grads["paper"].abs().max() < 1e-4  # raises o, barely
    assert grads["distance"].abs().min() > 300 * grads["paper"].abs().max()


def test_the_output_penalty_counts_only_beyond_the_bound():
    palette = torch.full((1, 2, 2), get_task("edges").palette_value)
    targets = {"edges": torch.ones(1, 2, 2, dtype=torch.long)}
    inside = torch.full((1, 3, 2, 2), OUTPUT_BOUND - 0.5)
    res = composite_loss(inside, palette, targets, loss={"output_penalty": 2.0})
    assert float(res["output_penalty"]) == 0.0
    assert torch.equal(res["total"], composite_loss(inside, palette, targets)["total"])
    beyond = inside.clone()
    beyond[0, 0, 0, 0] = OUTPUT_BOUND + 3.0  # one of 12 values, 3 beyond: 9 / 12
    beyond.requires_grad_(True)
    res = composite_loss(beyond, palette, targets, loss={"output_penalty": 2.0})
    assert float(res["output_penalty"].detach()) == pytest.approx(9.0 / 12.0)
    plain = composite_loss(beyond.detach(), palette, targets)["total"]
    assert float(res["total"].detach()) == pytest.approx(float(plain) + 2.0 * 9.0 / 12.0, rel=1e-6)
    res["total"].backward()
    assert beyond.grad[0, 0, 0, 0] > 0  # pushed back towards the bound


def test_a_palette_with_no_task_pixel_keeps_the_penalty_zero_and_backward_works():
    out = torch.randn(1, 3, 4, 4, requires_grad=True)
    palette = torch.zeros(1, 4, 4, dtype=torch.long)
    res = composite_loss(out, palette, {"semseg": torch.zeros(1, 4, 4, dtype=torch.long)},
                         loss={"semantic": "distance", "output_penalty": 1.0})  # fmt: skip
    assert float(res["total"].detach()) == 0.0 and float(res["output_penalty"].detach()) == 0.0
    res["total"].backward()


def test_the_recipe_accepts_and_checks_the_loss_keys():
    r = builtin_recipe("ctn-synthetic-cpu", {"loss": {"semantic": "distance", "temperature": "1e-2"}})
    assert r.loss == {"semantic": "distance", "temperature": 0.01}
    assert builtin_recipe("ctn-synthetic-cpu").loss is None  # the paper's loss
    bad = [({"semantic": "softmax"}, "loss.semantic"), ({"temperature": 0}, "loss.temperature"),
           ({"temperature": -1.0}, "loss.temperature"), ({"output_penalty": -1}, "loss.output_penalty"),
           ({"tempreature": 0.1}, "tempreature"), ("distance", "loss")]  # fmt: skip
    for value, says in bad:
        with pytest.raises(RecipeError, match=says):
            builtin_recipe("ctn-synthetic-cpu", {"loss": value})
