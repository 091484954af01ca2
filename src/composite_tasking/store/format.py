"""The label store's format: its layout, constants, OME-Zarr attributes and ids.

The label store: pseudo-labels, corrections and their provenance, in one zarr v3 store.

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
            sha256: hex | null, sha256_of: "file" | "pixels" | null,
            size: int, mtime_ns: int   <- with a file's sha256, when known},
    labels: [names under labels/], maps: [names under maps/],
    provenance: {task: "ground-truth" | "pseudo" | "corrected"},
    created, updated (ISO 8601, UTC),
    <caller attrs: model_id, model_sha256, rule, palette_origin, ...>,
    complete: true                     <- written last

``image.sha256`` is the sha256 of the image *file's bytes* when the caller gives it (or,
for a reference, when the store reads ``image_source``), else the sha256 of the pixels:
the C-order bytes of the (H, W, 3) uint8 array (``sha256_of`` says which). Beside a
file's sha256, ``size`` and ``mtime_ns`` record the file's length and modification time
(ns) before its bytes were hashed (absent in stores written before): a check of an
image stored by reference reads the file only when they changed (:mod:`.sources`).

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

import json
import re
from datetime import datetime, timezone
from typing import Any, Mapping

from zarr.codecs import BloscCodec, ZstdCodec

from ..files import file_sha256  # noqa: F401 - the store's public name for it
from ..tasks import IGNORE, NO_TASK, TASKS, get_task

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
MAP_NAMES: tuple[str, ...] = ("edges_prob", "saliency_prob") + tuple(f"confidence_{t.name}" for t in TASKS)

#: chunk edge of maps of images larger than :data:`WHOLE_IMAGE_MAX_PIXELS`
TILE = 512
#: images up to this many pixels are stored as one chunk per array
WHOLE_IMAGE_MAX_PIXELS = 1024 * 1024
#: a stored normal must have length 1 within this tolerance (or be all zero = invalid)
NORMALS_TOLERANCE = 1e-2

INT_CODECS = (ZstdCodec(level=3),)
FLOAT_CODECS = (BloscCodec(cname="zstd", clevel=1, shuffle="shuffle", typesize=4),)

# Names an image id may not take (compared case-insensitively): the store's own groups
# and files, and names Windows cannot hold as a folder.
_RESERVED_IDS = {"labels", "maps", "zarr.json"}
_WINDOWS_DEVICES = {"con", "prn", "aux", "nul"} | {f"{p}{i}" for p in ("com", "lpt") for i in range(1, 10)}
_BAD_ID_CHARS = re.compile(r'[/\\<>:"|?*\x00-\x1f\x7f]')
_MAX_ID_LENGTH = 200

# Keys of an image group's attributes that callers cannot set through ``attrs``.
RESERVED_IMAGE_ATTRS = {
    "format", "format_version", "image_id", "shape", "image", "labels", "maps",
    "provenance", "created", "updated", "complete", "update_pending",
}  # fmt: skip
RESERVED_ROOT_ATTRS = {"format", "format_version", "created"}

_BINARY_CLASSES = {"edges": ("background", "edge"), "saliency": ("background", "salient")}


class StoreError(ValueError):
    """A label store, or something given to it, is invalid; the message says what."""


# --------------------------------------------------------------------------- helpers


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def chunk_shape(height: int, width: int) -> tuple[int, int]:
    """Chunk shape of a (y, x) map: the whole map when small, else :data:`TILE` squares."""
    if height * width <= WHOLE_IMAGE_MAX_PIXELS:
        return (max(1, height), max(1, width))
    return (min(height, TILE), min(width, TILE))


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
            f"image id {image_id!r} is not allowed: {problem} (an id names a folder: use e.g. the image file's name)"
        )
    return image_id


def json_attrs(attrs: Mapping | None, where: str, reserved: set[str]) -> dict:
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
            f"{where}: attribute(s) {clash} are set by the store and cannot be given; reserved: {sorted(reserved)}"
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


def label_group_attrs(name: str, with_source: bool) -> dict:
    colors, props = _label_table(name)
    image_label: dict[str, Any] = {"version": OME_VERSION, "colors": colors,
                                   "properties": props}  # fmt: skip
    if with_source:
        image_label["source"] = {"image": "../../"}
    own: dict[str, Any]
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


def image_ome(image_id: str) -> dict:
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


def map_attrs(name: str, channels: list[str] | None = None) -> dict:
    if name == SCORES:
        assert channels is not None, "the scores map's attributes name its channels"
        kinds = [map_attrs(c)[NS]["kind"] for c in channels]
        return {NS: {"kind": "scores", "layout": "(c, y, x)", "channels": list(channels),
                     "channel_kinds": kinds, "invalid": "NaN"}}  # fmt: skip
    if name == "normals":
        return {NS: {"kind": "normals", "task": "normals", "layout": "(3, y, x)",
                     "invalid": "all three components 0"}}  # fmt: skip
    if name.endswith("_prob"):
        task = name[: -len("_prob")]
        return {NS: {"kind": "probability", "task": task, "invalid": "NaN"}}
    task = name[len("confidence_") :]
    return {NS: {"kind": "confidence", "task": task, "invalid": "NaN"}}
