"""What ``ctn label``'s writer processes run: decode the network's output and write the
image into the label store.

Spawned processes import this module to find their functions; it and everything it
imports (the store, :mod:`.prediction`'s numpy decoding, the task table) leave torch
alone, so a writer process costs ~100 MB and a fraction of a second to start instead of
~400 MB and seconds with torch (``tests/test_label.py`` checks that torch stays out).
:func:`write_prediction` is also what the writer threads and the labelling thread call.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import threading
import time

import numpy as np

from .prediction import Prediction, decode_labels
from .store import LabelStore


def write_prediction(store: LabelStore, image_id: str, image: np.ndarray, pred: Prediction,
                      attrs: dict, store_image: bool, image_source: str) -> None:
    """One labelled image into the store: what every writer (thread or process) does."""
    store.write_sample(
        image_id,
        pred.to_sample(image),
        provenance=dict.fromkeys(pred.tasks, "pseudo"),
        attrs=attrs,
        store_image=store_image,
        image_source=image_source,
        overwrite=True,
    )


# what a writer process holds (set by _init_writer_process, in that process only)
_WORKER: dict = {}


def _init_writer_process(store_path: str, attrs: dict, store_image: bool, tasks: tuple[str, ...],
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


def _writer_process_ready(timeout: float) -> int:
    """Returns once every writer process of the pool has started (one call per process)."""
    _WORKER["barrier"].wait(timeout)
    return os.getpid()


def _process_write(path: str, image_id: str, image: np.ndarray, palette: np.ndarray,
                   output: np.ndarray) -> tuple[str, float]:  # fmt: skip
    """In a writer process: decode the network's ``output`` (3, H, W) under ``palette``
    into per-task labels and write the image into the store; returns ``image_id`` and
    the seconds it took."""
    if "error" in _WORKER:
        raise _WORKER["error"]
    t0 = time.perf_counter()
    try:
        with _WORKER["lock"]:
            pred = Prediction(palette, output, decode_labels(output, palette, _WORKER["tasks"]))
            write_prediction(_WORKER["store"], image_id, image, pred, _WORKER["attrs"],
                              _WORKER["store_image"], path)  # fmt: skip
    except Exception as e:
        try:  # it goes back pickled: one that does not come back whole, as text
            pickle.loads(pickle.dumps(e))
        except Exception:
            raise RuntimeError(f"{type(e).__name__}: {e}") from None
        raise
    return image_id, time.perf_counter() - t0
