"""Auto-label images or folders into a label store: the core of ``ctn label``.

For every image: read it (:mod:`.images`), make its Task Palette (from a rule applied to
the predicted semantics, from the palette network, or from a palette PNG of the same
name in a folder), predict, and write the pseudo-labels with provenance ``pseudo`` into
the store (:mod:`.store`), whose per-image completion marker makes the run resumable:
images already complete are skipped, half-written ones are redone.

Several processes can label one folder into one store: ``shard=(i, n)`` takes every
n-th image starting at i (``torchrun`` sets ``RANK`` / ``WORLD_SIZE``, which are used
when no shard is given). Each image is written by exactly one process into its own
group, so writers never share a chunk.

A store remembers the model (sha256) and the rule it was written with (the rule's name
and what it does), and so does each image; labelling into it with another model, rule
or palette source is refused unless ``overwrite`` is given, so pseudo-labels of
different origins are never mixed silently: a later run without ``overwrite`` checks
the images it would skip as complete, not only the store's latest settings. Images a
person had a hand in (a task corrected, or saved from napari) are never relabelled,
``overwrite`` or not (:attr:`LabelSummary.kept`). An id the store already holds counts
as complete only for the file that image came from (:func:`image_ids`): another
folder's ``IMG_0001.jpg`` gets an id of its own.

The pipeline: reading and writing overlap with the model. A reader thread, the calling
thread and writer threads, two bounded queues (memory stays flat however many images
there are):

- a *reader* thread decodes the next images (:func:`.images.read_image`) and makes
  their palettes where no model is needed (a palette folder's PNGs; rules such as
  mosaic, random or ``S:<task>``, from the seed and the image id), at most two batches
  ahead of the model;
- the calling thread makes the palettes that need the model (semantic rules, the
  palette network), forms batches of consecutive images of one size
  and predicts them, keeping one batch in flight: it starts batch k+1 on the device
  (:meth:`.inference.Predictor.start_batch`: on CUDA it returns once the batch's decoder
  and the copy back are queued; its encoder runs while the host waits in the decoder's
  palette checks) before it waits for batch k's outputs and hands them
  to the writers, so that a GPU computes while the host works (the phases measured on
  an H200 put the calling thread's own work, palettes, tensor copies and the loop, at
  ~2 ms per image beside ~3 ms of model: one after the other they cap the rate); it alone calls
  ``progress`` and ``should_stop`` and fills the summary, so these behave as in a
  sequential loop (``done`` is sorted into input order at the end);
- ``writers`` *writer* threads (default ``min(4, cores - 1)``) take the predictions from
  one queue in input order and write them into the store
  (:meth:`.store.LabelStore.write_sample`, completion marker last); at most
  ``max(2 * batch_size, batch_size + writers)`` images wait or are being written, and
  the calling thread blocks when the queue is full. A store write (dozens of small
  compressed files) is far slower than the model on a GPU; each image is its own group
  and no two images' writes share a file, so the threads need no lock, and several
  images finish in any order.
- or, with ``writer_processes`` (default: from 64 images on), ``writers`` *writer
  processes* (default ``min(12, cores - 2)``, spawned) that also decode the network's
  output into labels: the calling thread hands them each image's palette and raw output
  (as many in flight as above). On an H200 the forward took ~4 ms per image, decoding
  6 and a store write 42, work that holds the GIL, so threads hardly overlap it. Each
  process (:mod:`._writer_process`: numpy decoding, no torch) opens the store once; a
  spawned interpreter's start is not repaid by a few images. They ignore Ctrl-C: the
  calling thread stops them, each after its image. A script that labels with them must
  guard its top level with ``if __name__ == "__main__":`` (spawned processes import the
  main module; whatever it imports at its top, torch included, each process imports
  too).

PIL decoding and zarr's compression release the GIL for most of their work, so they
run while the model computes. ``progress(done, total)`` is called, in the calling
thread, once per image written or failed. When ``should_stop()`` says so, the images
already predicted (the batch in flight too) are still written and the rest is left for
the next run. :attr:`LabelSummary.timings` says where the calling thread's time went
(:data:`TIMINGS`) and how busy the writers were: which side holds the other up. A failed
write (a full disk, a :class:`~.store.StoreError`) stops the writers (each finishes the
image it is writing, the queued ones are dropped) and is raised in the calling thread as
the same exception (from a writer process: a copy of it), with a note naming the image
when its message does not; images before it are complete (with several writers, some
after it may be too), the failed one is redone by the next run. All threads and writer
processes have ended when :func:`label_images` returns or raises: after an error in the
calling thread the images already predicted are written first, after Ctrl-C each writer
finishes only the image it is writing. With a semantic
rule the encoder features of a whole batch stay cached between the palette and the
prediction (the Predictor's cache is raised to the batch size for the run).
``pipeline=False`` does everything one step after another in the calling thread: the
reference the pipeline must equal, and a way to debug; the default pipelines when the
model runs on a GPU (on a CPU the model keeps every core busy, so the writers only
compete with it: docs/benchmarks.md).
"""

from __future__ import annotations

import atexit
import concurrent.futures
import concurrent.futures.process
import contextlib
import hashlib
import multiprocessing
import os
import queue
import shutil
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from .image_ids import image_ids, relative_to_inputs
from .images import ImageReadError, read_image, scan_inputs
from ._writer_process import (SharedSlots, init_writer_process, process_write, writer_process_ready,
                              write_prediction)  # fmt: skip
from .inference import Prediction, Predictor
from .palette import load_rule, rule_fingerprint, validate_palette
from .shards import ShardError, parse_shard, shard_from_environment
from .store import PERSON_PROVENANCES, LabelStore, StoreError
from .tasks import get_task

__all__ = ["LabelError", "LabelSummary", "TIMINGS", "format_timings", "label_images", "image_ids", "contact_sheet", "parse_shard",
           "default_writers", "default_writer_processes"]

#: with ``writer_processes=None``, writer processes are used from this many images on:
#: starting them (spawned interpreters) costs time that fewer images do not repay
PROCESS_MIN_IMAGES = 64


#: the labelling thread's time in :attr:`LabelSummary.timings`: waiting for the reader;
#: making palettes; starting batches on the device (on a CPU: the whole forward);
#: waiting for a started batch (and decoding its labels, without writer processes);
#: handing images to the writers (waiting while they hold as many as they may); after
#: the last batch, waiting for the writers to finish; the rest
TIMINGS = ("read", "palette", "predict", "wait", "hand", "finish", "other")


class _Clock:
    """Accumulates the labelling thread's seconds per :data:`TIMINGS` key."""

    def __init__(self):
        self._t0 = time.perf_counter()
        self._end: float | None = None
        self._totals: dict[str, float] = dict.fromkeys(TIMINGS, 0.0)

    @contextlib.contextmanager
    def __call__(self, key: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self._totals[key] += time.perf_counter() - t0

    def stop(self) -> None:
        self._end = time.perf_counter()

    def seconds(self, writers: int, writers_busy: float) -> dict[str, float]:
        total = (self._end or time.perf_counter()) - self._t0
        out = dict(self._totals)
        out["other"] = max(0.0, total - sum(v for k, v in out.items() if k != "other"))
        return {**out, "total": total, "writers": float(writers), "writers_busy": writers_busy}


def format_timings(timings: dict[str, float]) -> str:
    """One line from :attr:`LabelSummary.timings`: where the labelling thread's time went
    (shares of the run) and how busy the writers were."""
    total = timings.get("total", 0.0)
    if total <= 0:
        return "time: nothing timed"
    words = {"predict": "starting batches", "wait": "waiting for them", "read": "waiting for the reader",
             "palette": "palettes", "hand": "handing to the writers", "finish": "waiting for the writers at the end",
             "other": "other"}  # fmt: skip
    parts = ", ".join(f"{words[k]} {timings.get(k, 0.0) / total:.0%}" for k in TIMINGS)
    line = f"time {total:.1f} s, labelling thread: {parts}"
    n = int(timings.get("writers", 0))
    if n:
        line += f"; {n} writer(s) busy {timings.get('writers_busy', 0.0) / (total * n):.0%} of the run"
    return line


class LabelError(ValueError):
    """A usage problem: nothing was written."""


@dataclass
class LabelSummary:
    store: Path
    done: list[str] = field(default_factory=list)
    skipped_complete: list[str] = field(default_factory=list)
    #: images in the store a person had a hand in (corrected, or saved from napari):
    #: never relabelled, ``overwrite`` or not
    kept: list[str] = field(default_factory=list)
    #: files in the input folders that are not images by their suffix: not tried, and
    #: not a reason for a "partial" result
    ignored: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    preview: Path | None = None
    stopped: bool = False
    #: seconds: where the labelling thread's time went (see :data:`TIMINGS`), its
    #: ``total``, and ``writers_busy``, the writers' time decoding and writing summed
    #: over the ``writers`` threads or processes (0: the labelling thread wrote)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed


#: what a store records of how its images were labelled, compared before labelling more
#: into it: the model's and palette network's weights (sha256, not their paths), the
#: rule (its name and what it does: :func:`.palette.rule_fingerprint`) and where the
#: palettes came from (a palette folder by its absolute path)
_SETTINGS = ("model_sha256", "rule", "rule_sha256", "palette_from", "palette_model_sha256", "scale")
#: recorded only by newer versions: compared where both sides have one
_SETTINGS_IF_RECORDED = ("rule_sha256", "palette_model_sha256", "scale")


def _normal_setting(key: str, value):
    if key == "palette_from" and isinstance(value, str) and value.startswith("folder:"):
        return f"folder:{Path(value[len('folder:'):]).resolve()}"
    return value


def _differs(key: str, have: dict, wanted: dict) -> bool:
    if key in ("rule", "rule_sha256") and str(wanted.get("palette_from")).startswith("folder:"):
        return False  # palettes from a folder: no rule made them (earlier versions recorded --rule's)
    a, b = have.get(key), wanted.get(key)
    if key in _SETTINGS_IF_RECORDED and (a is None or b is None):
        return False
    return _normal_setting(key, a) != _normal_setting(key, b)


def _settings_differ(have: dict, wanted: dict) -> bool:
    return any(_differs(k, have, wanted) for k in _SETTINGS)


def _image_settings(record: dict) -> dict:
    """An image's labelling settings, from its attributes (as :data:`_SETTINGS`)."""
    return {"model_sha256": record.get("model_sha256"), "rule": record.get("rule"),
            "rule_sha256": record.get("rule_sha256"), "palette_from": record.get("palette_origin"),
            "palette_model_sha256": record.get("palette_model_sha256"), "scale": record.get("scale")}  # fmt: skip


def _slim(record: dict) -> dict:
    """What labelling needs of a stored image's attributes: its source and sha256, its
    settings, its provenance and whether napari saved it (a large folder's records stay
    small in memory)."""
    keep = ("model_sha256", "rule", "rule_sha256", "palette_origin", "palette_model_sha256", "provenance")
    out = {k: record[k] for k in keep if k in record}
    out["image"] = {k: (record.get("image") or {}).get(k) for k in ("source", "sha256", "sha256_of")}
    if "napari" in record:
        out["napari"] = True
    return out


def _person_made(record: dict) -> bool:
    """Whether a person had a hand in a stored image: a task corrected (or ground truth),
    or saved from napari (the ``"napari"`` attribute of ``_napari.store_io``: a palette
    a person painted or accepted). ``ctn label`` never relabels such an image."""
    prov = record.get("provenance") or {}
    return "napari" in record or any(v in PERSON_PROVENANCES for v in prov.values())


def _composite_picture(pred: Prediction) -> np.ndarray:
    from .visualize import colorize

    h, w = pred.palette.shape
    pic = np.zeros((h, w, 3), np.uint8)
    for name, t in pred.tasks.items():
        region = pred.palette == get_task(name).palette_value
        pic[region] = colorize(name, t.label)[region]
    return pic


def contact_sheet(rows: list[tuple[np.ndarray, Prediction]], path: Path, thumb: int = 160) -> Path:
    """A PNG: per image, the image, its palette and the composite pseudo-labels."""
    import imageio.v3 as iio
    from PIL import Image

    from .visualize import colorize_palette, grid

    def fit(a: np.ndarray) -> np.ndarray:
        return np.asarray(Image.fromarray(a).resize((thumb, thumb), Image.NEAREST))

    pics = [[fit(img), fit(colorize_palette(p.palette)), fit(_composite_picture(p))] for img, p in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    # a name of its own: shards finishing together write the same preview path
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp.png")
    iio.imwrite(tmp, grid(pics))
    os.replace(tmp, path)
    return path


def image_rng(seed: int, image_id: str) -> np.random.Generator:
    """The random generator of one image's palette (random rules): from the seed and the
    image id alone, so a resumed, sharded or re-batched run draws the same palettes."""
    key = int.from_bytes(hashlib.sha256(image_id.encode("utf-8")).digest()[:8], "little")
    return np.random.default_rng([int(seed), key])


def _open_store(path: Path, attrs: dict) -> LabelStore:
    """Open the store, creating it first if it is absent (or an empty folder).

    Shards started together (torchrun) would race to create it: one process's
    half-made root (or its mode-"w" create wiping the other's) made the other fail.
    The root is made in a private folder beside it and renamed into place, which is
    atomic; a process that loses the race finds the winner's store and opens it.
    """
    try:
        fresh = not path.exists() or (path.is_dir() and not any(path.iterdir()))
        if fresh:
            tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
            try:
                LabelStore(tmp, mode="w", attrs=attrs)
                try:
                    os.rename(tmp, path)  # fails when another process created it first
                except OSError:
                    if not path.is_dir():
                        raise
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        return LabelStore(path, mode="a", attrs=attrs)
    except StoreError as e:
        raise LabelError(str(e)) from None


def _palette_file(folder: Path, image_path: Path, rel: Path, shape) -> np.ndarray:
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


# ----------------------------------------------------------------------------- the pipeline


@dataclass
class _Read:
    """One image as the reader hands it over: pixels (and palette file), or why not."""

    path: Path
    image_id: str
    image: np.ndarray | None = None
    palette: np.ndarray | None = None  # from a palette folder, or a rule that needs no model
    error: ImageReadError | None = None


def _read(path: Path, image_id: str, rel: Path, palette_dir: Path | None,
          rule_palette: Callable[[tuple[int, int], str], np.ndarray] | None = None) -> _Read:  # fmt: skip
    try:
        image = read_image(path)
        if palette_dir is not None:
            palette = _palette_file(palette_dir, path, rel, image.shape[:2])
        elif rule_palette is not None:
            palette = rule_palette(image.shape[:2], image_id)
        else:
            palette = None
    except ImageReadError as e:
        return _Read(path, image_id, error=e)
    return _Read(path, image_id, image, palette)


def _put(q: queue.Queue, item, give_up: Callable[[], bool]) -> bool:
    """Put ``item`` into the bounded queue ``q``, waiting while it is full; False (and the
    item dropped) as soon as ``give_up()`` says the other side will not take it."""
    while True:
        try:
            q.put(item, timeout=0.05)
            return True
        except queue.Full:
            if give_up():
                return False


class _Reader:
    """The images of ``todo`` in order, each with its palette file when there is a
    palette folder, or the palette ``rule_palette(shape, image_id)`` makes (a rule that
    needs no model): read by a thread up to ``ahead`` images in advance, or
    (``ahead=0``) on demand in the calling thread."""

    def __init__(self, todo: list[tuple[Path, str, Path]], palette_dir: Path | None, ahead: int,
                 rule_palette: Callable[[tuple[int, int], str], np.ndarray] | None = None):  # fmt: skip
        self._todo, self._palette_dir, self._rule_palette = todo, palette_dir, rule_palette
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
                item: _Read | BaseException = _read(path, image_id, rel, self._palette_dir, self._rule_palette)
            except BaseException as e:  # not a bad image: raised in the labelling thread
                item = e
            if not _put(self._queue, item, self._stop.is_set) or isinstance(item, BaseException):
                return

    def get(self) -> _Read:
        """The next image (at most ``len(todo)`` calls)."""
        if self._thread is None:
            path, image_id, rel = self._todo[self._next]
            self._next += 1
            return _read(path, image_id, rel, self._palette_dir, self._rule_palette)
        item = self._queue.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        """Stop reading ahead (what was read and not taken is dropped) and end the thread."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()


def default_writers() -> int:
    """Writer threads when pipelining and ``writers`` is not given: every core but the
    labelling thread's, at most 4."""
    return min(4, max(1, (os.cpu_count() or 1) - 1))


class _WriterBase:
    """What both writers report to the labelling thread: the ids written, the first error."""

    _written: queue.SimpleQueue  # ids, in the order finished
    _error: BaseException | None
    #: seconds spent decoding and writing, summed over the threads or processes
    busy: float = 0.0

    def written(self) -> list[str]:
        """The ids written since the last call, in the order they were finished."""
        out = []
        while True:
            try:
                out.append(self._written.get_nowait())
            except queue.Empty:
                return out

    def check(self) -> None:
        """Raise the exception of a failed write, here."""
        if self._error is not None:
            raise self._error


class _Writer(_WriterBase):
    """Writes labelled images into the store: by ``threads`` threads taking them from one
    queue of at most ``depth`` images, or (``threads=0``) at once in the calling thread.

    Each image is its own group of the store and its write touches no file another
    image's write does (:meth:`.store.LabelStore.write_sample`), so the threads need no
    lock. With one thread the images are written in the order given; with more they
    start in that order and finish in any order.

    The first failed write stops every thread: each finishes the image it is writing,
    the queued ones are not written, and the exception is raised in the labelling thread
    by :meth:`check` or :meth:`submit`. Every image submitted before the failed one was
    taken by a thread before it, so it is written (or failed) when :meth:`close` returns.
    """

    def __init__(self, write: Callable[..., None], depth: int, threads: int = 1):
        self._write = write
        self._written: queue.SimpleQueue = queue.SimpleQueue()  # ids, in the order finished
        self._error: BaseException | None = None
        self._lock = threading.Lock()  # the first error is the one raised
        self._threads: list[threading.Thread] = []
        if threads > 0:
            self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
            self._stop = threading.Event()  # a write failed, or interrupted: take no more
            self._threads = [threading.Thread(target=self._run, name=f"ctn-label-writer-{i}")
                             for i in range(threads)]  # fmt: skip
            for t in self._threads:
                t.start()

    def _write_one(self, item: tuple) -> None:
        t0 = time.perf_counter()
        try:
            self._write(*item)
        except BaseException as e:
            if isinstance(e, Exception) and item[1] not in str(e):
                e.add_note(f"while writing image {item[1]!r} ({item[0]}) into the label store")
            with self._lock:  # the first failed write is the one raised; no more are made
                if self._error is None:
                    self._error = e
            raise
        with self._lock:
            self.busy += time.perf_counter() - t0
        self._written.put(item[1])

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None or self._stop.is_set():
                return  # the end, or interrupted / failed: the next run labels what waits
            try:
                self._write_one(item)
            except BaseException:
                self._stop.set()
                return

    def _dead(self) -> bool:
        return not any(t.is_alive() for t in self._threads)

    def submit(self, item: tuple) -> None:
        """Write ``(path, image_id, image, prediction)``, or queue it for the threads."""
        self.check()  # after a failed write, no more
        if not self._threads:  # in the calling thread
            self._write_one(item)
            return
        if not _put(self._queue, item, lambda: self._stop.is_set() or self._dead()):
            self.check()

    def close(self, abort: bool = False) -> None:
        """Let the threads write what waits (``abort``: only the images they are writing)
        and end them. A second interrupt while waiting aborts."""
        if not self._threads:
            return
        if abort:
            self._stop.set()
        try:
            self._end()
        except BaseException:
            self._stop.set()
            self._end()
            raise

    def _end(self) -> None:
        for _ in self._threads:  # one end mark per thread, behind what waits
            if not _put(self._queue, None, self._dead):
                break
        for t in self._threads:
            t.join()


def default_writer_processes() -> int:
    """Writer processes when they are used and ``writers`` is not given: every core but
    the labelling thread's and one more (the reader, the main process's own work), at
    least 1, at most 12."""
    return min(12, max(1, (os.cpu_count() or 1) - 2))


class _ProcessWriter(_WriterBase):
    """:class:`_Writer`'s work in ``processes`` worker processes (spawned), which also
    decode the network's output into labels (numpy, :mod:`.prediction`): both hold the GIL
    much of the time, so threads hardly overlap them. The processes run
    :mod:`._writer_process`, which leaves torch alone.

    :meth:`submit` takes ``(path, image_id, image, palette, output)``; at most ``limit``
    images are handed over and not yet written (:meth:`submit` waits). The first failed
    write stops the writing: the images not yet started are cancelled, those the
    processes are writing are finished, and the exception (noted with the image, as
    :class:`_Writer` does) is raised in the labelling thread by :meth:`check` or
    :meth:`submit`. The processes are started at once (they open the store while the
    model predicts the first batch); :meth:`ready` waits for them. An image's arrays go
    to them through shared memory (:class:`._writer_process.SharedSlots`), removed by
    :meth:`close` (``shared=False``: through the pool's pipe, pickled).
    """

    def __init__(self, store_path: Path, attrs: dict, store_image: bool, tasks, limit: int, processes: int,
                 shared: bool = True):  # fmt: skip
        ctx = multiprocessing.get_context("spawn")  # the parent has threads (and maybe CUDA)
        self._shared = shared  # False: every image's arrays through the pool's pipe
        self._limit = max(1, limit)
        self._written: queue.SimpleQueue = queue.SimpleQueue()  # ids, in the order finished
        self._error: BaseException | None = None
        self._lock = threading.Lock()
        self._items: dict[concurrent.futures.Future, tuple] = {}  # handed over, not settled
        self._closed = False
        self._slots = SharedSlots()  # the arrays of the images in flight, in shared memory
        self._executor = concurrent.futures.ProcessPoolExecutor(
            max_workers=processes, mp_context=ctx, initializer=init_writer_process,
            initargs=(str(store_path), attrs, store_image, tuple(tasks), ctx.Barrier(processes)))  # fmt: skip
        try:  # one task per process, each waiting for all: every process is started now
            self._starting = [self._executor.submit(writer_process_ready, 300.0) for _ in range(processes)]
        except BaseException:
            self._executor.shutdown(wait=True, cancel_futures=True)
            raise

    def ready(self, timeout: float | None = None) -> bool:
        """Wait until every process has started (imports done, store open)."""
        done, _ = concurrent.futures.wait(self._starting, timeout=timeout)
        return len(done) == len(self._starting) and not any(f.cancelled() or f.exception() for f in done)

    def _settle(self, fut: concurrent.futures.Future) -> None:
        """A finished write: its id to :meth:`written`, or the first error (once per future,
        from the executor's thread or the labelling thread)."""
        with self._lock:
            item = self._items.pop(fut, None)
            if item is not None and item[2] is not None:  # its shared memory, free again
                self._slots.release(item[2])
            if item is None or fut.cancelled():
                return
            e = fut.exception()
            if e is None:
                self.busy += fut.result()[1]
                self._written.put(item[1])
                return
            if self._error is not None:
                return
            if isinstance(e, Exception) and item[1] not in str(e):
                e.add_note(f"while writing image {item[1]!r} ({item[0]}) into the label store")
            self._error = e
            # a broken pool fails every future itself (cancelling one under it upsets it)
            waiting = [] if isinstance(e, concurrent.futures.process.BrokenProcessPool) else list(self._items)
        for f in waiting:  # not started yet: not written (running ones finish)
            f.cancel()

    def submit(self, item: tuple) -> None:
        """Hand ``(path, image_id, image, palette, output, thin_edges)`` to the processes
        (``thin_edges``: :func:`.prediction.decode_labels`'s)."""
        self.check()
        while True:
            with self._lock:
                pending = list(self._items)
            if len(pending) < self._limit:
                break
            done, _ = concurrent.futures.wait(pending, return_when=concurrent.futures.FIRST_COMPLETED)
            for f in done:
                self._settle(f)
            self.check()
        path, image_id, image, palette, output, thin = item
        arrays = (np.asarray(image), np.asarray(palette), np.asarray(output))
        if self._closed:
            raise RuntimeError("the writer processes were closed")
        packed = self._slots.pack(arrays) if self._shared else None  # None: through the pipe
        args, slot = packed if packed is not None else (arrays, None)
        try:
            fut = self._executor.submit(process_write, str(Path(path).resolve()), image_id, *args, thin)
        except BaseException:  # a broken pool: its futures hold why
            if slot is not None:
                self._slots.release(slot)
            self.check()
            raise
        with self._lock:
            self._items[fut] = (path, image_id, slot)
        fut.add_done_callback(self._settle)

    def close(self, abort: bool = False) -> None:
        """Let the processes write what was handed over (``abort``, or after a failed
        write: only the images they are writing) and end them. A second interrupt while
        waiting stops waiting: the processes still finish their images (they ignore
        Ctrl-C) and are joined when the interpreter exits."""
        if self._closed:
            return
        self._closed = True
        deferred = False
        try:
            self._executor.shutdown(wait=True, cancel_futures=abort or self._error is not None)
        except BaseException:
            self._executor.shutdown(wait=False, cancel_futures=True)
            # the processes may still open the buffers of the images they were handed:
            # removed at exit, after the interpreter has joined them
            atexit.register(self._slots.close)
            deferred = True
            raise
        finally:
            if not deferred:
                self._slots.close()


def label_images(
    inputs: Iterable[str | os.PathLike],
    store_path: str | os.PathLike,
    *,
    rule: str | None = None,
    palette_from: str = "semantics",
    model: str | Predictor = "default",
    palette_model: str = "default",
    device: str = "auto",
    batch_size: int = 4,
    tile: int = 1024,
    overlap: int | None = None,
    precision: str = "auto",
    scale: str = "auto",
    overwrite: bool = False,
    shard: tuple[int, int] | None = None,
    store_image: bool = True,
    preview: str | os.PathLike | None = None,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    pipeline: bool | None = None,
    writers: int | None = None,
    writer_processes: bool | None = None,
) -> LabelSummary:
    """Label every image of ``inputs`` into ``store_path`` (see the module docstring).

    ``progress(done, total)`` is called after each image is written or has failed;
    ``should_stop()`` is asked before each batch (the images predicted so far are
    written, the rest is left for the next run). ``pipeline=False`` reads, predicts and
    writes one after the other in the calling thread (no threads; for debugging, and the
    reference the pipeline must equal); None (default) pipelines when the model runs on a
    GPU: on a CPU the model already keeps every core busy, and the writer's compression
    competing for them made labelling slower (0.75x on the 2-core benchmark machine).
    ``writers`` is the number of writer threads when pipelining (0: write in the calling
    thread; None: :func:`default_writers`, ``min(4, cores - 1)``); ignored without
    pipelining. ``writer_processes``: write (and decode the labels) in ``writers``
    processes instead of threads (None: :func:`default_writer_processes`,
    ``min(12, cores - 2)``); None (default) when pipelining at least
    :data:`PROCESS_MIN_IMAGES` (64) images, True / False forces it; never without
    pipelining or with ``writers=0``. ``summary.done`` lists the images written in input
    order.

    ``rule`` None: R2, or with ``palette_from="net"`` the rule the palette network was
    trained for (its checkpoint says; another rule is refused). ``tile`` / ``overlap``:
    images larger than ``tile`` are predicted in overlapping tiles (``overlap`` None:
    ``min(128, tile // 4)``). ``scale``: the working resolution
    (:mod:`composite_tasking.scale`; ``auto``, the default, shrinks images larger than
    the model's training size to it, ``none`` predicts every pixel); recorded per image
    and compared on resume like the model and the rule (a given Predictor's own scale is
    used). Image ids: :func:`image_ids`, settled against the store.
    """
    if writers is not None and (isinstance(writers, bool) or not isinstance(writers, int) or writers < 0):
        raise LabelError(f"--writers takes an integer >= 0, got {writers!r}")
    if writer_processes not in (None, True, False):
        raise LabelError(f"writer_processes is None, True or False, got {writer_processes!r}")
    inputs = list(inputs)
    store_path = Path(store_path)
    if preview is not None and (Path(preview).suffix.lower() != ".png" or Path(preview).is_dir()):
        raise LabelError(f"the preview is a PNG file: {os.fspath(preview)!r} is "
                         f"{'a folder' if Path(preview).is_dir() else 'not a .png path'}")  # fmt: skip
    palette_dir = None
    if palette_from not in ("semantics", "net"):
        palette_dir = Path(palette_from).resolve()
        if not palette_dir.is_dir():
            raise LabelError(f"--palette-from is 'semantics', 'net' or a folder of palette PNGs; "
                             f"{palette_from!r} is none of these")  # fmt: skip
    try:
        shard = shard_from_environment() if shard is None else shard
    except ShardError as e:
        raise LabelError(str(e)) from None

    predictor = model if isinstance(model, Predictor) else Predictor(
        model, device=device, tile=tile, overlap=min(128, tile // 4) if overlap is None else overlap,
        precision=precision, palette_model=palette_model if palette_from == "net" else None, scale=scale)
    palette_sha = None
    if palette_from == "net":
        try:
            predictor.palette_net  # load now: a missing network is a usage error
        except (ValueError, OSError) as e:
            raise LabelError(f"--palette-from net: {e}") from None
        info = predictor.palette_info
        palette_sha = info.sha256 if info is not None else None
        learned = ((info.provenance.get("recipe") or {}).get("rule") if info is not None else None)
        if learned is not None:  # the network makes its rule's palettes, whatever is asked
            if rule is not None and load_rule(rule).name != load_rule(learned).name:
                raise LabelError(f"--palette-from net: the palette network ({info.path}) was trained "
                                 f"for rule {learned}, so its palettes follow {learned}, not "
                                 f"{load_rule(rule).name}; leave out --rule, or use "
                                 f"--palette-from semantics --rule {rule}")  # fmt: skip
            rule = learned
    if palette_dir is not None and rule is not None:
        raise LabelError(f"--palette-from {palette_from}: the palettes come from that folder, not from a "
                         f"rule; leave out --rule {rule}")  # fmt: skip
    rule_obj = load_rule("R2" if rule is None else rule)  # a bad rule: a usage error before anything is written
    origin = palette_from if palette_dir is None else f"folder:{palette_dir}"
    # palettes from a folder were made by no rule this run knows: none is recorded (a
    # recorded rule would make fine-tuning under another rule refuse them)
    rule_name = None if palette_dir is not None else rule_obj.name
    rule_sha = None if palette_dir is not None else rule_fingerprint(rule_obj)
    wanted = {"model_sha256": predictor.model_sha256, "model": predictor.model_id,
              "rule": rule_name, "rule_sha256": rule_sha, "palette_from": origin,
              "scale": str(predictor.scale)}  # fmt: skip
    if palette_sha is not None:
        wanted["palette_model_sha256"] = palette_sha

    # never the store or the preview (an output inside an input folder)
    scan = scan_inputs(inputs, exclude=[store_path] + ([Path(preview)] if preview is not None else []))
    summary = LabelSummary(store_path, failed=list(scan.skipped),
                           ignored=[*scan.ignored_files, *scan.zarr_folders])  # fmt: skip
    files = scan.files

    store = _open_store(store_path, {"labelling": wanted})
    have = store.attrs.get("labelling")
    records = {i: _slim(r) for i, r in store.image_records().items()}  # ~0.3 KB an image
    if have is not None and records and _settings_differ(have, wanted):
        if not overwrite:
            diff = {k: (have.get(k), wanted.get(k)) for k in _SETTINGS if _differs(k, have, wanted)}
            raise LabelError(
                f"{store_path} was written with other settings {diff} (stored, asked); "
                "pass --overwrite to relabel it, or write to another store"
            )
    ids = image_ids(files, inputs, records, shard)
    roots = [Path(i) for i in inputs if Path(i).is_dir()]
    rels = [relative_to_inputs(f, roots) for f in files]
    if shard is not None:
        i, n = shard
        files, ids, rels = files[i::n], ids[i::n], rels[i::n]
    image_wanted = {"model_sha256": wanted["model_sha256"], "rule": wanted["rule"],
                    "rule_sha256": wanted["rule_sha256"], "palette_from": origin,
                    "palette_model_sha256": palette_sha, "scale": wanted["scale"]}  # fmt: skip
    todo, other = [], []
    for f, i, rel in zip(files, ids, rels):
        rec = records.get(i)
        if rec is None:
            todo.append((f, i, rel))
        elif _person_made(rec):  # a person's work: never relabelled
            summary.kept.append(i)
        elif _settings_differ(_image_settings(rec), image_wanted):
            other.append(i)
            todo.append((f, i, rel))
        elif overwrite:
            todo.append((f, i, rel))
        else:
            summary.skipped_complete.append(i)
    if other and not overwrite:
        rec = _image_settings(records[other[0]])
        diff = {k: (rec.get(k), image_wanted.get(k)) for k in _SETTINGS if _differs(k, rec, image_wanted)}
        raise LabelError(f"{len(other)} image(s) of {store_path} were labelled with other settings "
                         f"(e.g. {other[0]!r}: {diff}, stored, asked); pass --overwrite to relabel "
                         "them, or write to another store")  # fmt: skip
    if have != wanted:
        store.update_attrs({"labelling": wanted})
    total = len(todo)
    batch_size = max(1, batch_size)
    # a semantic rule on the model's own semantics: made in predict_batch, from the same encoder pass
    own_palette = palette_dir is None and palette_from != "net" and rule_obj.needs_semantics
    write_attrs = {"palette_origin": origin, "model": predictor.model_id,
                   "model_sha256": predictor.model_sha256, "precision": predictor.precision,
                   "scale": str(predictor.scale)}  # fmt: skip
    if rule_name is not None:
        write_attrs.update({"rule": rule_name, "rule_sha256": rule_sha})
    if palette_sha is not None:
        write_attrs["palette_model_sha256"] = palette_sha

    def write(path: Path, image_id: str, image: np.ndarray, pred: Prediction) -> None:
        write_prediction(store, image_id, image, pred, write_attrs, store_image, str(Path(path).resolve()))

    def rule_palette(shape: tuple[int, int], image_id: str) -> np.ndarray:
        return rule_obj.palette(shape, rng=image_rng(seed, image_id))

    # a palette that needs no model (a folder's, or a rule's) is made by the reader
    by_reader = palette_dir is not None or (palette_from != "net" and not own_palette)

    def make_palette(item: _Read) -> np.ndarray:
        if by_reader:
            return item.palette
        if palette_from == "net":
            return predictor.palette_from_net(item.image)
        return None  # a semantic rule's: made from the batch's own semantics by predict_batch

    sheet: list[tuple[np.ndarray, Prediction]] = []
    done = 0

    def count(image_id: str | None = None) -> None:
        nonlocal done
        if image_id is not None:
            summary.done.append(image_id)
        done += 1
        if progress:
            progress(done, total)

    def collect() -> None:  # images the writer has finished, then its error if any
        for image_id in writer.written():
            count(image_id)
        writer.check()

    if pipeline is None:  # the CPU is free while a GPU computes, not while a CPU does
        pipeline = predictor.device.type == "cuda"
    depth = 2 * batch_size if pipeline else 0  # images read ahead / waiting to be written
    if not pipeline:
        writers = 0
    # writer processes (decoding too) when there are enough images to repay their start
    processes = bool(pipeline and writers != 0 and total > 0
                     and (total >= PROCESS_MIN_IMAGES if writer_processes is None else writer_processes))
    if writers is None:
        writers = default_writer_processes() if processes else default_writers()
    reader: _Reader | None = None
    writer: _Writer | _ProcessWriter | None = None
    interrupted = False
    clock = _Clock()
    # pipelined, one batch stays in flight: the next one is started on the device before
    # the last one's outputs are handed to the writers (on a GPU they compute meanwhile)
    inflight: tuple[list, object] | None = None

    def hand_over(batch_, pending) -> None:
        """A started batch's outputs (waited for) to the writers, and to the contact sheet."""
        with clock("wait"):
            results = pending.result()
        for (path, image_id, image, _), res in zip(batch_, results):
            if processes:  # the network's outputs: the writer processes decode them
                pal, out = res
                if preview is not None and len(sheet) < 12:  # decoded here for the contact sheet
                    sheet.append((image, Prediction(pal, out, predictor.decode_labels(out, pal))))
                with clock("hand"):
                    writer.submit((path, image_id, image, pal, out, predictor.upscale(pal.shape)))
                continue
            if len(sheet) < 12:
                sheet.append((image, res))
            with clock("hand"):
                writer.submit((path, image_id, image, res))
            if not writers:
                collect()

    def hand_over_inflight() -> None:
        nonlocal inflight
        previous, inflight = inflight, None
        if previous is not None:
            hand_over(*previous)

    try:
        reader = _Reader(todo, palette_dir, ahead=depth, rule_palette=rule_palette if by_reader else None)
        # in the writers' hands: at most max(2 * batch size, batch size + writers) images
        if processes:
            writer = _ProcessWriter(store_path.resolve(), write_attrs, store_image, predictor.tasks,
                                    limit=max(batch_size, depth - writers) + writers, processes=writers)  # fmt: skip
        else:
            writer = _Writer(write, depth=max(batch_size, depth - writers), threads=writers)
        pos = 0
        pending: _Read | None = None  # read, of another size than the batch before
        while pos < total:
            collect()
            if should_stop is not None and should_stop():
                summary.stopped = True
                break
            # a batch: consecutive readable images of one size (or one image)
            batch: list[tuple[Path, str, np.ndarray, np.ndarray]] = []
            while pos < total and len(batch) < batch_size:
                if pending is None:
                    with clock("read"):
                        item = reader.get()
                else:
                    item, pending = pending, None
                if item.error is None and batch and item.image.shape != batch[0][2].shape:
                    pending = item
                    break
                try:
                    if item.error is not None:
                        raise item.error
                    with clock("palette"):
                        palette = make_palette(item)
                except ImageReadError as e:
                    summary.failed.append((e.path, e.reason))
                    pos += 1
                    count()
                    continue
                batch.append((item.path, item.image_id, item.image, palette))
                pos += 1
            if not batch:
                continue
            images = [b[2] for b in batch]
            palettes = None if own_palette else [b[3] for b in batch]
            rule_arg = rule_obj if own_palette else None  # semantic rules: palettes from the same pass
            with clock("predict"):
                started = predictor.start_batch(images, palettes, decode=not processes, rule=rule_arg)
            previous, inflight = inflight, (batch, started)
            if previous is not None:
                hand_over(*previous)
            if not pipeline:  # one step after another
                hand_over_inflight()
        hand_over_inflight()
    except BaseException as e:
        interrupted = not isinstance(e, Exception)  # Ctrl-C: stop after the image being written
        if not interrupted:  # the batch in flight was predicted: written before the error is raised
            try:
                hand_over_inflight()
            except Exception:  # noqa: S110 - the first error is the one raised
                pass
            except BaseException:  # Ctrl-C meanwhile: the writers stop after their images
                interrupted = True
        raise
    finally:
        try:
            if reader is not None:
                reader.close()
        finally:
            if writer is not None:  # writes what was predicted (interrupted: stops after the current image)
                with clock("finish"):
                    writer.close(abort=interrupted)
        clock.stop()
        summary.timings = clock.seconds(writers, writer.busy if writer is not None else 0.0)
    collect()
    order = {image_id: k for k, (_, image_id, _) in enumerate(todo)}
    summary.done.sort(key=order.__getitem__)  # writers finish in any order: report input order
    if preview is not None and sheet:
        summary.preview = contact_sheet(sheet, Path(preview))
    return summary
