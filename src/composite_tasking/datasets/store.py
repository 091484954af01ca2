"""A label store's images as training items (:class:`StoreDataset`), and the choice
of them: which to train on, refused when their files changed or their palettes
contradict the rule."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Sequence, cast

import numpy as np

from ..palette import load_rule
from ..store import PERSON_PROVENANCES
from ..tasks import IGNORE
from .errors import DatasetError, DatasetNotFoundError, StoreRuleError, not_found
from .items import Augment, ItemDataset, prepare_item

if TYPE_CHECKING:
    from ..store import LabelStore
    from ..store.location import Remote

__all__ = ["StoreDataset", "check_sources", "TRAINING_PROVENANCES", "training_ids", "check_stored_palettes"]


class StoreDataset(ItemDataset):
    """Images of a label store (:class:`composite_tasking.store.LabelStore`) as items.

    Each image uses its own palette when the store has one (a corrected palette is the
    training signal); otherwise ``rule`` makes one (a semantic rule from the stored
    ``semseg``, ignore where it is not valid). Labels outside their ``valid`` mask become
    ignore (normals: zero); with ``checked_only``, labels outside the pixels a person
    checked too (what ``ctn finetune`` and the napari widget train on). An image stored
    by reference is read from its ``image_source`` file by
    :meth:`~composite_tasking.store.LabelStore.image_pixels`, which refuses a file that
    is no longer the one labelled (:class:`DatasetError` naming the store, the image and
    the file; :func:`check_sources` finds them all before a run starts). ``ids``
    restricts the data set to some images
    (:func:`training_ids` chooses those with corrections or ground truth;
    :func:`check_stored_palettes` refuses a rule the stored palettes contradict).
    """

    def __init__(self, store_path: str | os.PathLike | Remote, rule=None, augment: Augment | None = None,
                 seed: int = 0, ids: Sequence[str] | None = None, checked_only: bool = False):  # fmt: skip
        from ..store import LabelStore
        from ..store.location import locate

        super().__init__(rule, augment, seed)
        #: labels only at the pixels a person checked (:meth:`LabelStore.checked_masks`):
        #: ignore (normals: zero) elsewhere, so a loss or a score sees nothing else
        self.checked_only = bool(checked_only)
        self.store_path = locate(store_path)  # a Path, or an object store's URL (store.location)
        if not self.store_path.exists():
            raise not_found("label store", self.store_path)
        store = LabelStore(self.store_path, mode="r")
        available = store.ids()
        if ids is None:
            self.ids = list(available)
        else:
            missing = [i for i in ids if i not in set(available)]
            if missing:
                raise DatasetError(f"image(s) {missing[:5]} not in label store {self.store_path}")
            self.ids = list(ids)
        self._store: LabelStore | None = None  # opened lazily in each process
        self._shapes: list[tuple[int, int]] | None = None

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_store"] = None
        return state

    @property
    def store(self):
        if self._store is None:
            from ..store import LabelStore

            self._store = LabelStore(self.store_path, mode="r")
        return self._store

    def __len__(self) -> int:
        return len(self.ids)

    def shapes(self) -> list[tuple[int, int]]:
        """From each image's attributes (``shape``): no pixels are read."""
        if self._shapes is None:
            records = self.store.image_records(complete_only=False)  # one pass over the store
            self._shapes = [cast("tuple[int, int]", tuple(int(v) for v in records[i]["shape"]))  # [H, W]
                            for i in self.ids]  # fmt: skip
        return self._shapes

    def sample(self, index: int) -> dict:
        """The canonical sample of item ``index``, labels masked by validity."""
        image_id = self.ids[self._check_index(index)]
        from ..images import ImageReadError

        stored = self.store.read_sample(image_id)
        try:
            image = self.store.image_pixels(stored)  # by reference: its file, sha256-checked
        except ImageReadError as e:
            where = f"label store {self.store_path}: image {image_id!r} is stored by reference and"
            if self.store.source_file(stored) is None:
                raise DatasetNotFoundError(f"{where} its file is missing: {e.path}", e.path) from None
            raise DatasetError(f"{where} its file cannot be used: {e}") from None
        sample: dict = {"image": image}
        if stored.palette is not None:
            sample["palette"] = stored.palette
        checked = self.store.checked_masks(image_id, stored) if self.checked_only else {}
        for task, arr in stored.labels.items():
            valid = checked.get(task, stored.valid.get(task))
            arr = np.array(arr, copy=True)
            if valid is not None:
                if task == "normals":
                    arr[~valid] = 0.0
                else:
                    arr[~valid] = IGNORE
            sample[task] = arr
        sample["meta"] = {"id": image_id, "source": "store",
                          "provenance": dict(stored.provenance)}  # fmt: skip
        return sample

    def __getitem__(self, index: int) -> dict:
        index = self._check_index(index)
        return prepare_item(self.sample(index), self.rule, self.augment, self.rng(index),
                            self.ids[index])  # fmt: skip


# ------------------------------------------------------------- choosing store images


def check_sources(store_path: str | os.PathLike | Remote, ids: Sequence[str] | None = None) -> None:
    """Refuse a label store whose images ``ids`` (default: all) stored by reference have
    a file that is missing or no longer the one labelled
    (:meth:`~composite_tasking.store.LabelStore.source_problem`: the file's size and
    mtime against the recorded ones, its sha256 when they differ): their labels belong
    to another picture. :class:`DatasetError` (:class:`DatasetNotFoundError` when the
    files are all missing) names the store, the first such image and its file, and how
    many there are. ``ctn evaluate`` and ``ctn finetune`` call it before anything runs;
    nothing is skipped (a run on the rest would score or train on fewer images than
    asked, unnoticed)."""
    from ..store import LabelStore
    from ..store.sources import STATE_REASONS

    store = LabelStore(store_path, mode="r")
    records = store.image_records(complete_only=False)  # one pass over the store
    bad = []
    for i in sorted(records) if ids is None else ids:
        if i in records:
            problem = store.source_problem(i, records[i])
            if problem is not None:
                bad.append((i, *problem))
    if not bad:
        return
    image_id, path, reason = bad[0]
    more = f" ({len(bad)} such images in all)" if len(bad) > 1 else ""
    missing = all(r == STATE_REASONS["missing"] for _, _, r in bad)
    fix = ("restore the file(s)" if missing else
           "restore the file(s), or label the folder again (ctn label FOLDER --out STORE --reference "
           "relabels the images whose file changed, except those a person corrected)")  # fmt: skip
    message = (f"label store {store_path}: image {image_id!r} is stored by reference and its file "
               f"{path} {reason}{more}: {fix}")  # fmt: skip
    if missing:
        raise DatasetNotFoundError(message, path)
    raise DatasetError(message)


#: provenances of labels that teach a model: a person's corrections and ground truth
#: (never ``pseudo``: a model's own output nobody checked)
TRAINING_PROVENANCES = PERSON_PROVENANCES


def training_ids(store_path: str | os.PathLike | Remote, select: str = "corrected",
                 required: bool = True) -> list[str]:  # fmt: skip
    """The images of a label store to train on.

    ``select="corrected"``: the images holding, for at least one task, labels a person
    corrected or reviewed, or ground truth (:data:`~composite_tasking.store.PERSON_PROVENANCES`);
    images with pseudo-labels only (a model's output nobody checked) are left out. Train
    on them with ``StoreDataset(checked_only=True)``: only the pixels a person checked.
    ``select="all"``: every image (self-training on pseudo-labels). When no image is
    selected, ``required`` raises :class:`DatasetError` naming the store, how many
    images it holds and the way to take them all (else the list is empty). The napari
    Fine-tune widget and ``ctn finetune`` / ``ctn evaluate`` choose their images with
    this.
    """
    from ..store import LabelStore
    from ..store.location import locate

    path = locate(store_path)
    if not path.exists():
        raise not_found("label store", path)
    records = LabelStore(path, mode="r").image_records()  # one pass over the store
    ids = sorted(records)
    if select == "all":
        chosen = ids
    elif select == "corrected":
        chosen = [i for i in ids
                  if set(TRAINING_PROVENANCES) & set((records[i].get("provenance") or {}).values())]  # fmt: skip
    else:
        raise ValueError(f"select is 'corrected' or 'all', not {select!r}")
    if not chosen and required:
        if not ids:
            raise DatasetError(f"label store {path} holds no image")
        raise DatasetError(
            f"label store {path} holds {len(ids)} image(s), none with labels a person corrected "
            "or reviewed, or ground truth (only pseudo-labels a model wrote): correct or review "
            "some in napari and save them first, or pass --all-images (a recipe's store spec: select: all) to use "
            "the pseudo-labels too (self-training)")  # fmt: skip
    return list(chosen)


def check_stored_palettes(store_path: str | os.PathLike | Remote, rule, ids: Sequence[str] | None = None,
                          purpose: str = "train") -> None:  # fmt: skip
    """Refuse a rule that contradicts the stored palettes of ``ids`` (default: all).

    A stored palette always wins over the rule (:func:`prepare_item`): it is the
    training signal. An image whose palette was made under a recorded rule (the image
    attribute ``"rule"``, written by ``ctn label`` and by napari saves that know it)
    other than ``rule`` would silently train (``purpose="train"``) or be scored
    (``"score"``) under that other rule while the run says ``rule``:
    :class:`StoreRuleError` names the store, the count, an example and what to do.
    Palettes without a recorded rule (painted by hand) and images without a stored
    palette (the rule makes theirs) pass.
    """
    from ..store import LabelStore

    if rule is None:  # no rule: every image trains under its stored palette
        return
    name = rule.name if hasattr(rule, "palette") else load_rule(rule).name
    records = LabelStore(store_path, mode="r").image_records(complete_only=False)  # one pass
    clash: dict[str, list[str]] = {}
    for i in sorted(records) if ids is None else ids:
        attrs = records.get(i)
        if attrs is None:
            raise StoreRuleError(f"image {i!r} is not in label store {store_path}")
        recorded = attrs.get("rule")
        if "palette" in attrs.get("labels", []) and recorded and recorded != name:
            clash.setdefault(str(recorded), []).append(i)
    if not clash:
        return
    n = sum(len(v) for v in clash.values())
    rules = (f"rule {next(iter(clash))}" if len(clash) == 1
             else "rules " + ", ".join(f"{r} ({len(v)})" for r, v in sorted(clash.items())))  # fmt: skip
    example = next(iter(clash.values()))[0]
    other = sorted(clash)[0]
    verb = "train" if purpose == "train" else "score"
    raise StoreRuleError(
        f"label store {store_path}: {n} image(s) (e.g. {example!r}) hold a palette made "
        f"under {rules}, not {name}, and a stored palette wins over the rule: label or "
        f"correct the images under {name} first (ctn label --rule {name} / napari), or give "
        f"--rule {other} to {verb} under the stored palettes")  # fmt: skip
