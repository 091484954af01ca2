"""The "Task Palette" napari widget, in a real viewer (run under Xvfb:
``xvfb-run -a python -m pytest tests/test_napari_palette.py``)."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from qtpy.QtCore import Qt  # noqa: E402

from composite_tasking._napari.palette_layer import (  # noqa: E402
    METADATA_KEY,
    is_palette_layer,
)
from composite_tasking._napari.palette_widget import (  # noqa: E402
    RULE_FILE_ITEM,
    TaskPaletteWidget,
)
from composite_tasking.tasks import NO_TASK, SEMSEG_CLASSES, TASKS, get_task  # noqa: E402

pytestmark = pytest.mark.gui

H, W = 48, 64
PLUGIN = "napari-composite-tasking"


@pytest.fixture
def viewer_widget(make_napari_viewer):
    viewer = make_napari_viewer()
    image = viewer.add_image(np.random.default_rng(0).random((H, W)), name="photo")
    widget = TaskPaletteWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Task Palette")
    return viewer, widget, image


def _value(task: str) -> int:
    return get_task(task).palette_value


# ---------------------------------------------------------------------------------------
# new palette, colours, legend
# ---------------------------------------------------------------------------------------


def test_new_palette_layer_matches_tasks(viewer_widget, errors):
    viewer, widget, image = viewer_widget
    assert widget.image_combo.current_layer() is image

    layer = widget.new_palette()

    assert errors == []
    assert layer in viewer.layers and layer.name == "photo palette"  # named after its image
    assert layer.data.shape == (H, W) and layer.data.dtype == np.uint8
    assert (layer.data == NO_TASK).all()
    # it belongs to the image it was made for
    assert layer.metadata[METADATA_KEY] == {"kind": "palette",
                                            "image_key": image.metadata[METADATA_KEY]["image_key"]}
    assert is_palette_layer(layer) and not is_palette_layer(image)
    assert widget.palette_layer is layer
    # colours: each task's palette value shows the task's colour, 0 is transparent
    for task in TASKS:
        assert task.palette_value == task.id + 1
        rgba = layer.colormap.map(task.palette_value)
        np.testing.assert_allclose(rgba, [*(np.array(task.color) / 255), 1], atol=1e-6)
    assert layer.colormap.map(NO_TASK)[3] == 0
    # the layer's features name the task under the cursor in napari's status bar
    assert list(layer.features["task"])[1:] == [t.name for t in TASKS]


def test_legend_lists_every_task_with_value_and_colour(viewer_widget):
    _, widget, _ = viewer_widget
    buttons = {widget.task_buttons.id(b): b for b in widget.task_buttons.buttons()}
    assert set(buttons) == {NO_TASK} | {t.palette_value for t in TASKS}
    for task in TASKS:
        assert task.name in buttons[task.palette_value].text()
    rules = [widget.rule_combo.itemText(i) for i in range(widget.rule_combo.count())]
    named = ["mosaic", "random", "R2", "R3", RULE_FILE_ITEM]
    assert rules == [f"S:{t.name}" for t in TASKS] + named


def test_rgb_image_palette_is_2d(make_napari_viewer):
    viewer = make_napari_viewer()
    rgb = viewer.add_image(np.zeros((H, W, 3), dtype=np.uint8), rgb=True, scale=(2, 3))
    widget = TaskPaletteWidget(viewer)
    layer = widget.new_palette(rgb)
    assert layer.data.shape == (H, W)
    assert tuple(layer.scale) == (2, 3)


def test_new_palette_without_image_notifies(make_napari_viewer, errors):
    viewer = make_napari_viewer()
    widget = TaskPaletteWidget(viewer)
    assert widget.new_palette() is None
    assert len(errors) == 1 and "image" in errors[0]
    assert len(viewer.layers) == 0


def test_new_palette_button(viewer_widget, qtbot):
    viewer, widget, _ = viewer_widget
    qtbot.mouseClick(widget.new_button, Qt.MouseButton.LeftButton)
    assert [ly.name for ly in viewer.layers if is_palette_layer(ly)] == ["photo palette"]


# ---------------------------------------------------------------------------------------
# painting
# ---------------------------------------------------------------------------------------


def test_select_task_sets_selected_label_and_paint_mode(viewer_widget, qtbot):
    viewer, widget, _ = viewer_widget
    layer = widget.new_palette()

    assert widget.select_task("saliency") == _value("saliency")
    assert layer.selected_label == _value("saliency")
    assert layer.mode == "paint"
    assert viewer.layers.selection.active is layer

    # clicking a legend entry does the same
    button = widget.task_buttons.button(_value("normals"))
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
    assert layer.selected_label == _value("normals")

    # no task = erase with 0
    widget.select_task(None)
    assert layer.selected_label == NO_TASK

    # a label chosen in napari's own layer controls shows in the widget
    layer.selected_label = _value("edges")
    assert widget.task_buttons.checkedId() == _value("edges")
    assert widget.selected_value == _value("edges")


def test_select_unknown_task_notifies(viewer_widget, errors):
    _, widget, _ = viewer_widget
    layer = widget.new_palette()
    before = layer.selected_label
    assert widget.select_task("colour") is None
    assert errors and "unknown task" in errors[0]
    assert layer.selected_label == before


# ---------------------------------------------------------------------------------------
# fill from rule
# ---------------------------------------------------------------------------------------


def test_fill_single_task_and_undo(viewer_widget, errors):
    _, widget, _ = viewer_widget
    layer = widget.new_palette()

    out = widget.fill_from_rule("S:normals")

    assert errors == []
    assert (layer.data == 5).all() and (out == 5).all()
    assert layer.data.dtype == np.uint8
    layer.undo()  # the fill is one undo step
    assert (layer.data == NO_TASK).all()
    layer.redo()
    assert (layer.data == _value("normals")).all()


def test_clear_is_one_undo_step(viewer_widget, qtbot, errors):
    _, widget, _ = viewer_widget
    layer = widget.new_palette()
    widget.fill_from_rule("S:parts")
    qtbot.mouseClick(widget.clear_button, Qt.MouseButton.LeftButton)
    assert errors == []
    assert (layer.data == NO_TASK).all()
    layer.undo()
    assert (layer.data == _value("parts")).all()


def test_fill_mosaic_gives_four_rectangles(viewer_widget, errors):
    _, widget, _ = viewer_widget
    layer = widget.new_palette()

    widget.fill_from_rule("mosaic", rng=3)

    data = layer.data
    assert errors == []
    assert data.min() >= 1 and data.max() <= len(TASKS)
    assert len(np.unique(data)) == 4
    # four rectangles split by one vertical and one horizontal line
    cols = np.flatnonzero((data[:, 1:] != data[:, :-1]).any(axis=0))
    rows = np.flatnonzero((data[1:, :] != data[:-1, :]).any(axis=1))
    assert len(cols) == 1 and len(rows) == 1
    r, c = rows[0] + 1, cols[0] + 1
    quadrants = [data[:r, :c], data[:r, c:], data[r:, :c], data[r:, c:]]
    assert all(len(np.unique(q)) == 1 for q in quadrants)


def test_fill_random_uses_all_tasks(viewer_widget):
    _, widget, _ = viewer_widget
    layer = widget.new_palette()
    widget.fill_from_rule("random", rng=0)
    assert set(np.unique(layer.data)) == {t.palette_value for t in TASKS}


def _semantic_map() -> np.ndarray:
    sem = np.zeros((H, W), dtype=np.int32)  # background
    sem[5:20, 5:25] = SEMSEG_CLASSES.index("person")
    sem[25:40, 30:60] = SEMSEG_CLASSES.index("cat")
    return sem


def test_fill_r2_from_semantic_labels_layer(viewer_widget, errors):
    viewer, widget, _ = viewer_widget
    layer = widget.new_palette()
    sem = viewer.add_labels(_semantic_map(), name="semantics")
    assert widget.semantic_combo.current_layer() is sem
    assert widget.palette_combo.layers() == [layer]  # the palette is no semantic map

    widget.rule_combo.setCurrentText("R2")
    assert widget.semantic_combo.isEnabled()
    out = widget.fill_from_rule()

    assert errors == []
    assert out is not None
    person, cat = _semantic_map() == 15, _semantic_map() == 8
    assert (layer.data[person] == _value("parts")).all() and _value("parts") == 2
    assert (layer.data[cat] == _value("semseg")).all() and _value("semseg") == 1
    assert (layer.data[~(person | cat)] == _value("edges")).all() and _value("edges") == 3


def test_semantic_rule_without_semantic_layer_changes_nothing(viewer_widget, errors):
    viewer, widget, _ = viewer_widget
    layer = widget.new_palette()
    widget.fill_from_rule("S:edges")
    n_layers = len(viewer.layers)

    assert widget.fill_from_rule("R3") is None

    assert len(errors) == 1 and "semantic" in errors[0]
    assert (layer.data == _value("edges")).all()
    assert len(viewer.layers) == n_layers


def test_semantic_map_of_other_shape_changes_nothing(viewer_widget, errors):
    viewer, widget, _ = viewer_widget
    layer = widget.new_palette()
    wrong = viewer.add_labels(np.zeros((H + 1, W), dtype=np.uint8), name="wrong size")
    assert widget.semantic_combo.layers() == []  # a map of another size is not offered

    assert widget.fill_from_rule("R2") is None
    assert widget.fill_from_rule("R2", semantics=wrong) is None

    assert len(errors) == 2 and "semantic map" in errors[0] and "shape" in errors[1]
    assert (layer.data == NO_TASK).all()


def test_invalid_yaml_rule_file_changes_nothing(viewer_widget, errors, tmp_path):
    viewer, widget, _ = viewer_widget
    layer = widget.new_palette()
    viewer.add_labels(_semantic_map(), name="semantics")
    widget.fill_from_rule("S:saliency")
    before = layer.data.copy()
    n_rules = widget.rule_combo.count()

    bad_yaml = tmp_path / "broken.yaml"
    bad_yaml.write_text("tasks: [parts: {person\n", encoding="utf-8")
    assert widget.fill_from_rule_file(bad_yaml) is None
    assert len(errors) == 1 and "not valid YAML" in errors[0]

    bad_task = tmp_path / "bad_task.yaml"
    bad_task.write_text("name: bad\ntasks:\n  depth: [person]\n", encoding="utf-8")
    assert widget.fill_from_rule_file(bad_task) is None
    assert len(errors) == 2 and "depth" in errors[1]

    assert widget.fill_from_rule_file(tmp_path / "missing.yaml") is None
    assert len(errors) == 3

    np.testing.assert_array_equal(layer.data, before)
    assert widget.rule_combo.count() == n_rules


def test_rule_file_fills_and_is_remembered(viewer_widget, errors, tmp_path):
    viewer, widget, _ = viewer_widget
    layer = widget.new_palette()
    viewer.add_labels(_semantic_map(), name="semantics")
    rule = tmp_path / "people.yaml"
    rule.write_text(
        "name: people\ndefault: null\ntasks:\n  normals: [person]\n", encoding="utf-8"
    )

    assert widget.fill_from_rule_file(rule) is not None

    assert errors == []
    person = _semantic_map() == SEMSEG_CLASSES.index("person")
    assert (layer.data[person] == _value("normals")).all()
    assert (layer.data[~person] == NO_TASK).all()
    assert widget.rule_combo.currentData() == str(rule)  # offered again, selected
    widget.fill_from_rule("S:parts")
    assert widget.fill_from_rule() is not None  # the remembered file
    assert (layer.data[~person] == NO_TASK).all()


def test_fill_button_with_rule_from_combo(viewer_widget, qtbot):
    _, widget, _ = viewer_widget
    layer = widget.new_palette()
    widget.rule_combo.setCurrentText("S:edges")
    qtbot.mouseClick(widget.fill_button, Qt.MouseButton.LeftButton)
    assert (layer.data == _value("edges")).all()


def test_fill_without_palette_makes_one(viewer_widget, errors):
    viewer, widget, image = viewer_widget
    widget.fill_from_rule("S:parts")
    palettes = [ly for ly in viewer.layers if is_palette_layer(ly)]
    assert errors == [] and len(palettes) == 1
    assert (palettes[0].data == _value("parts")).all()


def test_layer_choices_follow_the_viewer(viewer_widget):
    viewer, widget, image = viewer_widget
    layer = widget.new_palette()
    image.name = "renamed"
    assert widget.image_combo.currentText() == "renamed"
    viewer.layers.remove(layer)
    assert widget.palette_layer is None
    viewer.layers.remove(image)
    assert widget.image_combo.current_layer() is None
    assert not widget.new_button.isEnabled() or widget.new_palette() is None


# ---------------------------------------------------------------------------------------
# plugin manifest and the core/napari boundary
# ---------------------------------------------------------------------------------------


def test_manifest_is_valid():
    from npe2 import PluginManifest

    manifest = PluginManifest.from_distribution(PLUGIN)
    assert manifest.name == PLUGIN and manifest.display_name == "CompositeTasking"
    manifest.validate_imports()
    (widget,) = [w for w in manifest.contributions.widgets if w.display_name == "Task Palette"]
    (command,) = [c for c in manifest.contributions.commands if c.id == widget.command]
    assert command.python_name == "composite_tasking._napari.palette_widget:TaskPaletteWidget"

    npe2 = Path(sys.executable).with_name("npe2")
    cmd = [str(npe2)] if npe2.exists() else [sys.executable, "-m", "npe2"]
    run = subprocess.run([*cmd, "validate", PLUGIN], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def test_manifest_symlink_in_package():
    import composite_tasking

    package_dir = Path(composite_tasking.__file__).parent
    repo_manifest = package_dir.parents[1] / "napari.yaml"
    if repo_manifest.exists():  # source checkout / editable install
        assert (package_dir / "napari.yaml").resolve() == repo_manifest.resolve()


def test_widget_opens_from_napari_plugin_menu(make_napari_viewer, errors):
    viewer = make_napari_viewer()
    image = viewer.add_image(np.zeros((H, W), dtype=np.float32))
    with warnings.catch_warnings():
        # napari hands plugins a PublicOnlyProxy of the viewer and warns (FutureWarning)
        # on private attribute access through it: the widget must not need any
        warnings.simplefilter("error", FutureWarning)
        _dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Task Palette")
        assert isinstance(widget, TaskPaletteWidget)
        assert widget.image_combo.current_layer() is image
        layer = widget.new_palette()
        widget.select_task("parts")
        widget.fill_from_rule("mosaic", rng=1)
        widget.fill_from_rule("S:saliency")
        layer.undo()
    assert errors == []
    assert layer in viewer.layers and viewer.layers.selection.active is layer
    assert layer.selected_label == _value("parts") and layer.mode == "paint"
    assert len(np.unique(layer.data)) == 4


def test_core_does_not_import_napari_or_qt():
    code = (
        "import sys, composite_tasking, composite_tasking.tasks, composite_tasking.palette\n"
        "bad = sorted(m for m in ('napari', 'qtpy', 'PyQt6', 'PyQt5', 'PySide6', 'magicgui')"
        " if m in sys.modules)\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
