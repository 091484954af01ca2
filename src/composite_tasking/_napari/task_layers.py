"""Pseudo-label layers: one napari layer per task and role, made and updated in place.

Everything about how a task looks comes from :data:`composite_tasking.tasks.TASKS`:

===========  ===========  ===============================================================
role         layer        content
===========  ===========  ===============================================================
``label``    Labels       semseg, parts: class ids with the paper's class colours (the
                          class anchors of Tables 5 / 6) and class names as features;
                          edges, saliency (on request): 0 / 1 thresholded; 255 (ignore)
                          transparent outside the task's palette region
``prob``     Image        edges, saliency: probability in [0, 1], NaN (transparent)
                          outside the region
``normals``  Image (RGBA) ``(n + 1) / 2`` as RGB floats, alpha 0 (transparent) outside
``confidence`` Image      one layer for all tasks (a pixel has one task): [0, 1], NaN
                          where the palette asks for nothing
===========  ===========  ===============================================================

Each layer carries ``metadata["composite_tasking"]``: ``kind`` ``"task"``, ``task``,
``role``, ``image_key`` (which image it belongs to) and, for Labels, the correction
state (:func:`corrected_mask`): ``reference``, the pseudo-labels the plugin last
predicted (or, for a layer read from a store, the values read), and ``corrected``, the
pixels marked as corrected whatever their value (corrections read from a store, and
corrections that the newest prediction happens to agree with). Corrections are the
pixels whose value differs from ``reference``, or that are marked: a re-prediction
keeps them, a save stores them with provenance ``corrected``.

Undo: napari's undo history of a Labels layer holds each edit as the changed pixels
with their values before and after. A prediction writes its pseudo-labels *outside*
that history (:func:`write_labels_without_history`), so the history of a task layer
holds only what a person did: Ctrl+Z undoes the last correction and never brings back
older pseudo-labels, which would then differ from ``reference`` and count as
corrections. A prediction never writes a pixel a person changed (corrections are kept);
where the value a correction replaced was the pseudo-label of its time, a new
prediction puts the new pseudo-label into the history in its place
(:func:`_rebase_history`), so undoing a correction after a re-prediction gives the
current pseudo-label, not a correction.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any, Iterable

import numpy as np
from napari.layers import Image, Labels, Layer
from napari.utils.colormaps import Colormap, DirectLabelColormap

from ..tasks import IGNORE, Task, get_task
from .palette_layer import METADATA_KEY
from .planes import confidence_map, normals_rgba, task_planes

__all__ = [
    "TASK_KIND",
    "ROLES",
    "BINARY_CLASSES",
    "UNDO_MAX_PIXELS",
    "image_key",
    "layer_meta",
    "is_task_layer",
    "task_label_colormap",
    "task_label_features",
    "probability_colormap",
    "normals_rgba",
    "rgba_normals",
    "layer_name",
    "find_task_layer",
    "task_layers_of",
    "corrected_mask",
    "set_correction_state",
    "replace_labels",
    "write_labels_without_history",
    "rgb8_of",
    "rgb8_from",
    "image_digest",
]

#: ``metadata[METADATA_KEY]["kind"]`` of a pseudo-label layer
TASK_KIND = "task"
#: ``kind`` of a layer kept for reuse by the next image (:mod:`.layer_pool`): nobody's
SPARE_KIND = "spare"
#: the roles a task layer can have; ``confidence`` has ``task`` None
ROLES = ("label", "prob", "normals", "confidence")
#: class names of the thresholded probability tasks (same as the label store)
BINARY_CLASSES = {"edges": ("background", "edge"), "saliency": ("background", "salient")}
#: label updates that change more pixels than this replace the data without undo history
UNDO_MAX_PIXELS = 16_000_000

_SUFFIX = {"label": "", "prob": " prob", "normals": "", "confidence": "confidence"}


def layer_meta(layer: Layer) -> dict:
    """The plugin's metadata entry of ``layer`` (an empty dict when it has none)."""
    meta = layer.metadata.get(METADATA_KEY)
    return meta if isinstance(meta, dict) else {}


def image_key(layer: Layer) -> str:
    """A stable key naming the image ``layer`` shows: kept in its metadata (made on first
    use), copied into the palette and the task layers made for it. A layer read from a
    label store gets ``store::image_id::copy`` (``copy``: one token per opened copy), so
    predictions update the layers read with it, and only those."""
    meta = layer.metadata.get(METADATA_KEY)
    if not isinstance(meta, dict):
        meta = {}
        layer.metadata[METADATA_KEY] = meta
    key = meta.get("image_key")
    if not isinstance(key, str) or not key:
        key = f"{layer.name}::{uuid.uuid4().hex[:8]}"
        meta["image_key"] = key
    return key


def is_task_layer(layer: Layer | None, key: str | None = None) -> bool:
    """True for a pseudo-label layer (of the image ``key`` when given)."""
    if layer is None:
        return False
    meta = layer_meta(layer)
    if meta.get("kind") != TASK_KIND:
        return False
    return key is None or meta.get("image_key") == key


# ------------------------------------------------------------------------- colours


def _rgba(rgb: Iterable[int], alpha: float = 1.0) -> np.ndarray:
    return np.array([*(c / 255.0 for c in rgb), alpha], dtype=np.float32)


def task_label_colormap(task: Task | str) -> DirectLabelColormap:
    """Class value -> colour: the paper's class colours (classes) or black / task colour
    (thresholded probabilities); 255 (ignore) and unknown values transparent."""
    task = get_task(task)
    transparent = np.zeros(4, dtype=np.float32)
    colors: dict[int | None, Any] = {None: transparent, IGNORE: transparent}
    if task.kind == "classes":
        for i, rgb in enumerate(task.class_colors()):
            colors[i] = _rgba(rgb)
        # class 0 (background) is black in the paper's table: keep it, but see-through
        colors[0] = _rgba(task.class_colors()[0], 0.35)
    else:
        colors[0] = np.array([0, 0, 0, 0.35], dtype=np.float32)
        colors[1] = _rgba(task.color)
    # background_value IGNORE: napari draws it transparent and the label-picker / eraser
    # paints it ("not labelled"), which is what erasing a pseudo-label means
    return DirectLabelColormap(color_dict=colors, background_value=IGNORE)


def task_label_features(task: Task | str) -> dict[str, list]:
    """Features of a task Labels layer: napari's status bar shows the class name."""
    task = get_task(task)
    names = list(task.classes) if task.kind == "classes" else list(BINARY_CLASSES[task.name])
    return {
        "index": list(range(len(names))) + [IGNORE],
        "class": names + ["ignore"],
        "task": [task.name] * (len(names) + 1),
    }


def probability_colormap(task: Task | str) -> Colormap:
    """Transparent black at 0 to the task's colour at 1."""
    task = get_task(task)
    colors = np.array([[0, 0, 0, 0], _rgba(task.color)], dtype=np.float32)
    return Colormap(colors, name=f"ctn-{task.name}-probability", interpolation="linear")


def rgba_normals(rgba: np.ndarray) -> np.ndarray:
    """Inverse of :func:`normals_rgba`: unit normals, zeros where alpha is 0."""
    rgba = np.asarray(rgba, np.float32)
    valid = rgba[..., 3] > 0 if rgba.shape[-1] == 4 else ~np.isnan(rgba).any(axis=-1)
    n = np.zeros((*rgba.shape[:2], 3), np.float32)
    v = rgba[valid][:, :3] * 2.0 - 1.0
    norm = np.linalg.norm(v, axis=-1, keepdims=True)
    n[valid] = v / np.maximum(norm, 1e-12)
    return n


# ------------------------------------------------------------------------- finding


def layer_name(base: str, task: str | None, role: str) -> str:
    if role == "confidence":
        return f"{base} confidence"
    return f"{base} {task}{_SUFFIX[role]}"


def find_task_layer(layers: Iterable[Layer], key: str, task: str | None, role: str) -> Layer | None:
    for ly in layers:
        meta = layer_meta(ly)
        if (meta.get("kind") == TASK_KIND and meta.get("image_key") == key
                and meta.get("task") == task and meta.get("role") == role):  # fmt: skip
            return ly
    return None


def task_layers_of(layers: Iterable[Layer], key: str) -> list[Layer]:
    return [ly for ly in layers if is_task_layer(ly, key)]


# ------------------------------------------------------------------------ corrections


def corrected_mask(layer: Labels) -> np.ndarray:
    """Pixels of a task Labels layer that a person changed: marked before, or differing
    from the values the plugin last wrote (``reference``)."""
    data = np.asarray(layer.data)
    meta = layer_meta(layer)
    mask = meta.get("corrected")
    mask = np.zeros(data.shape, bool) if mask is None or mask.shape != data.shape else mask.copy()
    ref = meta.get("reference")
    if ref is not None and ref.shape == data.shape:
        mask |= data != ref
    return mask


def set_correction_state(layer: Labels, corrected: np.ndarray | None = None,
                         reference: np.ndarray | None = None) -> None:  # fmt: skip
    """Set the layer's correction state: ``reference`` (default: its current data) and
    ``corrected``, the marked pixels (default: none)."""
    meta = layer.metadata.setdefault(METADATA_KEY, {})
    data = np.asarray(layer.data)
    ref = data if reference is None else np.asarray(reference)
    meta["reference"] = np.array(ref, dtype=data.dtype, copy=True)
    meta["corrected"] = (np.zeros(data.shape, bool) if corrected is None
                         else np.asarray(corrected, bool).copy())  # fmt: skip


def replace_labels(layer: Labels, new: np.ndarray) -> int:
    """Write ``new`` into ``layer`` through napari's edit history, as one undo step;
    returns the number of pixels changed. Very large changes replace the data without
    history (napari's history keeps indices and old values of each changed pixel).

    ``new`` must have the layer's shape: a ValueError otherwise (a layer is never
    resized here; napari's history of it would no longer fit its data)."""
    old = np.asarray(layer.data)
    if old.shape != new.shape:
        raise ValueError(f"layer {layer.name!r} has shape {old.shape}, the new values "
                         f"{new.shape}")  # fmt: skip
    changed = np.nonzero(old != new)
    n = int(changed[0].size)
    if n == 0:
        return 0
    if n <= UNDO_MAX_PIXELS and isinstance(layer.data, np.ndarray):
        with layer.block_history():  # one undo step
            layer.data_setitem(changed, new[changed])
    else:
        layer.data = np.asarray(new, dtype=old.dtype).copy()
    return n


def write_labels_without_history(layer: Labels, new: np.ndarray) -> int:
    """Write ``new`` into ``layer`` without an entry in napari's undo history (see the
    module docstring); returns the number of pixels changed. Only the changed pixels are
    written (into the layer's own array when it is a numpy array)."""
    old = np.asarray(layer.data)
    new = np.asarray(new, dtype=old.dtype)
    if old.shape != new.shape or not isinstance(layer.data, np.ndarray):
        layer.data = new.copy()
        return int(np.prod(new.shape))
    changed = old != new
    n = int(changed.sum())
    if n:
        layer.data[changed] = new[changed]
        layer.refresh()
    return n


# ------------------------------------------------------------------------- images


def rgb8_of(layer: Layer) -> np.ndarray:
    """The (H, W, 3) uint8 picture the network sees for an image layer; see
    :func:`rgb8_from`."""
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    return rgb8_from(data, bool(getattr(layer, "rgb", False)), layer.contrast_limits, layer.name)


def rgb8_from(data, rgb: bool, contrast_limits=None, name: str = "image") -> np.ndarray:
    """(H, W, 3) uint8 from an image layer's data.

    RGB(A) uint8 data is used as it is (alpha dropped); grey images are repeated over
    three channels; other dtypes are scaled by the contrast limits. Only 2-D images (and
    RGB images) are taken: the network reads one plane.
    """
    arr = np.asarray(data)
    plane_ndim = 3 if rgb else 2
    if arr.ndim != plane_ndim:
        raise ValueError(
            f"image layer {name!r} has shape {arr.shape}: the network reads one 2-D "
            "grey or RGB(A) image (a stack needs one plane chosen first)"
        )
    if rgb:
        arr = arr[..., :3]
    if arr.dtype != np.uint8:
        lo, hi = (float(v) for v in contrast_limits) if contrast_limits is not None else (0, 0)
        if not hi > lo:
            lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        arr = np.clip((np.nan_to_num(arr.astype(np.float32), nan=lo) - lo) * scale, 0, 255)
        arr = (arr + 0.5).astype(np.uint8)
    if not rgb:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    return np.ascontiguousarray(arr)


def image_digest(rgb: np.ndarray) -> str:
    """A short content hash: the feature cache key changes when the pixels change."""
    return hashlib.blake2b(np.ascontiguousarray(rgb).tobytes(), digest_size=12).hexdigest()


def new_task_layer(data: np.ndarray, *, task: str | None, role: str, key: str, name: str,
                   like: Layer | None = None, provenance: str = "pseudo",
                   visible: bool = True) -> Layer:  # fmt: skip
    """A new (not yet added) task layer; see the module docstring for roles."""
    meta: dict[str, Any] = {"kind": TASK_KIND, "task": task, "role": role, "image_key": key}
    kwargs: dict[str, Any] = {"name": name, "metadata": {METADATA_KEY: meta}, "visible": visible}
    if like is not None:
        kwargs["scale"] = tuple(like.scale[-2:])
        kwargs["translate"] = tuple(like.translate[-2:])
    if role == "label":
        meta["provenance"] = provenance
        layer = Labels(np.asarray(data, np.uint8), colormap=task_label_colormap(task),
                       features=task_label_features(task), opacity=0.6, **kwargs)  # fmt: skip
        set_correction_state(layer)
        return layer
    if role == "prob":
        return Image(np.asarray(data, np.float32), colormap=probability_colormap(task),
                     contrast_limits=(0.0, 1.0), blending="translucent", **kwargs)  # fmt: skip
    if role == "normals":
        return Image(np.asarray(data, np.float32), rgb=True, contrast_limits=(0.0, 1.0),
                     blending="translucent", **kwargs)  # fmt: skip
    if role == "confidence":
        return Image(np.asarray(data, np.float32), colormap="viridis",
                     contrast_limits=(0.0, 1.0), blending="translucent", **kwargs)  # fmt: skip
    raise ValueError(f"unknown role {role!r}; roles: {', '.join(ROLES)}")


def _rebase_history(layer: Labels, old: np.ndarray | None, new: np.ndarray) -> None:
    """After new pseudo-labels ``new`` replaced ``old`` as the reference: in the layer's
    undo (and redo) history, the values a correction replaced that were the old
    pseudo-labels become the new ones, so undoing a correction made before a
    re-prediction brings back the *current* pseudo-label, not a stale one that would
    count as a correction (values a person wrote stay). Reads napari's history atoms
    (``(indices, old, new)`` tuples and masked-paint atoms); a history of another shape
    is left as it is."""
    if old is None or np.shape(old) != np.shape(new):
        return
    old, new = np.asarray(old), np.asarray(new)
    for history in (getattr(layer, "_undo_history", ()), getattr(layer, "_redo_history", ())):
        for item in history:
            for atom in item:
                try:
                    if hasattr(atom, "slice_key"):  # napari's masked-paint atom
                        values = atom.old_values
                        was, now = old[atom.slice_key], new[atom.slice_key]
                        if atom.mask is not None:
                            was, now = was[atom.mask], now[atom.mask]
                    else:  # (indices, old values, new values)
                        indices, values, _ = atom
                        was, now = old[indices], new[indices]
                    if isinstance(values, np.ndarray) and values.shape == was.shape:
                        pseudo = values == was
                        values[pseudo] = now[pseudo]
                except (TypeError, ValueError, IndexError):
                    continue


def update_task_layer(layer: Layer, data: np.ndarray, *, keep_corrections: bool = True) -> int:
    """Put new pseudo-labels into an existing task layer, in place.

    Labels: the changed pixels, outside napari's undo history (see the module
    docstring); pixels a person corrected are kept (``keep_corrections``), and the new
    pseudo-labels become the reference. Images: the data is replaced (napari keeps no
    history for images). Returns the number of changed pixels.
    """
    if isinstance(layer, Labels):
        predicted = np.asarray(data, np.uint8)
        mask = corrected_mask(layer) if keep_corrections else None
        if mask is None or mask.shape != predicted.shape:
            mask = np.zeros(predicted.shape, bool)
        new = np.where(mask, np.asarray(layer.data), predicted) if mask.any() else predicted
        old_reference = layer_meta(layer).get("reference")
        n = write_labels_without_history(layer, new)
        # corrections that differ from the new pseudo-labels show as such through the
        # reference; those that agree with them stay marked
        set_correction_state(layer, mask & (new == predicted), reference=predicted)
        _rebase_history(layer, old_reference, predicted)
        return n
    new = np.asarray(data, np.float32)
    old = np.asarray(layer.data)
    if old.shape == new.shape:
        diff = ~((old == new) | (np.isnan(old) & np.isnan(new)))
        n = int(diff.any(axis=-1).sum() if new.ndim == 3 else diff.sum())
        if n == 0:
            return 0
    else:
        n = int(np.prod(new.shape[:2]))
    layer.data = new
    return n


__all__ += ["confidence_map", "new_task_layer", "update_task_layer", "task_planes"]
