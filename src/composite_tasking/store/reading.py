"""Reading an image back from a label store: its group as a :class:`.StoredSample` (both
format versions, :mod:`.format`), and, for an image stored by reference, its file found
and checked against what was recorded of it (:mod:`.sources`). What each does for its
caller: :meth:`.LabelStore.read_sample`, :meth:`.LabelStore.image_pixels`,
:meth:`.LabelStore.source_problem`."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Mapping

import numpy as np
import zarr

from ..tasks import IGNORE, TASK_NAMES, get_task
from . import remote_io
from .format import NS, SCORES, StoreError
from .location import Remote
from .sample import StoredSample
from .sources import STATE_REASONS, file_state, pixels_digest

__all__ = ["read_group", "source_path", "source_problem", "image_pixels"]


def read_group(group: zarr.Group, image_id: str, own: dict, where, maps: bool = True) -> StoredSample:
    """The image ``group`` (its attributes ``own``, checked) of the store at ``where``
    read back; ``maps=False`` leaves out the float maps (the normals are read)."""
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
    float_maps: dict[str, np.ndarray] = {}
    if "maps" in group:
        mg = group["maps"]
        for name in own.get("maps", []):
            if name not in mg or (not maps and name != "normals"):
                continue
            arr = np.asarray(mg[name][...])
            if name == "normals":
                labels["normals"] = np.ascontiguousarray(np.moveaxis(arr, 0, -1))
            elif name == SCORES:  # format 2: the float maps as channels
                channels = mg[name].attrs.get(NS, {}).get("channels", [])
                if len(channels) != arr.shape[0]:
                    raise StoreError(f"image {image_id!r} in {where}: maps/{SCORES} has "
                                     f"{arr.shape[0]} channels and names {len(channels)}")  # fmt: skip
                float_maps.update((c, np.ascontiguousarray(arr[k])) for k, c in enumerate(channels))
            else:  # format 1: an array per map
                float_maps[name] = arr
    labels = {t: labels[t] for t in TASK_NAMES if t in labels}
    provenance = dict(own.get("provenance", {}))
    valid: dict[str, np.ndarray] = {}
    for task, arr in labels.items():
        v = np.any(arr != 0, axis=-1) if task == "normals" else arr != IGNORE
        if palette is not None and provenance.get(task) == "pseudo":
            v &= palette == get_task(task).palette_value
        valid[task] = v
    return StoredSample(image_id=image_id, image=image, palette=palette, labels=labels,
                        valid=valid, maps=float_maps, provenance=provenance, attrs=own)  # fmt: skip


# ---------------------------------------------------------------- images by reference


def source_path(store_path: Path | Remote, source: str | None) -> Path | Remote | None:
    """The file (or object) of an image's recorded ``source`` for the store at
    ``store_path`` (:meth:`.LabelStore.source_file`); None when it is not there."""
    if not source:
        return None
    if isinstance(store_path, Remote) or remote_io.is_url(source):
        return remote_io.source_path(store_path, source)
    return next((p for p in (Path(source), store_path / source) if p.is_file()), None)


def source_problem(store_path: Path | Remote, image_id: str, attrs: Mapping) -> tuple[str, str] | None:
    """(file, why) when the file of an image stored by reference (its attributes
    ``attrs``) is missing or no longer the one recorded; None when it is, or when the
    image's pixels are stored (:meth:`.LabelStore.source_problem`)."""
    info = attrs.get("image") or {}
    if info.get("stored", True) is not False:
        return None
    source = info.get("source")
    path = source_path(store_path, source)
    state = file_state(info, path)
    return None if state is None else (str(path or source or image_id), STATE_REASONS[state])


def image_pixels(store_path: Path | Remote, sample: StoredSample) -> np.ndarray:
    """The pixels of a stored image, its file's when stored by reference, checked
    against the record (:meth:`.LabelStore.image_pixels`)."""
    if sample.image is not None:
        return sample.image
    from ..images import ImageReadError, read_image

    path = source_path(store_path, sample.image_source)
    if path is None:
        raise ImageReadError(sample.image_source or sample.image_id,
                             "the image is stored by reference and its file is missing")  # fmt: skip
    info = sample.attrs.get("image") or {}
    recorded, of = info.get("sha256"), info.get("sha256_of")
    changed = f"the image file {STATE_REASONS['changed']}"
    try:
        data = path.read_bytes()  # read once: the pixels are those of the bytes hashed
    except OSError as e:
        raise ImageReadError(path, f"cannot read: {e.strerror or e}") from None
    if of == "file" and recorded and hashlib.sha256(data).hexdigest() != recorded:
        raise ImageReadError(path, changed)
    pixels = read_image(path, data=data)
    if of == "pixels" and recorded and pixels_digest(pixels) != recorded:
        raise ImageReadError(path, changed)
    shape = tuple(sample.attrs.get("shape") or ())
    if shape and pixels.shape[:2] != shape:
        raise ImageReadError(
            path,
            f"the image file is {pixels.shape[0]}x{pixels.shape[1]} pixels, its "
            f"labels {shape[0]}x{shape[1]}: it changed since the image was labelled",
        )
    return pixels
