"""What every ``ctn`` command shares: the exit codes, the types of its arguments, and
the checks made before anything is written (:class:`Usage`: exit 2, one line)."""

from __future__ import annotations

import argparse
import errno
import os
import re
import tempfile
from pathlib import Path

EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, EXIT_STOPPED = 0, 1, 2, 3


def size(text: str) -> tuple[int, int]:
    try:
        parts = [int(p) for p in text.lower().replace("x", ",").split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be S or HxW, got {text!r}") from None
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"size must be S or HxW with positive numbers, got {text!r}")
    return parts[0], parts[1]


def minutes(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected minutes (a number), got {text!r}") from None
    if not v > 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"expected minutes > 0, got {text!r}")
    return v


def scale(text: str) -> str:
    from composite_tasking.scale import parse_scale

    try:
        return str(parse_scale(text))
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def nonneg(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {v}")
    return v


def world(text: str) -> str:
    from ..synthetic.worlds import WORLDS

    if text not in WORLDS:
        raise argparse.ArgumentTypeError(f"unknown world {text!r}; known worlds: {', '.join(WORLDS)}")
    return text


class Usage(Exception):
    """A usage error of ``ctn label`` found before anything is written (exit 2)."""


def _default_overlap(tile: int) -> int:
    """--overlap when not given: 128 pixels, less for tiles under 512 (below tile / 2)."""
    return min(128, tile // 4)


def check_tile(tile: int, overlap: int | None) -> int:
    """The overlap to use, or :class:`Usage` with the real limits."""
    if tile < 64:
        raise Usage(f"--tile takes 64 or more pixels, got {tile}")
    if overlap is None:
        return _default_overlap(tile)
    if not 0 <= overlap < tile // 2:
        raise Usage(f"--overlap takes 0 to {tile // 2 - 1} pixels with --tile {tile} (below half a "
                     f"tile), got {overlap}")  # fmt: skip
    return overlap


def check_device(spec: str) -> None:
    from ..device import DEVICES, pick_device

    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", spec):  # before torch is imported: at once
        raise Usage(f"--device takes {DEVICES} (I: the index of a CUDA device), got {spec!r}")
    if spec.startswith("cuda") or spec == "mps":
        try:
            pick_device(spec)
        except ValueError as e:
            raise Usage(f"--device {spec}: {e}") from None


def _check_writable(path: Path, what: str) -> None:
    """:class:`Usage` unless ``path`` can be written: its nearest existing folder above
    is a folder this process can create files in (tried with a hidden file, removed)."""
    place = path.parent
    while not os.path.lexists(place) and place != place.parent:
        place = place.parent
    if not place.is_dir():
        raise Usage(f"{what} {path}: {place} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".ctn-write-test-", dir=place)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise Usage(f"{what} {path}: cannot write in {place}: {e.strerror or e}") from None


def set_storage_options(args: argparse.Namespace) -> None:
    """``--storage-option KEY=VALUE`` (repeatable): the options of every object-store URL
    the command opens (store.location), in ``args.storage_options``; :class:`Usage`
    when one is malformed."""
    from ..store.location import parse_storage_options, use_storage_options

    try:
        args.storage_options = parse_storage_options(getattr(args, "storage_option", None)) or None
    except ValueError as e:
        raise Usage(str(e)) from None
    use_storage_options(args.storage_options)


def check_bucket(url: str) -> None:
    """:class:`Usage` (one line, naming the URL) unless the bucket of ``url`` can be used."""
    from ..store.location import LocationError, Remote, locate

    try:
        where = locate(url)
        assert isinstance(where, Remote)  # url is an object store's
        where.check()
    except LocationError as e:
        raise Usage(str(e)) from None


def check_outputs(out: Path | None, preview: Path | None) -> None:
    if out is None:  # a store in an object store
        pass
    elif out.is_dir():
        pass  # an existing store: opening it says whether it can be written
    elif os.path.lexists(out):
        raise Usage(f"--out {out} is a file; the label store is a folder (e.g. labels.zarr)")
    else:
        _check_writable(out, "--out")
    if preview is None:
        return
    if preview.is_dir():
        raise Usage(f"--preview {preview} is a folder; give the path of a .png file")
    if preview.suffix.lower() != ".png":
        raise Usage(f"--preview {preview}: the contact sheet is a PNG; give a path ending in .png")
    _check_writable(preview, "--preview")


def check_inputs(inputs: list[str], urls: bool = False) -> None:
    """:class:`Usage` when not one input exists (a mistyped name: nothing to label);
    ``urls``: object-store inputs were given too (listed when the run starts)."""
    if urls or any(os.path.exists(p) for p in inputs):
        return

    def why(p: str) -> str:
        if not os.path.islink(p):
            return p
        try:
            os.stat(p)
        except OSError as e:
            if e.errno == errno.ELOOP:
                return f"{p} (a symbolic link loop)"
        return f"{p} (a broken symbolic link)"

    raise Usage(f"no such file or folder: {', '.join(map(why, inputs))}")


def os_error(e: OSError, where_else: Path) -> str:
    """One line: the path(s) (``where_else`` when the error names none: a write into an
    open file), the OS's reason, and what was being done (the exception's notes)."""
    reason = e.strerror or str(e)
    where = e.filename if e.filename is not None else where_else
    if where is not None and e.filename2 is not None:
        where = f"{where} -> {e.filename2}"
    text = f"{where}: {reason}"
    notes = [n.strip() for n in getattr(e, "__notes__", ()) if str(n).strip()]
    return text + (f" ({'; '.join(notes)})" if notes else "")
