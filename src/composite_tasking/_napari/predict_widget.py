"""The "Predict" dock widget: run the CTN on an image under its Task Palette, show one
layer per requested task, re-predict after palette strokes, save corrections to a store.

- **Model**: ``default`` (the bundled model; when this installation ships none the
  widget says so) or a checkpoint / training-run folder, and the device (``auto``, ``cpu``,
  ``cuda``, ``cuda:I``). Defaults come from the plugin's settings (napari Preferences >
  CompositeTasking). The device in use is shown once the model is loaded.
- **Fill palette**: with a semantic rule (R2, R3, or a rule file) applied to the
  classes the model predicts (no semantic map needed), or with the palette the palette
  network predicts (``palette network``; the bundled one or a checkpoint folder).
- **Predict** runs in a napari ``thread_worker`` with napari's progress bar (and its
  cancel button in the activity dock) and the widget's own progress bar and **Cancel**.
  It shows one layer per task and role (:mod:`.task_layers`), only for tasks the palette
  asks for; a re-run updates those layers in place (a Labels layer changes in one undo
  step), never adds copies.
- **Re-predict after palette strokes**: a stroke on the palette (napari's ``paint``
  event; ``set_data`` for undo / redo) restarts a short timer (:data:`DEBOUNCE_MS`);
  when painting pauses and the palette differs from the last predicted one, a worker
  re-decodes, on the cached encoder features, only the box the edit can reach
  (:meth:`Predictor.repredict`: the box ``model.region.change_box`` follows through the
  decoder, within 124 px of the change for the paper's decoder; exact), and only the
  changed pixels of the layers are written.
- **Save**: palette, pseudo-labels and corrections into a label store
  (:mod:`.store_io`); pixels a person changed in a pseudo-label layer are kept on
  re-prediction and saved as corrections.

Every button calls a plain method that scripts and tests call directly:
:meth:`PredictWidget.load_model`, :meth:`~PredictWidget.fill_palette`,
:meth:`~PredictWidget.predict`, :meth:`~PredictWidget.save`; the threaded versions
(:meth:`~PredictWidget.start_predict`, :meth:`~PredictWidget.start_fill_palette`) wrap
the same :class:`PredictJob` steps.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, NamedTuple

import numpy as np
from napari.layers import Image, Labels, Layer
from napari.utils.notifications import show_error, show_info
from napari.utils.progress import cancelable_progress
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..tasks import IGNORE
from ._compat import keep_gl_programs, prevent_llvm_clash
from .layer_pool import add_or_reuse, shows
from .predict_jobs import (
    PALETTE_NETWORK,
    PREDICT_STEPS,
    JobResult,
    PredictJob,
    bundled_model_status,
    device_choices,
    device_text,
    load_predictor,
    model_path_text,
    plugin_setting,
    resolve_path_text,
)
from ._lifecycle import stop_jobs_on_close
from .palette_layer import (
    record_rule,
    METADATA_KEY,
    image_plane_shape,
    is_palette_layer,
    make_palette_layer,
    palette_fits,
    palette_image_key,
    palette_name,
)
from .palette_widget import disconnect_all, LayerCombo, is_source_image
from .task_layers import (
    corrected_mask,
    find_task_layer,
    image_digest,
    image_key,
    layer_meta,
    layer_name,
    new_task_layer,
    replace_labels,
    rgb8_of,
    task_layers_of,
    task_planes,
    update_task_layer,
)

if TYPE_CHECKING:
    import napari

    from ..inference import Predictor

__all__ = ["PredictWidget", "PredictJob", "JobResult", "load_predictor", "plugin_setting",
           "DEBOUNCE_MS", "SEMANTIC_RULES", "PALETTE_NETWORK"]  # fmt: skip

#: quiet time after a palette stroke before it is re-predicted
DEBOUNCE_MS = 300
#: the GUI thread's work per event-loop turn when a prediction's layers are shown
SHOW_TURN_S = 0.05
#: rules offered for "palette from predicted semantics"
SEMANTIC_RULES = ("R2", "R3")
_USER_ERRORS = (ValueError, KeyError, TypeError, OSError)


class _ActivityProgress(cancelable_progress):
    """napari's cancelable progress bar (the activity dock shows a Cancel button for it)
    whose Cancel calls ``cancel_callback`` at once: ``cancelable_progress`` calls it only
    while iterating, which a worker's bar never does."""

    def cancel(self) -> None:
        super().cancel()
        if self.cancel_callback is not None:
            self.cancel_callback()


class PredictWidget(QWidget):
    """Dock widget to predict, re-predict and save (see the module docstring)."""

    def __init__(self, napari_viewer: "napari.viewer.Viewer", parent: QWidget | None = None):
        super().__init__(parent)
        prevent_llvm_clash()  # before anything imports torchvision (see _compat)
        keep_gl_programs()  # Mesa's software OpenGL crashes after programs are deleted
        self.viewer = napari_viewer
        self._predictor: Predictor | None = None
        self._predictor_spec: tuple[str, ...] | None = None  # (model, device, palette model)
        self._worker = None
        # a docked widget gets no closeEvent when napari's window closes: the job must
        # stop before Python ends under its thread (see _lifecycle)
        self._end_close_watch = stop_jobs_on_close(self, self.cancel, lambda: self._worker is not None)
        self._pending: Callable[[], Any] | None = None
        self._to_show: list[_ShowStep] = []  # a shown prediction's layers, one per turn
        self._shown: list = ["", 0]  # (its tasks, pixels changed so far)
        self._last_palette: dict[str, np.ndarray] = {}
        #: per image key: (predictor, job key, prediction) of the last predict shown
        self._last_prediction: dict[str, tuple] = {}
        self._watched_palette: Labels | None = None
        #: image keys of the predict jobs running or queued (a palette stroke on their
        #: palette is predicted after them)
        self._predicting: set[str] = set()
        self.last_result: JobResult | None = None

        # --- model ----------------------------------------------------------------------
        self.model_edit = QLineEdit(plugin_setting("model", "default"))
        self.model_edit.setToolTip("'default' (the bundled model), a checkpoint folder "
                                   "(config.json + model.safetensors) or a training run folder")  # fmt: skip
        self.browse_model_button = QPushButton("Browse...")
        self.device_combo = QComboBox()
        self.device_combo.setEditable(True)
        self.device_combo.addItems(device_choices())
        self.device_combo.setCurrentText(plugin_setting("device", "auto"))
        self.device_combo.setToolTip("auto = the first CUDA GPU if torch sees one, else the CPU")
        self.palette_model_edit = QLineEdit("default")
        self.palette_model_edit.setToolTip(
            "the palette network used by 'Fill palette' with 'palette network': 'default' "
            "(bundled) or a palette-network checkpoint folder")  # fmt: skip
        from ..scale import SCALE_HELP

        self.scale_combo = QComboBox()
        self.scale_combo.setEditable(True)
        self.scale_combo.addItems(["auto", "none", "0.5", "512px"])
        self.scale_combo.setCurrentText(plugin_setting("scale", "auto"))
        self.scale_combo.setToolTip(SCALE_HELP[0].upper() + SCALE_HELP[1:])
        self.load_button = QPushButton("Load model")
        self.model_status = QLabel()
        self.model_status.setWordWrap(True)
        self.device_label = QLabel("Device: not loaded")
        self.device_label.setObjectName("device_label")

        model_row = QHBoxLayout()
        model_row.addWidget(self.model_edit, 1)
        model_row.addWidget(self.browse_model_button)
        self.model_box = model_box = QGroupBox("Model")
        mform = QFormLayout(model_box)
        mform.addRow("Model", model_row)
        mform.addRow("Device", self.device_combo)
        mform.addRow("Palette network", self.palette_model_edit)
        mform.addRow("Working resolution", self.scale_combo)
        mform.addRow(self.load_button)
        mform.addRow(self.model_status)
        mform.addRow(self.device_label)

        # --- layers ---------------------------------------------------------------------
        self.image_combo = LayerCombo(self.viewer, is_source_image, "(no image layer)")
        # only the palettes of the chosen image (or free ones of its size): a palette
        # belongs to one image and is never used for another
        self.palette_combo = LayerCombo(self.viewer, self._palette_fits_image,
                                         "(no palette for this image)")  # fmt: skip
        self.palette_combo.setToolTip("The Task Palettes of the chosen image (a palette made "
                                      "for another image is not listed); a new one is chosen "
                                      "when it is made")  # fmt: skip
        self.rule_combo = QComboBox()
        self.rule_combo.addItems([*SEMANTIC_RULES, PALETTE_NETWORK])
        self.rule_combo.setEditable(True)
        self.rule_combo.setToolTip("a semantic rule (R2, R3 or a YAML rule file path), "
                                   "applied to the classes the model predicts; or the "
                                   "palette the palette network predicts")  # fmt: skip
        self.fill_button = QPushButton("Fill palette")
        self.fill_button.setToolTip("Replace the palette (one undo step): the rule on the "
                                    "predicted semantics, or the palette network's palette")  # fmt: skip

        self.layers_box = layers_box = QGroupBox("Image and palette")
        self._layers_form = lform = QFormLayout(layers_box)
        lform.addRow("Image", self.image_combo)
        lform.addRow("Palette", self.palette_combo)
        rule_row = QHBoxLayout()
        rule_row.addWidget(self.rule_combo)
        rule_row.addWidget(self.fill_button, 1)
        lform.addRow("Rule", rule_row)

        # --- predict --------------------------------------------------------------------
        self.thresholded_check = QCheckBox("Thresholded edges / saliency labels (to correct)")
        self.live_check = QCheckBox("Re-predict after palette strokes")
        self.live_check.setChecked(True)
        self.predict_button = QPushButton("Predict")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, PREDICT_STEPS)
        self.progress_bar.setValue(0)
        self.status_label = QLabel()
        self.status_label.setWordWrap(True)

        predict_box = QGroupBox("Predict")
        pv = QVBoxLayout(predict_box)
        pv.addWidget(self.thresholded_check)
        pv.addWidget(self.live_check)
        buttons = QHBoxLayout()
        buttons.addWidget(self.predict_button, 1)
        buttons.addWidget(self.cancel_button)
        pv.addLayout(buttons)
        pv.addWidget(self.progress_bar)
        pv.addWidget(self.status_label)

        # --- store ----------------------------------------------------------------------
        self.store_edit = QLineEdit()
        self.store_edit.setPlaceholderText("labels.zarr")
        self.browse_store_button = QPushButton("Browse...")
        self.save_button = QPushButton("Save to store")
        self.save_status = QLabel()
        self.save_status.setWordWrap(True)
        self.store_box = store_box = QGroupBox("Correct and save")
        sform = QFormLayout(store_box)
        store_row = QHBoxLayout()
        store_row.addWidget(self.store_edit, 1)
        store_row.addWidget(self.browse_store_button)
        sform.addRow("Store", store_row)
        sform.addRow(self.save_button)
        sform.addRow(self.save_status)

        layout = QVBoxLayout(self)
        for box in (model_box, layers_box, predict_box, store_box):
            layout.addWidget(box)
        layout.addStretch(1)

        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(DEBOUNCE_MS)
        self._debounce.timeout.connect(self._on_debounce)

        # --- signals ----------------------------------------------------------------------
        self.browse_model_button.clicked.connect(self._on_browse_model)
        self.load_button.clicked.connect(self._on_load_clicked)
        self.model_edit.editingFinished.connect(self._on_model_spec_changed)
        self.device_combo.currentTextChanged.connect(self._on_model_spec_changed)
        self.palette_model_edit.editingFinished.connect(self._on_model_spec_changed)
        # a choice from the list, or an entry once typed (not each keystroke: "5" on the
        # way to "512" would be a factor of 5)
        self.scale_combo.activated.connect(lambda *_: self._on_scale_changed(self.scale_combo.currentText()))
        self.scale_combo.lineEdit().editingFinished.connect(
            lambda: self._on_scale_changed(self.scale_combo.currentText())
        )
        self.fill_button.clicked.connect(lambda: self.start_fill_palette())
        self.predict_button.clicked.connect(lambda: self.start_predict())
        self.cancel_button.clicked.connect(self.cancel)
        self.browse_store_button.clicked.connect(self._on_browse_store)
        self.save_button.clicked.connect(self._on_save_clicked)
        self.palette_combo.currentIndexChanged.connect(self._watch_palette)
        self.image_combo.currentIndexChanged.connect(self._on_image_changed)
        # napari events, disconnected when Qt deletes this widget (napari must never call
        # into a deleted C++ object); each layer's name event keeps the combos' texts
        viewer_callbacks = [
            (self.viewer.layers.events.inserted, self._on_layer_inserted),
            (self.viewer.layers.events.removed, self._on_layer_removed),
            (self.viewer.layers.events.reordered, self._refresh),
            (self.viewer.layers.selection.events.active, self._on_active_layer),
        ]
        self._name_callbacks: list = []
        for emitter, callback in viewer_callbacks:
            emitter.connect(callback)
        for layer in self.viewer.layers:
            self._watch_name(layer)
        self._palette_callbacks: list = []
        #: the running worker's signal connections: a worker that outlives the widget
        #: (deleted mid-job) must not call into its deleted Qt objects
        self._worker_callbacks: list = []
        name_cbs, palette_cbs, worker_cbs = self._name_callbacks, self._palette_callbacks, self._worker_callbacks
        self.destroyed.connect(lambda *_: disconnect_all(viewer_callbacks + name_cbs + palette_cbs + worker_cbs))
        self._show_model_status()
        self._watch_palette()
        self._on_image_changed()

    # ==================================================================================
    # plain methods (no threads): what the buttons do
    # ==================================================================================

    @property
    def predictor(self) -> "Predictor | None":
        return self._predictor

    @property
    def image_layer(self) -> Image | None:
        return self.image_combo.current_layer()

    @property
    def palette_layer(self) -> Labels | None:
        return self.palette_combo.current_layer()

    @property
    def busy(self) -> bool:
        """A worker runs, or the layers of its result are still being added."""
        return self._worker is not None or bool(self._to_show)

    def set_compact(self, compact: bool = True) -> None:
        """Hide the Image and Palette choosers (a series navigator chooses the image, and
        the palette is that image's)."""
        for row in (0, 1):
            self._layers_form.setRowVisible(row, not compact)
        self.layers_box.setTitle("Palette" if compact else "Image and palette")

    def settings_box(self) -> QWidget:
        """The Model and the Correct-and-save boxes as one widget, taken out of this one
        (a dock places them below the rest)."""
        box = QWidget()
        v = QVBoxLayout(box)
        v.setContentsMargins(0, 0, 0, 0)
        for b in (self.model_box, self.store_box):
            self.layout().removeWidget(b)
            v.addWidget(b)
        return box

    def forget(self, key: str) -> None:
        """Drop what is kept for an image that left the viewer (its last palette and
        prediction): a series shows one image at a time, and memory stays flat."""
        self._last_palette.pop(key, None)
        self._last_prediction.pop(key, None)
        self._to_show = [step for step in self._to_show if step.key != key]
        self._predicting.discard(key)

    def model_spec(self) -> tuple[str, str]:
        """(model, device): ``default`` or the model folder as an explicit path (``~``
        expanded, a relative path joined to the current directory)."""
        return (model_path_text(self.model_edit.text()),
                self.device_combo.currentText().strip() or "auto")  # fmt: skip

    def set_model(self, model: str | Path, device: str | None = None,
                  palette_model: str | Path | None = None) -> None:  # fmt: skip
        """Choose the model (and device, and palette network: ``default`` or a checkpoint /
        run folder; None keeps the current one); loaded on the next load or predict."""
        self.model_edit.setText(str(model))
        if device is not None:
            self.device_combo.setCurrentText(device)
        if palette_model is not None:
            self.palette_model_edit.setText(str(palette_model))
        self._on_model_spec_changed()

    def load_model(self, model: str | Path | None = None, device: str | None = None):
        """Load the model now (in this thread); the Predictor, or None after an error."""
        if model is not None or device is not None:
            self.set_model(model if model is not None else self.model_spec()[0], device)
        spec = self._full_spec()
        try:
            predictor = load_predictor(*spec, self.scale_text())
        except _USER_ERRORS as e:
            self._model_failed(e)
            return None
        self._use_predictor(predictor, spec)
        return predictor

    def fill_palette(self, rule: str | None = None, image: Image | None = None,
                     palette: Labels | None = None) -> np.ndarray | None:  # fmt: skip
        """Fill the palette from a semantic rule on the predicted classes (this thread)."""
        job = self._fill_job(rule, image, palette)
        result = self._run_here(job)
        if result is None:
            return None
        try:
            return self._apply_fill(result, job, palette)
        except _USER_ERRORS as e:
            self._job_failed(e)
            return None

    def predict(self, image: Image | None = None, palette: Labels | None = None
                ) -> dict[tuple[str | None, str], Layer] | None:  # fmt: skip
        """Predict in this thread and show the layers: {(task, role): layer}."""
        job = self._predict_job(image, palette)
        result = self._run_here(job)
        return None if result is None else self.show_prediction(result, job)

    def _run_here(self, job: PredictJob | None) -> JobResult | None:
        """Run a job in this thread; a user error is shown and gives None."""
        if job is None:
            return None
        try:
            return job.run()
        except _USER_ERRORS as e:
            self._job_failed(e)
            return None

    def show_prediction(self, result: JobResult, job: PredictJob, *, stagger: bool = False
                        ) -> dict[tuple[str | None, str], Layer]:  # fmt: skip
        """Put a prediction into the viewer: update the image's task layers in place, add
        the missing ones; tasks the palette no longer asks for are emptied.

        ``stagger``: one layer per turn of the event loop (adding a layer, or putting a
        full image of new labels into one, costs napari 0.05-0.5 s in the GUI thread; in
        between, the GUI keeps answering); the widget stays ``busy`` until the last one,
        and the returned dict is then empty.
        """
        self._use_predictor(result.predictor, (job.model, job.device, job.palette_model))
        self.last_result = result
        image, key = job.extra["image"], job.extra["image_key"]
        if not shows(self.viewer, image, key):
            self.status_label.setText(f"Image {job.extra['image_name']!r} was removed: its prediction "
                                      "is not shown.")  # fmt: skip
            return {}
        prediction = result.prediction
        wanted = {}
        planes = result.planes if result.planes is not None else task_planes(prediction, thresholded=True)
        for task, role, data in planes:
            if role == "label" and task in ("edges", "saliency"):
                if not self.thresholded_check.isChecked() and \
                        find_task_layer(self.viewer.layers, key, task, role) is None:  # fmt: skip
                    continue
            wanted[(task, role)] = data
        model_meta = {"model_id": result.predictor.model_id,
                      "model_sha256": result.predictor.model_sha256}  # fmt: skip
        # no longer asked for: emptied, corrections kept
        steps: list[_ShowStep] = [_ShowStep(image, key, meta.get("task"), meta.get("role"), None, model_meta)
                                  for layer in task_layers_of(self.viewer.layers, key)
                                  if ((meta := layer_meta(layer)).get("task"), meta.get("role")) not in wanted]  # fmt: skip
        steps += [_ShowStep(image, key, task, role, data, model_meta) for (task, role), data in wanted.items()]
        self._last_palette[key] = np.array(job.palette, copy=True)
        self._last_prediction[key] = (result.predictor, job.key, prediction)
        tasks = ", ".join(prediction.tasks) or "none (the palette asks for no task)"
        if stagger:
            self._shown = [tasks, 0]
            self._to_show.extend(steps)
            self.status_label.setText(f"Showing {tasks}...")
            QTimer.singleShot(0, self._show_queued)
            return {}
        out: dict[tuple[str | None, str], Layer] = {}
        changed = 0
        for step in steps:
            layer, n = self._show_step(step)
            changed += n
            if layer is not None and step.data is not None:
                out[(step.task, step.role)] = layer
        self._say_shown(tasks, changed)
        return out

    def _say_shown(self, tasks: str, changed: int) -> None:
        self.status_label.setText(f"Predicted {tasks}; {changed} pixel(s) changed.")
        self.status_label.setStyleSheet("")

    def _show_step(self, step: "_ShowStep") -> tuple[Layer | None, int]:
        """One layer of a prediction (see show_prediction): (the layer, pixels changed);
        nothing when the image is no longer shown (the series moved on)."""
        if not shows(self.viewer, step.image, step.key):
            return None, 0
        layer = find_task_layer(self.viewer.layers, step.key, step.task, step.role)
        if step.data is None:  # no longer asked for
            return layer, 0 if layer is None else update_task_layer(layer, _empty_like(layer))
        if layer is None:
            return self._add_task_layer(step.image, step.key, step.task, step.role, step.data,
                                        step.model_meta), int(np.prod(step.data.shape[:2]))  # fmt: skip
        n = update_task_layer(layer, step.data)
        meta = layer.metadata[METADATA_KEY]
        meta.update(step.model_meta)
        if n and meta.get("provenance") == "reviewed":
            # new pseudo-labels nobody accepted: no longer reviewed (saved so)
            meta["provenance"] = "corrected" if isinstance(layer, Labels) \
                and corrected_mask(layer).any() else "pseudo"  # fmt: skip
        return layer, n

    def _add_task_layer(self, image, key, task, role, data, model_meta) -> Layer:
        layer = new_task_layer(data, task=task, role=role, key=key,
                               name=layer_name(image.name, task, role), like=image,
                               visible=role != "confidence")  # fmt: skip
        layer.metadata[METADATA_KEY].update(model_meta)
        return add_or_reuse(self.viewer, layer)

    def _show_queued(self) -> None:
        # in-place updates until ~SHOW_TURN_S of work, then a turn of the event loop (a
        # frame costs as much for one changed layer as for six: 0.1-0.35 s under a
        # software renderer); a layer added has a turn of its own
        t0 = time.perf_counter()
        while self._to_show and time.perf_counter() - t0 < SHOW_TURN_S:
            step = self._to_show.pop(0)
            added = find_task_layer(self.viewer.layers, step.key, step.task, step.role) is None
            _, n = self._show_step(step)
            self._shown[1] += n
            if not self._to_show:
                self._say_shown(*self._shown)
            if added:  # a layer napari makes (or shows anew) builds its visual on the next turns
                break
        if self._to_show:
            QTimer.singleShot(0, self._show_queued)
        else:
            self._run_pending()

    def save(self, path: str | Path | None = None, image: Image | None = None) -> str | None:
        """Save the image, its palette and pseudo-labels (with corrections) into a label
        store; returns the image id in the store, or None after an error."""
        from ..store import LabelStore, StoreError
        from .store_io import group_layers, save_group

        image = image or self.image_layer
        if image is None:
            self._failed(self.save_status, "Save: choose the image whose annotation to save")
            return None
        img_meta = layer_meta(image)
        if path is None:
            path = self.store_edit.text().strip() or img_meta.get("store")
        if not path or not str(path).strip():
            self._failed(self.save_status, "Save: give the label store (a folder ending in .zarr)")
            return None
        path = Path(resolve_path_text(str(path)))  # ~ expanded, relative -> explicit
        if path.suffix != ".zarr":
            path = path.with_name(path.name + ".zarr")
        key = image_key(image)
        palette = self._palette_for(key, image)
        if palette is not None:
            _claim_palette(palette, key)
        layers = [image] + ([palette] if palette is not None else []) + \
            task_layers_of(self.viewer.layers, key)  # fmt: skip
        try:
            groups = group_layers([ly.as_layer_data_tuple() for ly in layers])
            store = LabelStore(path, mode="a")
            same_store = img_meta.get("store") and Path(img_meta["store"]).resolve() == path.resolve()
            image_id = save_group(store, groups[0], img_meta.get("image_id") if same_store else None)
        except (StoreError, *_USER_ERRORS) as e:
            self._failed(self.save_status, f"Save to {path}: {e}")
            return None
        counts = []
        for layer in task_layers_of(self.viewer.layers, key):
            if isinstance(layer, Labels):
                # the correction state stays as it is (the reference: the pseudo-labels),
                # so undoing a correction after the save still un-counts it
                mask = corrected_mask(layer)
                if mask.any():
                    layer.metadata[METADATA_KEY]["provenance"] = "corrected"
                    counts.append(f"{layer_meta(layer)['task']} {int(mask.sum())}")
        img_meta = image.metadata.setdefault(METADATA_KEY, {})
        img_meta.update({"store": str(path), "image_id": image_id})
        self.store_edit.setText(str(path))
        text = f"Saved {image_id!r} to {path}" + (
            f"; corrected pixels: {', '.join(counts)}." if counts else "; no corrections."
        )
        self.save_status.setText(text)
        self.save_status.setStyleSheet("")
        show_info(text)
        return image_id

    # ==================================================================================
    # threaded versions: thin wrappers around the same job steps
    # ==================================================================================

    def start_predict(self, image: Image | None = None, palette: Labels | None = None, *,
                      activity: bool = True):  # fmt: skip
        """Predict in a napari thread_worker; returns the worker (None when one runs
        already: this prediction then runs when it ends). ``activity=False`` (the
        re-predict after a stroke): only the widget's bar, not napari's activity bar,
        whose animation costs a software-rendered window (llvmpipe) about as much CPU as
        a short re-predict (``benchmarks/napari_stroke.py``)."""
        if self.busy:
            self._pending = lambda: self.start_predict(image, palette, activity=activity)
            target = image or self.image_layer
            if target is not None:
                self._predicting.add(image_key(target))
            return None
        job = self._predict_job(image, palette)
        if job is None:
            return None
        key = job.extra["image_key"]
        self._predicting.add(key)
        return self._start(job.steps, "CompositeTasking: predict",
                           lambda result: self.show_prediction(result, job, stagger=True),
                           total=job.total_steps(), activity=activity)  # fmt: skip

    def start_fill_palette(self, rule: str | None = None, image: Image | None = None,
                           palette: Labels | None = None):  # fmt: skip
        """Fill the palette from predicted semantics in a thread_worker."""
        if self.busy:
            self._pending = lambda: self.start_fill_palette(rule, image, palette)
            return None
        job = self._fill_job(rule, image, palette)
        if job is None:
            return None
        return self._start(job.steps, "CompositeTasking: palette from predicted semantics",
                           lambda result: self._apply_fill(result, job, palette),
                           total=job.total_steps())  # fmt: skip

    def cancel(self) -> None:
        """Stop the running worker at its next step and drop any queued one."""
        self._pending = None
        self._predicting.clear()
        self._debounce.stop()
        if self._worker is not None:
            self._worker.quit()
            self.status_label.setText("Cancelling...")

    def _start(self, steps: Callable[[], Iterator[str]], desc: str,
               on_result: Callable[[JobResult], Any], total: int = PREDICT_STEPS,
               activity: bool = True):  # fmt: skip
        """Run a job's steps (``total`` of them) in a napari worker: napari's progress bar
        in the activity dock (with a Cancel button that cancels like the widget's; not
        with ``activity=False``) and the widget's bar follow the steps; ``on_result``
        runs in the GUI thread."""
        from napari.qt.threading import create_worker

        worker = create_worker(steps, _start_thread=False, _ignore_errors=True)
        if activity:
            pbar = _ActivityProgress(total=total, desc=desc, cancel_callback=self.cancel)
            worker.pbar = pbar  # as create_worker(_progress=...) would set it
            worker.yielded.connect(pbar.increment_with_overflow)
            worker.finished.connect(pbar.close)
        self._worker = worker
        self.progress_bar.setRange(0, total)
        self.progress_bar.setValue(0)
        step = {"n": 0}

        def yielded(_):
            step["n"] += 1
            self.progress_bar.setValue(min(step["n"], total))

        def returned(result):
            self.progress_bar.setValue(total)
            try:
                on_result(result)
            except _USER_ERRORS as e:
                self._job_failed(e)

        def errored(e):
            self._job_failed(e)

        def aborted():
            self.status_label.setText("Cancelled.")

        def finished():
            self._worker = None
            if self._pending is None:
                self._predicting.clear()
            self.cancel_button.setEnabled(False)
            self.predict_button.setEnabled(True)
            self._run_pending()

        self._worker_callbacks[:] = [(worker.yielded, yielded), (worker.returned, returned),
                                     (worker.errored, errored), (worker.aborted, aborted),
                                     (worker.finished, finished)]  # fmt: skip
        for signal, callback in self._worker_callbacks:
            signal.connect(callback)
        self.cancel_button.setEnabled(True)
        self.status_label.setText(desc.split(": ", 1)[-1].capitalize() + "...")
        worker.start()
        return worker

    # ==================================================================================
    # helpers
    # ==================================================================================

    def _run_pending(self) -> None:
        if self.busy:
            return
        pending, self._pending = self._pending, None
        if pending is not None:
            pending()

    def _job_inputs(self, image: Image | None):
        image = image or self.image_layer
        if image is None:
            raise ValueError("add an image layer and choose it under 'Image'")
        rgb = rgb8_of(image)
        key = image_key(image)
        return image, rgb, key

    def _full_spec(self) -> tuple[str, str, str]:
        return (*self.model_spec(), model_path_text(self.palette_model_edit.text()))

    def _predictor_for_job(self) -> "Predictor | None":
        return self._predictor if self._predictor_spec == self._full_spec() else None

    def _predict_job(self, image: Image | None, palette: Labels | None) -> PredictJob | None:
        try:
            image, rgb, key = self._job_inputs(image)
            if palette is not None:
                _check_palette_owner(palette, key, image)
            palette = palette or self._palette_for(key, image)
            if palette is None:
                raise ValueError(f"no Task Palette for image {image.name!r}: make one in the "
                                 "Task Palette widget or fill one from predicted semantics")  # fmt: skip
            pal = np.asarray(palette.data)
            if pal.shape != rgb.shape[:2]:
                raise ValueError(f"palette {palette.name!r} has shape {pal.shape} but image "
                                 f"{image.name!r} has {rgb.shape[:2]}")  # fmt: skip
            from ..palette import validate_palette

            pal = validate_palette(np.array(pal, copy=True))
        except _USER_ERRORS as e:
            self._failed(self.status_label, f"Predict: {e}")
            return None
        _claim_palette(palette, key)  # a free palette belongs to this image from now on
        job_key = (key, image_digest(rgb))
        predictor = self._predictor_for_job()
        last = self._last_prediction.get(key)
        previous = None
        if last is not None and predictor is not None and last[0] is predictor and last[1] == job_key:
            previous = last[2]  # same model, same pixels: re-decode only what changed
        return PredictJob(rgb, pal, job_key, *self.model_spec(), scale=self.scale_text(),
                          predictor=predictor, palette_model=self._full_spec()[2], previous=previous,
                          extra={"image": image, "image_key": key, "image_name": image.name,
                                 "palette_layer": palette})  # fmt: skip

    def _fill_job(self, rule: str | None, image: Image | None,
                  palette: Labels | None = None) -> PredictJob | None:  # fmt: skip
        rule = (rule or self.rule_combo.currentText()).strip()
        try:
            from ..palette import load_rule

            if rule != PALETTE_NETWORK and not load_rule(rule).needs_semantics:
                raise ValueError(f"rule {rule!r} does not read semantics: fill it from the "
                                 "Task Palette widget")  # fmt: skip
            image, rgb, key = self._job_inputs(image)
            if palette is not None:
                _check_palette_owner(palette, key, image)
        except _USER_ERRORS as e:
            self._failed(self.status_label, f"Fill palette: {e}")
            return None
        return PredictJob(rgb, None, (key, image_digest(rgb)), *self.model_spec(), scale=self.scale_text(),
                          predictor=self._predictor_for_job(), rule=rule,
                          palette_model=self._full_spec()[2],
                          extra={"image": image, "image_key": key, "image_name": image.name})  # fmt: skip

    def _apply_fill(self, result: JobResult, job: PredictJob, palette: Labels | None):
        """Write a filled palette into the image's palette (a new one when it has none);
        never into another image's palette, never resizing one."""
        self._use_predictor(result.predictor, (job.model, job.device, job.palette_model))
        image, key = job.extra["image"], job.extra["image_key"]
        if not shows(self.viewer, image, key):
            self.status_label.setText(f"Image {job.extra['image_name']!r} was removed: the palette is "
                                      "not filled.")  # fmt: skip
            return None
        new = result.palette.astype(np.uint8)
        if palette is not None:  # given: checked before the job; a layer may have changed
            _check_palette_owner(palette, key, image)
        palette = palette or self._palette_for(key, image)
        origin = ("palette network" if job.rule == PALETTE_NETWORK
                  else f"rule {job.rule} on predicted semantics")  # fmt: skip
        if palette is None:
            palette = make_palette_layer(new.shape, like=image, image_key=key, name=palette_name(image))
            palette = add_or_reuse(self.viewer, palette)
            self.palette_combo.set_current_layer(palette)
        if np.shape(palette.data) != new.shape:
            raise ValueError(f"palette {palette.name!r} has shape {np.shape(palette.data)} but "
                             f"image {image.name!r} has {new.shape}: not filled")  # fmt: skip
        _claim_palette(palette, key)
        palette.metadata[METADATA_KEY]["origin"] = origin
        replace_labels(palette, new)  # one undo step (a paint event: see _on_palette_edited)
        record_rule(palette, None if job.rule == PALETTE_NETWORK else job.rule)
        self.status_label.setText(f"Palette {palette.name!r} filled from the {origin}.")
        return np.asarray(palette.data)

    def _palette_for(self, key: str, image: Image | None = None) -> Labels | None:
        """The palette of an image: the one chosen in the combo when it belongs to the
        image (or is free and of its size), else the newest palette made for the image
        (the topmost in the layer list); None when there is none. Never the palette of
        another image."""
        if image is None:
            image = next((ly for ly in self.viewer.layers if is_source_image(ly)
                          and layer_meta(ly).get("image_key") == key), None)  # fmt: skip
        shape = _plane_shape(image)
        chosen = self.palette_layer
        if chosen is not None and chosen in self.viewer.layers and \
                palette_fits(chosen, key, shape):  # fmt: skip
            return chosen
        own = [ly for ly in self.viewer.layers
               if is_palette_layer(ly) and palette_image_key(ly) == key]  # fmt: skip
        return own[-1] if own else None

    def _palette_fits_image(self, layer: Layer) -> bool:
        """The palette combo's filter: palettes that can serve the chosen image."""
        image = self.image_combo.current_layer() if hasattr(self, "image_combo") else None
        if image is None or not is_palette_layer(layer):
            return False
        return palette_fits(layer, image_key(image), _plane_shape(image))

    def _use_predictor(self, predictor: "Predictor", spec: tuple[str, ...]) -> None:
        self._predictor, self._predictor_spec = predictor, tuple(spec)
        self.device_label.setText(f"Device: {device_text(predictor)}")
        self.model_status.setText(f"Model: {predictor.model_id}")
        self.model_status.setStyleSheet("")

    @staticmethod
    def _failed(label: QLabel, text: str) -> None:
        """A failure: in the widget's own line (``label``, in red until the next message)
        and as napari's notification."""
        label.setText(text)
        label.setStyleSheet("color: #e0604a;")
        show_error(text)

    def _model_failed(self, e: Exception) -> None:
        self.model_status.setText(f"Cannot load the model: {e}")
        self.model_status.setStyleSheet("color: #e0604a;")
        show_error(f"Model: {e}")

    def _job_failed(self, e: Exception) -> None:
        from ..model.checkpoint import CheckpointError

        if isinstance(e, CheckpointError):
            self._model_failed(e)
        else:
            show_error(f"CompositeTasking: {e}")
        self.status_label.setText(f"Failed: {e}")
        self.status_label.setStyleSheet("color: #e0604a;")

    def _show_model_status(self) -> None:
        spec = self.model_spec()[0]
        if self._predictor is not None and self._predictor_spec == self._full_spec():
            return
        problem = bundled_model_status() if spec == "default" else None
        if problem:
            self.model_status.setText(problem)
            self.model_status.setStyleSheet("color: #e0604a;")
        else:
            self.model_status.setText(f"Model: {spec} (loads on first use)")
            self.model_status.setStyleSheet("")

    def scale_text(self) -> str:
        """The working resolution chosen (:mod:`composite_tasking.scale`); an unreadable
        entry is refused by the Predictor with its reason."""
        return self.scale_combo.currentText().strip() or "auto"

    def set_scale(self, scale: str) -> None:
        """Choose the working resolution: ``auto``, ``none``, a factor or ``512px``."""
        self.scale_combo.setCurrentText(str(scale))
        self._on_scale_changed(str(scale))

    def _on_scale_changed(self, text: str) -> None:
        """A loaded model keeps its weights and takes the new working resolution (its
        encoder cache is keyed by the working size); a bad entry says why."""
        from ..scale import parse_scale

        try:
            scale = parse_scale(text.strip() or "auto")
        except ValueError as e:
            self.model_status.setText(f"Working resolution: {e}")
            self.model_status.setStyleSheet("color: #e0604a;")
            return
        if self._predictor is not None:
            self._predictor.scale = scale
            self.model_status.setText(f"Model: {self._predictor.model_id}")
            self.model_status.setStyleSheet("")
        else:
            self._show_model_status()

    def _on_model_spec_changed(self, *_) -> None:
        if self._predictor_spec != self._full_spec():
            self._predictor = None
            self._predictor_spec = None
            self.device_label.setText("Device: not loaded")
        self._show_model_status()

    def _watch_palette(self, *_) -> None:
        layer = self.palette_layer
        if layer is self._watched_palette:
            return
        disconnect_all(self._palette_callbacks)
        self._palette_callbacks.clear()
        self._watched_palette = layer
        if layer is not None:
            # paint: strokes, fills, data_setitem; set_data also follows undo / redo (and
            # other refreshes: the debounced handler compares with the last palette)
            for emitter in (layer.events.paint, layer.events.set_data):
                emitter.connect(self._on_palette_paint)
                self._palette_callbacks.append((emitter, self._on_palette_paint))
            layer.events.paint.connect(self._on_palette_edited)
            self._palette_callbacks.append((layer.events.paint, self._on_palette_edited))

    def _on_palette_edited(self, *_) -> None:
        """A stroke on the palette makes it the person's: the rule that filled it no
        longer says what it asks (a fill records its rule after writing its pixels), so
        none is recorded, and fine-tuning trains under the palette without a rule."""
        if self._watched_palette is not None:
            record_rule(self._watched_palette, None)

    def _on_palette_paint(self, *_) -> None:
        layer = self._watched_palette
        if layer is None or not self.live_check.isChecked():
            return
        key = palette_image_key(layer)
        if key is None or (key not in self._last_palette and key not in self._predicting):
            return  # nothing predicted for it yet, nor being predicted: wait for Predict
        self._debounce.start()  # restarts: re-predict when painting pauses

    def _on_debounce(self) -> None:
        layer = self._watched_palette
        if layer is None:
            return
        key = palette_image_key(layer)
        if key is None or layer not in self.viewer.layers:
            return
        last = self._last_palette.get(key)
        if last is not None and np.array_equal(last, np.asarray(layer.data)):
            return
        image = next((ly for ly in self.viewer.layers if is_source_image(ly)
                      and layer_meta(ly).get("image_key") == key), None)  # fmt: skip
        if image is not None:
            self.start_predict(image, layer, activity=False)

    def _on_image_changed(self, *_) -> None:
        """The chosen image changed: its store fills the Store field (an image read from a
        store saves back to it), the palette combo lists its palettes and picks one."""
        image = self.image_layer
        if image is not None:
            store = layer_meta(image).get("store")
            if store:
                self.store_edit.setText(str(store))
        self._choose_palette()

    def _choose_palette(self, prefer: Labels | None = None) -> None:
        """Refresh the palette combo for the chosen image and keep a palette of that image
        chosen: ``prefer`` when it fits, else the current one when it was made for the
        image, else the newest made for it."""
        self.palette_combo.refresh()
        image = self.image_layer
        if image is not None:
            key = image_key(image)
            fitting = self.palette_combo.layers()
            if prefer is not None and prefer in fitting:
                self.palette_combo.set_current_layer(prefer)
            else:
                current = self.palette_layer
                own = [ly for ly in fitting if palette_image_key(ly) == key]
                if own and (current is None or palette_image_key(current) != key):
                    self.palette_combo.set_current_layer(own[-1])
        self._watch_palette()

    def _refresh(self, *_) -> None:
        self.image_combo.refresh()
        self._choose_palette()

    def _watch_name(self, layer: Layer) -> None:
        layer.events.name.connect(self._refresh)
        self._name_callbacks.append((layer.events.name, self._refresh))

    def _on_layer_inserted(self, event) -> None:
        layer = event.value
        self._watch_name(layer)
        self.image_combo.refresh()
        # a palette made for the chosen image (Task Palette's New palette, a fill) is the
        # one to predict with: the newest wins
        self._choose_palette(prefer=layer if is_palette_layer(layer) else None)

    def _on_layer_removed(self, event) -> None:
        layer = event.value
        keep = [(e, cb) for e, cb in self._name_callbacks if e is not layer.events.name]
        disconnect_all([(e, cb) for e, cb in self._name_callbacks if e is layer.events.name])
        self._name_callbacks[:] = keep
        self._refresh()

    def _on_active_layer(self, event) -> None:
        """A palette of the chosen image made active (napari's layer list, the Task
        Palette widget's task buttons) becomes the palette to predict with."""
        layer = getattr(event, "value", None)
        if is_palette_layer(layer) and layer in self.palette_combo.layers():
            self.palette_combo.set_current_layer(layer)

    def _on_browse_model(self) -> None:  # pragma: no cover - needs a person
        path = QFileDialog.getExistingDirectory(self, "Choose a checkpoint or run folder")
        if path:
            self.set_model(path)

    def _on_browse_store(self) -> None:  # pragma: no cover - needs a person
        path = QFileDialog.getExistingDirectory(self, "Choose a label store (.zarr folder)")
        if not path:
            path, _ = QFileDialog.getSaveFileName(self, "New label store", "labels.zarr")
        if path:
            self.store_edit.setText(path)

    def _on_load_clicked(self) -> None:
        self.start_load_model()

    def start_load_model(self):
        """Load the model in a thread_worker (the GUI stays responsive)."""
        if self.busy:
            return None
        spec = self._full_spec()

        def steps():
            predictor = load_predictor(*spec, self.scale_text())
            yield "model"
            return JobResult(predictor)

        def loaded(result: JobResult) -> None:
            self._use_predictor(result.predictor, spec)
            self.status_label.setText(f"Model loaded ({device_text(result.predictor)}).")

        return self._start(steps, "CompositeTasking: load model", loaded, total=1)

    def _on_save_clicked(self) -> None:
        image = self.image_layer
        known = image is not None and layer_meta(image).get("store")
        if not self.store_edit.text().strip() and not known:  # pragma: no cover - a person
            self._on_browse_store()
        self.save()

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt name
        self.cancel()
        super().closeEvent(event)


def _plane_shape(image: Layer | None) -> tuple[int, int] | None:
    if image is None:
        return None
    try:
        return image_plane_shape(image)
    except ValueError:
        return None


def _check_palette_owner(palette: Labels, key: str, image: Layer) -> None:
    """ValueError when ``palette`` belongs to another image than ``image`` (``key``)."""
    owner = palette_image_key(palette)
    if owner is not None and owner != key:
        raise ValueError(f"palette {palette.name!r} belongs to another image than "
                         f"{image.name!r}: choose or make a palette for this image")  # fmt: skip


def _claim_palette(palette: Labels, key: str) -> None:
    """A free palette belongs to the image ``key`` from now on (one of another image is
    never re-keyed: callers check with :func:`_check_palette_owner`)."""
    meta = palette.metadata.setdefault(METADATA_KEY, {})
    if palette_image_key(palette) is None:
        meta["image_key"] = key


class _ShowStep(NamedTuple):
    """One task layer of a prediction to show: ``data`` None empties the layer."""

    image: Image
    key: str
    task: str | None
    role: str
    data: np.ndarray | None
    model_meta: dict


def _empty_like(layer: Layer) -> np.ndarray:
    data = np.asarray(layer.data)
    if isinstance(layer, Labels):
        return np.full(data.shape, IGNORE, np.uint8)
    if getattr(layer, "rgb", False):  # normals: RGBA, transparent
        return np.zeros(data.shape, np.float32)
    return np.full(data.shape, np.nan, np.float32)
