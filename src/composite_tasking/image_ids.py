"""Store ids of image files: the path below the input folder, made safe for a folder name,
unique, and settled against a label store's records so that a file keeps its id across
runs (``ctn label``, ``ctn annotate``, the napari annotation session).

No torch, Qt or napari at import.
"""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .images import ImageReadError, read_image
from .store import LabelStore, file_sha256
from .store.location import Remote, is_url

__all__ = ["image_ids", "relative_to_inputs", "input_roots"]

#: the longest id the store takes, in characters and (an id names a folder, and file
#: systems count a name's bytes) in UTF-8 bytes: a longer one keeps its end and a hash
#: of the whole
_ID_MAX = 200
#: the characters an id keeps besides letters, digits and combining marks (any script)
_ID_PUNCTUATION = frozenset("._-")


def _hash8(text: str) -> str:
    # surrogateescape: a file name that is no valid UTF-8 (its bytes as Python holds them)
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:8]


def _fits(text: str) -> bool:
    return len(text.encode("utf-8", "surrogateescape")) <= _ID_MAX


def _tagged(text: str, tag: str) -> str:
    """``text-tag``, cut from the front to the longest id the store takes."""
    out = f"{text}-{tag}"
    if _fits(out):
        return out
    # the last _ID_MAX bytes, less a character cut in two; ASCII: the last _ID_MAX characters
    tail = out.encode("utf-8", "surrogateescape")[-_ID_MAX:].decode("utf-8", "ignore")
    return tail.lstrip("._-")


def _id_char(c: str) -> str:
    """``c`` as an id keeps it: a letter, a digit or a combining mark of any script, '.',
    '_' or '-'; anything else (white space, symbols, punctuation, control and format
    characters, bytes that are no UTF-8) becomes '_'."""
    if c.isascii():
        return c if c.isalnum() or c in _ID_PUNCTUATION or c == "_" else "_"
    return c if unicodedata.category(c)[0] in "LNM" else "_"


def _legible(whole: str) -> str:
    """An id from a path's text ('/' already '__'): Unicode NFC (a name decomposed by
    macOS or typed composed gives one id), characters :func:`_id_char` does not keep ->
    '_', no leading '.'; over :data:`_ID_MAX`, its end and a hash of ``whole``."""
    text = "".join(map(_id_char, unicodedata.normalize("NFC", whole)))
    base = text.lstrip(".") or "image"
    return base if _fits(base) else _tagged(base, _hash8(whole))


def _ascii_id(whole: str) -> str:
    """The id earlier versions made (until 2026-12-07): every character other than ASCII
    letters, digits, '.', '_', '-' -> '_'. Stores written then hold such ids for files
    with other letters in their names: a file whose image the store holds under it
    keeps it."""
    base = re.sub(r"[^A-Za-z0-9._-]", "_", whole).lstrip(".") or "image"
    return base if len(base) <= _ID_MAX else _tagged(base, _hash8(whole))


def _wholes(files: Sequence[Path | Remote], inputs: Iterable[str | os.PathLike]) -> list[str]:
    """Each file's path below its input folder, '/' -> '__'."""
    roots = input_roots(inputs)
    return ["__".join(relative_to_inputs(f, roots).parts) for f in files]


def input_roots(inputs: Iterable) -> list:
    """The inputs files are found below: the local folders, and every object-store URL
    (a prefix; one naming an object has nothing below it)."""
    from .store.location import locate

    return [locate(i) if is_url(i) else Path(i) for i in inputs if is_url(i) or os.path.isdir(i)]


def image_ids(files: Sequence[Path | Remote], inputs: Iterable[str | os.PathLike],
              store: LabelStore | dict[str, dict] | None = None,
              shard: tuple[int, int] | None = None, *,
              store_path: str | os.PathLike | Remote | None = None) -> list[str]:  # fmt: skip
    """Store ids from paths, one per file, unique: the path below its input folder, '/'
    -> '__', characters other than letters, digits (of any script: ``café.jpg``,
    ``東京.png`` keep theirs), '.', '_' and '-' -> '_' (an id of over 200 characters, or
    of over 200 bytes in UTF-8, keeps its end and a hash of the whole).

    Files whose ids clash (``a b.png`` and ``a_b.png``; ``IMG_1.jpg`` of two folders
    given together, or of two runs into one ``store``) are told apart by ``-`` and a
    hash of the file's absolute path. With a ``store`` (or its
    :meth:`~.store.LabelStore.image_records`), an id under which the store holds an
    image is this file's only when the image came from this file: its recorded source
    is the file's path (a relative source is relative to the store folder,
    ``store_path``, as ``ctn synth`` records its PNGs: the default with a
    :class:`~.store.LabelStore`), or (a folder moved or mounted elsewhere) its sha256 is
    the file's (of the pixels, or of the file for an image stored by reference). The
    images the store already holds from these paths are claimed first, under whatever id
    they were stored, so a file's id does not depend on the order of the inputs, on
    files added since, or on how an earlier version made ids; a moved file whose name
    has other letters than ASCII ones is also found under the id earlier versions gave
    it (those letters -> '_').

    Telling a moved file by its sha256 decodes it (~3 ms for a 640 x 480 JPEG), on
    every run until it is relabelled from its new place; with ``shard=(i, n)`` only
    the files whose ids shard i needs are decoded (the ids of the others are then not
    settled against the store's pixels: the caller takes every n-th id from i).
    """
    files = [f if isinstance(f, Remote) else Path(f) for f in files]
    if isinstance(store, LabelStore):
        records = store.image_records()
        store_path = store.path if store_path is None else store_path
    else:
        records = dict(store or {})
    wholes = _wholes(files, inputs)
    bases = [_legible(w) for w in wholes]
    legacy = [_ascii_id(w) for w in wholes]
    paths = [str(f.resolve()) for f in files]
    alts = [_tagged(b, _hash8(p)) for b, p in zip(bases, paths)]
    ids: list[str | None] = [None] * len(files)
    taken: set[str] = set()
    by_source: dict[str, str] = {}  # the store's own records of these paths, whatever their ids
    for image_id in sorted(records):
        src = _source_path((records[image_id].get("image") or {}).get("source"), store_path)
        if src is not None:
            by_source.setdefault(src, image_id)
    for k, p in enumerate(paths):
        cand = by_source.get(p)
        if cand is not None and cand not in taken:
            ids[k] = cand
            taken.add(cand)
    # files of one base id compete for it, no others (and so for an earlier version's id)
    groups: dict[str, list[int]] = {}
    old_groups: dict[str, list[int]] = {}
    for k, (b, old) in enumerate(zip(bases, legacy)):
        groups.setdefault(b, []).append(k)
        old_groups.setdefault(old, []).append(k)

    def needed(members: list[int]) -> bool:
        return shard is None or any(j % shard[1] == shard[0] for j in members)

    def holds(image_id: str, k: int, members: list[int]) -> bool:
        """The store holds file k's image under ``image_id``, free still (decoded only
        when a shard needs it)."""
        return (image_id in records and image_id not in taken and needed(members)
                and _same_image(files[k], records[image_id]))  # fmt: skip

    for k in range(len(files)):
        if ids[k] is not None:
            continue
        b, old = bases[k], legacy[k]
        if holds(b, k, groups[b]):
            chosen = b
        elif old != b and holds(old, k, old_groups[old]):  # stored under an earlier version's id
            chosen = old
        elif b not in taken and b not in records:
            chosen = b
        else:
            chosen = alts[k]
        ids[k] = chosen
        taken.add(chosen)
    return ids  # type: ignore[return-value]


def _source_path(source: str | None, store_path: str | os.PathLike | Remote | None) -> str | None:
    """A recorded image source as a resolved path: absolute as recorded, relative below
    the store folder (None without one: it cannot be told)."""
    if not source:
        return None
    if is_url(source) or os.path.isabs(source):
        return source
    if store_path is None:
        return None
    if isinstance(store_path, Remote) or is_url(store_path):  # below a store in an object store
        from .store.location import locate

        return str(locate(store_path) / source)
    return str(Path(os.path.abspath(store_path), source).resolve())


def _same_image(path: Path | Remote, record: dict) -> bool:
    """Whether the stored image ``record`` (its attributes) holds the file ``path``'s
    image: its sha256 of the file's bytes, or of the decoded pixels, is the file's."""
    info = record.get("image") or {}
    digest = info.get("sha256")
    if not digest:
        return False
    try:
        if info.get("sha256_of") == "file":
            return (path.sha256() if isinstance(path, Remote) else file_sha256(path)) == digest
        pixels = np.ascontiguousarray(read_image(path))
        return hashlib.sha256(pixels.tobytes()).hexdigest() == digest
    except (OSError, ImageReadError):
        return False
    except Exception:  # noqa: BLE001 - an object store's failure: not told to be the same
        if isinstance(path, Remote):
            return False
        raise


def relative_to_inputs(path: Path | Remote, roots: Sequence[Path | Remote]) -> Path:
    """``path`` below the input folder it was found in, as found (through a symbolic
    link to a folder too), else as resolved; its name, for a file given as such. An
    object of an object store: its key below the URL prefix it was found under."""
    if isinstance(path, Remote):
        key = next((path.relative_to(r) for r in roots if isinstance(r, Remote) and path.is_relative_to(r)), None)
        return Path(str(key)) if key is not None else Path(path.name)
    local = [r for r in roots if not isinstance(r, Remote)]
    for f, rs in ((Path(path).absolute(), [Path(r).absolute() for r in local]),
                  (Path(path).resolve(), [Path(r).resolve() for r in local])):  # fmt: skip
        rel = next((f.relative_to(r) for r in rs if f.is_relative_to(r)), None)
        if rel is not None:
            return rel
    return Path(Path(path).name)
