"""What ``ctn label``'s writer processes run: decode the network's output and write the
image into the label store.

Spawned processes import this module to find their functions; it and everything it
imports (the store, :mod:`.prediction`'s numpy decoding, the task table) leave torch
alone, so a writer process costs ~100 MB and a fraction of a second to start instead of
~400 MB and seconds with torch (``tests/test_label.py`` checks that torch stays out).
:func:`write_prediction` is also what the writer threads and the labelling thread call.

The arrays of an image (its pixels, palette and the network's raw output, ~1 MB at
256 x 256) go to the processes through shared memory (:class:`SharedSlots`, one
buffer per image in flight; only their names, offsets and shapes are pickled): sent
through the pool's one pipe, pickled by one feeder thread, they cost ~2.5 ms per image
on the 2-core CPU (370 images/s with a worker that does nothing, against ~9,000 through
shared memory), work that also held the labelling process's GIL. Where shared memory
has no room (``/dev/shm`` nearly full) or an image is very large, its arrays go
through the pipe as before.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from multiprocessing import shared_memory

import numpy as np

from .prediction import Prediction, decode_labels
from .store import LabelStore
from .store.location import Remote


def write_prediction(
    store: LabelStore,
    image_id: str,
    image: np.ndarray,
    pred: Prediction,
    attrs: dict,
    store_image: bool,
    image_source: str,
    source: dict | None = None,
) -> None:
    """One labelled image into the store: what every writer (thread or process) does.
    ``source``: ``{"sha256", "size", "mtime_ns"}`` of the file's bytes the image was
    decoded from (the reader's, :func:`~composite_tasking.images.read_image_hashed`),
    recorded for an image stored by reference (else the store hashes the file now,
    which may no longer be the picture labelled)."""
    source = source or {}
    stat = {k: source[k] for k in ("size", "mtime_ns")} if "size" in source else None
    store.write_sample(
        image_id,
        pred.to_sample(image),
        provenance=dict.fromkeys(pred.tasks, "pseudo"),
        attrs=attrs,
        store_image=store_image,
        image_source=image_source,
        image_sha256=source.get("sha256") if not store_image else None,
        image_stat=stat if not store_image and source.get("sha256") else None,
        overwrite=True,
    )


# --------------------------------------------------------------------------- shared memory

#: an image's arrays go through shared memory up to this many bytes (beyond: the pipe)
SHARED_MAX_BYTES = 256 * 2**20
_ALIGN = 64


@dataclass(frozen=True)
class SharedArray:
    """Where an array lies in a shared-memory buffer: what is pickled instead of it."""

    name: str
    offset: int
    shape: tuple[int, ...]
    dtype: str


def _room_for(nbytes: int) -> bool:
    """Whether ``/dev/shm`` (where Linux keeps shared memory) can take ``nbytes`` more and
    keep some headroom: writing into a full one kills the writer with SIGBUS. True where
    there is no ``/dev/shm`` to ask."""
    try:
        st = os.statvfs("/dev/shm")
    except (OSError, AttributeError):
        return True
    free, total = st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize
    return free - nbytes >= max(16 * 2**20, total // 10)


def _layout(arrays) -> tuple[list[tuple[int, tuple[int, ...], str]], int]:
    """(offset, shape, dtype) of each array packed one after the other (64-byte aligned)
    and the bytes they need."""
    out, at = [], 0
    for a in arrays:
        out.append((at, tuple(a.shape), a.dtype.str))
        at += -(-a.nbytes // _ALIGN) * _ALIGN
    return out, at


class SharedSlots:
    """The labelling process's shared-memory buffers, one per image in flight: taken by
    :meth:`pack` (None when there is no room: the caller sends the arrays themselves),
    given back by :meth:`release` once the image is written, all removed by
    :meth:`close`. A buffer too small for the next image is replaced by a larger one.
    Thread-safe (a lock of its own; the copy into a buffer happens outside it)."""

    def __init__(self):
        self._free: list[shared_memory.SharedMemory] = []
        self._all: dict[str, shared_memory.SharedMemory] = {}
        self._prefix = f"ctn-label-{os.getpid()}-{uuid.uuid4().hex[:8]}-"
        self._count = 0
        self._lock = threading.Lock()

    def _new(self, nbytes: int) -> shared_memory.SharedMemory | None:
        if not _room_for(nbytes):
            return None
        self._count += 1
        try:
            shm = shared_memory.SharedMemory(name=f"{self._prefix}{self._count}", create=True, size=nbytes)
        except OSError:
            return None
        # claim the pages now (Linux): a /dev/shm filled meanwhile by someone else then fails
        # here, and the arrays go through the pipe, instead of SIGBUS in the middle of a copy
        fallocate, fd = getattr(os, "posix_fallocate", None), getattr(shm, "_fd", -1)
        if fallocate is not None and fd >= 0:
            try:
                fallocate(fd, 0, nbytes)
            except OSError:
                self._all[shm.name] = shm
                self._drop(shm)
                return None
        self._all[shm.name] = shm
        return shm

    def _drop(self, shm: shared_memory.SharedMemory) -> None:
        self._all.pop(shm.name, None)
        try:
            shm.unlink()
        except FileNotFoundError:
            pass
        try:
            shm.close()
        except BufferError:  # a view of it is still alive: the mapping goes with it
            pass

    def pack(self, arrays) -> tuple[list[SharedArray], shared_memory.SharedMemory] | None:
        """The arrays copied into a free buffer: their descriptors and the buffer (to
        :meth:`release` after the write), or None."""
        layout, nbytes = _layout(arrays)
        if nbytes > SHARED_MAX_BYTES:
            return None
        with self._lock:
            shm = next((b for b in self._free if b.size >= nbytes), None)
            if shm is not None:
                self._free.remove(shm)
            else:
                if self._free:  # too small for this image: replaced
                    self._drop(self._free.pop())
                shm = self._new(max(nbytes, _ALIGN))
                if shm is None:
                    return None
        for a, (offset, shape, dtype) in zip(arrays, layout):
            np.ndarray(shape, dtype, buffer=shm.buf, offset=offset)[...] = a
        return [SharedArray(shm.name, *entry) for entry in layout], shm

    def release(self, shm: shared_memory.SharedMemory) -> None:
        with self._lock:
            if shm.name in self._all:
                self._free.append(shm)

    def names(self) -> list[str]:
        with self._lock:
            return list(self._all)

    def close(self) -> None:
        """Remove every buffer (a process still reading one keeps its mapping)."""
        with self._lock:
            for shm in list(self._all.values()):
                self._drop(shm)
            self._free.clear()


# in a writer process: the buffers it has opened, the most recently used last
_ATTACHED: OrderedDict[str, shared_memory.SharedMemory] = OrderedDict()
_ATTACHED_MAX = 64


def _forget_removed() -> None:
    """Close the buffers the labelling process has removed (replaced by larger ones), so
    that their memory goes now, not when 64 newer ones have been opened (Linux: a removed
    buffer's file has no links left)."""
    for name, shm in list(_ATTACHED.items()):
        try:
            # POSIX SharedMemory's file descriptor: private, not in the stubs (AttributeError is caught)
            gone = os.fstat(shm._fd).st_nlink == 0  # type: ignore[attr-defined]
        except (OSError, AttributeError, ValueError):
            continue
        if gone:
            try:
                shm.close()
            except BufferError:
                continue
            del _ATTACHED[name]


def _unpack(a: np.ndarray | SharedArray) -> np.ndarray:
    """An argument as the writer process uses it: a :class:`SharedArray` as a view of its
    buffer, anything else as it is."""
    if not isinstance(a, SharedArray):
        return a
    shm = _ATTACHED.get(a.name)
    if shm is None:  # a buffer new to this process: maybe one it had has been replaced
        _forget_removed()
        shm = _ATTACHED[a.name] = shared_memory.SharedMemory(name=a.name)
        while len(_ATTACHED) > _ATTACHED_MAX:
            try:
                _ATTACHED.popitem(last=False)[1].close()
            except BufferError:
                pass
    _ATTACHED.move_to_end(a.name)
    return np.ndarray(a.shape, np.dtype(a.dtype), buffer=shm.buf, offset=a.offset)


# --------------------------------------------------------------------------- the processes

# what a writer process holds (set by init_writer_process, in that process only)
_WORKER: dict = {}


def init_writer_process(store_path: str | Remote, attrs: dict, store_image: bool, tasks: tuple[str, ...],
                         barrier) -> None:  # fmt: skip
    """The initializer of a writer process: ignore Ctrl-C (the labelling process stops
    the writers, each after the image it is writing), no compression threads (the
    processes are the parallelism), the store opened once, the write arguments every
    image shares. A failure is kept and raised by each write, so that it reaches the
    labelling thread."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _WORKER.update(barrier=barrier, lock=threading.Lock())
    parent = multiprocessing.parent_process()
    if parent is not None:  # the labelling process killed: finish the current image, then go
        threading.Thread(target=_exit_with_parent, args=(parent.sentinel,), daemon=True).start()
    try:
        from numcodecs import blosc

        blosc.use_threads = False  # else each process starts blosc's threads for every chunk
        _WORKER.update(store=LabelStore(store_path, mode="r+"), attrs=attrs, store_image=store_image,
                       tasks=tuple(tasks))  # fmt: skip
    except BaseException as e:  # noqa: BLE001 - raised by every write
        _WORKER["error"] = e


def _exit_with_parent(sentinel) -> None:
    # a pool's worker waits for work forever: without this it would outlive a killed parent
    import multiprocessing.connection

    multiprocessing.connection.wait([sentinel])
    with _WORKER["lock"]:
        os._exit(1)


def writer_process_ready(timeout: float) -> int:
    """Returns once every writer process of the pool has started (one call per process)."""
    _WORKER["barrier"].wait(timeout)
    return os.getpid()


def process_write(path: str, image_id: str, image: np.ndarray | SharedArray, palette: np.ndarray | SharedArray,
                   output: np.ndarray | SharedArray, thin_edges: float = 0.0,
                   source: dict | None = None) -> tuple[str, float]:  # fmt: skip
    """In a writer process: decode the network's ``output`` (3, H, W) under ``palette``
    into per-task labels (``thin_edges``: :func:`.prediction.decode_labels`'s) and
    write the image into the store (``source``: :func:`write_prediction`'s); returns
    ``image_id`` and the seconds it took. The arrays are given, or where they lie in
    shared memory."""
    if "error" in _WORKER:
        raise _WORKER["error"]
    t0 = time.perf_counter()
    try:
        with _WORKER["lock"]:
            img, pal, out = (_unpack(a) for a in (image, palette, output))
            pred = Prediction(pal, out, decode_labels(out, pal, _WORKER["tasks"], thin_edges))
            write_prediction(_WORKER["store"], image_id, img, pred, _WORKER["attrs"],
                              _WORKER["store_image"], path, source)  # fmt: skip
    except Exception as e:
        try:  # it goes back pickled: one that does not come back whole, as text
            pickle.loads(pickle.dumps(e))
        except Exception:
            raise RuntimeError(f"{type(e).__name__}: {e}") from None
        raise
    return image_id, time.perf_counter() - t0
