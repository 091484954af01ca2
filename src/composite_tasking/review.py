"""Correct next: a label store's images ranked by the effort their pseudo-labels are
expected to need, from the confidence maps the store holds.

``ctn label`` writes, beside each pseudo-label, a confidence map (``confidence_<task>``:
the probability that the label is right, NaN outside the task's palette region). The
effort a person is expected to spend on a task (:func:`composite_tasking.effort.expected_effort`)
is the mean of ``1 - confidence`` over its region (the expected share of pixels to
change) and the number of connected regions of confidence below
:data:`~composite_tasking.effort.LOW_CONFIDENCE` (the expected strokes). An image's
expected share is pixel-weighted over its tasks; images are ranked by it, most first
(then by expected regions, then by id), so a person correcting from the top fixes the
most wrong pixels per image opened, and a fine-tune on those corrections learns from the
model's worst mistakes.

A task whose provenance is anything but ``pseudo`` (corrected, reviewed, ground truth)
was checked by a person or is true: it adds nothing to its image's expected effort. An
image whose every task is checked is listed after the ranked ones, flagged, and is not
read at all; one with pseudo-labels but no confidence maps is listed after the ranked
ones too (there is nothing to rank it by).

numpy and scipy only: no torch, Qt or napari at import.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

from .effort import expected_effort, low_confidence_regions
from .store import LabelStore
from .tasks import TASK_NAMES, get_task

__all__ = ["ReviewItem", "ReviewError", "rank_store", "PSEUDO"]

#: the provenance of a model's output nobody checked; every other provenance is checked
PSEUDO = "pseudo"


class ReviewError(ValueError):
    """A store that cannot be ranked (empty, or no confidence maps), named in the message."""


@dataclass
class ReviewItem:
    """One image of a ranked store.

    ``rank``: 1-based position; ``expected_share``: % of the pseudo-labelled palette
    pixels expected to change (None when nothing to rank it by: ``status`` says why);
    ``expected_regions``: expected strokes, summed over the tasks; ``tasks``: per pseudo
    task with a confidence map ``{"share" (%), "regions", "pixels"}``; ``checked``: the
    tasks a person checked (or ground truth); ``regions``: the image's largest
    low-confidence regions, most expected changes first (``task``, ``bbox`` [y0, x0,
    y1, x1] end exclusive, ``pixels``, ``expected``); ``status``: "ranked", "checked"
    (every task checked) or "no confidence" (pseudo-labels without confidence maps).
    """

    rank: int
    image_id: str
    expected_share: float | None
    expected_regions: int | None
    pixels: int
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    checked: list[str] = field(default_factory=list)
    regions: list[dict[str, Any]] = field(default_factory=list)
    status: str = "ranked"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _task_names(tasks: Iterable[str] | None) -> list[str]:
    if tasks is None:
        return list(TASK_NAMES)
    names = [get_task(t).name for t in tasks]  # KeyError names an unknown task
    return [t for t in TASK_NAMES if t in names]


def _rank_image(store: LabelStore, image_id: str, pseudo: list[str], checked: list[str],
                regions_per_image: int) -> ReviewItem:  # fmt: skip
    sample = store.read_sample(image_id)
    per_task: dict[str, dict[str, Any]] = {}
    found: list[dict[str, Any]] = []
    changed, pixels, strokes = 0.0, 0, 0
    for task in pseudo:
        conf = sample.maps.get(f"confidence_{task}")
        if conf is None:
            continue
        e = expected_effort(conf)
        if not e["pixels"]:  # the palette asks nothing of this task here
            continue
        per_task[task] = {"share": 100.0 * e["share"], "regions": e["regions"], "pixels": e["pixels"]}
        changed, pixels, strokes = changed + e["changed"], pixels + e["pixels"], strokes + e["regions"]
        found += [{"task": task, **r} for r in low_confidence_regions(conf)]
    if not per_task:
        return ReviewItem(0, image_id, None, None, 0, checked=checked, status="no confidence")
    found.sort(key=lambda r: (-r["expected"], r["task"], r["bbox"]))
    return ReviewItem(0, image_id, 100.0 * changed / pixels, strokes, pixels, per_task, checked,
                      found[:regions_per_image])  # fmt: skip


def rank_store(path, tasks: Iterable[str] | None = None, regions_per_image: int = 5) -> list[ReviewItem]:
    """Every complete image of the label store at ``path``, most expected effort first
    (see the module docstring); checked images and images without confidence maps last.

    ``tasks``: the tasks to weigh (default all). Raises :class:`ReviewError` naming the
    store when it holds no images, or nothing to rank (no pseudo-label of ``tasks`` has a
    confidence map), and :class:`~composite_tasking.store.StoreError` when ``path`` is
    not a label store.
    """
    names = _task_names(tasks)
    store = LabelStore(Path(path), "r")
    records = store.image_records()
    if not records:
        raise ReviewError(f"label store {store.path} holds no images; label some first "
                          "(ctn label IMAGES --out STORE)")  # fmt: skip
    items: list[ReviewItem] = []
    for image_id in sorted(records):
        provenance = records[image_id].get("provenance", {})
        mine = [t for t in names if t in provenance]
        pseudo = [t for t in mine if provenance[t] == PSEUDO]
        checked = [t for t in mine if provenance[t] != PSEUDO]
        if not pseudo:
            items.append(ReviewItem(0, image_id, None, None, 0, checked=checked, status="checked"))
            continue
        items.append(_rank_image(store, image_id, pseudo, checked, regions_per_image))
    ranked = [i for i in items if i.status == "ranked"]
    if not ranked:
        which = "" if tasks is None else f" of the tasks {', '.join(names)}"
        if all(i.status == "checked" for i in items):
            raise ReviewError(f"label store {store.path}: all {len(items)} image(s) hold labels{which} "
                              "a person checked or ground truth (no pseudo-labels): nothing to review")  # fmt: skip
        raise ReviewError(f"label store {store.path} holds no confidence maps (confidence_<task>) for "
                          f"its pseudo-labels{which}, so there is nothing to rank by; label it with "
                          "ctn label, which writes them")  # fmt: skip
    order = {"ranked": 0, "no confidence": 1, "checked": 2}
    items.sort(key=lambda i: (order[i.status], -(i.expected_share or 0.0), -(i.expected_regions or 0),
                              i.image_id))  # fmt: skip
    for k, item in enumerate(items, 1):
        item.rank = k
    return items
