"""Label stores in napari: the reader, the writer, corrections, and reopening exactly.

Run under Xvfb: ``xvfb-run -a python -m pytest tests/test_napari_store.py``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

# the model stack before any canvas (see composite_tasking._napari._compat)
import composite_tasking.model  # noqa: E402, F401
from napari.layers import Image, Labels  # noqa: E402

from composite_tasking._napari.palette_layer import is_palette_layer, make_palette_layer  # noqa: E402
from composite_tasking._napari.predict_widget import PredictWidget  # noqa: E402
from composite_tasking._napari.store_io import (  # noqa: E402
    napari_get_reader,
    read_corrected_masks,
    read_store,
    write_store,
)
from composite_tasking._napari.task_layers import (  # noqa: E402
    corrected_mask,
    is_task_layer,
    layer_meta,
)
from composite_tasking.store import LabelStore  # noqa: E402
from composite_tasking.tasks import IGNORE, get_task  # noqa: E402

pytestmark = pytest.mark.gui

PLUGIN = "napari-composite-tasking"


def _scene(size=128):
    from composite_tasking.palette import load_rule
    from composite_tasking.synthetic import generate

    s = generate(424242, 3, size)
    return s["image"], load_rule("R2").palette(semantics=s["semseg"])


def _predicted_viewer(make_napari_viewer, checkpoint, thresholded=True):
    viewer = make_napari_viewer()
    rgb, pal = _scene()
    image = viewer.add_image(rgb, rgb=True, name="scene")
    palette = viewer.add_layer(make_palette_layer(pal.shape, pal, like=image))
    widget = PredictWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Predict")
    widget.set_model(checkpoint, "cpu")
    widget.thresholded_check.setChecked(thresholded)
    layers = widget.predict(image, palette)
    assert layers
    return viewer, widget, image, palette, layers


def _by_role(viewer):
    return {(layer_meta(ly)["task"], layer_meta(ly)["role"]): ly
            for ly in viewer.layers if is_task_layer(ly)}  # fmt: skip


def _correct(layer: Labels, n: int, value: int) -> np.ndarray:
    """Paint ``value`` on the first ``n`` labelled pixels whose value differs (one step)."""
    data = np.asarray(layer.data)
    idx = np.nonzero((data != IGNORE) & (data != value))
    idx = (idx[0][:n], idx[1][:n])
    layer.data_setitem(idx, value)
    mask = np.zeros(data.shape, bool)
    mask[idx] = True
    return mask


# ---------------------------------------------------------------------------------------
# reader: ours or None, never raising
# ---------------------------------------------------------------------------------------


def test_reader_returns_none_for_what_is_not_ours(tmp_path):
    import zarr

    (tmp_path / "file.zarr").write_text("not a folder")
    (tmp_path / "empty.zarr").mkdir()
    zarr.open_group(str(tmp_path / "plain.zarr"), mode="w", zarr_format=3).attrs["x"] = 1
    zarr.create_array(str(tmp_path / "array.zarr"), shape=(4, 4), dtype="uint8")
    zarr.open_group(str(tmp_path / "v2.zarr"), mode="w", zarr_format=2)
    ome = zarr.open_group(str(tmp_path / "ome.zarr"), mode="w", zarr_format=3)
    ome.attrs["ome"] = {"version": "0.5", "multiscales": []}
    (tmp_path / "broken.zarr").mkdir()
    (tmp_path / "broken.zarr" / "zarr.json").write_text("{not json")
    other = zarr.open_group(str(tmp_path / "other.zarr"), mode="w", zarr_format=3)
    other.attrs["composite_tasking"] = {"format": "something-else"}
    for name in ("missing.zarr", "file.zarr", "empty.zarr", "plain.zarr", "array.zarr",
                 "v2.zarr", "ome.zarr", "broken.zarr", "other.zarr"):  # fmt: skip
        assert napari_get_reader(str(tmp_path / name)) is None, name
    assert napari_get_reader([str(tmp_path / "a.zarr"), str(tmp_path / "b.zarr")]) is None
    assert napari_get_reader(12345) is None  # type: ignore[arg-type]


def test_reader_opens_a_store_written_by_the_core(tmp_path, tiny_checkpoint, make_napari_viewer):
    """A store as `ctn label` writes it: every map shown, no corrections."""
    from composite_tasking.inference import Predictor

    rgb, pal = _scene(64)
    pred = Predictor(tiny_checkpoint, device="cpu").predict(rgb, pal)
    path = tmp_path / "labels.zarr"
    with LabelStore(path, mode="a") as store:
        store.write_sample("img-a", pred.to_sample(rgb),
                           provenance={t: "pseudo" for t in pred.tasks})  # fmt: skip
        store.write_sample("img-b", pred.to_sample(rgb),
                           provenance={t: "pseudo" for t in pred.tasks})  # fmt: skip

    assert napari_get_reader(str(path / "img-a")) is not None  # one image group
    reader = napari_get_reader(str(path))
    layer_data = reader(str(path))
    viewer = make_napari_viewer()
    viewer.open(str(path), plugin=PLUGIN)
    assert len(viewer.layers) == len(layer_data)
    a_layers = [ly for ly in viewer.layers if ly.name.startswith("img-a")]
    b_layers = [ly for ly in viewer.layers if ly.name.startswith("img-b")]
    assert a_layers and len(a_layers) == len(b_layers)
    assert all(ly.visible for ly in a_layers if layer_meta(ly).get("role") != "confidence")
    assert not any(ly.visible for ly in b_layers)  # only the first image shows
    image = viewer.layers["img-a"]
    np.testing.assert_array_equal(image.data, rgb)
    palette = viewer.layers["img-a palette"]
    assert is_palette_layer(palette)
    np.testing.assert_array_equal(palette.data, pal)
    roles = _by_role_for(viewer, layer_meta(image)["image_key"])
    for task, out in pred.tasks.items():
        kind = get_task(task).kind
        if kind == "vector":
            assert (task, "normals") in roles
            continue
        label = roles[(task, "label")]  # thresholded maps too: the store has them
        np.testing.assert_array_equal(label.data, out.label)
        assert not corrected_mask(label).any()
        if kind == "probability":
            np.testing.assert_array_equal(roles[(task, "prob")].data, out.prob)


def _by_role_for(viewer, key):
    return {(layer_meta(ly)["task"], layer_meta(ly)["role"]): ly
            for ly in viewer.layers if is_task_layer(ly, key)}  # fmt: skip


# ---------------------------------------------------------------------------------------
# correct, save, reopen
# ---------------------------------------------------------------------------------------


def test_correct_save_close_reopen_restores_everything(make_napari_viewer, tiny_checkpoint,
                                                       tmp_path, errors):  # fmt: skip
    viewer, widget, image, palette, layers = _predicted_viewer(make_napari_viewer, tiny_checkpoint)
    semseg, edges = layers[("semseg", "label")], layers[("edges", "label")]
    person = get_task("semseg").classes.index("person")
    sem_fix = _correct(semseg, 40, person)
    ed = np.asarray(edges.data)
    edge_fix = _correct(edges, 25, 1 - int(np.median(ed[ed != IGNORE])))  # flip the majority
    np.testing.assert_array_equal(corrected_mask(semseg), sem_fix)
    saved = {k: np.array(ly.data, copy=True) for k, ly in _by_role(viewer).items()}
    saved_palette = np.array(palette.data, copy=True)

    path = tmp_path / "annotated.zarr"
    image_id = widget.save(path)

    assert errors == [] and image_id == "scene"
    store = LabelStore(path)
    sample = store.read_sample("scene")
    assert sample.provenance["semseg"] == "corrected"
    assert sample.provenance["edges"] == "corrected"
    assert sample.provenance["parts"] == "pseudo"
    np.testing.assert_array_equal(sample.labels["semseg"], saved[("semseg", "label")])
    np.testing.assert_array_equal(sample.palette, saved_palette)
    masks = read_corrected_masks(path, "scene")
    np.testing.assert_array_equal(masks["semseg"], sem_fix)
    np.testing.assert_array_equal(masks["edges"], edge_fix)
    assert not masks["parts"].any()
    assert json.loads((path / "scene" / "zarr.json").read_text())["attributes"][
        "composite_tasking"]["napari"]["corrected"] == ["semseg", "parts", "edges"]

    viewer.close()
    again = make_napari_viewer()
    again.open(str(path), plugin=PLUGIN)

    reopened_image = again.layers["scene"]
    np.testing.assert_array_equal(reopened_image.data, image.data)
    (reopened_palette,) = [ly for ly in again.layers if is_palette_layer(ly)]
    np.testing.assert_array_equal(reopened_palette.data, saved_palette)
    reopened = _by_role(again)
    assert set(reopened) == set(saved)  # the same layers, no more
    for key, data in saved.items():
        got = np.asarray(reopened[key].data)
        assert got.dtype == data.dtype and got.shape == data.shape
        if key[1] == "normals":  # unit vectors -> RGB and back
            np.testing.assert_allclose(got, data, atol=1e-5, equal_nan=True)
        else:
            np.testing.assert_array_equal(got, data)
    np.testing.assert_array_equal(corrected_mask(reopened[("semseg", "label")]), sem_fix)
    np.testing.assert_array_equal(corrected_mask(reopened[("edges", "label")]), edge_fix)
    assert layer_meta(reopened[("semseg", "label")])["provenance"] == "corrected"

    # predicting on the reopened annotation updates its layers and keeps the corrections
    widget2 = PredictWidget(again)
    again.window.add_dock_widget(widget2, name="Predict")
    widget2.set_model(tiny_checkpoint, "cpu")
    n_layers = len(again.layers)
    widget2.predict(reopened_image)
    assert errors == []
    assert len(again.layers) == n_layers
    semseg2 = reopened[("semseg", "label")]
    assert (np.asarray(semseg2.data)[sem_fix] == person).all()
    np.testing.assert_array_equal(corrected_mask(semseg2), sem_fix)
    assert widget2.store_edit.text() == str(path)


def test_saving_again_adds_corrections(make_napari_viewer, tiny_checkpoint, tmp_path, errors):
    viewer, widget, image, palette, layers = _predicted_viewer(make_napari_viewer, tiny_checkpoint,
                                                               thresholded=False)  # fmt: skip
    assert ("edges", "label") not in layers  # thresholded labels only on request
    path = tmp_path / "s.zarr"
    widget.save(path)
    assert LabelStore(path).read_sample("scene").provenance["semseg"] == "pseudo"
    parts = layers[("parts", "label")]
    fix = _correct(parts, 10, 3)
    widget.save()  # same store, same image id
    assert errors == []
    store = LabelStore(path)
    assert store.ids() == ["scene"]
    assert store.read_sample("scene").provenance["parts"] == "corrected"
    np.testing.assert_array_equal(read_corrected_masks(path, "scene")["parts"], fix)
    # the store keeps a thresholded map of the probabilities it was given
    edges = store.read_sample("scene").labels["edges"]
    prob = layers[("edges", "prob")].data
    np.testing.assert_array_equal(edges != IGNORE, ~np.isnan(prob))


def test_writer_from_napari_save(make_napari_viewer, tiny_checkpoint, tmp_path, errors):
    viewer, widget, image, palette, layers = _predicted_viewer(make_napari_viewer, tiny_checkpoint)
    fix = _correct(layers[("parts", "label")], 12, 1)
    viewer.layers.selection = {image, palette, *layers.values()}
    path = tmp_path / "via-napari.zarr"
    written = viewer.layers.save(str(path), selected=True, plugin=PLUGIN)
    assert written == [str(path)]
    sample = LabelStore(path).read_sample("scene")
    np.testing.assert_array_equal(sample.labels["parts"], layers[("parts", "label")].data)
    assert sample.provenance["parts"] == "corrected"
    np.testing.assert_array_equal(read_corrected_masks(path, "scene")["parts"], fix)


def test_writer_refuses_ambiguous_selection(tmp_path):
    from composite_tasking.store import StoreError

    a = Image(np.zeros((8, 8)), name="a").as_layer_data_tuple()
    b = Image(np.zeros((8, 8)), name="b").as_layer_data_tuple()
    pal = make_palette_layer((8, 8)).as_layer_data_tuple()
    with pytest.raises(StoreError, match="which palette"):
        write_store(str(tmp_path / "x.zarr"), [a, b, pal])
    # one image and its palette: fine, even with no prediction
    assert write_store(str(tmp_path / "y"), [a, pal]) == [str(tmp_path / "y.zarr")]
    assert LabelStore(tmp_path / "y.zarr").ids() == ["a"]


def test_save_before_any_prediction(make_napari_viewer, tmp_path, errors):
    """An image and a palette made for it, never predicted: both are saved."""
    viewer = make_napari_viewer()
    rgb, pal = _scene(64)
    image = viewer.add_image(rgb, rgb=True, name="fresh")
    viewer.add_layer(make_palette_layer(pal.shape, pal, like=image))
    widget = PredictWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Predict")
    assert widget.save(tmp_path / "fresh.zarr") == "fresh"
    assert errors == []
    sample = LabelStore(tmp_path / "fresh.zarr").read_sample("fresh")
    np.testing.assert_array_equal(sample.palette, pal)
    np.testing.assert_array_equal(sample.image, rgb)
    assert sample.labels == {}


def test_writer_pairs_a_new_palette_with_a_predicted_image(tmp_path):
    from composite_tasking._napari.task_layers import image_key

    image = Image(np.zeros((8, 8)), name="img")
    image_key(image)  # as after a prediction
    pal = make_palette_layer((8, 8), np.full((8, 8), 3, np.uint8))
    write_store(str(tmp_path / "p.zarr"), [image.as_layer_data_tuple(), pal.as_layer_data_tuple()])
    np.testing.assert_array_equal(LabelStore(tmp_path / "p.zarr").read_sample("img").palette, 3)


# ---------------------------------------------------------------------------------------
# several stores, one store twice (the widgets docked from the plugin)
# ---------------------------------------------------------------------------------------


def _store_with(path, image_id: str, index: int, size: int = 64):
    from composite_tasking.synthetic import generate

    rgb = generate(424242, index, size)["image"]
    with LabelStore(path, mode="a") as st:
        st.write_sample(image_id, {"image": rgb, "palette": np.full((size, size), 1, np.uint8)},
                        provenance={})  # fmt: skip
    return path


def _docked_predict(viewer, checkpoint):
    _d, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Predict")
    widget.model_edit.setText(str(checkpoint))
    widget.model_edit.editingFinished.emit()
    widget.device_combo.setCurrentText("cpu")
    return widget


def test_an_image_read_from_a_store_saves_back_to_it(make_napari_viewer, tiny_checkpoint,
                                                     tmp_path, errors):  # fmt: skip
    a = _store_with(tmp_path / "A.zarr", "first", 3)
    b = _store_with(tmp_path / "B.zarr", "second", 4)
    viewer = make_napari_viewer()
    viewer.open(str(a), plugin=PLUGIN)
    viewer.open(str(b), plugin=PLUGIN)
    widget = _docked_predict(viewer, tiny_checkpoint)
    a_before = LabelStore(a).read_sample("first").palette.copy()

    widget.image_combo.set_current_layer(viewer.layers["second"])
    assert widget.store_edit.text() == str(b)  # the field follows the chosen image
    viewer.layers["second palette"].data_setitem((np.array([0]), np.array([0])), 2)
    widget.save_button.click()

    assert errors == []
    assert widget.save_status.text().startswith(f"Saved 'second' to {b}")
    assert LabelStore(a).ids() == ["first"] and LabelStore(b).ids() == ["second"]
    np.testing.assert_array_equal(LabelStore(a).read_sample("first").palette, a_before)
    assert LabelStore(b).read_sample("second").palette[0, 0] == 2
    widget.image_combo.set_current_layer(viewer.layers["first"])
    assert widget.store_edit.text() == str(a)


def test_a_store_opened_twice_gives_two_independent_images(make_napari_viewer, tiny_checkpoint,
                                                          tmp_path, qtbot, errors):  # fmt: skip
    path = _store_with(tmp_path / "one.zarr", "scene", 3)
    viewer = make_napari_viewer()
    viewer.open(str(path), plugin=PLUGIN)
    viewer.open(str(path), plugin=PLUGIN)
    first, second = viewer.layers["scene"], viewer.layers["scene [1]"]
    assert layer_meta(first)["image_key"] != layer_meta(second)["image_key"]
    widget = _docked_predict(viewer, tiny_checkpoint)

    widget.image_combo.set_current_layer(second)
    assert widget.palette_layer is viewer.layers["scene palette [1]"]
    widget.predict_button.click()
    qtbot.waitUntil(lambda: not widget.busy, timeout=60_000)

    assert errors == []
    tasks = [ly for ly in viewer.layers if is_task_layer(ly)]
    assert tasks and all(layer_meta(ly)["image_key"] == layer_meta(second)["image_key"]
                         for ly in tasks)  # fmt: skip
    assert [ly.name for ly in tasks if ly.name.startswith("scene [1] ")]


def test_a_save_keeps_the_rule_that_made_the_palette(tmp_path):
    """ctn label -> napari correction -> save: the image still says which rule made its
    palette, so fine-tuning under a rule it contradicts is refused (datasets)."""
    from composite_tasking.datasets import StoreRuleError, check_stored_palettes, training_ids
    from composite_tasking.palette import load_rule, rule_fingerprint

    path = tmp_path / "rt.zarr"
    rng = np.random.default_rng(0)
    with LabelStore(path, mode="w") as st:
        st.write_sample("a.png", {"image": rng.integers(0, 255, (16, 16, 3), dtype=np.uint8),
                                  "palette": np.full((16, 16), 1, np.uint8),
                                  "semseg": rng.integers(0, 5, (16, 16)).astype(np.uint8)},
                        provenance={"semseg": "pseudo"},
                        attrs={"rule": "R2", "rule_sha256": rule_fingerprint(load_rule("R2")),
                               "palette_origin": "semantics"})  # fmt: skip
    layers = read_store(str(path))
    for data, meta, _kind in layers:
        m = meta.get("metadata", {}).get("composite_tasking", {})
        if m.get("task") == "semseg" and m.get("role") == "label":
            data[0, 0] = (data[0, 0] + 1) % 5  # a correction
    write_store(str(path), layers)
    attrs = LabelStore(path, mode="r").image_attrs("a.png")
    assert attrs["provenance"]["semseg"] == "corrected"
    assert attrs["rule"] == "R2" and attrs["rule_sha256"] == rule_fingerprint(load_rule("R2"))
    with pytest.raises(StoreRuleError, match="R2"):
        check_stored_palettes(path, "R3", training_ids(path))


def test_a_save_never_replaces_another_image_of_the_same_name(tmp_path):
    """An image layer not read from the store is named by its layer name: when the store
    holds another picture under that id, the save is refused and the stored one kept."""
    from composite_tasking.store import StoreError

    path = tmp_path / "s.zarr"
    rng = np.random.default_rng(1)
    first = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
    other = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)

    def layer(pixels):
        return (pixels, {"name": "scene", "rgb": True, "metadata": {}}, "image")

    write_store(str(path), [layer(first)])
    write_store(str(path), [layer(first)])  # the same picture again: fine
    with pytest.raises(StoreError, match="already holds another image named 'scene'"):
        write_store(str(path), [layer(other)])
    assert np.array_equal(LabelStore(path, mode="r").read_sample("scene").image, first)
