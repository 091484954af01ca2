"""The "Fine-tune" dock widget: fine-tune the current model on what a person checked in a
label store, and the palette network on the palettes a person chose, in the background;
then, when the held-out check accepts the new models, load them and re-predict.

The work is the core's :func:`composite_tasking.training.finetune.finetune`, the function
``ctn finetune`` calls: it trains on the pixels a person checked (corrected pixels, and
every pixel of a reviewed task), each image under its stored palette (a palette a person
edited is the person's: no rule is needed; the *Rule* box only makes palettes for images
stored without one), keeps BatchNorm statistics, and holds some checked images out to
decide whether the new model replaces the old one. This widget only chooses the inputs
and shows progress and the decision, in its status line.

Progress (network, epoch, step, loss) reaches the GUI thread through a Qt signal;
napari's progress bar and the widget's own bar follow it. **Cancel** stops at the next
step of either network: finished epochs stay in the run folder, and the models in use are
left as they were. Closing the viewer (or quitting napari) during a fine-tune cancels it
the same way and waits for it to stop (:mod:`._lifecycle`), so Python never ends under the
running thread. When the Predict widget's palette network (its *Palette network* field)
cannot be loaded, the widget says so and fine-tunes the CTN only.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING


from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..training.finetune import (
    NETWORK_NAMES,
    PALETTE_SUBDIR,
    FinetuneCancelled,
    FinetuneResult,
    checked_ids,
    finetune,
    palette_ids,
)
from ._compat import prevent_llvm_clash
from ._lifecycle import stop_jobs_on_close
from .predict_jobs import model_path_text, resolve_path_text

if TYPE_CHECKING:
    import napari

__all__ = ["FinetuneWidget", "FinetuneResult", "FinetuneCancelled", "run_finetune",
           "run_finetune_all", "corrected_ids", "palette_ids", "resolve_palette_model",
           "PALETTE_SUBDIR", "NETWORK_NAMES", "STORED_PALETTES"]  # fmt: skip

_USER_ERRORS = (ValueError, KeyError, TypeError, OSError, FileExistsError)

#: the Rule box's first entry: every image trains under its stored palette (no rule)
STORED_PALETTES = "stored palettes"


def corrected_ids(store_path: str | Path) -> list[str]:
    """Images of a store with labels a person checked or ground truth (empty if none)."""
    return checked_ids(store_path)


def resolve_palette_model(spec: str | Path) -> Path:
    """The checkpoint folder of a palette-network spec: ``default`` / ``palette`` (the
    bundled one), a checkpoint folder or a training run folder. Raises
    :class:`~composite_tasking.model.CheckpointError` when it is missing or is not a
    palette network (a CTN, say)."""
    from ..inference import resolve_model
    from ..model import CheckpointError, read_checkpoint_info

    s = str(spec).strip() or "default"
    path = resolve_model("palette" if s in ("default", "palette") else s)
    info = read_checkpoint_info(path)
    if info.config.kind != "palette":
        raise CheckpointError(f"{s!r} is a {info.config.kind!r} checkpoint, not a palette "
                              "network (kind 'palette')")  # fmt: skip
    return path


def run_finetune_all(store: str | Path, model: str | Path, out: str | Path, *,
                     palette_model: str | Path | None = None, rule: str | None = None,
                     **settings) -> FinetuneResult:  # fmt: skip
    """The worker's job: :func:`composite_tasking.training.finetune.finetune` (``settings``:
    epochs, lr, batch_size, max_steps_per_epoch, device, progress, should_stop)."""
    prevent_llvm_clash()
    if palette_model is not None:
        resolve_palette_model(palette_model)  # a CTN given as the palette network: refused first
    return finetune(store, model, out, palette_model=palette_model, rule=rule, **settings)


def run_finetune(store: str | Path, model: str | Path, out: str | Path, *, rule: str | None = None,
                 **settings) -> Path:  # fmt: skip
    """The CTN alone (:func:`run_finetune_all` without a palette network); returns the
    checkpoint to use now: the new one when the held-out check accepted it, else ``model``'s."""
    result = run_finetune_all(store, model, out, rule=rule, **settings)
    if result.ctn is None:
        raise ValueError(f"label store {store} holds no corrected image: correct some "
                         "pseudo-labels and save them to the store first")  # fmt: skip
    return result.ctn


class _Relay(QObject):
    """Carries the trainer's progress from the worker thread to the GUI thread."""

    progress = Signal(dict)


#: the text of the check box that adds the palette network's fine-tune
#: short: a check box does not wrap, and a long one widens the whole dock column
PALETTE_CHECK_TEXT = "Also teach the palette network"


class FinetuneWidget(QWidget):
    """Dock widget to fine-tune on a store's corrections (see the module docstring)."""

    def __init__(self, napari_viewer: "napari.viewer.Viewer", parent: QWidget | None = None,
                 predict_widget=None):  # fmt: skip
        super().__init__(parent)
        prevent_llvm_clash()  # before anything imports torchvision (see _compat)
        self.viewer = napari_viewer
        self._predict_widget = predict_widget
        self._worker = None
        self._stop = threading.Event()
        self._pbar = None
        self._args: dict = {}
        self.last_model: Path | None = None
        #: the fine-tuned palette network of the last run (None: not fine-tuned)
        self.last_palette_model: Path | None = None
        #: epoch records of the CTN / of the palette network in the last run
        self.history: list[dict] = []
        self.palette_history: list[dict] = []
        self._palette_touched = False  # the person set the palette check box
        self._relay = _Relay(self)  # parented: destroyed with the widget, never after Qt
        self._relay.progress.connect(self._on_progress)
        # a docked widget gets no closeEvent when napari's window closes: the fine-tune
        # must stop before Python ends under its thread (see _lifecycle)
        self._end_close_watch = stop_jobs_on_close(self, self.cancel, lambda: self.busy)

        self.store_edit = QLineEdit()
        self.store_edit.setPlaceholderText("labels.zarr (the Predict widget's store)")
        self.browse_store_button = QPushButton("Browse...")
        self.model_edit = QLineEdit()
        self.model_edit.setPlaceholderText("the Predict widget's model")
        self.rule_combo = QComboBox()
        self.rule_combo.setEditable(True)
        self.rule_combo.addItems([STORED_PALETTES, "R2", "R3", "mosaic", "random"])
        self.rule_combo.setToolTip("every image trains under its stored palette (the one you "
                                   "painted or accepted); a rule only makes palettes for images "
                                   "stored without one")  # fmt: skip
        self.epochs_spin = QSpinBox()
        self.epochs_spin.setRange(1, 1000)
        self.epochs_spin.setValue(2)
        self.lr_spin = QDoubleSpinBox()
        self.lr_spin.setDecimals(6)
        self.lr_spin.setRange(1e-6, 1.0)
        self.lr_spin.setSingleStep(1e-5)
        self.lr_spin.setValue(5e-5)  # the finetune recipe's
        self.lr_spin.setToolTip("learning rate of the decoder and task representation; "
                                "the encoder's is a tenth of it")  # fmt: skip
        self.steps_spin = QSpinBox()
        self.steps_spin.setRange(0, 100_000)
        self.steps_spin.setValue(0)
        self.steps_spin.setSpecialValueText("all")
        self.steps_spin.setToolTip("at most this many steps per epoch (all = every image once)")
        self.palette_check = QCheckBox(PALETTE_CHECK_TEXT)
        self.palette_check.setToolTip(
            "then fill from 'palette network' follows the edited palettes: "
            "also fine-tune the Predict widget's palette network (its 'Palette network' "
            "field) on the palettes saved from napari, with the same epochs, learning rate "
            "and steps, into <run folder>/palette; the Predict widget then uses it")  # fmt: skip
        self.palette_note = QLabel()
        self.palette_note.setWordWrap(True)
        self.out_edit = QLineEdit()
        self.out_edit.setPlaceholderText("run folder (default: beside the store)")
        self.start_button = QPushButton("Fine-tune")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        self.loss_label = QLabel("Loss: -")
        self.loss_label.setWordWrap(True)
        self.status_label = QLabel()
        self.status_label.setWordWrap(True)

        store_row = QHBoxLayout()
        store_row.addWidget(self.store_edit, 1)
        store_row.addWidget(self.browse_store_button)
        form = QFormLayout()
        form.addRow("Store", store_row)
        form.addRow("Model", self.model_edit)
        form.addRow("Rule", self.rule_combo)
        form.addRow("Epochs", self.epochs_spin)
        form.addRow("Learning rate", self.lr_spin)
        form.addRow("Steps / epoch", self.steps_spin)
        form.addRow("Run folder", self.out_edit)
        form.addRow(self.palette_check)
        form.addRow(self.palette_note)
        buttons = QHBoxLayout()
        buttons.addWidget(self.start_button, 1)
        buttons.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.loss_label)
        layout.addWidget(self.status_label)
        layout.addStretch(1)

        self.browse_store_button.clicked.connect(self._on_browse_store)
        self.start_button.clicked.connect(lambda: self.start())
        self.cancel_button.clicked.connect(self.cancel)
        self.palette_check.clicked.connect(self._on_palette_clicked)
        self.refresh_palette_default()

    # ---------------------------------------------------------------------- inputs

    @property
    def busy(self) -> bool:
        return self._worker is not None

    def predict_widget(self):
        """The Predict widget whose model is fine-tuned and re-predicts afterwards."""
        if self._predict_widget is not None:
            return self._predict_widget
        from .predict_widget import PredictWidget

        found = self.window().findChildren(PredictWidget) if self.window() is not self else []
        return found[0] if found else None

    def palette_model_spec(self) -> str:
        """The palette network to fine-tune: the Predict widget's (``default`` = bundled)."""
        pw = self.predict_widget()
        return pw._full_spec()[2] if pw is not None else "default"

    def palette_model_problem(self) -> str | None:
        """None when the palette network can be fine-tuned, else why not (a sentence)."""
        from ..model import CheckpointError

        spec = self.palette_model_spec()
        try:
            resolve_palette_model(spec)
        except (CheckpointError, *_USER_ERRORS) as e:
            return f"palette network {spec!r} cannot be loaded: {e}"
        return None

    def refresh_palette_default(self) -> str | None:
        """Check "Also teach the palette network" when the palette network resolves
        (unless the person set the box); say why not under it. Returns the problem."""
        problem = self.palette_model_problem()
        if not self._palette_touched:
            self.palette_check.setChecked(problem is None)
        if problem is None:
            self.palette_note.setText(f"Palette network: {self.palette_model_spec()}")
            self.palette_note.setStyleSheet("")
        else:
            self.palette_note.setText(f"The {problem}. Only the CTN is fine-tuned.")
            self.palette_note.setStyleSheet("color: #e0604a;")
        return problem

    def inputs(self) -> dict:
        pw = self.predict_widget()
        store = self.store_edit.text().strip()
        if not store and pw is not None:
            image = pw.image_layer
            store = (
                pw.store_edit.text().strip()
                or (image is not None and image.metadata.get("composite_tasking", {}).get("store"))
                or ""
            )
        if not store:
            raise ValueError("give the label store holding the corrections (Store)")
        store = resolve_path_text(store)  # "~", and relative to napari's current folder
        model = model_path_text(self.model_edit.text()) if self.model_edit.text().strip() else (
            pw.model_spec()[0] if pw else "default")  # fmt: skip
        device = pw.model_spec()[1] if pw else "auto"
        out = self.out_edit.text().strip()
        if out:
            out = resolve_path_text(out)
        else:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            out = str(Path(store).with_name(f"{Path(store).stem}-finetune-{stamp}"))
        palette_model = None
        if self.palette_check.isChecked() and self.palette_model_problem() is None:
            palette_model = self.palette_model_spec()
        return {"store": store, "model": model, "out": out, "device": device,
                "palette_model": palette_model,
                "rule": self.rule(),
                "epochs": self.epochs_spin.value(), "lr": self.lr_spin.value(),
                "max_steps_per_epoch": self.steps_spin.value() or None}  # fmt: skip

    def rule(self) -> str | None:
        """The Rule box: None for the stored palettes."""
        text = self.rule_combo.currentText().strip()
        return None if text in ("", STORED_PALETTES) else text

    # ---------------------------------------------------------------------- running

    def start(self, **overrides):
        """Fine-tune in a thread_worker; returns the worker, or None after an error."""
        if self.busy:
            return None
        problem = self.refresh_palette_default()
        try:
            args = {**self.inputs(), **overrides}
        except _USER_ERRORS as e:
            self.status_label.setText(f"Not started: {e}")
            show_error(f"Fine-tune: {e}")
            return None
        from napari.qt.threading import create_worker
        from napari.utils import progress

        skipped = ""
        if args.get("palette_model") is None:
            skipped = f" CTN only: the {problem}." if problem else " CTN only."
            if problem and self.palette_check.isChecked():  # asked for, cannot be had
                show_warning(f"Fine-tune: the {problem}; fine-tuning the CTN only.")
        self._stop.clear()
        self.history, self.palette_history = [], []
        networks = 1 if args.get("palette_model") is None else 2
        self._pbar = progress(total=args["epochs"] * networks, desc="CompositeTasking: fine-tune")
        self.progress_bar.setRange(0, 0)  # busy until the first step says how many
        stop, started = self._stop, []

        def should_stop() -> bool:  # Cancel, or napari's worker.quit() (its close, its quit)
            return stop.is_set() or any(w.abort_requested for w in started)

        worker = create_worker(run_finetune_all, **args, progress=self._relay.progress.emit,
                               should_stop=should_stop,
                               _start_thread=False, _ignore_errors=True)  # fmt: skip
        started.append(worker)
        self._worker = worker
        self._args = args
        worker.returned.connect(self._on_returned)
        worker.errored.connect(self._on_errored)
        worker.finished.connect(self._on_finished)
        self.start_button.setEnabled(False)
        self.palette_check.setEnabled(False)
        self.cancel_button.setEnabled(True)
        what = "the CTN and the palette network" if networks == 2 else args["model"]
        self.status_label.setText(f"Fine-tuning {what} on the images checked in "
                                  f"{args['store']} -> {args['out']}.{skipped}")  # fmt: skip
        worker.start()
        return worker

    def cancel(self) -> None:
        """Stop at the next training step."""
        if self._worker is not None:
            self._stop.set()
            self.status_label.setText("Cancelling at the next step...")

    def _on_progress(self, info: dict) -> None:
        network = info.get("network", "ctn")
        name = NETWORK_NAMES.get(network, network)
        if info.get("stage") == "start":
            self.progress_bar.setRange(0, 0)
            self.progress_bar.setFormat(f"{name}: %p%")
            if not self._stop.is_set():
                kind = "checked image(s)" if network == "ctn" else "chosen palette(s)"
                self.status_label.setText(f"Fine-tuning the {name} on {info.get('images')} "
                                          f"{kind} -> {info.get('out')}")  # fmt: skip
            return
        if info.get("stage") == "score":
            self.progress_bar.setRange(0, 0)
            if not self._stop.is_set():
                when = "before" if info.get("which") == "before" else "after"
                self.status_label.setText(f"Scoring the {name} {when} fine-tuning on "
                                          f"{info.get('images')} held-out image(s)")  # fmt: skip
            return
        if "epoch_done" in info:
            rec = info["epoch_done"]
            (self.palette_history if network == "palette" else self.history).append(rec)
            if self._pbar is not None:
                self._pbar.update(1)
            return
        epochs, steps = int(info["epochs"]), int(info["steps"])
        self.progress_bar.setRange(0, max(1, epochs * steps))
        self.progress_bar.setValue((int(info["epoch"]) - 1) * steps + int(info["step"]))
        loss = info.get("loss", {})
        parts = ", ".join(f"{k} {v:.3g}" for k, v in loss.items() if k != "total")
        total = loss.get("total", float("nan"))
        self.loss_label.setText(f"Epoch {info['epoch']}/{epochs}, step {info['step']}/{steps} "
                                f"({name}): loss {total:.4g} ({parts})")  # fmt: skip
        if self._pbar is not None:
            self._pbar.set_description(f"CompositeTasking: fine-tune {name}, "
                                       f"loss {loss.get('total', 0):.3g}")  # fmt: skip

    def _on_returned(self, result: FinetuneResult) -> None:
        """Show the decision; put the accepted models in use and re-predict."""
        runs = result.runs
        ctn = runs["ctn"].checkpoint if "ctn" in runs and runs["ctn"].accepted else None
        palette = runs["palette"].checkpoint if "palette" in runs and runs["palette"].accepted else None
        self.last_model = ctn
        self.last_palette_model = palette
        summary = result.summary()
        self.status_label.setText(summary)
        (show_info if result.accepted else show_warning)(f"Fine-tune: {summary}")
        pw = self.predict_widget()
        if pw is None or (ctn is None and palette is None):
            return  # nothing new to use: the models in use stay
        model = ctn if ctn is not None else pw.model_spec()[0]
        pw.set_model(model, self._args.get("device"), palette_model=palette)  # None: kept
        if pw.image_layer is not None and pw.palette_layer is not None:
            pw.start_predict()
        else:
            pw.start_load_model()

    def _on_errored(self, e: Exception) -> None:
        if isinstance(e, FinetuneCancelled):
            kept = ("models in use are" if self._args.get("palette_model") is not None
                    else "model in use is")  # fmt: skip
            self.status_label.setText(f"Cancelled; the {kept} unchanged. {e}.")
        else:
            self.status_label.setText(f"Failed: {e}")
            show_error(f"Fine-tune: {e}")

    def _on_finished(self) -> None:
        self._worker = None
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        self.progress_bar.resetFormat()
        self.start_button.setEnabled(True)
        self.palette_check.setEnabled(True)
        self.cancel_button.setEnabled(False)

    def _on_palette_clicked(self, *_) -> None:
        self._palette_touched = True

    def _on_browse_store(self) -> None:  # pragma: no cover - needs a person
        path = QFileDialog.getExistingDirectory(self, "Choose a label store (.zarr folder)")
        if path:
            self.store_edit.setText(path)

    def showEvent(self, event) -> None:  # noqa: N802 - Qt name
        if not self.busy:
            self.refresh_palette_default()  # the Predict widget may be docked by now
        super().showEvent(event)

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt name
        self.cancel()
        super().closeEvent(event)
