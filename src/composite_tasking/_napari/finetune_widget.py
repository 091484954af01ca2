"""The "Fine-tune" dock widget: fine-tune the current model on the corrected images of a
label store, in the background, then load the new checkpoint and re-predict.

The training is the core's (:class:`composite_tasking.training.trainer.Trainer` with the
built-in ``finetune`` recipe); this widget only chooses its inputs and shows its
progress. :func:`run_finetune` is the plain function the worker wraps (tests and scripts
call it directly): it takes the images of the store whose provenance says a person
corrected some task, trains ``epochs`` epochs into a run folder and returns the new
checkpoint folder. Each image trains under its stored palette (the rule only makes
palettes for images stored without one).

Progress (epoch, step, loss) reaches the GUI thread through a Qt signal; napari's
progress bar and the widget's own bar follow it. **Cancel** stops at the next step: the
epochs finished before stay saved in the run folder, and the model in use is left as
it was.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import (
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

from ._compat import prevent_llvm_clash

if TYPE_CHECKING:
    import napari

__all__ = ["FinetuneWidget", "run_finetune", "corrected_ids", "FinetuneCancelled"]

_USER_ERRORS = (ValueError, KeyError, TypeError, OSError, FileExistsError)


class FinetuneCancelled(Exception):
    """Raised from the progress callback to stop training at the next step."""


def corrected_ids(store_path: str | Path) -> list[str]:
    """Images of a store with at least one task a person corrected."""
    from ..store import LabelStore

    store = LabelStore(store_path, mode="r")
    return [i for i in store.ids()
            if "corrected" in store.image_attrs(i).get("provenance", {}).values()]  # fmt: skip


def run_finetune(store: str | Path, model: str | Path, out: str | Path, *, rule: str = "R2",
                 epochs: int = 2, lr: float = 1e-4, batch_size: int = 4,
                 max_steps_per_epoch: int | None = None, device: str = "auto",
                 progress: Callable[[dict], None] | None = None,
                 should_stop: Callable[[], bool] | None = None) -> Path:  # fmt: skip
    """Fine-tune ``model`` on the corrected images of ``store`` into the run folder
    ``out``; returns the new checkpoint folder. No Qt, no napari.

    ``lr`` is the decoder's learning rate (the encoder's is a tenth, as in the recipe);
    ``progress`` gets the trainer's dicts (``{"epoch", "epochs", "step", "steps",
    "loss"}`` per step, ``{"epoch_done": record}`` per epoch); ``should_stop`` is asked
    before every step, and a True stops the run (:class:`FinetuneCancelled`).
    """
    prevent_llvm_clash()
    from ..datasets import StoreDataset
    from ..inference import resolve_model
    from ..training.recipe import builtin_recipe
    from ..training.trainer import LATEST, Trainer, build_augment

    ids = corrected_ids(store)
    if not ids:
        raise ValueError(f"label store {store} holds no corrected image: correct some "
                         "pseudo-labels and save them to the store first")  # fmt: skip
    init = resolve_model(model)
    overrides = {
        "init": str(init), "train": {"kind": "store", "root": str(store)}, "rule": rule,
        "epochs": int(epochs), "batch_size": max(1, min(int(batch_size), len(ids))),
        # no worker processes: forking a Qt application is not safe
        "workers": 0, "max_steps_per_epoch": max_steps_per_epoch,
        "optimizer": {"lr_decoder": float(lr), "lr_encoder": float(lr) / 10,
                      "weight_decay": 1.0e-5},
    }  # fmt: skip
    recipe = builtin_recipe("finetune", overrides)

    def report(info: dict) -> None:
        if should_stop is not None and should_stop():
            raise FinetuneCancelled("fine-tuning cancelled")
        if progress is not None:
            progress(info)

    if should_stop is not None and should_stop():
        raise FinetuneCancelled("fine-tuning cancelled")
    trainer = Trainer(recipe, out, device=device, progress=report, should_stop=should_stop)
    # only the corrected images (the recipe's store spec takes them all)
    trainer.train_set = StoreDataset(store, rule=rule, seed=recipe.seed, ids=ids,
                                     augment=build_augment(recipe.augment, 256))  # fmt: skip
    trainer.fit()
    if not (Path(out) / LATEST).is_file():
        raise FinetuneCancelled("fine-tuning stopped before the first epoch ended")
    return resolve_model(out)


class _Relay(QObject):
    """Carries the trainer's progress from the worker thread to the GUI thread."""

    progress = Signal(dict)


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
        self.last_model: Path | None = None
        self.history: list[dict] = []
        self._relay = _Relay(self)  # parented: destroyed with the widget, never after Qt
        self._relay.progress.connect(self._on_progress)

        self.store_edit = QLineEdit()
        self.store_edit.setPlaceholderText("labels.zarr (the Predict widget's store)")
        self.browse_store_button = QPushButton("Browse...")
        self.model_edit = QLineEdit()
        self.model_edit.setPlaceholderText("the Predict widget's model")
        self.rule_combo = QComboBox()
        self.rule_combo.setEditable(True)
        self.rule_combo.addItems(["R2", "R3", "mosaic", "random"])
        self.rule_combo.setToolTip("makes palettes for images stored without one; images "
                                   "saved from napari train under their own palette")  # fmt: skip
        self.epochs_spin = QSpinBox()
        self.epochs_spin.setRange(1, 1000)
        self.epochs_spin.setValue(2)
        self.lr_spin = QDoubleSpinBox()
        self.lr_spin.setDecimals(6)
        self.lr_spin.setRange(1e-6, 1.0)
        self.lr_spin.setSingleStep(1e-5)
        self.lr_spin.setValue(1e-4)
        self.lr_spin.setToolTip("learning rate of the decoder and task representation; "
                                "the encoder's is a tenth of it")  # fmt: skip
        self.steps_spin = QSpinBox()
        self.steps_spin.setRange(0, 100_000)
        self.steps_spin.setValue(0)
        self.steps_spin.setSpecialValueText("all")
        self.steps_spin.setToolTip("at most this many steps per epoch (all = every image once)")
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

    def inputs(self) -> dict:
        pw = self.predict_widget()
        store = self.store_edit.text().strip()
        if not store and pw is not None:
            image = pw.image_layer
            store = pw.store_edit.text().strip() or (
                image is not None and image.metadata.get("composite_tasking", {}).get("store")) or ""
        if not store:
            raise ValueError("give the label store holding the corrections (Store)")
        model = self.model_edit.text().strip() or (pw.model_spec()[0] if pw else "default")
        device = pw.model_spec()[1] if pw else "auto"
        out = self.out_edit.text().strip()
        if not out:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            out = str(Path(store).with_name(f"{Path(store).stem}-finetune-{stamp}"))
        return {"store": store, "model": model, "out": out, "device": device,
                "rule": self.rule_combo.currentText().strip() or "R2",
                "epochs": self.epochs_spin.value(), "lr": self.lr_spin.value(),
                "max_steps_per_epoch": self.steps_spin.value() or None}  # fmt: skip

    # ---------------------------------------------------------------------- running

    def start(self, **overrides):
        """Fine-tune in a thread_worker; returns the worker, or None after an error."""
        if self.busy:
            return None
        try:
            args = {**self.inputs(), **overrides}
        except _USER_ERRORS as e:
            show_error(f"Fine-tune: {e}")
            return None
        from napari.qt.threading import create_worker
        from napari.utils import progress

        self._stop.clear()
        self.history = []
        total = args["epochs"]
        self._pbar = progress(total=total, desc="CompositeTasking: fine-tune")
        self.progress_bar.setRange(0, 0)  # busy until the first step says how many
        worker = create_worker(run_finetune, **args, progress=self._relay.progress.emit,
                               should_stop=self._stop.is_set,
                               _start_thread=False, _ignore_errors=True)  # fmt: skip
        self._worker = worker
        self._args = args
        worker.returned.connect(self._on_returned)
        worker.errored.connect(self._on_errored)
        worker.finished.connect(self._on_finished)
        self.start_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.status_label.setText(f"Fine-tuning {args['model']} on the corrected images of "
                                  f"{args['store']} -> {args['out']}")  # fmt: skip
        worker.start()
        return worker

    def cancel(self) -> None:
        """Stop at the next training step."""
        if self._worker is not None:
            self._stop.set()
            self.status_label.setText("Cancelling at the next step...")

    def _on_progress(self, info: dict) -> None:
        if "epoch_done" in info:
            rec = info["epoch_done"]
            self.history.append(rec)
            if self._pbar is not None:
                self._pbar.update(1)
            return
        epochs, steps = int(info["epochs"]), int(info["steps"])
        self.progress_bar.setRange(0, max(1, epochs * steps))
        self.progress_bar.setValue((int(info["epoch"]) - 1) * steps + int(info["step"]))
        loss = info.get("loss", {})
        parts = ", ".join(f"{k} {v:.3g}" for k, v in loss.items() if k != "total")
        self.loss_label.setText(f"Epoch {info['epoch']}/{epochs}, step {info['step']}/{steps}: "
                                f"loss {loss.get('total', float('nan')):.4g} ({parts})")  # fmt: skip
        if self._pbar is not None:
            self._pbar.set_description(f"CompositeTasking: fine-tune, loss {loss.get('total', 0):.3g}")

    def _on_returned(self, model_path: Path) -> None:
        self.last_model = Path(model_path)
        self.status_label.setText(f"New model: {model_path}")
        show_info(f"Fine-tuned model saved: {model_path}")
        pw = self.predict_widget()
        if pw is not None:
            pw.set_model(model_path, self._args.get("device"))
            if pw.image_layer is not None and pw.palette_layer is not None:
                pw.start_predict()
            else:
                pw.start_load_model()

    def _on_errored(self, e: Exception) -> None:
        if isinstance(e, FinetuneCancelled):
            self.status_label.setText(f"Cancelled; the model in use is unchanged. {e}.")
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
        self.start_button.setEnabled(True)
        self.cancel_button.setEnabled(False)

    def _on_browse_store(self) -> None:  # pragma: no cover - needs a person
        path = QFileDialog.getExistingDirectory(self, "Choose a label store (.zarr folder)")
        if path:
            self.store_edit.setText(path)

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt name
        self.cancel()
        super().closeEvent(event)
