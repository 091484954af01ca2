"""Regenerate the screenshots of docs/napari.md (docs/images/napari-*.png): the series
workflow of ``ctn annotate``, in a window of 1280 x 800.

Run under Xvfb::

    xvfb-run -a -s "-screen 0 1280x1024x24" .venv/bin/python scripts/maintainer/napari_screenshots.py [--out docs/images]

It opens a folder of three of the plugin's sample images (scene-3, scene-4, scene-5,
copied into a temporary folder) with :func:`composite_tasking._napari.annotate.open_annotator`
and drives the "Label images" and "Fine-tune" docks only through their public methods,
as the tests do, with the bundled model (``default``) and the bundled palette network,
on the CPU unless ``--device`` says otherwise:

1. napari-series.png:    image 1 of 3 after *Fill palette* with ``palette network``: the
                         navigator, the task legend and Predict together, the palette shown
2. napari-predict.png:   after *Predict*: one layer per requested task, named after the image
3. napari-repredict.png: a rectangle of normals painted on the palette, re-predicted by the
                         dock's live re-predict after the stroke
4. napari-correct.png:   the semseg pseudo-labels corrected: the person labelled with the
                         class chosen in the class list (the dock scrolled to it), then *Save*
5. napari-next.png:      after *Save and next*: image 2 of 3, 1 reviewed, shown alone (the last
                          image's layers wait hidden as its spares)
6. napari-reopen.png:    a fresh viewer on the same folder resumes at image 2 (the first
                         unreviewed): "image 2 of 3, 1 reviewed"
7. napari-finetune.png:  the Fine-tune tab raised after a one-epoch fine-tune of --steps
                         steps on the folder's store (CTN and palette network), its status shown

Each picture is written to a temporary file in --out and renamed into place; each path
written is printed, and a part of the dock that a picture should show but that lies
outside the dock's visible area is reported on stderr. The folder, its label store and
the fine-tune run go to a temporary folder.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

# the model stack before any canvas (see composite_tasking._napari._compat)
import composite_tasking.model  # noqa: F401

WINDOW = (1280, 800)
#: the sample scenes labelled, in file order (the first is the one painted and corrected)
SCENES = ("scene-3.png", "scene-4.png", "scene-5.png")


def wait(cond, timeout: float, what: str) -> None:
    """Turn the Qt event loop until cond() holds; raise after timeout seconds."""
    from qtpy.QtWidgets import QApplication

    app = QApplication.instance()
    end = time.monotonic() + timeout
    while not cond():
        app.processEvents()
        if time.monotonic() > end:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.02)


def settle(seconds: float = 0.5) -> None:
    end = time.monotonic() + seconds
    wait(lambda: time.monotonic() > end, seconds + 5, "the event loop")


def idle(predict, timeout: float, what: str) -> None:
    """Wait until the Predict part has nothing running, queued or about to start."""
    wait(lambda: not predict.busy and not predict._debounce.isActive() and predict._pending is None,
         timeout, what)  # fmt: skip


def shoot(viewer, out: Path, name: str) -> Path:
    settle(0.5)
    viewer.reset_view()  # the whole image in the canvas the docks leave
    settle(0.5)
    path = out / f"napari-{name}.png"
    tmp = out / f".napari-{name}.tmp-{os.getpid()}.png"
    try:
        viewer.screenshot(str(tmp), canvas_only=False, flash=False)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    print(path, flush=True)
    return path


def check_visible(scroll, parts: dict, picture: str) -> None:
    """Report (stderr) each part of the dock not wholly inside the scroll area's viewport."""
    viewport = scroll.viewport()
    area = viewport.rect()
    for what, widget in parts.items():
        if not widget.isVisible():
            print(f"{picture}: {what} is hidden", file=sys.stderr, flush=True)
            continue
        top_left = widget.mapTo(viewport, widget.rect().topLeft())
        bottom_right = widget.mapTo(viewport, widget.rect().bottomRight())
        if not (area.contains(top_left) and area.contains(bottom_right)):
            print(f"{picture}: {what} is not wholly visible in the dock ({top_left.x()},"
                  f"{top_left.y()})-({bottom_right.x()},{bottom_right.y()}) of "
                  f"{area.width()} x {area.height()}", file=sys.stderr, flush=True)  # fmt: skip


def dismiss_notifications(viewer) -> None:
    """Close napari's notification toasts (one about an earlier step would cover the canvas)."""
    try:
        from napari._qt.dialogs.qt_notification import NapariQtNotification
    except ImportError:  # napari moved it: the toasts stay
        return
    for toast in viewer.window._qt_window.findChildren(NapariQtNotification):
        toast.close()
    settle(0.3)


def dock_of(widget):
    """The QDockWidget that holds ``widget``."""
    from qtpy.QtWidgets import QDockWidget

    w = widget
    while w is not None and not isinstance(w, QDockWidget):
        w = w.parentWidget()
    return w


def open_folder(folder: Path, device: str):
    """A fresh 1280 x 800 viewer with the docks of ``ctn annotate`` on ``folder``."""
    import napari

    from composite_tasking._napari.annotate import open_annotator

    viewer = napari.Viewer(title="CompositeTasking")
    viewer.window.resize(*WINDOW)
    viewer, widgets, problems = open_annotator([folder], viewer=viewer, model="default",
                                               device=device)  # fmt: skip
    if problems:
        raise RuntimeError(f"open_annotator: {problems}")
    widgets["Predict"].set_model("default", device, "default")  # the bundled palette network
    settle(0.5)  # the Label images dock raised in front of Fine-tune
    return viewer, widgets


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="docs/images", help="folder of the PNGs (docs/images)")
    ap.add_argument("--device", default="cpu", help="device of the model (cpu)")
    ap.add_argument("--steps", type=int, default=2, help="fine-tune steps per epoch (2)")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per wait (600)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()

    import numpy as np
    from qtpy.QtWidgets import QScrollArea

    from composite_tasking._napari.layer_pool import is_spare
    from composite_tasking._napari.predict_widget import PALETTE_NETWORK
    from composite_tasking._napari.sample_data import SAMPLE_SEED, SAMPLE_SIZE
    from composite_tasking._napari.task_layers import (
        find_task_layer,
        image_key,
        task_layers_of,
    )
    from composite_tasking.samples import sample_paths
    from composite_tasking.synthetic import generate
    from composite_tasking.tasks import get_task

    work = Path(tempfile.mkdtemp(prefix="napari-screenshots-"))
    folder = work / "photos"
    folder.mkdir()
    samples = {p.name: p for p in sample_paths()}
    for name in SCENES:
        shutil.copy(samples[name], folder / name)

    # ---- 1. the series on image 1 of 3, its palette from the palette network ----------
    viewer, widgets = open_folder(folder, args.device)
    annotator = widgets["Label images"]
    series, palette, predict, classes = (annotator.series, annotator.palette, annotator.predict,
                                         annotator.classes)  # fmt: skip
    scroll = annotator.findChild(QScrollArea)
    session = series.session
    image = series.image_layer
    if image is None or session.index != 0:
        raise RuntimeError(f"the series does not show image 1: {series.status_label.text()}")
    predict.live_check.setChecked(False)  # no re-predict after the fill
    predict.rule_combo.setCurrentText(PALETTE_NETWORK)
    if predict.fill_palette(PALETTE_NETWORK) is None:
        raise RuntimeError(f"Fill palette with the palette network failed: {predict.status_label.text()}")
    predict.live_check.setChecked(True)  # re-predict after strokes (the default)
    pal = predict.palette_layer
    viewer.layers.selection.active = pal
    scroll.verticalScrollBar().setValue(0)
    settle(0.3)
    top_parts = {"the navigator": series.status_label, "Save and next": series.save_next_button,
                 "the task legend": palette.task_buttons.button(0),
                 "Fill palette": predict.fill_button, "Predict": predict.predict_button}  # fmt: skip
    check_visible(scroll, top_parts, "napari-series.png")
    shoot(viewer, out, "series")

    # ---- 2. predict ---------------------------------------------------------------------
    layers = predict.predict()
    if not layers:
        raise RuntimeError(f"Predict failed: {predict.status_label.text()}")
    idle(predict, args.timeout, "the task layers")
    pal.visible = False
    check_visible(scroll, {"Predict": predict.predict_button,
                           "its status line": predict.status_label}, "napari-predict.png")  # fmt: skip
    shoot(viewer, out, "predict")

    # ---- 3. a palette stroke, re-predicted ----------------------------------------------
    value = get_task("normals").palette_value
    rr, cc = np.mgrid[20:90, 130:230]  # a rectangle over the wall
    pal.data_setitem((rr.ravel(), cc.ravel()), value)
    settle(1.0)  # the debounce timer starts the worker
    idle(predict, args.timeout, "the re-prediction")
    check_visible(scroll, {"Predict's status line": predict.status_label}, "napari-repredict.png")
    shoot(viewer, out, "repredict")

    # ---- 4. correct with a class of the class list, save ------------------------------------
    predict.live_check.setChecked(False)
    semseg = find_task_layer(viewer.layers, image_key(image), "semseg", "label")
    if semseg is None:
        raise RuntimeError("no semseg pseudo-labels")
    for layer in task_layers_of(viewer.layers, image_key(image)):
        layer.visible = layer is semseg  # the correction in view, not under other tasks
    viewer.layers.selection.active = semseg
    settle(0.3)
    person = next((v for v, name in classes.entries() if name == "person"), None)
    if person is None or classes.choose(person) is None:
        raise RuntimeError(f"the class list offers no 'person': {classes.entries()}")
    # the person of scene 3 (its exact mask: the world's semantics), labelled person where
    # the pseudo-labels say otherwise or nothing (its palette asked parts there)
    scene = generate(SAMPLE_SEED, 3, SAMPLE_SIZE)
    data = np.asarray(semseg.data)
    rr = cc = np.zeros(0, int)
    if np.array_equal(scene["image"], np.asarray(image.data)[..., :3]):
        rr, cc = np.nonzero((scene["semseg"] == person) & (data != person))
    if rr.size == 0:  # another sample set, or nothing to correct: a rectangle in the middle
        rr, cc = (a.ravel() for a in np.mgrid[95:150, 60:140])
    semseg.data_setitem((rr, cc), semseg.selected_label)
    settle(0.3)
    scroll.ensureWidgetVisible(classes.parentWidget())  # the "Classes" box
    settle(0.3)
    if series.save() is None:
        raise RuntimeError(f"Save failed: {series.message_label.text()}")
    check_visible(scroll, {"the class list": classes}, "napari-correct.png")
    shoot(viewer, out, "correct")
    predict.live_check.setChecked(True)

    # ---- 5. save and next -----------------------------------------------------------------
    if not series.save_and_next():
        raise RuntimeError(f"Save and next failed: {series.message_label.text()}")
    settle(0.5)
    dismiss_notifications(viewer)  # "Saved scene-3.png": the picture is about scene-4
    scroll.verticalScrollBar().setValue(0)
    if [ly.name for ly in viewer.layers if not is_spare(ly)] != [SCENES[1]]:
        print(f"napari-next.png: the layer list holds {[ly.name for ly in viewer.layers]}",
              file=sys.stderr, flush=True)  # fmt: skip
    check_visible(scroll, {"the navigator": series.status_label,
                           "the navigator's message": series.message_label}, "napari-next.png")  # fmt: skip
    shoot(viewer, out, "next")
    store = session.store_path
    viewer.close()
    settle(0.5)

    # ---- 6. reopened: resumes at the first unreviewed image ----------------------------------
    viewer, widgets = open_folder(folder, args.device)
    annotator = widgets["Label images"]
    series, predict, finetune = annotator.series, annotator.predict, widgets["Fine-tune"]
    scroll = annotator.findChild(QScrollArea)
    status = series.status_label.text()
    if not status.startswith("image 2 of 3, 1 reviewed"):
        raise RuntimeError(f"reopened at {status!r}, not at image 2 of 3 with 1 reviewed")
    scroll.verticalScrollBar().setValue(0)
    check_visible(scroll, {"the navigator": series.status_label,
                           "the image list": series.image_list}, "napari-reopen.png")  # fmt: skip
    shoot(viewer, out, "reopen")

    # ---- 7. fine-tune -----------------------------------------------------------------------
    ft_dock = dock_of(finetune)
    ft_dock.show()
    ft_dock.raise_()
    settle(0.3)
    finetune.store_edit.setText(str(store))
    finetune.epochs_spin.setValue(1)
    finetune.steps_spin.setValue(args.steps)
    finetune.out_edit.setText(str(work / "finetune-run"))
    if finetune.start() is None:
        raise RuntimeError(f"Fine-tune did not start: {finetune.status_label.text()}")
    wait(lambda: not finetune.busy, args.timeout, "the fine-tune")
    settle(1.0)
    idle(predict, args.timeout, "the model load after fine-tuning")
    ft_dock.raise_()
    shoot(viewer, out, "finetune")
    viewer.close()
    settle(0.5)
    print(f"done in {time.monotonic() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
