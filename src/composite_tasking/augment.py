"""Joint, seeded augmentation of a whole sample: image, every label and the Task Palette.

A *transform* is a callable ``t(sample, rng) -> sample`` on the canonical sample dict
(``image`` (H, W, 3) uint8; ``semseg``, ``parts``, ``edges``, ``saliency`` (H, W) uint8
with 255 = ignore; ``normals`` (H, W, 3) float32, all-zero = invalid; ``palette``
(H, W) uint8, 0 = no task; ``meta``). It returns a new dict (the input is not changed),
draws every random number from the :class:`numpy.random.Generator` it is given and from
nothing else, so the same generator state gives the same result in any process.
Keys that are absent stay absent; ``meta`` and other non-array values pass through.

Geometric transforms move every spatial key together, which keeps the palette aligned
with the image and the labels (the authors' public code computes R2/R3 palettes before
augmentation and does not transform them; see ``docs/`` and paper-notes):

=================  ===========================================================================
key                resampling (:class:`RandomScale`) / padding (:class:`RandomCrop`)
=================  ===========================================================================
image              bilinear / ``image_fill``
semseg, parts      nearest / 255 (ignore)
edges, saliency    nearest / 255 (ignore)
palette            nearest / 0 (no task)
normals            bilinear, renormalised; invalid where any neighbour with a non-zero
                   bilinear weight is invalid / 0 (invalid)
=================  ===========================================================================

All resampling uses pixel centres (``u = (y + 0.5) * H_in / H_out - 0.5``, the
``align_corners=False`` convention); nearest picks ``floor((y + 0.5) * H_in / H_out)``,
which is always the bilinear neighbour with the larger weight, so class maps and the
image stay registered. A horizontal flip negates the x component of the normals
(x right, y up, z towards the camera). One-pixel edges are resampled by nearest too:
they thicken when upscaled and may break when downscaled.

Photometric transforms (:class:`Brightness`, :class:`Contrast`, :class:`Gamma`,
:class:`HueSaturation`, :class:`GaussianNoise`, :class:`GaussianBlur`, :class:`Sharpen`)
change the image only; labels and palette stay bit-identical. They work on [0, 1]
floats and return uint8.

No ImageNet normalisation happens here: the model normalises its input itself.
"""

from __future__ import annotations

import abc

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence, cast

import numpy as np

from .tasks import IGNORE, NO_TASK

__all__ = [
    "Transform",
    "Compose",
    "HFlip",
    "RandomScale",
    "RandomCrop",
    "Brightness",
    "Contrast",
    "Gamma",
    "HueSaturation",
    "GaussianNoise",
    "GaussianBlur",
    "Sharpen",
    "default_augment",
    "resize_sample",
    "rgb_to_hsv",
    "hsv_to_rgb",
    "gaussian_blur",
    "CLASS_KEYS",
    "SPATIAL_KEYS",
    "DEFAULT_IMAGE_FILL",
]

Transform = Callable[[dict, np.random.Generator], dict]

#: integer label maps: nearest resampling, padded with IGNORE
CLASS_KEYS: tuple[str, ...] = ("semseg", "parts", "edges", "saliency")
#: every key a geometric transform moves
SPATIAL_KEYS: tuple[str, ...] = ("image", "palette", *CLASS_KEYS, "normals")
#: image padding colour: about the mean colour of natural images (normalises to ~0)
DEFAULT_IMAGE_FILL: tuple[int, int, int] = (124, 116, 104)


# --------------------------------------------------------------------------- helpers


def _check(sample: Mapping) -> tuple[int, int]:
    """(H, W) shared by every spatial array of ``sample``; errors name the bad key."""
    hw = None
    for key, value in sample.items():
        if not isinstance(value, np.ndarray) or value.ndim < 2:
            continue
        if key not in SPATIAL_KEYS:
            raise ValueError(
                f"sample key {key!r}: augmentation does not know how to move this array; "
                f"known spatial keys: {', '.join(SPATIAL_KEYS)}"
            )
        if hw is None:
            hw = value.shape[:2]
        elif value.shape[:2] != hw:
            raise ValueError(f"sample key {key!r} has shape {value.shape}, expected (H, W) = {hw}")
    if hw is None:
        raise ValueError("the sample holds no image or map to augment")
    return int(hw[0]), int(hw[1])


def _is_spatial(key: str, value) -> bool:
    return key in SPATIAL_KEYS and isinstance(value, np.ndarray)


def _nearest_index(n_out: int, n_in: int) -> np.ndarray:
    idx = np.floor((np.arange(n_out) + 0.5) * (n_in / n_out)).astype(np.intp)
    return np.minimum(idx, n_in - 1)


def _linear_index(n_out: int, n_in: int):
    u = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    u = np.clip(u, 0.0, n_in - 1)
    i0 = np.floor(u).astype(np.intp)
    i1 = np.minimum(i0 + 1, n_in - 1)
    f = (u - i0).astype(np.float32)
    f[i1 == i0] = 0.0
    return i0, i1, f


def _bilinear(a: np.ndarray, ys, xs) -> np.ndarray:
    """Bilinear resampling of (H, W, C) float32 ``a`` with precomputed indices."""
    y0, y1, fy = ys
    x0, x1, fx = xs
    fx = fx[None, :, None]
    top = a[y0][:, x0] * (1 - fx) + a[y0][:, x1] * fx
    bot = a[y1][:, x0] * (1 - fx) + a[y1][:, x1] * fx
    fy = fy[:, None, None]
    return top * (1 - fy) + bot * fy


def _resize_image(img: np.ndarray, ys, xs) -> np.ndarray:
    out = _bilinear(img.astype(np.float32), ys, xs)
    if img.dtype == np.uint8:
        return np.clip(out + 0.5, 0, 255).astype(np.uint8)
    return out.astype(img.dtype)


def _resize_normals(n: np.ndarray, ys, xs) -> np.ndarray:
    y0, y1, fy = ys
    x0, x1, fx = xs
    valid = np.any(n != 0, axis=-1)
    # a neighbour contributes when its bilinear weight is > 0
    ux = (fx > 0)[None, :]
    uy = (fy > 0)[:, None]
    ok = valid[y0][:, x0] & (~ux | valid[y0][:, x1])
    ok &= ~uy | (valid[y1][:, x0] & (~ux | valid[y1][:, x1]))
    out = _bilinear(n.astype(np.float32), ys, xs)
    norm = np.linalg.norm(out, axis=-1)
    ok &= norm > 1e-6
    out = out / np.where(ok, norm, 1.0)[..., None]
    out[~ok] = 0.0
    return out.astype(np.float32)


def resize_sample(sample: Mapping, size: tuple[int, int]) -> dict:
    """Resize every spatial array of ``sample`` to ``size`` = (H, W) (see module doc)."""
    h_in, w_in = _check(sample)
    h, w = int(size[0]), int(size[1])
    if h < 1 or w < 1:
        raise ValueError(f"size must be positive, got {(h, w)}")
    if (h, w) == (h_in, w_in):
        return dict(sample)
    ny, nx = _nearest_index(h, h_in), _nearest_index(w, w_in)
    ly, lx = _linear_index(h, h_in), _linear_index(w, w_in)
    out = {}
    for key, value in sample.items():
        if not _is_spatial(key, value):
            out[key] = value
        elif key == "image":
            out[key] = _resize_image(value, ly, lx)
        elif key == "normals":
            out[key] = _resize_normals(value, ly, lx)
        else:
            out[key] = np.ascontiguousarray(value[ny][:, nx])
    return out


def _fill(key: str, value: np.ndarray, image_fill) -> object:
    if key == "image":
        return np.asarray(image_fill, dtype=value.dtype)
    if key == "normals":
        return 0.0
    if key == "palette":
        return NO_TASK
    return IGNORE


def _as_float(img: np.ndarray) -> np.ndarray:
    if img.dtype == np.uint8:
        return img.astype(np.float32) / 255.0
    return img.astype(np.float32)


def _as_uint8(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _range(value, name: str, centre: float | None = None) -> tuple[float, float]:
    """A (low, high) pair; a scalar ``d`` means ``(centre - d, centre + d)``."""
    if np.isscalar(value):
        # np.isscalar's TypeGuard narrows to numpy's generic, complex and bytes, which float()
        # is not typed for; a range's scalar is a real number (anything else raises here)
        d = float(value)  # type: ignore[arg-type]
        if centre is None:
            return d, d
        return centre - d, centre + d
    lo, hi = (float(v) for v in value)
    if lo > hi:
        raise ValueError(f"{name}: expected low <= high, got {value}")
    return lo, hi


# ------------------------------------------------------------------------ composing


class Compose:
    """Apply transforms in order, all drawing from the same generator."""

    def __init__(self, transforms: Sequence[Transform]):
        self.transforms = list(transforms)

    def __call__(self, sample: Mapping, rng: np.random.Generator) -> dict:
        out = dict(sample)
        for t in self.transforms:
            out = t(out, rng)
        return out

    def __repr__(self) -> str:
        inner = ", ".join(repr(t) for t in self.transforms)
        return f"Compose([{inner}])"


# ------------------------------------------------------------------------ geometric


@dataclass(frozen=True)
class HFlip:
    """Mirror left-right with probability ``p``; the normals' x component is negated."""

    p: float = 0.5

    def __call__(self, sample: Mapping, rng: np.random.Generator) -> dict:
        _check(sample)
        if not rng.random() < self.p:
            return dict(sample)
        out = {}
        for key, value in sample.items():
            if not _is_spatial(key, value):
                out[key] = value
                continue
            flipped = np.ascontiguousarray(value[:, ::-1])
            if key == "normals":
                flipped[..., 0] = -flipped[..., 0]
                flipped[..., 0][flipped[..., 0] == 0] = 0.0  # no -0.0
            out[key] = flipped
        return out


@dataclass(frozen=True)
class RandomScale:
    """Scale by ``s ~ U[scale]`` (both axes), with probability ``p``."""

    scale: tuple[float, float] = (0.75, 1.25)
    p: float = 1.0

    def __post_init__(self):
        lo, hi = _range(self.scale, "scale")
        if lo <= 0:
            raise ValueError(f"scale must be positive, got {self.scale}")

    def __call__(self, sample: Mapping, rng: np.random.Generator) -> dict:
        h, w = _check(sample)
        apply = rng.random() < self.p
        s = rng.uniform(*_range(self.scale, "scale"))
        if not apply:
            return dict(sample)
        return resize_sample(sample, (max(1, round(h * s)), max(1, round(w * s))))


@dataclass(frozen=True)
class RandomCrop:
    """Crop and/or pad to exactly ``size`` = (H, W) (or one int for a square).

    A dimension longer than the target is cropped at a random offset; a shorter one is
    placed at a random offset inside the padding. ``center=True`` uses the central
    offsets instead (deterministic, for evaluation). Padding: ``image_fill`` for the
    image, 255 for label maps, 0 (invalid) for normals, 0 (no task) for the palette.
    """

    size: int | tuple[int, int]
    image_fill: tuple[int, int, int] = DEFAULT_IMAGE_FILL
    center: bool = False

    @property
    def hw(self) -> tuple[int, int]:
        # np.isscalar's TypeGuard: numpy's generic (no int() in its stubs), no narrowing of the other branch
        h, w = (self.size, self.size) if np.isscalar(self.size) else self.size  # type: ignore[misc]
        return int(h), int(w)  # type: ignore[arg-type]

    def __post_init__(self):
        if min(self.hw) < 1:
            raise ValueError(f"crop size must be positive, got {self.size}")

    def __call__(self, sample: Mapping, rng: np.random.Generator) -> dict:
        h_in, w_in = _check(sample)
        h, w = self.hw
        ry, rx = rng.random(), rng.random()
        if self.center:
            ry = rx = 0.5

        def offsets(n_in: int, n: int, r: float) -> tuple[int, int, int]:
            # (source start, destination start, length)
            k = abs(n_in - n)
            o = min(int(r * (k + 1)), k) if not self.center else k // 2
            return (o, 0, n) if n_in >= n else (0, o, n_in)

        sy, dy, ly = offsets(h_in, h, ry)
        sx, dx, lx = offsets(w_in, w, rx)
        out = {}
        for key, value in sample.items():
            if not _is_spatial(key, value):
                out[key] = value
                continue
            canvas = np.empty((h, w) + value.shape[2:], dtype=value.dtype)
            canvas[...] = _fill(key, value, self.image_fill)
            canvas[dy : dy + ly, dx : dx + lx] = value[sy : sy + ly, sx : sx + lx]
            out[key] = canvas
        return out


# ---------------------------------------------------------------------- photometric


class _Photometric(abc.ABC):
    """Base of image-only transforms: draw, then change ``image`` with probability p."""

    p: float

    @abc.abstractmethod
    def _apply(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The changed image (float, [0, 1]); each subclass is one change."""

    def __call__(self, sample: Mapping, rng: np.random.Generator) -> dict:
        out = dict(sample)
        if not rng.random() < self.p or sample.get("image") is None:
            return out
        out["image"] = _as_uint8(self._apply(_as_float(np.asarray(sample["image"])), rng))
        return out


@dataclass(frozen=True)
class Brightness(_Photometric):
    """Add ``d ~ U[-delta, delta]`` (image in [0, 1])."""

    delta: float = 0.15
    p: float = 0.5

    def _apply(self, img, rng):
        return img + np.float32(rng.uniform(-self.delta, self.delta))


@dataclass(frozen=True)
class Contrast(_Photometric):
    """Scale the deviation from the image's mean grey by ``c ~ U[factor]``."""

    factor: tuple[float, float] = (0.7, 1.3)
    p: float = 0.5

    def _apply(self, img, rng):
        c = np.float32(rng.uniform(*_range(self.factor, "factor")))
        mean = img.mean(dtype=np.float64).astype(np.float32)
        return (img - mean) * c + mean


@dataclass(frozen=True)
class Gamma(_Photometric):
    """``x ** g`` with ``log g ~ U[log gamma]``."""

    gamma: tuple[float, float] = (0.7, 1.5)
    p: float = 0.5

    def _apply(self, img, rng):
        lo, hi = _range(self.gamma, "gamma")
        g = np.float32(np.exp(rng.uniform(np.log(lo), np.log(hi))))
        return np.power(np.clip(img, 0, 1), g)


def rgb_to_hsv(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) RGB in [0, 1] -> HSV in [0, 1] (hue as a fraction of a turn)."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    mx = rgb.max(axis=-1)
    mn = rgb.min(axis=-1)
    d = mx - mn
    safe = np.where(d > 0, d, 1.0)
    h = np.where(mx == r, (g - b) / safe,
                 np.where(mx == g, 2.0 + (b - r) / safe, 4.0 + (r - g) / safe))  # fmt: skip
    h = np.where(d > 0, (h / 6.0) % 1.0, 0.0)
    s = np.where(mx > 0, d / np.where(mx > 0, mx, 1.0), 0.0)
    return np.stack([h, s, mx], axis=-1).astype(np.float32)


def hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """Inverse of :func:`rgb_to_hsv`."""
    h, s, v = hsv[..., 0] % 1.0, hsv[..., 1], hsv[..., 2]
    i = np.floor(h * 6.0)
    f = h * 6.0 - i
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    i = i.astype(np.intp) % 6
    r = np.choose(i, [v, q, p, p, t, v])
    g = np.choose(i, [t, v, v, q, p, p])
    b = np.choose(i, [p, p, t, v, v, q])
    return np.stack([r, g, b], axis=-1).astype(np.float32)


@dataclass(frozen=True)
class HueSaturation(_Photometric):
    """Shift hue by ``U[-hue, hue]`` turns and scale saturation by ``U[saturation]``."""

    hue: float = 0.05
    saturation: tuple[float, float] = (0.7, 1.3)
    p: float = 0.5

    def _apply(self, img, rng):
        dh = rng.uniform(-self.hue, self.hue)
        sat = rng.uniform(*_range(self.saturation, "saturation"))
        hsv = rgb_to_hsv(np.clip(img, 0, 1))
        hsv[..., 0] = (hsv[..., 0] + dh) % 1.0
        hsv[..., 1] = np.clip(hsv[..., 1] * sat, 0, 1)
        return hsv_to_rgb(hsv)


@dataclass(frozen=True)
class GaussianNoise(_Photometric):
    """Add i.i.d. Gaussian noise of standard deviation ``U[std]`` (image in [0, 1])."""

    std: tuple[float, float] = (0.0, 0.03)
    p: float = 0.3

    def _apply(self, img, rng):
        sd = rng.uniform(*_range(self.std, "std"))
        return img + rng.standard_normal(img.shape, dtype=np.float32) * np.float32(sd)


def gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of (H, W, C) float32, edges reflected."""
    if sigma <= 0:
        return img
    r = max(1, int(np.ceil(3 * sigma)))
    x = np.arange(-r, r + 1, dtype=np.float32)
    k = np.exp(-0.5 * (x / np.float32(sigma)) ** 2)
    k /= k.sum()
    out = img
    for axis in (0, 1):
        n = out.shape[axis]
        widths = [(r, r) if a == axis else (0, 0) for a in range(out.ndim)]
        padded = np.pad(out, widths, mode="reflect" if n > r else "edge")
        acc = np.zeros_like(out)
        for j, kj in enumerate(k):
            sl = [slice(None)] * out.ndim
            sl[axis] = slice(j, j + n)
            acc += kj * padded[tuple(sl)]
        out = acc
    return out


@dataclass(frozen=True)
class GaussianBlur(_Photometric):
    """Gaussian blur with ``sigma ~ U[sigma]`` pixels."""

    sigma: tuple[float, float] = (0.3, 1.2)
    p: float = 0.2

    def _apply(self, img, rng):
        return gaussian_blur(img, float(rng.uniform(*_range(self.sigma, "sigma"))))


@dataclass(frozen=True)
class Sharpen(_Photometric):
    """Unsharp mask: ``x + a * (x - blur(x, 1 px))`` with ``a ~ U[amount]``."""

    amount: tuple[float, float] = (0.2, 1.0)
    p: float = 0.2

    def _apply(self, img, rng):
        a = np.float32(rng.uniform(*_range(self.amount, "amount")))
        return img + a * (img - gaussian_blur(img, 1.0))


# ------------------------------------------------------------------------ recipes


def default_augment(
    size: int | tuple[int, int] | None = 256,
    *,
    flip: bool = True,
    scale: tuple[float, float] | None = (0.75, 1.25),
    photometric: bool = True,
    image_fill: tuple[int, int, int] = DEFAULT_IMAGE_FILL,
) -> Compose:
    """The training augmentation of the paper's recipe (without CLAHE).

    Horizontal flip (normals negated correctly), random scale, random crop/pad to
    ``size`` (None: keep the size), then brightness, contrast, gamma, hue/saturation,
    noise, blur or sharpen on the image only.
    """
    ops: list[Transform] = []
    if flip:
        ops.append(HFlip())
    if scale is not None:
        ops.append(RandomScale(cast("tuple[float, float]", tuple(scale))))  # a recipe's list too; a pair (_range)
    if size is not None:
        ops.append(RandomCrop(size, image_fill=image_fill))
    if photometric:
        ops += [Brightness(), Contrast(), Gamma(), HueSaturation(), GaussianNoise(),
                GaussianBlur(), Sharpen()]  # fmt: skip
    return Compose(ops)
