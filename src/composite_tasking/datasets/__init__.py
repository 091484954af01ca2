"""Data sets: the PASCAL-MT loader, and torch data sets for training on synthetic scenes,
PASCAL-MT and a label store.

Two layers:

- :class:`PascalMT` reads PASCAL-MT from disk into the canonical *sample* (dict of numpy
  arrays; see :mod:`composite_tasking.augment` for the keys and conventions).
- :class:`SyntheticDataset`, :class:`PascalMTDataset` and :class:`StoreDataset` are
  :class:`torch.utils.data.Dataset` s that give training *items*: a Task Palette made
  by a rule (or the store's own palette), joint augmentation, and tensors:

  ==========  ===================  ==========================================================
  key         tensor               meaning
  ==========  ===================  ==========================================================
  image       float32 (3, H, W)    RGB in [0, 1] (no ImageNet normalisation: the model
                                   normalises its input itself)
  palette     int64 (H, W)         task id + 1, 0 = no task (also on padding)
  semseg      int64 (H, W)         0..20, 255 = ignore
  parts       int64 (H, W)         0..6, 255 = ignore
  edges       int64 (H, W)         0 / 1, 255 = ignore
  saliency    int64 (H, W)         0 / 1, 255 = ignore
  normals     float32 (3, H, W)    unit vectors (x right, y up, z towards the camera),
                                   all-zero = invalid
  id          str                  image id
  ==========  ===================  ==========================================================

  Every item has all five labels; a task the sample has no label for is all ignore
  (normals all zero), so the default collate function batches items of any source.
  Items of one batch must share (H, W): give an augmentation that ends in a fixed-size
  crop (:func:`composite_tasking.augment.default_augment` does) for sources whose images
  differ in size.

How the palette stays aligned with the augmented image
------------------------------------------------------

- A palette that depends on the image (a *semantic* rule such as R2/R3, applied to the
  ground-truth ``semseg``; or a store's own palette) is made **before** augmentation and
  augmented **jointly** with the image and labels (nearest resampling, padding = 0 =
  no task). Nearest resampling commutes with the rule's per-pixel lookup, so the result
  equals the rule applied to the augmented ``semseg`` wherever the pixel is not padding.
  (The authors' public code makes R2/R3 palettes before augmentation and does not
  transform them, which misaligns them.)
- A palette that does not depend on the image (``S:<task>``, ``mosaic`` R1r, ``random``
  Rrnd) is drawn **after** augmentation at the output size from the item's generator, so
  mosaic quadrants and per-pixel draws have the paper's statistics at training
  resolution; padded pixels get no task (a marker palette is carried through the
  augmentation to know where the padding is).

Randomness and workers
----------------------

Every random choice of an item (augmentation, palette) comes from
``numpy.random.default_rng([seed, index, epoch, ...])``: the same ``(seed, index,
epoch)`` gives the same item in any process, whatever the number of DataLoader workers
or their order. :meth:`set_epoch` changes the draws; the epoch lives in shared memory,
so it also reaches persistent workers. Synthetic *scenes* depend on ``(seed, index)``
only: an epoch shows the same scenes with new augmentation and palettes.

The package: :mod:`.items` (the item format, :class:`~.items.ItemDataset`, batches of one
size), :mod:`.synthetic`, :mod:`.pascal` (:class:`PascalMT` and its data set) with
:mod:`.pascal_files` (PASCAL-MT's facts and file readers), :mod:`.store` (a label
store's images, and the choice of them), :mod:`.errors`.
"""

from __future__ import annotations

from .errors import DatasetError, DatasetNotFoundError, StoreRuleError
from .items import CLASS_TASKS, Augment, batches_by_shape, prepare_item, to_tensors  # noqa: F401 (Augment, CLASS_TASKS: as before)
from .pascal import PascalMT, PascalMTDataset
from .pascal_files import (NORMALS_NYU_CONTEXT_LABELS, PASCAL_PART_TO_PARTS, PERSON_CLASS_IND, decode_normals,
                           edges_from_labelmap, read_index_map, read_labelmap, read_normals_png, read_pascal_parts,
                           read_saliency_png)  # fmt: skip
from .store import TRAINING_PROVENANCES, StoreDataset, check_sources, check_stored_palettes, training_ids
from .synthetic import SyntheticDataset

__all__ = [
    "DatasetError",
    "DatasetNotFoundError",
    "PASCAL_PART_TO_PARTS",
    "PERSON_CLASS_IND",
    "NORMALS_NYU_CONTEXT_LABELS",
    "PascalMT",
    "read_pascal_parts",
    "edges_from_labelmap",
    "decode_normals",
    "read_index_map",
    "read_saliency_png",
    "read_normals_png",
    "read_labelmap",
    "PascalMTDataset",
    "SyntheticDataset",
    "StoreDataset",
    "StoreRuleError",
    "prepare_item",
    "to_tensors",
    "training_ids",
    "check_stored_palettes",
    "check_sources",
    "batches_by_shape",
    "TRAINING_PROVENANCES",
]
