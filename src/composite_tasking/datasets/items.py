"""Training items: a canonical sample made into tensors with its palette and joint
augmentation (:func:`prepare_item`), the data sets' shared machinery
(:class:`ItemDataset`) and batches of one size (:func:`batches_by_shape`)."""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from ..augment import SPATIAL_KEYS
from ..palette import Rule, load_rule, validate_palette
from ..tasks import IGNORE, NO_TASK
from .errors import DatasetError

__all__ = ["Augment", "CLASS_TASKS", "to_tensors", "prepare_item", "ItemDataset", "batches_by_shape"]

Augment = Callable[[dict, np.random.Generator], dict]
CLASS_TASKS = ("semseg", "parts", "edges", "saliency")


def to_tensors(sample: Mapping, image_id: str) -> dict:
    """Canonical sample (with ``palette``) -> the item dict of tensors (module doc)."""
    image = np.asarray(sample["image"])
    h, w = image.shape[:2]
    if image.dtype == np.uint8:
        img = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().div_(255.0)
    else:
        img = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32))
    item: dict[str, Any] = {"image": img}
    palette = sample.get("palette")
    if palette is None:
        palette = np.zeros((h, w), np.uint8)
    item["palette"] = torch.from_numpy(np.asarray(palette).astype(np.int64))
    for task in CLASS_TASKS:
        arr = sample.get(task)
        arr = np.full((h, w), IGNORE, np.int64) if arr is None else np.asarray(arr).astype(np.int64)
        item[task] = torch.from_numpy(arr)
    normals = sample.get("normals")
    if normals is None:
        item["normals"] = torch.zeros((3, h, w), dtype=torch.float32)
    else:
        item["normals"] = torch.from_numpy(
            np.ascontiguousarray(np.asarray(normals, dtype=np.float32).transpose(2, 0, 1))
        )
    item["id"] = str(image_id)
    return item


def prepare_item(sample: Mapping, rule: Rule | None, augment: Augment | None,
                 rng: np.random.Generator, image_id: str) -> dict:  # fmt: skip
    """Palette + joint augmentation + tensors for one canonical sample.

    The sample's own ``palette`` is used when present; else ``rule`` makes one (see
    the module doc for when). Only the spatial keys travel through the augmentation.
    """
    s = {k: v for k, v in sample.items() if k in SPATIAL_KEYS and v is not None}
    if "image" not in s:
        raise DatasetError(f"image {image_id!r}: the sample has no image")
    h, w = np.asarray(s["image"]).shape[:2]
    draw_after: Rule | None = None  # a rule that needs no semantics: drawn after the augmentation
    if s.get("palette") is not None:
        s["palette"] = validate_palette(s["palette"], f"palette of {image_id!r}")
    elif rule is None:
        raise DatasetError(f"image {image_id!r} has no palette and no rule was given")
    elif rule.needs_semantics:
        sem = s.get("semseg")
        if sem is None:
            raise DatasetError(f"rule {rule.name!r} needs the semantic labels of "
                               f"{image_id!r}, which has none")  # fmt: skip
        s["palette"] = rule.palette(semantics=np.asarray(sem))
    else:
        s["palette"] = np.ones((h, w), np.uint8)  # marks real pixels through the padding
        draw_after = rule
    if augment is not None:
        s = augment(s, rng)
    if draw_after is not None:
        real = s["palette"] != NO_TASK
        drawn = draw_after.palette(shape=real.shape, rng=rng)
        s["palette"] = np.where(real, drawn, NO_TASK).astype(np.uint8)
    return to_tensors(s, image_id)


def _rule(rule) -> Rule | None:
    return None if rule is None else load_rule(rule)


class ItemDataset(torch.utils.data.Dataset):
    """Shared machinery: per-item generators from (seed, index, epoch), shared epoch."""

    #: mixed into every item's generator, to keep item draws apart from other uses of seed
    _SALT = 0x43544E44  # "CTND"

    def __init__(self, rule, augment: Augment | None, seed: int):
        self.rule = _rule(rule)
        self.augment = augment
        self.seed = int(seed)
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    def __len__(self) -> int:
        """The number of items (each data set its own)."""
        raise NotImplementedError

    @property
    def epoch(self) -> int:
        return int(self._epoch.item())

    def set_epoch(self, epoch: int) -> None:
        """Change the augmentation and palette draws (visible to running workers)."""
        if int(epoch) < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self._epoch.fill_(int(epoch))

    def rng(self, index: int) -> np.random.Generator:
        """The generator of item ``index`` in the current epoch."""
        return np.random.default_rng([self.seed, int(index), self.epoch, self._SALT])

    def shapes(self) -> list[tuple[int, int]] | None:
        """The (H, W) of every item before augmentation, where the data set can tell it
        without reading pixels (else None); :func:`batches_by_shape` groups by it."""
        return None

    def _check_index(self, index: int) -> int:
        n = len(self)
        index = int(index)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"index {index} out of range for {n} items")
        return index


def batches_by_shape(shapes: Sequence[tuple[int, int]], batch_size: int) -> list[list[int]]:
    """Indices ``0..len(shapes)-1`` in batches of at most ``batch_size`` whose items share
    one (H, W): the shapes in the order they first appear, each one's items in order.
    Items of one size give exactly the batches of ``DataLoader(batch_size=...)``."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, shape in enumerate(shapes):
        groups.setdefault(tuple(shape), []).append(i)
    b = max(1, int(batch_size))
    return [idx[k : k + b] for idx in groups.values() for k in range(0, len(idx), b)]
