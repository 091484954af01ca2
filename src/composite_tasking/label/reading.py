"""The reading side of a labelling run: images (and their palette files) read ahead of
the model by a thread, in input order."""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..images import ImageReadError, read_image, read_image_hashed
from ..palette import validate_palette
from ..store.location import Remote

__all__ = ["ReadItem", "Reader", "put_waiting"]


def _palette_file(folder: Path, image_path: Path | Remote, rel: Path, shape) -> np.ndarray:
    """The palette PNG of the image ``image_path`` (``rel``: its path below its input
    folder) in ``folder``: ``<rel>.png`` (``sub/a.jpg`` -> ``sub/a.jpg.png``), then with
    the image's suffix replaced (``sub/a.png``), then the same two names at the top of
    ``folder``. Every problem with it is an :class:`ImageReadError` of the image: that
    image is skipped, the run goes on."""
    from PIL import Image, UnidentifiedImageError

    rel = Path(rel)
    names = [rel.with_name(f"{rel.name}.png"), rel.with_suffix(".png")]
    if rel.parent != Path("."):
        names += [Path(n.name) for n in names]
    cand = [folder / n for n in names]
    src = next((c for c in cand if c.is_file()), None)
    if src is None:
        raise ImageReadError(image_path, f"no palette file {names[0]} or {names[1]} in {folder}")
    try:
        with Image.open(src) as im:
            arr = np.asarray(im)
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise ImageReadError(image_path, f"cannot read its palette {src}: {e}") from None
    if arr.ndim != 2:
        raise ImageReadError(image_path, f"its palette {src} is not single-channel (values = task id + 1)")
    if arr.shape != tuple(shape):
        raise ImageReadError(image_path, f"its palette {src} is {arr.shape}, the image is {tuple(shape)}")
    try:
        return validate_palette(arr, str(src))
    except ValueError as e:
        raise ImageReadError(image_path, str(e)) from None


@dataclass
class ReadItem:
    """One image as the reader hands it over: pixels (and palette file), or why not."""

    path: Path | Remote
    image_id: str
    image: np.ndarray | None = None
    palette: np.ndarray | None = None  # from a palette folder, or a rule that needs no model
    error: ImageReadError | None = None
    #: another run of the same store claimed it first (:mod:`.claims`): not read, left to it
    elsewhere: bool = False
    #: ``{"sha256", "size", "mtime_ns"}`` of the bytes decoded (the file's stat before
    #: reading them), when the reader was asked to hash: what a store keeping the image
    #: by reference records of it
    source: dict | None = None


def _read(path: Path | Remote, image_id: str, rel: Path, palette_dir: Path | None,
          rule_palette: Callable[[tuple[int, int], str], np.ndarray] | None = None,
          claim: Callable[[str], bool] | None = None, hashed: bool = False) -> ReadItem:  # fmt: skip
    if claim is not None and not claim(image_id):
        return ReadItem(path, image_id, elsewhere=True)
    source = None
    try:
        if hashed:
            image, digest, st = read_image_hashed(path)
            source = {"sha256": digest, "size": int(st.st_size), "mtime_ns": int(st.st_mtime_ns)}
        else:
            image = read_image(path)
        if palette_dir is not None:
            palette = _palette_file(palette_dir, path, rel, image.shape[:2])
        elif rule_palette is not None:
            palette = rule_palette(image.shape[:2], image_id)
        else:
            palette = None
    except ImageReadError as e:
        return ReadItem(path, image_id, error=e)
    return ReadItem(path, image_id, image, palette, source=source)


def put_waiting(q: queue.Queue, item, give_up: Callable[[], bool]) -> bool:
    """Put ``item`` into the bounded queue ``q``, waiting while it is full; False (and the
    item dropped) as soon as ``give_up()`` says the other side will not take it."""
    while True:
        try:
            q.put(item, timeout=0.05)
            return True
        except queue.Full:
            if give_up():
                return False


class Reader:
    """The images of ``todo`` in order, each with its palette file when there is a
    palette folder, or the palette ``rule_palette(shape, image_id)`` makes (a rule that
    needs no model): read by a thread up to ``ahead`` images in advance, or
    (``ahead=0``) on demand in the calling thread. ``hashed``: each with the sha256 of
    the bytes decoded and the file's stat (:attr:`ReadItem.source`)."""

    def __init__(self, todo: list[tuple[Path | Remote, str, Path]], palette_dir: Path | None, ahead: int,
                 rule_palette: Callable[[tuple[int, int], str], np.ndarray] | None = None,
                 claim: Callable[[str], bool] | None = None, hashed: bool = False):  # fmt: skip
        self._todo, self._palette_dir, self._rule_palette = todo, palette_dir, rule_palette
        self._claim = claim  # each image claimed before it is read (None: no claims)
        self._hashed = hashed
        self._next = 0
        self._thread: threading.Thread | None = None
        if ahead > 0 and todo:
            self._queue: queue.Queue = queue.Queue(maxsize=ahead)
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._run, name="ctn-label-reader")
            self._thread.start()

    def _run(self) -> None:
        for path, image_id, rel in self._todo:
            if self._stop.is_set():
                return
            try:
                item: ReadItem | BaseException = _read(path, image_id, rel, self._palette_dir, self._rule_palette,
                                                       self._claim, self._hashed)  # fmt: skip
            except BaseException as e:  # not a bad image: raised in the labelling thread
                item = e
            if not put_waiting(self._queue, item, self._stop.is_set) or isinstance(item, BaseException):
                return

    def get(self) -> ReadItem:
        """The next image (at most ``len(todo)`` calls)."""
        if self._thread is None:
            path, image_id, rel = self._todo[self._next]
            self._next += 1
            return _read(path, image_id, rel, self._palette_dir, self._rule_palette, self._claim, self._hashed)
        item = self._queue.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        """Stop reading ahead (what was read and not taken is dropped) and end the thread."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
