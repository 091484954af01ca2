"""Import existing labels into a label store: ``ctn import ROOT STORE`` (docs/export.md, "Import labels").

The layouts are those ``ctn export`` writes (:data:`composite_tasking.export.LAYOUTS`),
read with the PASCAL-MT loader's file readers (:mod:`composite_tasking.datasets`), so a
file means the same to the loader, to ``pascal-mt:ROOT`` training and to an import:

- ``pascal-mt``: ``JPEGImages/<name>.jpg`` and, per task, the first file found of
  :data:`PASCAL_MT_FILES` (``semseg/VOC12`` or ``semseg/pascal-context``,
  ``human_parts`` PNG or PASCAL-Part ``.mat``, ``edges`` PNG or PASCAL-Context's
  ``LabelMap``, ``sal_distill``, ``normals_distill``). As the loader does, distilled
  normals hold only on the NYU-compatible Context classes (the ``LabelMap`` masks them)
  unless the folder is a ``ctn export`` (its normals are masked already).
- ``png`` / ``tiff``: ``images/`` (any image ``ctn label`` reads, in subfolders too) and
  a folder per task, named by the task or an alias (``semseg`` or ``seg``, ``parts``,
  ``edges``, ``saliency`` or ``sal``, ``normals``), holding ``.png`` (``.tif`` /
  ``.tiff``) label files at the image's path with its suffix replaced. Class maps hold
  the label values (255 = ignore); normals are RGB PNGs of ``round((n + 1) / 2 * 255)``
  or float32 (H, W, 3) TIFFs (which need ``tifffile``), (0, 0, 0) = invalid.

What an image becomes
---------------------

An image is imported whole or not at all: a label file that cannot be read, is not the
size of its image or holds a value its task does not have skips its image, and the
summary names the file and why (fix it and run the same command again: the images
imported before are recognised). A label file with no image is named and skipped too. A
file without a labelled pixel (all 255; normals all zero: how an export fills a task an
image has no labels of) is no label: the task is left out of the image, as a store does.

Image ids are the ones ``ctn label ROOT/<images folder>`` gives the image files
(:func:`composite_tasking.image_ids.image_ids`, settled against the store), except in a
``ctn export`` (it has ``ctn-export.json``), whose file names are the ids it was exported
under: those come back, so export then import gives the store's own ids. Either way each
image records its file (resolved) as its source, by which ``ctn label`` and
``ctn annotate`` of the same files find it.

``as_="ground-truth"``: provenance ``ground-truth`` for every task, no palette (a person's
work: ``ctn label`` never relabels it; training and export take every labelled pixel).
``as_="pseudo"``: labels to correct, provenance ``pseudo``, with a palette that asks each
pixel for the first task, in the order of ``tasks`` (default: semseg, parts, edges,
saliency, normals), that has a label there. A pseudo-label is defined only where the
palette asks for it, so the labels of later tasks on such a pixel are left out (set to
255 / zero, counted in :attr:`ImportSummary.left_out`); import tasks into separate
stores to correct each everywhere.

An image already in the store with the same labels is left as it is (``unchanged``);
with other labels it is skipped and named unless ``overwrite``, which replaces it whole
(never a task-by-task mix); pseudo-labels never replace an image a person had a hand in.
The store is created only when the first image is written.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .datasets import (
    NORMALS_NYU_CONTEXT_LABELS,
    DatasetError,
    edges_from_labelmap,
    read_index_map,
    read_labelmap,
    read_normals_png,
    read_pascal_parts,
    read_saliency_png,
)
from .export import FORMATS, LAYOUTS, read_manifest
from .image_ids import image_ids
from .images import SUPPORTED_SUFFIXES, ImageReadError, read_image, scan_inputs
from .store import LabelStore, StoreError, validate_image_id
from .store.format import NORMALS_TOLERANCE
from .tasks import IGNORE, NO_TASK, TASK_NAMES, get_task

__all__ = ["AS", "IMPORT_LAYOUTS", "PASCAL_MT_FILES", "ImportLabelsError", "ImportSummary", "detect_layout",
           "import_labels"]  # fmt: skip

#: what imported labels become: their provenance
AS = ("ground-truth", "pseudo")
#: ``layout`` values (``auto``: :func:`detect_layout`)
IMPORT_LAYOUTS = ("auto", *FORMATS)
LABELMAP_DIR = "pascal-context/trainval"
#: pascal-mt: task -> where the label of image ``<name>`` may be, the first found wins
#: (folder, suffix); the loader's order (:class:`composite_tasking.datasets.PascalMT`)
PASCAL_MT_FILES: dict[str, tuple[tuple[str, str], ...]] = {
    "semseg": ((LAYOUTS["pascal-mt"]["semseg"][0], ".png"), ("semseg/pascal-context", ".png")),
    "parts": ((LAYOUTS["pascal-mt"]["parts"][0], ".png"), (LAYOUTS["pascal-mt"]["parts"][0], ".mat")),
    "edges": ((LAYOUTS["pascal-mt"]["edges"][0], ".png"), (LABELMAP_DIR, ".mat")),
    "saliency": ((LAYOUTS["pascal-mt"]["saliency"][0], ".png"),),
    "normals": ((LAYOUTS["pascal-mt"]["normals"][0], ".png"),),
}
#: png / tiff: the suffixes of label files
SUFFIXES = {"png": (".png",), "tiff": (".tif", ".tiff")}

Progress = Callable[[int, int], None]


class ImportLabelsError(ValueError):
    """An import that cannot be made as asked (a usage error); nothing was written."""


@dataclass
class ImportSummary:
    """What :func:`import_labels` did."""

    root: Path
    store: Path
    layout: str
    as_: str
    #: ids written (new images, and those ``overwrite`` replaced), in order
    imported: list[str] = field(default_factory=list)
    #: of :attr:`imported`, the ids that replaced an image of the store
    replaced: list[str] = field(default_factory=list)
    #: ids already in the store with the same labels: left as they are
    unchanged: list[str] = field(default_factory=list)
    #: task -> number of imported images with labels of it
    tasks: dict[str, int] = field(default_factory=dict)
    #: (file or id, reason): what was not imported and why
    skipped: list[tuple[str, str]] = field(default_factory=list)
    #: image files with no labelled pixel of any chosen task: not imported
    unlabelled: list[str] = field(default_factory=list)
    #: pseudo: task -> labelled pixels left out because an earlier task took them
    left_out: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when nothing had to be skipped."""
        return not self.skipped

    def lines(self) -> list[str]:
        """The summary a person reads: one line, the left-out pixels, the skipped files."""
        per_task = ", ".join(f"{t} {n}" for t, n in self.tasks.items()) or "no task"
        text = (f"imported {len(self.imported)} image(s) into {self.store} ({self.layout}, as {self.as_}): "
                f"{per_task}; skipped {len(self.skipped)}")  # fmt: skip
        if self.replaced:
            text += f"; {len(self.replaced)} replaced (--overwrite)"
        if self.unchanged:
            text += f"; {len(self.unchanged)} already in the store with these labels"
        if self.unlabelled:
            text += f"; {len(self.unlabelled)} image(s) without labels (not imported)"
        out = [text]
        if self.left_out:
            out.append("pseudo-labels left out where the palette asks for an earlier task (--tasks sets the "
                       "order): " + ", ".join(f"{t} {n} px" for t, n in self.left_out.items()))  # fmt: skip
        return out + [f"  skipped {what}: {why}" for what, why in self.skipped]


@dataclass
class _Item:
    """One image file and its label files (task -> candidates, first wins)."""

    image: Path
    key: str  # the image's path below the images folder, without its suffix
    files: dict[str, list[Path]] = field(default_factory=dict)


# --------------------------------------------------------------------------- the folder


def _parse_tasks(tasks: Iterable[str] | str | None) -> tuple[str, ...]:
    """Task names in the order given (the pseudo palette's order), each once."""
    if tasks is None:
        return TASK_NAMES
    if isinstance(tasks, str):
        tasks = [t for t in tasks.split(",") if t.strip()]
    try:
        chosen = tuple(dict.fromkeys(get_task(t).name for t in tasks))
    except KeyError as e:
        raise ImportLabelsError(e.args[0]) from None
    if not chosen:
        raise ImportLabelsError(f"no task chosen; tasks: {', '.join(TASK_NAMES)}")
    return chosen


def _task_folders(root: Path) -> dict[str, Path]:
    """png / tiff: task -> its folder (named by the task or an alias)."""
    out: dict[str, Path] = {}
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            task = get_task(d.name).name
        except KeyError:
            continue  # images/ and any other folder
        if task in out:
            raise ImportLabelsError(f"{root} has two folders of {task} labels: {out[task].name}, {d.name}; "
                                    "keep one")  # fmt: skip
        out[task] = d
    return out


def _files_below(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and not any(
        part.startswith(".") for part in p.relative_to(folder).parts))  # fmt: skip


def detect_layout(root: str | os.PathLike) -> str:
    """The layout of ``root``: an export's own (its ``ctn-export.json``), ``pascal-mt``
    with ``JPEGImages/``, with ``images/`` ``png`` or ``tiff`` by its label files."""
    root = Path(root)
    manifest = read_manifest(root)
    if manifest is not None and manifest.get("export_format") in FORMATS:
        return manifest["export_format"]
    if (root / LAYOUTS["pascal-mt"]["images"][0]).is_dir():
        return "pascal-mt"
    if (root / "images").is_dir():
        found = {s for d in _task_folders(root).values() for s in (p.suffix.lower() for p in _files_below(d))}
        png, tif = bool(found & set(SUFFIXES["png"])), bool(found & set(SUFFIXES["tiff"]))
        if png and tif:
            raise ImportLabelsError(f"{root} holds PNG and TIFF label files; pass --layout png or --layout tiff")
        return "tiff" if tif else "png"
    raise ImportLabelsError(f"{root} is neither a PASCAL-MT folder (no JPEGImages/) nor a folder of images/ "
                            f"with a folder per task ({', '.join(TASK_NAMES)}); see docs/export.md")  # fmt: skip


def _scan(root: Path, layout: str, chosen: tuple[str, ...], summary: ImportSummary) -> tuple[Path, list[_Item]]:
    """The images folder and its images with their label files; label files without an
    image, and images whose name another shares, go to ``summary.skipped``."""
    images_dir = root / LAYOUTS[layout]["images"][0]
    if not images_dir.is_dir():
        raise ImportLabelsError(f"{root} has no {images_dir.name}/ folder: it is not in the {layout} layout "
                                "(docs/export.md)")  # fmt: skip
    scan = scan_inputs([images_dir], recursive=layout != "pascal-mt")
    summary.skipped += scan.skipped
    by_key: dict[str, list[Path]] = {}
    for f in scan.files:
        assert isinstance(f, Path)  # scan_inputs: local files
        by_key.setdefault(f.relative_to(images_dir).with_suffix("").as_posix(), []).append(f)
    for key, files in by_key.items():
        if len(files) > 1:
            summary.skipped += [(str(f), f"{len(files)} images are named {key} (any suffix): their labels "
                                         "cannot be told apart; rename one") for f in files]  # fmt: skip
    items = {k: _Item(fs[0], k) for k, fs in by_key.items() if len(fs) == 1}
    labels: dict[str, dict[str, list[Path]]] = {t: {} for t in chosen}  # task -> key -> files
    if layout == "pascal-mt":
        for task in chosen:
            for folder, suffix in PASCAL_MT_FILES[task]:
                if not (root / folder).is_dir():
                    continue
                for p in sorted((root / folder).glob(f"*{suffix}")):
                    # a LabelMap is no label of its own: one without an image is not named
                    if p.is_file() and not p.name.startswith(".") and (p.stem in items or folder != LABELMAP_DIR):
                        labels[task].setdefault(p.stem, []).append(p)
    else:
        folders = _task_folders(root)
        for task in chosen:
            for p in _files_below(folders[task]) if task in folders else []:
                if p.suffix.lower() in SUFFIXES[layout]:
                    labels[task].setdefault(p.relative_to(folders[task]).with_suffix("").as_posix(), []).append(p)
                elif p.suffix.lower() in SUPPORTED_SUFFIXES:  # an image of another format (a README is no label)
                    summary.skipped.append((str(p), f"not a {layout} label file ({', '.join(SUFFIXES[layout])}); "
                                                    "--layout says which files are read"))  # fmt: skip
    for task, found in labels.items():
        for key, paths in sorted(found.items()):
            if key in items:
                items[key].files[task] = paths
            elif key not in by_key:
                summary.skipped += [(str(p), f"{task} labels with no image {images_dir.name}/{key}.*") for p in paths]
    return images_dir, [items[k] for k in sorted(items)]


# ------------------------------------------------------------------------------ reading


def _read_normals_tiff(path: Path) -> np.ndarray:
    import tifffile

    try:
        n = np.asarray(tifffile.imread(path))
    except Exception as e:  # tifffile raises several types for broken files
        raise DatasetError(f"{path}: cannot read TIFF: {e}") from None
    if n.ndim != 3 or n.shape[2] != 3 or not np.issubdtype(n.dtype, np.floating):
        raise DatasetError(f"{path}: normals are a float (H, W, 3) TIFF, got {n.dtype} {n.shape}")
    n = n.astype(np.float32)
    norm = np.linalg.norm(n, axis=-1)
    bad = ~np.isfinite(norm) | ((norm != 0) & (np.abs(norm - 1) > NORMALS_TOLERANCE))
    if bad.any():
        raise DatasetError(f"{path}: {int(bad.sum())} pixel(s) hold neither a unit vector nor (0, 0, 0)")
    return n


def _read_label(task: str, path: Path, layout: str, hw: tuple[int, int]) -> np.ndarray:
    """One label file, as the PASCAL-MT loader reads it (its readers)."""
    if path.suffix.lower() == ".mat":
        return edges_from_labelmap(read_labelmap(path)) if task == "edges" else read_pascal_parts(path, shape=hw)
    if task == "normals":
        return _read_normals_tiff(path) if layout == "tiff" else read_normals_png(path)
    if task == "saliency" and layout == "pascal-mt":
        return read_saliency_png(path)
    t = get_task(task)
    return read_index_map(path, t.num_classes if t.kind == "classes" else 2)


def _size_problem(arr: np.ndarray, hw: tuple[int, int], what: str) -> str | None:
    if arr.shape[:2] == hw:
        return None
    return (f"{what} is {arr.shape[0]}x{arr.shape[1]} pixels (height x width), its image "
            f"{hw[0]}x{hw[1]}")  # fmt: skip


def _read_item(item: _Item, layout: str, nyu_mask: bool,
               root: Path) -> tuple[np.ndarray | None, dict[str, np.ndarray], list[tuple[str, str]]]:  # fmt: skip
    """(image, task -> labels, [(file, reason)]): every problem of the image, not the first."""
    try:
        image = read_image(item.image)
    except ImageReadError as e:
        return None, {}, [(str(item.image), e.reason)]
    hw = image.shape[:2]
    labels: dict[str, np.ndarray] = {}
    problems: list[tuple[str, str]] = []
    for task, paths in item.files.items():
        path = paths[0]
        if layout != "pascal-mt" and len(paths) > 1:
            problems.append((str(path), f"{len(paths)} {task} files for one image: "
                                        f"{', '.join(p.name for p in paths)}; keep one"))  # fmt: skip
            continue
        try:
            arr = _read_label(task, path, layout, hw)
            bad = _size_problem(arr, hw, "the label")
            if bad is None and task == "normals" and nyu_mask:
                lm_path = root / LABELMAP_DIR / f"{item.key}.mat"
                if not lm_path.is_file():
                    bad = (f"PASCAL-MT's distilled normals hold only on NYU classes, which needs "
                           f"{lm_path} (missing); leave normals out with --tasks")  # fmt: skip
                else:
                    lm = read_labelmap(lm_path)
                    bad = _size_problem(lm, hw, f"its LabelMap {lm_path}")
                    if bad is None:
                        keep = np.isin(lm, sorted(NORMALS_NYU_CONTEXT_LABELS))
                        arr = np.where(keep[..., None], arr, np.float32(0)).astype(np.float32)
        except (DatasetError, ValueError, OSError) as e:
            bad = str(e).removeprefix(f"{path}: ")  # the file is named beside the reason
        if bad is not None:
            problems.append((str(path), bad))
        else:
            labels[task] = arr
    return image, labels, problems


def _labelled(task: str, arr: np.ndarray) -> np.ndarray:
    return np.any(arr != 0, axis=-1) if task == "normals" else arr != IGNORE


def _as_pseudo(labels: dict[str, np.ndarray], order: tuple[str, ...], left_out: dict[str, int]):
    """The palette (first task of ``order`` labelled at each pixel) and each task's
    labels where the palette asks for it (255 / zero elsewhere)."""
    shape = next(iter(labels.values())).shape[:2]
    palette = np.full(shape, NO_TASK, np.uint8)
    for task in order:
        if task in labels:
            free = (palette == NO_TASK) & _labelled(task, labels[task])
            palette[free] = get_task(task).palette_value
    out = {}
    for task in order:
        if task not in labels:
            continue
        asked = palette == get_task(task).palette_value
        lost = int((_labelled(task, labels[task]) & ~asked).sum())
        if lost:
            left_out[task] = left_out.get(task, 0) + lost
        if asked.any():
            arr = labels[task]
            out[task] = (np.where(asked[..., None], arr, np.float32(0)).astype(np.float32) if task == "normals"
                         else np.where(asked, arr, np.uint8(IGNORE)).astype(np.uint8))  # fmt: skip
    return palette, out


def _same_as_stored(store: LabelStore, image_id: str, record: dict, sample: dict, prov: dict) -> bool:
    """Whether the store holds ``image_id`` with exactly these pixels, labels and provenance."""
    pixels = hashlib.sha256(np.ascontiguousarray(sample["image"]).tobytes()).hexdigest()
    info = record.get("image") or {}
    if record.get("provenance") != prov or info.get("sha256_of") != "pixels" or info.get("sha256") != pixels:
        return False
    s = store.read_sample(image_id)
    if set(s.labels) != set(prov) or (s.palette is None) != ("palette" not in sample):
        return False
    same = all(np.array_equal(s.labels[t], sample[t]) for t in prov)
    return same and (s.palette is None or np.array_equal(s.palette, sample["palette"]))


# ------------------------------------------------------------------------------ import


def _existing(store_path: Path) -> tuple[LabelStore | None, dict[str, dict]]:
    """The store and its complete images' records; (None, {}) when it is yet to be made."""
    if not os.path.lexists(store_path) or (store_path.is_dir() and not any(store_path.iterdir())):
        return None, {}
    store = LabelStore(store_path, mode="a")  # a non-store path or a newer format: StoreError
    return store, store.image_records()


def import_labels(
    root: str | os.PathLike,
    store: str | os.PathLike,
    *,
    layout: str = "auto",
    as_: str = "ground-truth",
    tasks: Iterable[str] | str | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> ImportSummary:
    """Import the labels under ``root`` into the label store ``store`` (module doc,
    docs/export.md "Import labels"); returns what was done.

    ``layout``: one of :data:`IMPORT_LAYOUTS`; ``as_``: one of :data:`AS`; ``tasks``:
    names or aliases (or a comma-separated string) of the tasks to import, default all,
    in the order that decides a pseudo palette; ``overwrite``: replace images the store
    holds with other labels. ``progress(done, total)`` is called after each image.

    Raises :class:`ImportLabelsError` (or :class:`~composite_tasking.store.StoreError`
    for a ``store`` that is no label store) before anything is written; an error of the
    file system while writing (``OSError``) stops the import, every image written before
    complete. Files that cannot be imported are skipped and listed in the summary.
    """
    if as_ not in AS:
        raise ImportLabelsError(f"unknown --as {as_!r}; use {' or '.join(AS)}")
    if layout not in IMPORT_LAYOUTS:
        raise ImportLabelsError(f"unknown layout {layout!r}; layouts: {', '.join(IMPORT_LAYOUTS)}")
    chosen = _parse_tasks(tasks)
    root, store_path = Path(root), Path(store)
    if not root.is_dir():
        raise ImportLabelsError(f"{root}: {'not a folder' if root.exists() else 'no such folder'}")
    layout = detect_layout(root) if layout == "auto" else layout
    manifest = read_manifest(root)
    ls, records = _existing(store_path)
    summary = ImportSummary(root=root, store=store_path, layout=layout, as_=as_)
    images_dir, items = _scan(root, layout, chosen, summary)
    if layout == "tiff" and any("normals" in i.files for i in items):
        try:
            import tifffile  # noqa: F401
        except ImportError:
            raise ImportLabelsError("the normals of the tiff layout are float32 TIFFs, read with tifffile, which "
                                    "is not installed: pip install tifffile, or leave normals out "
                                    "(--tasks semseg,parts,edges,saliency)") from None  # fmt: skip
    if not any(i.files for i in items) and not summary.skipped:
        raise ImportLabelsError(f"nothing to import: no {', '.join(chosen)} label file beside the "
                                f"{len(items)} image(s) of {images_dir} (layout {layout}; docs/export.md)")  # fmt: skip
    if manifest is not None:  # an export: its file names are the store ids it was exported under
        ids = [i.key for i in items]
    else:
        ids = image_ids([i.image for i in items], [images_dir], records)
    nyu_mask = layout == "pascal-mt" and not (manifest or {}).get("normals_masked")
    where = {"root": str(root.resolve()), "layout": layout}
    for done, (item, image_id) in enumerate(zip(items, ids), 1):
        if item.files:
            ls = _import_one(item, image_id, ls, records, summary, chosen, overwrite, nyu_mask, where)
        else:
            summary.unlabelled.append(str(item.image))
        if progress is not None:
            progress(done, len(items))
    summary.tasks = {t: summary.tasks[t] for t in TASK_NAMES if t in summary.tasks}
    return summary


def _import_one(item: _Item, image_id: str, ls: LabelStore | None, records: dict[str, dict],
                summary: ImportSummary, chosen: tuple[str, ...], overwrite: bool, nyu_mask: bool,
                where: dict) -> LabelStore | None:  # fmt: skip
    """Read, check and write one image; returns the store (made on the first write)."""
    try:
        validate_image_id(image_id)
    except StoreError as e:
        summary.skipped.append((str(item.image), str(e)))
        return ls
    image, labels, problems = _read_item(item, summary.layout, nyu_mask, summary.root)
    if problems:
        summary.skipped += [(f, f"{why} (image {image_id} not imported)") for f, why in problems]
        return ls
    labels = {t: labels[t] for t in chosen if t in labels and _labelled(t, labels[t]).any()}
    if not labels:
        summary.unlabelled.append(str(item.image))
        return ls
    sample: dict = {"image": image}
    attrs: dict = {}
    left_out: dict[str, int] = {}  # counted once the image is written
    if summary.as_ == "pseudo":
        sample["palette"], labels = _as_pseudo(labels, chosen, left_out)
        attrs["palette_origin"] = "import"
    sample.update(labels)
    files = {t: item.files[t][0].relative_to(summary.root).as_posix() for t in TASK_NAMES if t in labels}
    attrs["imported"] = {**where, "files": files}
    prov = dict.fromkeys((t for t in TASK_NAMES if t in labels), summary.as_)
    record = records.get(image_id)
    if record is not None:
        assert ls is not None  # records are the store's (_existing)
        if _same_as_stored(ls, image_id, record, sample, prov):
            summary.unchanged.append(image_id)
            return ls
        if not overwrite:
            held = ", ".join(f"{t} {p}" for t, p in (record.get("provenance") or {}).items()) or "no labels"
            summary.skipped.append((str(item.image), f"the store holds {image_id} with other labels ({held}); "
                                                     "--overwrite replaces it"))  # fmt: skip
            return ls
        if summary.as_ == "pseudo":
            from .label.settings import person_made  # ctn label's rule: a person's work stays

            if person_made(record):
                summary.skipped.append((str(item.image), f"the store's {image_id} holds a person's work; "
                                                         "pseudo-labels never replace it"))  # fmt: skip
                return ls
    if ls is None:
        ls = LabelStore(summary.store, mode="a", attrs={"source": "import", "imported_from": where["root"]})
    try:
        ls.write_sample(image_id, sample, provenance=prov, attrs=attrs, image_source=str(item.image.resolve()),
                        overwrite=record is not None)  # fmt: skip
    except StoreError as e:  # checked before anything is written
        summary.skipped.append((str(item.image), str(e)))
        return ls
    summary.imported.append(image_id)
    if record is not None:
        summary.replaced.append(image_id)
    for t in labels:
        summary.tasks[t] = summary.tasks.get(t, 0) + 1
    for t, n in left_out.items():
        summary.left_out[t] = summary.left_out.get(t, 0) + n
    return ls
