"""How a store's images were labelled, compared before labelling more into it; the
store opened (or created, race-free) for a run; each image's palette random generator."""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from pathlib import Path

import numpy as np

from ..store import PERSON_PROVENANCES, LabelStore, StoreError
from ..store.location import Remote
from ..store.sources import STAT_KEYS, file_state
from .summary import LabelError

__all__ = ["SETTINGS", "SETTINGS_IF_RECORDED", "FLAGS", "differs", "describe_differences", "settings_differ",
           "image_settings", "slim_record", "person_made", "file_changed", "image_rng", "open_store"]  # fmt: skip

#: what a store records of how its images were labelled, compared before labelling more
#: into it: the model's and palette network's weights (sha256, not their paths), the
#: rule (its name and what it does: :func:`.palette.rule_fingerprint`) and where the
#: palettes came from (a palette folder by its absolute path)
SETTINGS = ("model_sha256", "rule", "rule_sha256", "palette_from", "palette_model_sha256", "scale")
#: recorded only by newer versions: compared where both sides have one
SETTINGS_IF_RECORDED = ("rule_sha256", "palette_model_sha256", "scale")


def _normal_setting(key: str, value):
    if key == "palette_from" and isinstance(value, str) and value.startswith("folder:"):
        return f"folder:{Path(value[len('folder:') :]).resolve()}"
    return value


#: the command-line flag of each setting, for messages
FLAGS = {
    "model_sha256": "--model",
    "rule": "--rule",
    "rule_sha256": "--rule (its content)",
    "palette_from": "--palette-from",
    "palette_model_sha256": "--palette-model",
    "scale": "--scale",
}


def differs(key: str, have: dict, wanted: dict) -> bool:
    if key in ("rule", "rule_sha256") and str(wanted.get("palette_from")).startswith("folder:"):
        return False  # palettes from a folder: no rule made them (earlier versions recorded --rule's)
    a, b = have.get(key), wanted.get(key)
    if key == "palette_from" and {a, b} <= {"semantics", "rule"}:
        return False  # a rule that needs no semantics was recorded as "semantics" before: the rule decides
    if key in SETTINGS_IF_RECORDED and (a is None or b is None):
        return False
    return _normal_setting(key, a) != _normal_setting(key, b)


def describe_differences(have: dict, wanted: dict) -> str:
    """The settings that differ, by their flags: ``--model 797fe963... (stored) vs
    3babe4db... (asked); --scale none vs auto``."""

    def show(key, v):
        if v is None:
            return "none recorded"
        v = str(v)
        return f"{v[:12]}..." if key.endswith("sha256") and len(v) > 12 else v

    parts = [f"{FLAGS.get(k, k)} {show(k, have.get(k))} (stored) vs {show(k, wanted.get(k))} (asked)"
             for k in SETTINGS if differs(k, have, wanted)]  # fmt: skip
    return "; ".join(parts)


def settings_differ(have: dict, wanted: dict) -> bool:
    return any(differs(k, have, wanted) for k in SETTINGS)


def image_settings(record: dict) -> dict:
    """An image's labelling settings, from its attributes (as :data:`SETTINGS`)."""
    return {"model_sha256": record.get("model_sha256"), "rule": record.get("rule"),
            "rule_sha256": record.get("rule_sha256"), "palette_from": record.get("palette_origin"),
            "palette_model_sha256": record.get("palette_model_sha256"), "scale": record.get("scale")}  # fmt: skip


def slim_record(record: dict) -> dict:
    """What labelling needs of a stored image's attributes: its source, sha256 (and the
    file's size and mtime), its settings, its provenance and whether napari saved it (a
    large folder's records stay small in memory)."""
    keep = (
        "model_sha256",
        "rule",
        "rule_sha256",
        "palette_origin",
        "palette_model_sha256",
        "provenance",
        "scale",
        "run",
    )
    out = {k: record[k] for k in keep if k in record}
    out["image"] = {k: (record.get("image") or {}).get(k)
                    for k in ("stored", "source", "sha256", "sha256_of", *STAT_KEYS)}  # fmt: skip
    if "napari" in record:
        out["napari"] = True
    return out


def person_made(record: dict) -> bool:
    """Whether a person had a hand in a stored image: a task corrected (or ground truth),
    or saved from napari (the ``"napari"`` attribute of ``_napari.store_io``: a palette
    a person painted or accepted). ``ctn label`` never relabels such an image."""
    prov = record.get("provenance") or {}
    return "napari" in record or any(v in PERSON_PROVENANCES for v in prov.values())


def file_changed(record: dict, path: Path | Remote) -> bool:
    """Whether ``path``, the file of an image the store keeps by reference, is no longer
    the file labelled (:func:`composite_tasking.store.sources.file_state`: its size and
    mtime compared with the recorded ones, its sha256 only when they differ or, in a
    store written before they were recorded, always). An image whose pixels the store
    holds is complete as stored: False. (Stores written before are not given the size and
    mtime on a resume: that would rewrite images a napari session may be saving.)"""
    info = record.get("image") or {}
    return info.get("stored") is False and file_state(info, path) is not None


def image_rng(seed: int, image_id: str) -> np.random.Generator:
    """The random generator of one image's palette (random rules): from the seed and the
    image id alone, so a resumed, sharded or re-batched run draws the same palettes."""
    key = int.from_bytes(hashlib.sha256(image_id.encode("utf-8")).digest()[:8], "little")
    return np.random.default_rng([int(seed), key])


def open_store(path: Path | Remote, attrs: dict) -> LabelStore:
    """Open the store, creating it first if it is absent (or an empty folder).

    Shards started together (torchrun) would race to create it: one process's
    half-made root (or its mode-"w" create wiping the other's) made the other fail.
    The root is made in a private folder beside it and renamed into place, which is
    atomic; a process that loses the race finds the winner's store and opens it. In an
    object store (no rename) the root is its one ``zarr.json``, created with a
    conditional PUT (:func:`..store.remote_io.create_root`): one process creates it,
    the others open it; nothing is deleted.
    """
    if isinstance(path, Remote):
        try:
            return LabelStore(path, mode="a", attrs=attrs)
        except StoreError as e:
            raise LabelError(str(e)) from None
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
