"""``ctn annotate [IMAGE...]``: a napari viewer with the plugin's widgets docked and the
images (or label stores) loaded.

Inputs load in the order given. Images are read with
:func:`composite_tasking.images.read_image` (any supported format, as uint8 RGB);
folders are searched for images; a label store (``.zarr`` folder written by this
package) opens through the plugin's reader, with its palettes, pseudo-labels and
corrections. Only the first input's layers are visible, and its image is the Predict
widget's. What cannot be opened (a missing path, an unreadable image, a zarr folder
that is not a label store, reported once) is returned as a problem.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

__all__ = ["open_annotator", "WIDGETS"]

PLUGIN = "napari-composite-tasking"
#: the dock widgets ``ctn annotate`` opens, in this order (display names of napari.yaml)
WIDGETS = ("Task Palette", "Predict", "Fine-tune")


def open_annotator(paths: Sequence[str | os.PathLike] = (), *, viewer=None,
                   model: str | None = None, device: str | None = None,
                   widgets: Iterable[str] = WIDGETS):  # fmt: skip
    """Open (or use) a viewer, dock the widgets, load ``paths``.

    Returns ``(viewer, widgets, problems)``: the docked widgets by name and, for each
    input that was not loaded, ``(path, reason)``.
    """
    # the model stack first: triton (imported by torch) crashes when Mesa's software
    # OpenGL loaded its LLVM before it (see _compat); imported first, both coexist
    import composite_tasking.model  # noqa: F401
    import napari

    from ..images import ImageReadError, is_zarr_folder, read_image, scan_inputs
    from .store_io import store_target

    if viewer is None:
        viewer = napari.Viewer(title="CompositeTasking")
    docked = {}
    for name in widgets:
        _dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name, tabify=True)
        docked[name] = widget
    if "Predict" in docked and (model or device):
        docked["Predict"].set_model(model or docked["Predict"].model_spec()[0], device)

    problems: list[tuple[str, str]] = []
    seen: set[Path] = set()
    first = True  # the first input that loads is the visible one
    for p in paths:
        path = Path(p)
        if store_target(path) is not None:
            before = len(viewer.layers)
            try:
                viewer.open(str(path), plugin=PLUGIN)
            except Exception as e:  # noqa: BLE001 - one bad store must not stop the others
                problems.append((str(p), f"cannot open the label store: {e}"))
                continue
            if not first:
                for layer in list(viewer.layers)[before:]:
                    layer.visible = False
            first = first and len(viewer.layers) == before
            continue
        if is_zarr_folder(path):
            problems.append((str(p), NOT_A_STORE))
            continue
        scan = scan_inputs([path])
        problems += scan.skipped + [(z, _why_not_opened(Path(z))) for z in scan.zarr_folders]
        for f in scan.files:
            if f.resolve() in seen:
                continue
            seen.add(f.resolve())
            try:
                rgb = read_image(f)
            except ImageReadError as e:
                problems.append((str(f), e.reason))
                continue
            viewer.add_image(rgb, rgb=True, name=Path(f).stem, visible=first,
                             metadata={"composite_tasking": {"kind": "image", "source": str(f)}})  # fmt: skip
            first = False
    if "Predict" in docked and viewer.layers:
        from napari.layers import Image

        from .task_layers import layer_meta

        shown = [ly for ly in viewer.layers if isinstance(ly, Image) and ly.visible
                 and layer_meta(ly).get("kind") != "task"]  # fmt: skip
        if shown:
            docked["Predict"].image_combo.set_current_layer(shown[0])
    return viewer, docked, problems


#: why a zarr folder that this package did not write is not opened
NOT_A_STORE = "a zarr folder that is not a label store of this package: not opened"


def _why_not_opened(zarr_dir: Path) -> str:
    """Why a zarr folder found inside a folder input is not opened."""
    from .store_io import store_target

    if store_target(zarr_dir) is not None:
        return "a label store inside a folder: give it as an input of its own to open it"
    return NOT_A_STORE
