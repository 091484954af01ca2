"""Region-limited decoding: the CTN decoder computes only the pixels a palette asks for.

At 512 x 512 the decoder's full-resolution and stride-2 levels (image skip, dec1, dec0)
hold most of the network's FLOPs. :func:`decode_windows` runs the coarse levels (the
stride-32 skip and the decoder stages down to ``global_level``, a few percent of the
cost) on the whole image, and the finer levels only on windows: rectangles of the
output, each grown at every level by exactly the halo that level's operations need.

Why it is exact (up to float rounding) inside each window:

- every conditioning operation is per pixel (1x1), and in eval mode BatchNorm is a
  per-channel affine map, so a block's output at a pixel depends only on its conv's
  k x k neighbourhood; a window grown by ``k // 2`` cells and cut back gives the same
  values, and at the image border the conv's zero padding is the same as the full
  image's (the crop is clamped to the image, never padded with something else);
- the x2 bilinear upsampling uses ``align_corners=True``, whose sampling grid depends on
  the size of the whole map; :func:`upsample_window` evaluates the full map's
  upsampling on a window (same source positions and weights as
  ``F.interpolate``), reading the source cells those positions fall between;
- the palette's conditioning (embedding pyramid or :class:`~.blocks.PureMap`) is built
  on the whole palette and cropped, so cells mixing tasks at a window's edge get the
  same embedding as in the full pass.

The halo a window needs is derived from the decoder's kernels and the upsampling
arithmetic by :func:`plan_window`, per axis and per level; nothing is hand-tuned. Pixels
outside every window get no computation and are returned as 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import PYRAMID_LEVELS, Decoder, PlainBlock, PureMap, TaskCompositionBlock

__all__ = [
    "Window",
    "WindowPlan",
    "plan_window",
    "upsample_window",
    "windows_for_region",
    "decode_windows",
    "DEFAULT_TILE",
    "DEFAULT_GLOBAL_LEVEL",
    "FULL_DECODE_SHARE",
    "palette_reach",
    "change_box",
    "reach_box",
]

#: side of the grid cells a region is covered with (a multiple of 32)
DEFAULT_TILE = 64
#: decoder stages at this stride level and coarser run on the whole image (4 = stride 16)
DEFAULT_GLOBAL_LEVEL = 4
#: when the windows cover at least this share of the image, the plain decoder is cheaper
FULL_DECODE_SHARE = 0.8

Range = tuple[int, int]  # half-open [lo, hi) along one axis


@dataclass(frozen=True)
class Window:
    """A rectangle of the (stride-padded) output: rows [y0, y1), columns [x0, x1)."""

    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def area(self) -> int:
        return (self.y1 - self.y0) * (self.x1 - self.x0)


def _dilate(r: Range, by: int, n: int) -> Range:
    return max(r[0] - by, 0), min(r[1] + by, n)


def _up_scale(n_in: int) -> torch.Tensor:
    """``F.interpolate``'s align_corners=True scale for n_in -> 2 n_in, as it computes it
    (float32 division)."""
    n_out = 2 * n_in
    if n_out <= 1:
        return torch.zeros((), dtype=torch.float32)
    return torch.tensor(float(n_in - 1), dtype=torch.float32) / torch.tensor(float(n_out - 1), dtype=torch.float32)


def _up_indices(r: Range, n_in: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For output positions [lo, hi) of the x2 upsampling of a length-n_in axis: the two
    source indices and the weight of the second, as ``F.interpolate`` computes them."""
    src = torch.arange(r[0], r[1], dtype=torch.float32) * _up_scale(n_in)
    i0 = src.floor().long().clamp_(0, n_in - 1)
    lam = (src - i0.float()).clamp_(0.0, 1.0)
    i1 = torch.where(i0 < n_in - 1, i0 + 1, i0)
    return i0, i1, lam


def _up_source(r: Range, n_in: int) -> Range:
    """The source cells the x2 upsampling reads for output positions [lo, hi)."""
    i0, i1, _ = _up_indices(r, n_in)
    return int(i0.min()), int(i1.max()) + 1


def upsample_window(x: torch.Tensor, have: tuple[Range, Range], size: tuple[int, int],
                    want: tuple[Range, Range]) -> torch.Tensor:  # fmt: skip
    """The x2 ``align_corners=True`` bilinear upsampling of a whole (h, w) map, evaluated
    on the output window ``want`` from ``x``, which holds the map's cells ``have``.

    Separable: rows, then columns, each as ``lerp(a, b, lam)`` on the two source cells
    ``F.interpolate`` reads, in the (N, H, W, C) view of the map (a channels-last map
    stays channels-last, and the gathers copy whole rows of channels).
    ``have`` must contain the source cells of ``want`` (:func:`_up_source`).
    """
    xp = x.permute(0, 2, 3, 1)  # (N, h, w, C): contiguous when x is channels-last
    for dim, h_rng, n_in, w_rng in ((1, have[0], size[0], want[0]), (2, have[1], size[1], want[1])):
        i0, i1, lam = _up_indices(w_rng, n_in)
        if int(i0.min()) < h_rng[0] or int(i1.max()) >= h_rng[1]:
            raise ValueError(f"the cells {h_rng} do not hold the ones the outputs {w_rng} read")
        k = i0.shape[0]
        both = xp.index_select(dim, (torch.cat([i0, i1]) - h_rng[0]).to(x.device))
        a, b = both.split(k, dim=dim)
        shape = [1, 1, 1, 1]
        shape[dim] = -1
        xp = torch.lerp(a, b, lam.to(device=x.device, dtype=x.dtype).view(shape))
    return xp.permute(0, 3, 1, 2)


@dataclass(frozen=True)
class WindowPlan:
    """Per axis (rows, columns) and per stride level 0..G, what a window computes.

    ``x[l]``: the cells of the decoder output at level l the window needs (``x[0]`` is
    the window itself; ``x[G]`` is read from the globally computed map);
    ``dec_in[l]``: the cells of stage l's input (upsampled coarser output ++ skip l);
    ``skip_in[l]``: the encoder feature cells skip block l reads (l >= 1);
    ``image_a[0]`` / ``feat0``: the stride-1 image blocks' crops (two 3x3 convs).
    """

    x: tuple[tuple[Range, Range], ...]
    dec_in: tuple[tuple[Range, Range], ...]
    skip_in: tuple[tuple[Range, Range], ...]
    image_a: tuple[Range, Range]
    feat0: tuple[Range, Range]


def _half_kernel(block: nn.Module) -> int:
    """k // 2 of a decoder block's k x k conv (``decs`` and ``skips`` are ModuleLists of
    blocks, which the type checker sees as plain modules)."""
    return cast("TaskCompositionBlock | PlainBlock", block).conv.kernel_size[0] // 2


def plan_window(window: Window, size: tuple[int, int], decoder: Decoder,
                global_level: int = DEFAULT_GLOBAL_LEVEL) -> WindowPlan:  # fmt: skip
    """The crops each level of ``decoder`` needs for ``window`` of a padded (H, W) output.

    Derived backwards from the window: a k x k conv grows the needed range by k // 2
    cells (clamped to the map: beyond it is the conv's zero padding), the x2 upsampling
    needs the source cells its sampling positions fall between.
    """
    kd, ks = _half_kernel(decoder.decs[0]), _half_kernel(decoder.skips[0])
    ka, kb = _half_kernel(decoder.image_a), _half_kernel(decoder.image_b)
    per_axis = []
    for r0, n in (((window.y0, window.y1), size[0]), ((window.x0, window.x1), size[1])):
        x = [r0]
        dec_in, skip_in = [], []
        for level in range(global_level):
            n_l = n >> level
            d = _dilate(x[level], kd, n_l)
            dec_in.append(d)
            skip_in.append(_dilate(d, ks, n_l))
            x.append(_up_source(d, n >> (level + 1)))
        image_a = _dilate(dec_in[0], kb, n)
        feat0 = _dilate(image_a, ka, n)
        per_axis.append((x, dec_in, skip_in, image_a, feat0))
    (xy, dy, sy, ay, fy), (xx, dx, sx, ax, fx) = per_axis
    return WindowPlan(
        x=tuple(zip(xy, xx)),
        dec_in=tuple(zip(dy, dx)),
        skip_in=tuple(zip(sy, sx)),
        image_a=(ay, ax),
        feat0=(fy, fx),
    )


def windows_for_region(region: torch.Tensor, tile: int = DEFAULT_TILE) -> list[Window]:
    """Cover a boolean region (H, W) (or (N, H, W): the union over the batch) with grid
    cells of ``tile`` pixels, merged along each row of cells into runs, then runs of equal
    extent merged down the rows, each run shrunk to the bounding box of the region inside
    it. Cells the region does not touch are left out."""
    if region.dim() == 3:
        region = region.any(dim=0)
    if region.dim() != 2:
        raise ValueError(f"a region is (H, W) or (N, H, W), got shape {tuple(region.shape)}")
    if tile < 1:
        raise ValueError(f"tile must be positive, got {tile}")
    h, w = region.shape
    gh, gw = -(-h // tile), -(-w // tile)
    padded = F.pad(region.float()[None, None], (0, gw * tile - w, 0, gh * tile - h))
    touched = (F.max_pool2d(padded, tile)[0, 0] > 0).cpu()  # (gh, gw)
    runs: list[list[int]] = []  # [row0, row1, col0, col1) in grid cells
    for gy in range(gh):
        row = touched[gy].tolist()
        gx = 0
        while gx < gw:
            if not row[gx]:
                gx += 1
                continue
            start = gx
            while gx < gw and row[gx]:
                gx += 1
            prev = next((r for r in runs if r[1] == gy and r[2] == start and r[3] == gx), None)
            if prev is not None:
                prev[1] = gy + 1
            else:
                runs.append([gy, gy + 1, start, gx])
    out = []
    for r0, r1, c0, c1 in runs:  # each run shrunk to the region's bounding box inside it
        y0, x0 = r0 * tile, c0 * tile
        inner = _bbox(region[y0 : min(r1 * tile, h), x0 : min(c1 * tile, w)])
        assert inner is not None  # a touched cell holds a pixel of the region
        out.append(Window(y0 + inner.y0, y0 + inner.y1, x0 + inner.x0, x0 + inner.x1))
    return out


def palette_reach(decoder: Decoder) -> int:
    """How far (pixels, Chebyshev) a palette change at one pixel can change the output.

    Derived from the decoder: the change enters every level l's conditioning at the cell
    holding the pixel (up to 2^l - 1 px away) and its skip block (k // 2 cells); each
    finer stage then spreads it by the x2 upsampling (2 cells: an output reads the two
    source cells around i * (n - 1) / (2n - 1)) and its k x k conv (k // 2 cells). The
    stride-1 image blocks add their own two convs. The maximum over the levels (the
    stride-32 path: 31 + 3 * (16 + 8 + 4 + 2 + 1) = 124 px for 3x3 stages) bounds it.
    """
    kd, ks, kb = _half_kernel(decoder.decs[0]), _half_kernel(decoder.skips[0]), _half_kernel(decoder.image_b)
    reach = [kb + kd]  # the image blocks at stride 1 (image_a's own change is per pixel)
    for level in range(1, PYRAMID_LEVELS):
        finer = sum((2 + kd) * (1 << j) for j in range(level))
        reach.append((1 << level) - 1 + ks * (1 << level) + finer)
    return max(reach)


def _bbox(mask: torch.Tensor) -> Window | None:
    rows = torch.nonzero(mask.any(dim=1)).flatten()
    if rows.numel() == 0:
        return None
    cols = torch.nonzero(mask.any(dim=0)).flatten()
    return Window(int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1)


def _up_targets(r: Range, n_in: int) -> Range:
    """The outputs of the x2 upsampling of a length-n_in axis that read a cell of [lo, hi)."""
    i0, i1, _ = _up_indices((0, 2 * n_in), n_in)
    hit = ((i0 >= r[0]) & (i0 < r[1])) | ((i1 >= r[0]) & (i1 < r[1]))
    idx = torch.nonzero(hit).flatten()
    return int(idx[0]), int(idx[-1]) + 1


def _union(a: Range, b: Range) -> Range:
    return min(a[0], b[0]), max(a[1], b[1])


def change_box(changed: torch.Tensor, decoder: Decoder) -> Window | None:
    """The rectangle of the output that can change when the palette changes at
    ``changed`` (boolean (H, W), H and W multiples of 32: the padded size), or None.

    Followed through the decoder level by level, per axis, on bounding ranges: at level
    l the change touches the pyramid cells over the changed pixels (cells are 2^l-pixel
    blocks: the pyramid of a stride-padded palette is exact 2x2 means), which condition
    skip l and stage l; stage l's input also changes where the x2 upsampling reads a
    changed cell of level l+1; its k x k conv grows that by k // 2. Tighter than
    :func:`palette_reach` around the changed box (which bounds it), because a change
    spreads from whole cells, not from every pixel of a cell.
    """
    box = _bbox(changed)
    if box is None:
        return None
    kd, ks, kb = _half_kernel(decoder.decs[0]), _half_kernel(decoder.skips[0]), _half_kernel(decoder.image_b)
    out = []
    for (lo, hi), n in (((box.y0, box.y1), changed.shape[0]), ((box.x0, box.x1), changed.shape[1])):

        def cells(level):
            return lo >> level, ((hi - 1) >> level) + 1

        x = _dilate(cells(5), ks, n >> 5)  # skip 5 (its conditioning changed)
        for level in range(4, -1, -1):
            n_l = n >> level
            skip = _dilate(cells(level), kb if level == 0 else ks, n_l)
            x = _union(_dilate(_union(_up_targets(x, n >> (level + 1)), skip), kd, n_l), cells(level))
        out.append(x)
    (y0, y1), (x0, x1) = out
    return Window(y0, y1, x0, x1)


def reach_box(changed: torch.Tensor, reach: int) -> Window | None:
    """The bounding box of ``changed`` (boolean (H, W)) grown by ``reach`` (clamped);
    None when nothing changed. With :func:`palette_reach` a bound of what a palette
    change can reach, for any image size; :func:`change_box` is tighter."""
    box = _bbox(changed)
    if box is None:
        return None
    h, w = changed.shape
    return Window(max(box.y0 - reach, 0), min(box.y1 + reach, h),
                  max(box.x0 - reach, 0), min(box.x1 + reach, w))  # fmt: skip


class _Conditioning:
    """The palette's conditioning at each level, cropped to a window on demand."""

    def __init__(self, pyramid: list[torch.Tensor] | None, pure: list[PureMap] | None):
        self.pyramid, self.pure = pyramid, pure

    def at(self, level: int, crop: tuple[Range, Range]):
        (y0, y1), (x0, x1) = crop
        if self.pure is not None:
            return None, self.pure[level].crop(y0, y1, x0, x1)
        if self.pyramid is not None:
            return self.pyramid[level][..., y0:y1, x0:x1], None
        return None, None


def _run(block, x: torch.Tensor, cond: _Conditioning, level: int, crop, keep) -> torch.Tensor:
    """``block`` on the input ``x`` that covers ``crop``; the output cells ``keep``."""
    e, pure = cond.at(level, crop)
    if not isinstance(block, TaskCompositionBlock):  # a plain block (MHN / STN decoders)
        out = block(x)
    elif pure is not None:
        out = block(x, None, pure)
    else:
        out = block(x, e)
    (cy0, _), (cx0, _) = crop
    (ky0, ky1), (kx0, kx1) = keep
    return out[..., ky0 - cy0 : ky1 - cy0, kx0 - cx0 : kx1 - cx0]


def _crop(t: torch.Tensor, r: tuple[Range, Range]) -> torch.Tensor:
    (y0, y1), (x0, x1) = r
    return t[..., y0:y1, x0:x1]


def _global_part(decoder: Decoder, feats, cond: _Conditioning, global_level: int) -> torch.Tensor:
    """The stride-32 skip and the decoder stages down to ``global_level``, on the whole map."""

    def whole(level):
        t = feats[level]
        return (0, t.shape[-2]), (0, t.shape[-1])

    x = _run(decoder.skips[4], feats[5], cond, 5, whole(5), whole(5))
    for level in range(4, global_level - 1, -1):
        skip = _run(decoder.skips[level - 1], feats[level], cond, level, whole(level), whole(level))
        x = torch.cat([decoder._up(x), skip], dim=1)
        x = _run(decoder.decs[4 - level], x, cond, level, whole(level), whole(level))
    return x


def decode_windows(decoder: Decoder, feats: list[torch.Tensor], windows: list[Window],
                   pyramid: list[torch.Tensor] | None = None, pure: list[PureMap] | None = None,
                   global_level: int = DEFAULT_GLOBAL_LEVEL) -> torch.Tensor:  # fmt: skip
    """The decoder's output (N, 3, H, W) on ``windows`` of the padded map, 0 elsewhere.

    ``feats``: the encoder outputs [image, L1..L5] of the padded image (strides 1..32);
    ``pyramid`` / ``pure``: the palette's conditioning as :meth:`Decoder.forward` takes
    it (whole map). ``global_level`` in 1..5: stages at that stride level and coarser
    run on the whole map. The decoder must be in eval mode (BatchNorm with running
    statistics): a training-mode batch statistic is not local.
    """
    if decoder.training:
        raise RuntimeError("region-limited decoding needs the decoder in eval mode")
    if not 1 <= global_level <= 5:
        raise ValueError(f"global_level is 1..5, got {global_level}")
    if decoder.conditioned and pyramid is None and pure is None:
        raise ValueError("a conditioned decoder needs the palette embedding pyramid or pure maps")
    n, _, hp, wp = feats[0].shape
    size = (hp, wp)
    out_ch = decoder.last.out_channels
    dtype = feats[-1].dtype
    out = feats[0].new_zeros((n, out_ch, hp, wp), dtype=dtype)
    if not windows:
        return out
    cond = _Conditioning(pyramid, pure) if decoder.conditioned else _Conditioning(None, None)
    x_global = _global_part(decoder, feats, cond, global_level)
    for win in windows:
        if not (0 <= win.y0 < win.y1 <= hp and 0 <= win.x0 < win.x1 <= wp):
            raise ValueError(f"window {win} is outside the padded output {size}")
        plan = plan_window(win, size, decoder, global_level)
        x = _crop(x_global, plan.x[global_level])
        for level in range(global_level - 1, -1, -1):
            n_up = (hp >> (level + 1), wp >> (level + 1))
            up = upsample_window(x, plan.x[level + 1], n_up, plan.dec_in[level])
            if level == 0:
                a = _run(decoder.image_a, _crop(feats[0], plan.feat0), cond, 0, plan.feat0, plan.image_a)
                skip = _run(decoder.image_b, a, cond, 0, plan.image_a, plan.dec_in[0])
            else:
                skip = _run(decoder.skips[level - 1], _crop(feats[level], plan.skip_in[level]),
                            cond, level, plan.skip_in[level], plan.dec_in[level])  # fmt: skip
            x = torch.cat([up.to(skip.dtype), skip], dim=1)
            x = _run(decoder.decs[4 - level], x, cond, level, plan.dec_in[level], plan.x[level])
        out[..., win.y0 : win.y1, win.x0 : win.x1] = decoder.last(x).to(dtype)
    return out


assert PYRAMID_LEVELS == 6  # the plan above follows the six-level decoder of blocks.Decoder
