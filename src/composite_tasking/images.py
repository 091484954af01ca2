"""Robust image reading and folder scanning.

:func:`read_image` returns uint8 RGB (H, W, 3) for the formats of :data:`IMAGE_FORMATS`
(JPEG, PNG, TIFF 8/16/32 bit and float, BMP, WebP, GIF: its first frame): EXIF
orientation applied, grayscale / palette / CMYK converted to RGB, alpha composited over
white (as a viewer shows it), 16-bit scaled to 8-bit (by the full 16-bit range, or by
the data's range for 32-bit and float images; NaN pixels become 0). Every failure
raises :class:`ImageReadError` with the path and a reason a person can act on: missing,
zero bytes, not an image, truncated, unsupported format, larger than the
decompression-bomb limit, no finite pixel value.

:func:`scan_inputs` turns files and folders into the list of image files to read.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Iterable, cast

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

if TYPE_CHECKING:
    from typing_extensions import TypeIs  # typing's from Python 3.13

    from .store.location import Remote

__all__ = ["ImageReadError", "read_image", "read_image_hashed", "scan_inputs", "IMAGE_FORMATS", "SUPPORTED_SUFFIXES",
           "MAX_PIXELS", "ScanResult", "suffixes_of", "is_zarr_folder"]  # fmt: skip

#: the one table of what is read: PIL format -> the file name suffixes it goes by
#: (MPO is a JPEG with more pictures in it: the first is read). A file inside a folder
#: is an image by its suffix; a file of another format is refused by its content.
IMAGE_FORMATS: dict[str, tuple[str, ...]] = {
    "JPEG": (".jpg", ".jpeg", ".jpe", ".jfif"),
    "MPO": (".mpo",),
    "PNG": (".png",),
    "TIFF": (".tif", ".tiff"),
    "BMP": (".bmp",),
    "WEBP": (".webp",),
    "GIF": (".gif",),
}
#: file name suffixes read as images (from :data:`IMAGE_FORMATS`)
SUPPORTED_SUFFIXES = tuple(s for suffixes in IMAGE_FORMATS.values() for s in suffixes)
#: images with more pixels are refused (PIL's decompression-bomb guard, made an error)
MAX_PIXELS = 178_956_970
_FORMATS = frozenset(IMAGE_FORMATS)


class ImageReadError(ValueError):
    def __init__(self, path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


def read_image(path: str | os.PathLike | Remote, max_pixels: int = MAX_PIXELS,
               data: bytes | None = None) -> np.ndarray:  # fmt: skip
    """Read an image file as uint8 RGB (H, W, 3) with EXIF orientation applied. ``data``:
    the file's bytes, already read (decoded instead of reading ``path`` again, so that
    the pixels are those of the bytes a caller hashed); ``path`` then names it in errors.
    ``path`` may be an object in an object store (:class:`.store.location.Remote`)."""
    if data is None and _is_remote(path):
        data = _remote_bytes(path)
    path = path if _is_remote(path) else Path(path)
    source: Path | io.BytesIO
    if data is not None:
        size, source = len(data), io.BytesIO(data)
    else:
        assert isinstance(path, Path)  # an object's bytes were read above
        source = path
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            reason = "broken symbolic link" if path.is_symlink() else "no such file"
            raise ImageReadError(path, reason) from None
        except OSError as e:
            reason = "symbolic link loop" if e.errno == errno.ELOOP else f"cannot read: {e.strerror or e}"
            raise ImageReadError(path, reason) from None
    if size == 0:
        raise ImageReadError(path, "empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            old = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = max_pixels
            try:
                with Image.open(source) as im:
                    if im.format not in _FORMATS:
                        raise ImageReadError(path, f"unsupported image format {im.format}")
                    if im.width * im.height > max_pixels:
                        raise ImageReadError(path, f"{im.width}x{im.height} pixels exceeds the limit of "
                                                   f"{max_pixels} (decompression bomb guard)")  # fmt: skip
                    im.load()
                    return _to_rgb8(ImageOps.exif_transpose(im), path)
            finally:
                Image.MAX_IMAGE_PIXELS = old
    except ImageReadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageReadError(path, f"too many pixels (decompression bomb guard): {e}") from None
    except UnidentifiedImageError:
        raise ImageReadError(path, "not an image, or a format this program cannot read") from None
    except OSError as e:
        if e.errno is not None:  # the file system's (permission denied, a folder, ...): not the data's
            raise ImageReadError(path, f"cannot read: {e.strerror or e}") from None
        raise ImageReadError(path, f"corrupt or truncated image: {e}") from None
    except (SyntaxError, ValueError) as e:  # truncated / corrupt data
        raise ImageReadError(path, f"corrupt or truncated image: {e}") from None


def read_image_hashed(path: str | os.PathLike | Remote, max_pixels: int = MAX_PIXELS,
                      ) -> tuple[np.ndarray, str, os.stat_result | SimpleNamespace]:  # fmt: skip
    """:func:`read_image` of the file's bytes read once, their sha256 (hex), and the file's
    ``os.stat`` taken before they were read: the pixels are those of the bytes hashed (a
    label store that keeps an image by reference records the hash and the stat). Of an
    object in an object store, the stat is a :class:`SimpleNamespace` with ``st_size``
    and ``st_mtime_ns`` (its ``LastModified``)."""
    if _is_remote(path):
        try:
            rec = path.stat_record()
        except FileNotFoundError:
            raise ImageReadError(path, "no such object") from None
        except IsADirectoryError:
            raise ImageReadError(path, "a prefix (folder), not an object") from None
        except Exception as e:  # noqa: BLE001 - refused, unreachable: this image is skipped
            raise ImageReadError(path, f"cannot read: {e}") from None
        data = _remote_bytes(path)
        rst = SimpleNamespace(st_size=rec["size"], st_mtime_ns=rec["mtime_ns"])
        return read_image(path, max_pixels, data=data), hashlib.sha256(data).hexdigest(), rst
    path = Path(path)
    try:
        st = path.stat()
        data = path.read_bytes()
    except OSError as e:
        read_image(path, max_pixels)  # raises the ImageReadError that says why (missing, a folder, ...)
        raise ImageReadError(path, f"cannot read: {e.strerror or e}") from None
    return read_image(path, max_pixels, data=data), hashlib.sha256(data).hexdigest(), st


def _is_remote(path: object) -> TypeIs[Remote]:
    from .store.location import Remote

    return isinstance(path, Remote)


def _remote_bytes(path) -> bytes:
    """An object's bytes, or the :class:`ImageReadError` that says why not."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ImageReadError(path, "no such object") from None
    except Exception as e:  # noqa: BLE001 - refused, unreachable: this image is skipped
        raise ImageReadError(path, f"cannot read: {e}") from None


def _to_rgb8(im: Image.Image, path: Path | Remote) -> np.ndarray:
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        finite = np.isfinite(a)
        if not finite.any():
            raise ImageReadError(path, "no pixel has a finite value (all NaN or infinite)")
        values = a[finite] if not finite.all() else a
        lo, hi = float(values.min()), float(values.max())
        if im.mode.startswith("I;16") and hi <= 65535 and lo >= 0:
            lo, hi = 0.0, 65535.0 if hi > 255 else 255.0
        # NaN -> the low end (0); infinities -> the ends; then nothing is out of range
        a = np.clip(np.where(np.isnan(a), lo, a), lo, hi)
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        g = np.clip((a - lo) * scale + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(g[..., None], 3, axis=2)
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(bg, im)
    arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    return np.ascontiguousarray(arr)


@dataclass
class ScanResult:
    files: list[Path | Remote]  # a Remote: an object in a bucket (scan_locations)
    skipped: list[tuple[str, str]]  # (path, reason)
    #: files inside the folders whose suffix is no image format's: not read, not counted
    #: as skipped (a README beside the images does not make every run "partial")
    ignored_files: list[str] = field(default_factory=list)

    #: zarr stores or groups inside the folders (:func:`is_zarr_folder`): not searched
    zarr_folders: list[str] = field(default_factory=list)

    #: (path, the path listed for its file): another name of a file listed already (a
    #: symbolic link to an image of the folder, a folder reached through two names), so
    #: not listed again. The same path named twice is no such other name.
    duplicates: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ignored(self) -> int:
        return len(self.ignored_files)

    @property
    def ignored_suffixes(self) -> tuple[str, ...]:
        return suffixes_of(self.ignored_files)


def is_zarr_folder(path: Path) -> bool:
    """A folder that is a zarr store or group (v3 ``zarr.json``, v2 ``.zgroup`` /
    ``.zarray``), or named ``*.zarr``. Never raises: a folder that cannot be read is no
    zarr folder here (whoever lists it says it cannot be read)."""
    path = Path(path)
    return os.path.isdir(path) and (path.suffix.lower() == ".zarr" or any(
        os.path.isfile(path / name) for name in ("zarr.json", ".zgroup", ".zarray")))  # fmt: skip


def _unreachable(path: Path) -> str:
    """Why ``path`` (no file or folder that can be read) is skipped: a symbolic link loop,
    a broken symbolic link, missing, a place that cannot be read, or neither file nor
    folder (a socket, a FIFO, a device)."""
    try:
        os.stat(path)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "symbolic link loop"
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            return "broken symbolic link" if os.path.islink(path) else "no such file or folder"
        return f"cannot read: {e.strerror or e}"
    return "not a file or folder"


def suffixes_of(paths: Iterable[str | os.PathLike]) -> tuple[str, ...]:
    """The files' suffixes, lower case, sorted, each once ("(no suffix)" for none)."""
    return tuple(sorted({_suffix(Path(f)) for f in paths}))


def _suffix(p: Path) -> str:
    return p.suffix.lower() or "(no suffix)"


def scan_inputs(inputs: Iterable[str | os.PathLike], recursive: bool = True, *,
                exclude: Iterable[str | os.PathLike] = ()) -> ScanResult:  # fmt: skip
    """Image files named by ``inputs`` (files or folders), sorted and without repeats.

    Inside a folder (searched recursively, symbolic links to folders followed once each)
    a file is an image by its suffix (:data:`SUPPORTED_SUFFIXES`); other files are
    ignored, counted in :attr:`ScanResult.ignored`. Names starting with '.' are ignored,
    and so are ``*.zarr`` folders (label stores: never a folder of images) and the paths
    of ``exclude`` (a run's own outputs: its store and its preview), wherever they are.
    A file named in ``inputs`` is always listed, whatever its suffix (reading it says
    whether it is an image). Skipped with a reason: a missing input, a broken symbolic
    link, a symbolic link loop, a folder that cannot be read (the rest is searched), a
    ``.zarr`` folder or an excluded path named in ``inputs``. A file reached again under
    another name (a symbolic link to an image listed already) is listed once, under the
    name found first, and named in :attr:`ScanResult.duplicates`.
    """
    files: list[Path | Remote] = []
    skipped: list[tuple[str, str]] = []
    ignored: list[str] = []
    zarr_folders: list[str] = []
    duplicates: list[tuple[str, str]] = []
    seen: dict[Path, Path] = {}  # resolved path -> the path listed for it
    excluded = {Path(os.path.abspath(e)) for e in exclude} | {Path(e).resolve() for e in exclude}

    def is_excluded(p: Path) -> bool:
        return bool(excluded) and (Path(os.path.abspath(p)) in excluded or p.resolve() in excluded)

    def add(p: Path) -> None:
        rp = p.resolve()
        first = seen.get(rp)
        if first is None:
            seen[rp] = p
            files.append(p)
        elif os.path.normpath(os.path.abspath(p)) != os.path.normpath(os.path.abspath(first)):
            duplicates.append((str(p), str(first)))  # another name of a file listed: said, not hidden

    def walk(folder: Path, visited: set[tuple[int, int]]) -> None:
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            skipped.append((str(folder), f"cannot read the folder: {e.strerror or e}"))
            return
        for entry in entries:
            if entry.name.startswith("."):
                continue
            p = folder / entry.name
            try:
                is_dir = entry.is_dir()  # follows a symbolic link
                is_file = not is_dir and entry.is_file()
            except OSError:
                is_dir = is_file = False
            if is_dir:
                if not recursive or is_excluded(p):
                    continue
                if is_zarr_folder(p):  # a store's files are no images: named, not searched
                    zarr_folders.append(str(p))
                    continue
                try:
                    st = p.stat()
                except OSError as e:
                    skipped.append((str(p), f"cannot read the folder: {e.strerror or e}"))
                    continue
                key = (st.st_dev, st.st_ino)
                if key in visited:  # a symbolic link back into a folder being searched, or one searched
                    continue
                visited.add(key)
                walk(p, visited)
            elif is_file:
                if is_excluded(p):
                    continue
                if p.suffix.lower() in SUPPORTED_SUFFIXES:
                    add(p)
                else:
                    ignored.append(str(p))
            elif entry.is_symlink() and (why := _unreachable(p)) != "not a file or folder":
                skipped.append((str(p), why))  # broken, a loop, or leading into a place that cannot be read
            # else: a socket, a FIFO, a device: nothing to read

    visited: set[tuple[int, int]] = set()
    for item in inputs:
        p = Path(item)
        if os.path.isdir(p):  # never raises (Path.is_dir does, below a folder that cannot be read)
            if p.suffix.lower() == ".zarr":
                skipped.append((str(p), "a zarr store, not a folder of images"))
            elif is_excluded(p):
                skipped.append((str(p), "an output of this run (its label store or preview)"))
            else:
                st = p.stat()
                visited.add((st.st_dev, st.st_ino))
                walk(p, visited)
        elif os.path.isfile(p):
            if is_excluded(p):
                skipped.append((str(p), "an output of this run (its label store or preview)"))
            else:
                add(p)
        else:
            skipped.append((str(p), _unreachable(p)))
    return ScanResult(files, skipped, ignored, zarr_folders, duplicates)


def scan_locations(inputs: Iterable, recursive: bool = True, *, exclude: Iterable = (),
                   storage_options: dict | None = None) -> ScanResult:  # fmt: skip
    """:func:`scan_inputs` of inputs that may also be object-store URLs
    (``s3://bucket/photos/``, ``s3://bucket/a.jpg``; :mod:`.store.location`): the local
    ones are scanned together as before, then each URL (its files are
    :class:`~.store.location.Remote` objects, listed after the local ones). Below a URL
    prefix, as in a folder: every object whose name has an image suffix, in key order;
    names starting with '.' and ``*.zarr`` prefixes (label stores) left out, as is the
    excluded store itself. A URL naming one object lists it, whatever its suffix; a URL
    with nothing under it, or a bucket that cannot be used (missing, refused,
    unreachable), is skipped with the reason."""
    from .store.location import LocationError, Remote, is_url, locate

    inputs, exclude = list(inputs), list(exclude)
    local = [i for i in inputs if not is_url(i)]
    res = scan_inputs(local, recursive, exclude=[e for e in exclude if not is_url(e)])
    if len(local) == len(inputs):
        return res
    excluded = [cast(Remote, locate(e, storage_options)) for e in exclude if is_url(e)]  # URLs: Remotes
    listed = {str(f) for f in res.files if isinstance(f, Remote)}
    for item in inputs:
        if not is_url(item):
            continue
        where = locate(item, storage_options)
        assert isinstance(where, Remote)  # item is a URL
        try:
            where.check()
            fs = where.fs
            if fs.isfile(where.path):
                keys, top = [where.path], None
            else:
                found = fs.find(where.path, maxdepth=None if recursive else 1)
                keys, top = sorted(k for k in found if k.startswith(where.path + "/")), where
        except LocationError as e:
            res.skipped.append((str(where), str(e).removeprefix(f"{where}: ")))
            continue
        except Exception as e:  # noqa: BLE001 - the object store's failure, in one line
            res.skipped.append((str(where), str(where.error(e, "listing")).removeprefix(f"{where}: ")))
            continue
        if not keys:
            res.skipped.append((str(where), "no such object, and no object under it"))
            continue
        stores: set[str] = set()
        for key in keys:
            obj = where.at(key)
            if top is not None:
                parts = obj.relative_to(top).parts
                store = next((k for k, p in enumerate(parts[:-1]) if p.lower().endswith(".zarr")), None)
                if store is not None:  # a store's objects are no images: named, not listed
                    stores.add(str(top / "/".join(parts[: store + 1])))
                    continue
                if any(p.startswith(".") for p in parts):
                    continue
                if any(obj.path == e.path or obj.is_relative_to(e) for e in excluded):
                    continue
                if obj.suffix.lower() not in SUPPORTED_SUFFIXES:
                    res.ignored_files.append(str(obj))
                    continue
            if str(obj) in listed:
                continue
            listed.add(str(obj))
            res.files.append(obj)
        res.zarr_folders.extend(sorted(stores))
    return res
