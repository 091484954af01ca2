"""Store ids of image files: the path below the input folder, made safe for a folder name,
unique, and settled against a label store's records so that a file keeps its id across
runs (``ctn label``, ``ctn annotate``, the napari annotation session).

No torch, Qt or napari at import.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Iterable

import numpy as np

from .images import ImageReadError, read_image
from .store import LabelStore, file_sha256

__all__ = ["image_ids", "relative_to_inputs"]

#: the longest id the store takes: a longer one keeps its end and a hash of the whole
_ID_MAX = 200


def _hash8(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]


def _tagged(text: str, tag: str) -> str:
    """``text-tag``, cut from the front to the longest id the store takes."""
    out = f"{text}-{tag}"
    return out if len(out) <= _ID_MAX else out[len(out) - _ID_MAX:].lstrip("._-")


def _base_ids(files: list[Path], inputs: Iterable[str | os.PathLike]) -> list[str]:
    """Each file's id before any clash is settled: the path below its input folder,
    '/' -> '__', characters other than letters, digits, '.', '_', '-' -> '_'."""
    roots = [Path(i) for i in inputs if Path(i).is_dir()]
    out = []
    for f in files:
        whole = "__".join(relative_to_inputs(f, roots).parts)
        base = re.sub(r"[^A-Za-z0-9._-]", "_", whole).lstrip(".") or "image"
        if len(base) > _ID_MAX:
            base = _tagged(base, _hash8(whole))
        out.append(base)
    return out


def image_ids(files: list[Path], inputs: Iterable[str | os.PathLike],
              store: LabelStore | dict[str, dict] | None = None,
              shard: tuple[int, int] | None = None) -> list[str]:  # fmt: skip
    """Store ids from paths, one per file, unique: the path below its input folder, '/'
    -> '__', other characters a folder name may not hold -> '_' (an id of over 200
    characters keeps its end and a hash of the whole).

    Files whose ids clash (``a b.png`` and ``a_b.png``; ``IMG_1.jpg`` of two folders
    given together, or of two runs into one ``store``) are told apart by ``-`` and a
    hash of the file's absolute path. With a ``store`` (or its
    :meth:`~.store.LabelStore.image_records`), an id under which the store holds an
    image is this file's only when the image came from this file: its recorded source
    is the file's path, or (a folder moved or mounted elsewhere) its sha256 is the
    file's (of the pixels, or of the file for an image stored by reference). The images
    the store already holds from these paths are claimed first, under whatever id they
    were stored, so a file's id does not depend on the order of the inputs, on files
    added since, or on how an earlier version made ids.

    Telling a moved file by its sha256 decodes it (~3 ms for a 640 x 480 JPEG), on
    every run until it is relabelled from its new place; with ``shard=(i, n)`` only
    the files whose ids shard i needs are decoded (the ids of the others are then not
    settled against the store's pixels: the caller takes every n-th id from i).
    """
    files = [Path(f) for f in files]
    records = store.image_records() if isinstance(store, LabelStore) else dict(store or {})
    bases = _base_ids(files, inputs)
    paths = [str(f.resolve()) for f in files]
    alts = [_tagged(b, _hash8(p)) for b, p in zip(bases, paths)]
    ids: list[str | None] = [None] * len(files)
    taken: set[str] = set()
    by_source: dict[str, str] = {}  # the store's own records of these paths, whatever their ids
    for image_id in sorted(records):
        src = (records[image_id].get("image") or {}).get("source")
        if src is not None:
            by_source.setdefault(src, image_id)
    for k, p in enumerate(paths):
        cand = by_source.get(p)
        if cand is not None and cand not in taken:
            ids[k] = cand
            taken.add(cand)
    groups: dict[str, list[int]] = {}  # files of one base id compete for it, no others
    for k, b in enumerate(bases):
        groups.setdefault(b, []).append(k)

    def needed(k: int) -> bool:
        return shard is None or any(j % shard[1] == shard[0] for j in groups[bases[k]])

    for k, f in enumerate(files):
        if ids[k] is not None:
            continue
        b = bases[k]
        if b not in taken and (b not in records or (needed(k) and _same_image(f, records[b]))):
            ids[k] = b
        else:
            ids[k] = alts[k]
        taken.add(ids[k])
    return ids  # type: ignore[return-value]


def _same_image(path: Path, record: dict) -> bool:
    """Whether the stored image ``record`` (its attributes) holds the file ``path``'s
    image: its sha256 of the file's bytes, or of the decoded pixels, is the file's."""
    info = record.get("image") or {}
    digest = info.get("sha256")
    if not digest:
        return False
    try:
        if info.get("sha256_of") == "file":
            return file_sha256(path) == digest
        pixels = np.ascontiguousarray(read_image(path))
        return hashlib.sha256(pixels.tobytes()).hexdigest() == digest
    except (OSError, ImageReadError):
        return False


def relative_to_inputs(path: Path, roots: list[Path]) -> Path:
    """``path`` below the input folder it was found in, as found (through a symbolic
    link to a folder too), else as resolved; its name, for a file given as such."""
    for f, rs in ((Path(path).absolute(), [Path(r).absolute() for r in roots]),
                  (Path(path).resolve(), [Path(r).resolve() for r in roots])):  # fmt: skip
        rel = next((f.relative_to(r) for r in rs if f.is_relative_to(r)), None)
        if rel is not None:
            return rel
    return Path(Path(path).name)
