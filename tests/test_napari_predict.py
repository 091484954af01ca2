"""The "Predict" widget in a real viewer: task layers, re-prediction, threads, latency.

Run under Xvfb: ``xvfb-run -a python -m pytest tests/test_napari_predict.py``. The model
is a tiny random CTN (ResNet-18) saved once per session: what is tested is where the
layers hold values and what changes, not what the network predicts.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

# the model stack (torch, torchvision, triton) before any canvas: triton's LLVM crashes
# when Mesa's software OpenGL has mapped its own first (see composite_tasking._napari._compat)
import composite_tasking.model  # noqa: E402, F401
from _gui import load_factor, wait_bound  # noqa: E402
from napari.layers import Image, Labels  # noqa: E402

from composite_tasking._napari import predict_jobs as pjm  # noqa: E402
from composite_tasking._napari import predict_widget as pwm  # noqa: E402
from composite_tasking._napari.palette_widget import TaskPaletteWidget  # noqa: E402
from composite_tasking._napari.predict_widget import PredictWidget  # noqa: E402
from composite_tasking._napari.task_layers import (  # noqa: E402
    corrected_mask,
    is_task_layer,
    layer_meta,
)
from composite_tasking.tasks import IGNORE, TASKS, get_task  # noqa: E402

pytestmark = pytest.mark.gui

PLUGIN = "napari-composite-tasking"


def _scene(size: int):
    from composite_tasking.synthetic import generate

    return generate(424242, 3, size)  # a person, a train, a plant, a motorbike


@pytest.fixture
def setup(make_napari_viewer, tiny_checkpoint, errors):
    """A viewer with a scene (128 px), its R2 palette (from the true semantics), and both
    widgets docked; returns a function so tests may ask for another size."""

    def make(size: int = 128):
        viewer = make_napari_viewer()
        s = _scene(size)
        image = viewer.add_image(s["image"], rgb=True, name="scene")
        sem = viewer.add_labels(s["semseg"], name="semantics")
        palette_widget = TaskPaletteWidget(viewer)
        viewer.window.add_dock_widget(palette_widget, name="Task Palette")
        palette_widget.semantic_combo.set_current_layer(sem)
        palette_widget.fill_from_rule("R2")
        widget = PredictWidget(viewer)
        viewer.window.add_dock_widget(widget, name="Predict")
        widget.set_model(tiny_checkpoint, "cpu")
        widget.image_combo.set_current_layer(image)
        return viewer, widget, image, palette_widget.palette_layer

    return make


def _task_layers(viewer):
    return [ly for ly in viewer.layers if is_task_layer(ly)]


def test_plugin_widgets_load_from_manifest(make_napari_viewer, errors):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((32, 32), np.float32))
    for name, cls in (("Task Palette", TaskPaletteWidget), ("Predict", PredictWidget)):
        _dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name)
        assert isinstance(widget, cls)
    from composite_tasking._napari.finetune_widget import FinetuneWidget

    _dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Fine-tune")
    assert isinstance(widget, FinetuneWidget)
    assert errors == []


def test_manifest_reader_writer_samples_settings():
    from npe2 import PluginManifest

    c = PluginManifest.from_distribution(PLUGIN).contributions
    assert [w.display_name for w in c.widgets] == ["Label images", "Task Palette", "Predict", "Fine-tune"]
    (reader,) = c.readers
    assert reader.filename_patterns == ["*.zarr"] and reader.accepts_directories
    (writer,) = c.writers
    assert writer.filename_extensions == [".zarr"] and "labels+" in writer.layer_types
    assert [s.key for s in c.sample_data] == ["scene-3", "scene-4", "scene-5"]
    props = c.configurations["inference"].properties
    assert props["model"].default == "default" and props["device"].default == "auto"
    assert pwm.plugin_setting("device", "?") != "?"  # read from napari's plugin settings


def test_sample_data_scene_with_semantics(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "scene-3")
    image, sem = viewer.layers
    assert isinstance(image, Image) and image.rgb and image.data.shape == (256, 256, 3)
    assert isinstance(sem, Labels) and sem.data.shape == (256, 256)
    person = get_task("semseg").classes.index("person")
    assert person in np.unique(sem.data)
    # the class colours are the paper's anchors
    np.testing.assert_allclose(sem.colormap.map(person)[:3],
                               get_task("semseg").class_colors()[person] / 255, atol=1e-6)  # fmt: skip


def test_r2_palette_predict_layers_only_inside_regions(setup, errors):
    viewer, widget, image, palette = setup(128)
    pal = np.asarray(palette.data).copy()
    asked = {t.name for t in TASKS if (pal == t.palette_value).any()}
    assert {"semseg", "parts", "edges"} <= asked

    layers = widget.predict()

    assert errors == []
    assert widget.device_label.text().startswith("Device: cpu")
    shown = {(layer_meta(ly)["task"], layer_meta(ly)["role"]) for ly in _task_layers(viewer)}
    assert set(layers) == shown
    assert {t for t, _ in shown if t} == asked  # one task per requested task, no others
    for (task, role), layer in layers.items():
        data = np.asarray(layer.data)
        if role == "confidence":
            np.testing.assert_array_equal(~np.isnan(data), pal != 0)
            continue
        region = pal == get_task(task).palette_value
        if role == "label":
            assert isinstance(layer, Labels) and data.dtype == np.uint8
            np.testing.assert_array_equal(data != IGNORE, region)
            values = np.unique(data[region])
            assert values.max() < max(get_task(task).num_classes, 2)
            # class names and the paper's colours
            assert list(layer.features["class"])[:-1] == list(get_task(task).classes)
            rgb = get_task(task).class_colors()[values[0]]
            np.testing.assert_allclose(layer.colormap.map(values[0])[:3], rgb / 255, atol=1e-6)
            assert layer.colormap.map(IGNORE)[3] == 0
        elif role == "prob":
            assert isinstance(layer, Image)
            np.testing.assert_array_equal(~np.isnan(data), region)
            assert np.nanmin(data) >= 0 and np.nanmax(data) <= 1
        elif role == "normals":
            assert isinstance(layer, Image) and layer.rgb and data.shape == (*pal.shape, 4)
            np.testing.assert_array_equal(data[..., 3] > 0, region)  # alpha: transparent outside


def test_working_resolution_predicts_smaller_and_labels_every_pixel(setup, errors):
    from composite_tasking.scale import parse_scale

    viewer, widget, image, palette = setup(128)
    pal = np.asarray(palette.data).copy()
    widget.set_scale("0.5")
    layers = widget.predict()
    predictor = widget.last_result.predictor
    assert predictor.scale == parse_scale("0.5") and predictor.working_shape((128, 128)) == (64, 64)
    for (task, role), layer in layers.items():
        if role == "label":  # at the image's size, exactly where the palette asks
            data = np.asarray(layer.data)
            np.testing.assert_array_equal(data != IGNORE, pal == get_task(task).palette_value)
    assert widget.last_result.prediction.working[0].shape == (64, 64)
    # another working resolution: the loaded model takes it (no reload)
    widget.set_scale("none")
    widget.predict()
    assert widget.last_result.predictor is predictor and predictor.scale == parse_scale("none")
    assert widget.last_result.prediction.working is None
    # a wrong entry says why, in the widget
    widget.set_scale("huge")
    assert "'huge'" in widget.model_status.text()
    assert predictor.scale == parse_scale("none")
    widget.set_scale("auto")
    assert "'huge'" not in widget.model_status.text()
    assert errors == []


def test_rerun_updates_layers_in_place_outside_the_undo_history(setup, errors):
    viewer, widget, image, palette = setup(128)
    first = widget.predict()
    n_layers = len(viewer.layers)
    semseg = first[("semseg", "label")]
    before = np.asarray(semseg.data).copy()

    # ask for semseg on the parts region too, and for nothing on the edges region
    with palette.block_history():
        pal = np.asarray(palette.data)
        idx = np.nonzero(pal == get_task("parts").palette_value)
        palette.data_setitem(idx, get_task("semseg").palette_value)
    second = widget.predict()

    assert errors == []
    assert len(viewer.layers) == n_layers  # updated, not duplicated
    assert second[("semseg", "label")] is semseg
    assert ("parts", "label") not in second
    parts = first[("parts", "label")]
    assert (np.asarray(parts.data) == IGNORE).all()  # no longer asked for: emptied
    assert (np.asarray(semseg.data)[idx] != IGNORE).all()
    assert not np.array_equal(np.asarray(semseg.data), before)
    # a prediction is not an undo step: Ctrl+Z on the layer has nothing of it to undo
    # (undoing it would bring back old pseudo-labels that then count as corrections)
    after = np.array(semseg.data, copy=True)
    semseg.undo()
    np.testing.assert_array_equal(np.asarray(semseg.data), after)
    assert not corrected_mask(semseg).any()


def test_fill_palette_from_predicted_semantics(setup, errors):
    viewer, widget, image, palette = setup(64)
    with palette.block_history():
        palette.data_setitem(np.nonzero(np.ones(palette.data.shape, bool)), 0)
    filled = widget.fill_palette("R2")
    assert errors == []
    # the random model predicts one class everywhere: R2 gives one task everywhere
    assert filled is not None and (filled > 0).all() and len(np.unique(filled)) == 1
    np.testing.assert_array_equal(np.asarray(palette.data), filled)
    assert "R2" in layer_meta(palette)["origin"]
    palette.undo()
    assert (np.asarray(palette.data) == 0).all()


def test_fill_palette_from_the_palette_network(setup, errors, tmp_path):
    import torch

    from composite_tasking.model import build_model, save_checkpoint

    viewer, widget, image, palette = setup(64)
    torch.manual_seed(0)
    net = save_checkpoint(build_model("palette-resnet18").eval(), tmp_path / "palette-net")
    widget.palette_model_edit.setText(str(net))
    widget.palette_model_edit.editingFinished.emit()
    before = np.array(palette.data, copy=True)

    filled = widget.fill_palette(pwm.PALETTE_NETWORK)

    assert errors == []
    assert filled is not None and filled.shape == before.shape
    assert filled.min() >= 0 and filled.max() <= len(TASKS)
    assert layer_meta(palette)["origin"] == "palette network"
    assert widget.predictor.palette_info.path == net
    if not np.array_equal(filled, before):
        palette.undo()  # one undo step
        np.testing.assert_array_equal(np.asarray(palette.data), before)


def test_missing_model_is_reported(make_napari_viewer, errors, monkeypatch, tmp_path):
    from composite_tasking.model.checkpoint import CheckpointError

    def no_bundled(name="ctn"):
        raise CheckpointError("no bundled model")

    monkeypatch.setattr("composite_tasking.weights.default_model_path", no_bundled)
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((32, 32, 3), np.uint8), rgb=True)
    widget = PredictWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Predict")
    widget.set_model("default")
    assert "ships no bundled model" in widget.model_status.text()
    assert "Browse" in widget.model_status.text()

    assert widget.load_model(tmp_path / "nowhere") is None
    assert errors and "nowhere" in errors[-1]
    assert "Cannot load the model" in widget.model_status.text()


class _LoopWatch:
    """Ticks of a 5 ms QTimer: the longest gap is the longest the GUI thread was busy."""

    def __init__(self):
        import gc

        from qtpy.QtCore import QTimer

        # a full collection of what earlier tests left is a pause of its own (0.1-0.6 s in
        # this process): not the widget's doing, so it is done before measuring
        gc.collect()
        self.ticks: list[float] = [time.perf_counter()]
        self.timer = QTimer()
        self.timer.setInterval(5)
        self.timer.timeout.connect(lambda: self.ticks.append(time.perf_counter()))
        self.timer.start()

    def stop(self) -> None:
        self.timer.stop()
        self.ticks.append(time.perf_counter())

    def longest_gap(self, until: float | None = None) -> float:
        t = np.array(self.ticks)
        if until is not None:  # gaps that started before ``until``
            t = t[: int(np.searchsorted(t, until)) + 1]
        return float(np.max(np.diff(t))) if len(t) > 1 else 0.0


def test_predict_in_worker_keeps_gui_responsive(setup, qtbot, errors, monkeypatch):
    import napari.qt.threading as nqt

    viewer, widget, image, palette = setup(128)
    steps: list[float] = []  # when the GUI thread heard of each step of the worker
    threads: set[int] = set()  # where the job's steps ran
    real = nqt.create_worker

    def create_worker(func, *args, **kwargs):  # recorders in place before the worker starts
        def traced(*a, **kw):
            threads.add(threading.get_ident())
            return (yield from func(*a, **kw))  # the job's result too

        w = real(traced, *args, **kwargs)
        w.yielded.connect(lambda _: steps.append(time.perf_counter()))
        return w

    monkeypatch.setattr(nqt, "create_worker", create_worker)
    load = load_factor()  # the machine's pace: a bound follows its load
    watch = _LoopWatch()
    worker = widget.start_predict()
    assert worker is not None and widget.busy and widget.cancel_button.isEnabled()
    assert getattr(worker, "pbar", None) is not None  # napari's progress bar
    # wait for what is checked: every step heard in the GUI thread, and the job done
    # (not only "not busy": on a fresh clone the second predict once ended the wait
    # before its steps were counted)
    qtbot.waitUntil(lambda: len(steps) >= pjm.PREDICT_STEPS and not widget.busy, timeout=120_000)
    watch.stop()
    # up to the last step: the worker's part; after it the layers are made and shown
    in_worker, overall = watch.longest_gap(until=steps[-1]), watch.longest_gap()
    print(f"\nfirst predict (model load, encode, decode in the worker): longest event-loop gap "
          f"{in_worker * 1000:.0f} ms; with the new layers added: {overall * 1000:.0f} ms "
          f"(load factor {load:.1f})")  # fmt: skip
    assert errors == []
    assert {layer_meta(ly)["task"] for ly in _task_layers(viewer)} >= {"semseg", "parts"}
    assert widget.device_label.text().startswith("Device: cpu")
    # the behaviour: the job ran in a worker thread, never in the GUI thread. The gap is
    # printed (the GUI target, 100-250 ms, is a benchmark's: on a busy 2-core machine a
    # worker holding the GIL gave 0.22-0.26 s here); a gross bound catches a job that
    # blocks the loop outright
    assert threads and threading.main_thread().ident not in threads
    assert in_worker < wait_bound(1.0, load), f"the event loop was blocked for {in_worker * 1000:.0f} ms"
    # napari makes each new layer (its controls, its visual) in the GUI thread, one per
    # loop turn: 0.1-0.5 s each here (2 busy cores, software OpenGL)
    assert overall < wait_bound(1.5, load), f"the event loop was blocked for {overall * 1000:.0f} ms"

    # a re-run with the layers in place (another palette): nothing long in the GUI thread
    with palette.block_history():
        palette.data_setitem(np.nonzero(np.asarray(palette.data) == 3), 4)
    watch = _LoopWatch()
    steps.clear()
    worker = widget.start_predict()
    assert worker is not None
    job_steps = 3  # model, encode (cached), decode of the changed box
    qtbot.waitUntil(lambda: len(steps) >= job_steps and not widget.busy, timeout=120_000)
    watch.stop()
    in_worker, overall = watch.longest_gap(until=steps[-1]), watch.longest_gap()
    print(f"re-predict: longest gap {in_worker * 1000:.0f} ms while the worker ran, "
          f"{overall * 1000:.0f} ms with the layers updated in place")  # fmt: skip
    assert errors == []
    assert threading.main_thread().ident not in threads
    assert in_worker < wait_bound(1.0, load), f"the event loop was blocked for {in_worker * 1000:.0f} ms"
    # the in-place update of the layers (GUI thread): 30-340 ms on the busy 2-core machine
    assert overall < wait_bound(1.0, load), f"the event loop was blocked for {overall * 1000:.0f} ms"


def test_cancel_stops_the_worker(setup, qtbot, errors, monkeypatch):
    viewer, widget, image, palette = setup(64)
    real = pwm.load_predictor

    def slow(*args):
        time.sleep(0.5)
        return real(*args)

    monkeypatch.setattr(pjm, "load_predictor", slow)
    worker = widget.start_predict()
    with qtbot.waitSignal(worker.aborted, timeout=60_000):
        widget.cancel()
    qtbot.waitUntil(lambda: not widget.busy, timeout=60_000)
    assert errors == []
    assert _task_layers(viewer) == []
    assert widget.status_label.text() == "Cancelled."


def test_second_request_while_busy_runs_after(setup, qtbot, errors):
    viewer, widget, image, palette = setup(64)
    assert widget.start_predict() is not None
    assert widget.start_predict() is None  # queued
    qtbot.waitUntil(lambda: not widget.busy and widget._pending is None, timeout=60_000)
    qtbot.waitUntil(lambda: not widget.busy, timeout=60_000)
    assert errors == []
    names = [ly.name for ly in _task_layers(viewer)]
    assert len(names) == len(set(names))  # no duplicates from the second run


def test_palette_stroke_repredicts_only_near_the_stroke(setup, qtbot, errors):
    viewer, widget, image, palette = setup(256)
    widget.predict()
    layers = {(layer_meta(ly)["task"], layer_meta(ly)["role"]): ly for ly in _task_layers(viewer)}
    before = {k: np.array(ly.data, copy=True) for k, ly in layers.items()}
    n_layers = len(viewer.layers)

    # a stroke: paint normals on a 12 x 12 square in the top-left corner
    ys, xs = np.mgrid[2:14, 2:14]
    palette.data_setitem((ys.ravel(), xs.ravel()), get_task("normals").palette_value)  # -> paint event
    assert widget._debounce.isActive()
    qtbot.waitUntil(lambda: widget.busy, timeout=5_000)  # the debounce started a worker
    qtbot.waitUntil(lambda: not widget.busy, timeout=60_000)

    assert errors == []
    assert len(viewer.layers) == n_layers
    changed = np.zeros(palette.data.shape, bool)  # changed beyond float rounding
    touched = np.zeros(palette.data.shape, bool)  # written at all
    for k, ly in layers.items():
        a, b = before[k], np.asarray(ly.data)
        if a.dtype.kind == "f":
            same = np.isclose(a, b, atol=1e-4, equal_nan=True)
            touched_k = ~((a == b) | (np.isnan(a) & np.isnan(b)))
        else:
            same = touched_k = a == b
            touched_k = ~touched_k
        diff = ~same
        changed |= diff.any(axis=-1) if diff.ndim == 3 else diff
        touched |= touched_k.any(axis=-1) if touched_k.ndim == 3 else touched_k
    normals = layers[("normals", "normals")].data
    assert (normals[2:14, 2:14, 3] == 1).all()  # the stroke's task is predicted there
    assert changed[2:14, 2:14].all()
    ys, xs = np.nonzero(changed)
    print(f"\nstroke 12 x 12 at (2, 2): {changed.sum()} pixels changed, up to row {ys.max()}, "
          f"column {xs.max()}")  # fmt: skip
    # the decoder reaches about 100 pixels (stride-32 cells, 3x3 convs, upsampling)
    assert ys.max() < 128 and xs.max() < 128
    # only the box the stroke can reach was decoded again (exact there, up to rounding)
    reach = widget.predictor.palette_reach
    ty, tx = np.nonzero(touched)
    assert ty.max() < 14 + reach and tx.max() < 14 + reach

    # undo of the stroke re-predicts too, back to the same pseudo-labels
    palette.undo()
    qtbot.waitUntil(lambda: widget.busy, timeout=5_000)
    qtbot.waitUntil(lambda: not widget.busy, timeout=60_000)
    for k, ly in layers.items():
        np.testing.assert_allclose(np.asarray(ly.data), before[k], atol=1e-4)


def test_widgets_from_the_plugin_menu_use_public_api_only(make_napari_viewer, tiny_checkpoint,
                                                         errors, tmp_path):  # fmt: skip
    """napari hands plugin widgets a PublicOnlyProxy of the viewer, which warns
    (FutureWarning) on private attribute access: predict, re-predict and save need none."""
    import warnings

    viewer = make_napari_viewer()
    s = _scene(64)
    image = viewer.add_image(s["image"], rgb=True, name="scene")
    sem = viewer.add_labels(s["semseg"], name="semantics")
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        _d, palette_widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Task Palette")
        _d, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Predict")
        palette_widget.fill_from_rule("R2", semantics=sem)
        widget.set_model(tiny_checkpoint, "cpu")
        assert widget.predict()
        n_layers = len(viewer.layers)
        palette = palette_widget.palette_layer
        with palette.block_history():
            palette.data_setitem(np.nonzero(np.asarray(palette.data) == 3), 5)
        second = widget.predict()
        semseg = second[("semseg", "label")]
        idx = np.nonzero(np.asarray(semseg.data) != IGNORE)
        semseg.data_setitem((idx[0][:5], idx[1][:5]), 8)
        assert widget.save(tmp_path / "proxy.zarr") == "scene"
    assert errors == []
    assert len(viewer.layers) == n_layers  # the re-run updated the layers in place
    from composite_tasking.store import LabelStore

    assert LabelStore(tmp_path / "proxy.zarr").read_sample("scene").provenance["semseg"] == "corrected"


# ---------------------------------------------------------------------------------------
# the widgets as napari docks them from the plugin's manifest, driven by their buttons
# ---------------------------------------------------------------------------------------


@pytest.fixture
def docked(make_napari_viewer, tiny_checkpoint, errors):
    """Both widgets docked from the plugin (as from napari's Plugins menu), the Predict
    widget on the tiny model and the CPU; ``make(viewer=None)``."""

    def make(viewer=None):
        viewer = viewer if viewer is not None else make_napari_viewer()
        _d, palette_widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Task Palette")
        _d, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Predict")
        widget.model_edit.setText(str(tiny_checkpoint))
        widget.model_edit.editingFinished.emit()
        widget.device_combo.setCurrentText("cpu")
        return viewer, palette_widget, widget

    return make


def _picture(index: int, size: int) -> np.ndarray:
    from composite_tasking.synthetic import generate

    return generate(424242, index, size)["image"]


def _settle(qtbot, widget, timeout: int = 60_000) -> None:
    """Wait until the widget is idle: no worker, no layers being added, no re-predict
    waiting for its timer, nothing queued."""
    qtbot.waitUntil(lambda: not widget.busy and not widget._debounce.isActive()
                    and widget._pending is None, timeout=timeout)  # fmt: skip


def _slow_model_load(monkeypatch, seconds: float = 0.6) -> None:
    real = pwm.load_predictor

    def slow(*args):
        time.sleep(seconds)
        return real(*args)

    monkeypatch.setattr(pjm, "load_predictor", slow)


def _layers_of(viewer, image) -> dict:
    key = layer_meta(image)["image_key"]
    return {(layer_meta(ly)["task"], layer_meta(ly)["role"]): ly
            for ly in viewer.layers if is_task_layer(ly, key)}  # fmt: skip


def _choose_rule(palette_widget, spec: str) -> None:
    palette_widget.rule_combo.setCurrentIndex(palette_widget.rule_combo.findData(spec))


def test_fill_palette_for_another_image_makes_its_own_palette(docked, qtbot, errors):
    """Fill palette for image B must not touch image A's palette (it used to be re-keyed
    to B and resized to B's shape, without undo)."""
    from composite_tasking._napari.palette_layer import is_palette_layer

    viewer, palette_widget, widget = docked()
    a = viewer.add_image(_picture(3, 128), name="A")
    b = viewer.add_image(_picture(4, 96), name="B")
    palette_widget.image_combo.set_current_layer(a)
    palette_widget.new_button.click()
    palette_widget.fill_from_rule("mosaic", rng=0)
    pal_a = palette_widget.palette_layer
    before = np.array(pal_a.data, copy=True)
    widget.image_combo.set_current_layer(a)
    widget.predict_button.click()
    _settle(qtbot, widget)
    key_a = layer_meta(pal_a).get("image_key")
    assert key_a == layer_meta(a)["image_key"]  # A's palette
    a_layers = {k: np.array(ly.data, copy=True) for k, ly in _layers_of(viewer, a).items()}
    assert a_layers

    widget.image_combo.set_current_layer(b)
    widget.rule_combo.setCurrentText("R2")
    widget.fill_button.click()
    _settle(qtbot, widget)

    assert errors == []
    assert pal_a.data.shape == (128, 128) and layer_meta(pal_a)["image_key"] == key_a
    np.testing.assert_array_equal(pal_a.data, before)
    palettes = [ly for ly in viewer.layers if is_palette_layer(ly)]
    assert len(palettes) == 2
    pal_b = widget.palette_layer
    assert pal_b is not pal_a and pal_b.data.shape == (96, 96)
    assert layer_meta(pal_b)["image_key"] == layer_meta(b)["image_key"]
    assert (np.asarray(pal_b.data) > 0).all()  # R2 asks for a task everywhere
    for k, data in a_layers.items():  # A's predictions are untouched too
        np.testing.assert_array_equal(np.asarray(_layers_of(viewer, a)[k].data), data)
    pal_a.undo()  # A's own history is intact: the mosaic fill is its last step
    assert (np.asarray(pal_a.data) == 0).all()


def test_undo_on_a_pseudo_label_layer_never_makes_corrections(docked, qtbot, errors, tmp_path):
    """Ctrl+Z after a live re-predict used to bring back the old pseudo-labels, which then
    counted (and were saved) as corrections."""
    from composite_tasking.store import LabelStore

    viewer, palette_widget, widget = docked()
    s = _scene(128)
    image = viewer.add_image(s["image"], rgb=True, name="scene")
    sem = viewer.add_labels(s["semseg"], name="semantics")
    palette_widget.semantic_combo.set_current_layer(sem)
    _choose_rule(palette_widget, "R2")
    palette_widget.fill_button.click()
    widget.image_combo.set_current_layer(image)
    widget.predict_button.click()
    _settle(qtbot, widget)
    semseg = _layers_of(viewer, image)[("semseg", "label")]
    first = np.array(semseg.data, copy=True)

    _choose_rule(palette_widget, "S:semseg")  # a palette change: re-predicted live
    palette_widget.fill_button.click()
    assert widget._debounce.isActive()
    _settle(qtbot, widget)
    assert not np.array_equal(np.asarray(semseg.data), first)
    semseg.undo()  # Ctrl+Z on the pseudo-label layer
    assert not corrected_mask(semseg).any()

    # a correction, a prediction that keeps it, then the correction undone: not corrected
    data = np.asarray(semseg.data)
    idx = np.nonzero(data != 3)
    idx = (idx[0][:30], idx[1][:30])
    semseg.data_setitem(idx, 3)
    assert corrected_mask(semseg).sum() == 30
    widget.predict_button.click()
    _settle(qtbot, widget)
    assert (np.asarray(semseg.data)[idx] == 3).all() and corrected_mask(semseg).sum() == 30
    semseg.undo()
    assert not corrected_mask(semseg).any()

    widget.store_edit.setText(str(tmp_path / "undo.zarr"))
    widget.save_button.click()
    assert errors == []
    assert "no corrections" in widget.save_status.text()
    assert LabelStore(tmp_path / "undo.zarr").read_sample("scene").provenance["semseg"] == "pseudo"


def test_stroke_during_the_first_predict_is_predicted_after_it(docked, qtbot, errors,
                                                               monkeypatch):  # fmt: skip
    _slow_model_load(monkeypatch)
    viewer, palette_widget, widget = docked()
    image = viewer.add_image(_picture(3, 64), name="scene")
    palette_widget.new_button.click()
    palette_widget.fill_from_rule("S:edges")
    palette = palette_widget.palette_layer
    widget.predict_button.click()
    assert widget.busy

    ys, xs = np.mgrid[8:24, 8:24]
    palette.data_setitem((ys.ravel(), xs.ravel()), get_task("semseg").palette_value)  # stroke
    _settle(qtbot, widget)

    assert errors == []
    layers = _layers_of(viewer, image)
    assert ("semseg", "label") in layers  # the stroke was predicted after the first run
    assert (np.asarray(layers[("semseg", "label")].data)[8:24, 8:24] != IGNORE).all()
    assert widget.status_label.text().startswith("Predicted")


def test_a_new_palette_of_the_image_is_the_one_predicted(docked, qtbot, errors, tmp_path):
    """Predict uses the palette made (newest) for the chosen image, also when the image
    came from a store with a palette of its own."""
    from composite_tasking.store import LabelStore

    path = tmp_path / "one.zarr"
    with LabelStore(path, mode="a") as st:
        st.write_sample("img", {"image": _picture(3, 64),
                                "palette": np.full((64, 64), get_task("edges").palette_value,
                                                   np.uint8)}, provenance={})  # fmt: skip
    viewer, palette_widget, widget = docked()
    viewer.open(str(path), plugin=PLUGIN)
    stored_palette = viewer.layers["img palette"]
    assert widget.palette_layer is stored_palette
    palette_widget.new_button.click()  # over the store's image
    _choose_rule(palette_widget, "S:normals")
    palette_widget.fill_button.click()
    assert widget.palette_layer is palette_widget.palette_layer  # the newest

    widget.predict_button.click()
    _settle(qtbot, widget)

    assert errors == []
    shown = set(_layers_of(viewer, viewer.layers["img"]))
    assert ("normals", "normals") in shown and ("edges", "prob") not in shown
    assert (np.asarray(stored_palette.data) == get_task("edges").palette_value).all()


def test_an_images_palette_is_never_used_for_another_image(docked, qtbot, errors):
    viewer, palette_widget, widget = docked()
    a = viewer.add_image(_picture(3, 64), name="A")
    c = viewer.add_image(_picture(5, 64), name="C")  # the same size
    palette_widget.image_combo.set_current_layer(a)
    palette_widget.new_button.click()
    palette_widget.fill_from_rule("mosaic", rng=0)
    palette = palette_widget.palette_layer
    widget.image_combo.set_current_layer(a)
    widget.predict_button.click()
    _settle(qtbot, widget)
    assert _layers_of(viewer, a)

    widget.image_combo.set_current_layer(c)
    assert widget.palette_layer is None
    widget.predict_button.click()
    _settle(qtbot, widget)

    assert errors and "no Task Palette for image 'C'" in errors[-1]
    assert layer_meta(palette)["image_key"] == layer_meta(a)["image_key"]
    assert not _layers_of(viewer, c)
    widget.image_combo.set_current_layer(a)  # back to A: its palette again
    assert widget.palette_layer is palette


def test_cancel_in_napari_activity_dock(docked, qtbot, errors, monkeypatch):
    from napari._qt.widgets.qt_progress_bar import QtLabeledProgressBar
    from napari.utils.progress import cancelable_progress

    _slow_model_load(monkeypatch, 1.0)
    viewer, palette_widget, widget = docked()
    viewer.add_image(_picture(3, 64), name="scene")
    palette_widget.new_button.click()
    palette_widget.fill_from_rule("mosaic", rng=0)
    worker = widget.start_predict()
    assert isinstance(worker.pbar, cancelable_progress)
    bars = [b for b in viewer.window._qt_window.findChildren(QtLabeledProgressBar)
            if b.progress is worker.pbar]  # fmt: skip
    assert len(bars) == 1 and not bars[0].cancel_button.isHidden()

    with qtbot.waitSignal(worker.aborted, timeout=60_000):
        bars[0].cancel_button.click()
    _settle(qtbot, widget)

    assert errors == []
    assert widget.status_label.text() == "Cancelled."
    assert _task_layers(viewer) == []


def test_fields_expand_home_and_make_relative_paths_explicit(docked, qtbot, errors, tmp_path,
                                                            monkeypatch, tiny_checkpoint):  # fmt: skip
    import shutil

    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir()
    cwd.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(cwd)
    shutil.copytree(tiny_checkpoint, home / "ckpt")
    viewer, palette_widget, widget = docked()
    viewer.add_image(_picture(3, 64), name="scene")
    palette_widget.new_button.click()
    palette_widget.fill_from_rule("S:semseg")

    widget.model_edit.setText("~/ckpt")
    widget.model_edit.editingFinished.emit()
    widget.load_button.click()
    _settle(qtbot, widget)
    assert errors == []
    assert widget.model_status.text() == f"Model: {home / 'ckpt'}"
    assert widget.status_label.text().startswith("Model loaded (cpu")

    widget.store_edit.setText("~/labels")
    widget.save_button.click()
    assert (home / "labels.zarr").is_dir() and not (cwd / "~").exists()
    assert f"to {home / 'labels.zarr'};" in widget.save_status.text()
    widget.store_edit.setText("sub/rel")
    widget.save_button.click()
    assert errors == []
    assert (cwd / "sub" / "rel.zarr").is_dir()
    assert f"to {cwd / 'sub' / 'rel.zarr'};" in widget.save_status.text()
    assert widget.store_edit.text() == str(cwd / "sub" / "rel.zarr")


def test_a_palette_network_is_refused_as_the_model(docked, qtbot, errors, tmp_path):
    import torch

    from composite_tasking.model import build_model, save_checkpoint

    torch.manual_seed(0)
    net = save_checkpoint(build_model("palette-resnet18").eval(), tmp_path / "palette-net")
    viewer, palette_widget, widget = docked()
    viewer.add_image(_picture(3, 64), name="scene")
    palette_widget.fill_from_rule("S:semseg")
    widget.model_edit.setText(str(net))
    widget.model_edit.editingFinished.emit()
    widget.load_button.click()
    _settle(qtbot, widget)

    text = widget.model_status.text()
    assert text.startswith("Cannot load the model") and str(net) in text
    assert "is a palette network, not a CTN" in text
    assert errors and "is a palette network, not a CTN" in errors[-1]
    assert widget.predictor is None


def test_image_removed_while_predicting_says_so(docked, qtbot, errors, monkeypatch):
    _slow_model_load(monkeypatch)
    viewer, palette_widget, widget = docked()
    image = viewer.add_image(_picture(3, 64), name="scene")
    palette_widget.fill_from_rule("S:semseg")
    widget.predict_button.click()
    viewer.layers.remove(image)
    _settle(qtbot, widget)
    assert errors == []
    assert "'scene' was removed" in widget.status_label.text()
    assert _task_layers(viewer) == []


def test_combos_follow_renames_and_list_only_source_images(docked, qtbot, errors):
    viewer, palette_widget, widget = docked()
    image = viewer.add_image(_picture(3, 64), name="scene")
    palette_widget.fill_from_rule("random", rng=0)
    palette = palette_widget.palette_layer
    widget.predict_button.click()
    _settle(qtbot, widget)
    assert any(isinstance(ly, Image) for ly in _task_layers(viewer))  # prob, normals, ...

    image.name = "renamed"
    palette.name = "my palette"
    assert widget.image_combo.currentText() == "renamed"
    assert widget.palette_combo.currentText() == "my palette"
    # the plugin's own output images are not images to make a palette for
    items = [palette_widget.image_combo.itemText(i) for i in range(palette_widget.image_combo.count())]
    assert items == ["renamed"]
    viewer.layers.remove(image)
    assert palette_widget.image_combo.current_layer() is None
    assert widget.image_combo.current_layer() is None
    assert errors == []


def test_progress_bar_reaches_its_end_for_every_job(docked, qtbot, errors):
    viewer, palette_widget, widget = docked()
    viewer.add_image(_picture(3, 64), name="scene")
    palette_widget.fill_from_rule("mosaic", rng=0)
    palette = palette_widget.palette_layer
    seen: list[tuple[int, int]] = []
    widget.progress_bar.valueChanged.connect(
        lambda v: seen.append((v, widget.progress_bar.maximum())))

    def run(start) -> set[tuple[int, int]]:
        """The (step, steps) the bar reached at the end of each job ``start`` starts."""
        seen.clear()
        start()
        _settle(qtbot, widget)
        ends = {(v, m) for v, m in seen if v == m}
        assert {(m, m) for _, m in seen} == ends  # no job stopped short of its end
        return ends

    assert run(widget.load_button.click) == {(1, 1)}
    assert run(widget.predict_button.click) == {(4, 4)}
    ys, xs = np.mgrid[2:10, 2:10]  # a stroke: re-predicted on the cached features
    value = int(palette.data[2, 2]) % len(TASKS) + 1  # another task than there
    assert run(lambda: palette.data_setitem((ys.ravel(), xs.ravel()), value)) == {(3, 3)}
    widget.rule_combo.setCurrentText("R2")
    # the fill (2 steps), then the re-predict of the filled palette (3)
    assert run(widget.fill_button.click) == {(2, 2), (3, 3)}
    assert errors == []


@pytest.mark.parametrize("how", ["data_setitem", "paint"])
def test_undoing_a_correction_after_a_re_prediction_gives_the_new_pseudo_label(how):
    """Correct a pixel, re-predict (the correction is kept), undo the correction: the
    pixel shows the *current* pseudo-label and is not a correction."""
    from napari.layers import Labels

    from composite_tasking._napari.task_layers import set_correction_state, update_task_layer

    layer = Labels(np.ones((8, 8), np.uint8))
    set_correction_state(layer)
    if how == "data_setitem":
        layer.data_setitem((np.array([0]), np.array([0])), 3)
    else:
        layer.brush_size = 1
        layer.paint((0, 0), 3)
    assert corrected_mask(layer).sum() == 1
    update_task_layer(layer, np.full((8, 8), 2, np.uint8))
    assert layer.data[0, 0] == 3 and corrected_mask(layer).sum() == 1  # kept
    layer.undo()
    assert layer.data[0, 0] == 2 and corrected_mask(layer).sum() == 0
    layer.redo()
    assert layer.data[0, 0] == 3 and corrected_mask(layer).sum() == 1


def test_a_widget_deleted_mid_job_is_not_called_back(setup, qtbot, errors, monkeypatch):
    """The worker outlives a widget deleted while it runs (napari closed, the dock
    removed): its signals no longer reach the deleted Qt objects (pytest-qt fails a
    test on any exception raised in the Qt event loop)."""
    viewer, widget, image, palette = setup(64)
    real = pwm.load_predictor

    def slow(*args):
        time.sleep(0.5)
        return real(*args)

    monkeypatch.setattr(pjm, "load_predictor", slow)
    worker = widget.start_predict()
    with qtbot.waitSignal(widget.destroyed, timeout=10_000):
        viewer.window.remove_dock_widget("all")
        widget.deleteLater()
    with qtbot.waitSignal(worker.finished, timeout=60_000):
        pass
    assert errors == []
