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
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
from PIL import Image

from .augment import SPATIAL_KEYS
from .export import read_manifest
from .palette import Rule, load_rule, validate_palette
from .tasks import IGNORE, NO_TASK, SEMSEG_CLASSES, TASK_NAMES, get_task
from .store import PERSON_PROVENANCES

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

Augment = Callable[[dict, np.random.Generator], dict]
CLASS_TASKS = ("semseg", "parts", "edges", "saliency")


class DatasetError(Exception):
    """A data set, or one of its files, is missing or invalid; the message says which."""


class StoreRuleError(DatasetError):
    """Images of a label store hold palettes made under another rule than the one asked
    for (:func:`check_stored_palettes`)."""


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """A folder, list or per-image file of a data set does not exist (``.path``)."""

    def __init__(self, message: str, path: str | os.PathLike):
        super().__init__(message)
        self.path = str(path)


# ---------------------------------------------------------------- PASCAL-MT facts

#: PASCAL-Part person part name -> one of the 6 parts of :data:`tasks.PARTS_CLASSES`.
#: The 6-part grouping of the multi-task literature (ASTMT ``fblib/dataloaders/
#: pascal_context.py``, ``HUMAN_PART[6]``; the same table in MTI-Net's
#: ``Multi-Task-Learning-PyTorch/data/pascal_context.py``): head = hair, head, ears,
#: eyebrows, eyes, mouth, nose; torso = torso and neck; left and right sides merged;
#: hands go with the lower arm, feet with the lower leg.
PASCAL_PART_TO_PARTS: dict[str, str] = {
    "hair": "head", "head": "head", "lear": "head", "rear": "head", "lebrow": "head",
    "rebrow": "head", "leye": "head", "reye": "head", "mouth": "head", "nose": "head",
    "neck": "torso", "torso": "torso",
    "luarm": "upper_arm", "ruarm": "upper_arm",
    "llarm": "lower_arm", "rlarm": "lower_arm", "lhand": "lower_arm", "rhand": "lower_arm",
    "luleg": "upper_leg", "ruleg": "upper_leg",
    "llleg": "lower_leg", "rlleg": "lower_leg", "lfoot": "lower_leg", "rfoot": "lower_leg",
}  # fmt: skip
#: ``class_ind`` of "person" in PASCAL-Part (VOC order, 1-based)
PERSON_CLASS_IND = SEMSEG_CLASSES.index("person")  # 15

#: PASCAL-Context (459 classes, 1-based ``LabelMap`` values) labels on which the distilled
#: normals count as valid in the multi-task literature's loaders (ASTMT / MTI-Net
#: ``_load_normals_distilled``): the PASCAL-Context classes whose name is also an NYUv2
#: class (``db_info/context_classes.json`` x ``db_info/nyu_classes.json``, 'unknown'
#: excluded), plus tvmonitor. Elsewhere (sky, grass, road, animals, ...) the distilled
#: normals are not trusted and are set invalid.
NORMALS_NYU_CONTEXT_LABELS: frozenset[int] = frozenset({
    3, 4, 6, 9, 10, 11, 13, 15, 17, 18, 22, 23, 29, 30, 33, 34, 36, 37, 38, 39, 41, 43,
    46, 49, 50, 51, 53, 55, 56, 59, 61, 62, 65, 66, 68, 69, 72, 73, 78, 83, 84, 85, 87,
    88, 95, 96, 101, 104, 105, 107, 111, 113, 115, 122, 124, 135, 141, 142, 143, 146, 150,
    154, 157, 158, 159, 165, 172, 174, 181, 183, 184, 191, 193, 195, 197, 199, 202, 213,
    215, 216, 219, 220, 223, 225, 228, 230, 232, 233, 238, 239, 242, 243, 246, 250, 251,
    252, 255, 260, 261, 263, 269, 272, 273, 275, 281, 283, 284, 285, 286, 287, 288, 290,
    291, 292, 293, 295, 304, 307, 309, 310, 314, 315, 319, 323, 329, 330, 331, 336, 342,
    345, 349, 350, 351, 352, 355, 357, 368, 370, 371, 374, 379, 380, 383, 384, 397, 401,
    403, 405, 407, 408, 411, 412, 413, 414, 417, 419, 421, 423, 427, 429, 430, 432, 440,
    441, 442, 443, 444, 446, 454, 457,
})  # fmt: skip

_NYU_LABELS = np.array(sorted(NORMALS_NYU_CONTEXT_LABELS), dtype=np.int64)
_PART_IDS = {name: np.uint8(get_task("parts").classes.index(part))
             for name, part in PASCAL_PART_TO_PARTS.items()}  # fmt: skip


def _missing(what: str, path: Path) -> DatasetNotFoundError:
    return DatasetNotFoundError(f"{what} not found: {path}", path)


def _loadmat(path: Path) -> dict:
    try:
        from scipy.io import loadmat
    except ImportError:  # pragma: no cover - scipy is a dependency of this loader
        raise DatasetError(f"reading {path} needs scipy (pip install scipy)") from None
    if not path.is_file():
        raise _missing("file", path)
    try:
        return loadmat(str(path), squeeze_me=True, struct_as_record=False)
    except Exception as e:  # scipy raises several types for broken files
        raise DatasetError(f"cannot read MATLAB file {path}: {e}") from None


def _mask(value, shape: tuple[int, int] | None, path: Path, what: str) -> np.ndarray:
    m = np.asarray(value)
    if shape is not None and m.shape != tuple(shape):
        if m.size == shape[0] * shape[1]:  # squeeze_me squeezed a 1-pixel-wide mask
            m = m.reshape(shape)
        else:
            raise DatasetError(f"{path}: {what} has shape {m.shape}, expected {tuple(shape)}")
    if m.ndim != 2:
        raise DatasetError(f"{path}: {what} is not a 2-D mask (shape {m.shape})")
    return m.astype(bool)


def _structs(value) -> list:
    """A MATLAB struct array read with squeeze_me as a list (one struct is not a list)."""
    if value is None:
        return []
    if isinstance(value, np.ndarray):
        return list(value.ravel())
    return [value]


def read_pascal_parts(path: str | os.PathLike, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Human parts (H, W) uint8 from a PASCAL-Part annotation file (``human_parts/{id}.mat``).

    (H, W) is the size of the annotation's person masks; ``shape`` (the image size) is
    used when the file has no 2-D person mask (e.g. no person at all).

    The file holds a struct ``anno`` with ``anno.objects(i).class`` (name),
    ``.class_ind`` (VOC index, person = 15), ``.mask`` (instance mask) and ``.parts(j)``
    with ``.part_name`` and ``.mask``. Part names map to the 6 parts by
    :data:`PASCAL_PART_TO_PARTS`. Result:

    - no person in the image: all 255 (ignore), as in PASCAL-MT;
    - otherwise 0 (background) everywhere, the part id on each annotated part (later
      parts over earlier ones, as in the literature's loaders), and 255 on persons that
      have no part annotation and on parts with a name not in the table (the
      literature's loaders would call unannotated persons background: a deliberate
      difference).
    """
    path = Path(path)
    mat = _loadmat(path)
    anno = mat.get("anno")
    if anno is None or not hasattr(anno, "objects"):
        raise DatasetError(f"{path}: no PASCAL-Part 'anno' struct with 'objects'")
    persons = []
    for obj in _structs(anno.objects):
        name = str(getattr(obj, "class", "")).strip().lower()
        ind = np.asarray(getattr(obj, "class_ind", -1)).ravel()
        if name == "person" or (ind.size and int(ind[0]) == PERSON_CLASS_IND):
            persons.append(obj)
    # the annotation's own size (the first 2-D person mask), else the given one
    own = next((np.asarray(o.mask).shape for o in persons if np.asarray(o.mask).ndim == 2), None)
    if own is None and shape is None:
        raise DatasetError(f"{path}: cannot tell the image size from the annotation; pass shape")
    shape = own if own is not None else (int(shape[0]), int(shape[1]))
    out = np.zeros(shape, np.uint8)
    any_person = False
    annotated = []
    for obj in persons:
        mask = _mask(obj.mask, shape, path, "a person mask")
        parts = _structs(getattr(obj, "parts", None))
        if parts:
            annotated.append(parts)
            any_person |= bool(mask.any())
        elif mask.any():
            out[mask] = IGNORE  # a person whose parts nobody annotated
            any_person = True
    for parts in annotated:
        for part in parts:
            pname = str(getattr(part, "part_name", "")).strip().lower()
            pmask = _mask(part.mask, shape, path, f"mask of part {pname!r}")
            out[pmask] = _PART_IDS.get(pname, np.uint8(IGNORE))
            any_person |= bool(pmask.any())
    if not any_person:
        return np.full(shape, IGNORE, np.uint8)
    return out


def edges_from_labelmap(label_map: np.ndarray) -> np.ndarray:
    """Edges (H, W) uint8 0/1 of a label map: a pixel is an edge when its label differs
    from its right or its lower neighbour.

    One pixel wide, on the upper/left side of every boundary, defined everywhere (no
    ignore). The same definition as the synthetic world's edges. (The literature's
    loaders take ``|Laplacian| > 0`` of the 459-class LabelMap, which marks both sides
    of a boundary, then thin it to ~1 px; both lie within the evaluation's matching
    tolerance of each other.)
    """
    lm = np.asarray(label_map)
    if lm.ndim != 2:
        raise ValueError(f"a label map is 2-D, got shape {lm.shape}")
    e = np.zeros(lm.shape, np.uint8)
    e[:, :-1] |= lm[:, :-1] != lm[:, 1:]
    e[:-1, :] |= lm[:-1, :] != lm[1:, :]
    return e


def decode_normals(rgb: np.ndarray) -> np.ndarray:
    """Normals (H, W, 3) float32 from an 8-bit RGB encoding ``n = v / 255 * 2 - 1``.

    A pixel of value (0, 0, 0) is invalid (all-zero vector), as is a degenerate one
    (length < 0.5 after decoding, never the encoding of a unit vector); the others are
    renormalised to unit length.
    """
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] < 3:
        raise ValueError(f"normals are encoded as RGB (H, W, 3), got shape {rgb.shape}")
    rgb = rgb[..., :3]
    n = rgb.astype(np.float32) / 255.0 * 2.0 - 1.0
    norm = np.linalg.norm(n, axis=-1)
    invalid = np.all(rgb == 0, axis=-1) | (norm < 0.5)
    n /= np.where(invalid, 1.0, norm)[..., None]
    n[invalid] = 0.0
    return n.astype(np.float32)


# ------------------------------------------------------------------ PASCAL-MT's files
# One reader per kind of file, shared by PascalMT.load and ``ctn import``.


def _open(path: Path) -> Image.Image:
    if not path.is_file():
        raise _missing("file", path)
    try:
        img = Image.open(path)
        img.load()
        return img
    except Exception as e:
        raise DatasetError(f"cannot read image {path}: {e}") from None


def read_index_map(path: str | os.PathLike, num_classes: int) -> np.ndarray:
    """A class-index image (PNG or TIFF, mode P or L) as (H, W) uint8: values
    0..num_classes - 1 or 255 (ignore); any other value is a :class:`DatasetError`."""
    path = Path(path)
    img = _open(path)
    if img.mode not in ("P", "L"):
        raise DatasetError(f"{path}: expected a class-index image (mode P or L), got mode {img.mode}")
    arr = np.asarray(img, dtype=np.uint8)
    bad = (arr > num_classes - 1) & (arr != IGNORE)
    if bad.any():
        raise DatasetError(f"{path}: class value {int(arr[bad][0])} is not 0..{num_classes - 1} or 255")
    return arr


def read_saliency_png(path: str | os.PathLike) -> np.ndarray:
    """A ``sal_distill`` PNG as (H, W) uint8: ``png / 255 > 0.5`` (grayscale; RGB is
    converted to luminance), 255 where an alpha channel is 0."""
    path = Path(path)
    img = _open(path)
    sal = (np.asarray(img.convert("L"), dtype=np.float32) / 255.0 > 0.5).astype(np.uint8)
    if img.mode in ("LA", "RGBA", "PA") or "transparency" in img.info:  # alpha 0 = ignore
        sal[np.asarray(img.convert("RGBA"))[..., 3] == 0] = IGNORE
    return sal


def read_normals_png(path: str | os.PathLike) -> np.ndarray:
    """A ``normals_distill`` PNG (RGB) as (H, W, 3) float32: :func:`decode_normals`."""
    path = Path(path)
    img = _open(path)
    if img.mode not in ("RGB", "RGBA"):
        raise DatasetError(f"{path}: expected an RGB PNG, got mode {img.mode}")
    return decode_normals(np.asarray(img))


def read_labelmap(path: str | os.PathLike) -> np.ndarray:
    """PASCAL-Context's 459-class ``LabelMap`` of ``pascal-context/trainval/<id>.mat``."""
    path = Path(path)
    mat = _loadmat(path)
    if "LabelMap" not in mat:
        raise DatasetError(f"{path}: no 'LabelMap' variable")
    lm = np.asarray(mat["LabelMap"])
    if lm.ndim != 2:
        raise DatasetError(f"{path}: LabelMap is not 2-D (shape {lm.shape})")
    return lm


def _nearest_resize(arr: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    h, w = shape
    ys = np.minimum(((np.arange(h) + 0.5) * arr.shape[0] / h).astype(np.intp), arr.shape[0] - 1)
    xs = np.minimum(((np.arange(w) + 0.5) * arr.shape[1] / w).astype(np.intp), arr.shape[1] - 1)
    return np.ascontiguousarray(arr[ys][:, xs])


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
            raise _missing("PASCAL-MT root folder", self.root)
        self._require_dir(self.root / "JPEGImages")
        if "semseg" in self.tasks:
            dirs = [self.root / "semseg" / "VOC12", self.root / "semseg" / "pascal-context"]
            if not any(d.is_dir() for d in dirs):
                raise DatasetNotFoundError(
                    f"PASCAL-MT folder not found: {dirs[0]} (nor {dirs[1]})", dirs[0])
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
            raise _missing(f"list file of split {self.split!r}", list_file)
        lines = list_file.read_text(encoding="utf-8").splitlines()
        self.ids: list[str] = [s.strip() for s in lines if s.strip()]

    @staticmethod
    def _require_dir(path: Path) -> None:
        if not path.is_dir():
            raise _missing("PASCAL-MT folder", path)

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
        image = np.asarray(_open(self.image_path(image_id)).convert("RGB"), dtype=np.uint8)
        hw = image.shape[:2]
        sample: dict = {"image": image}
        resized: list[str] = []

        def fit(task: str, arr: np.ndarray) -> np.ndarray:
            if arr.shape[:2] != hw:
                resized.append(task)
                return _nearest_resize(arr, hw)
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
                sample["edges"] = edges_from_labelmap(labelmap)
            else:  # the PNG form of an export
                sample["edges"] = fit("edges", read_index_map(edges_png, 2))
        if "saliency" in self.tasks:
            sample["saliency"] = fit("saliency", read_saliency_png(self.root / "sal_distill" / f"{image_id}.png"))
        if "normals" in self.tasks:
            n = fit("normals", read_normals_png(self.root / "normals_distill" / f"{image_id}.png"))
            if self.normals_mask == "nyu":
                keep = np.isin(labelmap, _NYU_LABELS)
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


# ------------------------------------------------------------------- training items


def to_tensors(sample: Mapping, image_id: str) -> dict:
    """Canonical sample (with ``palette``) -> the item dict of tensors (module doc)."""
    image = np.asarray(sample["image"])
    h, w = image.shape[:2]
    if image.dtype == np.uint8:
        img = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().div_(255.0)
    else:
        img = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32))
    item = {"image": img}
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
            np.ascontiguousarray(np.asarray(normals, dtype=np.float32).transpose(2, 0, 1)))
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
    draw_after = False
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
        draw_after = True
    if augment is not None:
        s = augment(s, rng)
    if draw_after:
        real = s["palette"] != NO_TASK
        drawn = rule.palette(shape=real.shape, rng=rng)
        s["palette"] = np.where(real, drawn, NO_TASK).astype(np.uint8)
    return to_tensors(s, image_id)


def _rule(rule) -> Rule | None:
    return None if rule is None else load_rule(rule)


class _ItemDataset(torch.utils.data.Dataset):
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


class SyntheticDataset(_ItemDataset):
    """Scenes of the synthetic world, generated on the fly: item ``i`` is scene
    ``generate(seed, i, size, config)`` with a palette from ``rule`` and ``augment``.

    ``length`` scenes; deterministic per ``(seed, index, epoch)``. ``world`` names a
    world of :data:`composite_tasking.synthetic.WORLDS` (``"shifted"``), ``config`` is a
    :class:`~composite_tasking.synthetic.SceneConfig`; at most one of them, the default
    world when neither.
    """

    def __init__(self, seed: int, length: int, size: int | tuple[int, int] = 256,
                 rule="mosaic", augment: Augment | None = None, config=None,
                 world: str | None = None):  # fmt: skip
        from .synthetic import get_world

        super().__init__(rule, augment, seed)
        if self.rule is None:
            raise ValueError("a SyntheticDataset needs a rule to make palettes")
        if int(length) < 0:
            raise ValueError(f"length must be >= 0, got {length}")
        if config is not None and world is not None:
            raise ValueError("give a SyntheticDataset a world name or a config, not both")
        self.length = int(length)
        self.size = size
        self.config = get_world(world if config is None else config)

    def __len__(self) -> int:
        return self.length

    def shapes(self) -> list[tuple[int, int]]:
        h, w = (self.size, self.size) if isinstance(self.size, int) else self.size
        return [(int(h), int(w))] * self.length

    def sample(self, index: int) -> dict:
        """The canonical (not augmented) sample of item ``index``."""
        from .synthetic import generate

        return generate(self.seed, self._check_index(index), self.size, self.config)

    def __getitem__(self, index: int) -> dict:
        index = self._check_index(index)
        return prepare_item(self.sample(index), self.rule, self.augment, self.rng(index),
                            f"synthetic-{self.seed}-{index}")  # fmt: skip


class PascalMTDataset(_ItemDataset):
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


class StoreDataset(_ItemDataset):
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

    def __init__(self, store_path: str | os.PathLike, rule=None, augment: Augment | None = None,
                 seed: int = 0, ids: Sequence[str] | None = None, checked_only: bool = False):  # fmt: skip
        from .store import LabelStore
        from .store.location import locate

        super().__init__(rule, augment, seed)
        #: labels only at the pixels a person checked (:meth:`LabelStore.checked_masks`):
        #: ignore (normals: zero) elsewhere, so a loss or a score sees nothing else
        self.checked_only = bool(checked_only)
        self.store_path = locate(store_path)  # a Path, or an object store's URL (store.location)
        if not self.store_path.exists():
            raise _missing("label store", self.store_path)
        store = LabelStore(self.store_path, mode="r")
        available = store.ids()
        if ids is None:
            self.ids = list(available)
        else:
            missing = [i for i in ids if i not in set(available)]
            if missing:
                raise DatasetError(f"image(s) {missing[:5]} not in label store {self.store_path}")
            self.ids = list(ids)
        self._store = None  # opened lazily in each process
        self._shapes = None

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_store"] = None
        return state

    @property
    def store(self):
        if self._store is None:
            from .store import LabelStore

            self._store = LabelStore(self.store_path, mode="r")
        return self._store

    def __len__(self) -> int:
        return len(self.ids)

    def shapes(self) -> list[tuple[int, int]]:
        """From each image's attributes (``shape``): no pixels are read."""
        if self._shapes is None:
            records = self.store.image_records(complete_only=False)  # one pass over the store
            self._shapes = [tuple(int(v) for v in records[i]["shape"]) for i in self.ids]
        return self._shapes

    def sample(self, index: int) -> dict:
        """The canonical sample of item ``index``, labels masked by validity."""
        image_id = self.ids[self._check_index(index)]
        from .images import ImageReadError

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


def check_sources(store_path: str | os.PathLike, ids: Sequence[str] | None = None) -> None:
    """Refuse a label store whose images ``ids`` (default: all) stored by reference have
    a file that is missing or no longer the one labelled
    (:meth:`~composite_tasking.store.LabelStore.source_problem`: the file's size and
    mtime against the recorded ones, its sha256 when they differ): their labels belong
    to another picture. :class:`DatasetError` (:class:`DatasetNotFoundError` when the
    files are all missing) names the store, the first such image and its file, and how
    many there are. ``ctn evaluate`` and ``ctn finetune`` call it before anything runs;
    nothing is skipped (a run on the rest would score or train on fewer images than
    asked, unnoticed)."""
    from .store import LabelStore
    from .store.sources import STATE_REASONS

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


def training_ids(store_path: str | os.PathLike, select: str = "corrected", required: bool = True) -> list[str]:
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
    from .store import LabelStore
    from .store.location import locate

    path = locate(store_path)
    if not path.exists():
        raise _missing("label store", path)
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


def check_stored_palettes(store_path: str | os.PathLike, rule, ids: Sequence[str] | None = None,
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
    from .store import LabelStore

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


def batches_by_shape(shapes: Sequence[tuple[int, int]], batch_size: int) -> list[list[int]]:
    """Indices ``0..len(shapes)-1`` in batches of at most ``batch_size`` whose items share
    one (H, W): the shapes in the order they first appear, each one's items in order.
    Items of one size give exactly the batches of ``DataLoader(batch_size=...)``."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i, shape in enumerate(shapes):
        groups.setdefault(tuple(shape), []).append(i)
    b = max(1, int(batch_size))
    return [idx[k:k + b] for idx in groups.values() for k in range(0, len(idx), b)]
