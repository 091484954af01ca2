"""PASCAL-MT's facts (the part table, the classes with trusted normals) and one
reader per kind of its files, shared by :class:`.pascal.PascalMT` and ``ctn import``."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from ..tasks import IGNORE, SEMSEG_CLASSES, get_task
from .errors import DatasetError, not_found

__all__ = ["PASCAL_PART_TO_PARTS", "PERSON_CLASS_IND", "NORMALS_NYU_CONTEXT_LABELS", "NYU_LABELS", "read_pascal_parts",
           "edges_from_labelmap", "decode_normals", "open_image", "read_index_map", "read_saliency_png",
           "read_normals_png", "read_labelmap", "nearest_resize"]  # fmt: skip

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

NYU_LABELS = np.array(sorted(NORMALS_NYU_CONTEXT_LABELS), dtype=np.int64)
_PART_IDS = {name: np.uint8(get_task("parts").classes.index(part))
             for name, part in PASCAL_PART_TO_PARTS.items()}  # fmt: skip


def _loadmat(path: Path) -> dict:
    try:
        from scipy.io import loadmat
    except ImportError:  # pragma: no cover - scipy is a dependency of this loader
        raise DatasetError(f"reading {path} needs scipy (pip install scipy)") from None
    if not path.is_file():
        raise not_found("file", path)
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
    if own is None:
        if shape is None:
            raise DatasetError(f"{path}: cannot tell the image size from the annotation; pass shape")
        own = (int(shape[0]), int(shape[1]))
    shape = own
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


def open_image(path: Path) -> Image.Image:
    if not path.is_file():
        raise not_found("file", path)
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
    img = open_image(path)
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
    img = open_image(path)
    sal = (np.asarray(img.convert("L"), dtype=np.float32) / 255.0 > 0.5).astype(np.uint8)
    if img.mode in ("LA", "RGBA", "PA") or "transparency" in img.info:  # alpha 0 = ignore
        sal[np.asarray(img.convert("RGBA"))[..., 3] == 0] = IGNORE
    return sal


def read_normals_png(path: str | os.PathLike) -> np.ndarray:
    """A ``normals_distill`` PNG (RGB) as (H, W, 3) float32: :func:`decode_normals`."""
    path = Path(path)
    img = open_image(path)
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


def nearest_resize(arr: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    h, w = shape
    ys = np.minimum(((np.arange(h) + 0.5) * arr.shape[0] / h).astype(np.intp), arr.shape[0] - 1)
    xs = np.minimum(((np.arange(w) + 0.5) * arr.shape[1] / w).astype(np.intp), arr.shape[1] - 1)
    return np.ascontiguousarray(arr[ys][:, xs])
