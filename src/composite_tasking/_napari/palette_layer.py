"""Task Palettes as napari Labels layers: colours, metadata and shapes.

Everything here comes from :data:`composite_tasking.tasks.TASKS`; nothing names a task
or a colour itself. A palette layer is an ``uint8`` :class:`napari.layers.Labels` layer
whose value at a pixel is ``task id + 1`` (0 = no task, napari's background label) and
whose ``metadata["composite_tasking"]["kind"]`` is ``"palette"``. Its ``image_key``
there names the one image it belongs to (set when it is made for an image, or when a
palette made without one is first used for an image).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from napari.layers import Image, Labels, Layer
from napari.utils.colormaps import DirectLabelColormap

from ..tasks import NO_TASK, TASKS, Task

__all__ = [
    "METADATA_KEY",
    "PALETTE_KIND",
    "PALETTE_LAYER_NAME",
    "palette_name",
    "task_rgba",
    "task_colormap",
    "palette_features",
    "is_palette_layer",
    "palette_image_key",
    "palette_fits",
    "mark_palette_layer",
    "image_plane_shape",
    "make_palette_layer",
]

#: key of the plugin's entry in ``layer.metadata``
METADATA_KEY = "composite_tasking"
#: ``layer.metadata[METADATA_KEY]["kind"]`` of a Task Palette layer
PALETTE_KIND = "palette"
#: name given to new palette layers (napari appends `` [1]``, ... to repeats)
PALETTE_LAYER_NAME = "Task Palette"
#: shown for NO_TASK in legends and in the layer's status bar
NO_TASK_NAME = "none"


def task_rgba(task: Task) -> np.ndarray:
    """The task's palette colour as an RGBA float array in [0, 1]."""
    return np.array([*(c / 255.0 for c in task.color), 1.0], dtype=np.float32)


def task_colormap() -> DirectLabelColormap:
    """Palette value (task id + 1) -> task colour; 0 and unknown values transparent."""
    transparent = np.zeros(4, dtype=np.float32)
    color_dict: dict[int | None, Any] = {None: transparent, NO_TASK: transparent}
    for task in TASKS:
        color_dict[task.palette_value] = task_rgba(task)
    return DirectLabelColormap(color_dict=color_dict, background_value=NO_TASK)


def palette_features() -> dict[str, list]:
    """Features table of a palette layer: napari's status bar then shows the task."""
    return {
        "index": [NO_TASK] + [t.palette_value for t in TASKS],
        "task": [NO_TASK_NAME] + [t.name for t in TASKS],
        "title": ["no task"] + [t.title for t in TASKS],
    }


def is_palette_layer(layer: Layer | None) -> bool:
    """True for a Labels layer marked as a Task Palette (see :func:`mark_palette_layer`)."""
    if not isinstance(layer, Labels):
        return False
    meta = layer.metadata.get(METADATA_KEY)
    return isinstance(meta, dict) and meta.get("kind") == PALETTE_KIND


def palette_image_key(layer: Layer) -> str | None:
    """The key of the image ``layer`` (a palette) belongs to; None while it is free."""
    meta = layer.metadata.get(METADATA_KEY)
    key = meta.get("image_key") if isinstance(meta, dict) else None
    return key if isinstance(key, str) and key else None


def palette_fits(layer: Layer, key: str, shape: tuple[int, int]) -> bool:
    """True when the palette ``layer`` can serve the image with ``key`` and plane
    ``shape``: it belongs to that image, or it is free and has the image's shape."""
    if not is_palette_layer(layer):
        return False
    owner = palette_image_key(layer)
    if owner is not None:
        return owner == key
    return tuple(int(s) for s in np.shape(layer.data)) == tuple(shape)


def mark_palette_layer(layer: Labels) -> Labels:
    """Mark ``layer`` as a Task Palette and give it the task colours."""
    layer.metadata[METADATA_KEY] = {"kind": PALETTE_KIND}
    layer.colormap = task_colormap()
    layer.features = palette_features()
    return layer


def image_plane_shape(layer: Layer) -> tuple[int, int]:
    """(H, W) of an image layer's last two spatial axes (an RGB(A) image's last axis is
    its channels); for a multiscale image, of its full-resolution level."""
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    shape = tuple(int(s) for s in data.shape)
    if isinstance(layer, Image) and layer.rgb:
        shape = shape[:-1]
    if len(shape) < 2:
        raise ValueError(f"layer {layer.name!r} has shape {shape}; a palette needs 2-D (H, W)")
    return shape[-2], shape[-1]


def record_rule(layer: Labels, rule=None) -> None:
    """Say in a palette layer's metadata which rule made it (``None``: none known, e.g.
    the palette network's or a hand-painted one): saved with the image, it lets
    fine-tuning refuse a rule the palette contradicts (:func:`.datasets.check_stored_palettes`)."""
    from ..palette import load_rule, rule_fingerprint

    meta = layer.metadata.setdefault(METADATA_KEY, {})
    if rule is None:
        meta.pop("rule", None)
        meta.pop("rule_sha256", None)
        return
    rule = load_rule(rule)
    meta["rule"], meta["rule_sha256"] = rule.name, rule_fingerprint(rule)


def palette_name(image: Layer) -> str:
    """The name of a palette made for ``image``: ``<image name> palette``."""
    return f"{image.name} palette"


def make_palette_layer(
    shape: tuple[int, int],
    data: np.ndarray | None = None,
    *,
    name: str = PALETTE_LAYER_NAME,
    like: Layer | None = None,
    image_key: str | None = None,
) -> Labels:
    """A new (not yet added) Task Palette layer of ``shape`` (H, W), dtype uint8.

    ``data`` (H, W) is copied in if given, else the palette starts as all NO_TASK.
    ``like``: a layer whose scale and translate (last two axes) the palette takes, so
    that it lies over that layer in the canvas. ``image_key``: the key of the image the
    palette is made for (:func:`composite_tasking._napari.task_layers.image_key`); a
    palette belongs to that one image, and the widgets never use it for another. Without
    it the palette is free until an image first uses it.
    """
    h, w = (int(s) for s in shape)
    if data is None:
        arr = np.full((h, w), NO_TASK, dtype=np.uint8)
    else:
        arr = np.array(data, dtype=np.uint8, copy=True)
        if arr.shape != (h, w):
            raise ValueError(f"palette data has shape {arr.shape}, expected {(h, w)}")
    kwargs: dict[str, Any] = {}
    if like is not None:
        kwargs["scale"] = tuple(like.scale[-2:])
        kwargs["translate"] = tuple(like.translate[-2:])
    layer = Labels(
        arr,
        name=name,
        colormap=task_colormap(),
        features=palette_features(),
        metadata={METADATA_KEY: {"kind": PALETTE_KIND} | ({"image_key": image_key} if image_key else {})},
        opacity=0.5,
        **kwargs,
    )
    return layer
