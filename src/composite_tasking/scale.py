"""The working resolution: predict at the scale the model knows, label at full resolution.

A network sees objects at the sizes it was trained on. The bundled CTN learned
256 x 256 scenes; a 12-megapixel photo shows the same objects ten times larger, and
predicting on it at full resolution is both worse and slower (the working-resolution
issue measured 768-pixel scenes: worse on every task, 9x the time). So the image is
resized to a *working shape*, the network runs there, and the labels are brought back
to the image's own pixels:

- :func:`parse_scale`: ``auto``, ``none``, a factor (``0.5``) or a long side in pixels
  (``512`` or ``512px``);
- :func:`working_shape`: the shape an image is predicted at. ``auto`` shrinks an image
  whose long side is beyond what the model saw (its training size times the largest
  scale of its training augmentation) to a long side of the training size; it never
  enlarges (a small image has no more detail to give, and would cost pixels);
- :func:`downsample_palette`: the palette at the working shape, by nearest neighbour
  (each working pixel takes the palette value at its centre);
- :func:`upsample_composite`: the composite output back at full resolution, task by
  task: each task's values (the sigmoids of the output for class and probability
  tasks, the raw output for normals) interpolated bilinearly from the working pixels
  the working palette gave that task only, so a label never mixes two tasks' outputs.
  The labels are then defined exactly where the full-size palette asks. A full-size
  palette pixel of a task that no working pixel near it was given (a stroke thinner
  than a working pixel) is predicted in extra decoding rounds at working resolution,
  with that task put at the working pixel under it.

Decoding the upsampled output (:func:`composite_tasking.prediction.decode_labels` with
``thin_edges``) thins the edge labels by non-maximum suppression across the edge, so a
1-pixel edge at working resolution is a 1-pixel edge at full resolution.

numpy only (no torch): the Predictor and ``ctn evaluate`` resize the image on their
device and call these with their own decode.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np

from .tasks import TASKS

__all__ = ["Scale", "parse_scale", "trained_size", "working_shape", "downsample_palette",
           "upsample_composite", "DEFAULT_TRAINED_SIZE", "SCALE_HELP"]  # fmt: skip

#: the image size assumed for a model trained on photos, or that records nothing: PASCAL's
#: images are about 500 x 375 (the paper's crops 512)
DEFAULT_TRAINED_SIZE = 512
#: the largest scale of the training augmentation assumed when a recipe records none
DEFAULT_AUGMENT_MAX = 1.25

SCALE_HELP = ("the resolution the network works at: auto (shrink images larger than what the "
              "model was trained on to its training size; never enlarge), none (every pixel), a "
              "factor (0.5) or a long side in pixels (512 or 512px); labels are always at the "
              "image's own size")  # fmt: skip


@dataclass(frozen=True)
class Scale:
    """A working-resolution setting: ``mode`` is auto, none, factor or pixels."""

    mode: str
    value: float | int | None = None

    def __str__(self) -> str:
        if self.mode == "factor":
            return f"{self.value:g}"
        if self.mode == "pixels":
            return f"{self.value}px"
        return self.mode


def parse_scale(spec: str | float | int | Scale | None) -> Scale:
    """``auto``, ``none`` (or None), a factor in (0, 8] such as ``0.5``, or a long side in
    pixels, ``512`` or ``512px`` (an integer of 16 or more without a unit is pixels)."""
    if isinstance(spec, Scale):
        return spec
    if spec is None:
        return Scale("none")
    text = str(spec).strip().lower()
    if text in ("auto", "none"):
        return Scale(text)
    m = re.fullmatch(r"(\d+)\s*px", text)
    if m or re.fullmatch(r"\d+", text) and int(text) >= 16:
        px = int(m.group(1) if m else text)
        if px < 16:
            raise ValueError(f"a working long side is 16 pixels or more, got {spec!r}")
        return Scale("pixels", px)
    try:
        f = float(text)
    except ValueError:
        raise ValueError(f"scale is auto, none, a factor (0.5) or a long side in pixels (512px), "
                         f"not {spec!r}") from None  # fmt: skip
    if not (math.isfinite(f) and 0 < f <= 8):
        raise ValueError(f"a scale factor is above 0 and at most 8, got {spec!r}")
    return Scale("factor", f)


def trained_size(provenance: dict | None) -> tuple[int, float]:
    """``(size, largest augmentation scale)`` of the images the model was trained on,
    from its checkpoint's provenance: the size of its synthetic scenes (``train.size``,
    256 for the bundled CTN); for photos (PASCAL-MT, a label store) or a model that
    records nothing, :data:`DEFAULT_TRAINED_SIZE` (PASCAL's images are about 500 x 375,
    the paper's crops 512). A training *crop* does not count: cropping cuts a window out
    of the image and leaves its objects at the image's scale. The augmentation's
    largest scale (``augment.scale``) widens the range of sizes the model knows;
    :data:`DEFAULT_AUGMENT_MAX` where none is recorded."""
    recipe = (provenance or {}).get("recipe") or {}
    train = recipe.get("train")
    if not isinstance(train, dict):
        train = {}
    size = train.get("size") if train.get("kind", "synthetic") == "synthetic" else None
    if not (isinstance(size, (int, float)) and not isinstance(size, bool) and size >= 16):
        size = DEFAULT_TRAINED_SIZE
    augment = recipe.get("augment")
    if not isinstance(augment, dict):
        augment = {}
    aug = augment.get("scale")
    top = max(aug) if isinstance(aug, (list, tuple)) and aug else DEFAULT_AUGMENT_MAX
    return int(size), float(max(1.0, top))


def working_shape(shape: tuple[int, int], scale: Scale | str, trained: tuple[int, float]) -> tuple[int, int]:
    """The (h, w) an image of ``shape`` is predicted at (``shape`` itself: no resizing)."""
    scale = parse_scale(scale)
    h, w = int(shape[0]), int(shape[1])
    long = max(h, w)
    if scale.mode == "none":
        return h, w
    if scale.mode == "auto":
        size, top = trained
        if long <= size * top:
            return h, w
        f = size / long
    else:  # pixels or a factor: these have a value
        assert scale.value is not None
        f = scale.value / long if scale.mode == "pixels" else float(scale.value)
    if abs(f - 1.0) < 1e-9:
        return h, w
    return max(1, round(h * f)), max(1, round(w * f))


def _centres(n_full: int, n_small: int) -> np.ndarray:
    """The working index each full-resolution row (or column) falls in."""
    return np.minimum(((np.arange(n_full) + 0.5) * (n_small / n_full)).astype(np.int64), n_small - 1)


def downsample_palette(palette: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The palette at ``shape``: each working pixel takes the value at its centre."""
    palette = np.asarray(palette)
    h, w = palette.shape
    ys = np.minimum(((np.arange(shape[0]) + 0.5) * (h / shape[0])).astype(np.int64), h - 1)
    xs = np.minimum(((np.arange(shape[1]) + 0.5) * (w / shape[1])).astype(np.int64), w - 1)
    return np.ascontiguousarray(palette[np.ix_(ys, xs)])


def _sigmoid(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-x.astype(np.float64)))


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-15, 1 - 1e-15)
    return np.log(p) - np.log1p(-p)


def _bilinear(n_full: int, n_small: int, lo: int, hi: int):
    """Bilinear source indices and weights (align_corners=False) of full rows lo..hi."""
    c = (np.arange(lo, hi) + 0.5) * (n_small / n_full) - 0.5
    c = np.clip(c, 0, n_small - 1)
    i0 = np.floor(c).astype(np.int64)
    i1 = np.minimum(i0 + 1, n_small - 1)
    t = c - i0
    return i0, i1, t


def upsample_composite(
    decode: Callable[[np.ndarray, np.ndarray], np.ndarray],
    palette: np.ndarray,
    small_palette: np.ndarray,
    small_output: np.ndarray,
    tasks: Iterable[str],
    window: tuple[int, int, int, int] | None = None,
) -> np.ndarray:
    """The composite output (3, H, W) at full resolution (or of ``window`` = (y0, y1,
    x0, x1) of it), from ``small_output`` (3, h, w) decoded under ``small_palette``.

    Each task asked for by ``palette`` (H, W) is interpolated from the working pixels of
    that task only (0 where the palette asks for nothing). ``decode(small_palette,
    region)`` decodes at working resolution under another palette where ``region``
    (h, w) bool says; it is called only for full-size pixels of a task with no working
    pixel of it within their bilinear footprint (a stroke thinner than a working
    pixel), which get that task at the working pixel under them, round by round.
    """
    palette = np.asarray(palette)
    H, W = palette.shape
    h, w = small_palette.shape
    y0, y1, x0, x1 = (0, H, 0, W) if window is None else window
    pal = palette[y0:y1, x0:x1]
    out = np.zeros((3, y1 - y0, x1 - x0), np.float32)
    iy0, iy1, ty = _bilinear(H, h, y0, y1)
    ix0, ix1, tx = _bilinear(W, w, x0, x1)
    cy, cx = _centres(H, h)[y0:y1], _centres(W, w)[x0:x1]
    wanted = [t for t in TASKS if t.name in set(tasks) and (pal == t.palette_value).any()]

    # per task: its values at working resolution and where they are defined
    def space(out: np.ndarray) -> dict[str, np.ndarray]:
        """An output in the spaces tasks interpolate in: raw (normals), sigmoid (the others)."""
        raw = out.astype(np.float64)
        return {"vector": raw, "other": _sigmoid(raw)}

    def of(t, spaces: dict[str, np.ndarray]) -> np.ndarray:
        return spaces["vector" if t.kind == "vector" else "other"]

    first = space(small_output)
    values = {t.name: of(t, first) for t in wanted}  # shared arrays: replaced, never written in place
    support = {t.name: small_palette == t.palette_value for t in wanted}

    def gather(t, yy, xx):
        """Interpolated values (3, K) and weights (K,) at full pixels (yy, xx) of the window."""
        v, s = values[t.name], support[t.name].astype(np.float64)
        a0, a1, wy = iy0[yy], iy1[yy], ty[yy]
        b0, b1, wx = ix0[xx], ix1[xx], tx[xx]
        num = np.zeros((3, len(yy)))
        den = np.zeros(len(yy))
        for a, b, wgt in ((a0, b0, (1 - wy) * (1 - wx)), (a0, b1, (1 - wy) * wx),
                          (a1, b0, wy * (1 - wx)), (a1, b1, wy * wx)):  # fmt: skip
            k = wgt * s[a, b]
            num += v[:, a, b] * k
            den += k
        return num, den

    missing: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for t in wanted:
        yy, xx = np.nonzero(pal == t.palette_value)
        num, den = gather(t, yy, xx)
        ok = den > 1e-12
        _put(out, t, yy[ok], xx[ok], num[:, ok] / den[ok])
        if not ok.all():
            missing[t.name] = (yy[~ok], xx[~ok])
    by_name = {t.name: t for t in wanted}
    for _ in range(len(wanted)):  # each round settles at least one task's strokes
        if not missing:
            break
        extra = small_palette.copy()
        for name, (yy, xx) in missing.items():
            extra[cy[yy], cx[xx]] = by_name[name].palette_value
        region = extra != small_palette
        more = space(decode(extra, region))
        still = {}
        for name, (yy, xx) in missing.items():
            t = by_name[name]
            mine = region & (extra == t.palette_value)
            values[name] = np.where(mine[None], of(t, more), values[name])
            support[name] = support[name] | mine
            num, den = gather(t, yy, xx)
            ok = den > 1e-12
            _put(out, t, yy[ok], xx[ok], num[:, ok] / den[ok])
            if not ok.all():
                still[name] = (yy[~ok], xx[~ok])
        missing = still
    return out


def _put(out: np.ndarray, task, yy: np.ndarray, xx: np.ndarray, v: np.ndarray) -> None:
    """Interpolated values back into the composite output (logits for sigmoid tasks)."""
    out[:, yy, xx] = (v if task.kind == "vector" else _logit(v)).astype(np.float32)
