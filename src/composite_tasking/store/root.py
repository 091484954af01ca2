"""A label store's root: what a path holds (a label store this package reads, or what
else: :func:`probe`, the format check of its ``zarr.json``: :func:`judge`), and the root
of a new store (:func:`create`). Opening a store in a mode: :class:`.LabelStore`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import zarr

from . import remote_io
from .format import NS, STORE_FORMAT, STORE_FORMAT_VERSION, now_iso
from .location import Remote

__all__ = ["probe", "judge", "missing_message", "create"]


def probe(path: Path | Remote) -> str:
    """What ``path`` holds: ``"store"`` (a label store this package reads), ``"absent"``,
    ``"empty"`` (an empty folder), or what else, as the end of a sentence ("a file", "a
    zarr group that is not a label store", a store of a newer format version, ...)."""
    if isinstance(path, Remote):
        state, meta = remote_io.probe(path)
        return state if meta is None else judge(meta)
    p = path
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
    return judge(meta)


def judge(meta: Any) -> str:
    """What a store's root ``zarr.json`` (parsed) says the path is."""
    if not isinstance(meta, dict):
        return "a folder with an unreadable zarr.json"
    if meta.get("node_type") != "group" or meta.get("zarr_format") != 3:
        return "a zarr array or a zarr v2 node"
    own = (meta.get("attributes") or {}).get(NS) or {}
    if own.get("format") != STORE_FORMAT:
        return "a zarr group that is not a label store"
    version = own.get("format_version")
    if not isinstance(version, int) or version > STORE_FORMAT_VERSION:
        return (
            f"a label store of format version {version!r}, newer than this package "
            f"reads ({STORE_FORMAT_VERSION}); update napari-composite-tasking"
        )
    return "store"


def missing_message(path: Path | Remote, state: str) -> str:
    """Why ``path`` (:func:`probe`'s ``state``) cannot be opened as a label store."""
    if state == "absent":
        return f"no label store at {path} (open it with mode 'a' or 'w' to create one)"
    return f"{path} is not a label store: it is {state}"


def create(path: Path | Remote, attrs: dict) -> None:
    """Write the root of a new store at ``path`` (absent, or an empty folder), with the
    caller's ``attrs`` (checked) beside the format and the time it was created."""
    own = {"format": STORE_FORMAT, "format_version": STORE_FORMAT_VERSION,
           "created": now_iso(), **attrs}  # fmt: skip
    if isinstance(path, Remote):  # one conditional PUT: never a deletion, and one creator wins a race
        remote_io.create_root(path, {NS: own})
        return
    root = zarr.open_group(str(path), mode="w", zarr_format=3)
    root.attrs.put({NS: own})
