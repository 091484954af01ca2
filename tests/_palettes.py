"""Palettes the tests of the fast decoding paths share (conditioning, region)."""

import numpy as np
import torch

from composite_tasking.palette import MosaicRule, RandomRule, SingleTaskRule, load_rule
from composite_tasking.tasks import SEMSEG_CLASSES


def semantics(h: int, w: int) -> np.ndarray:
    """A hand-made label map: a person, a cat, a car, a chair on background, and an
    unlabelled band, with boundaries off the 32-pixel grid."""
    sem = np.zeros((h, w), np.uint8)
    c = SEMSEG_CLASSES.index
    sem[5 : h // 2 + 3, 7 : w // 3] = c("person")
    sem[h // 2 - 9 : h - 4, w // 4 : w // 2 + 5] = c("cat")
    sem[10 : h // 2, w // 2 + 11 : w - 3] = c("car")
    sem[h // 2 + 7 :, w - w // 4 :] = c("chair")
    sem[h - 6 :, :] = 255
    return sem


def make_palette(kind: str, h: int, w: int, seed: int = 0) -> torch.Tensor:
    if kind == "random":  # all five tasks, one per pixel: every cell above s1 is mixed
        arr = RandomRule().palette((h, w), rng=seed)
    elif kind == "mosaic":
        arr = MosaicRule().palette((h, w), rng=seed)
    elif kind == "S":
        arr = SingleTaskRule("saliency").palette((h, w))
    elif kind == "R2":
        arr = load_rule("R2").palette(semantics=semantics(h, w))
    elif kind == "no-task":  # mosaic with holes where no task is asked
        arr = MosaicRule().palette((h, w), rng=seed).copy()
        arr[h // 3 : h // 2, :] = 0
        arr[:, w // 5 : w // 5 + 9] = 0
    else:
        raise KeyError(kind)
    return torch.from_numpy(np.asarray(arr)).long()[None]


KINDS = ["random", "mosaic", "S", "R2", "no-task"]
