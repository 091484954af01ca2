"""The Predictor decodes only where the palette asks, and after a palette edit only what
the edit can reach; both give the full decode's results there."""

import copy

import numpy as np
import pytest
import torch

from _palettes import make_palette
from composite_tasking.inference import Predictor
from composite_tasking.model.region import palette_reach


@pytest.fixture(scope="module")
def predictor(ctn18):
    torch.set_num_threads(1)
    return Predictor(copy.deepcopy(ctn18), device="cpu", precision="fp32", tile=1024)


def _image(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _assert_same_prediction(a, b, tol=1e-4):
    assert np.array_equal(a.palette, b.palette)
    asked = a.palette > 0
    assert np.abs(a.output - b.output).max(axis=0)[asked].max() < tol
    assert set(a.tasks) == set(b.tasks)
    for name in a.tasks:
        ta, tb = a.tasks[name], b.tasks[name]
        if ta.label.dtype == np.uint8:  # class / thresholded labels: all but near-ties
            assert (ta.label != tb.label).mean() < 1e-3, name
        else:
            np.testing.assert_allclose(ta.label, tb.label, atol=tol)
        np.testing.assert_allclose(ta.confidence, tb.confidence, atol=1e-3)
        if ta.prob is not None:
            np.testing.assert_allclose(ta.prob, tb.prob, atol=tol)


def test_region_decoding_equals_the_full_decode_where_the_palette_asks(predictor):
    img = _image(150, 203)
    pal = make_palette("no-task", 150, 203).numpy()[0].astype(np.uint8)
    pal[:, :90] = 0
    feats = predictor.encode(img)
    full = predictor.decode(feats, pal, region=None)
    part = predictor.decode(feats, pal)  # region "palette" by default
    asked = pal > 0
    assert np.abs(full - part).max(axis=0)[asked].max() < 1e-4
    assert np.abs(part[:, :, :32]).max() == 0  # not computed


def test_tiled_images_decode_the_region_exactly_too(ctn18):
    pred = Predictor(copy.deepcopy(ctn18), device="cpu", precision="fp32", tile=96, overlap=16)
    img = _image(150, 170, seed=2)
    pal = make_palette("R2", 150, 170).numpy()[0].astype(np.uint8)
    feats = pred.encode(img)
    assert len(feats) > 1
    full = pred.decode(feats, pal, region=None)
    part = pred.decode(feats, pal)
    assert np.abs(full - part).max(axis=0)[pal > 0].max() < 1e-4


@pytest.mark.parametrize("kind", ["mosaic", "R2", "no-task"])
def test_repredict_after_a_stroke_equals_a_full_predict(predictor, kind):
    h, w = 256, 288
    img = _image(h, w, seed=1)
    pal = make_palette(kind, h, w).numpy()[0].astype(np.uint8)
    before = predictor.predict(img, pal, key=("img", kind))
    edited = pal.copy()
    edited[100:130, 40:75] = 4  # a stroke of saliency
    edited[5:9, 250:260] = 0  # and an erased patch
    after = predictor.repredict(img, edited, before, key=("img", kind))
    predictor.region_decoding = False
    try:
        reference = predictor.predict(img, edited, key=("img", kind))
    finally:
        predictor.region_decoding = True
    _assert_same_prediction(after, reference)


def test_repredict_decodes_only_the_box_the_edit_can_reach(predictor, monkeypatch):
    h, w = 512, 512
    img = _image(h, w, seed=3)
    pal = make_palette("mosaic", h, w).numpy()[0].astype(np.uint8)
    before = predictor.predict(img, pal, key="big")
    regions = []
    decode = predictor.model.decode

    def spy(enc, palette, region=None, **kw):
        regions.append(None if region is None else region.clone())
        return decode(enc, palette, region=region, **kw)

    monkeypatch.setattr(predictor.model, "decode", spy)
    edited = pal.copy()
    edited[200:264, 300:364] = 5  # 64 x 64
    predictor.repredict(img, edited, before, key="big")
    (region,) = regions
    reach = palette_reach(predictor.model.decoder)
    ys, xs = torch.nonzero(region, as_tuple=True)
    assert int(ys.min()) >= 200 - reach and int(ys.max()) < 264 + reach
    assert int(xs.min()) >= 300 - reach and int(xs.max()) < 364 + reach
    assert region.float().mean() < 0.4


def test_repredict_with_no_change_returns_the_previous_prediction(predictor):
    img = _image(64, 64)
    pal = make_palette("mosaic", 64, 64).numpy()[0].astype(np.uint8)
    before = predictor.predict(img, pal, key="same")
    assert predictor.repredict(img, pal.copy(), before, key="same") is before


def test_a_task_new_to_the_palette_appears_only_in_its_pixels(predictor):
    h, w = 128, 128
    img = _image(h, w, seed=4)
    pal = np.full((h, w), 1, np.uint8)  # S:semseg
    before = predictor.predict(img, pal, key="new-task")
    edited = pal.copy()
    edited[40:60, 40:60] = 5  # normals, new
    after = predictor.repredict(img, edited, before, key="new-task")
    normals = after.tasks["normals"]
    asked = edited == 5
    assert np.isnan(normals.confidence[~asked]).all() and not np.isnan(normals.confidence[asked]).any()
    assert np.allclose(np.linalg.norm(normals.label[asked], axis=-1), 1.0, atol=1e-4)
    assert (normals.label[~asked] == 0).all()
    assert (after.tasks["semseg"].label[asked] == 255).all()


def test_a_bad_region_is_refused(predictor):
    img = _image(64, 64)
    feats = predictor.encode(img)
    pal = np.ones((64, 64), np.uint8)
    with pytest.raises(ValueError, match="boolean mask"):
        predictor.decode(feats, pal, region=np.ones((64, 64)))
    with pytest.raises(ValueError, match="'palette'"):
        predictor.decode(feats, pal, region="all")
