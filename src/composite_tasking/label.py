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

A store remembers the model (sha256) and the rule it was written with; labelling into
it with another model or rule is refused unless ``overwrite`` is given, so pseudo-labels
of different origins are never mixed silently.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from .images import ImageReadError, read_image, scan_inputs
from .inference import Prediction, Predictor
from .palette import load_rule, validate_palette
from .store import LabelStore, StoreError
from .tasks import get_task

__all__ = ["LabelError", "LabelSummary", "label_images", "image_ids", "contact_sheet", "parse_shard"]


class LabelError(ValueError):
    """A usage problem: nothing was written."""


@dataclass
class LabelSummary:
    store: Path
    done: list[str] = field(default_factory=list)
    skipped_complete: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    preview: Path | None = None
    stopped: bool = False

    @property
    def ok(self) -> bool:
        return not self.failed


def parse_shard(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not m or int(m.group(2)) < 1 or int(m.group(1)) >= int(m.group(2)):
        raise LabelError(f"--shard takes I/N with 0 <= I < N, got {text!r}")
    return int(m.group(1)), int(m.group(2))


def image_ids(files: list[Path], inputs: Iterable[str | os.PathLike]) -> list[str]:
    """Store ids from paths: the path below its input folder, '/' -> '__'. Unique."""
    roots = [Path(i).resolve() for i in inputs if Path(i).is_dir()]
    ids, seen = [], set()
    for f in files:
        rf = f.resolve()
        rel = next((rf.relative_to(r) for r in roots if rf.is_relative_to(r)), Path(f.name))
        base = re.sub(r"[^A-Za-z0-9._-]", "_", "__".join(rel.parts)).lstrip(".") or "image"
        i = base
        if i in seen:
            i = f"{base}-{hashlib.sha256(str(rf).encode()).hexdigest()[:8]}"
        seen.add(i)
        ids.append(i)
    return ids


def _composite_picture(pred: Prediction) -> np.ndarray:
    from .visualize import colorize

    h, w = pred.palette.shape
    pic = np.zeros((h, w, 3), np.uint8)
    for name, t in pred.tasks.items():
        region = pred.palette == get_task(name).palette_value
        pic[region] = colorize(name, t.label)[region]
    return pic


def contact_sheet(rows: list[tuple[np.ndarray, Prediction]], path: Path, thumb: int = 160) -> Path:
    """A PNG: per image, the image, its palette and the composite pseudo-labels."""
    import imageio.v3 as iio
    from PIL import Image

    from .visualize import colorize_palette, grid

    def fit(a: np.ndarray) -> np.ndarray:
        return np.asarray(Image.fromarray(a).resize((thumb, thumb), Image.NEAREST))

    pics = [[fit(img), fit(colorize_palette(p.palette)), fit(_composite_picture(p))] for img, p in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    # a name of its own: shards finishing together write the same preview path
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp.png")
    iio.imwrite(tmp, grid(pics))
    os.replace(tmp, path)
    return path


def image_rng(seed: int, image_id: str) -> np.random.Generator:
    """The random generator of one image's palette (random rules): from the seed and the
    image id alone, so a resumed, sharded or re-batched run draws the same palettes."""
    key = int.from_bytes(hashlib.sha256(image_id.encode("utf-8")).digest()[:8], "little")
    return np.random.default_rng([int(seed), key])


def _open_store(path: Path, attrs: dict) -> LabelStore:
    """Open the store, creating it first if it is absent (or an empty folder).

    Shards started together (torchrun) would race to create it: one process's
    half-made root (or its mode-"w" create wiping the other's) made the other fail.
    The root is made in a private folder beside it and renamed into place, which is
    atomic; a process that loses the race finds the winner's store and opens it.
    """
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


def _palette_file(folder: Path, image_path: Path, shape) -> np.ndarray:
    from PIL import Image

    cand = [folder / f"{image_path.stem}.png", folder / f"{image_path.name}.png"]
    src = next((c for c in cand if c.is_file()), None)
    if src is None:
        raise ImageReadError(image_path, f"no palette file {cand[0].name} in {folder}")
    with Image.open(src) as im:
        arr = np.asarray(im)
    if arr.ndim != 2:
        raise ImageReadError(src, "a palette PNG is single-channel (values = task id + 1)")
    if arr.shape != tuple(shape):
        raise ImageReadError(src, f"palette is {arr.shape}, the image is {tuple(shape)}")
    return validate_palette(arr, str(src))


