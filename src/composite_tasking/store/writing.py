"""Writing images into a label store, each write behind the image's completion marker
(the layout: :mod:`.format`): a new image (:func:`prepare_image`, everything checked and
nothing written; then :func:`write_new_image`), or new maps of a stored image
(:func:`update_labels`). :meth:`.LabelStore.write_sample` and
:meth:`.LabelStore.update_labels` say what each does for its caller.

A new image is written as plain files (:mod:`.fast_files`: zarr's own metadata
documents, chunks encoded with zarr's codecs): through zarr's API each of its ~13 arrays
costs ~2 ms of Python beyond compression, which bound ``ctn label`` on a GPU
(docs/benchmarks.md). Where that module cannot write an array (a codec or layout it does
not know), zarr's API writes the image. In an object store the same bytes are written as
objects (:func:`.remote_io.write_image`). Updates go through zarr's API.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import zarr

from ..tasks import IGNORE, NO_TASK, TASK_NAMES
from . import fast_files
from . import remote_io
from .checks import Checker, Prepared, prepare_sample, tasks_of
from .format import (
    FLOAT_CODECS,
    IMAGE_FORMAT,
    INT_CODECS,
    LABEL_NAMES,
    MAP_NAMES,
    NS,
    OME_VERSION,
    RESERVED_IMAGE_ATTRS,
    SCORES,
    STORE_FORMAT_VERSION,
    StoreError,
    chunk_shape,
    file_sha256,
    image_ome,
    json_attrs,
    label_group_attrs,
    map_attrs,
    now_iso,
)
from .location import Remote
from .sources import STAT_KEYS, pixels_digest, stat_record

__all__ = ["prepare_image", "write_new_image", "update_labels"]

# ------------------------------------------------------------------------------ arrays


def _label_array_kw(name: str) -> dict:
    return {"fill_value": NO_TASK if name == "palette" else IGNORE, "dimension_names": ["y", "x"]}


def _map_array_kw(name: str, channels: list[str] | None = None) -> dict:
    if name == SCORES:
        return {"fill_value": float("nan"), "dimension_names": ["c", "y", "x"],
                "attributes": map_attrs(name, channels)}  # fmt: skip
    if name == "normals":
        return {"fill_value": 0.0, "dimension_names": ["c", "y", "x"], "attributes": map_attrs(name)}
    return {"fill_value": float("nan"), "dimension_names": ["y", "x"], "attributes": map_attrs(name)}


def _array_kwargs(name: str, data: np.ndarray, *, fill_value, dimension_names,
                  attributes: dict | None = None) -> dict:  # fmt: skip
    """How every array of the store is created: chunks, codecs, fill value, names."""
    h, w = data.shape[-2:]
    cy, cx = chunk_shape(h, w)
    if data.ndim == 3:
        chunks = (1 if name == "0" else data.shape[0], cy, cx)
    else:
        chunks = (cy, cx)
    codecs = FLOAT_CODECS if np.issubdtype(data.dtype, np.floating) else INT_CODECS
    return dict(shape=data.shape, dtype=data.dtype, chunks=chunks, compressors=codecs,
                fill_value=fill_value, dimension_names=dimension_names,
                attributes=attributes or {}, overwrite=True)  # fmt: skip


def _write_array(group: zarr.Group, name: str, data: np.ndarray, **kw) -> None:
    """Write one array (one zarr call after another: corrections)."""
    arr = group.create_array(name, **_array_kwargs(name, data, **kw))
    arr[...] = data


def _write_label(labels_group: zarr.Group, name: str, data: np.ndarray, with_source: bool) -> None:
    g = labels_group.create_group(name, overwrite=True,
                                  attributes=label_group_attrs(name, with_source))  # fmt: skip
    _write_array(g, "0", data, **_label_array_kw(name))


def _write_map(maps_group: zarr.Group, name: str, data: np.ndarray) -> None:
    _write_array(maps_group, name, data, **_map_array_kw(name))


# --------------------------------------------------------------------------- new image


def _new_image_nodes(prep: Prepared, label_names: list[str], map_names: list[str],
                     store_image: bool) -> list[tuple[str, dict, np.ndarray | None]]:  # fmt: skip
    """The groups and arrays of a new image below its group, parents first:
    (path, group attributes or array keyword arguments, array data or None)."""
    nodes: list[tuple[str, dict, np.ndarray | None]] = []
    if prep.image is not None and store_image:
        nodes.append(("0", _array_kwargs("0", prep.image, fill_value=0, dimension_names=["c", "y", "x"]),
                      prep.image))  # fmt: skip
    if label_names:
        nodes.append(("labels", {"ome": {"version": OME_VERSION, "labels": label_names}}, None))
        for name in label_names:
            nodes.append((f"labels/{name}", label_group_attrs(name, store_image), None))
            data = prep.labels[name]
            nodes.append((f"labels/{name}/0", _array_kwargs("0", data, **_label_array_kw(name)), data))
    if map_names:
        nodes.append(("maps", {}, None))
        if "normals" in map_names:
            nodes.append(("maps/normals", _array_kwargs("normals", prep.normals, **_map_array_kw("normals")),
                          prep.normals))  # fmt: skip
        if SCORES in map_names:
            channels = [n for n in MAP_NAMES if n in prep.maps]
            scores = np.stack([prep.maps[n] for n in channels])
            nodes.append((f"maps/{SCORES}", _array_kwargs(SCORES, scores, **_map_array_kw(SCORES, channels)),
                          scores))  # fmt: skip
    return nodes


def _write_new_array(store: Any, folder: Path, kwargs: dict, data: np.ndarray, template) -> None:
    """One array of a new image: as files with ``template``, else through zarr (the
    :class:`.LabelStore` ``store``'s groups)."""
    if template is not None:
        fast_files.write_array(folder, data, template)
    else:
        rel = folder.relative_to(store.path).as_posix()
        parent, _, name = rel.rpartition("/")
        arr = store.zarr_group("r+", path=parent).create_array(name, **kwargs)
        arr[...] = data


def prepare_image(image_id: str, sample: Mapping[str, Any], *, provenance: Mapping[str, str],
                  attrs: Mapping | None, store_image: bool, image_source: str | os.PathLike | None,
                  image_sha256: str | None, image_stat: Mapping[str, int] | None) -> tuple[Prepared, dict]:  # fmt: skip
    """A new image checked, before anything is written (the arguments: those of
    :meth:`.LabelStore.write_sample`): the sample in storage layout, and the image's
    ``"composite_tasking"`` attributes without the completion marker. Raises
    :class:`.StoreError` naming the image, the key and the problem."""
    prep = prepare_sample(image_id, sample, "written", need_image=store_image)
    chk = Checker(image_id, "written")
    tasks = tasks_of(prep)
    prov = chk.provenance(provenance, tasks, required=True)
    extra = json_attrs(attrs, f"image {image_id!r}", RESERVED_IMAGE_ATTRS)
    image_info = _image_info(chk, prep, sample, store_image, image_source,
                             image_sha256, image_stat)  # fmt: skip

    now = now_iso()
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
    return prep, own


def write_new_image(store: Any, image_id: str, prep: Prepared, own: dict, store_image: bool) -> None:
    """Write a new image (:func:`prepare_image`'s ``prep`` and ``own``) into the
    :class:`.LabelStore` ``store``, replacing any earlier write of the id: its group
    marked incomplete, its groups and arrays, then the completion marker, last."""
    label_names, map_names = own["labels"], own["maps"]
    nodes = _new_image_nodes(prep, label_names, map_names, store_image)
    try:
        templates = [None if data is None else fast_files.prepare_array(kw) for _, kw, data in nodes]
    except fast_files.Unsupported:
        templates = [None] * len(nodes)

    # ---- nothing has been written up to here
    incomplete = {NS: {**own, "complete": False}}
    final: dict[str, Any] = {}
    if store_image:
        final["ome"] = image_ome(image_id)
    final[NS] = {**own, "complete": True}
    if isinstance(store.path, Remote):
        remote_io.write_image(store, image_id, nodes, templates, incomplete, final)
        return
    folder = store.path / image_id
    if folder.exists():  # an earlier write of this id (complete, or cut short anywhere)
        if (folder / "zarr.json").is_file():  # first unmark it: deleting can stop half way
            fast_files.replace_group_attrs(folder, incomplete)
        shutil.rmtree(folder)
    fast_files.write_group(folder, incomplete)
    for (rel, kw, data), template in zip(nodes, templates):
        if data is None:
            fast_files.write_group(folder / rel, kw)
        else:
            _write_new_array(store, folder / rel, kw, data, template)
    fast_files.replace_group_attrs(folder, final)  # the completion marker, last


def _image_info(chk: Checker, prep: Prepared, sample: Mapping, store_image: bool,
                source, sha256: str | None, stat: Mapping | None = None) -> dict:  # fmt: skip
    if source is not None and not isinstance(source, (str, os.PathLike)):
        chk.fail("image_source", f"expected a path or name, got {type(source).__name__}")
    source_s = None if source is None else os.fspath(source)
    if not store_image and source_s is None:
        chk.fail("image_source", "store_image=False keeps a reference to the image: "
                                 "give image_source (its path)")  # fmt: skip
    if stat is not None:
        if (
            sha256 is None
            or not isinstance(stat, Mapping)
            or set(stat) != set(STAT_KEYS)
            or not all(isinstance(stat[k], int) and not isinstance(stat[k], bool) and stat[k] >= 0 for k in STAT_KEYS)
        ):
            chk.fail(
                "image_stat",
                f"{{'size': int, 'mtime_ns': int}} of the file image_sha256 hashes, "
                f"got {stat!r}" + ("" if sha256 is not None else " without image_sha256"),
            )
        stat = {k: int(stat[k]) for k in STAT_KEYS}
    if sha256 is not None:
        if not (isinstance(sha256, str) and re.fullmatch(r"[0-9a-fA-F]{64}", sha256)):
            chk.fail("image_sha256", f"expected 64 hex digits, got {sha256!r}")
        digest, of = sha256.lower(), "file"
    elif not store_image:
        if Path(source_s).is_file():
            try:  # the stat before the bytes: a file changed meanwhile is hashed again later
                stat = stat_record(os.stat(source_s))
                digest, of = file_sha256(source_s), "file"
            except OSError as e:
                chk.fail("image_source", f"cannot read {source_s} to hash it: {e}")
        elif prep.image is not None:
            digest, of = _pixels_sha256(prep), "pixels"
        else:
            chk.fail("image_sha256", f"{source_s} is not a readable file and the sample "
                                     "has no image to hash; give image_sha256")  # fmt: skip
    elif prep.image is not None:
        digest, of = _pixels_sha256(prep), "pixels"
    else:  # pragma: no cover - need_image makes this unreachable
        digest, of = None, None
    info = {"stored": bool(store_image), "path": "0" if store_image else None,
            "source": source_s, "sha256": digest, "sha256_of": of}  # fmt: skip
    return {**info, **stat} if stat is not None and of == "file" else info


def _pixels_sha256(prep: Prepared) -> str:
    assert prep.image is not None
    return pixels_digest(np.moveaxis(prep.image, 0, -1))


# ------------------------------------------------------------------- a stored image


def update_labels(group: zarr.Group, image_id: str, labels: Mapping[str, np.ndarray],
                  provenance: Mapping[str, str] | None, attrs: Mapping | None, where: Any) -> None:  # fmt: skip
    """Replace some task maps of the stored image ``group`` (opened for writing) of the
    store at ``where`` (:meth:`.LabelStore.update_labels`): everything checked first,
    then the image marked incomplete (with ``update_pending``) while its maps are
    written, then complete again with its new attributes."""
    own = json.loads(json.dumps(group.attrs[NS]))
    if own.get("complete") is not True:
        raise StoreError(f"image {image_id!r} in {where} is incompletely written; "
                         "write it again with write_sample()")  # fmt: skip
    allowed = ("palette", *TASK_NAMES)
    prep = prepare_sample(image_id, labels, "updated", need_image=False,
                    shape=tuple(own["shape"]), allow=allowed)  # fmt: skip
    chk = Checker(image_id, "updated")
    tasks = tasks_of(prep)
    if not tasks and not prep.labels:
        chk.fail("labels", f"nothing to update; give maps of {', '.join(allowed)}")
    given = chk.provenance(provenance, tasks, required=False)
    prov = {t: given.get(t, "corrected") for t in tasks}
    extra = json_attrs(attrs, f"image {image_id!r}", RESERVED_IMAGE_ATTRS)

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
                _write_label(lg, name, prep.labels[name], with_source=with_source)
                if name not in label_names:
                    label_names.append(name)
        label_names = [n for n in LABEL_NAMES if n in label_names]
        lg.attrs.put({"ome": {"version": OME_VERSION, "labels": label_names}})
    map_names = list(own.get("maps", []))
    if prep.normals is not None:
        mg = group["maps"] if "maps" in group else group.create_group("maps")
        _write_map(mg, "normals", prep.normals)
        if "normals" not in map_names:
            map_names.insert(0, "normals")

    own["labels"] = label_names
    own["maps"] = map_names
    provenance_all = {**own.get("provenance", {}), **prov}
    own["provenance"] = {t: provenance_all[t] for t in TASK_NAMES if t in provenance_all}
    own.update(extra)
    own["updated"] = now_iso()
    own.pop("complete", None)
    own.pop("update_pending", None)
    full = group.attrs.asdict()
    full[NS] = {**own, "complete": True}
    group.attrs.put(full)
