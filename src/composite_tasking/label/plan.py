"""The plan of a labelling run, made before anything is labelled: the settings the
store records (and compares with what it holds), the images' ids, and what becomes of
each image (labelled, kept as a person left it, skipped as complete)."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from ..image_ids import image_ids, input_roots, relative_to_inputs
from ..images import scan_locations
from ..inference import Predictor
from ..palette import rule_fingerprint
from ..store import LabelStore
from .palettes import PaletteSource
from .settings import (describe_differences, file_changed, image_settings, open_store, person_made,
                       settings_differ, slim_record)  # fmt: skip
from .summary import LabelError, LabelSummary

if TYPE_CHECKING:
    from ..store.location import Remote

__all__ = ["LabelPlan", "NEW", "KEPT", "KEPT_CHANGED", "CHANGED", "OTHER_SETTINGS", "AGAIN", "COMPLETE",
           "LABELLED", "wanted_settings", "image_decision", "plan_run"]  # fmt: skip

#: what becomes of an image (:func:`image_decision`)
NEW = "new"  # not in the store: labelled
KEPT = "kept"  # a person had a hand in it: never relabelled
KEPT_CHANGED = "kept, changed"  # ... even when its picture changed since: the person decides
CHANGED = "changed"  # kept by reference, its file changed: its labels are the old picture's
OTHER_SETTINGS = "other settings"  # labelled with other settings: only with --overwrite (or continuing one)
AGAIN = "again"  # complete, but --overwrite (or an unfinished --overwrite run had not reached it)
COMPLETE = "complete"  # skipped
#: the decisions that label the image
LABELLED = (NEW, CHANGED, OTHER_SETTINGS, AGAIN)


def wanted_settings(predictor: Predictor, source: PaletteSource) -> dict:
    """The store's ``labelling`` attribute for a run (:data:`.settings.SETTINGS` and the
    model's id), in the order it is written."""
    rule = source.rule
    wanted = {"model_sha256": predictor.model_sha256, "model": predictor.model_id,
              "rule": None if rule is None else rule.name,
              "rule_sha256": None if rule is None else rule_fingerprint(rule), "palette_from": source.origin,
              "scale": str(predictor.scale)}  # fmt: skip
    if source.model_sha256 is not None:
        wanted["palette_model_sha256"] = source.model_sha256
    return wanted


def image_decision(record: dict | None, path: Path | Remote, image_wanted: dict, overwrite: bool,
                   unfinished: str | None) -> str:  # fmt: skip
    """What becomes of the image at ``path`` whose store record is ``record`` (None: not
    in the store), for a run wanting ``image_wanted``: one of :data:`NEW`, :data:`KEPT`,
    :data:`KEPT_CHANGED`, :data:`CHANGED`, :data:`OTHER_SETTINGS`, :data:`AGAIN`,
    :data:`COMPLETE`. ``unfinished``: the id of an ``--overwrite`` run the store says has
    not relabelled everything; its images are complete, the others are labelled again."""
    if record is None:
        return NEW
    if person_made(record):
        return KEPT_CHANGED if file_changed(record, path) else KEPT
    if file_changed(record, path):
        return CHANGED
    if settings_differ(image_settings(record), image_wanted):
        return OTHER_SETTINGS
    if overwrite or (unfinished is not None and record.get("run") != unfinished):
        return AGAIN
    return COMPLETE


@dataclass
class LabelPlan:
    """A run's store, its images and what it writes; :func:`plan_run` makes it."""

    store_path: Path | Remote
    store: LabelStore
    summary: LabelSummary
    #: (file, id, path below its input folder) of each image to label, in input order
    todo: list[tuple[Path | Remote, str, Path]]
    #: every input's id (every shard's), in input order: the preview's
    all_ids: list[str]
    #: the store's images when the run started (:func:`.settings.slim_record`), by id
    records: dict[str, dict]
    #: the store's ``labelling`` attribute during the run
    wanted: dict
    run_id: str
    #: the attributes each image written records
    write_attrs: dict

    def finish(self) -> None:
        """After the run: an ``--overwrite`` run that relabelled every image it was asked
        to unmarks the store; ``summary.done`` in input order."""
        summary = self.summary
        if (
            "overwrite" in self.wanted
            and not summary.stopped
            and not summary.failed
            and len(summary.done) == len(self.todo)
        ):
            finished = {k: v for k, v in self.wanted.items() if k != "overwrite"}  # every image relabelled
            self.store.update_attrs({"labelling": finished})
        order = {image_id: k for k, (_, image_id, _) in enumerate(self.todo)}
        summary.done.sort(key=order.__getitem__)  # writers finish in any order: report input order


def plan_run(inputs: list[str | os.PathLike], store_path: Path | Remote, predictor: Predictor,
             source: PaletteSource, *,
             overwrite: bool = False, shard: tuple[int, int] | None = None,
             exclude: Iterable[Path] = (), storage_options: dict | None = None) -> LabelPlan:  # fmt: skip
    """Scan ``inputs`` (never ``store_path`` nor ``exclude``), open (or create) the store
    and decide each image (:func:`image_decision`); settings that differ from the
    store's without ``overwrite``: a :class:`LabelError`, nothing written. The store's
    ``labelling`` attribute is brought up to date (an ``--overwrite`` run's mark)."""
    wanted = wanted_settings(predictor, source)
    scan = scan_locations(inputs, exclude=[store_path, *exclude], storage_options=storage_options)
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
        k, n = shard
        files, ids, rels = files[k::n], ids[k::n], rels[k::n]
    image_wanted = {"model_sha256": wanted["model_sha256"], "rule": wanted["rule"],
                    "rule_sha256": wanted["rule_sha256"], "palette_from": source.origin,
                    "palette_model_sha256": source.model_sha256, "scale": wanted["scale"]}  # fmt: skip
    todo: list[tuple[Path | Remote, str, Path]] = []
    other: list[str] = []
    named = {KEPT_CHANGED: summary.kept_changed, CHANGED: summary.changed, OTHER_SETTINGS: other,
             COMPLETE: summary.skipped_complete}  # fmt: skip
    for f, i, rel in zip(files, ids, rels):
        decision = image_decision(records.get(i), f, image_wanted, overwrite, unfinished)
        if decision in (KEPT, KEPT_CHANGED):
            summary.kept.append(i)
        if decision in named:
            named[decision].append(i)
        if decision in LABELLED:
            todo.append((f, i, rel))
    if other and not overwrite and unfinished is None:
        rec = image_settings(records[other[0]])
        raise LabelError(f"{len(other)} image(s) of {store_path} were labelled with other settings "
                         f"(e.g. {other[0]!r}: {describe_differences(rec, image_wanted)}); pass "
                         "--overwrite to relabel them, or write to another store")  # fmt: skip
    if have != wanted:
        store.update_attrs({"labelling": wanted})
    write_attrs = {"palette_origin": source.origin, "model": predictor.model_id,
                   "run": wanted.get("overwrite", run_id), "model_sha256": predictor.model_sha256,
                   "precision": predictor.precision, "scale": str(predictor.scale)}  # fmt: skip
    if source.rule is not None:
        write_attrs.update({"rule": wanted["rule"], "rule_sha256": wanted["rule_sha256"]})
    if source.model_sha256 is not None:
        write_attrs["palette_model_sha256"] = source.model_sha256
    return LabelPlan(store_path, store, summary, todo, all_ids, records, wanted, run_id, write_attrs)
