"""``label_images``: a labelling run, read -> palette -> predict -> write (see the
package's docstring, :mod:`composite_tasking.label`): the arguments checked, the
palettes' source (:mod:`.palettes`), the plan (:mod:`.plan`), the pipeline
(:mod:`.pipeline`), the preview (:mod:`.preview`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable

from ..inference import Predictor
from ..shards import ShardError, shard_from_environment
from ..store.location import Remote, locate
from .palettes import palette_folder, palette_source
from .pipeline import Pipeline
from .plan import plan_run
from .preview import write_preview
from .summary import LabelError, LabelSummary

__all__ = ["label_images"]


def label_images(
    inputs: Iterable[str | os.PathLike],
    store_path: str | os.PathLike | Remote,
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
    palette_folder(palette_from)  # not a folder: a usage error before the model is loaded
    try:
        shard = shard_from_environment() if shard is None else shard
    except ShardError as e:
        raise LabelError(str(e)) from None

    predictor = (
        model
        if isinstance(model, Predictor)
        else Predictor(
            model,
            device=device,
            tile=tile,
            overlap=min(128, tile // 4) if overlap is None else overlap,
            precision=precision,
            palette_model=palette_model if palette_from == "net" else None,
            scale=scale,
        )
    )
    source = palette_source(palette_from, rule, predictor, seed)
    # never the store or the preview (an output inside an input folder)
    plan = plan_run(inputs, store_path, predictor, source, overwrite=overwrite, shard=shard,
                    exclude=[Path(preview)] if preview is not None else [],
                    storage_options=storage_options)  # fmt: skip
    Pipeline(plan, predictor, source, store_image=store_image, batch_size=batch_size, pipelined=pipeline,
             writers=writers, writer_processes=writer_processes, progress=progress,
             should_stop=should_stop).run()  # fmt: skip
    plan.finish()
    if preview is not None:
        write_preview(plan.summary, plan.store, plan.all_ids, plan.records, shard, Path(preview))
    return plan.summary
