"""The "Fine-tune" widget: a few steps on a store's corrections, in a worker, then the new
model is in use. Run under Xvfb: ``xvfb-run -a python -m pytest tests/test_napari_finetune.py``.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

# the model stack before any canvas (see composite_tasking._napari._compat)
import composite_tasking.model  # noqa: E402, F401

from composite_tasking._napari import finetune_widget as fwm  # noqa: E402
from composite_tasking._napari import predict_widget as pwm  # noqa: E402
from composite_tasking._napari.finetune_widget import (  # noqa: E402
    FinetuneWidget,
    corrected_ids,
    run_finetune,
)
from composite_tasking._napari.palette_layer import make_palette_layer  # noqa: E402
from composite_tasking._napari.predict_widget import PredictWidget  # noqa: E402
from composite_tasking._napari.task_layers import layer_meta  # noqa: E402
from composite_tasking.tasks import IGNORE, get_task  # noqa: E402

pytestmark = [pytest.mark.gui, pytest.mark.slow]

PLUGIN = "napari-composite-tasking"


@pytest.fixture
def errors(monkeypatch):
    shown: list[str] = []
    monkeypatch.setattr(pwm, "show_error", shown.append)
    monkeypatch.setattr(fwm, "show_error", shown.append)
    return shown


@pytest.fixture
def corrected_store(make_napari_viewer, tiny_checkpoint, tmp_path, errors):
    """A viewer whose prediction was corrected and saved to a store (64 px scene)."""
    from composite_tasking.palette import load_rule
    from composite_tasking.synthetic import generate

    viewer = make_napari_viewer()
    s = generate(424242, 3, 64)
    image = viewer.add_image(s["image"], rgb=True, name="scene")
    pal = load_rule("R2").palette(semantics=s["semseg"])
    palette = viewer.add_layer(make_palette_layer(pal.shape, pal, like=image))
    widget = PredictWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Predict")
    widget.set_model(tiny_checkpoint, "cpu")
    layers = widget.predict(image, palette)
    semseg = layers[("semseg", "label")]
    idx = np.nonzero(np.asarray(semseg.data) != IGNORE)
    semseg.data_setitem((idx[0][:30], idx[1][:30]), get_task("semseg").classes.index("cat"))
    path = tmp_path / "corrected.zarr"
    assert widget.save(path) == "scene"
    return viewer, widget, path


def test_run_finetune_plain(corrected_store, tiny_checkpoint, tmp_path):
    _viewer, _widget, store = corrected_store
    assert corrected_ids(store) == ["scene"]
    seen: list[dict] = []
    new = run_finetune(store, tiny_checkpoint, tmp_path / "run", epochs=1, max_steps_per_epoch=1,
                       device="cpu", progress=seen.append)  # fmt: skip
    from composite_tasking.model import read_checkpoint_info

    assert new.parent.parent == tmp_path / "run"
    assert read_checkpoint_info(new).sha256 != read_checkpoint_info(tiny_checkpoint).sha256
    assert any("loss" in p for p in seen) and any("epoch_done" in p for p in seen)


def test_finetune_widget_runs_in_a_worker_and_swaps_the_model(corrected_store, qtbot, errors,
                                                              tmp_path):  # fmt: skip
    viewer, predict, store = corrected_store
    old_sha = predict.predictor.model_sha256
    widget = FinetuneWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Fine-tune")
    assert widget.predict_widget() is predict  # found among the docked widgets
    widget.epochs_spin.setValue(1)
    widget.steps_spin.setValue(1)
    widget.out_edit.setText(str(tmp_path / "ft-run"))

    worker = widget.start()
    assert worker is not None and widget.busy and widget.cancel_button.isEnabled()
    qtbot.waitUntil(lambda: not widget.busy, timeout=300_000)
    qtbot.waitUntil(lambda: not predict.busy, timeout=120_000)  # the re-prediction

    assert errors == []
    assert widget.last_model is not None and widget.last_model.is_relative_to(tmp_path / "ft-run")
    assert widget.loss_label.text().startswith("Epoch 1/1")
    assert len(widget.history) == 1
    assert predict.predictor.model_sha256 != old_sha  # the new model is in use
    assert predict.model_spec()[0] == str(widget.last_model)
    semseg = next(ly for ly in viewer.layers if layer_meta(ly).get("task") == "semseg")
    assert layer_meta(semseg)["model_sha256"] == predict.predictor.model_sha256  # re-predicted


def test_finetune_cancel_keeps_the_model(corrected_store, qtbot, errors, tmp_path):
    viewer, predict, store = corrected_store
    old = predict.predictor
    widget = FinetuneWidget(viewer, predict_widget=predict)
    viewer.window.add_dock_widget(widget, name="Fine-tune")
    widget.store_edit.setText(str(store))
    widget.out_edit.setText(str(tmp_path / "cancelled"))
    worker = widget.start()
    widget.cancel()
    qtbot.waitUntil(lambda: not widget.busy, timeout=300_000)
    assert errors == []
    assert "Cancelled" in widget.status_label.text()
    assert widget.last_model is None and predict.predictor is old


def test_finetune_without_corrections_says_so(make_napari_viewer, tiny_checkpoint, tmp_path,
                                              qtbot, errors):  # fmt: skip
    from composite_tasking.store import LabelStore

    store = tmp_path / "plain.zarr"
    with LabelStore(store, mode="a") as st:
        st.write_sample("a", {"image": np.zeros((32, 32, 3), np.uint8)}, provenance={})
    viewer = make_napari_viewer()
    widget = FinetuneWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Fine-tune")
    widget.store_edit.setText(str(store))
    widget.model_edit.setText(str(tiny_checkpoint))
    widget.start()
    qtbot.waitUntil(lambda: not widget.busy, timeout=60_000)
    assert errors and "no corrected image" in errors[-1]
