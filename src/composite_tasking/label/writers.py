"""The writing side of a labelling run: writer threads, or writer processes that also
decode the labels (:mod:`.._writer_process`), each image into its own group of the store."""

from __future__ import annotations

import atexit
import concurrent.futures
import concurrent.futures.process
import multiprocessing
import os
import queue
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np

from .._writer_process import SharedSlots, init_writer_process, process_write, writer_process_ready
from ..store.location import Remote, source_name
from .reading import put_waiting

__all__ = ["PROCESS_MIN_IMAGES", "WriterBase", "ThreadWriter", "ProcessWriter", "default_writers",
           "default_writer_processes"]  # fmt: skip

#: with ``writer_processes=None``, writer processes are used from this many images on:
#: starting them (spawned interpreters) costs time that fewer images do not repay
PROCESS_MIN_IMAGES = 64


def default_writers() -> int:
    """Writer threads when pipelining and ``writers`` is not given: every core but the
    labelling thread's, at most 4."""
    return min(4, max(1, (os.cpu_count() or 1) - 1))


class WriterBase:
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


class ThreadWriter(WriterBase):
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
        if not put_waiting(self._queue, item, lambda: self._stop.is_set() or self._dead()):
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
            if not put_waiting(self._queue, None, self._dead):
                break
        for t in self._threads:
            t.join()


def default_writer_processes() -> int:
    """Writer processes when they are used and ``writers`` is not given: every core but
    the labelling thread's and one more (the reader, the main process's own work), at
    least 1, at most 12."""
    return min(12, max(1, (os.cpu_count() or 1) - 2))


class ProcessWriter(WriterBase):
    """:class:`ThreadWriter`'s work in ``processes`` worker processes (spawned), which also
    decode the network's output into labels (numpy, :mod:`.prediction`): both hold the GIL
    much of the time, so threads hardly overlap them. The processes run
    :mod:`._writer_process`, which leaves torch alone.

    :meth:`submit` takes ``(path, image_id, image, palette, output)``; at most ``limit``
    images are handed over and not yet written (:meth:`submit` waits). The first failed
    write stops the writing: the images not yet started are cancelled, those the
    processes are writing are finished, and the exception (noted with the image, as
    :class:`ThreadWriter` does) is raised in the labelling thread by :meth:`check` or
    :meth:`submit`. The processes are started at once (they open the store while the
    model predicts the first batch); :meth:`ready` waits for them. An image's arrays go
    to them through shared memory (:class:`._writer_process.SharedSlots`), removed by
    :meth:`close` (``shared=False``: through the pool's pipe, pickled).
    """

    def __init__(self, store_path: Path | Remote, attrs: dict, store_image: bool, tasks, limit: int,
                 processes: int, shared: bool = True):  # fmt: skip
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
            initargs=(store_path if isinstance(store_path, Remote) else str(store_path), attrs, store_image, tuple(tasks), ctx.Barrier(processes)))  # fmt: skip
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
        """Hand ``(path, image_id, image, palette, output, thin_edges[, source])`` to the
        processes (``thin_edges``: :func:`.prediction.decode_labels`'s; ``source``:
        :func:`composite_tasking._writer_process.write_prediction`'s)."""
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
        path, image_id, image, palette, output, thin, *rest = item
        arrays = (np.asarray(image), np.asarray(palette), np.asarray(output))
        if self._closed:
            raise RuntimeError("the writer processes were closed")
        packed = self._slots.pack(arrays) if self._shared else None  # None: through the pipe
        args, slot = packed if packed is not None else (arrays, None)
        try:
            image_a, palette_a, output_a = args
            fut = self._executor.submit(process_write, source_name(path), image_id, image_a, palette_a, output_a,
                                        thin, rest[0] if rest else None)  # fmt: skip
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
