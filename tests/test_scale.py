"""The working resolution (composite_tasking.scale): predict at the scale the model
knows, label at the image's own pixels."""

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from composite_tasking.scale import Scale, downsample_palette, parse_scale, trained_size, upsample_composite, working_shape
from composite_tasking.tasks import IGNORE, get_task

SEM, PARTS, EDGES, SAL, NORM = (get_task(t).palette_value for t in ("semseg", "parts", "edges", "saliency", "normals"))


def test_parse_scale_reads_auto_none_factors_and_pixels_and_names_a_bad_value():
    assert parse_scale("auto") == Scale("auto") and parse_scale(None) == Scale("none")
    assert parse_scale("0.5") == Scale("factor", 0.5) and str(parse_scale("0.5")) == "0.5"
    assert parse_scale("512") == Scale("pixels", 512) == parse_scale("512px")
    assert str(parse_scale("512")) == "512px" and parse_scale("2") == Scale("factor", 2.0)
    for bad in ("big", "0", "-1", "9", "nan", "8px"):
        with pytest.raises(ValueError, match=repr(bad)):
            parse_scale(bad)


def test_working_shape_shrinks_only_what_the_model_has_not_seen():
    trained = (256, 1.25)  # the bundled CTN: 256-pixel scenes, augmented up to 1.25x
    assert working_shape((768, 768), "auto", trained) == (256, 256)
    assert working_shape((2000, 3000), "auto", trained) == (171, 256)  # the long side
    assert working_shape((320, 300), "auto", trained) == (320, 300)  # within the augmentation
    assert working_shape((64, 64), "auto", trained) == (64, 64)  # never enlarged
    assert working_shape((768, 768), "none", trained) == (768, 768)
    assert working_shape((400, 200), "0.5", trained) == (200, 100)
    assert working_shape((400, 200), "100px", trained) == (100, 50)
    # from a checkpoint's provenance: its synthetic scenes' size; photos (and nothing
    # recorded) 512, PASCAL's scale; a crop leaves objects at the image's scale
    assert trained_size({"recipe": {"train": {"kind": "synthetic", "size": 256},
                                    "augment": {"scale": [0.8, 1.25], "crop": 128}}}) == (256, 1.25)  # fmt: skip
    assert trained_size({"recipe": {"train": {"kind": "pascal-mt", "root": "P"}, "augment": {"crop": 256}}})[0] == 512
    assert trained_size({}) == (512, 1.25)


def test_upsampling_interpolates_each_task_from_its_own_pixels_only():
    # two tasks side by side with outputs far apart: no full-size pixel mixes them
    small_pal = np.full((4, 4), SAL, np.uint8)
    small_pal[:, 2:] = NORM
    small_out = np.zeros((3, 4, 4), np.float32)
    small_out[:, :, :2] = 8.0  # saliency: p ~ 1
    small_out[:, :, 2:] = np.array([0.0, 0.0, -3.0], np.float32)[:, None, None]  # a normal
    palette = np.full((12, 12), SAL, np.uint8)
    palette[:, 6:] = NORM
    calls = []
    out = upsample_composite(lambda p, r: calls.append(1), palette, small_pal, small_out, ["saliency", "normals"])
    assert not calls  # every full-size pixel had its task nearby
    np.testing.assert_allclose(out[:, :, :6], 8.0, atol=1e-4)
    np.testing.assert_allclose(out[:, :, 6:], small_out[:, :1, 2:3].repeat(12, 1).repeat(6, 2), atol=1e-5)
    # where the palette asks for nothing, nothing
    palette[0, 0] = 0
    assert upsample_composite(None, palette, small_pal, small_out, ["saliency", "normals"])[:, 0, 0].tolist() == [0, 0, 0]


def test_a_stroke_thinner_than_a_working_pixel_is_decoded_with_its_task():
    small_pal = np.full((4, 4), SAL, np.uint8)
    small_out = np.full((3, 4, 4), -5.0, np.float32)
    palette = np.full((12, 12), SAL, np.uint8)
    palette[3, 1:11] = EDGES  # one full-size row off the working centres: no working pixel is given edges
    assert (downsample_palette(palette, (4, 4)) == SAL).all()
    asked = []

    def decode(pal, region):
        asked.append((pal.copy(), region.copy()))
        return np.full((3, 4, 4), 6.0, np.float32)

    out = upsample_composite(decode, palette, small_pal, small_out, ["edges", "saliency"])
    assert len(asked) == 1
    pal, region = asked[0]
    assert (pal[region] == EDGES).all() and region[1].any() and not region[[0, 2, 3]].any()
    np.testing.assert_allclose(out[:, 3, 1:11], 6.0, atol=1e-4)  # the stroke: from the extra decode
    np.testing.assert_allclose(out[:, 8, :], -5.0, atol=1e-4)  # the rest: the first decode


@pytest.fixture(scope="module")
def predictors():
    from composite_tasking.inference import Predictor

    return Predictor("default", device="cpu", scale="none"), Predictor("default", device="cpu", scale="auto")


@pytest.fixture(scope="module")
def scene():
    from composite_tasking.synthetic import generate

    image = generate(5, 1, 256)["image"]
    rng = np.random.default_rng(0)
    palette = rng.integers(1, 6, (4, 4)).astype(np.uint8).repeat(64, 0).repeat(64, 1)
    return image, palette


def test_a_3x_upscaled_image_under_auto_gets_the_256_labels_upsampled(predictors, scene):
    none, auto = predictors
    image, palette = scene
    big, big_pal = image.repeat(3, 0).repeat(3, 1), palette.repeat(3, 0).repeat(3, 1)
    assert auto.working_shape(big.shape[:2]) == (256, 256) and auto.upscale(big.shape[:2]) == 3.0
    small = none.predict(image, palette)
    full = auto.predict(big, big_pal)
    assert full.working is not None and full.working[1].shape == (3, 256, 256)
    for name, t in small.tasks.items():
        got = full.tasks[name]
        want = t.label.repeat(3, 0).repeat(3, 1)
        # labels exactly where the full-size palette asks, nowhere else
        asked = big_pal == get_task(name).palette_value
        if name == "normals":
            assert (np.abs(got.label).sum(-1) > 0)[asked].all() and not got.label[~asked].any()
            cos = (got.label * want).sum(-1)[asked]
            assert cos.mean() > 0.995, name
            continue
        assert ((got.label != IGNORE) == asked).all(), name
        assert np.isfinite(got.confidence[asked]).all() and np.isnan(got.confidence[~asked]).all()
        if name == "edges":
            continue
        # boundaries move by at most a working pixel: agreement tolerance 3 %
        assert (got.label[asked] == want[asked]).mean() > 0.97, name


def test_edges_stay_thin_at_full_resolution(predictors, scene):
    none, auto = predictors
    image = scene[0]
    big = image.repeat(3, 0).repeat(3, 1)
    pal = np.full((256, 256), EDGES, np.uint8)
    small = none.predict(image, pal).tasks["edges"]
    full = auto.predict(big, pal.repeat(3, 0).repeat(3, 1)).tasks["edges"]
    n_small, n_full = int((small.label == 1).sum()), int((full.label == 1).sum())
    thick = int((full.prob >= 0.5).sum())  # the interpolated probabilities, unthinned
    assert n_small > 50
    # a 1-pixel line 3x longer has 3x the pixels; a thick one ~9x
    assert n_full <= 4.5 * n_small and thick > 2 * n_full, (n_small, n_full, thick)
    # and still where the 256 edges are: each full-size edge pixel lies on or next to one
    from scipy import ndimage

    near = ndimage.binary_dilation(small.label == 1, iterations=1).repeat(3, 0).repeat(3, 1)
    assert near[full.label == 1].mean() > 0.9


def test_a_stroke_repredicts_only_its_box_and_equals_a_full_predict(predictors, scene):
    _, auto = predictors
    image, palette = scene
    big, big_pal = image.repeat(3, 0).repeat(3, 1), palette.repeat(3, 0).repeat(3, 1)
    first = auto.predict(big, big_pal, key="k")
    stroked = big_pal.copy()
    stroked[300:304, 100:400] = EDGES  # a 4-pixel stroke: thinner than two working pixels
    again = auto.repredict(big, stroked, first, key="k")
    fresh = auto.predict(big, stroked)
    for name in fresh.tasks:
        a, b = again.tasks[name].label, fresh.tasks[name].label
        if name == "normals":
            assert np.abs(a - b).max() < 1e-3
        else:
            assert (a != b).mean() < 1e-3, name
    assert (again.tasks["edges"].label[300:304, 100:400] != IGNORE).all()
    # a stroke that changes no working pixel (one full-size row between working centres)
    # is decoded where it lies; everything else is kept as it was
    thin = big_pal.copy()
    thin[600, 100:400] = EDGES
    assert (downsample_palette(thin, (256, 256)) == downsample_palette(big_pal, (256, 256))).all()
    again = auto.repredict(big, thin, first, key="k")
    assert (again.tasks["edges"].label[600, 100:400] != IGNORE).all()
    far = (slice(0, 580), slice(0, 768))
    for name in first.tasks:
        np.testing.assert_array_equal(again.tasks[name].label[far], first.tasks[name].label[far])
    fresh = auto.predict(big, thin)
    assert (again.tasks["edges"].label != fresh.tasks["edges"].label).mean() < 1e-3


def test_ctn_label_records_the_scale_and_refuses_another_on_resume(tmp_path):
    from composite_tasking.store import LabelStore
    from composite_tasking.synthetic import generate

    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(generate(5, 2, (330, 480))["image"]).save(folder / "wide.png")
    store = tmp_path / "s.zarr"
    ctn = [sys.executable, "-m", "composite_tasking.cli", "label", str(folder), "--out", str(store),
           "--rule", "mosaic", "--device", "cpu", "--no-preview"]  # fmt: skip
    res = subprocess.run(ctn, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    s = LabelStore(store)
    (image_id,) = s.ids()
    assert s.image_attrs(image_id)["scale"] == "auto" and s.attrs["labelling"]["scale"] == "auto"
    sample = s.read_sample(image_id)
    assert sample.palette.shape == (330, 480)  # labels at the image's own size
    assert all(np.shape(v)[:2] == (330, 480) for v in sample.labels.values())
    res = subprocess.run([*ctn, "--scale", "none"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and "--scale auto (stored) vs none (asked)" in res.stderr, res.stderr
    res = subprocess.run([*ctn, "--scale", "huge"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "--scale" in res.stderr and "'huge'" in res.stderr


def test_evaluate_at_a_working_resolution_scores_full_size_labels():
    from composite_tasking.model import load_checkpoint
    from composite_tasking.inference import resolve_model
    from composite_tasking.training.evaluate import evaluate

    model, _ = load_checkpoint(resolve_model("default"))
    small = evaluate(model, "synthetic:seed=5,n=2,size=128", rule="mosaic", device="cpu")
    big = evaluate(model, "synthetic:seed=5,n=2,size=384", rule="mosaic", device="cpu", scale="128px")
    assert big["scale"] == "128px" and small["scale"] == "none" and big["images"] == 2
    for task, value in small["primary"].items():
        assert np.isfinite(big["primary"][task]), task
    # the same scenes seen at the same working size: close figures (not equal: the
    # 384 render, shrunk, is smoother than the 128 render)
    assert abs(big["primary"]["saliency"] - small["primary"]["saliency"]) < 15
