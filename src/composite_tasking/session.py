"""An annotation session: a series of images labelled one at a time, and where the person
is in it. Qt-free: the napari plugin shows it (``_napari.series_widget``), tests and
scripts drive it directly.

A session is a list of images (:class:`SeriesItem`: a store id and, for an image not yet
in the store, the file it is read from), a label store that everything is saved to, the
current image, and an order:

- ``"file"``: the order of the inputs (a folder's files sorted by path; a store's ids);
- ``"correct next"``: the store's images by the effort their pseudo-labels are expected
  to need, most first (:func:`composite_tasking.review.rank_store`, from the confidence
  maps ``ctn label`` writes); images it cannot rank (not yet stored, no confidence)
  follow in file order, the reviewed ones last.

An image is *reviewed* when the store holds it and every task it holds is checked:
``reviewed`` (a person accepted the labels as they are, :meth:`LabelStore.mark_reviewed`)
or ``ground-truth``. Corrected but not reviewed is not done: the pseudo-labels nobody
changed were not accepted. :meth:`AnnotationSession.first_unreviewed` is where a
reopened session resumes.

Ids: a file's store id is the one ``ctn label`` gives it (:func:`.image_ids.image_ids`,
settled against the store's records), so a folder labelled with ``ctn label`` and then
annotated shows the stored pseudo-labels, and a file keeps its id across sessions.
Listeners (:meth:`AnnotationSession.subscribe`) hear ``"current"`` when the current image
changes, ``"reviewed"`` when an image's reviewed state does and ``"order"`` when the
order does.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

import numpy as np

from .image_ids import image_ids
from .images import SUPPORTED_SUFFIXES, is_zarr_folder, read_image, scan_inputs
from .store import CHECKED_PROVENANCES, LabelStore, StoreError

if TYPE_CHECKING:
    from .store.location import Remote

__all__ = ["AnnotationSession", "SeriesItem", "SessionError", "ORDERS", "default_store_for"]

#: the orders a session can show its images in
ORDERS = ("file", "correct next")


class SessionError(ValueError):
    """A session that cannot be made (no images, two stores, ...), named in the message."""


@dataclass(frozen=True)
class SeriesItem:
    """One image of a session: its id in the store, and the file it is read from
    (None: the store holds its pixels, or its source, itself)."""

    image_id: str
    source: Path | Remote | None = None

    @property
    def name(self) -> str:
        return self.image_id


def _is_store(path: Path) -> bool:
    """A label store of this package (opening it read-only checks its format)."""
    if not path.is_dir():
        return False
    try:
        LabelStore(path, "r")
    except (StoreError, OSError, ValueError):
        return False
    return True


def default_store_for(inputs: Sequence[str | os.PathLike]) -> Path:
    """Where a session of image files saves when no store is named: beside the first
    folder given, ``<folder>-labels.zarr``; for files alone, ``labels.zarr`` in the
    first file's folder."""
    paths = [Path(p) for p in inputs]
    folders = [p for p in paths if p.is_dir()]
    if folders:
        f = folders[0].resolve()
        return f.with_name(f"{f.name}-labels.zarr")
    if not paths:
        raise SessionError("no inputs: give image files, folders or a label store")
    return paths[0].resolve().parent / "labels.zarr"


class AnnotationSession:
    """A series of images, its label store and the current image (module docstring)."""

    def __init__(self, items: Sequence[SeriesItem], store: str | os.PathLike, *,
                 order: str = "file", problems: Sequence[tuple[str, str]] = ()):  # fmt: skip
        if not items:
            raise SessionError(f"no images to annotate (label store {store})")
        ids = [i.image_id for i in items]
        if len(set(ids)) != len(ids):
            dup = sorted({i for i in ids if ids.count(i) > 1})
            raise SessionError(f"image ids given twice: {', '.join(dup)}")
        self.store_path = Path(store)
        if self.store_path.suffix != ".zarr":
            self.store_path = self.store_path.with_name(self.store_path.name + ".zarr")
        self._file_order = list(items)
        self._items = list(items)
        self._records: dict[str, dict] = {}
        self._listeners: list[Callable[[str, AnnotationSession], None]] = []
        #: (path, reason) for each input that was not taken
        self.problems: list[tuple[str, str]] = list(problems)
        self.order = "file"
        self.refresh()
        self.index = 0
        if order != "file":
            try:
                self.set_order(order)
            except SessionError as e:  # nothing to rank by yet: file order, and why
                self.problems.append((str(self.store_path), f"{e}; showing file order"))

    # ------------------------------------------------------------------ making one

    @classmethod
    def open(cls, inputs: Iterable[str | os.PathLike], store: str | os.PathLike | None = None,
             *, order: str = "file") -> "AnnotationSession":  # fmt: skip
        """A session from image files, folders of images and at most one label store.

        The store's images come first (in id order), then the files not already in it
        (in the order given, a folder's sorted). ``store`` names the label store to save
        to (made on the first save); a store among ``inputs`` is it; default:
        :func:`default_store_for`. Inputs that give nothing are in :attr:`problems`.
        """
        paths = [Path(p) for p in inputs]
        is_store = {p: _is_store(p) for p in paths}
        stores = [p for p in paths if is_store[p]]
        if store is not None:
            stores = [Path(store)] + [s for s in stores if s.resolve() != Path(store).resolve()]
        if len(stores) > 1:
            raise SessionError("one label store at a time: " + ", ".join(map(str, stores)))
        others = [p for p in paths if not is_store[p]]
        problems: list[tuple[str, str]] = []
        for p in list(others):
            if is_zarr_folder(p):
                problems.append((str(p), "a zarr folder that is not a label store of this package: not opened"))
                others.remove(p)
        target = stores[0] if stores else default_store_for(others or paths)
        if target.suffix != ".zarr":
            target = target.with_name(target.name + ".zarr")
        records: dict[str, dict] = {}
        if target.exists():
            if not _is_store(target):
                raise SessionError(f"{target} exists and is not a label store of this package: "
                                   "name another store")  # fmt: skip
            records = LabelStore(target, "r").image_records()
        scan = scan_inputs(others, exclude=[target])
        problems += scan.skipped
        named = {p.resolve() for p in others if p.is_file()}
        for f in list(scan.files):  # a file named as such that is no image by its suffix
            if f.resolve() in named and f.suffix.lower() not in SUPPORTED_SUFFIXES:
                problems.append((str(f), f"not an image file (suffix {f.suffix or 'none'}; "
                                         f"images are {', '.join(sorted(SUPPORTED_SUFFIXES))})"))  # fmt: skip
                scan.files.remove(f)
        problems += [(z, "a zarr folder inside a folder: not searched (give a label store as an "
                      "input of its own)") for z in scan.zarr_folders]  # fmt: skip
        items = [SeriesItem(i) for i in sorted(records)] if target in stores else []
        have = {i.image_id for i in items}
        if scan.files:
            for f, image_id in zip(scan.files, image_ids(scan.files, others, records, store_path=target)):
                if image_id not in have:  # a file the store holds already is shown from it
                    items.append(SeriesItem(image_id, f))
                    have.add(image_id)
        if not items:
            why = "; ".join(f"{p}: {r}" for p, r in problems) or "no image files found"
            raise SessionError(f"no images to annotate ({why})")
        return cls(items, target, order=order, problems=problems)

    # ------------------------------------------------------------------ the series

    def __len__(self) -> int:
        return len(self._items)

    @property
    def items(self) -> list[SeriesItem]:
        return list(self._items)

    @property
    def current(self) -> SeriesItem:
        return self._items[self.index]

    def position(self, image_id: str) -> int:
        for k, item in enumerate(self._items):
            if item.image_id == image_id:
                return k
        raise SessionError(f"image {image_id!r} is not in this session")

    def go(self, index: int) -> SeriesItem:
        """Make image ``index`` (0-based) the current one; listeners hear ``current``."""
        if not 0 <= index < len(self._items):
            raise SessionError(f"no image {index + 1} in a session of {len(self._items)}")
        if index != self.index:
            self.index = index
            self._emit("current")
        return self.current

    def go_to(self, image_id: str) -> SeriesItem:
        return self.go(self.position(image_id))

    def next(self) -> SeriesItem | None:
        """The next image (None at the last: the current one stays)."""
        return self.go(self.index + 1) if self.index + 1 < len(self._items) else None

    def previous(self) -> SeriesItem | None:
        return self.go(self.index - 1) if self.index > 0 else None

    def first_unreviewed(self) -> int | None:
        """Index of the first image (in the current order) not reviewed; None when all are."""
        return next((k for k, i in enumerate(self._items) if not self.is_reviewed(i.image_id)), None)

    def set_order(self, order: str) -> None:
        """Show the images in ``order`` (:data:`ORDERS`); the current image stays current."""
        if order not in ORDERS:
            raise SessionError(f"unknown order {order!r}; use one of {', '.join(ORDERS)}")
        current = self.current.image_id
        if order == "file":
            self._items = list(self._file_order)
        else:
            self._items = self._ranked()
        self.order = order
        self.index = self.position(current)
        self._emit("order")

    def _ranked(self) -> list[SeriesItem]:
        from .review import ReviewError, rank_store

        by_id = {i.image_id: i for i in self._file_order}
        try:
            ranked = [r.image_id for r in rank_store(self.store_path) if r.status == "ranked"]
        except (ReviewError, StoreError) as e:
            raise SessionError(f"cannot order by expected effort: {e}") from None
        first = [by_id[i] for i in ranked if i in by_id]
        rest = [i for i in self._file_order if i.image_id not in set(ranked)]
        rest.sort(key=lambda i: self.is_reviewed(i.image_id))  # stable: file order within
        return first + rest

    # ------------------------------------------------------------------ state

    def refresh(self) -> None:
        """Read the store's image records again (after a save outside the session)."""
        try:
            self._records = LabelStore(self.store_path, "r").image_records() if self.store_path.exists() else {}
        except StoreError:
            self._records = {}

    def is_stored(self, image_id: str) -> bool:
        return image_id in self._records

    def provenance(self, image_id: str) -> dict[str, str]:
        return dict((self._records.get(image_id) or {}).get("provenance") or {})

    def is_reviewed(self, image_id: str) -> bool:
        prov = self.provenance(image_id)
        return bool(prov) and all(v in CHECKED_PROVENANCES for v in prov.values())

    @property
    def reviewed_count(self) -> int:
        return sum(self.is_reviewed(i.image_id) for i in self._items)

    def status_text(self) -> str:
        """``image 3 of 40, 12 reviewed`` (and the current image's state)."""
        item = self.current
        state = ("reviewed" if self.is_reviewed(item.image_id)
                 else "saved" if self.is_stored(item.image_id) else "new")  # fmt: skip
        return (f"image {self.index + 1} of {len(self)}, {self.reviewed_count} reviewed"
                f" — {item.image_id} ({state})")  # fmt: skip

    def load_image(self, image_id: str | None = None) -> np.ndarray:
        """The pixels of an image (uint8 RGB): from the store when it holds them, else
        from its file. Raises :class:`~.images.ImageReadError` naming the file."""
        item = self._items[self.position(image_id)] if image_id else self.current
        if item.source is not None and not self.is_stored(item.image_id):
            return read_image(item.source)
        store = LabelStore(self.store_path, "r")
        return store.image_pixels(store.read_sample(item.image_id))

    def mark_reviewed(self, image_id: str | None = None, reviewed: bool = True) -> dict[str, str]:
        """Mark every task of a stored image reviewed (or take it back); listeners hear
        ``reviewed``. Returns the new provenance."""
        image_id = image_id or self.current.image_id
        if not self.is_stored(image_id):
            raise SessionError(f"image {image_id!r} is not saved in {self.store_path} yet: save it first")
        if not self.provenance(image_id):
            raise SessionError(f"image {image_id!r} holds no labels yet: predict, then mark it reviewed")
        prov = LabelStore(self.store_path, "r+").mark_reviewed(image_id, reviewed=reviewed)
        self.refresh()
        self._emit("reviewed")
        return prov

    def saved(self, image_id: str | None = None) -> None:
        """Tell the session an image was saved to its store (re-reads the records)."""
        self.refresh()
        self._emit("reviewed")

    # ------------------------------------------------------------------ listeners

    def subscribe(self, callback: Callable[[str, "AnnotationSession"], None]) -> Callable[[], None]:
        """Call ``callback(event, session)`` on changes; returns the unsubscribe function."""
        self._listeners.append(callback)

        def unsubscribe() -> None:
            if callback in self._listeners:
                self._listeners.remove(callback)

        return unsubscribe

    def _emit(self, event: str) -> None:
        for cb in list(self._listeners):
            cb(event, self)
