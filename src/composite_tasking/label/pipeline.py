"""The labelling pipeline of a planned run (:mod:`.plan`): the reader, the batch in
flight on the device, the writers it is handed over to, and the count of images done
(see the package's docstring, :mod:`composite_tasking.label`)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, cast

import numpy as np

from .._writer_process import write_prediction
from ..images import ImageReadError
from ..inference import Prediction, Predictor
from ..store import StoreError
from ..store.location import Remote, source_name
from .claims import Claims
from .palettes import PaletteSource
from .plan import LabelPlan
from .reading import ReadItem, Reader
from .summary import Clock
from .writers import PROCESS_MIN_IMAGES, ProcessWriter, ThreadWriter, default_writer_processes, default_writers

__all__ = ["Pipeline"]

#: an image of a batch: (its file, id, pixels, palette)
Image = tuple[Path | Remote, str, np.ndarray, np.ndarray | None]


class Pipeline:
    """Labels ``plan.todo`` into ``plan.store``, filling ``plan.summary`` (:meth:`run`).

    ``pipelined`` (None: when the model runs on a GPU) reads ahead in a thread and keeps
    one batch in flight while the previous one is written; ``writers`` threads (None:
    :func:`.writers.default_writers`; 0, and always without pipelining: in the calling
    thread) or, with ``writer_processes`` (None: from :data:`.writers.PROCESS_MIN_IMAGES`
    images on), that many processes that decode the labels too."""

    def __init__(self, plan: LabelPlan, predictor: Predictor, source: PaletteSource, *, store_image: bool = True,
                 batch_size: int = 4, pipelined: bool | None = None, writers: int | None = None,
                 writer_processes: bool | None = None, progress: Callable[[int, int], None] | None = None,
                 should_stop: Callable[[], bool] | None = None):  # fmt: skip
        self.plan, self.predictor, self.source, self.store_image = plan, predictor, source, store_image
        self.summary = plan.summary
        self.total = len(plan.todo)
        self.batch_size = max(1, batch_size)
        self.progress, self.should_stop = progress, should_stop
        if pipelined is None:  # the CPU is free while a GPU computes, not while a CPU does
            pipelined = predictor.device.type == "cuda"
        self.pipelined = pipelined
        self.depth = 2 * self.batch_size if pipelined else 0  # images read ahead / waiting to be written
        if not pipelined:
            writers = 0
        # writer processes (decoding too) when there are enough images to repay their start
        self.processes = bool(pipelined and writers != 0 and self.total > 0
                              and (self.total >= PROCESS_MIN_IMAGES if writer_processes is None
                                   else writer_processes))  # fmt: skip
        if writers is None:
            writers = default_writer_processes() if self.processes else default_writers()
        self.writers = writers
        self.claims = Claims(plan.store_path, plan.run_id)  # images being labelled: concurrent runs share the work
        # by reference: the sha256 and stat of the bytes each image was decoded from, by id
        # (taken by the reader, so that they are the picture labelled; popped by its writer)
        self.sources: dict[str, dict] = {}
        self.done = 0  # images written or failed: progress(done, total)
        self.clock = Clock()
        self.reader: Reader | None = None
        self.writer: ThreadWriter | ProcessWriter | None = None
        # pipelined, one batch stays in flight: the next one is started on the device before
        # the last one's outputs are handed to the writers (on a GPU they compute meanwhile)
        self.inflight: tuple[list[Image], object] | None = None
        self.position = 0  # images of todo taken from the reader
        self.pending: ReadItem | None = None  # read, of another size than the batch before

    # ------------------------------------------------------------------ the run
    def run(self) -> None:
        """Label every image (until ``should_stop()``); all threads and processes have
        ended when it returns or raises (see :mod:`composite_tasking.label`)."""
        interrupted = False
        try:
            self._open()
            while self.position < self.total:
                self._collect()
                if self.should_stop is not None and self.should_stop():
                    self.summary.stopped = True
                    break
                batch = self._next_batch()
                if batch:
                    self._start(batch)
            self._hand_over_inflight()
        except BaseException as e:
            interrupted = not isinstance(e, Exception)  # Ctrl-C: stop after the image being written
            if not interrupted:  # the batch in flight was predicted: written before the error is raised
                try:
                    self._hand_over_inflight()
                except Exception:  # noqa: S110 - the first error is the one raised
                    pass
                except BaseException:  # Ctrl-C meanwhile: the writers stop after their images
                    interrupted = True
            raise
        finally:
            self._close(interrupted)
        self._collect()

    def _open(self) -> None:
        plan, source = self.plan, self.source
        self.reader = Reader(plan.todo, source.folder, ahead=self.depth, rule_palette=source.rule_palette,
                             claim=self._claim, hashed=not self.store_image)  # fmt: skip
        # in the writers' hands: at most max(2 * batch size, batch size + writers) images
        if self.processes:
            self.writer = ProcessWriter(plan.store_path.resolve(), plan.write_attrs, self.store_image,
                                        self.predictor.tasks, limit=max(self.batch_size, self.depth - self.writers)
                                        + self.writers, processes=self.writers)  # fmt: skip
        else:
            self.writer = ThreadWriter(self._write, depth=max(self.batch_size, self.depth - self.writers),
                                       threads=self.writers)  # fmt: skip

    def _close(self, interrupted: bool) -> None:
        try:
            if self.reader is not None:
                self.reader.close()
        finally:
            try:
                if self.writer is not None:  # writes what was predicted (interrupted: stops after the current image)
                    with self.clock("finish"):
                        self.writer.close(abort=interrupted)
            finally:
                self.claims.release_all()
        self.clock.stop()
        self.summary.timings = self.clock.seconds(self.writers, self.writer.busy if self.writer is not None else 0.0)

    # ------------------------------------------------------------------ reading
    def _claim(self, image_id: str) -> bool:
        """Claim an image before reading it (:mod:`.claims`); False when another run of
        this store is labelling it, or has written it since this run looked."""
        if not self.claims.claim(image_id):
            return False
        before = self.plan.records.get(image_id)
        try:  # one read of its attributes: complete, and by which run
            now = self.plan.store.image_attrs(image_id)
        except (StoreError, OSError, KeyError):  # not in the store (yet)
            now = {}
        written = now.get("complete") is True and (before is None or now.get("run") != before.get("run"))
        if written:
            self.claims.release(image_id)
        return not written

    def _next_batch(self) -> list[Image]:
        """A batch: consecutive readable images of one size (or one image); those another
        run is labelling and those that cannot be read are counted, not batched."""
        summary, clock = self.summary, self.clock
        batch: list[Image] = []
        reader = self.reader
        assert reader is not None  # _open made it
        while self.position < self.total and len(batch) < self.batch_size:
            if self.pending is None:
                with clock("read"):
                    item = reader.get()
            else:
                item, self.pending = self.pending, None
            if item.elsewhere:  # another run of this store is labelling it
                summary.elsewhere.append(item.image_id)
                self.position += 1
                self._count()
                continue
            if item.error is None and batch and item.image is not None and item.image.shape != batch[0][2].shape:
                self.pending = item
                break
            try:
                if item.error is not None:
                    raise item.error
                with clock("palette"):
                    palette = self.source.palette(item)
            except ImageReadError as e:
                summary.failed.append((e.path, e.reason))
                self.position += 1
                self._count()
                continue
            assert item.image is not None  # read without an error
            if item.source is not None:
                self.sources[item.image_id] = item.source
            batch.append((item.path, item.image_id, item.image, palette))
            self.position += 1
        return batch

    # ------------------------------------------------------------------ predicting
    def _start(self, batch: list[Image]) -> None:
        """Start ``batch`` on the device, then hand the batch in flight before it over."""
        images = [b[2] for b in batch]
        rule = self.source.semantic_rule  # semantic rules: palettes from the same pass
        # without a semantic rule, every image has its palette (the source's)
        palettes = None if rule is not None else cast("list[np.ndarray]", [b[3] for b in batch])
        with self.clock("predict"):
            started = self.predictor.start_batch(images, palettes, decode=not self.processes, rule=rule)
        previous, self.inflight = self.inflight, (batch, started)
        if previous is not None:
            self._hand_over(*previous)
        if not self.pipelined:  # one step after another
            self._hand_over_inflight()

    def _hand_over_inflight(self) -> None:
        previous, self.inflight = self.inflight, None
        if previous is not None:
            self._hand_over(*previous)

    # ------------------------------------------------------------------ writing
    def _hand_over(self, batch: list[Image], pending) -> None:
        """A started batch's outputs (waited for) to the writers."""
        clock, writer = self.clock, self.writer
        assert writer is not None  # _open made it
        with clock("wait"):
            results = pending.result()
        for (path, image_id, image, _), res in zip(batch, results):
            if self.processes:  # the network's outputs: the writer processes decode them
                pal, out = res
                with clock("hand"):
                    writer.submit((path, image_id, image, pal, out, self.predictor.upscale(pal.shape),
                                   self.sources.pop(image_id, None)))  # fmt: skip
                continue
            with clock("hand"):
                writer.submit((path, image_id, image, res))
            if not self.writers:
                self._collect()

    def _write(self, path: Path | Remote, image_id: str, image: np.ndarray, pred: Prediction) -> None:
        plan = self.plan
        write_prediction(plan.store, image_id, image, pred, plan.write_attrs, self.store_image,
                         source_name(path), self.sources.pop(image_id, None))  # fmt: skip

    def _collect(self) -> None:
        """The images the writers have finished, then their error if any."""
        writer = self.writer
        assert writer is not None  # _open made it
        for image_id in writer.written():
            self.claims.release(image_id)
            self._count(image_id)
        writer.check()

    def _count(self, image_id: str | None = None) -> None:
        if image_id is not None:
            self.summary.done.append(image_id)
        self.done += 1
        if self.progress:
            self.progress(self.done, self.total)
