"""A label store in an object store (S3 and the like, :class:`.location.Remote`): what
:class:`.LabelStore` does there instead of renaming and deleting files.

An object store has no folders and no rename, but a PUT replaces an object in one step
(a reader gets the old bytes or the new ones, never a mix) and S3 can create an object
only when its key is free (a conditional PUT, ``If-None-Match: *``). The store's
guarantees rest on these two:

- **Creating a store** is one conditional PUT of its root ``zarr.json``
  (:func:`create_root`): of several processes creating it at once (shards started by
  torchrun), one creates it and the others find it and open it; nothing is ever deleted
  (zarr's own mode ``"w"`` would empty the prefix, the other processes' images with it).
- **An image's completion marker** is its group's ``zarr.json``: written first marked
  incomplete (one PUT), then every array (their metadata and chunks, written together),
  then replaced by the complete one (one PUT), last (:func:`write_image`). A killed
  writer leaves an image without the marker, which the next run redoes; an earlier
  write of the id is unmarked first, then its objects deleted (:func:`delete_prefix`),
  so a deletion cut short never leaves a complete-looking image.
- **Files beside the store** (claims, :mod:`composite_tasking.label.claims`) are objects
  created with the conditional PUT.
"""

from __future__ import annotations

import json
from typing import Any

from . import fast_files
from .location import LocationError, Remote, is_url, locate

__all__ = ["probe", "create_root", "delete_prefix", "write_image", "source_path", "is_url"]


def _guard(remote: Remote, doing: str, call, *args, **kw):
    """``call(*args, **kw)``; an object-store failure other than a missing key as one
    :class:`.location.LocationError` line naming the URL."""
    try:
        return call(*args, **kw)
    except (FileNotFoundError, FileExistsError, LocationError):
        raise
    except Exception as e:  # noqa: BLE001 - botocore's, aiohttp's, s3fs's: said in one line
        raise remote.error(e, doing) from None


def probe(remote: Remote) -> tuple[str, Any]:
    """(state, the root's parsed ``zarr.json`` or None): ``"absent"`` when nothing is under
    the prefix, ``"a folder with other files"`` when objects but no ``zarr.json`` are,
    ``"a folder with an unreadable zarr.json"``. Checks the bucket first (one line when it
    is missing, refused or unreachable)."""
    remote.check()
    fs = remote.fs
    root = f"{remote.path}/zarr.json"
    for _ in range(2):  # again when the root appeared between the read and the listing (another shard made it)
        try:
            raw = _guard(remote, "reading the store", fs.cat_file, root)
        except FileNotFoundError:
            try:
                listed = _guard(remote, "listing the store", fs.ls, remote.path, detail=False)
            except FileNotFoundError:
                listed = []
            if root in listed:
                continue
            return ("absent" if not listed else "a folder with other files"), None
        try:
            return "store", json.loads(raw)
        except ValueError:
            return "a folder with an unreadable zarr.json", None
    return "a folder with an unreadable zarr.json", None


def create_root(remote: Remote, attributes: dict) -> bool:
    """The store's root group document, created only when no other is there (conditional
    PUT); False when another process created it first (its store is then used)."""
    doc = fast_files.group_document(attributes)
    return _guard(remote, "creating the store", (remote / "zarr.json").put, doc, exclusive=True)


def delete_prefix(remote: Remote) -> None:
    """Every object below ``remote`` (a store, an image group): listed, then deleted."""
    fs = remote.fs
    try:
        keys = _guard(remote, "listing", fs.find, remote.path)
    except FileNotFoundError:
        return
    keys = [k for k in keys if k.startswith(remote.path + "/")]  # never a sibling of a longer name
    if keys:
        _guard(remote, "deleting", fs.rm, keys)


def write_image(store: Any, image_id: str, nodes: list, templates: list, incomplete: dict,
                final: dict) -> None:  # fmt: skip
    """A new image's objects, as :meth:`.LabelStore.write_sample` writes its files: the
    group marked incomplete, the groups and arrays below it, then the completion marker.
    ``store``: the :class:`.LabelStore` (its ``path`` and, for an array this module does
    not write, its zarr groups)."""
    root: Remote = store.path
    group = root / image_id
    fs = root.fs
    try:
        old = _guard(group, "listing", fs.find, group.path)
    except FileNotFoundError:
        old = []
    old = [k for k in old if k.startswith(group.path + "/")]
    if old:  # an earlier write of this id: unmarked first (a deletion can stop half way)
        if f"{group.path}/zarr.json" in old:
            _guard(group, "writing", (group / "zarr.json").put, fast_files.group_document(incomplete))
        _guard(group, "deleting", fs.rm, old)
    _guard(group, "writing", (group / "zarr.json").put, fast_files.group_document(incomplete))
    objects: dict[str, bytes] = {}
    by_zarr = []
    for (rel, kw, data), template in zip(nodes, templates):
        if data is None:
            objects[f"{group.path}/{rel}/zarr.json"] = fast_files.group_document(kw)
        elif template is not None:
            objects.update((f"{group.path}/{rel}/{key}", blob) for key, blob in fast_files.array_files(data, template))
        else:
            by_zarr.append((rel, kw, data))
    if objects:
        _guard(group, "writing", fs.pipe, objects)  # together: the requests run concurrently
    for rel, kw, data in by_zarr:  # an array fast_files does not write: through zarr
        parent, _, name = f"{image_id}/{rel}".rpartition("/")
        store.zarr_group("r+", path=parent).create_array(name, **kw)[...] = data
    _guard(group, "writing", (group / "zarr.json").put, fast_files.group_document(final))  # the marker, last


def source_path(store_path: Any, source: str) -> Any:
    """The object (or file) an image stored by reference came from: a URL as recorded
    (with the store's storage options when the store is remote), else a path relative to
    a remote store; None when it is not there."""
    options = store_path.storage_options if isinstance(store_path, Remote) else None
    if is_url(source):
        where = locate(source, options)
    elif isinstance(store_path, Remote) and not source.startswith("/"):
        where = store_path / source
    else:
        from pathlib import Path

        where = Path(source)
    return where if where.is_file() else None
