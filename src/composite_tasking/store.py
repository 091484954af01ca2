"""The label store: pseudo-labels, corrections and their provenance, in one zarr v3 store.

One store holds many images; each image is one group, and each group is an
**OME-Zarr 0.5** image group, so that ome-zarr-py, napari-ome-zarr and any other
OME-Zarr reader open it without this package. Everything a reader needs (class names,
colours, ignore values, provenance) is written into the store's own metadata.

Layout
======

::

    STORE.zarr/                         zarr v3 group (not an OME-Zarr node)
      zarr.json                         {"composite_tasking": {"format": "ctn-label-store",
                                          "format_version": 2, "created": ..., <caller attrs>}}
      <image_id>/                       OME-Zarr 0.5 image group, one per image
        zarr.json                       {"ome": {"version": "0.5", "multiscales": [...],
                                                 "omero": {...}},
                                         "composite_tasking": {...image attrs, "complete": true}}
        0/                              the image: (c, y, x) uint8, dimension_names c, y, x
        labels/                         OME-Zarr labels group: {"ome": {"version": "0.5",
          palette/                        "labels": ["palette", "semseg", ...]}}
            0/                          (y, x) uint8: 0 = no task, task id + 1 elsewhere
          semseg/  0/                   (y, x) uint8: class 0..20, 255 = ignore
          parts/   0/                   (y, x) uint8: class 0..6, 255 = ignore
          edges/   0/                   (y, x) uint8: 0 / 1 (thresholded), 255 = ignore
          saliency/0/                   (y, x) uint8: 0 / 1 (thresholded), 255 = ignore
        maps/                           plain zarr group of float32 arrays
          normals                       (3, y, x): unit vectors; all three 0 = invalid
          scores                        (c, y, x): one channel per float map the sample has,
                                        named in the array's attributes ("channels"), in
                                        this order: edges_prob, saliency_prob (probabilities),
                                        confidence_<task> (in [0, 1]); NaN where not defined

Format version 1 (before 2026-11-28) kept each probability and confidence map as an
array of its own under ``maps/`` (``maps/edges_prob``, ``maps/confidence_semseg``, ...,
(y, x) each, listed in the image's ``maps`` attribute); :meth:`LabelStore.read_sample`
reads both, image by image, so a store written by both versions stays readable.
Version 2 writes them as one array: one ``zarr.json``, three folders and one chunk file
per image instead of six or seven of each (a store write is mostly the file system's
work of making small files and folders: docs/benchmarks.md).

What a person checked
---------------------

A task's ``provenance`` says who vouches for its labels (:data:`PROVENANCES`). For a
``corrected`` task, ``maps/corrected_<task>`` ((y, x) uint8, 1 where a person changed the
label; written by :meth:`LabelStore.write_correction_masks`, e.g. from napari, and by
:meth:`LabelStore.correct`) says which pixels; it is not listed in the image's ``maps``
attribute, so :meth:`LabelStore.read_sample` and OME-Zarr readers pass over it.
:meth:`LabelStore.checked_masks` turns both into the pixels a person checked: all labelled
pixels of a ``reviewed`` or ``ground-truth`` map, the masked ones of a ``corrected`` map
(all of them when no mask was written: stores from before the masks, or a caller that
gave none), none of a ``pseudo`` map. Training on a store uses exactly those pixels.

Only what a sample holds is written: a task the sample has no map for has no label
group, no provenance entry and no place in the ``labels`` list.

Each label image group (``labels/<name>``) carries, beside its ``multiscales``, an
``image-label`` object with one ``colors`` entry (``label-value`` + ``rgba``) and one
``properties`` entry (``label-value`` + ``class``, plus ``task`` and for the palette
``title``) for *every* value the map may hold, the ignore value included:

- ``palette``: 0 ``"none"`` transparent; task id + 1 -> the task's palette colour and name;
- ``semseg``, ``parts``: the class colours of :meth:`Task.class_colors` (the paper's class
  anchors, Tables 5 and 6) and the class names of :mod:`composite_tasking.tasks`;
- ``edges``, ``saliency``: 0 ``"background"`` black, 1 ``"edge"`` / ``"salient"`` in the
  task colour;
- 255 ``"ignore"`` transparent (alpha 0) in every task map.

It also carries ``{"composite_tasking": {"task", "kind", "ignore", ...}}`` so that the map
explains itself when opened alone.

Image attributes
----------------

``<image_id>/zarr.json`` ``attributes["composite_tasking"]``::

    format "ctn-label-image", format_version 2, image_id, shape [H, W],
    image: {stored: bool, path: "0" | null, source: str | null,
            sha256: hex | null, sha256_of: "file" | "pixels" | null},
    labels: [names under labels/], maps: [names under maps/],
    provenance: {task: "ground-truth" | "pseudo" | "corrected"},
    created, updated (ISO 8601, UTC),
    <caller attrs: model_id, model_sha256, rule, palette_origin, ...>,
    complete: true                     <- written last

``image.sha256`` is the sha256 of the image *file's bytes* when the caller gives it (or,
for a reference, when the store reads ``image_source``), else the sha256 of the pixels:
the C-order bytes of the (H, W, 3) uint8 array (``sha256_of`` says which).

Images stored by reference
--------------------------

``write_sample(..., store_image=False)`` keeps the path and the sha256 instead of the
pixels: no array ``0`` is written, and the image group gets **no** ``"ome"`` key (an
OME-Zarr image group must list at least one dataset in ``multiscales``, and there is
none). Its ``labels/`` group and every ``labels/<name>`` group stay valid OME-Zarr 0.5
(each label image is itself a multiscale image), so OME-Zarr readers open them
directly; their ``image-label`` then has no ``source`` (there is no image to point to).
:meth:`LabelStore.read_sample` returns ``image=None`` and the reference in
:attr:`StoredSample.image_source` / :attr:`StoredSample.image_sha256`.

Completion and atomicity
------------------------

An image counts as written only when its ``complete`` attribute is ``true``; it is set in
the group's final metadata write, after every array. (zarr's local store writes each
metadata file to a temporary file and renames it, so the marker is all-or-nothing.)

- :meth:`LabelStore.write_sample` validates the whole sample first and writes nothing if
  anything is wrong; then it deletes any earlier group of that id, creates it with
  ``complete: false``, writes the arrays, and last writes the OME metadata together with
  ``complete: true``. An interrupted write leaves an incomplete group: :meth:`ids` does
  not list it, and the next :meth:`write_sample` of that id rewrites it without asking
  for ``overwrite``. Overwriting a *complete* image needs ``overwrite=True`` and is not
  atomic: once the new write starts, the old image is gone.
- :meth:`LabelStore.update_labels` first rewrites the attributes with ``complete: false``
  and ``update_pending: [tasks]``, then the arrays, then ``complete: true`` with the new
  provenance and ``updated`` time. An interrupted update never leaves the image marked
  complete with half-written maps.
- :meth:`write_sample` and :meth:`update_labels` never write the store's root metadata,
  so several processes may write *different* images of one existing store at once
  (e.g. ``ctn label --shard I/N``); create the store once before starting them.

Chunks and compression
----------------------

Label maps and float maps of an image up to :data:`WHOLE_IMAGE_MAX_PIXELS` (1024 x 1024)
pixels are one chunk: the common case (PASCAL-sized images, ~500 x 375) is then one
file read per map for a whole-image read (training, :meth:`read_sample`). Larger images
are cut into :data:`TILE` x :data:`TILE` (512 x 512) chunks, which napari and dask read
tile by tile when a user pans a big image: 256 KiB per uint8 tile before compression,
1 MiB per float32 tile. The image is chunked the same way with one channel per chunk
(``(1, y, x)``), as napari-ome-zarr shows each channel as its own layer; normals are
chunked ``(3, y, x)`` as their three components are always read together, and the
scores ``(c, y, x)``: every float map of a tile in one chunk, read together (the
plugin and training read all of an image's maps at once).

Integer maps are compressed with zstd (zarr v3's ``zstd`` codec, level 3): label maps
are piecewise constant and shrink by one to two orders of magnitude. Float maps use
``blosc`` with zstd and byte shuffle, which groups the bytes of each float (exponent
with exponent): on a smooth probability map with a NaN region it came out about a sixth
smaller than plain zstd. Level 1: on the maps of a 256 x 256 mosaic prediction it
compressed 2.8x faster than level 5 (2.7 against 7.6 ms per image on one core) for 6 %
more bytes (compression ratio 5.2 against 5.6), and compressing the float maps at level
5 was about half of writing an image to a fast disk (tmpfs). Both codecs are part of the zarr v3 codec set (zarr-python, tensorstore,
zarrita, zarr.js read them). Chunks equal to the fill value (255 for task maps, 0 for the
palette and normals, NaN for float maps) are not written at all (zarr's default
``write_empty_chunks=False``), so a task requested on a small part of a large image
costs almost nothing.

Spec facts followed
===================

From the OME-Zarr 0.5 specification (https://ngff.openmicroscopy.org/0.5/, source
``0.5/index.bs`` of github.com/ome/ngff) and its JSON schemas (``0.5/schemas/label.schema``,
``strict_label.schema``, ``strict_image.schema``):

- OME-Zarr 0.5 is zarr v3; OME metadata lives in a group's ``zarr.json`` ``attributes``
  under the key ``"ome"``, with ``"version": "0.5"``; the version is consistent in a
  hierarchy. (Since 0.5 the version is no longer repeated inside ``multiscales``.)
- ``multiscales``: a list; each entry MUST have ``axes`` (2 to 5, each with a unique
  ``name`` and SHOULD have a ``type`` of space / time / channel; order time, channel,
  space) and ``datasets`` (each with ``path`` and ``coordinateTransformations`` holding
  exactly one ``scale`` of the length of ``axes``), SHOULD have ``name``. The
  ``dimension_names`` of each dataset array MUST match the axis names.
- Labels: a group named ``labels`` inside the image group, whose ``ome`` holds
  ``"labels": [paths]``; each label image is a multiscale image with integer pixels,
  the same number of ``datasets`` as the image, and SHOULD have ``image-label`` with
  ``colors`` (``label-value`` + ``rgba``, four integers 0..255, alpha last) and a
  ``version``; it MAY have ``properties`` (``label-value`` + arbitrary keys) and
  ``source`` (``{"image": "../../"}``, relative path to the image group).
- ``omero`` (transitional): per-channel ``color`` (hex RGB) and ``window``
  (min/max/start/end); written here so viewers show the three channels as red, green
  and blue over 0..255.

Cross-checked against ome-zarr-py 0.18 (``ome_zarr/writer.py`` writes 0.5 with
``"version"`` at the ``ome`` level and ``"version"`` inside ``image-label``;
``ome_zarr/reader.py`` reads ``colors`` / ``properties`` per ``label-value``) and
ome-zarr-models 1.6 (``ome_zarr_models/v05``: ``colors`` and ``properties`` must list
the same label values, label values unique, label arrays of integer dtype).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import zarr
from zarr.codecs import BloscCodec, ZstdCodec

from . import _zarr_files
from .tasks import IGNORE, NO_TASK, TASK_NAMES, TASKS, get_task

__all__ = [
    "StoreError",
    "LabelStore",
    "StoredSample",
    "STORE_FORMAT",
    "STORE_FORMAT_VERSION",
    "PROVENANCES",
    "PERSON_PROVENANCES",
    "CHECKED_PROVENANCES",
    "CORRECTED_PREFIX",
    "MAP_NAMES",
    "LABEL_NAMES",
    "TILE",
    "WHOLE_IMAGE_MAX_PIXELS",
    "chunk_shape",
    "file_sha256",
    "validate_image_id",
]

#: ``format`` of the store's root attributes
STORE_FORMAT = "ctn-label-store"
#: ``format`` of each image group's attributes
IMAGE_FORMAT = "ctn-label-image"
#: version of this layout; readers refuse a newer one (and read every older one)
STORE_FORMAT_VERSION = 2
#: the array under ``maps/`` that holds the probability and confidence maps as channels
SCORES = "scores"
#: namespace of this package's attributes in every ``zarr.json``
NS = "composite_tasking"
OME_VERSION = "0.5"

#: allowed provenance of a task's labels: ``pseudo`` a model's output nobody checked;
#: ``corrected`` a person changed some pixels (which ones: the correction mask,
#: :meth:`LabelStore.correction_masks`); ``reviewed`` a person checked the whole map and
#: accepted it (after corrections or not); ``ground-truth`` true labels
PROVENANCES = ("ground-truth", "pseudo", "corrected", "reviewed")
#: provenances of labels a person made or checked (or that are true): they teach a model,
#: and ``ctn label`` never overwrites them (never ``pseudo``: a model's own output)
PERSON_PROVENANCES = ("corrected", "reviewed", "ground-truth")
#: provenances whose every labelled pixel is checked (a ``corrected`` map: its mask's)
CHECKED_PROVENANCES = ("reviewed", "ground-truth")
#: name prefix of the correction masks under ``<image>/maps/``
CORRECTED_PREFIX = "corrected_"

#: integer label maps under ``labels/``, in the order they are listed
LABEL_NAMES: tuple[str, ...] = ("palette",) + tuple(t.name for t in TASKS if t.kind != "vector")
#: float maps under ``maps/`` other than ``normals``
MAP_NAMES: tuple[str, ...] = (
    ("edges_prob", "saliency_prob") + tuple(f"confidence_{t.name}" for t in TASKS)
)

#: chunk edge of maps of images larger than :data:`WHOLE_IMAGE_MAX_PIXELS`
TILE = 512
#: images up to this many pixels are stored as one chunk per array
WHOLE_IMAGE_MAX_PIXELS = 1024 * 1024
#: a stored normal must have length 1 within this tolerance (or be all zero = invalid)
NORMALS_TOLERANCE = 1e-2

_INT_CODECS = (ZstdCodec(level=3),)
_FLOAT_CODECS = (BloscCodec(cname="zstd", clevel=1, shuffle="shuffle", typesize=4),)

# Names an image id may not take (compared case-insensitively): the store's own groups
# and files, and names Windows cannot hold as a folder.
_RESERVED_IDS = {"labels", "maps", "zarr.json"}
_WINDOWS_DEVICES = {"con", "prn", "aux", "nul"} | {
    f"{p}{i}" for p in ("com", "lpt") for i in range(1, 10)
}
_BAD_ID_CHARS = re.compile(r'[/\\<>:"|?*\x00-\x1f\x7f]')
_MAX_ID_LENGTH = 200

# Keys of an image group's attributes that callers cannot set through ``attrs``.
_RESERVED_IMAGE_ATTRS = {
    "format", "format_version", "image_id", "shape", "image", "labels", "maps",
    "provenance", "created", "updated", "complete", "update_pending",
}  # fmt: skip
_RESERVED_ROOT_ATTRS = {"format", "format_version", "created"}

_BINARY_CLASSES = {"edges": ("background", "edge"), "saliency": ("background", "salient")}


class StoreError(ValueError):
    """A label store, or something given to it, is invalid; the message says what."""


# --------------------------------------------------------------------------- helpers


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def chunk_shape(height: int, width: int) -> tuple[int, int]:
    """Chunk shape of a (y, x) map: the whole map when small, else :data:`TILE` squares."""
    if height * width <= WHOLE_IMAGE_MAX_PIXELS:
        return (max(1, height), max(1, width))
    return (min(height, TILE), min(width, TILE))


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 (hex) of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def validate_image_id(image_id: object) -> str:
    """Return ``image_id`` if it can name an image group, else raise :class:`StoreError`.

    An id is a non-empty string of at most 200 characters that is usable as a folder
    name on every common file system: no ``/`` or ``\\``, none of ``<>:"|?*`` or control
    characters, no leading ``.`` (hidden; also keeps zarr's own names free), no leading or
    trailing space, no trailing ``.``, and none of the reserved names ``labels``, ``maps``,
    ``zarr.json`` or Windows device names (``con``, ``nul``, ``com1``, ...).
    """
    if not isinstance(image_id, str):
        raise StoreError(f"image id {image_id!r}: an image id is a string, "
                         f"got {type(image_id).__name__}")  # fmt: skip
    problem = None
    if not image_id:
        problem = "it is empty"
    elif len(image_id) > _MAX_ID_LENGTH:
        problem = f"it is longer than {_MAX_ID_LENGTH} characters"
    elif m := _BAD_ID_CHARS.search(image_id):
        problem = f"it contains the character {m.group()!r}"
    elif image_id.startswith("."):
        problem = "it starts with '.'"
    elif image_id != image_id.strip():
        problem = "it starts or ends with white space"
    elif image_id.endswith("."):
        problem = "it ends with '.'"
    elif image_id.lower() in _RESERVED_IDS:
        problem = "it is a reserved name"
    elif image_id.lower().split(".")[0] in _WINDOWS_DEVICES:
        problem = "it is a device name on Windows"
    if problem:
        raise StoreError(
            f"image id {image_id!r} is not allowed: {problem} (an id names a folder: use "
            "e.g. the image file's name)"
        )
    return image_id


def _json_attrs(attrs: Mapping | None, where: str, reserved: set[str]) -> dict:
    """Validate caller attributes: a JSON-serialisable mapping with no reserved keys."""
    if attrs is None:
        return {}
    if not isinstance(attrs, Mapping):
        raise StoreError(f"{where}: attrs must be a mapping, got {type(attrs).__name__}")
    bad = sorted(str(k) for k in attrs if not isinstance(k, str))
    if bad:
        raise StoreError(f"{where}: attribute names must be strings, got {bad}")
    clash = sorted(set(attrs) & reserved)
    if clash:
        raise StoreError(
            f"{where}: attribute(s) {clash} are set by the store and cannot be given; "
            f"reserved: {sorted(reserved)}"
        )
    try:
        text = json.dumps(dict(attrs), allow_nan=False)
    except (TypeError, ValueError) as e:
        raise StoreError(f"{where}: attrs must be JSON-serialisable (str, int, finite float, "
                         f"bool, None, lists, dicts): {e}") from None  # fmt: skip
    return json.loads(text)


def _rgba(rgb, alpha: int = 255) -> list[int]:
    return [int(c) for c in rgb] + [int(alpha)]


_TRANSPARENT = [0, 0, 0, 0]


def _label_table(name: str) -> tuple[list[dict], list[dict]]:
    """``colors`` and ``properties`` of ``image-label`` for the map ``name``."""
    colors: list[dict] = []
    props: list[dict] = []
    if name == "palette":
        colors.append({"label-value": NO_TASK, "rgba": list(_TRANSPARENT)})
        props.append({"label-value": NO_TASK, "class": "none", "title": "no task"})
        for t in TASKS:
            colors.append({"label-value": t.palette_value, "rgba": _rgba(t.color)})
            props.append({"label-value": t.palette_value, "class": t.name, "task": t.name,
                          "title": t.title})  # fmt: skip
        return colors, props
    task = get_task(name)
    if task.kind == "classes":
        rgbs = task.class_colors()
        for i, cls in enumerate(task.classes):
            colors.append({"label-value": i, "rgba": _rgba(rgbs[i])})
            props.append({"label-value": i, "class": cls, "task": task.name})
    else:  # thresholded probability
        names = _BINARY_CLASSES[task.name]
        colors.append({"label-value": 0, "rgba": [0, 0, 0, 255]})
        colors.append({"label-value": 1, "rgba": _rgba(task.color)})
        for i, cls in enumerate(names):
            props.append({"label-value": i, "class": cls, "task": task.name})
    colors.append({"label-value": IGNORE, "rgba": list(_TRANSPARENT)})
    props.append({"label-value": IGNORE, "class": "ignore", "task": task.name})
    return colors, props


def _multiscales(name: str, axes: list[dict]) -> list[dict]:
    return [{
        "name": name,
        "axes": axes,
        "datasets": [{"path": "0", "coordinateTransformations": [
            {"type": "scale", "scale": [1.0] * len(axes)}]}],
    }]  # fmt: skip


_YX_AXES = [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}]
_CYX_AXES = [{"name": "c", "type": "channel"}] + _YX_AXES


def _label_group_attrs(name: str, with_source: bool) -> dict:
    colors, props = _label_table(name)
    image_label: dict[str, Any] = {"version": OME_VERSION, "colors": colors,
                                   "properties": props}  # fmt: skip
    if with_source:
        image_label["source"] = {"image": "../../"}
    if name == "palette":
        own = {"task": None, "kind": "palette", "no_task": NO_TASK,
               "values": {str(t.palette_value): t.name for t in TASKS}}  # fmt: skip
    else:
        task = get_task(name)
        kind = "classes" if task.kind == "classes" else "binary"
        classes = list(task.classes or _BINARY_CLASSES[task.name])
        own = {"task": task.name, "kind": kind, "ignore": IGNORE, "classes": classes}
    return {
        "ome": {"version": OME_VERSION, "multiscales": _multiscales(name, _YX_AXES),
                "image-label": image_label},
        NS: own,
    }  # fmt: skip


def _image_ome(image_id: str) -> dict:
    channels = [
        {"label": lbl, "color": col, "active": True, "coefficient": 1, "family": "linear",
         "inverted": False, "window": {"min": 0, "max": 255, "start": 0, "end": 255}}
        for lbl, col in (("red", "FF0000"), ("green", "00FF00"), ("blue", "0000FF"))
    ]  # fmt: skip
    return {
        "version": OME_VERSION,
        "multiscales": _multiscales(image_id, _CYX_AXES),
        "omero": {"name": image_id, "channels": channels, "rdefs": {"model": "color"}},
    }


def _map_attrs(name: str, channels: list[str] | None = None) -> dict:
    if name == SCORES:
        kinds = [_map_attrs(c)[NS]["kind"] for c in channels]
        return {NS: {"kind": "scores", "layout": "(c, y, x)", "channels": list(channels),
                     "channel_kinds": kinds, "invalid": "NaN"}}  # fmt: skip
    if name == "normals":
        return {NS: {"kind": "normals", "task": "normals", "layout": "(3, y, x)",
                     "invalid": "all three components 0"}}  # fmt: skip
    if name.endswith("_prob"):
        task = name[: -len("_prob")]
        return {NS: {"kind": "probability", "task": task, "invalid": "NaN"}}
    task = name[len("confidence_"):]
    return {NS: {"kind": "confidence", "task": task, "invalid": "NaN"}}


# ------------------------------------------------------------------------ validation


@dataclass
class _Prepared:
    """A validated sample, ready to write: arrays in storage layout."""

    shape: tuple[int, int]
    image: np.ndarray | None  # (3, H, W) uint8
    labels: dict[str, np.ndarray] = field(default_factory=dict)  # LABEL_NAMES -> (H, W) uint8
    normals: np.ndarray | None = None  # (3, H, W) float32
    maps: dict[str, np.ndarray] = field(default_factory=dict)  # MAP_NAMES -> (H, W) float32


class _Checker:
    def __init__(self, image_id: str, verb: str):
        self.image_id = image_id
        self.verb = verb

    def fail(self, key: str, problem: str):
        raise StoreError(f"image {self.image_id!r}: {key}: {problem}; nothing was {self.verb}")

    def array(self, key: str, value) -> np.ndarray:
        if not isinstance(value, np.ndarray):
            try:
                value = np.asarray(value)
            except Exception:  # noqa: BLE001
                self.fail(key, f"expected a numpy array, got {type(value).__name__}")
        if value.dtype == object:
            self.fail(key, "expected a numeric numpy array, got dtype object")
        return value

    def shape(self, key: str, arr: np.ndarray, expected: tuple[int, ...], layout: str):
        if arr.shape != expected:
            self.fail(key, f"expected shape {layout} = {expected}, got {arr.shape}")

    def label_map(self, key: str, arr: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
        self.shape(key, arr, hw, "(H, W)")
        if arr.dtype == bool:
            arr = arr.astype(np.uint8)
        if not np.issubdtype(arr.dtype, np.integer):
            self.fail(key, f"expected an integer (uint8) label map, got dtype {arr.dtype}")
        if key == "palette":
            allowed = set(range(len(TASKS) + 1))
            meaning = f"0 (no task) or 1..{len(TASKS)} (task id + 1)"
        else:
            task = get_task(key)
            n = task.num_classes if task.kind == "classes" else 2
            allowed = set(range(n)) | {IGNORE}
            meaning = (f"0..{n - 1} (classes) or {IGNORE} (ignore)" if task.kind == "classes"
                       else f"0 or 1 (thresholded) or {IGNORE} (ignore)")  # fmt: skip
        if arr.size:
            lo, hi = int(arr.min()), int(arr.max())
            if lo < 0 or hi > 255:
                bad = lo if lo < 0 else hi
                self.fail(key, f"values must be {meaning}, found {bad}")
            arr = arr.astype(np.uint8, copy=False)
            ok = np.zeros(256, dtype=bool)
            ok[list(allowed)] = True
            okmask = ok[arr]
            if not okmask.all():
                bad_vals = np.unique(arr[~okmask])
                shown = ", ".join(str(int(v)) for v in bad_vals[:5])
                more = " ..." if bad_vals.size > 5 else ""
                self.fail(key, f"values must be {meaning}, found {shown}{more} "
                               f"at {int((~okmask).sum())} pixel(s)")  # fmt: skip
        return np.ascontiguousarray(arr, dtype=np.uint8)

    def image(self, arr: np.ndarray) -> np.ndarray:
        if arr.ndim != 3 or arr.shape[2] != 3:
            self.fail("image", f"expected an RGB image of shape (H, W, 3), got {arr.shape}")
        if arr.dtype != np.uint8:
            self.fail("image", f"expected dtype uint8, got {arr.dtype}")
        if min(arr.shape[:2]) < 1:
            self.fail("image", f"the image is empty, shape {arr.shape}")
        return arr

    def normals(self, arr: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
        self.shape("normals", arr, hw + (3,), "(H, W, 3)")
        if not np.issubdtype(arr.dtype, np.floating):
            self.fail("normals", f"expected float32 unit vectors, got dtype {arr.dtype}")
        arr = arr.astype(np.float32, copy=False)
        if not np.isfinite(arr).all():
            self.fail("normals", "found NaN or infinite values (mark invalid pixels with an "
                                 "all-zero vector)")  # fmt: skip
        norm = np.linalg.norm(arr, axis=-1)
        bad = (norm != 0) & (np.abs(norm - 1.0) > NORMALS_TOLERANCE)
        if bad.any():
            self.fail("normals", f"{int(bad.sum())} pixel(s) hold vectors that are neither unit "
                                 f"length (within {NORMALS_TOLERANCE}) nor all zero (invalid), "
                                 f"e.g. length {float(norm[bad].flat[0]):.4g}")  # fmt: skip
        return np.ascontiguousarray(np.moveaxis(arr, -1, 0))

    def float_map(self, key: str, arr: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
        self.shape(key, arr, hw, "(H, W)")
        if not np.issubdtype(arr.dtype, np.floating):
            self.fail(key, f"expected a float map, got dtype {arr.dtype}")
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        defined = ~np.isnan(arr)
        vals = arr[defined]
        if vals.size and (not np.isfinite(vals).all() or vals.min() < 0 or vals.max() > 1):
            bad = vals[~np.isfinite(vals) | (vals < 0) | (vals > 1)]
            self.fail(key, f"values must be in [0, 1] or NaN (not defined), "
                           f"found {float(bad.flat[0]):.4g}")  # fmt: skip
        return arr

    def provenance(self, provenance, tasks: set[str], required: bool) -> dict[str, str]:
        if provenance is None:
            provenance = {}
        if not isinstance(provenance, Mapping):
            self.fail("provenance", f"expected a mapping task -> one of {list(PROVENANCES)}, "
                                    f"got {type(provenance).__name__}")  # fmt: skip
        out = {}
        for key, value in provenance.items():
            if key == "palette":
                self.fail("provenance", "the palette has no provenance entry; say where it "
                                        "came from with attrs={'palette_origin': ...}")  # fmt: skip
            if key not in TASK_NAMES:
                self.fail("provenance", f"unknown task {key!r}; tasks: {', '.join(TASK_NAMES)}")
            if key not in tasks:
                self.fail("provenance", f"names task {key!r}, but there is no {key!r} map")
            if value not in PROVENANCES:
                self.fail("provenance", f"{key!r} is {value!r}; use one of {list(PROVENANCES)}")
            out[key] = str(value)
        missing = sorted(tasks - set(out), key=TASK_NAMES.index)
        if missing and required:
            self.fail("provenance", f"missing for {', '.join(missing)}; give each task map one "
                                    f"of {list(PROVENANCES)}")  # fmt: skip
        return out


_SAMPLE_KEYS = ("image", "palette", *TASK_NAMES, *MAP_NAMES, "confidence")


def _prepare(image_id: str, sample: Mapping, verb: str, *, need_image: bool,
             shape: tuple[int, int] | None = None, allow: tuple[str, ...] = _SAMPLE_KEYS
             ) -> _Prepared:  # fmt: skip
    """Check every array of ``sample`` and convert it to its stored layout."""
    chk = _Checker(image_id, verb)
    if not isinstance(sample, Mapping):
        raise StoreError(f"image {image_id!r}: a sample is a dict of numpy arrays, "
                         f"got {type(sample).__name__}; nothing was {verb}")  # fmt: skip
    unknown = [k for k in sample if k not in allow]
    if unknown:
        chk.fail(str(unknown[0]), f"unknown key; allowed keys: {', '.join(allow)}")
    entries = {k: v for k, v in sample.items() if v is not None}
    conf = entries.pop("confidence", None)
    if conf is not None:
        if not isinstance(conf, Mapping):
            chk.fail("confidence", "expected a dict task -> (H, W) float map")
        for task, arr in conf.items():
            key = f"confidence_{task}"
            if key not in MAP_NAMES:
                chk.fail("confidence", f"unknown task {task!r}; tasks: {', '.join(TASK_NAMES)}")
            if key in entries:
                chk.fail(key, "given twice (as a key and in 'confidence')")
            if arr is not None:
                entries[key] = arr
    arrays = {k: chk.array(k, v) for k, v in entries.items()}

    image = arrays.get("image")
    if image is not None:
        image = chk.image(image)
    elif need_image:
        chk.fail("image", "the sample has no image; pass store_image=False with image_source "
                          "to store a reference instead")  # fmt: skip
    # the (H, W) every array must share
    if shape is None:
        if image is not None:
            shape = image.shape[:2]
        else:
            for k in ("palette", *TASK_NAMES, *MAP_NAMES):
                if k in arrays:
                    a = arrays[k]
                    if a.ndim < 2 or min(a.shape[:2]) < 1:
                        chk.fail(k, f"expected a 2-D (H, W) map, got shape {a.shape}")
                    shape = a.shape[:2]
                    break
    if shape is None:
        chk.fail("sample", "it holds no image and no map")
    elif image is not None and image.shape[:2] != tuple(shape):
        chk.fail("image", f"expected shape (H, W, 3) = {tuple(shape) + (3,)}, got {image.shape}")
    hw = (int(shape[0]), int(shape[1]))

    out = _Prepared(shape=hw, image=None)
    if image is not None:
        out.image = np.ascontiguousarray(np.moveaxis(image, -1, 0))
    for name in LABEL_NAMES:
        if name in arrays:
            out.labels[name] = chk.label_map(name, arrays[name], hw)
    if "normals" in arrays:
        out.normals = chk.normals(arrays["normals"], hw)
    for name in MAP_NAMES:
        if name in arrays:
            out.maps[name] = chk.float_map(name, arrays[name], hw)
    return out


def _tasks_of(prep: _Prepared) -> set[str]:
    tasks = {k for k in prep.labels if k != "palette"}
    if prep.normals is not None:
        tasks.add("normals")
    return tasks


# ----------------------------------------------------------------------------- reading


@dataclass
class StoredSample:
    """One image read back from a :class:`LabelStore`.

    ``labels`` holds the task maps as in the canonical sample (uint8 (H, W) maps,
    ``normals`` float32 (H, W, 3)); ``valid`` one boolean (H, W) mask per task:
    ``!= 255`` for integer maps, a non-zero vector for normals, and in addition
    ``palette == task id + 1`` for *pseudo* labels when the image has a palette (a
    pseudo-label is only defined where it was asked for; ground truth and corrections
    count wherever they are not ignore). ``maps`` holds the float maps (``edges_prob``,
    ``saliency_prob``, ``confidence_<task>``, (H, W) float32).
    """

    image_id: str
    image: np.ndarray | None
    palette: np.ndarray | None
    labels: dict[str, np.ndarray]
    valid: dict[str, np.ndarray]
    maps: dict[str, np.ndarray]
    provenance: dict[str, str]
    attrs: dict

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.attrs["shape"])  # type: ignore[return-value]

    @property
    def image_source(self) -> str | None:
        """Where the image came from (file path or name) as given when it was written."""
        return self.attrs.get("image", {}).get("source")

    @property
    def image_sha256(self) -> str | None:
        """sha256 of the image file's bytes, or of its pixels (see ``attrs["image"]``)."""
        return self.attrs.get("image", {}).get("sha256")

    def to_sample(self) -> dict[str, np.ndarray]:
        """The canonical sample dict: image (when stored), palette, task maps, float maps."""
        out: dict[str, np.ndarray] = {}
        if self.image is not None:
            out["image"] = self.image
        if self.palette is not None:
            out["palette"] = self.palette
        out.update(self.labels)
        out.update(self.maps)
        return out


# ------------------------------------------------------------------------------- store


def _label_array_kw(name: str) -> dict:
    return {"fill_value": NO_TASK if name == "palette" else IGNORE, "dimension_names": ["y", "x"]}


def _map_array_kw(name: str, channels: list[str] | None = None) -> dict:
    if name == SCORES:
        return {"fill_value": float("nan"), "dimension_names": ["c", "y", "x"],
                "attributes": _map_attrs(name, channels)}  # fmt: skip
    if name == "normals":
        return {"fill_value": 0.0, "dimension_names": ["c", "y", "x"], "attributes": _map_attrs(name)}
    return {"fill_value": float("nan"), "dimension_names": ["y", "x"], "attributes": _map_attrs(name)}


class LabelStore:
    """A label store on the local file system (see the module docstring for the layout).

    ``mode``:

    - ``"r"``: read only; the store must exist.
    - ``"r+"``: read and write; the store must exist.
    - ``"a"``: read and write; creates the store when ``path`` does not exist (or is an
      empty folder). ``attrs`` are written only when it is created.
    - ``"w"``: create a new store with ``attrs``. An existing store that holds images is
      refused unless ``overwrite=True``; a path that holds anything but a label store is
      always refused (it is never deleted).
    """

    def __init__(self, path: str | os.PathLike, mode: str = "r", *,
                 attrs: Mapping | None = None, overwrite: bool = False):  # fmt: skip
        if mode not in ("r", "r+", "a", "w"):
            raise StoreError(f"unknown mode {mode!r}; use 'r', 'r+', 'a' or 'w'")
        self.path = Path(path)
        self.mode = mode
        where = f"label store {self.path}"
        root_attrs = _json_attrs(attrs, where, _RESERVED_ROOT_ATTRS)
        state = self._probe()
        if mode in ("r", "r+"):
            if state != "store":
                raise StoreError(self._missing_message(state))
            self._root = self._open("r" if mode == "r" else "r+")
        elif mode == "a":
            if state == "store":
                self._root = self._open("r+")
            elif state in ("absent", "empty"):
                self._root = self._create(root_attrs)
            else:
                raise StoreError(self._missing_message(state))
        else:  # "w"
            if state == "store":
                root = self._open("r")
                if any(True for _ in root.group_keys()) and not overwrite:
                    raise StoreError(
                        f"{where} already exists and holds images; pass overwrite=True to "
                        "replace it, or open it with mode 'a' to add to it"
                    )
                shutil.rmtree(self.path)
            elif state not in ("absent", "empty"):
                raise StoreError(
                    f"{where}: the path exists and is not a label store ({state}); it is "
                    "left as it is: choose another path or remove it yourself"
                )
            self._root = self._create(root_attrs)

    # ----------------------------------------------------------- opening / creating

    def _probe(self) -> str:
        p = self.path
        if not p.exists():
            return "absent"
        if not p.is_dir():
            return "a file"
        if not (p / "zarr.json").is_file():
            return "empty" if not any(p.iterdir()) else "a folder with other files"
        try:
            meta = json.loads((p / "zarr.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return "a folder with an unreadable zarr.json"
        if meta.get("node_type") != "group" or meta.get("zarr_format") != 3:
            return "a zarr array or a zarr v2 node"
        own = (meta.get("attributes") or {}).get(NS) or {}
        if own.get("format") != STORE_FORMAT:
            return "a zarr group that is not a label store"
        version = own.get("format_version")
        if not isinstance(version, int) or version > STORE_FORMAT_VERSION:
            return (f"a label store of format version {version!r}, newer than this package "
                    f"reads ({STORE_FORMAT_VERSION}); update napari-composite-tasking")
        return "store"

    def _missing_message(self, state: str) -> str:
        if state == "absent":
            return f"no label store at {self.path} (open it with mode 'a' or 'w' to create one)"
        return f"{self.path} is not a label store: it is {state}"

    def _open(self, mode: str) -> zarr.Group:
        return zarr.open_group(str(self.path), mode=mode, zarr_format=3)

    def _create(self, attrs: dict) -> zarr.Group:
        own = {"format": STORE_FORMAT, "format_version": STORE_FORMAT_VERSION,
               "created": _now(), **attrs}  # fmt: skip
        root = zarr.open_group(str(self.path), mode="w", zarr_format=3)
        root.attrs.put({NS: own})
        return self._open("r+")

    @classmethod
    def create(cls, path: str | os.PathLike, attrs: Mapping | None = None,
               overwrite: bool = False) -> "LabelStore":  # fmt: skip
        """Create a new, empty store (mode ``"w"``); see :class:`LabelStore`."""
        return cls(path, mode="w", attrs=attrs, overwrite=overwrite)

    def __enter__(self) -> "LabelStore":
        return self

    def __exit__(self, *exc) -> None:
        return None

    def __repr__(self) -> str:
        return f"LabelStore({str(self.path)!r}, mode={self.mode!r})"

    # ------------------------------------------------------------------ store attrs

    @property
    def attrs(self) -> dict:
        """The store's attributes (its ``"composite_tasking"`` root attributes), a copy."""
        root = zarr.open_group(str(self.path), mode="r", zarr_format=3)
        return json.loads(json.dumps(root.attrs.asdict().get(NS, {})))

    def update_attrs(self, attrs: Mapping) -> None:
        """Add or change store attributes (not ``format``, ``format_version``, ``created``)."""
        self._require_writable()
        new = _json_attrs(attrs, f"label store {self.path}", _RESERVED_ROOT_ATTRS)
        own = self.attrs
        own.update(new)
        self._root.attrs.put({**self._root.attrs.asdict(), NS: own})

    def _require_writable(self) -> None:
        if self.mode == "r":
            raise StoreError(f"label store {self.path} is open read-only (mode 'r'); "
                             "open it with mode 'r+' or 'a' to write")  # fmt: skip

    # --------------------------------------------------------------------- listing

    def _image_groups(self) -> Iterator[tuple[str, zarr.Group]]:
        root = zarr.open_group(str(self.path), mode="r", zarr_format=3)
        for name, group in root.groups():
            if isinstance(group.attrs.get(NS), dict):
                yield name, group

    def ids(self, complete_only: bool = True) -> list[str]:
        """Image ids, sorted; by default only completely written images."""
        return sorted(
            name for name, g in self._image_groups()
            if not complete_only or g.attrs[NS].get("complete") is True
        )  # fmt: skip

    def image_records(self, complete_only: bool = True) -> dict[str, dict]:
        """``{image_id: its "composite_tasking" attributes}`` for every image (by default
        only the completely written ones), in one pass over the store: what
        :meth:`image_attrs` gives for each, without opening each image again."""
        return {
            name: json.loads(json.dumps(g.attrs[NS])) for name, g in self._image_groups()
            if not complete_only or g.attrs[NS].get("complete") is True
        }  # fmt: skip

    def _group(self, image_id: str, mode: str = "r") -> zarr.Group | None:
        validate_image_id(image_id)
        try:
            node = zarr.open_group(str(self.path), mode="r", zarr_format=3)[image_id]
        except KeyError:
            return None
        if not isinstance(node, zarr.Group) or not isinstance(node.attrs.get(NS), dict):
            return None
        if mode != "r":
            node = zarr.open_group(str(self.path), mode="r+", zarr_format=3, path=image_id)
        return node

    def is_complete(self, image_id: str) -> bool:
        """True when ``image_id`` is in the store and was written completely."""
        g = self._group(image_id)
        return g is not None and g.attrs[NS].get("complete") is True

    def image_attrs(self, image_id: str) -> dict:
        """The ``"composite_tasking"`` attributes of one image (no arrays are read)."""
        g = self._group(image_id)
        if g is None:
            raise StoreError(f"image {image_id!r} is not in label store {self.path}")
        return json.loads(json.dumps(g.attrs[NS]))

    def __contains__(self, image_id: object) -> bool:
        try:
            return self.is_complete(image_id)  # type: ignore[arg-type]
        except StoreError:
            return False

    def __len__(self) -> int:
        return len(self.ids())

    def __iter__(self) -> Iterator[str]:
        return iter(self.ids())

    # --------------------------------------------------------------------- writing

    @staticmethod
    def _array_kwargs(name: str, data: np.ndarray, *, fill_value, dimension_names,
                      attributes: dict | None = None) -> dict:  # fmt: skip
        """How every array of the store is created: chunks, codecs, fill value, names."""
        h, w = data.shape[-2:]
        cy, cx = chunk_shape(h, w)
        if data.ndim == 3:
            chunks = (1 if name == "0" else data.shape[0], cy, cx)
        else:
            chunks = (cy, cx)
        codecs = _FLOAT_CODECS if np.issubdtype(data.dtype, np.floating) else _INT_CODECS
        return dict(shape=data.shape, dtype=data.dtype, chunks=chunks, compressors=codecs,
                    fill_value=fill_value, dimension_names=dimension_names,
                    attributes=attributes or {}, overwrite=True)  # fmt: skip

    def _write_array(self, group: zarr.Group, name: str, data: np.ndarray, **kw) -> None:
        """Write one array (one zarr call after another: corrections)."""
        arr = group.create_array(name, **self._array_kwargs(name, data, **kw))
        arr[...] = data

    def _write_label(self, labels_group: zarr.Group, name: str, data: np.ndarray,
                     with_source: bool) -> None:  # fmt: skip
        g = labels_group.create_group(name, overwrite=True,
                                      attributes=_label_group_attrs(name, with_source))  # fmt: skip
        self._write_array(g, "0", data, **_label_array_kw(name))

    def _write_map(self, maps_group: zarr.Group, name: str, data: np.ndarray) -> None:
        self._write_array(maps_group, name, data, **_map_array_kw(name))

    # A new image is written as plain files (``_zarr_files``: zarr's own metadata
    # documents, chunks encoded with zarr's codecs): through zarr's API each of its ~13
    # arrays costs ~2 ms of Python beyond compression, which bound ``ctn label`` on a GPU
    # (docs/benchmarks.md). Where that module cannot write an array (a codec or layout it
    # does not know), zarr's API writes the image.
    @staticmethod
    def _new_image_nodes(prep: "_Prepared", label_names: list[str], map_names: list[str],
                         store_image: bool) -> list[tuple[str, dict, np.ndarray | None]]:  # fmt: skip
        """The groups and arrays of a new image below its group, parents first:
        (path, group attributes or array keyword arguments, array data or None)."""
        nodes: list[tuple[str, dict, np.ndarray | None]] = []
        if prep.image is not None and store_image:
            nodes.append(("0", LabelStore._array_kwargs("0", prep.image, fill_value=0,
                                                        dimension_names=["c", "y", "x"]),
                          prep.image))  # fmt: skip
        if label_names:
            nodes.append(("labels", {"ome": {"version": OME_VERSION, "labels": label_names}}, None))
            for name in label_names:
                nodes.append((f"labels/{name}", _label_group_attrs(name, store_image), None))
                data = prep.labels[name]
                nodes.append((f"labels/{name}/0", LabelStore._array_kwargs("0", data, **_label_array_kw(name)),
                              data))  # fmt: skip
        if map_names:
            nodes.append(("maps", {}, None))
            if "normals" in map_names:
                nodes.append(("maps/normals", LabelStore._array_kwargs("normals", prep.normals,
                                                                      **_map_array_kw("normals")),
                              prep.normals))  # fmt: skip
            if SCORES in map_names:
                channels = [n for n in MAP_NAMES if n in prep.maps]
                scores = np.stack([prep.maps[n] for n in channels])
                nodes.append((f"maps/{SCORES}", LabelStore._array_kwargs(SCORES, scores,
                                                                        **_map_array_kw(SCORES, channels)),
                              scores))  # fmt: skip
        return nodes

    def _write_new_array(self, folder: Path, kwargs: dict, data: np.ndarray, template) -> None:
        """One array of a new image: as files with ``template``, else through zarr."""
        if template is not None:
            _zarr_files.write_array(folder, data, template)
        else:
            rel = folder.relative_to(self.path).as_posix()
            parent, _, name = rel.rpartition("/")
            arr = zarr.open_group(str(self.path), path=parent, mode="r+", zarr_format=3).create_array(
                name, **kwargs)
            arr[...] = data

    def write_sample(
        self,
        image_id: str,
        sample: Mapping[str, Any],
        *,
        provenance: Mapping[str, str],
        attrs: Mapping | None = None,
        store_image: bool = True,
        image_source: str | os.PathLike | None = None,
        image_sha256: str | None = None,
        overwrite: bool = False,
    ) -> None:
        """Write one image's sample (see the module docstring for what goes where).

        ``provenance`` gives each task map in the sample one of :data:`PROVENANCES`.
        ``attrs`` (JSON values) are stored with the image: model id and hash, rule,
        palette origin, ... ``store_image=False`` stores a reference (``image_source``
        and a sha256) instead of the pixels. ``image_sha256`` is the sha256 of the image
        file's bytes; without it, the store hashes the file at ``image_source`` when the
        pixels are not stored, else the pixels.

        Everything is validated before anything is written: a bad sample raises
        :class:`StoreError` naming the image, the key and the problem, and leaves the
        store as it was. A completely written image is replaced only with
        ``overwrite=True``; an incompletely written one is always rewritten.
        """
        self._require_writable()
        validate_image_id(image_id)
        existing = self._group(image_id)
        if existing is not None and existing.attrs[NS].get("complete") is True and not overwrite:
            raise StoreError(
                f"image {image_id!r} is already in label store {self.path}; pass "
                "overwrite=True to replace it, or update_labels() to correct some tasks"
            )
        prep = _prepare(image_id, sample, "written", need_image=store_image)
        chk = _Checker(image_id, "written")
        tasks = _tasks_of(prep)
        prov = chk.provenance(provenance, tasks, required=True)
        extra = _json_attrs(attrs, f"image {image_id!r}", _RESERVED_IMAGE_ATTRS)
        image_info = self._image_info(chk, prep, sample, store_image, image_source,
                                      image_sha256)  # fmt: skip

        folder = self.path / image_id
        now = _now()
        label_names = [n for n in LABEL_NAMES if n in prep.labels]
        map_names = (["normals"] if prep.normals is not None else []) + ([SCORES] if prep.maps else [])
        own: dict[str, Any] = {
            "format": IMAGE_FORMAT,
            "format_version": STORE_FORMAT_VERSION,
            "image_id": image_id,
            "shape": list(prep.shape),
            "image": image_info,
            "labels": label_names,
            "maps": map_names,
            "provenance": {t: prov[t] for t in TASK_NAMES if t in prov},
            "created": now,
            "updated": now,
            **extra,
        }
        nodes = self._new_image_nodes(prep, label_names, map_names, store_image)
        try:
            templates = [None if data is None else _zarr_files.prepare_array(kw) for _, kw, data in nodes]
        except _zarr_files.Unsupported:
            templates = [None] * len(nodes)

        # ---- nothing has been written up to here
        incomplete = {NS: {**own, "complete": False}}
        if folder.exists():  # an earlier write of this id (complete, or cut short anywhere)
            if (folder / "zarr.json").is_file():  # first unmark it: deleting can stop half way
                _zarr_files.replace_group_attrs(folder, incomplete)
            shutil.rmtree(folder)
        _zarr_files.write_group(folder, incomplete)
        for (rel, kw, data), template in zip(nodes, templates):
            if data is None:
                _zarr_files.write_group(folder / rel, kw)
            else:
                self._write_new_array(folder / rel, kw, data, template)
        final: dict[str, Any] = {}
        if store_image:
            final["ome"] = _image_ome(image_id)
        final[NS] = {**own, "complete": True}
        _zarr_files.replace_group_attrs(folder, final)  # the completion marker, last

    def _image_info(self, chk: _Checker, prep: _Prepared, sample: Mapping, store_image: bool,
                    source, sha256: str | None) -> dict:  # fmt: skip
        if source is not None and not isinstance(source, (str, os.PathLike)):
            chk.fail("image_source", f"expected a path or name, got {type(source).__name__}")
        source_s = None if source is None else os.fspath(source)
        if not store_image and source_s is None:
            chk.fail("image_source", "store_image=False keeps a reference to the image: "
                                     "give image_source (its path)")  # fmt: skip
        if sha256 is not None:
            if not (isinstance(sha256, str) and re.fullmatch(r"[0-9a-fA-F]{64}", sha256)):
                chk.fail("image_sha256", f"expected 64 hex digits, got {sha256!r}")
            digest, of = sha256.lower(), "file"
        elif not store_image:
            if Path(source_s).is_file():
                try:
                    digest, of = file_sha256(source_s), "file"
                except OSError as e:
                    chk.fail("image_source", f"cannot read {source_s} to hash it: {e}")
            elif prep.image is not None:
                digest, of = self._pixels_sha256(prep), "pixels"
            else:
                chk.fail("image_sha256", f"{source_s} is not a readable file and the sample "
                                         "has no image to hash; give image_sha256")  # fmt: skip
        elif prep.image is not None:
            digest, of = self._pixels_sha256(prep), "pixels"
        else:  # pragma: no cover - need_image makes this unreachable
            digest, of = None, None
        return {"stored": bool(store_image), "path": "0" if store_image else None,
                "source": source_s, "sha256": digest, "sha256_of": of}  # fmt: skip

    @staticmethod
    def _pixels_sha256(prep: _Prepared) -> str:
        assert prep.image is not None
        hwc = np.ascontiguousarray(np.moveaxis(prep.image, 0, -1))
        return hashlib.sha256(hwc.tobytes()).hexdigest()

    def update_labels(self, image_id: str, labels: Mapping[str, np.ndarray],
                      provenance: Mapping[str, str] | None = None, *,
                      attrs: Mapping | None = None) -> None:  # fmt: skip
        """Replace some task maps of a stored image, e.g. a person's corrections.

        ``labels`` maps task names (and optionally ``"palette"``) to arrays in the
        canonical sample layout; ``provenance`` gives each task its provenance and
        defaults to ``"corrected"``; ``attrs`` (JSON values) are merged into the image's
        attributes (e.g. ``{"palette_origin": "painted"}`` with a repainted palette).
        Other tasks, the image and the float maps stay as they are (a confidence map
        keeps describing the pseudo-label it came with; the provenance says the task was
        corrected); ``updated`` is set to now. The image must be completely written. The
        arrays are validated before anything is written; during the write the image is
        marked incomplete (with ``update_pending``), so an interrupted update is never
        mistaken for a complete image.
        """
        self._require_writable()
        validate_image_id(image_id)
        group = self._group(image_id, mode="r+")
        if group is None:
            raise StoreError(f"image {image_id!r} is not in label store {self.path}")
        own = json.loads(json.dumps(group.attrs[NS]))
        if own.get("complete") is not True:
            raise StoreError(f"image {image_id!r} in {self.path} is incompletely written; "
                             "write it again with write_sample()")  # fmt: skip
        allowed = ("palette", *TASK_NAMES)
        prep = _prepare(image_id, labels, "updated", need_image=False,
                        shape=tuple(own["shape"]), allow=allowed)  # fmt: skip
        chk = _Checker(image_id, "updated")
        tasks = _tasks_of(prep)
        if not tasks and not prep.labels:
            chk.fail("labels", f"nothing to update; give maps of {', '.join(allowed)}")
        given = chk.provenance(provenance, tasks, required=False)
        prov = {t: given.get(t, "corrected") for t in tasks}
        extra = _json_attrs(attrs, f"image {image_id!r}", _RESERVED_IMAGE_ATTRS)

        # ---- nothing has been written up to here
        pending = [n for n in (*LABEL_NAMES, "normals") if n in prep.labels or
                   (n == "normals" and prep.normals is not None)]  # fmt: skip
        full = group.attrs.asdict()
        full[NS] = {**{k: v for k, v in own.items() if k != "complete"},
                    "update_pending": pending, "complete": False}  # fmt: skip
        group.attrs.put(full)

        label_names = list(own.get("labels", []))
        if prep.labels:
            with_source = bool(own.get("image", {}).get("stored"))
            lg = group["labels"] if "labels" in group else group.create_group("labels")
            for name in LABEL_NAMES:
                if name in prep.labels:
                    self._write_label(lg, name, prep.labels[name], with_source=with_source)
                    if name not in label_names:
                        label_names.append(name)
            label_names = [n for n in LABEL_NAMES if n in label_names]
            lg.attrs.put({"ome": {"version": OME_VERSION, "labels": label_names}})
        map_names = list(own.get("maps", []))
        if prep.normals is not None:
            mg = group["maps"] if "maps" in group else group.create_group("maps")
            self._write_map(mg, "normals", prep.normals)
            if "normals" not in map_names:
                map_names.insert(0, "normals")

        own["labels"] = label_names
        own["maps"] = map_names
        provenance_all = {**own.get("provenance", {}), **prov}
        own["provenance"] = {t: provenance_all[t] for t in TASK_NAMES if t in provenance_all}
        own.update(extra)
        own["updated"] = _now()
        own.pop("complete", None)
        own.pop("update_pending", None)
        full = group.attrs.asdict()
        full[NS] = {**own, "complete": True}
        group.attrs.put(full)

    # ---------------------------------------------------------- what a person checked

    def correction_masks(self, image_id: str) -> dict[str, np.ndarray]:
        """The correction masks kept beside one image: task -> bool (H, W), True where a
        person changed the label; only the tasks that have one."""
        group = self._group(image_id)
        if group is None:
            raise StoreError(f"image {image_id!r} is not in label store {self.path}")
        if "maps" not in group:
            return {}
        maps = group["maps"]
        return {t: np.asarray(maps[CORRECTED_PREFIX + t][...]).astype(bool)
                for t in TASK_NAMES if CORRECTED_PREFIX + t in maps}  # fmt: skip

    def write_correction_masks(self, image_id: str, masks: Mapping[str, np.ndarray]) -> None:
        """Write (replace) the correction masks of some tasks of a stored image: bool or
        0/1 (H, W) per task, True where a person changed the label. Written after the
        labels (an interrupted write leaves a ``corrected`` task with no mask: all its
        pixels then count as checked, see :meth:`checked_masks`)."""
        self._require_writable()
        group = self._group(image_id, mode="r+")
        if group is None:
            raise StoreError(f"image {image_id!r} is not in label store {self.path}")
        shape = tuple(group.attrs[NS]["shape"])
        for task, mask in masks.items():
            if task not in TASK_NAMES:
                raise StoreError(f"image {image_id!r}: correction mask of unknown task {task!r}; "
                                 f"tasks: {', '.join(TASK_NAMES)}")  # fmt: skip
            if np.shape(mask) != shape:
                raise StoreError(f"image {image_id!r}: the correction mask of {task} is "
                                 f"{np.shape(mask)}, the image {shape}")  # fmt: skip
        maps = group["maps"] if "maps" in group else group.create_group("maps")
        for task, mask in masks.items():
            h, w = shape
            arr = maps.create_array(
                CORRECTED_PREFIX + task, shape=(h, w), dtype="uint8", chunks=chunk_shape(h, w),
                compressors=_INT_CODECS, fill_value=0, dimension_names=["y", "x"],
                attributes={NS: {"kind": "corrected", "task": task,
                                 "meaning": "1 = a person changed this pixel's label"}},
                overwrite=True,
            )  # fmt: skip
            arr[...] = np.asarray(mask).astype(np.uint8)

    def correct(self, image_id: str, labels: Mapping[str, np.ndarray], *, reviewed: bool = False,
                attrs: Mapping | None = None) -> dict[str, int]:  # fmt: skip
        """A person's corrections of some task maps (and optionally the palette): the
        maps are replaced (:meth:`update_labels`, provenance ``corrected``, or
        ``reviewed`` with ``reviewed=True``: the whole map checked), and the pixels that
        changed are added to each task's correction mask. Returns task -> pixels changed.
        The same two writes napari's save makes."""
        stored = self.read_sample(image_id)
        masks = self.correction_masks(image_id)
        changed: dict[str, np.ndarray] = {}
        for task, new in labels.items():
            if task == "palette":
                continue
            old = stored.labels.get(task)
            new = np.asarray(new)
            if old is None or old.shape != new.shape:
                diff = np.ones(new.shape[:2], bool)
            elif task == "normals":
                diff = np.any(old != new, axis=-1)
            else:
                diff = old != new
            changed[task] = masks.get(task, np.zeros(diff.shape, bool)) | diff
        tasks = [t for t in labels if t != "palette"]
        prov = {t: "reviewed" if reviewed else "corrected" for t in tasks}
        self.update_labels(image_id, labels, prov, attrs=attrs)
        if changed:
            self.write_correction_masks(image_id, changed)
        return {t: int(m.sum()) for t, m in changed.items()}

    def mark_reviewed(self, image_id: str, tasks: Sequence[str] | None = None,
                      reviewed: bool = True) -> dict[str, str]:  # fmt: skip
        """Mark tasks of an image reviewed (a person checked every pixel and accepts the
        labels as they are: training data), default every task it holds; ground truth
        stays ground truth. ``reviewed=False`` takes it back: ``corrected`` when the task
        has a correction mask with a pixel set, else ``pseudo``. One metadata write (the
        image stays complete throughout). Returns the new provenance."""
        self._require_writable()
        group = self._group(image_id, mode="r+")
        if group is None:
            raise StoreError(f"image {image_id!r} is not in label store {self.path}")
        own = json.loads(json.dumps(group.attrs[NS]))
        if own.get("complete") is not True:
            raise StoreError(f"image {image_id!r} in {self.path} is incompletely written")
        prov = dict(own.get("provenance", {}))
        chosen = list(prov) if tasks is None else list(tasks)
        unknown = [t for t in chosen if t not in prov]
        if unknown:
            raise StoreError(f"image {image_id!r} in {self.path} has no {', '.join(map(repr, unknown))} "
                             f"labels; it has {', '.join(prov) or 'none'}")  # fmt: skip
        masks = {} if reviewed else self.correction_masks(image_id)
        for t in chosen:
            if prov[t] == "ground-truth":
                continue
            if reviewed:
                prov[t] = "reviewed"
            elif prov[t] == "reviewed":
                prov[t] = "corrected" if t in masks and masks[t].any() else "pseudo"
        own["provenance"] = prov
        own["updated"] = _now()
        full = group.attrs.asdict()
        full[NS] = own
        group.attrs.put(full)
        return prov

    def checked_masks(self, image_id: str, sample: "StoredSample | None" = None) -> dict[str, np.ndarray]:
        """Task -> bool (H, W): the pixels whose labels a person checked (module doc, "What
        a person checked"), within each task's valid pixels. ``sample``: the image's
        :meth:`read_sample`, when the caller has it."""
        s = self.read_sample(image_id) if sample is None else sample
        masks = None
        out = {}
        for task, valid in s.valid.items():
            prov = s.provenance.get(task, "pseudo")
            if prov in CHECKED_PROVENANCES:
                out[task] = valid.copy()
            elif prov == "corrected":
                if masks is None:
                    masks = self.correction_masks(image_id)
                m = masks.get(task)
                out[task] = valid.copy() if m is None or m.shape != valid.shape else valid & m
            else:
                out[task] = np.zeros_like(valid)
        return out

    def remove(self, image_id: str) -> None:
        """Delete one image (complete or not) from the store."""
        self._require_writable()
        if self._group(image_id) is None:
            raise StoreError(f"image {image_id!r} is not in label store {self.path}")
        del self._open("r+")[image_id]

    # --------------------------------------------------------------------- reading

    def read_sample(self, image_id: str, *, allow_incomplete: bool = False) -> StoredSample:
        """Read one image back; see :class:`StoredSample`."""
        group = self._group(image_id)
        if group is None:
            raise StoreError(f"image {image_id!r} is not in label store {self.path}")
        own = json.loads(json.dumps(group.attrs[NS]))
        if own.get("complete") is not True and not allow_incomplete:
            raise StoreError(f"image {image_id!r} in {self.path} is incompletely written "
                             "(interrupted); write it again")  # fmt: skip
        version = own.get("format_version")
        if not isinstance(version, int) or version > STORE_FORMAT_VERSION:
            raise StoreError(f"image {image_id!r}: format version {version!r} is newer than "
                             f"this package reads ({STORE_FORMAT_VERSION})")  # fmt: skip

        image = None
        if "0" in group:
            image = np.ascontiguousarray(np.moveaxis(np.asarray(group["0"][...]), 0, -1))
        palette = None
        labels: dict[str, np.ndarray] = {}
        if "labels" in group:
            lg = group["labels"]
            for name in lg.attrs.get("ome", {}).get("labels", []):
                if name not in lg or "0" not in lg[name]:  # an interrupted write
                    continue
                arr = np.asarray(lg[name]["0"][...])
                if name == "palette":
                    palette = arr
                else:
                    labels[name] = arr
        maps: dict[str, np.ndarray] = {}
        if "maps" in group:
            mg = group["maps"]
            for name in own.get("maps", []):
                if name not in mg:
                    continue
                arr = np.asarray(mg[name][...])
                if name == "normals":
                    labels["normals"] = np.ascontiguousarray(np.moveaxis(arr, 0, -1))
                elif name == SCORES:  # format 2: the float maps as channels
                    channels = mg[name].attrs.get(NS, {}).get("channels", [])
                    if len(channels) != arr.shape[0]:
                        raise StoreError(f"image {image_id!r} in {self.path}: maps/{SCORES} has "
                                         f"{arr.shape[0]} channels and names {len(channels)}")  # fmt: skip
                    maps.update((c, np.ascontiguousarray(arr[k])) for k, c in enumerate(channels))
                else:  # format 1: an array per map
                    maps[name] = arr
        labels = {t: labels[t] for t in TASK_NAMES if t in labels}
        provenance = dict(own.get("provenance", {}))
        valid: dict[str, np.ndarray] = {}
        for task, arr in labels.items():
            v = np.any(arr != 0, axis=-1) if task == "normals" else arr != IGNORE
            if palette is not None and provenance.get(task) == "pseudo":
                v &= palette == get_task(task).palette_value
            valid[task] = v
        return StoredSample(image_id=image_id, image=image, palette=palette, labels=labels,
                            valid=valid, maps=maps, provenance=provenance, attrs=own)  # fmt: skip

