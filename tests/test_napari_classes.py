"""The class list and the value guard of the plugin's Labels layers (issue #16), in a
real viewer (run under Xvfb: ``xvfb-run -a python -m pytest tests/test_napari_classes.py``).
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from napari.layers.labels._labels_key_bindings import (  # noqa: E402
    decrease_label_id,
    increase_label_id,
    new_label,
    swap_selected_and_background_labels,
)
from qtpy.QtCore import Qt  # noqa: E402

from composite_tasking._napari.class_list import (  # noqa: E402
    HINT,
    IGNORE_NAME,
    ClassListWidget,
    guard_values,
    guard_viewer,
    valid_values,
)
from composite_tasking._napari.palette_layer import make_palette_layer  # noqa: E402
from composite_tasking._napari.task_layers import new_task_layer  # noqa: E402
from composite_tasking.tasks import IGNORE, PARTS_CLASSES, SEMSEG_CLASSES, TASKS  # noqa: E402

pytestmark = pytest.mark.gui

H, W = 24, 32


def _semseg(name: str = "scene semseg", task: str = "semseg"):
    data = np.zeros((H, W), np.uint8)
    data[2:6, 3:9] = 20  # the largest class painted: napari's M would choose 21
    return new_task_layer(data, task=task, role="label", key="scene::1", name=name)


@pytest.fixture
def viewer(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((H, W), np.float32), name="scene")
    return viewer


@pytest.fixture
def reports():
    return []


# ---------------------------------------------------------------------------------------
# valid values
# ---------------------------------------------------------------------------------------


def test_valid_values_of_each_kind_of_layer():
    from napari.layers import Image, Labels

    palette = make_palette_layer((H, W))
    assert valid_values(palette) == tuple(range(len(TASKS) + 1))
    assert valid_values(_semseg()) == (*range(21), IGNORE)
    assert valid_values(_semseg("scene parts", "parts")) == (*range(len(PARTS_CLASSES)), IGNORE)
    for task in ("edges", "saliency"):
        layer = new_task_layer(np.zeros((H, W)), task=task, role="label", key="k", name=task)
        assert valid_values(layer) == (0, 1, IGNORE)
    # not the plugin's, or not a label layer: left alone
    prob = new_task_layer(np.zeros((H, W)), task="edges", role="prob", key="k", name="p")
    assert valid_values(prob) is None
    assert valid_values(Labels(np.zeros((H, W), np.uint8))) is None
    assert valid_values(Image(np.zeros((H, W)))) is None
    assert valid_values(None) is None


# ---------------------------------------------------------------------------------------
# the class list
# ---------------------------------------------------------------------------------------


@pytest.fixture
def widget(viewer, qtbot):
    w = ClassListWidget(viewer)
    viewer.window.add_dock_widget(w, name="Classes")
    return w


def test_lists_semseg_classes_and_ignore(viewer, widget):
    layer = viewer.add_layer(_semseg())
    viewer.layers.selection.active = layer

    assert widget.current_layer() is layer
    assert widget.entries() == [*enumerate(SEMSEG_CLASSES), (IGNORE, IGNORE_NAME)]
    assert widget.list.count() == 22 and not widget.list.isHidden()
    assert "scene semseg" in widget.title.text()
    texts = [widget.list.item(i).text() for i in range(widget.list.count())]
    assert texts[8] == "8  cat" and texts[-1] == "255  ignore (erase)"
    # compact: it sits in a dock beside other widgets
    assert widget.maximumHeight() <= 220 and widget.list.height() <= 200


def test_lists_the_tasks_of_a_palette_and_a_hint_elsewhere(viewer, widget):
    palette = viewer.add_layer(make_palette_layer((H, W)))
    viewer.layers.selection.active = palette
    assert widget.entries() == [(0, "none")] + [(t.palette_value, t.name) for t in TASKS]
    assert "Semantic segmentation" in widget.list.item(1).text()

    plain = viewer.add_labels(np.zeros((H, W), np.uint8), name="mine")
    viewer.layers.selection.active = plain
    assert widget.current_layer() is None and widget.entries() == []
    assert widget.title.text() == HINT and widget.list.isHidden()
    assert widget.choose(1) is None and plain.selected_label == 1


def test_clicking_or_choose_sets_selected_label(viewer, widget, qtbot):
    layer = viewer.add_layer(_semseg())
    viewer.layers.selection.active = layer
    layer.mode = "pan_zoom"

    row = 15  # person
    rect = widget.list.visualItemRect(widget.list.item(row))
    if not widget.list.viewport().rect().contains(rect.center()):
        widget.list.scrollToItem(widget.list.item(row))
        rect = widget.list.visualItemRect(widget.list.item(row))
    qtbot.mouseClick(widget.list.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    assert layer.selected_label == 15 and layer.mode == "paint"
    assert widget.highlighted() == 15

    layer.mode = "pan_zoom"
    assert widget.choose(IGNORE) == IGNORE
    assert layer.selected_label == IGNORE and layer.mode == "paint"
    assert widget.choose(21) is None and layer.selected_label == IGNORE


def test_highlight_follows_selected_label(viewer, widget):
    layer = viewer.add_layer(_semseg())
    viewer.layers.selection.active = layer
    layer.selected_label = 8
    assert widget.highlighted() == 8 and widget.list.currentItem().text() == "8  cat"
    increase_label_id(layer)  # napari's "=" key
    assert widget.highlighted() == 9
    # the palette's tasks, when the palette becomes active
    palette = viewer.add_layer(make_palette_layer((H, W)))
    viewer.layers.selection.active = palette
    palette.selected_label = 4
    assert widget.current_layer() is palette and widget.highlighted() == 4
    # an unknown value (no guard here): nothing highlighted
    palette.selected_label = 6
    assert widget.highlighted() is None


def test_widget_disconnects_when_deleted(viewer, qtbot):
    layer = viewer.add_layer(_semseg())
    w = ClassListWidget(viewer)
    viewer.layers.selection.active = layer
    assert w.current_layer() is layer
    n_active = len(viewer.layers.selection.events.active.callbacks)
    n_label = len(layer.events.selected_label.callbacks)
    with qtbot.waitSignal(w.destroyed, timeout=5_000):
        w.deleteLater()
    assert len(viewer.layers.selection.events.active.callbacks) == n_active - 1
    assert len(layer.events.selected_label.callbacks) == n_label - 1
    layer.selected_label = 3  # nothing calls into the deleted widget
    viewer.layers.selection.active = viewer.layers["scene"]


# ---------------------------------------------------------------------------------------
# the guard (on layers outside a viewer: guard_values needs none)
# ---------------------------------------------------------------------------------------


def test_guard_refuses_new_label_on_semseg(reports):
    layer = _semseg()
    layer.selected_label = 8
    undo = guard_values(layer, reports.append)
    assert reports == []

    new_label(layer)  # napari's "M": the largest value painted (20) + 1

    assert layer.selected_label == 8
    assert len(reports) == 1
    text = reports[0]
    assert "scene semseg" in text and "21" in text and "kept 8 cat" in text
    assert "0 background .. 20 tvmonitor, 255 ignore" in text
    # "=" on the last class is refused, not wrapped
    layer.selected_label = 20
    increase_label_id(layer)
    assert layer.selected_label == 20 and "kept 20 tvmonitor" in reports[-1]
    undo()


def test_guard_keeps_swap_with_ignore_working(reports):
    layer = _semseg()
    guard_values(layer, reports.append)
    layer.selected_label = 8
    swap_selected_and_background_labels(layer)  # napari's "X": to 255 ignore
    assert layer.selected_label == IGNORE
    decrease_label_id(layer)  # "-": 254 is not a class
    assert layer.selected_label == IGNORE and len(reports) == 1
    swap_selected_and_background_labels(layer)  # back to the class, not to 254
    assert layer.selected_label == 8 and len(reports) == 1


def test_guard_refuses_a_value_past_the_last_task(reports):
    palette = make_palette_layer((H, W))
    palette.selected_label = 1
    guard_values(palette, reports.append)
    for expected in range(2, len(TASKS) + 1):  # valid values pass silently
        increase_label_id(palette)  # napari's "="
        assert palette.selected_label == expected
    assert reports == []

    increase_label_id(palette)  # 6: no task has it

    assert palette.selected_label == len(TASKS)
    assert len(reports) == 1
    assert "Task Palette" in reports[0] and "6 is not a task" in reports[0]
    assert "kept 5 normals" in reports[0]


def test_guard_fixes_an_invalid_value_it_finds(reports):
    palette = make_palette_layer((H, W))
    palette.selected_label = 9
    guard_values(palette, reports.append)
    assert palette.selected_label == 1 and len(reports) == 1 and "chose 1 semseg" in reports[0]


def test_guard_leaves_other_layers_alone(reports):
    from napari.layers import Labels

    plain = Labels(np.zeros((H, W), np.uint8), name="mine")
    undo = guard_values(plain, reports.append)
    new_label(plain)
    plain.selected_label = 21
    assert plain.selected_label == 21 and reports == []
    undo()


def test_guard_reports_values_painted_by_a_script(reports):
    layer = _semseg()
    guard_values(layer, reports.append)
    layer.paint((10, 10), 7)
    assert reports == []
    layer.paint((10, 10), 30)
    assert len(reports) == 1 and "30" in reports[0] and "painted" in reports[0]
    assert layer.data[10, 10] == 30  # reported, not changed: Ctrl+Z undoes it


def test_guard_viewer_guards_new_layers_until_disconnected(viewer, reports):
    first = viewer.add_layer(_semseg())
    first.selected_label = 8
    stop = guard_viewer(viewer, reports.append)

    new_label(first)
    assert first.selected_label == 8 and len(reports) == 1

    palette = viewer.add_layer(make_palette_layer((H, W)))  # inserted after the guard
    palette.selected_label = 5
    increase_label_id(palette)
    assert palette.selected_label == 5 and len(reports) == 2 and "6" in reports[1]

    # a removed layer is no longer guarded
    viewer.layers.remove(palette)
    palette.selected_label = 6
    assert palette.selected_label == 6 and len(reports) == 2

    stop()
    new_label(first)
    assert first.selected_label == 21 and len(reports) == 2
    late = viewer.add_layer(_semseg("late semseg"))
    late.selected_label = 40
    assert late.selected_label == 40 and len(reports) == 2
    stop()  # twice: harmless


def test_class_list_follows_a_refused_value(viewer, widget, reports):
    guard_viewer(viewer, reports.append)
    layer = viewer.add_layer(_semseg())
    viewer.layers.selection.active = layer
    widget.choose(8)
    new_label(layer)
    assert layer.selected_label == 8 and widget.highlighted() == 8 and len(reports) == 1
