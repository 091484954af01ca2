"""``label_images``: a labelling run, read -> palette -> predict -> write (see the
package's docstring, :mod:`composite_tasking.label`)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from .._writer_process import write_prediction
from ..image_ids import image_ids, input_roots, relative_to_inputs
from ..images import ImageReadError, scan_locations
from ..inference import Prediction, Predictor
from ..palette import load_rule, rule_fingerprint
from ..shards import ShardError, shard_from_environment
from ..store import StoreError
from ..store.location import locate, source_name
from .preview import PREVIEW_IMAGES, store_preview
from .claims import Claims
from .reading import ReadItem, Reader
from .settings import (describe_differences, file_changed, image_rng, image_settings, open_store, person_made,
                       settings_differ, slim_record)  # fmt: skip
from .summary import Clock, LabelError, LabelSummary
from .writers import PROCESS_MIN_IMAGES, ProcessWriter, ThreadWriter, default_writer_processes, default_writers

__all__ = ["label_images"]


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
    storage_options: dict | None = None,
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

    ``preview``: a PNG path for the contact sheet (:mod:`.preview`), made from the store
    after the run: the first 12 complete images of the inputs in input order, whether
    labelled now, before, or corrected by a person (with ``shard``, every shard's
    images as far as they are complete). A failure to write it (a full disk) is not
    raised: ``summary.preview_error`` says it, and ``summary.ok`` is False.

    ``rule`` None: R2, or with ``palette_from="net"`` the rule the palette network was
    trained for (its checkpoint says; another rule is refused). ``tile`` / ``overlap``:
    images larger than ``tile`` are predicted in overlapping tiles (``overlap`` None:
    ``min(128, tile // 4)``). ``scale``: the working resolution
    (:mod:`composite_tasking.scale`; ``auto``, the default, shrinks images larger than
    the model's training size to it, ``none`` predicts every pixel); recorded per image
    and compared on resume like the model and the rule (a given Predictor's own scale is
    used). Image ids: :func:`image_ids`, settled against the store.

    An image the store keeps by reference (``store_image=False``) whose file changed
    since it was labelled (:func:`.settings.file_changed`: its size and mtime first, its
    sha256 when they differ) is not complete: its labels belong to the old picture, so
    it is labelled again (``summary.changed``), ``overwrite`` or not; one a person had a
    hand in is kept as it is and named (``summary.kept_changed``).
    """
    if writers is not None and (isinstance(writers, bool) or not isinstance(writers, int) or writers < 0):
        raise LabelError(f"--writers takes an integer >= 0, got {writers!r}")
    if writer_processes not in (None, True, False):
        raise LabelError(f"writer_processes is None, True or False, got {writer_processes!r}")
    inputs = list(inputs)
    store_path = locate(store_path, storage_options)  # a Path, or an object store's URL (store.location)
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
    if origin == "semantics" and not rule_obj.needs_semantics:
        origin = "rule"  # mosaic, random, S:<task>: the rule alone made the palettes
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
    scan = scan_locations(inputs, exclude=[store_path] + ([Path(preview)] if preview is not None else []),
                          storage_options=storage_options)  # fmt: skip
    summary = LabelSummary(store_path, failed=list(scan.skipped),
                           ignored=[*scan.ignored_files, *scan.zarr_folders],
                           duplicates=list(scan.duplicates))  # fmt: skip
    files = scan.files

    store = open_store(store_path, {"labelling": wanted})
    have = store.attrs.get("labelling")
    records = {i: slim_record(r) for i, r in store.image_records().items()}  # ~0.3 KB an image
    if have is not None and records and settings_differ(have, wanted):
        if not overwrite:
            raise LabelError(
                f"{store_path} was labelled with other settings: {describe_differences(have, wanted)}; "
                "pass --overwrite to relabel it, or write to another store"
            )
    # an --overwrite run marks the store until it has relabelled every image it was asked
    # to (each image records the run that wrote it): the same command without --overwrite
    # continues it after an interruption, relabelling only what that run had not reached
    run_id = uuid.uuid4().hex[:16]
    claims = Claims(store_path, run_id)  # images being labelled: concurrent runs share the work
    unfinished = None
    if not overwrite and have is not None and not settings_differ(have, wanted):
        unfinished = have.get("overwrite")
    wanted["overwrite"] = run_id if overwrite else unfinished
    if wanted["overwrite"] is None:
        del wanted["overwrite"]
    ids = image_ids(files, inputs, records, shard, store_path=store_path)
    all_ids = ids  # every shard's, in input order: the preview's
    roots = input_roots(inputs)
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
        elif person_made(rec):  # a person's work: never relabelled
            summary.kept.append(i)
            if file_changed(rec, f):  # ... even when its picture changed: the person decides
                summary.kept_changed.append(i)
        elif file_changed(rec, f):  # its labels are the old picture's
            summary.changed.append(i)
            todo.append((f, i, rel))
        elif settings_differ(image_settings(rec), image_wanted):
            other.append(i)
            todo.append((f, i, rel))
        elif overwrite or (unfinished is not None and rec.get("run") != unfinished):
            todo.append((f, i, rel))
        else:
            summary.skipped_complete.append(i)
    if other and not overwrite and unfinished is None:
        rec = image_settings(records[other[0]])
        raise LabelError(f"{len(other)} image(s) of {store_path} were labelled with other settings "
                         f"(e.g. {other[0]!r}: {describe_differences(rec, image_wanted)}); pass "
                         "--overwrite to relabel them, or write to another store")  # fmt: skip
    if have != wanted:
        store.update_attrs({"labelling": wanted})
    total = len(todo)
    batch_size = max(1, batch_size)
    # a semantic rule on the model's own semantics: made in predict_batch, from the same encoder pass
    own_palette = palette_dir is None and palette_from != "net" and rule_obj.needs_semantics
    write_attrs = {"palette_origin": origin, "model": predictor.model_id, "run": wanted.get("overwrite", run_id),
                   "model_sha256": predictor.model_sha256, "precision": predictor.precision,
                   "scale": str(predictor.scale)}  # fmt: skip
    if rule_name is not None:
        write_attrs.update({"rule": rule_name, "rule_sha256": rule_sha})
    if palette_sha is not None:
        write_attrs["palette_model_sha256"] = palette_sha

    # by reference: the sha256 and stat of the bytes each image was decoded from, by id
    # (taken by the reader, so that they are the picture labelled; popped by its writer)
    sources: dict[str, dict] = {}

    def write(path: Path, image_id: str, image: np.ndarray, pred: Prediction) -> None:
        write_prediction(store, image_id, image, pred, write_attrs, store_image, source_name(path),
                         sources.pop(image_id, None))  # fmt: skip

    def rule_palette(shape: tuple[int, int], image_id: str) -> np.ndarray:
        return rule_obj.palette(shape, rng=image_rng(seed, image_id))

    # a palette that needs no model (a folder's, or a rule's) is made by the reader
    by_reader = palette_dir is not None or (palette_from != "net" and not own_palette)

    def make_palette(item: ReadItem) -> np.ndarray:
        if by_reader:
            return item.palette
        if palette_from == "net":
            return predictor.palette_from_net(item.image)
        return None  # a semantic rule's: made from the batch's own semantics by predict_batch

    done = 0

    def count(image_id: str | None = None) -> None:
        nonlocal done
        if image_id is not None:
            summary.done.append(image_id)
        done += 1
        if progress:
            progress(done, total)

    def claim(image_id: str) -> bool:
        """Claim an image before reading it (:mod:`.claims`); False when another run of
        this store is labelling it, or has written it since this run looked."""
        if not claims.claim(image_id):
            return False
        before = records.get(image_id)
        try:  # one read of its attributes: complete, and by which run
            now = store.image_attrs(image_id)
        except (StoreError, OSError, KeyError):  # not in the store (yet)
            now = {}
        written = now.get("complete") is True and (before is None or now.get("run") != before.get("run"))
        if written:
            claims.release(image_id)
        return not written

    def collect() -> None:  # images the writer has finished, then its error if any
        for image_id in writer.written():
            claims.release(image_id)
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
    reader: Reader | None = None
    writer: ThreadWriter | ProcessWriter | None = None
    interrupted = False
    clock = Clock()
    # pipelined, one batch stays in flight: the next one is started on the device before
    # the last one's outputs are handed to the writers (on a GPU they compute meanwhile)
    inflight: tuple[list, object] | None = None

    def hand_over(batch_, pending) -> None:
        """A started batch's outputs (waited for) to the writers."""
        with clock("wait"):
            results = pending.result()
        for (path, image_id, image, _), res in zip(batch_, results):
            if processes:  # the network's outputs: the writer processes decode them
                pal, out = res
                with clock("hand"):
                    writer.submit((path, image_id, image, pal, out, predictor.upscale(pal.shape),
                                   sources.pop(image_id, None)))  # fmt: skip
                continue
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
        reader = Reader(todo, palette_dir, ahead=depth, rule_palette=rule_palette if by_reader else None,
                        claim=claim, hashed=not store_image)  # fmt: skip
        # in the writers' hands: at most max(2 * batch size, batch size + writers) images
        if processes:
            writer = ProcessWriter(store_path.resolve(), write_attrs, store_image, predictor.tasks,
                                    limit=max(batch_size, depth - writers) + writers, processes=writers)  # fmt: skip
        else:
            writer = ThreadWriter(write, depth=max(batch_size, depth - writers), threads=writers)
        pos = 0
        pending: ReadItem | None = None  # read, of another size than the batch before
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
                if item.elsewhere:  # another run of this store is labelling it
                    summary.elsewhere.append(item.image_id)
                    pos += 1
                    count()
                    continue
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
                if item.source is not None:
                    sources[item.image_id] = item.source
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
            try:
                if writer is not None:  # writes what was predicted (interrupted: stops after the current image)
                    with clock("finish"):
                        writer.close(abort=interrupted)
            finally:
                claims.release_all()
        clock.stop()
        summary.timings = clock.seconds(writers, writer.busy if writer is not None else 0.0)
    collect()
    if "overwrite" in wanted and not summary.stopped and not summary.failed and len(summary.done) == total:
        finished = {k: v for k, v in wanted.items() if k != "overwrite"}  # every image relabelled
        store.update_attrs({"labelling": finished})
    order = {image_id: k for k, (_, image_id, _) in enumerate(todo)}
    summary.done.sort(key=order.__getitem__)  # writers finish in any order: report input order
    if preview is not None:
        write_preview(summary, store, all_ids, records, shard, Path(preview))
    return summary


def write_preview(summary: LabelSummary, store, ids: list[str], complete_before: Iterable[str],
                  shard: tuple[int, int] | None, path: Path) -> None:  # fmt: skip
    """The contact sheet of a run, from the store: the first :data:`PREVIEW_IMAGES`
    complete images of ``ids`` (every input's, in input order; ``complete_before``: the
    store's complete images when the run started), into ``summary.preview``; a failure
    to write it into ``summary.preview_error`` (the labels and the store are not
    concerned). A run's own images are complete when they were before or were written
    now; another shard's are asked of the store, at most PREVIEW_IMAGES per shard."""
    known = set(complete_before) | set(summary.done)
    i, n = shard if shard is not None else (0, 1)
    asks = PREVIEW_IMAGES * n

    def complete():
        nonlocal asks
        for k, image_id in enumerate(ids):
            if image_id in known:
                yield image_id
            elif k % n != i and asks > 0:  # another shard's: labelled meanwhile?
                asks -= 1
                try:
                    if store.is_complete(image_id):
                        yield image_id
                except (StoreError, OSError):
                    continue

    try:
        summary.preview = store_preview(store, complete(), path)
    except OSError as e:
        summary.preview_error = (f"the preview {path} was not written: {e.strerror or e}; every image written "
                                 f"is complete and the store {summary.store} is valid: run the same command "
                                 "again to write the preview (complete images are skipped)")  # fmt: skip
