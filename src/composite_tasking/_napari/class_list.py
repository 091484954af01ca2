"""The values a person may paint on the plugin's Labels layers: a value guard and a
class list (issue #16).

napari's layer controls show a Labels layer's selected label as a number and a swatch,
and its keys choose numbers the plugin cannot use: ``M`` (new label: the layer's
largest value + 1) makes class 21 on a semseg layer, ``=`` (increase the selected
label) makes palette value 6 (no task). Such a value would only fail later, when the
palette is predicted from or the labels are saved.

- :func:`valid_values`: the values of a palette (0 no task, ``task id + 1``) or of a
  task label layer (its class ids and 255 ignore); None for any other layer.
- :func:`guard_values` / :func:`guard_viewer`: put the last valid ``selected_label``
  back the moment an invalid one is chosen (by napari's keys, its "new" button, its
  spin box, the label picker or a script), and say so with ``report``.
- :class:`ClassListWidget`: the classes (or tasks) of the active layer with colour,
  name and value; clicking one paints it; the current one is highlighted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
from napari.layers import Labels, Layer
from qtpy.QtCore import Qt
from qtpy.QtGui import QColor, QIcon, QPainter
from qtpy.QtWidgets import (
    QAbstractItemView,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..tasks import IGNORE, NO_TASK, TASKS, get_task
from .palette_layer import NO_TASK_NAME, is_palette_layer
from .palette_widget import disconnect_all, swatch_pixmap
from .task_layers import BINARY_CLASSES, TASK_KIND, layer_meta

if TYPE_CHECKING:
    import napari

__all__ = [
    "HINT",
    "IGNORE_NAME",
    "ClassListWidget",
    "guard_values",
    "guard_viewer",
    "valid_values",
    "value_names",
]

#: how IGNORE (255) is listed on a task label layer: napari's eraser paints it
IGNORE_NAME = "ignore (erase)"
#: what the class list says for a layer that is neither a palette nor a pseudo-label layer
HINT = "select a palette or a pseudo-label layer"
#: height of the class list (it scrolls); the whole widget stays under ~220 px
LIST_HEIGHT = 190


# ------------------------------------------------------------------------ the values


def _label_task(layer: Layer):
    """The task of a task *label* layer (semseg, parts, edges, saliency), else None."""
    if not isinstance(layer, Labels):
        return None
    meta = layer_meta(layer)
    if meta.get("kind") != TASK_KIND or meta.get("role") != "label":
        return None
    try:
        task = get_task(meta.get("task"))
    except (KeyError, TypeError):
        return None
    if task.kind == "classes" or task.name in BINARY_CLASSES:
        return task
    return None


def value_names(layer: Layer | None) -> dict[int, str] | None:
    """Value -> name of every value a person may paint on ``layer``, in value order:
    a palette's ``none`` and task names, a task label layer's class names and
    :data:`IGNORE_NAME`; None for any other layer."""
    if layer is None:
        return None
    if is_palette_layer(layer):
        return {NO_TASK: NO_TASK_NAME} | {t.palette_value: t.name for t in TASKS}
    task = _label_task(layer)
    if task is None:
        return None
    names = task.classes if task.kind == "classes" else BINARY_CLASSES[task.name]
    return dict(enumerate(names)) | {IGNORE: IGNORE_NAME}


def valid_values(layer: Layer | None) -> tuple[int, ...] | None:
    """The values a person may paint on one of the plugin's Labels layers: a palette
    ``0 .. len(TASKS)`` (0 no task), a task label layer its class ids and IGNORE (255)
    (semseg 0..20, parts 0..6, edges and saliency 0 / 1); None for any other layer."""
    names = value_names(layer)
    return None if names is None else tuple(names)


def _kind_word(layer: Layer) -> str:
    if is_palette_layer(layer):
        return "a task"
    task = _label_task(layer)
    if task is None:
        return "a value"
    return f"{'an' if task.name[0] in 'aeiou' else 'a'} {task.name} class"


def _short_list(names: dict[int, str]) -> str:
    """``0 background .. 20 tvmonitor, 255 ignore``: the values, runs shortened."""
    items = [(v, n.split(" (")[0]) for v, n in names.items()]
    parts: list[str] = []
    i = 0
    while i < len(items):
        j = i
        while j + 1 < len(items) and items[j + 1][0] == items[j][0] + 1:
            j += 1
        if j - i >= 2:
            parts.append(f"{items[i][0]} {items[i][1]} .. {items[j][0]} {items[j][1]}")
        else:
            parts.extend(f"{v} {n}" for v, n in items[i : j + 1])
        i = j + 1
    return ", ".join(parts)


def _name_of(names: dict[int, str], value: int) -> str:
    return f"{value} {names[value]}" if value in names else str(value)


# ------------------------------------------------------------------------- the guard


def _fallback(layer: Labels, valid: tuple[int, ...]) -> int:
    """The value a guard keeps when it knows no earlier valid one: the first valid value
    that is not the layer's background (semseg 0 background, palette 1 semseg)."""
    background = getattr(layer.colormap, "background_value", None)
    return next((v for v in valid if v != background), valid[0])


def _painted_values(item) -> set[int]:
    """The values one napari history item (a list of atoms) wrote."""
    out: set[int] = set()
    for atom in item:
        if hasattr(atom, "new_value"):  # napari's masked-paint atom (paint, fill, polygon)
            out.add(int(atom.new_value))
            continue
        try:
            _, _, new = atom  # (indices, old values, new values)
        except (TypeError, ValueError):
            continue
        new = np.asarray(new)
        if new.size == 0:
            continue
        if new.dtype == np.uint8:  # the plugin's layers: a histogram, no sort
            out.update(int(v) for v in np.flatnonzero(np.bincount(new.ravel(), minlength=256)))
        else:
            out.update(int(v) for v in np.unique(new))
    return out


def guard_values(layer: Layer, report: Callable[[str], None]) -> Callable[[], None]:
    """Refuse invalid values of ``layer.selected_label`` the moment they are chosen.

    On ``layer.events.selected_label``, a value that is not in :func:`valid_values`
    (read at that moment, so a layer marked as a palette later is guarded from then
    on) is replaced by the last valid value the layer had, and ``report`` gets a
    sentence naming the layer, the refused value and the valid ones, e.g. ``"'scene
    semseg': 21 is not a semseg class (0 background .. 20 tvmonitor, 255 ignore);
    kept 8 cat."``. Valid values pass silently. A layer that is not one of the plugin's
    (:func:`valid_values` None) is left alone. If the layer's value is invalid when
    the guard starts, it is set to the first valid value that is not the background
    (and reported).

    napari's keys: ``M`` (largest value + 1) is refused where that is not a class (on
    semseg with classes up to 20 painted: 21; with 255 painted napari itself refuses
    256 for uint8). ``=`` / ``-`` step by one and are *refused* past the ends, never
    wrapped: ``=`` on the last task (5 normals) of a palette or on 20 tvmonitor of a
    semseg layer keeps the value, ``-`` on 255 ignore gives 254 and is refused (255 is
    reached with ``X``, napari's swap with the background label, the eraser or the
    class list); ``-`` below 0 napari refuses itself (uint8). The picker choosing an
    invalid value found in the data is refused too.

    Values written into the data without ``selected_label`` (``layer.paint``, ``fill``
    or ``paint_polygon`` with an explicit value, from a script) cannot be refused when
    chosen: when such an edit enters napari's undo history (``layer.events.paint``)
    and wrote an invalid value, ``report`` is told (undo with Ctrl+Z); the data is not
    changed. Writes outside the history (``layer.data = ...``) are not seen.

    Returns a function that disconnects the guard (calling it twice is harmless).
    """
    if not isinstance(layer, Labels):
        return lambda: None
    state: dict = {"last": None, "prev": None, "busy": False}

    def remember() -> None:
        state["last"] = int(layer.selected_label)
        state["prev"] = getattr(layer, "_prev_selected_label", None)

    def refuse(value: int, keep: int, names: dict[int, str], why: str) -> None:
        state["busy"] = True
        try:
            layer.selected_label = keep
            # napari remembers the value replaced by the background label (for its
            # swap key, X): not the refused one
            if hasattr(layer, "_prev_selected_label"):
                prev = state["prev"]
                layer._prev_selected_label = prev if prev in names else None
        finally:
            state["busy"] = False
        remember()
        report(f"{layer.name!r}: {value} is not {_kind_word(layer)} ({_short_list(names)}); "
               f"{why} {_name_of(names, keep)}.")  # fmt: skip

    def on_selected_label(*_) -> None:
        if state["busy"]:
            return
        names = value_names(layer)
        if names is None:
            state["last"] = None
            return
        value = int(layer.selected_label)
        if value in names:
            remember()
            return
        last = state["last"]
        if last in names:
            refuse(value, last, names, "kept")
        else:
            refuse(value, _fallback(layer, tuple(names)), names, "chose")

    def on_paint(event) -> None:
        names = value_names(layer)
        if names is None:
            return
        bad = sorted(_painted_values(getattr(event, "value", ()) or ()) - set(names))
        if bad:
            shown = ", ".join(str(v) for v in bad)
            report(f"{layer.name!r}: {shown} {'is' if len(bad) == 1 else 'are'} not "
                   f"{_kind_word(layer)} ({_short_list(names)}) but was painted by a script; "
                   "undo with Ctrl+Z.")  # fmt: skip

    pairs = [(layer.events.selected_label, on_selected_label)]
    if hasattr(layer.events, "paint"):
        pairs.append((layer.events.paint, on_paint))
    for emitter, callback in pairs:
        # first: later callbacks (the layer controls, the class list) read the value
        # after the guard put it back
        emitter.connect(callback, position="first")
    on_selected_label()
    return lambda: disconnect_all(pairs)


def guard_viewer(viewer: napari.viewer.Viewer, report: Callable[[str], None]) -> Callable[[], None]:
    """:func:`guard_values` on every Labels layer of ``viewer``, present and inserted
    later; a removed layer is unguarded. Only the plugin's palettes and task label
    layers are ever changed (each guard decides when a value is chosen). Returns a
    function that removes every guard and stops watching the viewer."""
    guards: dict[int, Callable[[], None]] = {}

    def add(layer: Layer) -> None:
        if isinstance(layer, Labels) and id(layer) not in guards:
            guards[id(layer)] = guard_values(layer, report)

    def on_inserted(event) -> None:
        add(event.value)

    def on_removed(event) -> None:
        undo = guards.pop(id(event.value), None)
        if undo is not None:
            undo()

    pairs = [(viewer.layers.events.inserted, on_inserted),
             (viewer.layers.events.removed, on_removed)]  # fmt: skip
    for emitter, callback in pairs:
        emitter.connect(callback)
    for layer in viewer.layers:
        add(layer)

    def disconnect() -> None:
        disconnect_all(pairs)
        while guards:
            guards.popitem()[1]()

    return disconnect


# ------------------------------------------------------------------------ the widget


def _icon(rgb) -> QIcon:
    """A colour swatch (:func:`~.palette_widget.swatch_pixmap`); a grey-bordered empty box
    for the transparent values (no task, ignore)."""
    pix = swatch_pixmap(None if rgb is None else tuple(int(c) for c in rgb))
    if rgb is None:
        painter = QPainter(pix)
        painter.setPen(QColor("gray"))
        painter.drawRect(0, 0, pix.width() - 1, pix.height() - 1)
        painter.end()
    return QIcon(pix)


def _rows(layer: Layer) -> list[tuple[int, str, str, tuple[int, int, int] | None]]:
    """(value, name, text shown, colour) of each value of a plugin layer."""
    names = value_names(layer) or {}
    if is_palette_layer(layer):
        by_value = {t.palette_value: t for t in TASKS}
        rows = []
        for v, n in names.items():
            task = by_value.get(v)
            title = task.title if task is not None else "no task (erase)"
            rows.append((v, n, f"{v}  {n} — {title}", task.color if task is not None else None))
        return rows
    task = _label_task(layer)
    if task is None:
        return []
    if task.kind == "classes":
        colors = [tuple(int(c) for c in rgb) for rgb in task.class_colors()]
    else:
        colors = [(0, 0, 0), task.color]
    return [(v, n, f"{v}  {n}", None if v == IGNORE else colors[v]) for v, n in names.items()]


class ClassListWidget(QWidget):
    """The classes of the active pseudo-label layer (or the tasks of the active
    palette): colour, name, value; clicking one paints it (``selected_label``, paint
    mode); the entry of the layer's ``selected_label`` is highlighted and follows
    napari's keys. For any other layer it shows :data:`HINT`. Compact: a one-line title
    and a list of :data:`LIST_HEIGHT` px that scrolls."""

    def __init__(self, viewer: napari.viewer.Viewer, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = viewer
        self._layer: Labels | None = None
        self._values: list[int] = []
        self._names: list[str] = []

        self.title = QLabel(HINT)
        self.title.setToolTip("Values of the active layer; click one to paint it.")
        self.list = QListWidget()
        self.list.setObjectName("class_list")
        self.list.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.list.setUniformItemSizes(True)
        self.list.setFixedHeight(LIST_HEIGHT)
        self.list.setIconSize(swatch_pixmap(None).size())
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.setSpacing(2)
        layout.addWidget(self.title)
        layout.addWidget(self.list)
        self.setMaximumHeight(LIST_HEIGHT + 30)

        self.list.itemClicked.connect(self._on_item_clicked)
        self.list.currentRowChanged.connect(self._on_row_changed)

        # (emitter, callback) pairs on napari events, disconnected when Qt deletes this
        # widget so that napari never calls into a deleted C++ object
        viewer_cbs = [(self.viewer.layers.selection.events.active, self._on_active)]
        self._layer_cbs: list = []
        for emitter, callback in viewer_cbs:
            emitter.connect(callback)
        layer_cbs = self._layer_cbs
        self.destroyed.connect(lambda *_: disconnect_all(viewer_cbs + layer_cbs))
        self._on_active()

    # ------------------------------------------------------------- plain methods

    def current_layer(self) -> Labels | None:
        """The layer listed: the active layer when it is a palette or a task label
        layer, else None."""
        return self._layer

    def entries(self) -> list[tuple[int, str]]:
        """(value, name) of each entry listed, in order (empty for any other layer)."""
        return list(zip(self._values, self._names))

    def highlighted(self) -> int | None:
        """The value of the highlighted entry (None when none is)."""
        row = self.list.currentRow()
        return self._values[row] if 0 <= row < len(self._values) else None

    def choose(self, value: int) -> int | None:
        """Paint ``value`` on the listed layer: its ``selected_label``, and paint mode.
        Returns the value, or None when no layer is listed or ``value`` is not one of
        its entries."""
        layer = self._layer
        if layer is None or int(value) not in self._values:
            return None
        layer.selected_label = int(value)
        layer.mode = "paint"
        self._highlight()
        return int(value)

    # ------------------------------------------------------------- napari events

    def _on_active(self, *_) -> None:
        active = self.viewer.layers.selection.active
        layer = active if value_names(active) is not None else None
        disconnect_all(self._layer_cbs)
        self._layer_cbs.clear()
        self._layer = layer
        if active is not None and isinstance(active, Labels):
            # a Labels layer marked as a palette later gets new colours: list it then
            cbs = [(active.events.colormap, self._on_active)]
            if layer is not None:
                # renamed: a new title, or (a layer kept for the next image, layer_pool)
                # no longer a class layer at all: look again
                cbs += [(layer.events.selected_label, self._highlight),
                        (layer.events.name, self._on_active)]  # fmt: skip
            for emitter, callback in cbs:
                emitter.connect(callback)
            self._layer_cbs.extend(cbs)
        self._rebuild()

    def _set_title(self, *_) -> None:
        layer = self._layer
        if layer is None:
            self.title.setText(HINT)
        elif is_palette_layer(layer):
            self.title.setText(f"{layer.name}: tasks")
        else:
            self.title.setText(f"{layer.name}: {_label_task(layer).name} classes")

    def _rebuild(self) -> None:
        layer = self._layer
        rows = _rows(layer) if layer is not None else []
        self._values = [r[0] for r in rows]
        self._names = [r[1] for r in rows]
        self.list.blockSignals(True)
        try:
            self.list.clear()
            for value, name, text, rgb in rows:
                item = QListWidgetItem(_icon(rgb), text)
                item.setData(Qt.ItemDataRole.UserRole, value)
                item.setToolTip(f"Paint {name} (value {value}).")
                self.list.addItem(item)
        finally:
            self.list.blockSignals(False)
        self.list.setVisible(layer is not None)
        self._set_title()
        self._highlight()

    def _highlight(self, *_) -> None:
        layer = self._layer
        value = int(layer.selected_label) if layer is not None else None
        row = self._values.index(value) if value in self._values else -1
        self.list.blockSignals(True)
        try:
            self.list.setCurrentRow(row)
            if row < 0:
                self.list.clearSelection()
            else:
                self.list.scrollToItem(self.list.item(row))
        finally:
            self.list.blockSignals(False)

    # ---------------------------------------------------------------- Qt signals

    def _on_item_clicked(self, item: QListWidgetItem) -> None:
        self.choose(item.data(Qt.ItemDataRole.UserRole))

    def _on_row_changed(self, row: int) -> None:
        if 0 <= row < len(self._values):
            self.choose(self._values[row])
