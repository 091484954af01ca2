"""A folder in napari, one image at a time: the "Label images" dock on a real viewer under
Xvfb (``xvfb-run -a python -m pytest tests/test_napari_series.py``)."""

from __future__ import annotations

import time

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

# the model stack before any canvas (see composite_tasking._napari._compat)
import composite_tasking.model  # noqa: E402, F401
from _gui import load_factor, wait_bound  # noqa: E402
from napari.layers import Labels  # noqa: E402
from PIL import Image as PILImage  # noqa: E402

from composite_tasking._napari.annotate import open_annotator  # noqa: E402
from composite_tasking._napari.palette_layer import is_palette_layer  # noqa: E402
from composite_tasking._napari.layer_pool import is_spare  # noqa: E402
from composite_tasking._napari.task_layers import find_task_layer, image_key, is_task_layer, layer_meta  # noqa: E402
from composite_tasking.store import LabelStore  # noqa: E402
from composite_tasking.synthetic import generate  # noqa: E402

pytestmark = pytest.mark.gui
SIZE = 64


@pytest.fixture
def folder(tmp_path):
    """Three synthetic scenes as PNGs (a, b, c)."""
    f = tmp_path / "photos"
    f.mkdir()
    for name, index in (("a", 3), ("b", 4), ("c", 5)):
        PILImage.fromarray(generate(424242, index, SIZE)["image"]).save(f / f"{name}.png")
    return f


def _settle(qtbot, predict, timeout: int = 60_000) -> None:
    qtbot.waitUntil(lambda: not predict.busy and not predict._debounce.isActive()
                    and predict._pending is None, timeout=timeout)  # fmt: skip


def _open(viewer, folder, tiny_checkpoint, **kw):
    viewer, widgets, problems = open_annotator([folder], viewer=viewer, model=str(tiny_checkpoint),
                                               device="cpu", **kw)  # fmt: skip
    assert problems == []
    return widgets


def _shown(viewer):
    """The names of the layers a person sees: the spares (layers kept hidden for the next
    image's, see layer_pool) are hidden and belong to no image."""
    spares = [ly for ly in viewer.layers if is_spare(ly)]
    assert not any(ly.visible for ly in spares), [ly.name for ly in spares if ly.visible]
    assert not any(layer_meta(ly).get("image_key") for ly in spares)
    return sorted(ly.name for ly in viewer.layers if not is_spare(ly))


def test_a_folder_one_image_at_a_time_saved_and_resumed(make_napari_viewer, folder, tiny_checkpoint, qtbot):
    viewer = make_napari_viewer()
    w = _open(viewer, folder, tiny_checkpoint)
    series, palette, predict = w["Series"], w["Task Palette"], w["Predict"]
    session = series.session
    assert [i.image_id for i in session.items] == ["a.png", "b.png", "c.png"]
    assert series.status_label.text().startswith("image 1 of 3, 0 reviewed")
    assert _shown(viewer) == ["a.png"]
    assert predict.image_layer is viewer.layers["a.png"] and palette.image_combo.current_layer() is viewer.layers["a.png"]

    # image a: a palette from a rule (named after the image), predict, correct, save and next
    palette.select_task("semseg")  # picking a task makes the image's palette
    pal = palette.palette_layer
    assert pal.name == "a.png palette" and image_key(pal) == image_key(viewer.layers["a.png"])
    palette.fill_from_rule("S:semseg")
    predict.predict()
    semseg = find_task_layer(viewer.layers, image_key(viewer.layers["a.png"]), "semseg", "label")
    assert semseg is not None and semseg.name == "a.png semseg"
    semseg.data_setitem((np.arange(4), np.arange(4)), np.full(4, 15, np.uint8))  # a correction
    assert series.save_and_next()
    assert _shown(viewer) == ["b.png"]  # a's layers went, b shows alone
    assert series.status_label.text().startswith("image 2 of 3, 1 reviewed")
    store = LabelStore(session.store_path, "r")
    assert store.image_records()["a.png"]["provenance"] == {"semseg": "reviewed"}
    assert store.correction_masks("a.png")["semseg"][np.arange(4), np.arange(4)].all()

    # image b: painted and predicted, then Next (not reviewed): its work is saved anyway
    palette.select_task("edges")
    palette.fill_from_rule("S:edges")
    predict.predict()
    assert series.next() and _shown(viewer) == ["c.png"]
    assert store.image_records()["b.png"]["provenance"] == {"edges": "pseudo"}
    # Previous shows b again with its palette and pseudo-labels, from the store
    assert series.previous()
    assert _shown(viewer) == ["b.png", "b.png confidence", "b.png edges prob", "b.png palette"]
    assert not series.reviewed_check.isChecked()
    # nothing changed on it: leaving it does not write it again
    updated = LabelStore(session.store_path, "r").image_attrs("b.png").get("updated")
    assert series.next()
    assert LabelStore(session.store_path, "r").image_attrs("b.png").get("updated") == updated
    # the last image: Next stays and says so
    assert not series.next() and "last image" in series.message_label.text()

    # reopened in a fresh viewer: resumes at b (the first unreviewed), a's correction kept
    viewer.close()
    viewer2 = make_napari_viewer()
    w2 = _open(viewer2, folder, tiny_checkpoint)
    assert w2["Series"].session.current.image_id == "b.png"
    assert w2["Series"].status_label.text().startswith("image 2 of 3, 1 reviewed")
    w2["Series"].show_image(0)
    a_semseg = find_task_layer(viewer2.layers, image_key(viewer2.layers["a.png"]), "semseg", "label")
    assert a_semseg.data[0, 0] == 15 and layer_meta(a_semseg)["corrected"][np.arange(4), np.arange(4)].all()
    assert w2["Series"].reviewed_check.isChecked()
    # the store alone opens the same series
    viewer2.close()
    w3 = _open(make_napari_viewer(), session.store_path, tiny_checkpoint)
    assert [i.image_id for i in w3["Series"].session.items] == ["a.png", "b.png"]


def test_a_palette_fill_never_reads_another_images_semantic_map(make_napari_viewer, folder, tiny_checkpoint, errors):
    viewer = make_napari_viewer()
    w = _open(viewer, folder, tiny_checkpoint)
    series, palette, predict = w["Series"], w["Task Palette"], w["Predict"]
    palette.select_task("semseg")
    palette.fill_from_rule("S:semseg")
    predict.predict()  # a's semseg pseudo-labels: a semantic map of a, and of a only
    a_semseg = find_task_layer(viewer.layers, image_key(viewer.layers["a.png"]), "semseg", "label")
    assert palette.semantic_combo.layers() == [a_semseg]
    # a parts layer is no semantic map
    assert not any(layer_meta(ly).get("task") == "parts" for ly in palette.semantic_combo.layers())
    # another image's map, present in the viewer (opened by hand): never offered, refused when given
    series.next()
    other = viewer.add_labels(np.asarray(a_semseg.data).copy() if a_semseg in viewer.layers
                              else np.zeros((SIZE, SIZE), np.uint8), name="a semantics",
                              metadata={"composite_tasking": {"kind": "semantics", "image_key": "elsewhere"}})  # fmt: skip
    assert palette.semantic_combo.layers() == []
    assert palette.fill_from_rule("R2", semantics=other) is None
    assert errors and "not a semantic map of image 'b.png'" in errors[-1]
    # a map of no image, of the image's size, is offered (a class map a person loaded)
    loose = viewer.add_labels(np.zeros((SIZE, SIZE), np.uint8), name="my classes")
    assert palette.semantic_combo.layers() == [loose]


def test_sample_scenes_semantics_belong_to_their_image(make_napari_viewer, tiny_checkpoint):
    from composite_tasking._napari.palette_widget import TaskPaletteWidget

    viewer = make_napari_viewer()
    viewer.open_sample("napari-composite-tasking", "scene-3")
    viewer.open_sample("napari-composite-tasking", "scene-4")
    widget = TaskPaletteWidget(viewer)
    widget.image_combo.set_current_layer(viewer.layers["scene-4"])
    assert [ly.name for ly in widget.semantic_combo.layers()] == ["scene-4 semantics (ground truth)"]
    widget.image_combo.set_current_layer(viewer.layers["scene-3"])
    assert [ly.name for ly in widget.semantic_combo.layers()] == ["scene-3 semantics (ground truth)"]


def test_shortcuts_and_correct_next_order(make_napari_viewer, folder, tiny_checkpoint, qtbot):
    from composite_tasking._napari.series_widget import SHORTCUTS

    viewer = make_napari_viewer()
    w = _open(viewer, folder, tiny_checkpoint)
    series, palette = w["Series"], w["Task Palette"]
    keymap = {str(k): v for k, v in viewer.keymap.items()}
    for key in SHORTCUTS:
        assert any(key.replace("-", "+").lower() in k.lower().replace("-", "+") for k in keymap), key
    press = {str(k).lower().replace("+", "-"): v for k, v in viewer.keymap.items()}
    press["shift-2"](viewer)  # parts on the palette (made for the image)
    assert palette.selected_value == 2 and is_palette_layer(viewer.layers.selection.active)
    press["pagedown"](viewer)
    assert series.session.current.image_id == "b.png"
    press["pageup"](viewer)
    assert series.session.current.image_id == "a.png"
    # correct next: needs a store with confidence maps, else file order and why
    assert not series.set_order("correct next") and "cannot order" in series.message_label.text()
    # the dock closes: its keys are unbound
    w["Label images"].close()
    w["Label images"].deleteLater()
    qtbot.waitUntil(lambda: not any("pagedown" in str(k).lower() for k in viewer.keymap), timeout=5000)


def test_predict_keeps_the_gui_responsive_in_a_series(make_napari_viewer, folder, tiny_checkpoint, qtbot, request):
    """The longest GUI-thread gap (a 10 ms QTimer) during a threaded predict and Save and
    next in the dock, printed; bounded only grossly (this busy CI machine)."""
    from qtpy.QtCore import QTimer

    import gc

    viewer = make_napari_viewer()
    request.addfinalizer(gc.unfreeze)  # the test process goes on: give the frozen objects back
    w = _open(viewer, folder, tiny_checkpoint, freeze_imports=True)  # as ctn annotate does
    series, palette, predict = w["Series"], w["Task Palette"], w["Predict"]
    predict.load_model()
    palette.select_task("semseg")
    palette.fill_from_rule("S:semseg")
    load = load_factor()  # the machine's pace: the bound follows its load
    ticks: list[float] = []
    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start()
    predict.start_predict()
    _settle(qtbot, predict)
    gap_predict = max(np.diff(ticks)) if len(ticks) > 1 else 0.0
    ticks.clear()
    t0 = time.perf_counter()
    series.save_and_next()
    qtbot.wait(50)
    gap_next = time.perf_counter() - t0
    timer.stop()
    print(f"\nlongest GUI gap: predict {gap_predict * 1000:.0f} ms; save and next (in the GUI "
          f"thread) {gap_next * 1000:.0f} ms for a {SIZE} px image (load factor {load:.1f})")  # fmt: skip
    assert any(is_task_layer(ly) for ly in viewer.layers) is False  # b has no predictions yet
    assert gap_predict < wait_bound(1.0, load)
    assert isinstance(viewer.layers["b.png"], type(viewer.layers["b.png"]))
    assert not any(isinstance(ly, Labels) for ly in viewer.layers if not is_palette_layer(ly) and not is_spare(ly))


def test_the_next_image_reuses_the_layers_of_the_last(make_napari_viewer, folder, tiny_checkpoint):
    """Save and next keeps the image's layers, hidden, and the next image's image, palette
    and task layers are those layers again (no layer made or removed: the slow part of
    changing images, and what crashed Mesa's software OpenGL); a late result for the
    image left lands nowhere."""
    viewer = make_napari_viewer()
    w = _open(viewer, folder, tiny_checkpoint)
    series, palette, predict = w["Series"], w["Task Palette"], w["Predict"]
    palette.fill_from_rule("S:semseg")
    predict.predict()
    first = {id(ly): ly.name for ly in viewer.layers}
    key_a = image_key(viewer.layers["a.png"])
    stale_job = predict._predict_job(viewer.layers["a.png"], palette.palette_layer)
    stale = stale_job.run()
    assert series.save_and_next()
    assert {id(ly) for ly in viewer.layers} == set(first)  # nothing added or removed
    assert _shown(viewer) == ["b.png"]
    image_b = viewer.layers["b.png"]
    assert id(image_b) in first and first[id(image_b)] == "a.png" and image_key(image_b) != key_a
    assert image_b.visible and image_b.data.shape[:2] == (SIZE, SIZE)
    palette.fill_from_rule("S:semseg")
    predict.predict()
    assert {id(ly) for ly in viewer.layers} == set(first)  # b's palette and tasks: a's layers
    names = _shown(viewer)
    assert names == sorted(first[i].replace("a.png", "b.png") for i in first), names
    semseg = find_task_layer(viewer.layers, image_key(image_b), "semseg", "label")
    assert semseg.visible and len(semseg._undo_history) == 0
    # the late result of a's prediction is not put on b's layers (b's image layer was a's)
    before = np.array(semseg.data, copy=True)
    assert predict.show_prediction(stale, stale_job) == {}
    assert "'a.png' was removed" in predict.status_label.text()
    assert np.array_equal(semseg.data, before)
    assert find_task_layer(viewer.layers, key_a, "semseg", "label") is None


def test_correcting_with_class_names_and_invalid_values_refused(make_napari_viewer, folder, tiny_checkpoint):
    """The dock's class list names the classes of the active pseudo-label layer and sets
    the brush; napari's M key (max + 1) cannot choose class 21: refused, with the reason
    in the dock's message line, not only a toast."""
    from napari.layers.labels._labels_key_bindings import new_label

    viewer = make_napari_viewer()
    w = _open(viewer, folder, tiny_checkpoint)
    series, palette, predict, dock = w["Series"], w["Task Palette"], w["Predict"], w["Label images"]
    palette.select_task("semseg")
    palette.fill_from_rule("S:semseg")
    predict.predict()
    semseg = find_task_layer(viewer.layers, image_key(viewer.layers["a.png"]), "semseg", "label")
    viewer.layers.selection.active = semseg
    names = dict(dock.classes.entries())
    assert names[15] == "person" and names[0] == "background" and len(names) == 22  # 21 classes + ignore
    dock.classes.choose(15)
    assert semseg.selected_label == 15
    semseg.data_setitem((np.array([0]), np.array([0])), np.array([20], np.uint8))  # the largest class
    new_label(semseg)  # napari's M: max + 1 = 21, no class
    assert semseg.selected_label == 15
    assert "21 is not a semseg class" in series.message_label.text()
    # the palette: = past the last task is refused the same way
    from napari.layers.labels._labels_key_bindings import increase_label_id

    pal = palette.palette_layer
    pal.selected_label = 5
    increase_label_id(pal)
    assert pal.selected_label == 5 and "6 is not a task" in series.message_label.text()


def test_closing_napari_saves_what_changed_on_the_current_image(make_napari_viewer, folder, tiny_checkpoint):
    viewer = make_napari_viewer()
    w = _open(viewer, folder, tiny_checkpoint)
    palette, session = w["Task Palette"], w["Series"].session
    palette.select_task("saliency")
    palette.fill_from_rule("S:saliency")  # a palette, never saved
    saves = []
    real_save = w["Series"].save
    w["Series"].save = lambda: saves.append(1) or real_save()
    viewer.close()
    assert len(saves) == 1  # once, not again at every layer napari removes
    stored = LabelStore(session.store_path, "r").read_sample("a.png")
    assert stored.palette is not None and (stored.palette == 4).all()
