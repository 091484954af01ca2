"""The "Task Palette" dock widget: make, paint and fill CompositeTasking Task Palettes.

A Task Palette says which task the network predicts at each pixel (``task id + 1``,
0 = no task). The widget

- makes a palette layer over a chosen image ("New palette"; the Image combo lists the
  image layers, not the plugin's own prediction layers); the palette belongs to that
  image (its ``image_key``), and the Predict widget uses it for that image only,
- lists the tasks with their colour and palette value; picking one makes it the label
  painted on the palette (and switches the layer to paint mode),
- fills the palette from a rule (``S:<task>``, ``mosaic``, ``random``, ``R2``, ``R3`` or
  a YAML rule file); semantic rules read the class ids of a chosen Labels layer (the
  "Predict" widget fills from the classes the model predicts instead);
- clears the palette ("Clear").

Every button calls a plain method (:meth:`TaskPaletteWidget.new_palette`,
:meth:`~TaskPaletteWidget.select_task`, :meth:`~TaskPaletteWidget.fill_from_rule`,
:meth:`~TaskPaletteWidget.fill_from_rule_file`, :meth:`~TaskPaletteWidget.clear_palette`)
that scripts and tests can call too.
Errors go to napari's notifications and leave the layers as they were.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
from napari.layers import Image, Labels, Layer
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import Qt
from qtpy.QtGui import QColor, QIcon, QPixmap
from qtpy.QtWidgets import (
    QButtonGroup,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QRadioButton,
    QVBoxLayout,
    QWidget,
)

from ..palette import RuleError, load_rule, load_rule_file, validate_palette
from ..tasks import NO_TASK, TASKS, Task, get_task
from ._compat import keep_gl_programs
from .layer_pool import add_or_reuse
from .palette_layer import (
    NO_TASK_NAME,
    image_plane_shape,
    is_palette_layer,
    make_palette_layer,
    palette_image_key,
    palette_name,
    record_rule,
)
from .task_layers import SPARE_KIND, TASK_KIND, image_key, layer_meta

if TYPE_CHECKING:
    import napari

__all__ = ["TaskPaletteWidget", "RULE_FILE_ITEM", "builtin_rule_specs"]

#: text of the rule-combo entry that asks for a YAML rule file
RULE_FILE_ITEM = "rule file..."
#: fills that change more pixels than this replace the data without undo history
#: (the history keeps two index arrays per changed pixel)
UNDO_MAX_PIXELS = 16_000_000
# errors a rule or a layer can raise for bad input; anything else is a bug
_USER_ERRORS = (ValueError, KeyError, TypeError, OSError)


def builtin_rule_specs() -> list[str]:
    """The rules offered in the combo: S:<task> for every task, then the named rules."""
    return [f"S:{t.name}" for t in TASKS] + ["mosaic", "random", "R2", "R3"]


def swatch_pixmap(rgb: tuple[int, int, int] | None, size: int = 14) -> QPixmap:
    pix = QPixmap(size, size)
    if rgb is None:  # no task: a transparent box with a border
        pix.fill(Qt.GlobalColor.transparent)
    else:
        pix.fill(QColor(*rgb))
    return pix


def _rule_summary(spec: str) -> str:
    """One line saying what a rule does, from the rule itself."""
    rule = load_rule(spec)
    text = getattr(rule, "description", "") or ""
    if not text:
        task = getattr(rule, "task", None)
        if isinstance(task, Task):
            text = f"{task.title} ({task.name}) at every pixel."
        else:
            doc = (type(rule).__doc__ or "").strip().splitlines()
            text = doc[0] if doc else rule.name
    if rule.needs_semantics:
        text += " Needs a semantic map."
    return text.strip()


def semantic_map_fits(layer: Layer, image: Layer | None) -> bool:
    """Whether a semantic rule may read ``layer`` as the class map of ``image``: a Labels
    layer (not a palette) that is the image's own semseg pseudo-labels or a map marked
    as the image's (``image_key``: ground truth read with it), or a map of no image of
    the image's size. Never another image's map, nor another task's layer."""
    if not isinstance(layer, Labels) or is_palette_layer(layer):
        return False
    meta = layer_meta(layer)
    if meta.get("kind") == SPARE_KIND:  # kept for the next image: nobody's map
        return False
    key = image_key(image) if image is not None else None
    if meta.get("kind") == TASK_KIND:
        return meta.get("task") == "semseg" and meta.get("role") == "label" and meta.get("image_key") == key
    owner = meta.get("image_key")
    if owner is not None:
        return owner == key
    if image is None:
        return True
    try:
        return tuple(np.shape(layer.data)[-2:]) == tuple(image_plane_shape(image))
    except ValueError:
        return False


def is_source_image(layer: Layer) -> bool:
    """An image layer a palette can be made for: not one of the plugin's own outputs
    (probabilities, normals, confidence)."""
    return isinstance(layer, Image) and layer_meta(layer).get("kind") not in (TASK_KIND, SPARE_KIND)


class LayerCombo(QComboBox):
    """A combo of the viewer's layers that pass ``accept``; keeps its choice on refresh."""

    def __init__(self, viewer, accept: Callable[[Layer], bool], empty: str, parent=None):
        super().__init__(parent)
        self._viewer = viewer
        self._accept = accept
        self._empty = empty
        self._layers: list[Layer] = []
        self.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.refresh()

    def refresh(self) -> None:
        current = self.current_layer()
        self._layers = [ly for ly in self._viewer.layers if self._accept(ly)]
        self.blockSignals(True)
        try:
            self.clear()
            if not self._layers:
                self.addItem(self._empty)
            for ly in self._layers:
                self.addItem(ly.name)
            if current in self._layers:
                self.setCurrentIndex(self._layers.index(current))
        finally:
            self.blockSignals(False)
        self.setEnabled(bool(self._layers))
        if current is not self.current_layer():
            self.currentIndexChanged.emit(self.currentIndex())

    def current_layer(self) -> Layer | None:
        i = self.currentIndex()
        return self._layers[i] if 0 <= i < len(self._layers) else None

    def set_current_layer(self, layer: Layer | None) -> None:
        if layer not in self._layers:
            self.refresh()
        if layer in self._layers:
            self.setCurrentIndex(self._layers.index(layer))

    def layers(self) -> list[Layer]:
        return list(self._layers)


class TaskPaletteWidget(QWidget):
    """Dock widget to make, paint and fill Task Palettes (see the module docstring)."""

    def __init__(self, napari_viewer: "napari.viewer.Viewer", parent: QWidget | None = None):
        super().__init__(parent)
        keep_gl_programs()  # Mesa's software OpenGL crashes after programs are deleted (_compat)
        self.viewer = napari_viewer
        self._selected_value = TASKS[0].palette_value
        self._watched_palette: Labels | None = None
        self._watched_layers: set[int] = set()

        # --- layers -------------------------------------------------------------------
        self.image_combo = LayerCombo(self.viewer, is_source_image, "(no image layer)")
        self.image_combo.setToolTip("The image the palette is made for (its H x W).")
        self.palette_combo = LayerCombo(self.viewer, is_palette_layer, "(no palette yet)")
        self.palette_combo.setToolTip("The Task Palette layer that painting and fills change.")
        self.new_button = QPushButton("New palette")
        self.new_button.setToolTip("Add an empty Task Palette (Labels layer, uint8) of the image's height and width.")

        self.layers_box = layers_box = QGroupBox("Palette")
        form = QFormLayout(layers_box)
        form.addRow("Image", self.image_combo)
        form.addRow("", self.new_button)
        form.addRow("Palette", self.palette_combo)

        # --- legend + task selector ---------------------------------------------------
        legend_box = QGroupBox("Tasks (pick one to paint)")
        grid = QGridLayout(legend_box)
        grid.setColumnStretch(2, 1)
        self.task_buttons = QButtonGroup(self)
        self.task_buttons.setExclusive(True)
        rows = [(t.palette_value, t.name, t.title, t.color) for t in TASKS]
        rows.append((NO_TASK, NO_TASK_NAME, "no task (erase)", None))
        for r, (value, name, title, rgb) in enumerate(rows):
            swatch = QLabel()
            swatch.setPixmap(swatch_pixmap(rgb))
            swatch.setToolTip("transparent" if rgb is None else f"RGB {tuple(rgb)}")
            if rgb is None:
                swatch.setStyleSheet("border: 1px solid gray;")
            value_label = QLabel(str(value))
            value_label.setToolTip("palette value (task id + 1)")
            button = QRadioButton(f"{name}  —  {title}")
            button.setObjectName(f"task_{name}")
            button.setToolTip(f"Paint '{name}' (value {value}) on the palette.")
            self.task_buttons.addButton(button, value)
            grid.addWidget(swatch, r, 0)
            grid.addWidget(value_label, r, 1)
            grid.addWidget(button, r, 2)
        self.task_buttons.button(self._selected_value).setChecked(True)

        # --- fill from rule -----------------------------------------------------------
        self.rule_combo = QComboBox()
        for spec in builtin_rule_specs():
            self.rule_combo.addItem(spec, spec)
        self.rule_combo.addItem(RULE_FILE_ITEM, None)
        for i in range(self.rule_combo.count()):
            spec = self.rule_combo.itemData(i)
            if isinstance(spec, str) and spec.startswith("S:"):
                self.rule_combo.setItemIcon(i, QIcon(swatch_pixmap(get_task(spec[2:]).color)))
        self.semantic_combo = LayerCombo(
            self.viewer,
            lambda ly: semantic_map_fits(ly, self.target_image()),
            "(no semantic map of this image)",
        )
        self.semantic_combo.setToolTip(
            "Labels layer holding PASCAL VOC class ids (0 background .. 20 tvmonitor, "
            "255 unlabelled), read by semantic rules (R2, R3, rule files): only this "
            "image's (its semseg prediction, its ground truth) or a map of no image of its size."
        )
        self.rule_info = QLabel()
        self.rule_info.setWordWrap(True)
        self.fill_button = QPushButton("Fill from rule")
        self.fill_button.setToolTip("Replace the palette with the rule's palette (undo: Ctrl+Z).")

        self.fill_box = fill_box = QGroupBox("Fill from rule")
        fill_form = QFormLayout(fill_box)
        fill_form.addRow("Rule", self.rule_combo)
        fill_form.addRow("Semantic map", self.semantic_combo)
        fill_form.addRow(self.rule_info)
        self.clear_button = QPushButton("Clear")
        self.clear_button.setToolTip("Set the whole palette to 'no task' (undo: Ctrl+Z).")
        fill_buttons = QHBoxLayout()
        fill_buttons.addWidget(self.fill_button, 1)
        fill_buttons.addWidget(self.clear_button)
        fill_form.addRow(fill_buttons)

        self.message_label = QLabel()
        self.message_label.setObjectName("palette_message")
        self.message_label.setWordWrap(True)
        grid.addWidget(self.message_label, len(rows), 0, 1, 3)
        self.message_label.hide()  # shown with a message

        layout = QVBoxLayout(self)
        layout.addWidget(layers_box)
        layout.addWidget(legend_box)
        layout.addWidget(fill_box)
        layout.addStretch(1)

        # --- signals ------------------------------------------------------------------
        self.new_button.clicked.connect(self._on_new_clicked)
        self.task_buttons.idClicked.connect(self._on_task_clicked)
        self.fill_button.clicked.connect(self._on_fill_clicked)
        self.clear_button.clicked.connect(lambda: self.clear_palette())
        self.rule_combo.currentIndexChanged.connect(self._on_rule_changed)
        self.palette_combo.currentIndexChanged.connect(self._on_palette_changed)
        # the semantic maps offered are the chosen image's: follow the image and palette
        self.image_combo.currentIndexChanged.connect(self._refresh_semantics)
        self.palette_combo.currentIndexChanged.connect(self._refresh_semantics)

        # (emitter, callback) pairs connected to napari events, disconnected when Qt
        # deletes this widget so that napari never calls into a deleted C++ object
        viewer_callbacks = [
            (self.viewer.layers.events.inserted, self._on_layer_inserted),
            (self.viewer.layers.events.removed, self._on_layer_removed),
            (self.viewer.layers.events.moved, self._refresh_layer_choices),
            (self.viewer.layers.events.reordered, self._refresh_layer_choices),
        ]
        self._layer_name_callbacks: list = []
        self._palette_watch: list = []
        for emitter, callback in viewer_callbacks:
            emitter.connect(callback)
        for layer in self.viewer.layers:
            self._watch_layer(layer)
        name_cbs, palette_cbs = self._layer_name_callbacks, self._palette_watch
        self.destroyed.connect(lambda *_: disconnect_all(viewer_callbacks + name_cbs + palette_cbs))

        self._on_rule_changed()
        self._on_palette_changed()

    # ==================================================================================
    # plain methods (the buttons call these; so can scripts and tests)
    # ==================================================================================

    @property
    def palette_layer(self) -> Labels | None:
        """The palette layer painting and fills act on (the one chosen in the widget)."""
        return self.palette_combo.current_layer()

    def _failed(self, text: str) -> None:
        """A failure: in the widget's own line (red) and as napari's notification."""
        self.message_label.setText(text)
        self.message_label.setStyleSheet("color: #e0604a;")
        self.message_label.show()
        show_error(text)

    def target_image(self) -> Image | None:
        """The image the palette (and a semantic map) is for: the chosen palette's image
        when it belongs to one, else the image chosen in the widget."""
        palette = self.palette_layer
        key = palette_image_key(palette) if palette is not None else None
        if key is not None:
            own = next((ly for ly in self.viewer.layers if is_source_image(ly)
                        and layer_meta(ly).get("image_key") == key), None)  # fmt: skip
            if own is not None:
                return own
        return self.image_combo.current_layer()

    def set_compact(self, compact: bool = True) -> None:
        """Hide the image and palette choosers (a series navigator chooses the image: the
        palette is that image's, made when a task is first picked)."""
        self.layers_box.setVisible(not compact)

    @property
    def selected_value(self) -> int:
        """Palette value of the task chosen to paint (0 = no task)."""
        return self._selected_value

    def new_palette(self, image: Image | None = None) -> Labels | None:
        """Add an empty Task Palette over ``image`` (default: the chosen image layer).

        The palette is a uint8 Labels layer of the image's (H, W), coloured by task.
        Returns it, or None (and notifies) when there is no usable image.
        """
        image = image if image is not None else self.image_combo.current_layer()
        if image is None:
            self._failed("Task Palette: add or choose an image layer first.")
            return None
        try:
            shape = image_plane_shape(image)
        except _USER_ERRORS as e:
            self._failed(f"Task Palette: {e}")
            return None
        layer = make_palette_layer(shape, like=image, image_key=image_key(image),
                                   name=palette_name(image))  # fmt: skip
        layer.selected_label = self._selected_value
        return self._add_palette(layer)

    def select_task(self, task: str | int | Task | None) -> int | None:
        """Paint ``task`` (name, id, Task; None = no task / erase) on the palette.

        Sets the palette layer's ``selected_label`` to the task's palette value, switches
        the layer to paint mode and makes it the active layer. Returns the value, or None
        (and notifies) for an unknown task.
        """
        try:
            value = NO_TASK if task is None else get_task(task).palette_value
        except KeyError as e:
            self._failed(f"Task Palette: {e.args[0]}")
            return None
        self._selected_value = value
        self._check_task_button(value)
        layer = self.palette_layer
        if layer is None and self.image_combo.current_layer() is not None:
            layer = self.new_palette()  # picking a task on an image without a palette
        if layer is None:
            show_info("Task Palette: create a palette first ('New palette').")
            return value
        layer.selected_label = value
        self.viewer.layers.selection.active = layer
        layer.mode = "paint"
        return value

    def clear_palette(self, palette_layer: Labels | None = None) -> np.ndarray | None:
        """Set the palette to NO_TASK everywhere, as one undoable edit."""
        layer = palette_layer if palette_layer is not None else self.palette_layer
        if layer is None:
            self._failed("Task Palette: no palette to clear")
            return None
        self._replace_data(layer, np.zeros_like(np.asarray(layer.data)))
        return np.asarray(layer.data)

    def fill_from_rule(
        self,
        rule=None,
        *,
        semantics: Labels | np.ndarray | None = None,
        palette_layer: Labels | None = None,
        rng: np.random.Generator | int | None = None,
    ) -> np.ndarray | None:
        """Replace the palette with the one ``rule`` makes, as one undoable edit.

        ``rule``: a spec for :func:`composite_tasking.palette.load_rule` (``S:<task>``,
        ``mosaic``, ``random``, ``R2``, ``R3``, a YAML path) or a rule object; default:
        the rule chosen in the widget. ``semantics``: the Labels layer (or array) of
        class ids for semantic rules; default: the chosen "Semantic map" layer.
        ``palette_layer``: default the chosen palette, or a new one over the chosen
        image when there is none. ``rng``: seed or generator of random rules.

        Returns the new palette array, or None (nothing changed) after notifying the
        user of the problem.
        """
        try:
            if rule is None:
                rule = self.rule_combo.currentData()
                if rule is None:
                    raise ValueError("choose a rule file first")
            rule = load_rule(rule)
            target = palette_layer if palette_layer is not None else self.palette_layer
            if target is not None:
                shape = tuple(int(s) for s in target.data.shape)
                where = f"palette {target.name!r}"
                if len(shape) != 2:
                    raise ValueError(f"{where} has shape {shape}; a Task Palette is 2-D (H, W)")
            else:
                image = self.image_combo.current_layer()
                if image is None:
                    raise ValueError("add an image layer (or a palette) first")
                shape = image_plane_shape(image)
                where = f"image {image.name!r}"
            sem = None
            if rule.needs_semantics:
                sem = self._semantic_array(rule, semantics, shape, where)
            new = rule.palette(shape=shape, semantics=sem, rng=rng)
            new = validate_palette(new, source=f"rule {rule.name!r}")
            if new.shape != shape:
                raise ValueError(f"rule {rule.name!r} made shape {new.shape}, {where} is {shape}")
        except _USER_ERRORS as e:
            msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
            self._failed(f"Task Palette: {msg}")
            return None

        if target is None:
            target = self._add_palette(make_palette_layer(shape, new, like=image, image_key=image_key(image),
                                                          name=palette_name(image)))  # fmt: skip
        else:
            self._replace_data(target, new)
        record_rule(target, rule)
        text = f"Task Palette: filled {target.name!r} with rule {rule.name!r}."
        self.message_label.setText(text)
        self.message_label.setStyleSheet("")
        self.message_label.show()
        show_info(text)
        return new

    def fill_from_rule_file(self, path: str | Path, **kwargs) -> np.ndarray | None:
        """Fill the palette with the semantic rule in YAML file ``path`` (see
        :func:`composite_tasking.palette.load_rule_file`); on success the file is added
        to the rule choices. Other arguments as for :meth:`fill_from_rule`."""
        try:
            rule = load_rule_file(path)
        except RuleError as e:
            self._failed(f"Task Palette: {e}")
            return None
        result = self.fill_from_rule(rule, **kwargs)
        if result is not None:
            self._remember_rule_file(Path(path), rule.name)
        return result

    # ==================================================================================
    # helpers
    # ==================================================================================

    def _semantic_array(self, rule, semantics, shape, where) -> np.ndarray:
        if semantics is None:
            semantics = self.semantic_combo.current_layer()
        if semantics is None:
            raise ValueError(
                f"rule {rule.name!r} needs a semantic map: add a Labels layer of PASCAL "
                "class ids and choose it under 'Semantic map'"
            )
        if isinstance(semantics, Layer):
            image = self.target_image()
            marked = layer_meta(semantics).get("kind") == TASK_KIND or layer_meta(semantics).get("image_key")
            if marked and not semantic_map_fits(semantics, image):  # else: the shape check below
                raise ValueError(f"{semantics.name!r} is not a semantic map of image "
                                 f"{getattr(image, 'name', '?')!r} (another image's, or another "
                                 "task's layer): choose one of this image's")  # fmt: skip
            name, arr = f"semantic map {semantics.name!r}", np.asarray(semantics.data)
        else:
            name, arr = "semantic map", np.asarray(semantics)
        if arr.ndim != 2:
            raise ValueError(f"{name} has shape {arr.shape}; rule {rule.name!r} needs 2-D (H, W)")
        if arr.shape != tuple(shape):
            raise ValueError(f"{name} has shape {arr.shape} but {where} has shape {tuple(shape)}")
        return arr

    def _add_palette(self, layer: Labels) -> Labels:
        layer = add_or_reuse(self.viewer, layer)  # a spare palette, or inserted -> combos refresh
        self.palette_combo.set_current_layer(layer)
        return layer

    @staticmethod
    def _replace_data(layer: Labels, new: np.ndarray) -> None:
        """Write ``new`` into ``layer`` through napari's edit history (Ctrl+Z undoes it)."""
        old = np.asarray(layer.data)
        changed = np.nonzero(old != new)
        if changed[0].size == 0:
            return
        if changed[0].size <= UNDO_MAX_PIXELS and isinstance(layer.data, np.ndarray):
            with layer.block_history():  # one undo step
                layer.data_setitem(changed, new[changed])
        else:
            layer.data = new.astype(layer.data.dtype, copy=True)

    def _check_task_button(self, value: int) -> None:
        button = self.task_buttons.button(value)
        if button is not None and not button.isChecked():
            button.setChecked(True)

    def _remember_rule_file(self, path: Path, name: str) -> None:
        spec = str(path)
        index = self.rule_combo.findData(spec)
        if index < 0:
            index = self.rule_combo.count() - 1  # before RULE_FILE_ITEM
            self.rule_combo.insertItem(index, f"{name} ({path.name})", spec)
            self.rule_combo.setItemData(index, spec, Qt.ItemDataRole.ToolTipRole)
        self.rule_combo.setCurrentIndex(index)

    def _ask_rule_file(self) -> str | None:  # pragma: no cover - needs a person
        path, _ = QFileDialog.getOpenFileName(
            self, "Choose a rule file", "", "Rule files (*.yaml *.yml);;All files (*)"
        )
        return path or None

    # --- Qt slots ---------------------------------------------------------------------

    def _on_new_clicked(self) -> None:
        self.new_palette()

    def _on_task_clicked(self, value: int) -> None:
        by_value = {t.palette_value: t for t in TASKS}
        self.select_task(by_value.get(value))  # NO_TASK -> None (erase)

    def _on_fill_clicked(self) -> None:
        if self.rule_combo.currentData() is None:  # "rule file..."
            path = self._ask_rule_file()
            if path:
                self.fill_from_rule_file(path)
            return
        self.fill_from_rule()

    def _on_rule_changed(self, *_) -> None:
        spec = self.rule_combo.currentData()
        if spec is None:
            needs, text = True, "A YAML semantic rule (see rules/r2.yaml). Needs a semantic map."
        else:
            try:
                needs, text = load_rule(spec).needs_semantics, _rule_summary(spec)
            except _USER_ERRORS as e:
                needs, text = True, f"cannot read this rule: {e}"
        self.semantic_combo.setEnabled(needs and bool(self.semantic_combo.layers()))
        self.rule_info.setText(text)

    def _refresh_semantics(self, *_) -> None:
        self.semantic_combo.refresh()
        self._on_rule_changed()

    def _on_palette_changed(self, *_) -> None:
        layer = self.palette_layer
        if layer is self._watched_palette:
            return
        disconnect_all(self._palette_watch)
        self._palette_watch.clear()
        self._watched_palette = layer
        if layer is not None:
            emitter = layer.events.selected_label
            emitter.connect(self._on_layer_selected_label)
            self._palette_watch.append((emitter, self._on_layer_selected_label))
            self._on_layer_selected_label()

    def _on_layer_selected_label(self, *_) -> None:
        layer = self._watched_palette
        if layer is None:
            return
        value = int(layer.selected_label)
        if self.task_buttons.button(value) is not None:
            self._selected_value = value
            self._check_task_button(value)

    def _watch_layer(self, layer: Layer) -> None:
        if id(layer) in self._watched_layers:
            return
        self._watched_layers.add(id(layer))
        layer.events.name.connect(self._refresh_layer_choices)
        self._layer_name_callbacks.append((layer.events.name, self._refresh_layer_choices))

    def _on_layer_inserted(self, event) -> None:
        self._watch_layer(event.value)
        self._refresh_layer_choices()

    def _on_layer_removed(self, event) -> None:
        layer = event.value
        self._watched_layers.discard(id(layer))
        layer.events.name.disconnect(self._refresh_layer_choices)
        self._layer_name_callbacks[:] = [(e, cb) for e, cb in self._layer_name_callbacks if e is not layer.events.name]
        self._refresh_layer_choices()

    def _refresh_layer_choices(self, *_) -> None:
        self.image_combo.refresh()
        self.palette_combo.refresh()
        self.semantic_combo.refresh()
        self._on_rule_changed()
        self._on_palette_changed()


def disconnect_all(pairs) -> None:
    for emitter, callback in pairs:
        try:
            emitter.disconnect(callback)
        except (RuntimeError, ValueError, TypeError):  # already gone
            pass
