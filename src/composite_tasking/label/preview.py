"""The contact sheet a labelling run writes beside its store, made from the store.

After a run, :func:`store_preview` reads the first :data:`PREVIEW_IMAGES` complete
images of the run's inputs back from the store (labelled by this run or an earlier one,
corrected by a person: as they are stored) and :func:`contact_sheet` draws them: column
titles, per row the image, its Task Palette and the composite pseudo-labels, each
scaled to fit a ``thumb`` x ``thumb`` box keeping its aspect ratio, the image's id
under the row, and a legend of the palette's task colours. The PNG is written
atomically (a temporary file beside it, renamed into place, removed on any failure);
the store is only read.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from ..tasks import TASKS, get_task
from .summary import LabelSummary

__all__ = ["PREVIEW_IMAGES", "COLUMNS", "composite_picture", "contact_sheet", "store_preview", "write_preview"]

#: images (rows) on a contact sheet
PREVIEW_IMAGES = 12
#: the column titles
COLUMNS = ("image", "Task Palette", "pseudo-labels")
#: what the composite's colours mean (drawn under the legend; docs/label-folder.md)
LABEL_COLOURS = ("pseudo-labels: semseg and parts in their class colours; edges and saliency white = yes, "
                 "black = no; normals (n + 1) / 2 as RGB; grey: no label; black: no task")  # fmt: skip
_PAD = 2  # between pictures
_MARGIN = 4  # around text
_BACKGROUND = 255
_LETTERBOX = 235  # the part of a thumbnail's box its picture does not cover


def composite_picture(palette: np.ndarray, labels: Mapping[str, np.ndarray]) -> np.ndarray:
    """RGB (H, W, 3): at each pixel, the label of the task the palette asks for there
    (:func:`~composite_tasking.visualize.colorize`); black where it asks for none."""
    from ..visualize import colorize

    pic = np.zeros((*palette.shape, 3), np.uint8)
    for name, label in labels.items():
        region = palette == get_task(name).palette_value
        if region.any():
            pic[region] = colorize(name, label)[region]
    return pic


def _rgb(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype != np.uint8:
        a = np.clip(a, 0, 255).astype(np.uint8)
    if a.ndim == 2:
        a = a[..., None]
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    return np.ascontiguousarray(a[..., :3])


def _box_size(shape: tuple[int, int], thumb: int) -> tuple[int, int]:
    """(height, width) of a picture of ``shape`` fitted into a thumb x thumb box."""
    h, w = shape
    scale = min(thumb / w, thumb / h)
    return max(1, min(thumb, round(h * scale))), max(1, min(thumb, round(w * scale)))


def _nearest(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``a`` (H, W, ...) resampled to ``size`` by the nearest pixel: labels and palettes
    keep their values (no colour is made up), and only the pixels shown are coloured."""
    h, w = a.shape[:2]
    ys = np.minimum(((np.arange(size[0]) + 0.5) * (h / size[0])).astype(np.intp), h - 1)
    xs = np.minimum(((np.arange(size[1]) + 0.5) * (w / size[1])).astype(np.intp), w - 1)
    return a[ys[:, None], xs[None, :]]


def _letterbox(pic: np.ndarray, thumb: int) -> np.ndarray:
    """``pic`` centred in a thumb x thumb box."""
    box = np.full((thumb, thumb, 3), _LETTERBOX, np.uint8)
    h, w = pic.shape[:2]
    y, x = (thumb - h) // 2, (thumb - w) // 2
    box[y : y + h, x : x + w] = pic
    return box


def _pictures(image: np.ndarray, palette: np.ndarray | None, labels: Mapping[str, np.ndarray],
              thumb: int) -> tuple[list[np.ndarray], np.ndarray]:  # fmt: skip
    """The row's three thumbnails (image, palette, composite) and its palette as shown."""
    from PIL import Image

    from ..visualize import colorize_palette

    image = _rgb(image)
    size = _box_size(image.shape[:2], thumb)
    # Image.LANCZOS: set by a loop in PIL.Image, so not in its annotations (Image.Resampling
    # needs Pillow >= 9.1; pyproject allows 9.0)
    lanczos = Image.LANCZOS  # type: ignore[attr-defined]
    small = np.asarray(Image.fromarray(image).resize(size[::-1], lanczos, reducing_gap=3.0))
    if palette is None:  # a stored image without a palette: nothing was asked
        pal, composite = np.zeros(size, np.uint8), np.zeros((*size, 3), np.uint8)
    else:
        pal = _nearest(palette, size)
        composite = composite_picture(pal, {t: _nearest(lab, size) for t, lab in labels.items()})
    return [_letterbox(small, thumb), _letterbox(colorize_palette(pal), thumb), _letterbox(composite, thumb)], pal


def _shorten(text: str, font, width: int) -> str:
    """``text``, or its end after '...' when it is wider than ``width`` (a long id's file
    name is at its end)."""
    if font.getlength(text) <= width:
        return text
    lo, hi = 0, len(text)  # the longest end that fits
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if font.getlength("..." + text[len(text) - mid :]) <= width:
            lo = mid
        else:
            hi = mid - 1
    return "..." + text[len(text) - lo :]


def _wrap(text: str, font, width: int) -> list[str]:
    lines: list[str] = []
    for word in text.split(" "):
        if lines and font.getlength(f"{lines[-1]} {word}") <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines


def contact_sheet(rows: Iterable[tuple[str, np.ndarray, np.ndarray | None, Mapping[str, np.ndarray]]],
                  path: str | os.PathLike, thumb: int = 160) -> Path | None:  # fmt: skip
    """A PNG at ``path``: per row ``(image_id, image, palette, labels)`` (labels: task ->
    label map, as in the store), the image, its palette and the composite pseudo-labels
    (each fitted into a thumb x thumb box keeping its aspect), the id under them; column
    titles above, a legend of the task colours below. Written atomically: a temporary
    file beside ``path`` renamed into place, removed on any failure (the error is
    raised). None (nothing written) without rows."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    line = int(max(font.getbbox("Ag")[3], 10)) + 2 * _MARGIN  # one line of text and its margins (pixels)
    width = 3 * thumb + 2 * _PAD
    pictures, names, present = [], [], set()
    for image_id, image, palette, labels in rows:
        pics, shown = _pictures(image, palette, labels, thumb)
        pictures.append(pics)
        present |= set(np.flatnonzero(np.bincount(shown.ravel(), minlength=1)).tolist())
        names.append(_shorten(str(image_id), font, width - 2 * _MARGIN))
    if not pictures:
        return None
    # the legend: a swatch and a name per task the palettes ask for, then what the colours mean
    entries = [(t.color, t.name) for t in TASKS if t.palette_value in present]
    if 0 in present or not entries:
        entries.append(((0, 0, 0), "no task"))
    swatch = line - 2 * _MARGIN
    legend = [(None, "Task Palette:"), *entries]  # (colour or None for a heading, text), laid out in lines
    legend_rows: list[list[tuple[tuple[int, int, int] | None, str, int]]] = [[]]
    x = _MARGIN
    for colour, text in legend:
        w = (0 if colour is None else swatch + 3) + int(font.getlength(text)) + 10
        if legend_rows[-1] and x + w > width:
            legend_rows.append([])
            x = _MARGIN
        legend_rows[-1].append((colour, text, x))
        x += w
    notes = _wrap(LABEL_COLOURS, font, width - 2 * _MARGIN)

    row_h = thumb + line
    height = line + len(pictures) * row_h + (len(legend_rows) + len(notes)) * line
    sheet = Image.new("RGB", (width, height), (_BACKGROUND,) * 3)
    draw = ImageDraw.Draw(sheet)
    for j, title in enumerate(COLUMNS):  # centred over its column
        x0 = j * (thumb + _PAD)
        draw.text((x0 + (thumb - font.getlength(title)) / 2, _MARGIN), title, fill=(0, 0, 0), font=font)
    y = line
    for pics, name in zip(pictures, names):
        for j, pic in enumerate(pics):
            sheet.paste(Image.fromarray(pic), (j * (thumb + _PAD), y))
        draw.text((_MARGIN, y + thumb + _MARGIN), name, fill=(0, 0, 0), font=font)
        y += row_h
    for legend_row in legend_rows:
        for colour, text, x in legend_row:
            if colour is not None:
                draw.rectangle([x, y + _MARGIN, x + swatch - 1, y + _MARGIN + swatch - 1], fill=colour,
                               outline=(128, 128, 128))  # fmt: skip
                x += swatch + 3
            draw.text((x, y + _MARGIN), text, fill=(0, 0, 0), font=font)
        y += line
    for note in notes:
        draw.text((_MARGIN, y + _MARGIN), note, fill=(0, 0, 0), font=font)
        y += line
    return _write_atomically(sheet, Path(path))


def _write_atomically(picture, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    # a name of its own: shards finishing together write the same preview path
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp.png")
    try:
        picture.save(tmp, format="PNG")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise
    return path


def store_preview(store, ids: Iterable[str], path: str | os.PathLike, *, thumb: int = 160,
                  count: int = PREVIEW_IMAGES) -> Path | None:  # fmt: skip
    """The contact sheet of the first ``count`` of ``ids`` (complete images of ``store``,
    a :class:`~composite_tasking.store.LabelStore`, in the order wanted) read back from
    the store: its labels as stored (a person's corrections included), its pixels (of the
    file, for an image stored by reference). An image that cannot be read back (removed
    meanwhile, its file gone) is passed over for the next one. Only reads the store.
    Returns the path written, None when no image could be read; raises the
    :class:`OSError` of writing the sheet."""
    from ..images import ImageReadError
    from ..store import StoreError

    def rows():
        n = 0
        for image_id in ids:
            if n >= count:
                return
            try:
                s = store.read_sample(image_id, maps=False)
                image = store.image_pixels(s)
            except (StoreError, ImageReadError, OSError):
                continue
            n += 1
            yield image_id, image, s.palette, s.labels

    return contact_sheet(rows(), path, thumb=thumb)


def write_preview(summary: LabelSummary, store, ids: list[str], complete_before: Iterable[str],
                  shard: tuple[int, int] | None, path: Path) -> None:  # fmt: skip
    """The contact sheet of a run, from the store: the first :data:`PREVIEW_IMAGES`
    complete images of ``ids`` (every input's, in input order; ``complete_before``: the
    store's complete images when the run started), into ``summary.preview``; a failure
    to write it into ``summary.preview_error`` (the labels and the store are not
    concerned). A run's own images are complete when they were before or were written
    now; another shard's are asked of the store, at most PREVIEW_IMAGES per shard."""
    from ..store import StoreError

    known = set(complete_before) | set(summary.done)
    i, n = shard if shard is not None else (0, 1)
    asks = PREVIEW_IMAGES * n

    def complete():
        nonlocal asks
        for k, image_id in enumerate(ids):
            if image_id in known:
                yield image_id
            elif k % n != i and asks > 0:  # another shard's: labelled meanwhile?
                asks -= 1
                try:
                    if store.is_complete(image_id):
                        yield image_id
                except (StoreError, OSError):
                    continue

    try:
        summary.preview = store_preview(store, complete(), path)
    except OSError as e:
        summary.preview_error = (f"the preview {path} was not written: {e.strerror or e}; every image written "
                                 f"is complete and the store {summary.store} is valid: run the same command "
                                 "again to write the preview (complete images are skipped)")  # fmt: skip
