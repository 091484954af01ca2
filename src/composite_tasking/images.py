"""Robust image reading and folder scanning.

:func:`read_image` returns uint8 RGB (H, W, 3) for JPEG, PNG, TIFF (8 and 16 bit), BMP
and WebP: EXIF orientation applied, grayscale / palette / CMYK converted to RGB, alpha
composited over white (as a viewer shows it), 16-bit scaled to 8-bit (by the full 16-bit
range, or by the data's range for 32-bit and float images). Every failure raises :class:`ImageReadError` with the path
and a reason a person can act on: missing, zero bytes, not an image, truncated,
unsupported format, larger than the decompression-bomb limit.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["ImageReadError", "read_image", "scan_inputs", "SUPPORTED_SUFFIXES", "MAX_PIXELS", "ScanResult"]

#: file name suffixes read as images
SUPPORTED_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp")
#: images with more pixels are refused (PIL's decompression-bomb guard, made an error)
MAX_PIXELS = 178_956_970
_FORMATS = {"JPEG", "PNG", "TIFF", "BMP", "WEBP", "MPO"}


class ImageReadError(ValueError):
    def __init__(self, path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


def read_image(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read an image file as uint8 RGB (H, W, 3) with EXIF orientation applied."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ImageReadError(path, "no such file") from None
    except OSError as e:
        raise ImageReadError(path, f"cannot read: {e.strerror or e}") from None
    if size == 0:
        raise ImageReadError(path, "empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            old = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = max_pixels
            try:
                with Image.open(path) as im:
                    if im.format not in _FORMATS:
                        raise ImageReadError(path, f"unsupported image format {im.format}")
                    if im.width * im.height > max_pixels:
                        raise ImageReadError(path, f"{im.width}x{im.height} pixels exceeds the limit of "
                                                   f"{max_pixels} (decompression bomb guard)")  # fmt: skip
                    im.load()
                    im = ImageOps.exif_transpose(im)
                    return _to_rgb8(im)
            finally:
                Image.MAX_IMAGE_PIXELS = old
    except ImageReadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageReadError(path, f"too many pixels (decompression bomb guard): {e}") from None
    except UnidentifiedImageError:
        raise ImageReadError(path, "not an image, or a format this program cannot read") from None
    except (OSError, SyntaxError, ValueError) as e:  # truncated / corrupt data
        raise ImageReadError(path, f"corrupt or truncated image: {e}") from None


def _to_rgb8(im: Image.Image) -> np.ndarray:
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        lo, hi = float(a.min()), float(a.max())
        if im.mode.startswith("I;16") and hi <= 65535 and lo >= 0:
            lo, hi = 0.0, 65535.0 if hi > 255 else 255.0
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
    files: list[Path]
    skipped: list[tuple[str, str]]  # (path, reason)


def scan_inputs(inputs: Iterable[str | os.PathLike], recursive: bool = True) -> ScanResult:
    """Image files named by ``inputs`` (files or folders), sorted and without repeats.

    Files of other types inside a folder are skipped with a reason; hidden files
    (names starting with '.') are ignored. A missing input is skipped with a reason.
    """
    files: list[Path] = []
    skipped: list[tuple[str, str]] = []
    seen: set[Path] = set()

    def add(p: Path) -> None:
        rp = p.resolve()
        if rp not in seen:
            seen.add(rp)
            files.append(p)

    for item in inputs:
        p = Path(item)
        if p.is_dir():
            walker = p.rglob("*") if recursive else p.glob("*")
            for f in sorted(walker):
                if not f.is_file() or any(part.startswith(".") for part in f.relative_to(p).parts):
                    continue
                if f.suffix.lower() in SUPPORTED_SUFFIXES:
                    add(f)
                else:
                    skipped.append((str(f), f"unsupported file type {f.suffix or '(no suffix)'}"))
        elif p.is_file():
            if p.suffix.lower() in SUPPORTED_SUFFIXES:
                add(p)
            else:
                skipped.append((str(p), f"unsupported file type {p.suffix or '(no suffix)'}"))
        else:
            skipped.append((str(p), "no such file or folder"))
    return ScanResult(files, skipped)
