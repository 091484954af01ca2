"""The "Fine-tune" dock widget: fine-tune the current model on the corrected images of a
label store, and the palette network on the palettes a person saved, in the background;
then load the new checkpoints and re-predict.

The training is the core's (:class:`composite_tasking.training.trainer.Trainer` with the
built-in ``finetune`` recipe); this widget only chooses its inputs and shows its
progress. The plain functions (no Qt; tests and scripts call them directly):

- :func:`run_finetune`: the CTN on the images of the store whose provenance says a
  person corrected some task, or that hold ground truth (:func:`corrected_ids`: the
  core's :func:`composite_tasking.datasets.training_ids`, as ``ctn finetune`` chooses),
  ``epochs`` epochs into a run folder; returns the new checkpoint folder. Each image
  trains under its stored palette (the rule only makes palettes for images stored
  without one); a stored palette made under another rule than the chosen one is
  refused (:func:`composite_tasking.datasets.check_stored_palettes`).
- :func:`run_finetune_palette`: the palette network (kind ``palette``) on the palettes
  a person chose (:func:`palette_ids`), with the same recipe, epochs, learning rate and
  batch size; the stored palette is its *target* (cross-entropy), so "Fill palette"
  with ``palette network`` then follows the rule the person demonstrated.
- :func:`run_finetune_all`: the worker's one job: the CTN into ``OUT``, then (when a
  palette network is given) the palette network into ``OUT/palette``
  (:data:`PALETTE_SUBDIR`); returns a :class:`FinetuneResult` with both checkpoints.

Which palettes teach the palette network: images that hold a stored palette *and*
were saved from napari (the image attribute ``"napari"`` that :mod:`.store_io`'s writer
adds) or have a task with provenance ``corrected``. The store cannot say whether a
stroke changed a palette: ``palette_origin`` records only how the palette was first
filled (``palette network``, ``rule R2 on predicted semantics``, ``napari`` for one
made by hand), and strokes after a fill leave it as it was. A palette saved from napari
is the one a person looked at, edited or accepted, and kept for that image: that is
the demonstration. Palettes written by ``ctn label`` (no ``"napari"`` attribute, no
correction) are a rule's or the network's own output and are left out, and so are
images with no stored palette (the rule would make theirs: the network would learn the
rule, not the person). Every pixel of a chosen palette is a target, "no task" included
(only augmentation padding is ignored).

Progress (network, epoch, step, loss) reaches the GUI thread through a Qt signal;
napari's progress bar and the widget's own bar follow it, and the labels say which
network trains. **Cancel** stops at the next step of either network: the epochs
finished before stay saved in the run folder (a CTN finished before a cancel in the
palette stage too), and the models in use are left as they were.

When the Predict widget's palette network (its *Palette network* field: ``default`` =
the bundled one, or a checkpoint / run folder) cannot be loaded, the widget says so
and fine-tunes the CTN only.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

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

from ._compat import prevent_llvm_clash
from .predict_widget import _model_path_text, resolve_path_text

if TYPE_CHECKING:
    import napari

__all__ = ["FinetuneWidget", "FinetuneResult", "FinetuneCancelled", "run_finetune",
           "run_finetune_palette", "run_finetune_all", "corrected_ids", "palette_ids",
           "resolve_palette_model", "PALETTE_SUBDIR", "NETWORK_NAMES"]  # fmt: skip

_USER_ERRORS = (ValueError, KeyError, TypeError, OSError, FileExistsError)

#: the palette network's run folder inside the fine-tune run folder
PALETTE_SUBDIR = "palette"
#: the ``"network"`` of progress dicts -> the words the widget shows
NETWORK_NAMES = {"ctn": "CTN", "palette": "palette network"}


class FinetuneCancelled(Exception):
    """Raised from the progress callback to stop training at the next step.

    ``ctn``: the CTN checkpoint already fine-tuned when the cancel came during the
    palette network's stage (saved in the run folder, not put in use), else None.
    """

    def __init__(self, message: str = "fine-tuning cancelled", ctn: Path | None = None):
        super().__init__(message)
        self.ctn = ctn


@dataclass
class FinetuneResult:
    """What :func:`run_finetune_all` made."""

    #: the fine-tuned CTN's checkpoint folder
    ctn: Path
    #: the fine-tuned palette network's checkpoint folder; None when none was asked for
    #: or the store holds no palette to learn from (``palette_note`` says which)
    palette: Path | None = None
    palette_note: str | None = None


def corrected_ids(store_path: str | Path) -> list[str]:
    """Images of a store with at least one task a person corrected or with ground truth
    (:func:`composite_tasking.datasets.training_ids`; empty when there is none)."""
    from ..datasets import training_ids

    return training_ids(store_path, "corrected", required=False)


def palette_ids(store_path: str | Path) -> list[str]:
    """Images of a store whose stored palette a person chose: the image holds a palette
    and was saved from napari (the ``"napari"`` attribute of :mod:`.store_io`) or has a
    corrected task. See the module docstring for why not ``palette_origin``."""
    from ..store import LabelStore
    from .store_io import NAPARI_ATTR

    store = LabelStore(store_path, mode="r")
    out = []
    for i in store.ids():
        attrs = store.image_attrs(i)
        if "palette" not in attrs.get("labels", []):
            continue
        if NAPARI_ATTR in attrs or "corrected" in attrs.get("provenance", {}).values():
            out.append(i)
    return out


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


def _palette_dataset_class():
    """A :class:`~composite_tasking.datasets.StoreDataset` whose every image pixel counts
    for the palette network's loss.

    The palette loss ignores pixels of palette 0 ("no task") where ``semseg`` is ignore,
    so that augmentation padding does not teach "no task". An image saved from napari
    has ``semseg`` only where its palette asks for semseg, which would hide every "no
    task" pixel the person left or painted; the palette network needs no semantic
    labels, so ``semseg`` becomes 0 on the whole image (ignore then marks the padding
    alone).
    """
    from ..datasets import StoreDataset

    class PaletteTargets(StoreDataset):
        def sample(self, index: int) -> dict:
            s = super().sample(index)
            s["semseg"] = np.zeros(np.asarray(s["image"]).shape[:2], np.uint8)
            return s

    return PaletteTargets


def _stop_requested(should_stop: Callable[[], bool] | None) -> bool:
    return should_stop is not None and bool(should_stop())


def _train(network: str, store: str | Path, init: Path, out: str | Path, ids: list[str], *,
           rule: str, epochs: int, lr: float, batch_size: int,
           max_steps_per_epoch: int | None, device: str,
           progress: Callable[[dict], None] | None,
           should_stop: Callable[[], bool] | None) -> Path:  # fmt: skip
    """Fine-tune the checkpoint ``init`` on the images ``ids`` of ``store`` with the
    built-in ``finetune`` recipe (the Trainer sees from the checkpoint's kind whether it
    trains a CTN or a palette network); returns the new checkpoint folder."""
    from ..datasets import StoreDataset
    from ..inference import resolve_model
    from ..training.recipe import builtin_recipe
    from ..training.trainer import LATEST, Trainer, build_augment

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
        if _stop_requested(should_stop):
            raise FinetuneCancelled(f"fine-tuning of the {NETWORK_NAMES[network]} cancelled")
        if progress is not None:
            progress({**info, "network": network})

    if _stop_requested(should_stop):
        raise FinetuneCancelled(f"fine-tuning of the {NETWORK_NAMES[network]} cancelled")
    if progress is not None:
        progress({"network": network, "stage": "start", "images": len(ids), "out": str(out)})
    # only the chosen images; the Trainer checks their stored palettes against the rule
    dataset = StoreDataset if network == "ctn" else _palette_dataset_class()
    train_set = dataset(store, rule=rule, seed=recipe.seed, ids=ids,
                        augment=build_augment(recipe.augment, 256))  # fmt: skip
    trainer = Trainer(recipe, out, device=device, progress=report, should_stop=should_stop,
                      train_set=train_set)  # fmt: skip
    trainer.fit()
    if trainer.epoch < recipe.epochs:  # the Trainer's own should_stop ended it early
        done = f"; {trainer.epoch} finished epoch(s) stay in {out}" if trainer.epoch else ""
        raise FinetuneCancelled(f"fine-tuning of the {NETWORK_NAMES[network]} cancelled{done}")
    if not (Path(out) / LATEST).is_file():
        raise FinetuneCancelled("fine-tuning stopped before the first epoch ended")
    return resolve_model(out)


def run_finetune(store: str | Path, model: str | Path, out: str | Path, *, rule: str = "R2",
                 epochs: int = 2, lr: float = 1e-4, batch_size: int = 4,
                 max_steps_per_epoch: int | None = None, device: str = "auto",
                 progress: Callable[[dict], None] | None = None,
                 should_stop: Callable[[], bool] | None = None) -> Path:  # fmt: skip
    """Fine-tune the CTN ``model`` on the corrected images of ``store`` into the run
    folder ``out``; returns the new checkpoint folder. No Qt, no napari.

    ``lr`` is the decoder's learning rate (the encoder's is a tenth, as in the recipe);
    ``progress`` gets the trainer's dicts (``{"epoch", "epochs", "step", "steps",
    "loss"}`` per step, ``{"epoch_done": record}`` per epoch), each with
    ``"network": "ctn"``, and one ``{"network", "stage": "start", "images", "out"}``
    first; ``should_stop`` is asked before every step, and a True stops the run
    (:class:`FinetuneCancelled`).
    """
    prevent_llvm_clash()
    from ..inference import resolve_model

    ids = corrected_ids(store)
    if not ids:
        raise ValueError(f"label store {store} holds no corrected image: correct some "
                         "pseudo-labels and save them to the store first")  # fmt: skip
    return _train("ctn", store, resolve_model(model), out, ids, rule=rule, epochs=epochs, lr=lr,
                  batch_size=batch_size, max_steps_per_epoch=max_steps_per_epoch,
                  device=device, progress=progress, should_stop=should_stop)  # fmt: skip


def run_finetune_palette(store: str | Path, palette_model: str | Path, out: str | Path, *,
                         ids: list[str] | None = None, rule: str = "R2", epochs: int = 2,
                         lr: float = 1e-4, batch_size: int = 4,
                         max_steps_per_epoch: int | None = None, device: str = "auto",
                         progress: Callable[[dict], None] | None = None,
                         should_stop: Callable[[], bool] | None = None) -> Path:  # fmt: skip
    """Fine-tune the palette network ``palette_model`` (see
    :func:`resolve_palette_model`) on the palettes a person chose in ``store``
    (:func:`palette_ids`, or ``ids``) into the run folder ``out``; returns the new
    checkpoint folder (kind ``palette``). Progress and stop as :func:`run_finetune`,
    with ``"network": "palette"``."""
    prevent_llvm_clash()
    init = resolve_palette_model(palette_model)
    ids = palette_ids(store) if ids is None else list(ids)
    if not ids:
        raise ValueError(f"label store {store} holds no palette saved from napari (nor with "
                         "a corrected task) to teach the palette network")  # fmt: skip
    return _train("palette", store, init, out, ids, rule=rule, epochs=epochs, lr=lr,
                  batch_size=batch_size, max_steps_per_epoch=max_steps_per_epoch,
                  device=device, progress=progress, should_stop=should_stop)  # fmt: skip


def run_finetune_all(store: str | Path, model: str | Path, out: str | Path, *,
                     palette_model: str | Path | None = None, rule: str = "R2",
                     epochs: int = 2, lr: float = 1e-4, batch_size: int = 4,
                     max_steps_per_epoch: int | None = None, device: str = "auto",
                     progress: Callable[[dict], None] | None = None,
                     should_stop: Callable[[], bool] | None = None) -> FinetuneResult:  # fmt: skip
    """The worker's job: the CTN (:func:`run_finetune`) into ``out``, then, when
    ``palette_model`` is given (None: skip), the palette network
    (:func:`run_finetune_palette`) into ``out/palette`` with the same settings.

    A palette model that cannot be loaded raises before anything trains; a store with
    no palette to learn from trains the CTN only (``palette_note`` says so). A cancel
    during the palette stage raises :class:`FinetuneCancelled` with ``ctn`` set.
    """
    prevent_llvm_clash()
    settings = {"rule": rule, "epochs": epochs, "lr": lr, "batch_size": batch_size,
                "max_steps_per_epoch": max_steps_per_epoch, "device": device,
                "progress": progress, "should_stop": should_stop}  # fmt: skip
    pal_init, pal_ids, note = None, [], None
    if palette_model is not None:
        pal_init = resolve_palette_model(palette_model)  # fail before anything trains
        pal_ids = palette_ids(store)
        if not pal_ids:
            note = (f"label store {store} holds no palette saved from napari (nor with a "
                    "corrected task): the palette network was not fine-tuned")  # fmt: skip
    ctn = run_finetune(store, model, out, **settings)
    if pal_init is None or not pal_ids:
        return FinetuneResult(ctn, None, note)
    try:
        palette = run_finetune_palette(store, pal_init, Path(out) / PALETTE_SUBDIR, ids=pal_ids,
                                       **settings)  # fmt: skip
    except FinetuneCancelled as e:
        raise FinetuneCancelled(f"{e} (the fine-tuned CTN is saved: {ctn})", ctn=ctn) from e
    return FinetuneResult(ctn, palette)


class _Relay(QObject):
    """Carries the trainer's progress from the worker thread to the GUI thread."""

    progress = Signal(dict)


#: the text of the check box that adds the palette network's fine-tune
PALETTE_CHECK_TEXT = ("Also teach the palette network (fill from 'palette network' follows the "
                      "edited palettes)")


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
        self.palette_check = QCheckBox(PALETTE_CHECK_TEXT)
        self.palette_check.setToolTip(
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
            store = pw.store_edit.text().strip() or (
                image is not None and image.metadata.get("composite_tasking", {}).get("store")) or ""
        if not store:
            raise ValueError("give the label store holding the corrections (Store)")
        store = resolve_path_text(store)  # "~", and relative to napari's current folder
        model = _model_path_text(self.model_edit.text()) if self.model_edit.text().strip() else (
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
                "rule": self.rule_combo.currentText().strip() or "R2",
                "epochs": self.epochs_spin.value(), "lr": self.lr_spin.value(),
                "max_steps_per_epoch": self.steps_spin.value() or None}  # fmt: skip

    # ---------------------------------------------------------------------- running

    def start(self, **overrides):
        """Fine-tune in a thread_worker; returns the worker, or None after an error."""
        if self.busy:
            return None
        problem = self.refresh_palette_default()
        try:
            args = {**self.inputs(), **overrides}
        except _USER_ERRORS as e:
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
        worker = create_worker(run_finetune_all, **args, progress=self._relay.progress.emit,
                               should_stop=self._stop.is_set,
                               _start_thread=False, _ignore_errors=True)  # fmt: skip
        self._worker = worker
        self._args = args
        worker.returned.connect(self._on_returned)
        worker.errored.connect(self._on_errored)
        worker.finished.connect(self._on_finished)
        self.start_button.setEnabled(False)
        self.palette_check.setEnabled(False)
        self.cancel_button.setEnabled(True)
        what = "the CTN and the palette network" if networks == 2 else args["model"]
        self.status_label.setText(f"Fine-tuning {what} on the corrected images of "
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
                kind = "corrected or ground-truth image(s)" if network == "ctn" else "saved palette(s)"
                self.status_label.setText(f"Fine-tuning the {name} on {info.get('images')} "
                                          f"{kind} -> {info.get('out')}")  # fmt: skip
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
        self.last_model = Path(result.ctn)
        self.last_palette_model = Path(result.palette) if result.palette is not None else None
        saved = f"model saved: {result.ctn}"
        if result.palette is not None:
            saved += f"; palette network saved: {result.palette}"
        elif result.palette_note:
            saved += f". {result.palette_note[0].upper()}{result.palette_note[1:]}."
        self.status_label.setText(f"Fine-tuned {saved}")
        show_info(f"Fine-tuned {saved}")
        pw = self.predict_widget()
        if pw is not None:
            pw.set_model(result.ctn, self._args.get("device"), palette_model=result.palette)
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
