"""What a person checked in a stored image (:mod:`.format`, "What a person checked"): the
correction masks beside its labels (which pixels a person changed), a person's
corrections (new labels and the masks of what changed), the review marks of its tasks,
and all of it as the pixels a person checked (:func:`checked_masks`). What each does for
its caller: the :class:`.LabelStore` methods of the same names."""

from __future__ import annotations

import json
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import zarr

from ..tasks import TASK_NAMES
from .format import CHECKED_PROVENANCES, CORRECTED_PREFIX, INT_CODECS, NS, StoreError, chunk_shape, now_iso
from .sample import StoredSample

__all__ = ["read_masks", "write_masks", "correct", "mark_reviewed", "checked_masks"]


def read_masks(group: zarr.Group) -> dict[str, np.ndarray]:
    """The correction masks of the image ``group``: task -> bool (H, W); only the tasks
    that have one."""
    if "maps" not in group:
        return {}
    maps = group["maps"]
    return {t: np.asarray(maps[CORRECTED_PREFIX + t][...]).astype(bool)
            for t in TASK_NAMES if CORRECTED_PREFIX + t in maps}  # fmt: skip


def write_masks(group: zarr.Group, image_id: str, masks: Mapping[str, np.ndarray]) -> None:
    """Write (replace) correction masks of the image ``group`` (opened for writing),
    each checked first: a task's, of the image's shape."""
    shape = tuple(group.attrs[NS]["shape"])
    for task, mask in masks.items():
        if task not in TASK_NAMES:
            raise StoreError(f"image {image_id!r}: correction mask of unknown task {task!r}; "
                             f"tasks: {', '.join(TASK_NAMES)}")  # fmt: skip
        if np.shape(mask) != shape:
            raise StoreError(f"image {image_id!r}: the correction mask of {task} is "
                             f"{np.shape(mask)}, the image {shape}")  # fmt: skip
    maps = group["maps"] if "maps" in group else group.create_group("maps")
    for task, mask in masks.items():
        h, w = shape
        arr = maps.create_array(
            CORRECTED_PREFIX + task, shape=(h, w), dtype="uint8", chunks=chunk_shape(h, w),
            compressors=INT_CODECS, fill_value=0, dimension_names=["y", "x"],
            attributes={NS: {"kind": "corrected", "task": task,
                             "meaning": "1 = a person changed this pixel's label"}},
            overwrite=True,
        )  # fmt: skip
        arr[...] = np.asarray(mask).astype(np.uint8)


def correct(store: Any, image_id: str, labels: Mapping[str, np.ndarray], *, reviewed: bool,
            attrs: Mapping | None) -> dict[str, int]:  # fmt: skip
    """A person's corrections of an image of the :class:`.LabelStore` ``store``, through
    its public methods (:meth:`.LabelStore.correct`)."""
    stored = store.read_sample(image_id)
    masks = store.correction_masks(image_id)
    changed: dict[str, np.ndarray] = {}
    for task, new in labels.items():
        if task == "palette":
            continue
        old = stored.labels.get(task)
        new = np.asarray(new)
        if old is None or old.shape != new.shape:
            diff = np.ones(new.shape[:2], bool)
        elif task == "normals":
            diff = np.any(old != new, axis=-1)
        else:
            diff = old != new
        changed[task] = masks.get(task, np.zeros(diff.shape, bool)) | diff
    tasks = [t for t in labels if t != "palette"]
    prov = {t: "reviewed" if reviewed else "corrected" for t in tasks}
    store.update_labels(image_id, labels, prov, attrs=attrs)
    if changed:
        store.write_correction_masks(image_id, changed)
    return {t: int(m.sum()) for t, m in changed.items()}


def mark_reviewed(group: zarr.Group, image_id: str, tasks: Sequence[str] | None, reviewed: bool,
                  where: Any) -> dict[str, str]:  # fmt: skip
    """Mark tasks of the image ``group`` (opened for writing) of the store at ``where``
    reviewed, or take it back (:meth:`.LabelStore.mark_reviewed`); one metadata write.
    Returns the new provenance."""
    own = json.loads(json.dumps(group.attrs[NS]))
    if own.get("complete") is not True:
        raise StoreError(f"image {image_id!r} in {where} is incompletely written")
    prov = dict(own.get("provenance", {}))
    chosen = list(prov) if tasks is None else list(tasks)
    unknown = [t for t in chosen if t not in prov]
    if unknown:
        raise StoreError(f"image {image_id!r} in {where} has no {', '.join(map(repr, unknown))} "
                         f"labels; it has {', '.join(prov) or 'none'}")  # fmt: skip
    masks = {} if reviewed else read_masks(group)
    for t in chosen:
        if prov[t] == "ground-truth":
            continue
        if reviewed:
            prov[t] = "reviewed"
        elif prov[t] == "reviewed":
            prov[t] = "corrected" if t in masks and masks[t].any() else "pseudo"
    own["provenance"] = prov
    own["updated"] = now_iso()
    full = group.attrs.asdict()
    full[NS] = own
    group.attrs.put(full)
    return prov


def checked_masks(sample: StoredSample, correction_masks: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Task -> bool (H, W): the pixels of ``sample`` whose labels a person checked,
    within each task's valid pixels; ``correction_masks()`` reads the image's correction
    masks, when a ``corrected`` task needs them."""
    masks = None
    out = {}
    for task, valid in sample.valid.items():
        prov = sample.provenance.get(task, "pseudo")
        if prov in CHECKED_PROVENANCES:
            out[task] = valid.copy()
        elif prov == "corrected":
            if masks is None:
                masks = correction_masks()
            m = masks.get(task)
            out[task] = valid.copy() if m is None or m.shape != valid.shape else valid & m
        else:
            out[task] = np.zeros_like(valid)
    return out
