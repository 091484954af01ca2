"""Regenerate the six screenshots of docs/napari.md (docs/images/napari-*.png).

Run under Xvfb::

    xvfb-run -a .venv/bin/python scripts/napari_screenshots.py [--out docs/images]

It drives the plugin only through its public widget methods, as the tests do, on the
plugin's sample scene 3 with the bundled model (``default``) and the bundled palette
network, on the CPU unless ``--device`` says otherwise:

1. napari-palette.png:   the palette filled by the palette network (Predict widget's
                         *Fill palette* with ``palette network``), Task Palette widget shown
2. napari-predict.png:   after *Predict*: one layer per requested task
3. napari-repredict.png: a rectangle of normals painted on the palette, re-predicted by the
                         widget's live re-predict after the stroke
4. napari-correct.png:   part of the semantic segmentation repainted, saved to a store
5. napari-reopen.png:    the store reopened in a fresh viewer with the plugin's reader
6. napari-finetune.png:  a one-epoch fine-tune of a few steps (CTN and palette network),
                         Fine-tune widget shown

Each picture is written to a temporary file in --out and renamed into place; each path
written is printed. The label store and the fine-tune run go to a temporary folder.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

# the model stack before any canvas (see composite_tasking._napari._compat)
import composite_tasking.model  # noqa: F401

PLUGIN = "napari-composite-tasking"
WINDOW = (1500, 940)


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


def new_viewer():
    import napari

    viewer = napari.Viewer()
    viewer.window.resize(*WINDOW)
    return viewer


def dock(viewer, name: str):
    dock_widget, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name, tabify=True)
    return dock_widget, widget


def show_dock(dock_widget) -> None:
    dock_widget.show()
    dock_widget.raise_()
    settle(0.3)


def task_layer(viewer, task: str, role: str = "label"):
    from composite_tasking._napari.task_layers import layer_meta

    for ly in viewer.layers:
        meta = layer_meta(ly)
        if meta.get("task") == task and meta.get("role", role) == role:
            return ly
    return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="docs/images", help="folder of the PNGs (docs/images)")
    ap.add_argument("--device", default="cpu", help="device of the model (cpu)")
    ap.add_argument("--steps", type=int, default=2, help="fine-tune steps per epoch (2)")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per wait (600)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    import numpy as np

    from composite_tasking._napari.palette_layer import is_palette_layer
    from composite_tasking._napari.predict_widget import PALETTE_NETWORK
    from composite_tasking.tasks import IGNORE, get_task

    work = Path(tempfile.mkdtemp(prefix="napari-screenshots-"))
    store = work / "annotated.zarr"

    # ---- 1. palette from the palette network ---------------------------------------
    viewer = new_viewer()
    viewer.open_sample(PLUGIN, "scene-3")
    image = viewer.layers["scene-3"]
    pal_dock, palette_widget = dock(viewer, "Task Palette")
    pred_dock, predict = dock(viewer, "Predict")
    ft_dock, _ = dock(viewer, "Fine-tune")
    predict.set_model("default", args.device, "default")
    predict.live_check.setChecked(False)  # no re-predict after the fill
    predict.image_combo.set_current_layer(image)
    palette = palette_widget.new_palette(image)
    predict.palette_combo.set_current_layer(palette)
    predict.rule_combo.setCurrentText(PALETTE_NETWORK)
    filled = predict.fill_palette(PALETTE_NETWORK, image, palette)
    if filled is None:
        raise RuntimeError("Fill palette with the palette network failed")
    predict.live_check.setChecked(True)  # re-predict after strokes (the default)
    viewer.layers.selection.active = palette
    show_dock(pal_dock)
    shoot(viewer, out, "palette")

    # ---- 2. predict ---------------------------------------------------------------
    layers = predict.predict(image, palette)
    if not layers:
        raise RuntimeError("Predict failed")
    wait(lambda: not predict.busy, args.timeout, "the task layers")
    palette.visible = False
    show_dock(pred_dock)
    shoot(viewer, out, "predict")

    # ---- 3. a palette stroke, re-predicted ------------------------------------------
    value = get_task("normals").palette_value
    rr, cc = np.mgrid[20:90, 130:230]  # a rectangle over the wall
    palette.data_setitem((rr.ravel(), cc.ravel()), value)
    settle(1.0)  # the debounce timer starts the worker
    wait(lambda: not predict.busy, args.timeout, "the re-prediction")
    shoot(viewer, out, "repredict")

    # ---- 4. correct and save ------------------------------------------------------
    predict.live_check.setChecked(False)
    semseg = layers[("semseg", "label")]
    data = np.asarray(semseg.data)
    person = get_task("semseg").classes.index("person")
    rows, cols = np.nonzero(data != IGNORE)
    box = (rows >= rows.min()) & (rows < rows.min() + 60)
    rows, cols = rows[box][::1], cols[box]
    if rows.size:
        semseg.data_setitem((rows, cols), person)
    viewer.layers.selection.active = semseg
    predict.store_edit.setText(str(store))
    if predict.save(store) is None:
        raise RuntimeError("Save to store failed")
    shoot(viewer, out, "correct")
    viewer.close()
    settle(0.5)

    # ---- 5. reopen ----------------------------------------------------------------
    viewer = new_viewer()
    viewer.open(str(store), plugin=PLUGIN)
    pal_dock, _ = dock(viewer, "Task Palette")
    pred_dock, predict = dock(viewer, "Predict")
    ft_dock, finetune = dock(viewer, "Fine-tune")
    predict.set_model("default", args.device, "default")
    for ly in viewer.layers:
        if is_palette_layer(ly):
            ly.visible = False
    show_dock(pred_dock)
    shoot(viewer, out, "reopen")

    # ---- 6. fine-tune -------------------------------------------------------------
    show_dock(ft_dock)
    finetune.store_edit.setText(str(store))
    finetune.epochs_spin.setValue(1)
    finetune.steps_spin.setValue(args.steps)
    finetune.out_edit.setText(str(work / "finetune-run"))
    worker = finetune.start()
    if worker is None:
        raise RuntimeError("Fine-tune did not start")
    wait(lambda: not finetune.busy, args.timeout, "the fine-tune")
    settle(1.0)
    wait(lambda: not predict.busy, args.timeout, "the re-prediction after fine-tuning")
    show_dock(ft_dock)
    shoot(viewer, out, "finetune")
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
