"""The "Fine-tune" widget: a few steps on a store's corrections, in a worker, then the new
model is in use. Run under Xvfb: ``xvfb-run -a python -m pytest tests/test_napari_finetune.py``.
"""

from __future__ import annotations

from pathlib import Path

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

    import time

    from qtpy.QtCore import QTimer

    from _gui import load_factor, wait_bound

    load = load_factor()  # the machine's pace: the bound follows its load
    ticks: list[float] = []  # the GUI thread's turns (a 10 ms timer): the longest gap is reported
    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start()
    worker = widget.start()
    assert worker is not None and widget.busy and widget.cancel_button.isEnabled()
    qtbot.waitUntil(lambda: not widget.busy, timeout=300_000)
    timer.stop()
    gaps = np.diff(ticks) if len(ticks) > 1 else np.zeros(1)
    print(f"\nlongest GUI-thread gap during the fine-tune: {gaps.max() * 1000:.0f} ms "
          f"(median {np.median(gaps) * 1000:.0f} ms, {len(ticks)} ticks; load factor {load:.1f})")  # fmt: skip
    qtbot.waitUntil(lambda: not predict.busy, timeout=120_000)  # the re-prediction

    assert errors == []
    assert gaps.max() < wait_bound(2.0, load)  # grossly: this 2-core CI machine is busy
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
    assert errors and "none with labels a person corrected" in errors[-1]
    assert "none with labels a person corrected" in widget.status_label.text()  # not only a toast


# ------------------------------------------------------------------ the palette network


@pytest.fixture(scope="session")
def tiny_palette_checkpoint(tmp_path_factory):
    """A random ResNet-18 palette network checkpoint on disk (made once per session)."""
    import torch

    from composite_tasking.model import build_model, save_checkpoint

    torch.manual_seed(1)
    return save_checkpoint(build_model("palette-resnet18").eval(),
                           tmp_path_factory.mktemp("ckpt") / "palette")  # fmt: skip


def test_palette_ids_take_the_palettes_a_person_saved(corrected_store, tiny_checkpoint,
                                                      tiny_palette_checkpoint):  # fmt: skip
    from composite_tasking.model import CheckpointError
    from composite_tasking.store import LabelStore

    _viewer, _widget, store = corrected_store
    with LabelStore(store, mode="a") as st:  # as `ctn label` writes: a rule's palette
        pal = np.ones((32, 32), np.uint8)
        st.write_sample("labelled", {"image": np.zeros((32, 32, 3), np.uint8), "palette": pal,
                                     "semseg": np.zeros((32, 32), np.uint8)},
                        provenance={"semseg": "pseudo"}, attrs={"palette_origin": "rule R2"})  # fmt: skip
        st.write_sample("bare", {"image": np.zeros((32, 32, 3), np.uint8)}, provenance={})
    assert fwm.palette_ids(store) == ["scene"]  # saved from napari, with its palette
    # every image pixel is a palette target, "no task" too (semseg only marks real pixels)
    from composite_tasking.training.finetune import palette_dataset

    item = palette_dataset(store, ["scene"], None)[0]
    assert (np.asarray(item["semseg"]) == 0).all()
    assert np.array_equal(np.asarray(item["palette"]), LabelStore(store).read_sample("scene").palette)
    assert fwm.resolve_palette_model(tiny_palette_checkpoint) == tiny_palette_checkpoint
    with pytest.raises(CheckpointError, match="not a palette network"):
        fwm.resolve_palette_model(tiny_checkpoint)


def test_run_finetune_all_teaches_the_ctn_and_the_palette_network(
        corrected_store, tiny_checkpoint, tiny_palette_checkpoint, tmp_path):  # fmt: skip
    import torch

    from composite_tasking.model import load_checkpoint, read_checkpoint_info

    _viewer, _widget, store = corrected_store
    seen: list[dict] = []
    result = fwm.run_finetune_all(store, tiny_checkpoint, tmp_path / "run",
                                  palette_model=tiny_palette_checkpoint, epochs=1,
                                  max_steps_per_epoch=1, device="cpu", progress=seen.append)  # fmt: skip
    assert result.ctn.parent.parent == tmp_path / "run"
    assert result.palette.parent.parent == tmp_path / "run" / fwm.PALETTE_SUBDIR
    ctn, pal = read_checkpoint_info(result.ctn), read_checkpoint_info(result.palette)
    assert ctn.config.kind == "ctn" and pal.config.kind == "palette"
    assert ctn.sha256 != read_checkpoint_info(tiny_checkpoint).sha256
    assert pal.sha256 != read_checkpoint_info(tiny_palette_checkpoint).sha256
    before, _ = load_checkpoint(tiny_palette_checkpoint)
    after, _ = load_checkpoint(result.palette)
    changed = [k for k, v in before.state_dict().items()
               if v.is_floating_point() and not torch.equal(v, after.state_dict()[k])]  # fmt: skip
    assert any(k.endswith("weight") for k in changed)  # trained, not only BN statistics
    assert [p["network"] for p in seen if p.get("stage") == "start"] == ["ctn", "palette"]
    assert {p["network"] for p in seen if "loss" in p} == {"ctn", "palette"}
    assert {p["network"] for p in seen if "epoch_done" in p} == {"ctn", "palette"}
    assert next(p for p in seen if "loss" in p and p["network"] == "palette")["loss"].keys() \
        == {"palette", "total"}  # fmt: skip


def test_finetune_widget_teaches_the_palette_network_too(corrected_store, tiny_palette_checkpoint,
                                                         qtbot, errors, tmp_path):  # fmt: skip
    from composite_tasking.model import read_checkpoint_info

    viewer, predict, store = corrected_store
    predict.palette_model_edit.setText(str(tiny_palette_checkpoint))
    old_sha = predict.predictor.model_sha256
    widget = FinetuneWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Fine-tune")
    widget.epochs_spin.setValue(1)
    widget.steps_spin.setValue(1)
    widget.out_edit.setText(str(tmp_path / "ft-run"))

    worker = widget.start()
    assert worker is not None
    assert widget.palette_check.isChecked()  # on by default: the palette network resolves
    assert not widget.palette_check.isEnabled()
    qtbot.waitUntil(lambda: not widget.busy, timeout=300_000)
    qtbot.waitUntil(lambda: not predict.busy, timeout=120_000)  # the re-prediction

    assert errors == []
    new_palette = widget.last_palette_model
    assert new_palette is not None and new_palette.is_relative_to(tmp_path / "ft-run" / "palette")
    assert read_checkpoint_info(new_palette).config.kind == "palette"
    assert len(widget.history) == 1 and len(widget.palette_history) == 1
    assert "(palette network)" in widget.loss_label.text()
    assert "palette network: fine-tuned on 1 image(s)" in widget.status_label.text()
    assert "CTN: fine-tuned on 1 image(s)" in widget.status_label.text()
    # both are in use: the CTN re-predicted, the palette network fills next
    assert predict.model_spec()[0] == str(widget.last_model)
    assert predict._full_spec()[2] == str(new_palette)
    assert predict.predictor.model_sha256 != old_sha
    predict.live_check.setChecked(False)  # no re-predict after the fill
    filled = predict.fill_palette(pwm.PALETTE_NETWORK)
    assert filled is not None and errors == []
    assert predict.predictor.palette_info.path == new_palette
    assert predict.predictor.palette_info.sha256 == read_checkpoint_info(new_palette).sha256


def test_finetune_cancel_in_the_palette_stage_keeps_both_models(
        corrected_store, tiny_palette_checkpoint, qtbot, errors, tmp_path):  # fmt: skip
    from qtpy.QtCore import Qt

    viewer, predict, store = corrected_store
    predict.palette_model_edit.setText(str(tiny_palette_checkpoint))
    old, old_spec = predict.predictor, predict._full_spec()
    widget = FinetuneWidget(viewer, predict_widget=predict)
    viewer.window.add_dock_widget(widget, name="Fine-tune")
    assert widget.palette_check.isChecked()
    widget.epochs_spin.setValue(1)
    widget.steps_spin.setValue(1)
    widget.out_edit.setText(str(tmp_path / "cancelled"))

    def stop_when_the_palette_stage_starts(info: dict) -> None:  # in the worker's thread
        if info.get("network") == "palette":
            widget._stop.set()  # what Cancel sets

    widget._relay.progress.connect(stop_when_the_palette_stage_starts, Qt.DirectConnection)
    widget.start()
    qtbot.waitUntil(lambda: not widget.busy, timeout=300_000)
    assert errors == []
    text = widget.status_label.text()
    assert "Cancelled" in text and "models in use are unchanged" in text
    assert "palette network" in text and "fine-tuned CTN is saved" in text
    assert len(widget.history) == 1 and widget.palette_history == []
    assert widget.last_model is None and widget.last_palette_model is None
    assert predict.predictor is old and predict._full_spec() == old_spec
    assert (tmp_path / "cancelled" / "latest.json").is_file()  # the CTN's epoch stays
    assert not (tmp_path / "cancelled" / "palette" / "latest.json").exists()


def test_finetune_without_a_palette_network_trains_the_ctn_only(corrected_store, qtbot, errors,
                                                                 tmp_path, monkeypatch):  # fmt: skip
    warnings: list[str] = []
    monkeypatch.setattr(fwm, "show_warning", warnings.append)
    viewer, predict, store = corrected_store
    missing = str(tmp_path / "no-palette-network")
    predict.palette_model_edit.setText(missing)
    widget = FinetuneWidget(viewer, predict_widget=predict)
    viewer.window.add_dock_widget(widget, name="Fine-tune")
    assert not widget.palette_check.isChecked()  # off by default: it does not resolve
    assert "cannot be loaded" in widget.palette_note.text()
    assert "Only the CTN is fine-tuned" in widget.palette_note.text()
    widget.palette_check.click()  # asked for anyway
    assert widget.palette_check.isChecked()
    widget.epochs_spin.setValue(1)
    widget.steps_spin.setValue(1)
    widget.out_edit.setText(str(tmp_path / "ctn-only"))

    assert widget.start() is not None
    assert warnings and "CTN only" in warnings[-1] and "cannot be loaded" in warnings[-1]
    assert "CTN only" in widget.status_label.text()
    qtbot.waitUntil(lambda: not widget.busy, timeout=300_000)
    qtbot.waitUntil(lambda: not predict.busy, timeout=120_000)
    assert errors == []
    assert widget.last_model is not None and widget.last_palette_model is None
    assert widget.palette_history == [] and len(widget.history) == 1
    assert predict.model_spec()[0] == str(widget.last_model)
    assert predict._full_spec()[2] == missing  # unchanged
    assert not (tmp_path / "ctn-only" / "palette").exists()


# ------------------------------------------------------- the images and the run folder


def _small_store(path, entries):
    """(id, provenance, recorded rule) per image, each with a stored R2 palette."""
    from composite_tasking.palette import load_rule
    from composite_tasking.store import LabelStore
    from composite_tasking.synthetic import generate
    from composite_tasking.tasks import TASK_NAMES

    with LabelStore(path, mode="w") as st:
        for k, (image_id, prov, rule) in enumerate(entries):
            s = {t: v for t, v in generate(5, k, 32).items() if t != "meta"}
            s["palette"] = load_rule("R2").palette(semantics=s["semseg"])
            st.write_sample(image_id, s, provenance=dict.fromkeys(TASK_NAMES, prov),
                            attrs={} if rule is None else {"rule": rule})  # fmt: skip
    return path


def test_the_widget_and_ctn_finetune_choose_the_same_images(tmp_path):
    from composite_tasking.datasets import training_ids

    store = _small_store(tmp_path / "s.zarr", [("gt", "ground-truth", None), ("fixed", "corrected", "R2"),
                                               ("pseudo", "pseudo", "R2")])  # fmt: skip
    assert corrected_ids(store) == training_ids(store) == ["fixed", "gt"]
    only_pseudo = _small_store(tmp_path / "p.zarr", [("pseudo", "pseudo", "R2")])
    assert corrected_ids(only_pseudo) == []


def test_run_finetune_refuses_a_contradicting_rule_and_a_folder_that_is_not_a_run(
        make_napari_viewer, tiny_checkpoint, tmp_path, errors):  # fmt: skip
    from composite_tasking.datasets import StoreRuleError

    store = _small_store(tmp_path / "s.zarr", [("fixed", "corrected", "R2")])
    with pytest.raises(StoreRuleError, match="rule R2, not R3"):
        run_finetune(store, tiny_checkpoint, tmp_path / "r3", rule="R3", epochs=1, max_steps_per_epoch=1,
                     device="cpu")  # fmt: skip
    assert not (tmp_path / "r3").exists()
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "a.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not a run folder"):
        run_finetune(store, tiny_checkpoint, notes, epochs=1, max_steps_per_epoch=1, device="cpu")
    assert [p.name for p in notes.iterdir()] == ["a.txt"]
    # the widget's own choice of run folder (beside the store) is fine
    widget = FinetuneWidget(make_napari_viewer())
    widget.store_edit.setText(str(store))
    out = widget.inputs()["out"]
    assert not Path(out).exists() and Path(out).parent == store.parent
    new = run_finetune(store, tiny_checkpoint, out, epochs=1, max_steps_per_epoch=1, device="cpu")
    assert new.is_relative_to(out)
    assert errors == []


def test_the_widgets_paths_expand_home_and_the_current_folder(make_napari_viewer, tmp_path, monkeypatch):
    """``~`` and relative paths typed in the fields mean what they mean in a shell."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    widget = FinetuneWidget(make_napari_viewer())
    widget.store_edit.setText("~/labels.zarr")
    widget.model_edit.setText("runs/ctn")
    widget.out_edit.setText("~/runs/ft")
    got = widget.inputs()
    assert got["store"] == str(tmp_path / "home" / "labels.zarr")
    assert got["model"] == str(tmp_path / "runs" / "ctn")
    assert got["out"] == str(tmp_path / "home" / "runs" / "ft")
    widget.model_edit.setText("default")
    assert widget.inputs()["model"] == "default"


# ------------------------------------------------------- the workflow, without a rule


def test_fill_paint_predict_correct_save_finetune_needs_no_rule(make_napari_viewer, tiny_checkpoint,
                                                                qtbot, errors, tmp_path):  # fmt: skip
    """The napari workflow of issue 15: fill a palette from a rule (S:edges, Task Palette
    widget), paint strokes over it (napari's paint event, the Predict widget watching the
    palette), predict, correct a pseudo-label layer, save to a store, Fine-tune with the
    Rule box left at its default: it runs and the new model is in use.

    The code before this change kept the fill's rule on the palette through the strokes
    (nothing dropped it), the save recorded ``rule: S:edges`` on the image, and the
    widget's Rule box said R2, so the run was refused: "label store ...: 1 image(s)
    (e.g. 'scene') hold a palette made under rule S:edges, not R2, ... or give --rule
    S:edges to train under the stored palettes", a command-line flag named in a GUI,
    for a palette a person painted. Here the save records no rule and the run finishes.
    """
    from composite_tasking._napari.palette_layer import METADATA_KEY
    from composite_tasking._napari.palette_widget import TaskPaletteWidget
    from composite_tasking.store import LabelStore
    from composite_tasking.synthetic import generate

    viewer = make_napari_viewer()
    image = viewer.add_image(generate(424242, 3, 64)["image"], rgb=True, name="scene")
    palettes = TaskPaletteWidget(viewer)
    viewer.window.add_dock_widget(palettes, name="Task Palette")
    predict = PredictWidget(viewer)
    viewer.window.add_dock_widget(predict, name="Predict")
    predict.set_model(tiny_checkpoint, "cpu")
    predict.image_combo.set_current_layer(image)
    predict.live_check.setChecked(False)  # predict when asked: no debounced re-predict

    assert palettes.fill_from_rule("S:edges") is not None  # fill from a rule
    palette = palettes.palette_layer
    qtbot.waitUntil(lambda: predict.palette_layer is palette)
    assert palette.metadata[METADATA_KEY]["rule"] == "S:edges"  # the fill records its rule
    semseg_value = get_task("semseg").palette_value
    painted: list = []
    palette.events.paint.connect(painted.append)
    palette.brush_size = 12
    for coord in ((16, 16), (16, 28), (40, 40)):  # strokes: napari's own brush
        palette.paint(coord, semseg_value)
    qtbot.waitUntil(lambda: len(painted) == 3)
    assert (np.asarray(palette.data) == semseg_value).sum() > 100
    assert "rule" not in palette.metadata[METADATA_KEY]  # the person's palette now

    layers = predict.predict(image, palette)  # predict
    assert layers is not None and ("semseg", "label") in layers
    semseg = layers[("semseg", "label")]
    idx = np.nonzero(np.asarray(semseg.data) != IGNORE)
    assert len(idx[0]) > 30
    semseg.data_setitem((idx[0][:30], idx[1][:30]), get_task("semseg").classes.index("cat"))  # correct
    store = tmp_path / "workflow.zarr"
    assert predict.save(store) == "scene"  # save
    attrs = LabelStore(store, mode="r").image_attrs("scene")
    assert "rule" not in attrs and "rule_sha256" not in attrs  # the image records no rule
    assert attrs["provenance"]["semseg"] == "corrected"

    widget = FinetuneWidget(viewer, predict_widget=predict)  # fine-tune
    viewer.window.add_dock_widget(widget, name="Fine-tune")
    assert widget.rule_combo.currentText() == fwm.STORED_PALETTES and widget.rule() is None
    widget.epochs_spin.setValue(1)
    widget.steps_spin.setValue(1)
    widget.out_edit.setText(str(tmp_path / "ft-run"))
    assert widget.start() is not None
    qtbot.waitUntil(lambda: not widget.busy, timeout=300_000)
    qtbot.waitUntil(lambda: not predict.busy, timeout=120_000)  # the re-prediction
    assert errors == []  # not refused
    text = widget.status_label.text()
    assert "CTN: fine-tuned on 1 image(s)" in text and "not S:edges" not in text
    assert widget.last_model is not None and widget.last_model.is_relative_to(tmp_path / "ft-run")
    assert predict.model_spec()[0] == str(widget.last_model)
