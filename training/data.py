"""Training data: the data set of a recipe's data spec (with its augmentation), the
palette checks for a rule, and loaders that batch images of one size."""

from __future__ import annotations

import torch

from .recipe import DataSpec, parse_data_spec

__all__ = ["build_augment", "build_dataset", "check_palettes", "ordered_loader", "collate"]


def build_augment(cfg: dict | None, size: int):
    from composite_tasking.augment import default_augment

    if not cfg:
        return None
    cfg = dict(cfg)
    return default_augment(
        cfg.pop("crop", size),
        flip=cfg.pop("hflip", True),
        scale=tuple(cfg.pop("scale")) if cfg.get("scale") else None,
        photometric=cfg.pop("photometric", True),
    )


def build_dataset(spec: DataSpec | str | dict, rule: str | None, augment: dict | None = None, seed: int = 0,
                  default_split: str = "train"):  # fmt: skip
    """The data set of a spec; ``default_split`` is the PASCAL-MT split when the spec
    names none (``train`` to train, ``val`` to evaluate). A store spec takes the images
    its ``select`` chooses (:func:`~composite_tasking.datasets.training_ids`), refused
    when the file of one stored by reference is missing or changed since it was labelled
    (:func:`~composite_tasking.datasets.check_sources`)."""
    from composite_tasking.datasets import (
        PascalMTDataset,
        StoreDataset,
        SyntheticDataset,
        check_sources,
        training_ids,
    )

    spec = parse_data_spec(spec, default_split)
    aug = build_augment(augment, spec.size)
    if spec.kind == "synthetic":
        return SyntheticDataset(spec.seed, spec.n, spec.size, rule=rule, augment=aug, world=spec.world)
    if spec.kind == "pascal-mt":
        return PascalMTDataset(spec.root, spec.split, rule=rule, augment=aug, seed=seed)
    if spec.kind == "store":
        ids = training_ids(spec.root, spec.select)
        check_sources(spec.root, ids)  # before anything runs: the labels of another picture
        # a person's images: only the pixels a person checked, unless all are asked for
        return StoreDataset(spec.root, rule=rule, augment=aug, seed=seed, ids=ids,
                            checked_only=spec.select != "all")  # fmt: skip
    raise ValueError(f"unknown data kind {spec.kind!r}")


def check_palettes(dataset, rule: str | None, purpose: str = "train") -> None:
    """Refuse ``rule`` when ``dataset`` is a label store whose stored palettes were made
    under another rule (they would win: :func:`composite_tasking.datasets.check_stored_palettes`).
    Rule S (and S:<task> for scoring) asks for no palette from the data: nothing to check."""
    from composite_tasking.datasets import StoreDataset, check_stored_palettes

    if not isinstance(dataset, StoreDataset) or rule is None or rule == "S":  # None: the stored palettes
        return
    if purpose == "score" and rule.startswith("S:"):
        return
    check_stored_palettes(dataset.store_path, rule, dataset.ids, purpose)


def ordered_loader(dataset, batch_size: int, workers: int = 0, pin_memory: bool = False):
    """The items in order, in batches of images of one size
    (:func:`~composite_tasking.datasets.batches_by_shape`): images that differ in size
    (a label store, PASCAL-MT) cannot share a batch without augmentation's fixed crop.
    Data of one size gives the batches of a plain ``DataLoader(batch_size=...)``."""
    from composite_tasking.datasets import batches_by_shape

    shapes = dataset.shapes() if hasattr(dataset, "shapes") else None
    if shapes is None:
        return torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers,
                                           pin_memory=pin_memory, collate_fn=collate)  # fmt: skip
    return torch.utils.data.DataLoader(dataset, batch_sampler=batches_by_shape(shapes, batch_size),
                                       num_workers=workers, pin_memory=pin_memory,
                                       collate_fn=collate)  # fmt: skip


def collate(items: list[dict]) -> dict:
    out = {}
    for k in items[0]:
        vals = [it[k] for it in items]
        out[k] = torch.stack(vals) if torch.is_tensor(vals[0]) else vals
    return out
