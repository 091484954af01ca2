"""Images a label store keeps by reference (``store_image=False``): what it records of
their file, and whether a file still is the one recorded.

An image's ``image`` attribute records the sha256 of its file's bytes (``sha256_of:
"file"``) and, since the store's writer records them, the file's ``size`` (bytes) and
``mtime_ns`` (modification time, ns) as they were before those bytes were read.
:func:`file_state` takes a file whose size and mtime are the recorded ones as unchanged
without reading it (what ``make`` and ``rsync`` trust: a tool that writes other bytes of
the same length and sets the old mtime back goes unseen here), and hashes it only when
they differ, or when only a sha256 was recorded (stores written before: every check then
reads the file). Reading the pixels (:meth:`.LabelStore.image_pixels`) always compares
the sha256 of the very bytes it decodes.

An image read from an object store (``s3://...``, a :class:`.location.Remote`) records
the object's size and ``LastModified`` (whole seconds) the same way: any PUT of the key
sets a new ``LastModified``, so an object of the same size whose time is the recorded
one was not written since (a PUT within the same second as the one labelled goes
unseen here, not by the pixels' sha256).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ..files import file_sha256
from .location import Remote

__all__ = ["STATE_REASONS", "STAT_KEYS", "file_state", "stat_record", "pixels_digest"]

#: what the ``image`` attribute records of a referenced file beside its sha256
STAT_KEYS = ("size", "mtime_ns")

#: :func:`file_state`'s answers, as the end of a sentence about the file
STATE_REASONS = {
    "missing": "is missing",
    "changed": "changed since the image was labelled (its sha256 is not the one recorded)",
    "unreadable": "cannot be read to compare it with the one labelled",
}


def pixels_digest(hwc: np.ndarray) -> str:
    """The sha256 of an image's pixels ((H, W, C) uint8), recorded (``sha256_of:
    "pixels"``) when no file's bytes were hashed."""
    return hashlib.sha256(np.ascontiguousarray(hwc).tobytes()).hexdigest()


def stat_record(st: os.stat_result) -> dict:
    """The ``size`` and ``mtime_ns`` of a file's ``os.stat``, as the store records them."""
    return {"size": int(st.st_size), "mtime_ns": int(st.st_mtime_ns)}


def file_state(info: Mapping, path: str | os.PathLike | Remote | None) -> str | None:
    """Why the file at ``path`` is not the file an image's ``image`` attribute (``info``)
    recorded: ``"missing"``, ``"changed"`` or ``"unreadable"`` (:data:`STATE_REASONS`);
    None when it still is, or when no file's sha256 was recorded to compare with
    (``sha256_of`` "pixels": the caller compares the decoded pixels). Reads the file
    only when its size or mtime differ from the recorded ones, or none were recorded."""
    if path is None:
        return "missing"
    if isinstance(path, Remote):
        return _object_state(info, path)
    try:
        st = os.stat(path)
    except OSError:
        return "missing"
    if not Path(path).is_file():
        return "missing"
    digest = info.get("sha256")
    if info.get("sha256_of") != "file" or not digest:
        return None
    size, mtime = info.get("size"), info.get("mtime_ns")
    if isinstance(size, int) and st.st_size != size:
        return "changed"  # another length: other bytes, no need to read them
    if isinstance(size, int) and isinstance(mtime, int) and st.st_mtime_ns == mtime:
        return None
    try:
        return None if file_sha256(path) == digest else "changed"
    except OSError:
        return "unreadable"


def _object_state(info: Mapping, obj: Remote) -> str | None:
    """:func:`file_state` of an object in an object store."""
    try:
        st = obj.stat_record()
    except (FileNotFoundError, IsADirectoryError):
        return "missing"
    except Exception:  # noqa: BLE001 - refused, unreachable: it cannot be compared
        return "unreadable"
    digest = info.get("sha256")
    if info.get("sha256_of") != "file" or not digest:
        return None
    size, mtime = info.get("size"), info.get("mtime_ns")
    if isinstance(size, int) and st["size"] != size:
        return "changed"
    if isinstance(size, int) and isinstance(mtime, int) and st["mtime_ns"] == mtime:
        return None
    try:
        return None if obj.sha256() == digest else "changed"
    except Exception:  # noqa: BLE001
        return "unreadable"
