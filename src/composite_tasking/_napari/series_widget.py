"""Annotate a folder one image at a time: the series navigator and the "Label images" dock.

:class:`SeriesWidget` shows an :class:`~composite_tasking.session.AnnotationSession`
(Qt-free: the images, the store, the current image, the order) in napari:

- only the current image is loaded: its image layer, its palette and its task layers
  (from the store when it holds the image, with every saved correction; else the
  image file). Leaving an image saves what changed on it (palette, pseudo-labels,
  corrections; nothing is lost), then removes its layers;
- **Previous** / **Next** (PageUp / PageDown), **Save** (Shift+S), **Save and next**
  (Shift+Enter: save, mark the image reviewed, show the next), the **Reviewed** box
  (its labels accepted as they are: training data, see ``ctn finetune``), the order
  (file order, or *correct next*: most expected effort first) and a list of the images
  with their state; the line on top says ``image 3 of 40, 12 reviewed``;
- the Predict and Task Palette widgets work on the current image: the navigator chooses
  it in both.

:class:`AnnotatorWidget` is the dock ``ctn annotate`` opens: the navigator, the task
legend with its fill, Predict, and the class list, in one scrollable column that fits a
1280 x 800 screen (the model settings and the store at the bottom); its shortcuts
(:data:`SHORTCUTS`) are bound on the viewer while it lives.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

import numpy as np
from napari.layers import Image, Layer
from qtpy.QtCore import QEvent, Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from ..images import ImageReadError
from ..session import ORDERS, AnnotationSession, SessionError
from ..store import StoreError
from ._compat import keep_gl_programs
from .palette_layer import METADATA_KEY, is_palette_layer, palette_image_key
from .layer_pool import add_or_reuse, retire
from .palette_widget import disconnect_all
from .task_layers import image_key, layer_meta, task_layers_of

if TYPE_CHECKING:
    import napari

    from .palette_widget import TaskPaletteWidget
    from .predict_widget import PredictWidget

__all__ = ["SeriesWidget", "AnnotatorWidget", "SHORTCUTS"]

#: the dock's keyboard shortcuts (none clashes with napari's own keys for Labels
#: layers: digits, letters and = / - pick modes and labels there)
SHORTCUTS = {
    "PageDown": "next image (saves what changed)",
    "PageUp": "previous image (saves what changed)",
    "Shift-Enter": "save, mark reviewed, next image",
    "Shift-S": "save",
    "Shift-R": "predict",
    "Shift-1": "paint semseg on the palette",
    "Shift-2": "paint parts",
    "Shift-3": "paint normals",
    "Shift-4": "paint edges",
    "Shift-5": "paint saliency",
    "Shift-0": "erase the palette (no task)",
}
_USER_ERRORS = (ValueError, KeyError, TypeError, OSError, StoreError)


def _digest(layers: Iterable[Layer]) -> str:
    """A hash of what a save writes of these layers (their data and correction state)."""
    h = hashlib.sha256()
    for ly in layers:
        h.update(ly.name.encode())
        data = np.ascontiguousarray(np.asarray(ly.data))
        h.update(str(data.shape).encode() + data.tobytes())
        mask = layer_meta(ly).get("corrected")
        if isinstance(mask, np.ndarray):
            h.update(np.packbits(mask).tobytes())
        h.update(str(layer_meta(ly).get("provenance")).encode())
    return h.hexdigest()


class SeriesWidget(QWidget):
    """The series navigator (see the module docstring). Its Predict and Task Palette
    widgets are given, or found in the viewer's window."""

    def __init__(self, napari_viewer: "napari.viewer.Viewer", parent: QWidget | None = None, *,
                 predict: "PredictWidget | None" = None,
                 palette: "TaskPaletteWidget | None" = None):  # fmt: skip
        super().__init__(parent)
        keep_gl_programs()  # Mesa's software OpenGL crashes after programs are deleted (_compat)
        self.viewer = napari_viewer
        self._predict_widget = predict
        self._palette_widget = palette
        self.session: AnnotationSession | None = None
        self._unsubscribe: Callable[[], None] | None = None
        #: the current image's layers and the digest of what was last saved or loaded
        self._image: Image | None = None
        self._clean: str | None = None

        self.open_button = QPushButton("Open folder or store...")
        self.open_button.setToolTip("A folder of images (saved to <folder>-labels.zarr beside it) "
                                    "or a label store (.zarr)")  # fmt: skip
        self.status_label = QLabel("No series: open a folder of images or a label store.")
        self.status_label.setObjectName("series_status")
        self.status_label.setWordWrap(True)
        self.order_combo = QComboBox()
        self.order_combo.addItems(list(ORDERS))
        self.order_combo.setToolTip("file order, or correct next: the images whose pseudo-labels "
                                    "are expected to need most corrections first (from the store's "
                                    "confidence maps)")  # fmt: skip
        self.previous_button = QPushButton("◀ Previous")
        self.previous_button.setToolTip("The previous image; what changed on this one is saved (PageUp)")
        self.next_button = QPushButton("Next ▶")
        self.next_button.setToolTip("The next image; what changed on this one is saved (PageDown)")
        self.save_next_button = QPushButton("Save and next ✓")
        self.save_next_button.setToolTip("Save this image, mark it reviewed (its labels accepted as "
                                         "they are: training data) and show the next (Shift+Enter)")  # fmt: skip
        self.save_button = QPushButton("Save")
        self.save_button.setToolTip("Save this image's palette, pseudo-labels and corrections to the "
                                    "store, not marked reviewed (Shift+S)")  # fmt: skip
        self.reviewed_check = QCheckBox("Reviewed")
        self.reviewed_check.setToolTip("Every label of this image checked and accepted as it is: "
                                       "fine-tuning trains on all of it (unticked: only on the "
                                       "pixels you corrected)")  # fmt: skip
        self.image_list = QListWidget()
        self.image_list.setMaximumHeight(96)
        self.image_list.setToolTip("The images of the series (✓ reviewed, • saved); click one to show it")
        self.message_label = QLabel()
        self.message_label.setObjectName("series_message")
        self.message_label.setWordWrap(True)

        box = QGroupBox("Images")
        v = QVBoxLayout(box)
        top = QHBoxLayout()
        top.addWidget(self.open_button, 1)
        top.addWidget(QLabel("Order"))
        top.addWidget(self.order_combo)
        v.addLayout(top)
        v.addWidget(self.status_label)
        nav = QHBoxLayout()
        nav.addWidget(self.previous_button)
        nav.addWidget(self.next_button)
        nav.addWidget(self.save_next_button, 1)
        v.addLayout(nav)
        row = QHBoxLayout()
        row.addWidget(self.save_button)
        row.addWidget(self.reviewed_check, 1)
        v.addLayout(row)
        v.addWidget(self.image_list)
        v.addWidget(self.message_label)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(box)
        self.message_label.hide()  # shown with a message

        self.open_button.clicked.connect(self._on_open_clicked)
        self.previous_button.clicked.connect(lambda: self.previous())
        self.next_button.clicked.connect(lambda: self.next())
        self.save_next_button.clicked.connect(lambda: self.save_and_next())
        self.save_button.clicked.connect(lambda: self.save())
        self.reviewed_check.clicked.connect(lambda checked: self.set_reviewed(checked))
        self.order_combo.currentTextChanged.connect(self._on_order_changed)
        self.image_list.itemActivated.connect(self._on_item_activated)
        self.image_list.itemClicked.connect(self._on_item_activated)
        self.destroyed.connect(lambda *_: self._unsubscribe and self._unsubscribe())
        # closing napari (which removes every layer first), or removing one of the
        # current image's layers by hand, saves what changed on it, as leaving it does
        self._own_removal = False
        self._saved_on_removal = False
        removing = self.viewer.layers.events.removing
        removing.connect(self._on_layer_removing)
        self.destroyed.connect(lambda *_: disconnect_all([(removing, self._on_layer_removing)]))
        self._update()

    # ==================================================================================
    # plain methods (buttons and shortcuts call these; so can scripts and tests)
    # ==================================================================================

    @property
    def image_layer(self) -> Image | None:
        """The current image's layer (None before a session, or when it could not load)."""
        return self._image if self._image is not None and self._image in self.viewer.layers else None

    def predict_widget(self) -> "PredictWidget | None":
        return self._predict_widget or self._find("predict_widget", "PredictWidget")

    def palette_widget(self) -> "TaskPaletteWidget | None":
        return self._palette_widget or self._find("palette_widget", "TaskPaletteWidget")

    def open_session(self, inputs: Iterable[str | os.PathLike], store: str | os.PathLike | None = None,
                     *, order: str = "file", start: int | str | None = None) -> AnnotationSession | None:  # fmt: skip
        """Open a series (image files, folders, a label store: see
        :meth:`AnnotationSession.open`) and show its first unreviewed image (or ``start``:
        an index or an image id). The images of an earlier series are saved and closed."""
        try:
            session = AnnotationSession.open(list(inputs), store, order=order)
        except (SessionError, StoreError, OSError) as e:
            self._say(f"Cannot open the series: {e}", error=True)
            return None
        return self.set_session(session, start=start)

    def set_session(self, session: AnnotationSession, *, start: int | str | None = None
                    ) -> AnnotationSession | None:  # fmt: skip
        if self.session is not None and not self._leave():
            return None
        if self._unsubscribe is not None:
            self._unsubscribe()
        self.session = session
        self._unsubscribe = session.subscribe(self._on_session_event)
        self.order_combo.blockSignals(True)
        self.order_combo.setCurrentText(session.order)
        self.order_combo.blockSignals(False)
        if isinstance(start, str):
            index = session.position(start)
        elif start is not None:
            index = int(start)
        else:
            first = session.first_unreviewed()
            index = 0 if first is None else first
        session.index = index
        predict = self.predict_widget()
        if predict is not None:
            predict.store_edit.setText(str(session.store_path))
        self._load_current()
        problems = "; ".join(f"{Path(p).name}: {why}" for p, why in session.problems)
        if problems:
            self._say(f"Not opened: {problems}", error=True)
        return session

    def show_image(self, index: int) -> bool:
        """Show image ``index`` of the series (what changed on the current one is saved
        first); False when it stays (a failed save: the reason is in the message line)."""
        if self.session is None:
            return False
        if index == self.session.index and self.image_layer is not None:
            return True
        if not self._leave():
            return False
        try:
            self.session.go(index)  # -> _on_session_event loads it
        except SessionError as e:
            self._say(str(e), error=True)
            self._load_current()
            return False
        return True

    def next(self) -> bool:
        if self.session is None:
            return False
        if self.session.index + 1 >= len(self.session):
            self._say("This is the last image of the series." + self._left_text(), error=False)
            return False
        return self.show_image(self.session.index + 1)

    def previous(self) -> bool:
        if self.session is None:
            return False
        if self.session.index == 0:
            self._say("This is the first image of the series.")
            return False
        return self.show_image(self.session.index - 1)

    def save(self) -> str | None:
        """Save the current image (palette, pseudo-labels, corrections) to the session's
        store; its id, or None after an error (said in the message line)."""
        if self.session is None or self.image_layer is None:
            self._say("Nothing to save: open a series first.", error=True)
            return None
        predict = self.predict_widget()
        if predict is None:
            self._say("Save needs the Predict widget (Plugins > CompositeTasking > Predict).", error=True)
            return None
        image_id = predict.save(self.session.store_path, self.image_layer)
        if image_id is None:
            self._say(f"Not saved: {predict.save_status.text() or 'see the notification'}", error=True)
            return None
        self.session.saved(image_id)
        self._clean = self._state()
        self._say(predict.save_status.text())
        return image_id

    def _on_layer_removing(self, event) -> None:
        if self._own_removal or self.session is None or self.image_layer is None:
            return
        try:
            layer = self.viewer.layers[event.index]
        except (IndexError, TypeError):
            return
        if layer not in self._layers_of_current() or self._saved_on_removal:
            return
        # once per image: napari's close removes every layer, one at a time (what changed
        # after this is saved by the next Save, Next or Previous, as always)
        self._saved_on_removal = True
        if self._state() != self._clean:
            self.save()

    def save_and_next(self) -> bool:
        """Save the current image, mark it reviewed, show the next one."""
        # set_reviewed saves what changed; an image never saved is saved first
        if (self.session is None or not self.session.is_stored(self.session.current.image_id)) \
                and self.save() is None:  # fmt: skip
            return False
        if not self.set_reviewed(True):
            return False
        if self.session.index + 1 >= len(self.session):
            self._say("Saved and marked reviewed; that was the last image." + self._left_text())
            return True
        return self.show_image(self.session.index + 1)

    def set_reviewed(self, reviewed: bool = True) -> bool:
        """Mark the current image reviewed (its labels accepted as they are), or take it
        back; what changed is saved first."""
        if self.session is None or self.image_layer is None:
            return False
        if self._state() != self._clean and self.save() is None:
            self._update()
            return False
        image_id = self.session.current.image_id
        try:
            prov = self.session.mark_reviewed(image_id, reviewed=reviewed)
        except (SessionError, StoreError) as e:
            self._say(str(e), error=True)
            self._update()
            return False
        key = image_key(self.image_layer)
        for layer in task_layers_of(self.viewer.layers, key):
            meta = layer_meta(layer)
            if meta.get("task") in prov:
                meta["provenance"] = prov[meta["task"]]
        self._clean = self._state()
        self._say(f"{image_id}: " + ("reviewed: its labels are training data as they are."
                                     if reviewed else "no longer reviewed."))  # fmt: skip
        return True

    def set_order(self, order: str) -> bool:
        if self.session is None:
            return False
        try:
            self.session.set_order(order)
        except SessionError as e:
            self._say(str(e), error=True)
            self.order_combo.blockSignals(True)
            self.order_combo.setCurrentText(self.session.order)
            self.order_combo.blockSignals(False)
            return False
        return True

    # ==================================================================================
    # loading and leaving an image
    # ==================================================================================

    def _layers_of_current(self) -> list[Layer]:
        image = self.image_layer
        if image is None:
            return []
        key = image_key(image)
        palettes = [ly for ly in self.viewer.layers if is_palette_layer(ly) and palette_image_key(ly) == key]
        return [image, *palettes, *task_layers_of(self.viewer.layers, key)]

    def _state(self) -> str | None:
        layers = self._layers_of_current()
        return _digest(layers[1:]) if len(layers) > 1 else self._clean

    def _leave(self) -> bool:
        """Save the current image when something changed, then remove its layers; False
        (and it stays) when the save failed."""
        image = self.image_layer
        if image is None:
            return True
        predict = self.predict_widget()
        if predict is not None and predict.busy:
            predict.cancel()  # its result would be dropped: the image's layers go
        if self._state() != self._clean and self.save() is None:
            return False
        key = image_key(image)
        self._own_removal = True
        try:  # kept, hidden, for the next image's layers (layer_pool: faster, and no crash)
            retire(self.viewer, self._layers_of_current()[::-1])
        finally:
            self._own_removal = False
        if predict is not None:
            predict.forget(key)
        self._image, self._clean = None, None
        return True

    def _load_current(self) -> None:
        """Add the current image's layers (from the store, or its file) and choose it in
        the Predict and Task Palette widgets."""
        session = self.session
        item = session.current
        layers: list[Layer] = []
        try:
            if session.is_stored(item.image_id):
                from ..store import LabelStore
                from .store_io import image_layer_data

                data = image_layer_data(LabelStore(session.store_path, "r"), item.image_id)
                layers = [Layer.create(d, dict(kw), t) for d, kw, t in data]
                if not layers or not isinstance(layers[0], Image):
                    raise ImageReadError(session.store_path / item.image_id,
                                         "the store holds neither its pixels nor a readable source")  # fmt: skip
            else:
                rgb = session.load_image(item.image_id)
                key = f"{session.store_path.resolve()}::{item.image_id}::{uuid.uuid4().hex[:8]}"
                layers = [Image(rgb, rgb=True, name=item.image_id, metadata={METADATA_KEY: {
                    "kind": "image", "source": str(item.source), "image_id": item.image_id,
                    "store": str(session.store_path), "image_key": key}})]  # fmt: skip
        except (ImageReadError, StoreError, OSError, ValueError) as e:
            self._image = None
            self._say(f"Cannot show {item.image_id}: {e}", error=True)
            self._update()
            return
        layers = [add_or_reuse(self.viewer, layer) for layer in layers]
        self._image, self._saved_on_removal = layers[0], False
        self._clean = self._state()
        self._choose_in_widgets()
        predict = self.predict_widget()
        if predict is not None and not predict.busy:  # its last lines were another image's
            predict.status_label.setText("")
            predict.progress_bar.setValue(0)
        palettes = [ly for ly in layers if is_palette_layer(ly)]
        self.viewer.layers.selection.active = palettes[0] if palettes else layers[0]
        self.viewer.reset_view()
        self._say("")
        self._update()

    def _choose_in_widgets(self) -> None:
        image = self.image_layer
        predict, palette = self.predict_widget(), self.palette_widget()
        if predict is not None:
            predict.image_combo.set_current_layer(image)
        if palette is not None:
            palette.image_combo.set_current_layer(image)
            own = [ly for ly in self.viewer.layers if is_palette_layer(ly)
                   and palette_image_key(ly) == image_key(image)]  # fmt: skip
            if own:
                palette.palette_combo.set_current_layer(own[-1])

    # ==================================================================================
    # display
    # ==================================================================================

    def _left_text(self) -> str:
        s = self.session
        left = len(s) - s.reviewed_count
        return f" {left} image(s) not reviewed yet." if left else " Every image is reviewed."

    def _say(self, text: str, error: bool = False) -> None:
        self.message_label.setVisible(bool(text))
        self.message_label.setText(text)
        self.message_label.setStyleSheet("color: #e0604a;" if error else "")

    def _update(self) -> None:
        s = self.session
        has = s is not None
        for w in (self.previous_button, self.next_button, self.save_next_button, self.save_button,
                  self.reviewed_check, self.order_combo, self.image_list):  # fmt: skip
            w.setEnabled(has)
        if not has:
            return
        self.status_label.setText(s.status_text())
        self.previous_button.setEnabled(s.index > 0)
        self.next_button.setEnabled(s.index + 1 < len(s))
        self.reviewed_check.setChecked(s.is_reviewed(s.current.image_id))
        self.image_list.blockSignals(True)
        self.image_list.clear()
        for k, item in enumerate(s.items):
            mark = "✓" if s.is_reviewed(item.image_id) else "•" if s.is_stored(item.image_id) else " "
            entry = QListWidgetItem(f"{mark} {k + 1}. {item.image_id}")
            entry.setData(Qt.ItemDataRole.UserRole, k)
            self.image_list.addItem(entry)
        self.image_list.setCurrentRow(s.index)
        self.image_list.blockSignals(False)
        rows = max(1, min(len(s), 5))  # a short series takes no more room than it needs
        self.image_list.setMaximumHeight(rows * max(self.image_list.sizeHintForRow(0), 14) + 6)

    def _on_session_event(self, event: str, session: AnnotationSession) -> None:
        if event == "current" and (self.image_layer is None
                                   or layer_meta(self.image_layer).get("image_id") != session.current.image_id):  # fmt: skip
            self._load_current()
        else:
            self._update()

    def _on_order_changed(self, order: str) -> None:
        self.set_order(order)

    def _on_item_activated(self, item: QListWidgetItem) -> None:
        self.show_image(int(item.data(Qt.ItemDataRole.UserRole)))

    def _on_open_clicked(self) -> None:  # pragma: no cover - needs a person
        path = QFileDialog.getExistingDirectory(self, "A folder of images, or a label store (.zarr)")
        if path:
            self.open_session([path])

    def _find(self, module: str, cls_name: str):
        from importlib import import_module

        cls = getattr(import_module(f".{module}", __package__), cls_name)
        window = self.window()
        found = window.findChildren(cls) if window is not self else []
        return found[0] if found else None


class AnnotatorWidget(QWidget):
    """One dock for labelling a series: the navigator, the task legend and fill, Predict
    and the class list, in a scrollable column; the model settings and the store at the
    bottom. Binds :data:`SHORTCUTS` on the viewer while it lives."""

    def __init__(self, napari_viewer: "napari.viewer.Viewer", parent: QWidget | None = None):
        super().__init__(parent)
        from .predict_widget import PredictWidget
        from .palette_widget import TaskPaletteWidget

        self.viewer = napari_viewer
        self.palette = TaskPaletteWidget(napari_viewer)
        self.predict = PredictWidget(napari_viewer)
        self.series = SeriesWidget(napari_viewer, predict=self.predict, palette=self.palette)
        self.palette.set_compact(True)
        self.predict.set_compact(True)
        column = QWidget()
        col = QVBoxLayout(column)
        col.setContentsMargins(4, 4, 4, 4)
        # on a 1280 x 800 screen the navigator, the task legend and Predict show together;
        # the class list, the rule fill, the model and the store follow (scroll)
        col.addWidget(self.series)
        col.addWidget(self.palette)
        self.palette.layout().removeWidget(self.palette.fill_box)
        col.addWidget(self.predict)
        from .class_list import ClassListWidget

        self.classes = ClassListWidget(napari_viewer)
        classes_box = QGroupBox("Classes (click one to paint it)")
        QVBoxLayout(classes_box).addWidget(self.classes)
        col.addWidget(classes_box)
        col.addWidget(self.palette.fill_box)
        col.addWidget(self.predict.settings_box())
        for w in (self.palette, self.predict):  # their own stretch and margins: room lost
            _drop_stretch(w.layout())
            w.layout().setContentsMargins(0, 0, 0, 0)
        col.setSpacing(4)
        for value, button in ((b, self.palette.task_buttons.button(b)) for b in range(6)):
            if button is not None:
                button.setToolTip(f"{button.toolTip()} (Shift+{value})")
        self.predict.predict_button.setToolTip("Predict every task the palette asks for (Shift+R)")
        col.addStretch(1)
        scroll = _ColumnScroll()
        scroll.setWidget(column)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(scroll)
        self._bound: list[str] = []
        self._bind_keys()
        from .class_list import guard_viewer

        # a value that is no class (napari's M, = and - keys) is refused when chosen; the
        # reason goes to the navigator's message line
        unguard = guard_viewer(napari_viewer, lambda text: self.series._say(text, error=True))
        viewer = napari_viewer
        bound = self._bound
        self.destroyed.connect(lambda *_: (_unbind(viewer, bound), unguard()))

    def _bind_keys(self) -> None:
        actions = {
            "PageDown": lambda: self.series.next(),
            "PageUp": lambda: self.series.previous(),
            "Shift-Enter": lambda: self.series.save_and_next(),
            "Shift-S": lambda: self.series.save(),
            "Shift-R": lambda: self.predict.start_predict(),
            "Shift-0": lambda: self.palette.select_task(None),
        }
        for k in range(1, 6):
            actions[f"Shift-{k}"] = lambda k=k: self.palette.select_task(k - 1)
        for key, action in actions.items():
            self.viewer.bind_key(key, _key_action(action), overwrite=True)
            self._bound.append(key)


class _ColumnScroll(QScrollArea):
    """A vertical scroll area exactly as wide as its column needs: never clipped, never
    wider (the canvas keeps the rest); it follows the column when its content grows (a
    combo filled with longer names)."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWidgetResizable(True)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)

    def setWidget(self, widget: QWidget) -> None:  # noqa: N802 - Qt name
        super().setWidget(widget)
        widget.installEventFilter(self)
        self.updateGeometry()

    def minimumSizeHint(self):  # noqa: N802 - Qt name
        hint = super().minimumSizeHint()
        column = self.widget()
        if column is not None:
            hint.setWidth(column.minimumSizeHint().width() + self.verticalScrollBar().sizeHint().width()
                          + 2 * self.frameWidth())  # fmt: skip
        return hint

    def sizeHint(self):  # noqa: N802 - Qt name
        hint = super().sizeHint()
        hint.setWidth(self.minimumSizeHint().width())
        return hint

    def eventFilter(self, obj, event) -> bool:  # noqa: N802 - Qt name
        if obj is self.widget() and event.type() == QEvent.Type.LayoutRequest:
            self.updateGeometry()
        return super().eventFilter(obj, event)


def _drop_stretch(layout) -> None:
    for k in reversed(range(layout.count())):
        item = layout.itemAt(k)
        if item.spacerItem() is not None:
            layout.takeAt(k)


def _key_action(action: Callable[[], object]) -> Callable:
    def on_key(_viewer) -> None:
        action()

    return on_key


def _unbind(viewer, keys: list[str]) -> None:
    for key in keys:
        try:
            viewer.bind_key(key, None)
        except (KeyError, ValueError, RuntimeError):  # already unbound, or the viewer closed
            pass
