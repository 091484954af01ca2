"""One set of napari layers for a whole series: an image's layers serve the next image.

Going from one image of a series to the next used to remove every layer of the image
(image, palette, one per task and role) and to add the next image's anew. Both are slow
in napari (0.12-0.21 s per layer made under Mesa's software OpenGL, a new shader program
each) and removing them is what makes that renderer crash (see
:func:`composite_tasking._napari._compat.keep_gl_programs`, which keeps their programs
alive, ~2 MB each). So the series widget *retires* the layers it leaves
(:func:`retire`): hidden, named ``(spare) semseg``, marked ``kind: spare`` with their
*slot* (the layer type and what it shows: the image, the palette, a task and role), and no
longer anybody's (no ``image_key``: no widget reads, saves or offers them). Whatever makes
a layer for an image then calls :func:`add_or_reuse` instead of ``viewer.add_layer``: a
spare of the same slot takes the new layer's data, colours, metadata and name (undo
history emptied), else the new layer is added. The layers a person sees are the current
image's, as before; the spares wait hidden in the layer list.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from napari.layers import Image, Labels, Layer

from .palette_layer import METADATA_KEY, is_palette_layer
from .task_layers import SPARE_KIND, TASK_KIND, layer_meta

if TYPE_CHECKING:  # pragma: no cover
    import napari

__all__ = ["SPARE_KIND", "add_or_reuse", "is_spare", "retire", "shows", "slot_of", "spares"]


def slot_of(layer: Layer) -> tuple | None:
    """What a layer can be reused for: (type, role...) or None (not one of the plugin's
    image, palette or task layers)."""
    meta = layer_meta(layer)
    kind = meta.get("kind")
    if kind == SPARE_KIND:
        return tuple(meta.get("slot") or ()) or None
    if isinstance(layer, Labels) and is_palette_layer(layer):
        return ("Labels", "palette")
    if kind == TASK_KIND and isinstance(layer, (Labels, Image)):
        return (type(layer).__name__, "task", meta.get("task"), meta.get("role"), bool(getattr(layer, "rgb", False)))
    if isinstance(layer, Image) and kind != TASK_KIND:
        return ("Image", "image", bool(layer.rgb))
    return None


def shows(viewer: "napari.viewer.Viewer", layer: Layer, key: str) -> bool:
    """Whether ``layer`` is in the viewer and still shows the image ``key`` (a layer the
    series reused for another image no longer does: a late result for the old image
    must not land on the new one)."""
    return layer in viewer.layers and layer_meta(layer).get("image_key") == key


def is_spare(layer: Layer) -> bool:
    return layer_meta(layer).get("kind") == SPARE_KIND


def spares(viewer: "napari.viewer.Viewer") -> list[Layer]:
    return [ly for ly in viewer.layers if is_spare(ly)]


def _slot_name(slot: tuple) -> str:
    if slot[1] == "task":
        task, role = slot[2], slot[3]
        return " ".join(str(p) for p in (task, role) if p and p not in ("label", task))
    return str(slot[1])


def retire(viewer: "napari.viewer.Viewer", layers: list[Layer]) -> None:
    """Hide ``layers`` and keep them as spares for the next image (a layer that is none of
    the plugin's is removed)."""
    for layer in layers:
        slot = slot_of(layer)
        if slot is None:
            viewer.layers.remove(layer)
            continue
        layer.visible = False
        if isinstance(layer, Labels):
            _clear_history(layer)
        # metadata first: the name change refreshes the widgets' layer lists, which then
        # no longer see a palette, an image or a task layer here
        layer.metadata = {METADATA_KEY: {"kind": SPARE_KIND, "slot": list(slot)}}
        layer.name = f"(spare) {_slot_name(slot)}"


def _clear_history(layer: Labels) -> None:
    # napari keeps undo and redo as deques of atoms; a reused layer starts with none
    for name in ("_undo_history", "_redo_history"):
        history = getattr(layer, name, None)
        if history is not None:
            history.clear()


def add_or_reuse(viewer: "napari.viewer.Viewer", layer: Layer) -> Layer:
    """``layer`` (made, not added) shown in the viewer: a spare of its slot takes its
    content and is returned, else ``layer`` is added and returned."""
    slot = slot_of(layer)
    spare = next((ly for ly in spares(viewer) if type(ly) is type(layer) and slot_of(ly) == slot),
                 None) if slot is not None else None  # fmt: skip
    if spare is None:
        viewer.add_layer(layer)
        return layer
    _transplant(layer, spare)
    return spare


def _transplant(src: Layer, dst: Layer) -> None:
    # a change of scale or translation makes napari recompute the viewer's extent and
    # dims (~40 ms each): set only when it differs (images of a series share both)
    for name in ("scale", "translate"):
        if not np.array_equal(getattr(dst, name), getattr(src, name)):
            setattr(dst, name, getattr(src, name))
    if isinstance(src, Labels):
        dst.colormap = src.colormap
        dst.features = src.features
        dst.data = np.asarray(src.data)
        dst.selected_label = src.selected_label
        _clear_history(dst)
    else:
        dst.data = src.data
        if not src.rgb:
            dst.colormap = src.colormap
        dst.contrast_limits_range = src.contrast_limits_range
        dst.contrast_limits = src.contrast_limits
        dst.gamma = src.gamma
    dst.blending = src.blending
    dst.opacity = src.opacity
    dst.metadata = src.metadata
    dst.visible = src.visible
    dst.name = src.name  # last: the widgets' layer lists refresh on it
