"""What a sample must be before it is written: each array checked and converted, in one
pass, with an error naming the image, the key and the problem (nothing is written)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, NoReturn

import numpy as np

from ..tasks import IGNORE, TASK_NAMES, TASKS, get_task
from .format import LABEL_NAMES, MAP_NAMES, NORMALS_TOLERANCE, PROVENANCES, StoreError

# ------------------------------------------------------------------------ validation


@dataclass
class Prepared:
    """A validated sample, ready to write: arrays in storage layout."""

    shape: tuple[int, int]
    image: np.ndarray | None  # (3, H, W) uint8
    labels: dict[str, np.ndarray] = field(default_factory=dict)  # LABEL_NAMES -> (H, W) uint8
    normals: np.ndarray | None = None  # (3, H, W) float32
    maps: dict[str, np.ndarray] = field(default_factory=dict)  # MAP_NAMES -> (H, W) float32


class Checker:
    def __init__(self, image_id: str, verb: str):
        self.image_id = image_id
        self.verb = verb

    def fail(self, key: str, problem: str) -> NoReturn:
        raise StoreError(f"image {self.image_id!r}: {key}: {problem}; nothing was {self.verb}")

    def array(self, key: str, value) -> np.ndarray:
        if not isinstance(value, np.ndarray):
            try:
                value = np.asarray(value)
            except Exception:  # noqa: BLE001
                self.fail(key, f"expected a numpy array, got {type(value).__name__}")
        if value.dtype == object:
            self.fail(key, "expected a numeric numpy array, got dtype object")
        return value

    def shape(self, key: str, arr: np.ndarray, expected: tuple[int, ...], layout: str):
        if arr.shape != expected:
            self.fail(key, f"expected shape {layout} = {expected}, got {arr.shape}")

    def label_map(self, key: str, arr: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
        self.shape(key, arr, hw, "(H, W)")
        if arr.dtype == bool:
            arr = arr.astype(np.uint8)
        if not np.issubdtype(arr.dtype, np.integer):
            self.fail(key, f"expected an integer (uint8) label map, got dtype {arr.dtype}")
        if key == "palette":
            allowed = set(range(len(TASKS) + 1))
            meaning = f"0 (no task) or 1..{len(TASKS)} (task id + 1)"
        else:
            task = get_task(key)
            n = task.num_classes if task.kind == "classes" else 2
            allowed = set(range(n)) | {IGNORE}
            meaning = (f"0..{n - 1} (classes) or {IGNORE} (ignore)" if task.kind == "classes"
                       else f"0 or 1 (thresholded) or {IGNORE} (ignore)")  # fmt: skip
        if arr.size:
            lo, hi = int(arr.min()), int(arr.max())
            if lo < 0 or hi > 255:
                bad = lo if lo < 0 else hi
                self.fail(key, f"values must be {meaning}, found {bad}")
            arr = arr.astype(np.uint8, copy=False)
            ok = np.zeros(256, dtype=bool)
            ok[list(allowed)] = True
            okmask = ok[arr]
            if not okmask.all():
                bad_vals = np.unique(arr[~okmask])
                shown = ", ".join(str(int(v)) for v in bad_vals[:5])
                more = " ..." if bad_vals.size > 5 else ""
                self.fail(key, f"values must be {meaning}, found {shown}{more} "
                               f"at {int((~okmask).sum())} pixel(s)")  # fmt: skip
        return np.ascontiguousarray(arr, dtype=np.uint8)

    def image(self, arr: np.ndarray) -> np.ndarray:
        if arr.ndim != 3 or arr.shape[2] != 3:
            self.fail("image", f"expected an RGB image of shape (H, W, 3), got {arr.shape}")
        if arr.dtype != np.uint8:
            self.fail("image", f"expected dtype uint8, got {arr.dtype}")
        if min(arr.shape[:2]) < 1:
            self.fail("image", f"the image is empty, shape {arr.shape}")
        return arr

    def normals(self, arr: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
        self.shape("normals", arr, hw + (3,), "(H, W, 3)")
        if not np.issubdtype(arr.dtype, np.floating):
            self.fail("normals", f"expected float32 unit vectors, got dtype {arr.dtype}")
        arr = arr.astype(np.float32, copy=False)
        if not np.isfinite(arr).all():
            self.fail("normals", "found NaN or infinite values (mark invalid pixels with an "
                                 "all-zero vector)")  # fmt: skip
        norm = np.linalg.norm(arr, axis=-1)
        bad = (norm != 0) & (np.abs(norm - 1.0) > NORMALS_TOLERANCE)
        if bad.any():
            self.fail("normals", f"{int(bad.sum())} pixel(s) hold vectors that are neither unit "
                                 f"length (within {NORMALS_TOLERANCE}) nor all zero (invalid), "
                                 f"e.g. length {float(norm[bad].flat[0]):.4g}")  # fmt: skip
        return np.ascontiguousarray(np.moveaxis(arr, -1, 0))

    def float_map(self, key: str, arr: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
        self.shape(key, arr, hw, "(H, W)")
        if not np.issubdtype(arr.dtype, np.floating):
            self.fail(key, f"expected a float map, got dtype {arr.dtype}")
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        defined = ~np.isnan(arr)
        vals = arr[defined]
        if vals.size and (not np.isfinite(vals).all() or vals.min() < 0 or vals.max() > 1):
            bad = vals[~np.isfinite(vals) | (vals < 0) | (vals > 1)]
            self.fail(key, f"values must be in [0, 1] or NaN (not defined), "
                           f"found {float(bad.flat[0]):.4g}")  # fmt: skip
        return arr

    def provenance(self, provenance, tasks: set[str], required: bool) -> dict[str, str]:
        if provenance is None:
            provenance = {}
        if not isinstance(provenance, Mapping):
            self.fail("provenance", f"expected a mapping task -> one of {list(PROVENANCES)}, "
                                    f"got {type(provenance).__name__}")  # fmt: skip
        out = {}
        for key, value in provenance.items():
            if key == "palette":
                self.fail("provenance", "the palette has no provenance entry; say where it "
                                        "came from with attrs={'palette_origin': ...}")  # fmt: skip
            if key not in TASK_NAMES:
                self.fail("provenance", f"unknown task {key!r}; tasks: {', '.join(TASK_NAMES)}")
            if key not in tasks:
                self.fail("provenance", f"names task {key!r}, but there is no {key!r} map")
            if value not in PROVENANCES:
                self.fail("provenance", f"{key!r} is {value!r}; use one of {list(PROVENANCES)}")
            out[key] = str(value)
        missing = sorted(tasks - set(out), key=TASK_NAMES.index)
        if missing and required:
            self.fail("provenance", f"missing for {', '.join(missing)}; give each task map one "
                                    f"of {list(PROVENANCES)}")  # fmt: skip
        return out


_SAMPLE_KEYS = ("image", "palette", *TASK_NAMES, *MAP_NAMES, "confidence")


def prepare_sample(image_id: str, sample: Mapping, verb: str, *, need_image: bool,
             shape: tuple[int, int] | None = None, allow: tuple[str, ...] = _SAMPLE_KEYS
             ) -> Prepared:  # fmt: skip
    """Check every array of ``sample`` and convert it to its stored layout."""
    chk = Checker(image_id, verb)
    if not isinstance(sample, Mapping):
        raise StoreError(f"image {image_id!r}: a sample is a dict of numpy arrays, "
                         f"got {type(sample).__name__}; nothing was {verb}")  # fmt: skip
    unknown = [k for k in sample if k not in allow]
    if unknown:
        chk.fail(str(unknown[0]), f"unknown key; allowed keys: {', '.join(allow)}")
    entries = {k: v for k, v in sample.items() if v is not None}
    conf = entries.pop("confidence", None)
    if conf is not None:
        if not isinstance(conf, Mapping):
            chk.fail("confidence", "expected a dict task -> (H, W) float map")
        for task, arr in conf.items():
            key = f"confidence_{task}"
            if key not in MAP_NAMES:
                chk.fail("confidence", f"unknown task {task!r}; tasks: {', '.join(TASK_NAMES)}")
            if key in entries:
                chk.fail(key, "given twice (as a key and in 'confidence')")
            if arr is not None:
                entries[key] = arr
    arrays = {k: chk.array(k, v) for k, v in entries.items()}

    image = arrays.get("image")
    if image is not None:
        image = chk.image(image)
    elif need_image:
        chk.fail("image", "the sample has no image; pass store_image=False with image_source "
                          "to store a reference instead")  # fmt: skip
    # the (H, W) every array must share
    if shape is None:
        if image is not None:
            shape = image.shape[:2]
        else:
            for k in ("palette", *TASK_NAMES, *MAP_NAMES):
                if k in arrays:
                    a = arrays[k]
                    if a.ndim < 2 or min(a.shape[:2]) < 1:
                        chk.fail(k, f"expected a 2-D (H, W) map, got shape {a.shape}")
                    shape = a.shape[:2]
                    break
    if shape is None:
        chk.fail("sample", "it holds no image and no map")
    elif image is not None and image.shape[:2] != tuple(shape):
        chk.fail("image", f"expected shape (H, W, 3) = {tuple(shape) + (3,)}, got {image.shape}")
    hw = (int(shape[0]), int(shape[1]))

    out = Prepared(shape=hw, image=None)
    if image is not None:
        out.image = np.ascontiguousarray(np.moveaxis(image, -1, 0))
    for name in LABEL_NAMES:
        if name in arrays:
            out.labels[name] = chk.label_map(name, arrays[name], hw)
    if "normals" in arrays:
        out.normals = chk.normals(arrays["normals"], hw)
    for name in MAP_NAMES:
        if name in arrays:
            out.maps[name] = chk.float_map(name, arrays[name], hw)
    return out


def tasks_of(prep: Prepared) -> set[str]:
    tasks = {k for k in prep.labels if k != "palette"}
    if prep.normals is not None:
        tasks.add("normals")
    return tasks
