"""PASCAL-MT read from disk (:class:`PascalMT`: canonical samples) and as training
items (:class:`PascalMTDataset`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from PIL import Image

from ..export import read_manifest
from ..tasks import IGNORE, SEMSEG_CLASSES, TASK_NAMES, get_task
from .errors import DatasetNotFoundError, not_found
from .items import Augment, ItemDataset, prepare_item
from .pascal_files import (NYU_LABELS, edges_from_labelmap, nearest_resize, open_image, read_index_map,
                           read_labelmap, read_normals_png, read_pascal_parts, read_saliency_png)  # fmt: skip

__all__ = ["PascalMT", "PascalMTDataset"]


class PascalMT:
    """PASCAL-MT (PASCAL-Context multi-task split) read from ``root``.

    Layout (as the multi-task literature's loaders expect)::

        root/JPEGImages/{id}.jpg
        root/ImageSets/Context/{train,val}.txt
        root/semseg/VOC12/{id}.png  or  root/semseg/pascal-context/{id}.png
        root/human_parts/{id}.mat               PASCAL-Part 'anno' struct
        root/normals_distill/{id}.png           RGB, n = png / 255 * 2 - 1
        root/sal_distill/{id}.png               grayscale, > 0.5 salient
        root/pascal-context/trainval/{id}.mat   'LabelMap' (459 classes)

    and the PNG forms ``ctn export --format pascal-mt`` writes (docs/export.md), read
    where they exist: ``human_parts/{id}.png`` (class-index PNG 0..6, 255 ignore, in
    place of the ``.mat``), ``edges/{id}.png`` (0 / 1, 255 ignore, in place of the
    LabelMap's edges) and a ``sal_distill`` PNG with an alpha channel (alpha 0 = ignore).
    A root holding an export's ``ctn-export.json`` has its normals masked already
    (invalid = 0): ``normals_mask`` does not apply to it.

    ``sample = PascalMT(root)[i]`` (or ``.load(image_id)``) is the canonical sample of
    the requested ``tasks``:

    - ``semseg``: the 21-class index PNG (VOC12 first, then pascal-context), 255 ignore;
    - ``parts``: :func:`read_pascal_parts` (all 255 without a person);
    - ``normals``: :func:`decode_normals`; with ``normals_mask="nyu"`` (default, as in
      the literature) only pixels whose LabelMap class is in
      :data:`NORMALS_NYU_CONTEXT_LABELS` stay valid (needs the LabelMap file);
      ``normals_mask=None`` keeps every decodable pixel;
    - ``saliency``: ``png / 255 > 0.5`` (grayscale; RGB is converted to luminance);
      255 where the PNG has an alpha channel that is 0;
    - ``edges``: :func:`edges_from_labelmap` of the LabelMap (or the edges PNG).

    A label map whose size differs from the image's is resized to it (nearest), as the
    literature's loaders do; ``meta["resized"]`` lists such tasks.

    The constructor checks that ``root``, the folders of the requested tasks and the
    list file exist; per-image files are checked when an image is loaded. Every missing
    path raises :class:`DatasetNotFoundError` naming it.
    """

    def __init__(self, root: str | os.PathLike, split: str = "train",
                 tasks: Iterable[str] = TASK_NAMES, normals_mask: str | None = "nyu"):  # fmt: skip
        self.root = Path(root)
        self.split = str(split)
        self.tasks = tuple(dict.fromkeys(get_task(t).name for t in tasks))
        if normals_mask not in ("nyu", None):
            raise ValueError(f"normals_mask must be 'nyu' or None, got {normals_mask!r}")
        #: the manifest when ``root`` is a ``ctn export`` (else None): normals masked already
        self.export = read_manifest(self.root)
        if self.export is not None:
            normals_mask = None
        self.normals_mask = normals_mask
        if not self.root.is_dir():
            raise not_found("PASCAL-MT root folder", self.root)
        self._require_dir(self.root / "JPEGImages")
        if "semseg" in self.tasks:
            dirs = [self.root / "semseg" / "VOC12", self.root / "semseg" / "pascal-context"]
            if not any(d.is_dir() for d in dirs):
                raise DatasetNotFoundError(f"PASCAL-MT folder not found: {dirs[0]} (nor {dirs[1]})", dirs[0])
        if "parts" in self.tasks:
            self._require_dir(self.root / "human_parts")
        if "normals" in self.tasks:
            self._require_dir(self.root / "normals_distill")
        if "saliency" in self.tasks:
            self._require_dir(self.root / "sal_distill")
        edges_from_mat = "edges" in self.tasks and not (self.root / "edges").is_dir()
        if edges_from_mat or ("normals" in self.tasks and normals_mask == "nyu"):
            self._require_dir(self.root / "pascal-context" / "trainval")
        list_file = self.root / "ImageSets" / "Context" / f"{self.split}.txt"
        if not list_file.is_file():
            raise not_found(f"list file of split {self.split!r}", list_file)
        lines = list_file.read_text(encoding="utf-8").splitlines()
        self.ids: list[str] = [s.strip() for s in lines if s.strip()]

    @staticmethod
    def _require_dir(path: Path) -> None:
        if not path.is_dir():
            raise not_found("PASCAL-MT folder", path)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict:
        if not -len(self.ids) <= index < len(self.ids):
            raise IndexError(f"index {index} out of range for {len(self.ids)} images")
        return self.load(self.ids[index])

    def __repr__(self) -> str:
        return f"PascalMT({str(self.root)!r}, split={self.split!r}, {len(self)} images)"

    # ------------------------------------------------------------------ file paths

    def image_path(self, image_id: str) -> Path:
        return self.root / "JPEGImages" / f"{image_id}.jpg"

    def semseg_path(self, image_id: str) -> Path:
        voc = self.root / "semseg" / "VOC12" / f"{image_id}.png"
        if voc.is_file():
            return voc
        ctx = self.root / "semseg" / "pascal-context" / f"{image_id}.png"
        if ctx.is_file():
            return ctx
        raise DatasetNotFoundError(f"semantic segmentation of {image_id!r} not found: {voc} "
                                   f"(nor {ctx})", voc)  # fmt: skip

    def labelmap_path(self, image_id: str) -> Path:
        return self.root / "pascal-context" / "trainval" / f"{image_id}.mat"

    # --------------------------------------------------------------------- reading

    def _labelmap(self, image_id: str) -> np.ndarray:
        return read_labelmap(self.labelmap_path(image_id))

    def load(self, image_id: str) -> dict:
        """The canonical sample of ``image_id``."""
        image = np.asarray(open_image(self.image_path(image_id)).convert("RGB"), dtype=np.uint8)
        hw = image.shape[:2]
        sample: dict = {"image": image}
        resized: list[str] = []

        def fit(task: str, arr: np.ndarray) -> np.ndarray:
            if arr.shape[:2] != hw:
                resized.append(task)
                return nearest_resize(arr, hw)
            return arr

        labelmap = None
        edges_png = self.root / "edges" / f"{image_id}.png"
        edges_from_mat = "edges" in self.tasks and not edges_png.is_file()
        if edges_from_mat or ("normals" in self.tasks and self.normals_mask == "nyu"):
            labelmap = fit("labelmap", self._labelmap(image_id))
        if "semseg" in self.tasks:
            sample["semseg"] = fit("semseg", read_index_map(self.semseg_path(image_id), len(SEMSEG_CLASSES)))
        if "parts" in self.tasks:
            path = self.root / "human_parts" / f"{image_id}.png"
            if path.is_file():  # the PNG form of an export
                sample["parts"] = fit("parts", read_index_map(path, get_task("parts").num_classes))
            else:
                path = self.root / "human_parts" / f"{image_id}.mat"
                sample["parts"] = fit("parts", read_pascal_parts(path, shape=hw))
        if "edges" in self.tasks:
            if edges_from_mat:
                assert labelmap is not None  # read above
                sample["edges"] = edges_from_labelmap(labelmap)
            else:  # the PNG form of an export
                sample["edges"] = fit("edges", read_index_map(edges_png, 2))
        if "saliency" in self.tasks:
            sample["saliency"] = fit("saliency", read_saliency_png(self.root / "sal_distill" / f"{image_id}.png"))
        if "normals" in self.tasks:
            n = fit("normals", read_normals_png(self.root / "normals_distill" / f"{image_id}.png"))
            if self.normals_mask == "nyu":
                assert labelmap is not None  # read above
                keep = np.isin(labelmap, NYU_LABELS)
                n = np.where(keep[..., None], n, np.float32(0.0)).astype(np.float32)
            sample["normals"] = n
        parts = sample.get("parts")
        sample["meta"] = {
            "id": image_id,
            "source": "pascal-mt",
            "split": self.split,
            "size": [int(hw[0]), int(hw[1])],
            "has_person": None if parts is None else bool((parts != IGNORE).any()),
            "resized": resized,  # label maps resized to the image ("labelmap": the .mat)
        }
        return sample


class PascalMTDataset(ItemDataset):
    """PASCAL-MT images (:class:`PascalMT`) as training items.

    A semantic ``rule`` is applied to the ground-truth ``semseg`` (loaded for it even
    when ``semseg`` is not among ``tasks``; it is then not returned as a label).
    """

    def __init__(self, root: str | os.PathLike, split: str = "train", rule="R2",
                 augment: Augment | None = None, tasks: Iterable[str] = TASK_NAMES,
                 seed: int = 0, normals_mask: str | None = "nyu"):  # fmt: skip
        super().__init__(rule, augment, seed)
        if self.rule is None:
            raise ValueError("a PascalMTDataset needs a rule to make palettes")
        self.tasks = tuple(dict.fromkeys(get_task(t).name for t in tasks))
        load = self.tasks
        if self.rule.needs_semantics and "semseg" not in load:
            load = load + ("semseg",)
        self.pascal = PascalMT(root, split, tasks=load, normals_mask=normals_mask)

    @property
    def ids(self) -> list[str]:
        return self.pascal.ids

    def __len__(self) -> int:
        return len(self.pascal)

    def shapes(self) -> list[tuple[int, int]]:
        """From the JPEG headers (PIL reads no pixels for ``size``)."""
        out = []
        for image_id in self.pascal.ids:
            with Image.open(self.pascal.image_path(image_id)) as img:
                out.append((img.height, img.width))
        return out

    def __getitem__(self, index: int) -> dict:
        index = self._check_index(index)
        image_id = self.pascal.ids[index]
        sample = self.pascal.load(image_id)
        item = prepare_item(sample, self.rule, self.augment, self.rng(index), image_id)
        for task in TASK_NAMES:
            if task not in self.tasks:  # loaded for the rule only
                item[task] = (torch.zeros_like(item[task]) if task == "normals"
                              else torch.full_like(item[task], IGNORE))  # fmt: skip
        return item
