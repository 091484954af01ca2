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

The package: :mod:`.run` (:func:`label_images`, the facade), :mod:`.palettes` (where
the palettes come from: one :class:`~.palettes.PaletteSource` per ``--palette-from``),
:mod:`.plan` (ids, settings and what becomes of each image, before anything is
labelled), :mod:`.pipeline` (the reader, the batch in flight, the writers, the count),
:mod:`.reading` (the reader thread), :mod:`.writers` (writer threads and processes),
:mod:`.settings` (what a store records and compares), :mod:`.claims` (concurrent runs
of one store), :mod:`.preview` (the contact sheet), :mod:`.summary` (the summary,
errors and timings).
"""

from __future__ import annotations

from ..image_ids import image_ids
from ..shards import parse_shard
from .preview import contact_sheet
from .run import label_images
from .settings import image_rng
from .summary import TIMINGS, LabelError, LabelSummary, format_timings
from .writers import PROCESS_MIN_IMAGES, default_writer_processes, default_writers

__all__ = ["LabelError", "LabelSummary", "TIMINGS", "format_timings", "label_images", "image_ids", "contact_sheet",
           "parse_shard", "default_writers", "default_writer_processes", "PROCESS_MIN_IMAGES", "image_rng"]  # fmt: skip
