"""The :class:`LabelStore`: write, update, correct, review and read images in a label store
(its format: :mod:`.format`). The class opens or creates the store (what a path holds:
:mod:`.root`) and lists its images; the work of its other methods is done in
:mod:`.writing` (new images, new maps), :mod:`.corrections` (what a person checked) and
:mod:`.reading` (images read back, their files when stored by reference)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import zarr

from . import corrections
from . import reading
from . import remote_io
from . import root as store_root
from . import writing
from .format import (
    NS,
    RESERVED_ROOT_ATTRS,
    STORE_FORMAT_VERSION,
    StoreError,
    json_attrs,
    validate_image_id,
)
from .location import Remote, locate
from .sample import StoredSample

# ------------------------------------------------------------------------------- store


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
        return store_root.probe(self.path)

    def _missing_message(self, state: str) -> str:
        return store_root.missing_message(self.path, state)

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
        store_root.create(self.path, attrs)
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
        prep, own = writing.prepare_image(image_id, sample, provenance=provenance, attrs=attrs,
                                          store_image=store_image, image_source=image_source,
                                          image_sha256=image_sha256, image_stat=image_stat)  # fmt: skip
        writing.write_new_image(self, image_id, prep, own, store_image)

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
        writing.update_labels(group, image_id, labels, provenance, attrs, self.path)

    # ---------------------------------------------------------- what a person checked

    def correction_masks(self, image_id: str) -> dict[str, np.ndarray]:
        """The correction masks kept beside one image: task -> bool (H, W), True where a
        person changed the label; only the tasks that have one."""
        group = self._group(image_id)
        if group is None:
            raise StoreError(f"image {image_id!r} is not in label store {self.path}")
        return corrections.read_masks(group)

    def write_correction_masks(self, image_id: str, masks: Mapping[str, np.ndarray]) -> None:
        """Write (replace) the correction masks of some tasks of a stored image: bool or
        0/1 (H, W) per task, True where a person changed the label. Written after the
        labels (an interrupted write leaves a ``corrected`` task with no mask: all its
        pixels then count as checked, see :meth:`checked_masks`)."""
        self._require_writable()
        group = self._group(image_id, mode="r+")
        if group is None:
            raise StoreError(f"image {image_id!r} is not in label store {self.path}")
        corrections.write_masks(group, image_id, masks)

    def correct(self, image_id: str, labels: Mapping[str, np.ndarray], *, reviewed: bool = False,
                attrs: Mapping | None = None) -> dict[str, int]:  # fmt: skip
        """A person's corrections of some task maps (and optionally the palette): the
        maps are replaced (:meth:`update_labels`, provenance ``corrected``, or
        ``reviewed`` with ``reviewed=True``: the whole map checked), and the pixels that
        changed are added to each task's correction mask. Returns task -> pixels changed.
        The same two writes napari's save makes."""
        return corrections.correct(self, image_id, labels, reviewed=reviewed, attrs=attrs)

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
        return corrections.mark_reviewed(group, image_id, tasks, reviewed, self.path)

    def checked_masks(self, image_id: str, sample: "StoredSample | None" = None) -> dict[str, np.ndarray]:
        """Task -> bool (H, W): the pixels whose labels a person checked (module doc, "What
        a person checked"), within each task's valid pixels. ``sample``: the image's
        :meth:`read_sample`, when the caller has it."""
        s = self.read_sample(image_id) if sample is None else sample
        return corrections.checked_masks(s, lambda: self.correction_masks(image_id))

    def remove(self, image_id: str) -> None:
        """Delete one image (complete or not) from the store."""
        self._require_writable()
        if self._group(image_id) is None:
            raise StoreError(f"image {image_id!r} is not in label store {self.path}")
        del self._open("r+")[image_id]

    # --------------------------------------------------------------------- reading

    def source_file(self, sample: StoredSample) -> Path | Remote | None:
        """The file an image stored by reference came from: its recorded source as given
        (absolute, or from the working folder), else relative to the store (``ctn synth``
        records it so); None when neither is a file."""
        return reading.source_path(self.path, sample.image_source)

    def source_problem(self, image_id: str, record: Mapping | None = None) -> tuple[str, str] | None:
        """For an image stored by reference: (its file, why it cannot be used: a sentence's
        end, :data:`.sources.STATE_REASONS`) when the file is missing or is no longer the
        one recorded (its size and mtime compared first, its sha256 when they differ:
        :func:`.sources.file_state`); None when it is, or when the image's pixels are
        stored. ``record``: the image's attributes, when the caller has them
        (:meth:`image_records`)."""
        attrs = self.image_attrs(image_id) if record is None else record
        return reading.source_problem(self.path, image_id, attrs)

    def image_pixels(self, sample: StoredSample) -> np.ndarray:
        """The pixels of a stored image (uint8 RGB): its own, or, stored by reference, its
        source file's (:meth:`source_file`) bytes, read once and refused when their
        sha256 (or, recorded of the pixels, theirs) is no longer the one recorded, or
        their size is not the labels'. Raises :class:`~composite_tasking.images.ImageReadError`
        naming the file and why."""
        return reading.image_pixels(self.path, sample)

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
        return reading.read_group(group, image_id, own, self.path, maps=maps)
