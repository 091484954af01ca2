"""The :class:`LabelStore`: write, update, correct, review and read images in a label store
(its format: :mod:`.format`)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import zarr

from ..tasks import IGNORE, NO_TASK, TASK_NAMES, get_task
from . import fast_files
from . import remote_io
from .checks import Checker, Prepared, prepare_sample, tasks_of
from .format import (
    CHECKED_PROVENANCES,
    CORRECTED_PREFIX,
    FLOAT_CODECS,
    IMAGE_FORMAT,
    INT_CODECS,
    LABEL_NAMES,
    MAP_NAMES,
    NS,
    OME_VERSION,
    RESERVED_IMAGE_ATTRS,
    RESERVED_ROOT_ATTRS,
    SCORES,
    STORE_FORMAT,
    STORE_FORMAT_VERSION,
    StoreError,
    chunk_shape,
    file_sha256,
    image_ome,
    json_attrs,
    label_group_attrs,
    map_attrs,
    now_iso,
    validate_image_id,
)
from .location import Remote, locate
from .sample import StoredSample
from .sources import STAT_KEYS, STATE_REASONS, file_state, stat_record

# ------------------------------------------------------------------------------- store


def _label_array_kw(name: str) -> dict:
    return {"fill_value": NO_TASK if name == "palette" else IGNORE, "dimension_names": ["y", "x"]}


def _map_array_kw(name: str, channels: list[str] | None = None) -> dict:
    if name == SCORES:
        return {"fill_value": float("nan"), "dimension_names": ["c", "y", "x"],
                "attributes": map_attrs(name, channels)}  # fmt: skip
    if name == "normals":
        return {"fill_value": 0.0, "dimension_names": ["c", "y", "x"], "attributes": map_attrs(name)}
    return {"fill_value": float("nan"), "dimension_names": ["y", "x"], "attributes": map_attrs(name)}


class LabelStore:
    """A label store on the local file system, or in an object store (``path`` a URL such
    as ``s3://bucket/labels.zarr``, reached with ``storage_options``:
    :mod:`.location`; what differs there: :mod:`.remote_io`). See :mod:`.format` for the
    layout.

    ``mode``:

    - ``"r"``: read only; the store must exist.
    - ``"r+"``: read and write; the store must exist.
    - ``"a"``: read and write; creates the store when ``path`` does not exist (or is an
      empty folder). ``attrs`` are written only when it is created.
    - ``"w"``: create a new store with ``attrs``. An existing store that holds images is
      refused unless ``overwrite=True``; a path that holds anything but a label store is
      always refused (it is never deleted).
    """

    def __init__(self, path: str | os.PathLike | Remote, mode: str = "r", *,
                 attrs: Mapping | None = None, overwrite: bool = False,
                 storage_options: Mapping | None = None):  # fmt: skip
        if mode not in ("r", "r+", "a", "w"):
            raise StoreError(f"unknown mode {mode!r}; use 'r', 'r+', 'a' or 'w'")
        #: a :class:`~pathlib.Path`, or a :class:`.location.Remote` (``str()``: its URL)
        self.path = locate(path, storage_options)
        self._remote = isinstance(self.path, Remote)
        self._zarr_stores: dict[Any, Any] = {}  # a bucket's zarr stores (read-only or not), of this process
        self.mode = mode
        where = f"label store {self.path}"
        root_attrs = json_attrs(attrs, where, RESERVED_ROOT_ATTRS)
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
                if self._remote:
                    remote_io.delete_prefix(self.path)
                else:
                    shutil.rmtree(self.path)
            elif state not in ("absent", "empty"):
                raise StoreError(
                    f"{where}: the path exists and is not a label store ({state}); it is "
                    "left as it is: choose another path or remove it yourself"
                )
            self._root = self._create(root_attrs)

    # ----------------------------------------------------------- opening / creating

    def _probe(self) -> str:
        if self._remote:
            state, meta = remote_io.probe(self.path)
            return state if meta is None else self._judge(meta)
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
        return self._judge(meta)

    @staticmethod
    def _judge(meta: Any) -> str:
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
            return (f"a label store of format version {version!r}, newer than this package "
                    f"reads ({STORE_FORMAT_VERSION}); update napari-composite-tasking")
        return "store"

    def _missing_message(self, state: str) -> str:
        if state == "absent":
            return f"no label store at {self.path} (open it with mode 'a' or 'w' to create one)"
        return f"{self.path} is not a label store: it is {state}"

    def zarr_group(self, mode: str = "r", path: str | None = None) -> zarr.Group:
        """The store's root group (or the group at ``path`` below it) through zarr."""
        if self._remote:
            read_only = mode == "r"
            if self._zarr_stores.get("pid") != os.getpid():  # a forked data-loader worker: its own connections
                self._zarr_stores = {"pid": os.getpid()}
            if read_only not in self._zarr_stores:
                self._zarr_stores[read_only] = self.path.zarr_store(read_only=read_only)
            where: Any = self._zarr_stores[read_only]
        else:
            where = str(self.path)
        if path is None:
            return zarr.open_group(where, mode=mode, zarr_format=3)
        return zarr.open_group(where, mode=mode, zarr_format=3, path=path)

    def _open(self, mode: str) -> zarr.Group:
        return self.zarr_group(mode)

    def _create(self, attrs: dict) -> zarr.Group:
        own = {"format": STORE_FORMAT, "format_version": STORE_FORMAT_VERSION,
               "created": now_iso(), **attrs}  # fmt: skip
        if self._remote:  # one conditional PUT: never a deletion, and one creator wins a race
            remote_io.create_root(self.path, {NS: own})
            return self._open("r+")
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
        root = self.zarr_group("r")
        return json.loads(json.dumps(root.attrs.asdict().get(NS, {})))

    def update_attrs(self, attrs: Mapping) -> None:
        """Add or change store attributes (not ``format``, ``format_version``, ``created``)."""
        self._require_writable()
        new = json_attrs(attrs, f"label store {self.path}", RESERVED_ROOT_ATTRS)
        own = self.attrs
        own.update(new)
        self._root.attrs.put({**self._root.attrs.asdict(), NS: own})

    def _require_writable(self) -> None:
        if self.mode == "r":
            raise StoreError(f"label store {self.path} is open read-only (mode 'r'); "
                             "open it with mode 'r+' or 'a' to write")  # fmt: skip

    # --------------------------------------------------------------------- listing

    def _image_groups(self) -> Iterator[tuple[str, zarr.Group]]:
        root = self.zarr_group("r")
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
            node = self.zarr_group("r")[image_id]
        except KeyError:
            return None
        if not isinstance(node, zarr.Group) or not isinstance(node.attrs.get(NS), dict):
            return None
        if mode != "r":
            node = self.zarr_group("r+", path=image_id)
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
        codecs = FLOAT_CODECS if np.issubdtype(data.dtype, np.floating) else INT_CODECS
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
                                      attributes=label_group_attrs(name, with_source))  # fmt: skip
        self._write_array(g, "0", data, **_label_array_kw(name))

    def _write_map(self, maps_group: zarr.Group, name: str, data: np.ndarray) -> None:
        self._write_array(maps_group, name, data, **_map_array_kw(name))

    # A new image is written as plain files (``fast_files``: zarr's own metadata
    # documents, chunks encoded with zarr's codecs): through zarr's API each of its ~13
    # arrays costs ~2 ms of Python beyond compression, which bound ``ctn label`` on a GPU
    # (docs/benchmarks.md). Where that module cannot write an array (a codec or layout it
    # does not know), zarr's API writes the image.
    @staticmethod
    def _new_image_nodes(prep: "Prepared", label_names: list[str], map_names: list[str],
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
                nodes.append((f"labels/{name}", label_group_attrs(name, store_image), None))
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
            fast_files.write_array(folder, data, template)
        else:
            rel = folder.relative_to(self.path).as_posix()
            parent, _, name = rel.rpartition("/")
            arr = self.zarr_group("r+", path=parent).create_array(
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
        image_stat: Mapping[str, int] | None = None,
        overwrite: bool = False,
    ) -> None:
        """Write one image's sample (see the module docstring for what goes where).

        ``provenance`` gives each task map in the sample one of :data:`PROVENANCES`.
        ``attrs`` (JSON values) are stored with the image: model id and hash, rule,
        palette origin, ... ``store_image=False`` stores a reference (``image_source``
        and a sha256) instead of the pixels. ``image_sha256`` is the sha256 of the image
        file's bytes; without it, the store hashes the file at ``image_source`` when the
        pixels are not stored, else the pixels. ``image_stat``: the file's ``size`` and
        ``mtime_ns`` when the bytes hashed into ``image_sha256`` were read
        (:func:`.sources.stat_record`); recorded beside the sha256, as the store records
        them itself when it hashes the file, so that a later check
        (:meth:`source_problem`) reads the file only when they changed.

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
        prep = prepare_sample(image_id, sample, "written", need_image=store_image)
        chk = Checker(image_id, "written")
        tasks = tasks_of(prep)
        prov = chk.provenance(provenance, tasks, required=True)
        extra = json_attrs(attrs, f"image {image_id!r}", RESERVED_IMAGE_ATTRS)
        image_info = self._image_info(chk, prep, sample, store_image, image_source,
                                      image_sha256, image_stat)  # fmt: skip

        folder = self.path / image_id
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
        nodes = self._new_image_nodes(prep, label_names, map_names, store_image)
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
        if self._remote:
            remote_io.write_image(self, image_id, nodes, templates, incomplete, final)
            return
        if folder.exists():  # an earlier write of this id (complete, or cut short anywhere)
            if (folder / "zarr.json").is_file():  # first unmark it: deleting can stop half way
                fast_files.replace_group_attrs(folder, incomplete)
            shutil.rmtree(folder)
        fast_files.write_group(folder, incomplete)
        for (rel, kw, data), template in zip(nodes, templates):
            if data is None:
                fast_files.write_group(folder / rel, kw)
            else:
                self._write_new_array(folder / rel, kw, data, template)
        fast_files.replace_group_attrs(folder, final)  # the completion marker, last

    def _image_info(self, chk: Checker, prep: Prepared, sample: Mapping, store_image: bool,
                    source, sha256: str | None, stat: Mapping | None = None) -> dict:  # fmt: skip
        if source is not None and not isinstance(source, (str, os.PathLike)):
            chk.fail("image_source", f"expected a path or name, got {type(source).__name__}")
        source_s = None if source is None else os.fspath(source)
        if not store_image and source_s is None:
            chk.fail("image_source", "store_image=False keeps a reference to the image: "
                                     "give image_source (its path)")  # fmt: skip
        if stat is not None:
            if sha256 is None or not isinstance(stat, Mapping) or set(stat) != set(STAT_KEYS) or not all(
                    isinstance(stat[k], int) and not isinstance(stat[k], bool) and stat[k] >= 0 for k in STAT_KEYS):
                chk.fail("image_stat", f"{{'size': int, 'mtime_ns': int}} of the file image_sha256 hashes, "
                                       f"got {stat!r}" + ("" if sha256 is not None else " without image_sha256"))
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
                digest, of = self._pixels_sha256(prep), "pixels"
            else:
                chk.fail("image_sha256", f"{source_s} is not a readable file and the sample "
                                         "has no image to hash; give image_sha256")  # fmt: skip
        elif prep.image is not None:
            digest, of = self._pixels_sha256(prep), "pixels"
        else:  # pragma: no cover - need_image makes this unreachable
            digest, of = None, None
        info = {"stored": bool(store_image), "path": "0" if store_image else None,
                "source": source_s, "sha256": digest, "sha256_of": of}  # fmt: skip
        return {**info, **stat} if stat is not None and of == "file" else info

    @staticmethod
    def _pixels_sha256(prep: Prepared) -> str:
        assert prep.image is not None
        return LabelStore._pixels_digest(np.moveaxis(prep.image, 0, -1))

    @staticmethod
    def _pixels_digest(hwc: np.ndarray) -> str:
        return hashlib.sha256(np.ascontiguousarray(hwc).tobytes()).hexdigest()

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
        own["updated"] = now_iso()
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
                compressors=INT_CODECS, fill_value=0, dimension_names=["y", "x"],
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
        own["updated"] = now_iso()
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

    def _source_path(self, source: str | None) -> Path | Remote | None:
        if not source:
            return None
        if self._remote or remote_io.is_url(source):
            return remote_io.source_path(self.path, source)
        return next((p for p in (Path(source), self.path / source) if p.is_file()), None)

    def source_file(self, sample: StoredSample) -> Path | Remote | None:
        """The file an image stored by reference came from: its recorded source as given
        (absolute, or from the working folder), else relative to the store (``ctn synth``
        records it so); None when neither is a file."""
        return self._source_path(sample.image_source)

    def source_problem(self, image_id: str, record: Mapping | None = None) -> tuple[str, str] | None:
        """For an image stored by reference: (its file, why it cannot be used: a sentence's
        end, :data:`.sources.STATE_REASONS`) when the file is missing or is no longer the
        one recorded (its size and mtime compared first, its sha256 when they differ:
        :func:`.sources.file_state`); None when it is, or when the image's pixels are
        stored. ``record``: the image's attributes, when the caller has them
        (:meth:`image_records`)."""
        attrs = self.image_attrs(image_id) if record is None else record
        info = attrs.get("image") or {}
        if info.get("stored", True) is not False:
            return None
        source = info.get("source")
        path = self._source_path(source)
        state = file_state(info, path)
        return None if state is None else (str(path or source or image_id), STATE_REASONS[state])

    def image_pixels(self, sample: StoredSample) -> np.ndarray:
        """The pixels of a stored image (uint8 RGB): its own, or, stored by reference, its
        source file's (:meth:`source_file`) bytes, read once and refused when their
        sha256 (or, recorded of the pixels, theirs) is no longer the one recorded, or
        their size is not the labels'. Raises :class:`~composite_tasking.images.ImageReadError`
        naming the file and why."""
        if sample.image is not None:
            return sample.image
        from ..images import ImageReadError, read_image

        path = self.source_file(sample)
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
        if of == "pixels" and recorded and self._pixels_digest(pixels) != recorded:
            raise ImageReadError(path, changed)
        shape = tuple(sample.attrs.get("shape") or ())
        if shape and pixels.shape[:2] != shape:
            raise ImageReadError(path, f"the image file is {pixels.shape[0]}x{pixels.shape[1]} pixels, its "
                                       f"labels {shape[0]}x{shape[1]}: it changed since the image was labelled")
        return pixels

    def read_sample(self, image_id: str, *, allow_incomplete: bool = False, maps: bool = True) -> StoredSample:
        """Read one image back; see :class:`StoredSample`. ``maps=False`` leaves out the
        float maps (probabilities, confidences; the normals are read): what a picture of
        the labels needs, at a fraction of the reading."""
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
                        raise StoreError(f"image {image_id!r} in {self.path}: maps/{SCORES} has "
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
