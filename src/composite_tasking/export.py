"""Export a label store to files other tools read: PASCAL-MT's layout, PNG or TIFF.

``ctn export STORE OUT --format pascal-mt|png|tiff`` (docs/export.md) and
:func:`export_store` write the labels of a :class:`~composite_tasking.store.LabelStore`
as one file per image and task, with the images beside them, so that a trainer or a
viewer that knows nothing of zarr reads them.

What is exported (``select``)
-----------------------------

Only completely written images; per task and pixel:

==========  ==================================================================================
select      labels written (everything else is ignore: 255, normals the zero vector)
==========  ==================================================================================
checked     (default) the pixels a person checked (:meth:`LabelStore.checked_masks`): every
            labelled pixel of a ``reviewed`` or ``ground-truth`` task, the corrected pixels
            of a ``corrected`` task (its correction mask; all of them when it has none),
            nothing of a ``pseudo`` task. A corrected task's *unchecked* pixels are 255, so
            a trainer never learns a pseudo-label nobody looked at.
corrected   every labelled pixel of the tasks a person touched (``corrected``, ``reviewed``,
            ``ground-truth``), a corrected task's unchecked pseudo-labels included
reviewed    every labelled pixel of ``reviewed`` and ``ground-truth`` tasks only
all         every labelled pixel, pseudo-labels included (a pseudo-label only where the
            image's palette asked for its task: :attr:`StoredSample.valid`)
==========  ==================================================================================

A task with no selected pixel in an image counts as absent there; an image with no
selected pixel of any task is not exported (``ExportSummary.unselected``).

Encodings
---------

Every class map (``semseg`` 0..20, ``parts`` 0..6, ``edges`` and ``saliency`` 0/1) is a
single-channel uint8 file holding the label values themselves, 255 = ignore; with
``color=True`` it is a palette image (PNG mode ``P``) with the same index values and the
standard PASCAL VOC colour map (``semseg``, ``parts``) or black / white (``edges``,
``saliency``), 255 in the VOC void colour (224, 224, 192). Normals are RGB PNGs of
``round((n + 1) / 2 * 255)``, invalid = (0, 0, 0) (PASCAL-MT's ``normals_distill``
encoding; float32 (H, W, 3) TIFFs with ``format="tiff"``, invalid = 0). The folder layout
of each format is :data:`LAYOUTS`; PASCAL-MT's own files cannot hold every task (parts
are PASCAL-Part ``.mat`` structs, edges are derived from PASCAL-Context's 459-class maps,
saliency has no ignore value), so the export writes PNG forms the PASCAL-MT loader of
this package (:class:`composite_tasking.datasets.PascalMT`) reads: ``human_parts/<id>.png``
and ``edges/<id>.png`` (class maps as above) and ``sal_distill/<id>.png`` as grayscale
0 / 255 with an alpha channel, 0 on ignored pixels, when it has some (other PASCAL-MT
loaders drop the alpha: ignored pixels read as background). ``ctn-export.json`` at the
root (:data:`MANIFEST`) says what was exported from where, with each image's
provenance; the loader takes it as the sign that the normals are already masked.

Nothing is left half written: the export is made in a hidden folder beside ``out`` and
renamed into place when complete.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from PIL import Image

from .__about__ import __version__
from .images import ImageReadError
from .store import (
    CHECKED_PROVENANCES,
    PERSON_PROVENANCES,
    LabelStore,
    StoredSample,
    StoreError,
)
from .store.location import Remote
from .tasks import IGNORE, TASK_NAMES, get_task

__all__ = [
    "EXPORT_FORMAT",
    "FORMATS",
    "LAYOUTS",
    "MANIFEST",
    "SELECTS",
    "ExportError",
    "ExportSummary",
    "encode_normals",
    "export_store",
    "read_manifest",
    "voc_colormap",
]

#: export formats
FORMATS = ("pascal-mt", "png", "tiff")
#: what an export takes of each image (module doc)
SELECTS = ("checked", "corrected", "reviewed", "all")
#: the file at the root of every export that describes it
MANIFEST = "ctn-export.json"
#: ``format`` of :data:`MANIFEST`
EXPORT_FORMAT = "ctn-export"
EXPORT_FORMAT_VERSION = 1

#: format -> "images" or task -> folder (relative to ``out``), file suffix
LAYOUTS: dict[str, dict[str, tuple[str, str]]] = {
    "pascal-mt": {
        "images": ("JPEGImages", ".jpg"),
        "semseg": ("semseg/VOC12", ".png"),
        "parts": ("human_parts", ".png"),
        "edges": ("edges", ".png"),
        "saliency": ("sal_distill", ".png"),
        "normals": ("normals_distill", ".png"),
    },
    "png": {"images": ("images", ".png"), **{t: (t, ".png") for t in TASK_NAMES}},
    "tiff": {"images": ("images", ".tif"), **{t: (t, ".tif") for t in TASK_NAMES}},
}
#: the list of ids of a PASCAL-MT export: ``ImageSets/Context/<split>.txt``
SPLIT_DIR = "ImageSets/Context"
#: JPEG quality of images re-encoded for PASCAL-MT (no chroma subsampling)
JPEG_QUALITY = 95
#: colour of 255 (ignore) in colour maps: PASCAL VOC's void colour
VOID_RGB = (224, 224, 192)

Progress = Callable[[int, int], None]


class ExportError(ValueError):
    """An export that cannot be made as asked; nothing was written."""


def voc_colormap(n: int = 256) -> np.ndarray:
    """The standard PASCAL VOC colour map, (n, 3) uint8 (VOC devkit ``labelcolormap``:
    the bits of the index spread over R, G, B from the most significant bit down)."""
    cmap = np.zeros((n, 3), np.uint8)
    for i in range(n):
        c, rgb = i, [0, 0, 0]
        for j in range(8):
            for k in range(3):
                rgb[k] |= ((c >> k) & 1) << (7 - j)
            c >>= 3
        cmap[i] = rgb
    return cmap


def _binary_colormap() -> np.ndarray:
    cmap = np.zeros((256, 3), np.uint8)
    cmap[1] = 255
    cmap[IGNORE] = VOID_RGB
    return cmap


#: task -> colour map of its palette images (``color=True``)
COLORMAPS = {"semseg": voc_colormap(), "parts": voc_colormap(),
             "edges": _binary_colormap(), "saliency": _binary_colormap()}  # fmt: skip


def encode_normals(normals: np.ndarray) -> np.ndarray:
    """Normals (H, W, 3) float -> uint8 RGB ``round((n + 1) / 2 * 255)``; all-zero
    (invalid) vectors -> (0, 0, 0). (No unit vector encodes to (0, 0, 0).)"""
    n = np.asarray(normals, np.float32)
    rgb = np.clip(np.round((n + 1.0) / 2.0 * 255.0), 0, 255).astype(np.uint8)
    rgb[~np.any(n != 0, axis=-1)] = 0
    return rgb


def read_manifest(root: str | os.PathLike) -> dict | None:
    """The :data:`MANIFEST` of an export folder, or None when ``root`` is not one."""
    path = Path(root) / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("format") == EXPORT_FORMAT else None


@dataclass
class ExportSummary:
    """What :func:`export_store` did."""

    out: Path
    format: str
    select: str
    #: ids of the exported images, in order
    images: list[str] = field(default_factory=list)
    #: task -> number of images with labels of it
    tasks: dict[str, int] = field(default_factory=dict)
    #: (id, reason): images that could not be exported (their image file is missing, ...)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    #: complete images with nothing ``select`` takes (e.g. only pseudo-labels under checked)
    unselected: list[str] = field(default_factory=list)
    #: images the store holds incompletely written (an interrupted write): left out
    incomplete: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no image had to be skipped."""
        return not self.skipped

    def lines(self) -> list[str]:
        """The summary a person reads: one line, then one per skipped image."""
        per_task = ", ".join(f"{t} {n}" for t, n in self.tasks.items()) or "no task"
        text = (f"exported {len(self.images)} image(s) to {self.out} ({self.format}, select "
                f"{self.select}): {per_task}; skipped {len(self.skipped)}")  # fmt: skip
        if self.unselected:
            text += f"; {len(self.unselected)} with nothing selected by --select {self.select}"
        if self.incomplete:
            text += f"; {len(self.incomplete)} incompletely written (left out)"
        return [text] + [f"  skipped {i}: {why}" for i, why in self.skipped]


# ------------------------------------------------------------------------ selection


def _selected_masks(store: LabelStore, s: StoredSample, select: str, tasks: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Task -> bool (H, W): the pixels ``select`` takes of each task (only tasks with some)."""
    if select == "checked":
        masks = store.checked_masks(s.image_id, s)
    else:
        keep = {"all": None, "corrected": PERSON_PROVENANCES, "reviewed": CHECKED_PROVENANCES}[select]
        masks = {t: v for t, v in s.valid.items() if keep is None or s.provenance.get(t, "pseudo") in keep}
    return {t: masks[t] for t in tasks if t in masks and masks[t].any()}


def _masked(task: str, arr: np.ndarray, mask: np.ndarray) -> np.ndarray:
    if task == "normals":
        return np.where(mask[..., None], arr, np.float32(0)).astype(np.float32)
    return np.where(mask, arr, np.uint8(IGNORE)).astype(np.uint8)


def _empty(task: str, shape: tuple[int, int]) -> np.ndarray:
    """An all-ignore map (PASCAL-MT needs a file of every task for every image)."""
    if task == "normals":
        return np.zeros((*shape, 3), np.float32)
    return np.full(shape, IGNORE, np.uint8)


# --------------------------------------------------------------------------- images


def _same_jpeg(store: LabelStore, s: StoredSample, image: np.ndarray) -> Path | None:
    """The image's source file when it is a JPEG that decodes (as PASCAL-MT loaders
    decode it: no EXIF rotation) to exactly ``image``: copied, not re-encoded."""
    path = store.source_file(s)
    if not isinstance(path, Path) or path.suffix.lower() not in (".jpg", ".jpeg"):  # (an object: re-encoded)
        return None
    try:
        with Image.open(path) as im:
            if im.format != "JPEG":
                return None
            pixels = np.asarray(im.convert("RGB"))
    except (OSError, ValueError):
        return None
    return path if pixels.shape == image.shape and np.array_equal(pixels, image) else None


# --------------------------------------------------------------------------- writers


def _save(img: Image.Image, path: Path, fmt: str) -> None:
    if fmt == "tiff":
        img.save(path, format="TIFF", compression="tiff_adobe_deflate")
    else:
        img.save(path, format="PNG", optimize=False, compress_level=6)


def _write_class_map(path: Path, task: str, arr: np.ndarray, fmt: str, color: bool) -> None:
    img = Image.fromarray(np.ascontiguousarray(arr, np.uint8), mode="L")
    if color:
        img = Image.frombytes("P", img.size, img.tobytes())  # the same bytes as indices
        img.putpalette(COLORMAPS[task].ravel().tolist())
    _save(img, path, fmt)


def _write_pascal_saliency(path: Path, arr: np.ndarray) -> None:
    """PASCAL-MT's sal_distill form: grayscale 0 / 255; LA with alpha 0 on ignore."""
    gray = np.where(arr == 1, np.uint8(255), np.uint8(0))
    ignore = arr == IGNORE
    if ignore.any():
        alpha = np.where(ignore, np.uint8(0), np.uint8(255))
        img = Image.fromarray(np.ascontiguousarray(np.stack([gray, alpha], -1)), mode="LA")
    else:
        img = Image.fromarray(gray, mode="L")
    _save(img, path, "png")


def _write_normals(path: Path, normals: np.ndarray, fmt: str) -> None:
    if fmt == "tiff":
        import tifffile

        tifffile.imwrite(path, np.ascontiguousarray(normals, np.float32), photometric="rgb",
                         compression="zlib")  # fmt: skip
    else:
        _save(Image.fromarray(encode_normals(normals), mode="RGB"), path, fmt)


def _write_label(path: Path, task: str, arr: np.ndarray, fmt: str, color: bool) -> None:
    if task == "normals":
        _write_normals(path, arr, fmt)
    elif task == "saliency" and fmt == "pascal-mt":
        _write_pascal_saliency(path, arr)
    else:
        _write_class_map(path, task, arr, fmt, color)


def _write_image(path: Path, image: np.ndarray, fmt: str, jpeg_source: Path | None) -> str:
    """Write the image; returns how (for the manifest)."""
    if fmt == "pascal-mt":
        if jpeg_source is not None:
            shutil.copyfile(jpeg_source, path)
            return "copied"
        Image.fromarray(image, mode="RGB").save(path, format="JPEG", quality=JPEG_QUALITY, subsampling=0)
        return f"jpeg-q{JPEG_QUALITY}"
    _save(Image.fromarray(image, mode="RGB"), path, fmt)
    return "lossless"


# --------------------------------------------------------------------- the out folder


def _check_out(out: Path, store_path: Path | Remote, overwrite: bool) -> None:
    """Refuse an ``out`` that would lose data: a file, a non-empty folder without
    ``overwrite``, a non-empty folder that is not an earlier export, the store or a
    folder holding it."""
    o, s = out.resolve(), store_path.resolve()
    if isinstance(s, Path) and (o == s or s in o.parents or o in s.parents):  # (a store in a bucket is apart)
        raise ExportError(f"{out}: the export cannot be written into, onto or around the label store "
                          f"{store_path}; choose another folder")  # fmt: skip
    if os.path.lexists(out) and not out.is_dir():
        raise ExportError(f"{out} exists and is not a folder; choose another path or remove it")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise ExportError(f"{out} exists and is not empty; pass --overwrite (overwrite=True) to "
                              "replace an earlier export, or choose another folder")  # fmt: skip
        if read_manifest(out) is None:
            raise ExportError(f"{out} is not empty and is not an earlier export (it has no {MANIFEST}); "
                              "it is left as it is: choose another folder or empty it yourself")  # fmt: skip


def _make_parents(folder: Path) -> list[Path]:
    """Create ``folder`` and missing parents; returns those created, deepest first."""
    made = []
    p = folder
    while not p.exists():
        made.append(p)
        p = p.parent
    folder.mkdir(parents=True, exist_ok=True)
    return made


def _new_folder(beside: Path, what: str) -> Path:
    """A new hidden folder beside ``beside`` (made with the umask's permissions, unlike
    ``tempfile.mkdtemp``'s 0700: it becomes the export)."""
    while True:
        path = beside.parent / f".{beside.name}.ctn-export-{what}-{secrets.token_hex(4)}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue


def _put_in_place(tmp: Path, out: Path) -> None:
    """Rename the finished export onto ``out`` (an empty folder or an earlier export)."""
    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()
    if not out.exists():
        os.replace(tmp, out)
        return
    old = _new_folder(out, "old")
    os.replace(out, old / "x")
    try:
        os.replace(tmp, out)
    except OSError:
        os.replace(old / "x", out)
        raise
    shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------------------- export


def _parse_tasks(tasks: Iterable[str] | str | None) -> tuple[str, ...]:
    if tasks is None:
        return TASK_NAMES
    if isinstance(tasks, str):
        tasks = [t for t in tasks.split(",") if t.strip()]
    try:
        chosen = {get_task(t).name for t in tasks}
    except KeyError as e:
        raise ExportError(e.args[0]) from None
    if not chosen:
        raise ExportError(f"no task chosen; tasks: {', '.join(TASK_NAMES)}")
    return tuple(t for t in TASK_NAMES if t in chosen)


def export_store(
    store: str | os.PathLike | LabelStore,
    out: str | os.PathLike,
    format: str = "pascal-mt",
    select: str = "checked",
    color: bool = False,
    overwrite: bool = False,
    tasks: Iterable[str] | str | None = None,
    progress: Progress | None = None,
    split: str = "train",
) -> ExportSummary:
    """Export the complete images of a label store to ``out`` (module doc, docs/export.md).

    ``format``: one of :data:`FORMATS`; ``select``: one of :data:`SELECTS`; ``color``:
    class maps as palette images (same index values); ``tasks``: names (or a
    comma-separated string) of the tasks to export, default all; ``split``: the name of
    the PASCAL-MT list file (``ImageSets/Context/<split>.txt``). ``out`` must not exist,
    or be empty, or (with ``overwrite``) be an earlier export, which is replaced.
    ``progress(done, total)`` is called after each image.

    Raises :class:`ExportError` (or :class:`~composite_tasking.store.StoreError` for a
    store that cannot be opened) before anything is written, also when no image has
    anything ``select`` takes; an error of the file system while writing leaves nothing
    behind (the export is assembled in a hidden folder beside ``out``). Images that
    cannot be exported (an image file stored by reference and missing) are skipped and
    listed in the summary.
    """
    if format not in FORMATS:
        raise ExportError(f"unknown export format {format!r}; formats: {', '.join(FORMATS)}")
    if select not in SELECTS:
        raise ExportError(f"unknown selection {select!r}; use {', '.join(SELECTS)}")
    if not split or split != split.strip() or any(c in split for c in "/\\"):
        raise ExportError(f"split {split!r} cannot name a list file; use e.g. train or val")
    chosen = _parse_tasks(tasks)
    store = store if isinstance(store, LabelStore) else LabelStore(store, mode="r")
    out = Path(out)
    _check_out(out, store.path, overwrite)
    if format == "tiff" and "normals" in chosen:
        try:
            import tifffile  # noqa: F401
        except ImportError:
            raise ExportError("--format tiff writes the normals as float32 TIFFs with tifffile, which is "
                              "not installed: pip install tifffile, or leave normals out "
                              "(--tasks semseg,parts,edges,saliency)") from None  # fmt: skip

    records = store.image_records(complete_only=False)
    ids = sorted(i for i, r in records.items() if r.get("complete") is True)
    summary = ExportSummary(out=out, format=format, select=select,
                            incomplete=sorted(i for i in records if i not in set(ids)))  # fmt: skip
    # which images have something to export: from the attributes alone where they tell
    # (a pseudo-only image under checked / corrected / reviewed), else decided on reading
    wanted = []
    for i in ids:
        prov = records[i].get("provenance") or {}
        has = [t for t in chosen if t in prov]
        keep = {"all": None, "checked": PERSON_PROVENANCES, "corrected": PERSON_PROVENANCES,
                "reviewed": CHECKED_PROVENANCES}[select]  # fmt: skip
        if any(keep is None or prov[t] in keep for t in has):
            wanted.append(i)
        else:
            summary.unselected.append(i)
    if not wanted:
        what = "" if select == "all" else (
            " (pass --select all to export pseudo-labels too)" if select in ("checked", "corrected")
            else " (--select checked takes corrected pixels too)")  # fmt: skip
        raise ExportError(f"nothing to export: label store {store.path} holds {len(ids)} complete image(s), "
                          f"none with {', '.join(chosen)} labels that --select {select} takes{what}")  # fmt: skip

    made = _make_parents(out.parent)
    tmp = _new_folder(out, "new")
    try:
        manifest_images = _export_images(store, tmp, wanted, summary, format, select, color, chosen, progress)
        if not summary.images:
            raise ExportError(f"nothing exported from {store.path}: every selected image was skipped: "
                              + "; ".join(f"{i}: {why}" for i, why in summary.skipped[:5]))  # fmt: skip
        if format == "pascal-mt":
            (tmp / SPLIT_DIR).mkdir(parents=True)
            (tmp / SPLIT_DIR / f"{split}.txt").write_text("".join(f"{i}\n" for i in summary.images),
                                                          encoding="utf-8")  # fmt: skip
        manifest = {
            "format": EXPORT_FORMAT,
            "format_version": EXPORT_FORMAT_VERSION,
            "export_format": format,
            "select": select,
            "color": bool(color),
            "split": split if format == "pascal-mt" else None,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "exporter": f"napari-composite-tasking {__version__}",
            "store": {"path": str(store.path.resolve()), "attrs": store.attrs},
            "layout": {
                k: f"{d}/<id>{suffix}"
                for k, (d, suffix) in LAYOUTS[format].items()
                if k == "images" or k in (chosen if format == "pascal-mt" else summary.tasks)
            },
            "ignore": IGNORE,
            "normals": (
                "float32 (H, W, 3), invalid = 0"
                if format == "tiff"
                else "RGB uint8 round((n + 1) / 2 * 255), invalid = (0, 0, 0)"
            ),
            "normals_masked": True,
            "tasks": summary.tasks,
            "images": manifest_images,
            "skipped": dict(summary.skipped),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        _put_in_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for p in made:  # parents this call created, deepest first
            try:
                p.rmdir()
            except OSError:
                break
        raise
    return summary


def _export_images(store: LabelStore, root: Path, ids: list[str], summary: ExportSummary, fmt: str,
                   select: str, color: bool, chosen: tuple[str, ...], progress: Progress | None) -> dict:  # fmt: skip
    """Write every image of ``ids`` under ``root``; fills ``summary``; returns the
    manifest's per-image records."""
    layout = LAYOUTS[fmt]
    exported: dict[str, dict] = {}
    for done, image_id in enumerate(ids, 1):
        record = _export_one(store, root, image_id, summary, fmt, select, color, chosen)
        if record is not None:
            exported[image_id] = record
            summary.images.append(image_id)
            for task in record["tasks"]:
                summary.tasks[task] = summary.tasks.get(task, 0) + 1
        if progress is not None:
            progress(done, len(ids))
    summary.unselected.sort()
    summary.tasks = {t: summary.tasks[t] for t in TASK_NAMES if t in summary.tasks}
    if fmt == "pascal-mt":  # a PASCAL-MT loader needs a file of every task for every image
        for image_id in summary.images:
            shape = tuple(exported[image_id]["shape"])
            for task in chosen:
                if task not in exported[image_id]["tasks"]:
                    folder, suffix = layout[task]
                    (root / folder).mkdir(parents=True, exist_ok=True)
                    _write_label(root / folder / f"{image_id}{suffix}", task, _empty(task, shape), fmt, color)
    return exported


def _export_one(store: LabelStore, root: Path, image_id: str, summary: ExportSummary, fmt: str,
                select: str, color: bool, chosen: tuple[str, ...]) -> dict | None:  # fmt: skip
    """Write one image and its selected labels; its manifest record, or None when it
    has nothing selected (``summary.unselected``) or cannot be read (``summary.skipped``)."""
    try:
        s = store.read_sample(image_id)
        masks = _selected_masks(store, s, select, chosen)
        if not masks:
            summary.unselected.append(image_id)
            return None
        image = store.image_pixels(s)
    except ImageReadError as e:
        summary.skipped.append((image_id, str(e)))
        return None
    except (StoreError, KeyError, ValueError, OSError) as e:  # an unreadable image group
        summary.skipped.append((image_id, f"cannot read it from the store: {e}"))
        return None
    layout = LAYOUTS[fmt]
    folder, suffix = layout["images"]
    (root / folder).mkdir(parents=True, exist_ok=True)
    jpeg = _same_jpeg(store, s, image) if fmt == "pascal-mt" else None
    how = _write_image(root / folder / f"{image_id}{suffix}", image, fmt, jpeg)
    for task, mask in masks.items():
        folder, suffix = layout[task]
        (root / folder).mkdir(parents=True, exist_ok=True)
        _write_label(root / folder / f"{image_id}{suffix}", task, _masked(task, s.labels[task], mask), fmt, color)
    return {"shape": list(s.shape), "image": how, "source": s.image_source,
            "tasks": {t: s.provenance.get(t, "pseudo") for t in masks},
            "pixels": {t: int(m.sum()) for t, m in masks.items()}}  # fmt: skip
