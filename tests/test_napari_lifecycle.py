"""The plugin in napari processes that start and end as scripts do (issue #16): real
subprocesses on the test's display (run under Xvfb: ``xvfb-run -a python -m pytest
tests/test_napari_lifecycle.py``), each of which must exit with 0.

- a script that makes its own viewer and then calls ``open_annotator(..., viewer=v)``:
  under Mesa's software OpenGL the viewer maps an LLVM, and triton (imported by torch)
  crashed the process when it came after it (see ``composite_tasking._napari._compat``);
- closing the viewer during a fine-tune: the worker thread outlived the window, and the
  process crashed or aborted when Python ended under it (see ``_lifecycle``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

pytestmark = [pytest.mark.gui, pytest.mark.slow]

needs_display = pytest.mark.skipif(
    sys.platform.startswith("linux") and not os.environ.get("DISPLAY"),
    reason="needs a display for the subprocess (run under xvfb-run)")  # fmt: skip


class _Script:
    """``source`` run as a script by this interpreter (one torch thread), started at once."""

    def __init__(self, folder, source: str, *args: str):
        folder.mkdir(parents=True, exist_ok=True)
        script = folder / "script.py"
        script.write_text(textwrap.dedent(source))
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen([sys.executable, str(script), *args], cwd=folder, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip

    def wait(self, timeout: float = 120.0):
        """(exit code, stdout, stderr, seconds since the start); killed after ``timeout``."""
        try:
            out, err = self.proc.communicate(timeout=max(1.0, timeout - (time.monotonic() - self.t0)))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
            err += f"\n[killed after {timeout:.0f} s]"
        return self.proc.returncode, out, err, time.monotonic() - self.t0


def _explain(code: int, out: str, err: str) -> str:
    return f"exit code {code}\n--- stdout\n{out[-3000:]}\n--- stderr\n{err[-6000:]}"


# ------------------------------------------------------------ open_annotator on a viewer

ANNOTATE_SCRIPT = """
    import sys

    when = sys.argv[2]
    if when != "after":
        import composite_tasking._napari  # noqa: F401  (before the viewer: the LLVM comes later)
    import napari

    viewer = napari.Viewer(title="made by the script")
    if when == "model":
        import composite_tasking.model  # noqa: F401  (the script's own model code: torch, triton)
    from composite_tasking._napari import open_annotator

    got, docked, problems = open_annotator([sys.argv[1]], viewer=viewer)
    assert got is viewer and problems == [], problems
    assert [layer.name.startswith("tiny") for layer in viewer.layers] == [True], list(viewer.layers)
    print("triton:", repr(sys.modules.get("triton")))
    viewer.close()
    print("closed")
"""


WHENS = {"early": "plugin imported first", "after": "plugin imported after the viewer",
         "model": "plugin first, model imported after the viewer"}  # fmt: skip


@pytest.fixture(scope="module")
def annotate_scripts(tmp_path_factory):
    """The three scripts, run side by side (each one mostly imports: about half the time
    of one after the other on two cores)."""
    from PIL import Image

    tmp = tmp_path_factory.mktemp("annotate")
    png = tmp / "tiny.png"
    Image.fromarray(np.full((64, 64, 3), 120, np.uint8)).save(png)
    scripts = {when: _Script(tmp / when, ANNOTATE_SCRIPT, str(png), when) for when in WHENS}
    yield scripts
    for script in scripts.values():
        if script.proc.poll() is None:
            script.proc.kill()
            script.proc.communicate()


@needs_display
@pytest.mark.parametrize("when", list(WHENS), ids=list(WHENS.values()))
def test_open_annotator_on_a_viewer_the_script_made(annotate_scripts, when):
    code, out, err, _ = annotate_scripts[when].wait()
    assert code == 0, _explain(code, out, err)
    assert "closed" in out, _explain(code, out, err)


# ------------------------------------------------------- closing during a fine-tune

FINETUNE_SCRIPT = """
    import sys
    import time
    from pathlib import Path

    import torch

    from composite_tasking.model import build_model, save_checkpoint
    from composite_tasking.palette import load_rule
    from composite_tasking.store import LabelStore
    from composite_tasking.synthetic import generate
    from composite_tasking.tasks import TASK_NAMES

    tmp = Path(sys.argv[1])
    torch.manual_seed(0)
    checkpoint = save_checkpoint(build_model("ctn-resnet18").eval(), tmp / "ctn")
    store = tmp / "corrected.zarr"
    with LabelStore(store, mode="w") as st:  # one 64 px image whose labels a person checked
        sample = {t: v for t, v in generate(5, 0, 64).items() if t != "meta"}
        sample["palette"] = load_rule("R2").palette(semantics=sample["semseg"])
        st.write_sample("scene", sample, provenance=dict.fromkeys(TASK_NAMES, "corrected"))

    import napari
    from qtpy.QtCore import QCoreApplication, QEventLoop

    from composite_tasking._napari.finetune_widget import FinetuneWidget

    viewer = napari.Viewer()
    widget = FinetuneWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Fine-tune")
    widget.store_edit.setText(str(store))
    widget.model_edit.setText(str(checkpoint))
    widget.out_edit.setText(str(tmp / "run"))
    widget.epochs_spin.setValue(1000)  # far more than the test waits for
    steps = []
    widget._relay.progress.connect(lambda info: steps.append(info) if "loss" in info else None)
    assert widget.start(palette_model=None, device="cpu") is not None
    deadline = time.monotonic() + 90
    while not steps and widget.busy and time.monotonic() < deadline:  # Qt's loop runs
        QCoreApplication.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 50)
    assert steps and widget.busy, (len(steps), widget.busy, widget.status_label.text())
    print("training", flush=True)
    viewer.close()  # no Cancel: the close must stop the job
    print("closed", flush=True)
"""


@needs_display
def test_closing_the_viewer_during_a_finetune_exits_cleanly(tmp_path):
    code, out, err, seconds = _Script(tmp_path, FINETUNE_SCRIPT, str(tmp_path)).wait()
    assert code == 0, _explain(code, out, err)
    assert "training" in out and "closed" in out, _explain(code, out, err)
    assert "viewer-closing callback" not in err, _explain(code, out, err)
    assert seconds < 120
    epochs = sorted((tmp_path / "run").rglob("*epoch*"))
    assert len(epochs) < 100, epochs  # stopped, not trained to the end


# --------------------------------------------------------- the helper, in this process


class _Event:
    """A stand-in for a Qt event (type and origin) given straight to the event filter."""

    def __init__(self, kind, spontaneous: bool):
        self._kind, self._spontaneous = kind, spontaneous

    def type(self):
        return self._kind

    def spontaneous(self) -> bool:
        return self._spontaneous


def test_on_viewer_closing_calls_back_once_when_the_window_closes(make_napari_viewer, qtbot):
    from qtpy.QtCore import QEvent, QObject
    from qtpy.QtWidgets import QWidget

    from composite_tasking._napari._lifecycle import WATCH_NAME, on_viewer_closing

    viewer = make_napari_viewer()
    window = viewer.window._qt_window
    calls: list[str] = []
    widget = QWidget()
    on_viewer_closing(widget, lambda: calls.append("closing"))  # before it is docked
    viewer.window.add_dock_widget(widget, name="watched")
    watch = widget.findChild(QObject, WATCH_NAME)
    assert watch._window() is window  # found through the dock

    # the title bar's close button: napari may ask and refuse (then the window stays)
    watch.eventFilter(window, _Event(QEvent.Type.Close, spontaneous=True))
    watch.eventFilter(window, _Event(QEvent.Type.Hide, spontaneous=True))  # minimised
    assert calls == []
    watch.eventFilter(window, _Event(QEvent.Type.Hide, spontaneous=False))  # accepted: hides
    assert calls == ["closing"]

    calls.clear()
    gone = QWidget()
    viewer.window.add_dock_widget(gone, name="gone")
    on_viewer_closing(gone, lambda: calls.append("gone"))
    kept = QWidget()
    viewer.window.add_dock_widget(kept, name="kept")
    end = on_viewer_closing(kept, lambda: calls.append("kept"))
    end()  # the watch ended by its owner
    last = QWidget()
    viewer.window.add_dock_widget(last, name="last")
    on_viewer_closing(last, lambda: calls.append("last"))
    viewer.window.remove_dock_widget(gone)
    with qtbot.waitSignal(gone.destroyed, timeout=5000):
        gone.deleteLater()
    last_watch = last.findChild(QObject, WATCH_NAME)
    viewer.close()  # programmatic: at once
    last_watch.fire()  # what aboutToQuit would do next: nothing, it ran
    assert calls == ["last"]


def test_the_triton_guard_lets_imports_through_without_an_llvm(monkeypatch):
    from composite_tasking._napari import _compat

    guard = _compat.install_triton_guard()
    assert _compat.install_triton_guard() is guard and sum(
        getattr(f, "composite_tasking_triton_guard", False) for f in sys.meta_path) == 1  # fmt: skip
    monkeypatch.setitem(sys.modules, "triton", None)  # restored (or removed) afterwards
    monkeypatch.delitem(sys.modules, "triton")
    monkeypatch.setattr(_compat, "llvm_mapped", lambda: False)
    assert guard.find_spec("triton") is None  # the usual import goes on
    assert guard.find_spec("numpy") is None
    monkeypatch.setattr(_compat, "llvm_mapped", lambda: True)
    with pytest.raises(ModuleNotFoundError, match="another LLVM"):
        guard.find_spec("triton")
    assert sys.modules["triton"] is None  # later imports fail at once, find_spec says None
    assert _compat.prevent_llvm_clash() is True


# ------------------------------------- a series: predict, save and next, resize (Mesa)

SERIES_SCRIPT = """
    import sys
    import time

    from qtpy.QtWidgets import QApplication

    from composite_tasking._napari import open_annotator
    from composite_tasking._napari._compat import kept_gl_programs

    viewer, docked, problems = open_annotator([sys.argv[1]], device="cpu")
    assert problems == [], problems
    app = QApplication.instance()

    def pump(seconds=0.3):  # let Qt draw (and resize) as it would between clicks
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            app.processEvents()
            time.sleep(0.01)

    series, palette, predict = docked["Series"], docked["Task Palette"], docked["Predict"]
    window = viewer.window._qt_window
    for k, size in enumerate([(1000, 700), (1200, 800)]):
        pump()
        palette.fill_from_rule("mosaic")
        assert predict.predict(), predict.status_label.text()
        pump()
        assert series.save_and_next(), series.message_label.text()  # a notification slides in
        pump()
        window.resize(*size)  # the canvas gets a new size after the layers were removed
        pump()
        print("image", k + 2, "shown", flush=True)
    print("kept programs:", kept_gl_programs(), flush=True)
    viewer.close()
    print("closed", flush=True)
"""


@needs_display
def test_save_and_next_then_a_resize_does_not_crash(tmp_path):
    """Save and next removes an image's layers; the next frame of a new size (a resize,
    a notification sliding in) crashed inside Mesa's software OpenGL after vispy deleted
    their programs (see ``_compat.keep_gl_programs``)."""
    from PIL import Image

    from composite_tasking.synthetic import generate

    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(generate(5, i, (160, 240))["image"]).save(folder / f"photo{i}.png")
    code, out, err, _ = _Script(tmp_path / "run", SERIES_SCRIPT, str(folder)).wait(240)
    assert code == 0, _explain(code, out, err)
    assert "image 3 shown" in out and "closed" in out, _explain(code, out, err)
