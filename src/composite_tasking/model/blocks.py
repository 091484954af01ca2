"""The building blocks of the CompositeTasking network (paper section 3.2, supplementary B).

- :class:`TaskRepresentationBlock` (Fig. 3): frozen task codes -> MLP -> one embedding per task.
- :func:`palette_embedding` and :func:`embedding_pyramid`: broadcast the task embeddings
  by the Task Palette into E (N, C, H, W), and its bilinear pyramid s1 .. s32.
- :class:`TaskCompositionBlock` (Fig. 4, eq. 1): conv -> BN without affine -> per-pixel
  gamma/beta from E -> LeakyReLU.
- :func:`pure_index_pyramid` and :func:`pure_maps`: palette-aware conditioning. Where a
  pyramid cell lies inside one palette region, its embedding is one of the K+1 rows of
  the embedding table, so gamma/beta are computed once per row and gathered per pixel;
  only the cells on region boundaries (mixed by the bilinear pyramid) run the 1x1 MLP.
- :class:`PlainBlock`: the same block with a regular BatchNorm, for the MHN/STN baselines.
- :class:`Decoder`: skips and decoder stages with the paper's widths, 3 output channels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "TaskRepresentationBlock",
    "palette_embedding",
    "embedding_pyramid",
    "TaskCompositionBlock",
    "PureMap",
    "embedding_table",
    "palette_fractions",
    "pure_index",
    "pure_index_pyramid",
    "pure_maps",
    "PlainBlock",
    "DecoderSpec",
    "Decoder",
    "PYRAMID_LEVELS",
]

#: strides of the embedding pyramid: s1, s2, s4, s8, s16, s32
PYRAMID_LEVELS = 6


class TaskRepresentationBlock(nn.Module):
    """Task codes z_k -> embeddings w_k (supplementary E, Fig. 3).

    z_k has length ``code_block * K``: ones in task k's block of ``code_block``, zeros
    elsewhere, L2-normalised and frozen (a buffer). An MLP of ``layers`` Linear layers
    (``code_block*K -> width``, then ``width -> width``) with LeakyReLU(0.2) after each
    gives w_k. Each task is processed independently.
    """

    def __init__(self, num_tasks: int, width: int = 128, layers: int = 6, code_block: int = 20):
        super().__init__()
        if layers < 1:
            raise ValueError("the task representation MLP needs at least one layer")
        self.num_tasks = num_tasks
        code_len = code_block * num_tasks
        codes = torch.zeros(num_tasks, code_len)
        for k in range(num_tasks):
            codes[k, k * code_block : (k + 1) * code_block] = 1.0
        self.register_buffer("codes", F.normalize(codes, dim=1))  # (K, 20K), unit rows
        mods: list[nn.Module] = []
        for i in range(layers):
            mods += [nn.Linear(code_len if i == 0 else width, width), nn.LeakyReLU(0.2)]
        self.mlp = nn.Sequential(*mods)
        self.width = width

    def forward(self) -> torch.Tensor:
        """-> (K, width): the embedding of every task."""
        return self.mlp(self.codes)


def embedding_table(task_embeddings: torch.Tensor) -> torch.Tensor:
    """(K, C) task embeddings -> (K+1, C): row 0 is the zero "no task" embedding, row
    k+1 is w_k, so a palette value indexes its row."""
    return torch.cat([task_embeddings.new_zeros(1, task_embeddings.shape[1]), task_embeddings])


def palette_embedding(palette: torch.Tensor, task_embeddings: torch.Tensor) -> torch.Tensor:
    """Broadcast task embeddings by the palette: (N, H, W) ints -> E (N, C, H, W).

    Palette value 0 (no task) gets a zero embedding, value k+1 gets w_k.
    """
    table = embedding_table(task_embeddings)  # (K+1, C)
    e = F.embedding(palette.long(), table)  # (N, H, W, C)
    return e.permute(0, 3, 1, 2)  # (N, C, H, W); channels_last memory


def embedding_pyramid(e: torch.Tensor, levels: int = PYRAMID_LEVELS, mode: str = "bilinear"):
    """[E at s1, s2, ..., s32]: repeated x0.5 resizing (bilinear, as Table 10 chose).

    For even sizes, x0.5 bilinear with align_corners=False is exactly the 2x2 mean.
    """
    out = [e]
    for _ in range(levels - 1):
        kwargs = {"align_corners": False} if mode == "bilinear" else {}
        out.append(F.interpolate(out[-1], scale_factor=0.5, mode=mode, **kwargs))
    return out


#: a pyramid cell is pure when one palette value covers at least this share of it; the
#: shares are multiples of 1/4^level (exact in float32), so 1 - 1e-6 means "all of it"
PURE_TOLERANCE = 1e-6


def palette_fractions(palette: torch.Tensor, num_values: int, levels: int = PYRAMID_LEVELS,
                      mode: str = "bilinear") -> list[torch.Tensor]:  # fmt: skip
    """The share of each palette value in each cell of the embedding pyramid.

    The one-hot palette (N, K+1, H, W) float32 resized by :func:`embedding_pyramid` itself
    (same mode, same sizes), so it mixes exactly where the embedding pyramid mixes: since
    E = one-hot @ table and the resizing is linear, E at a level = fractions @ table.
    """
    with torch.autocast(palette.device.type, enabled=False):  # shares stay float32
        values = torch.arange(num_values, device=palette.device).view(1, -1, 1, 1)
        onehot = (palette.unsqueeze(1) == values).float()  # (N, K+1, H, W)
        return embedding_pyramid(onehot, levels, mode)


def pure_index(fractions: torch.Tensor, tol: float = PURE_TOLERANCE) -> torch.Tensor:
    """(N, K+1, h, w) shares -> (N, h, w) int64: the palette value that covers the whole
    cell (a row of the embedding table), or -1 where the cell mixes several values."""
    share, value = fractions.max(dim=1)
    return torch.where(share >= 1.0 - tol, value, torch.full_like(value, -1))


def pure_index_pyramid(palette: torch.Tensor, num_values: int, levels: int = PYRAMID_LEVELS,
                       mode: str = "bilinear") -> list[torch.Tensor]:  # fmt: skip
    """Per pyramid level, the int map of the pure palette value (-1 where mixed).

    A cell is pure iff :func:`embedding_pyramid` of :func:`palette_embedding` gives it one
    of the K+1 table rows; with the bilinear mode at the CTN's sizes (multiples of 32)
    that means all 4^level palette pixels under it agree; with the nearest mode every
    cell is pure.
    """
    return [pure_index(f) for f in palette_fractions(palette, num_values, levels, mode)]


@dataclass
class PureMap:
    """What a :class:`TaskCompositionBlock` needs for palette-aware conditioning at one
    pyramid level (shared by the blocks of that level; built by :func:`pure_maps`).

    ``index`` (N, h, w) int64: the pure palette value of each cell, -1 where mixed.
    ``table`` (K+1, C): the embedding table (:func:`embedding_table`). ``mixed`` (M, C):
    the embedding of each mixed cell, in the order of ``index < 0``. ``lookup``: in
    ``const`` mode (at this level each image of the batch is one pure value) that value
    per image, (N,); in ``gather`` mode the row of each cell in ``table`` followed by
    ``mixed``, (N, h, w).
    """

    index: torch.Tensor
    table: torch.Tensor
    mixed: torch.Tensor
    lookup: torch.Tensor
    mode: str  # "const" or "gather"

    @property
    def num_mixed(self) -> int:
        """How many cells of the level run the full 1x1 MLP."""
        return self.mixed.shape[0]

    @classmethod
    def build(cls, fractions: torch.Tensor, table: torch.Tensor) -> "PureMap":
        """From one level's value shares (N, K+1, h, w) and the embedding table (K+1, C)."""
        index = pure_index(fractions)
        lo, hi = index.amin(dim=(1, 2)), index.amax(dim=(1, 2))
        none = table.new_zeros(0, table.shape[1])
        if bool(((lo == hi) & (lo >= 0)).all()):  # one sync; S palettes, big regions
            return cls(index, table, none, lo, "const")
        is_mixed = index < 0
        shares = fractions.permute(0, 2, 3, 1)[is_mixed]  # (M, K+1) float32
        with torch.autocast(table.device.type, enabled=False):
            # E of a mixed cell = its shares @ table, in float32 (as exact as it gets)
            mixed = (shares @ table.float()).to(table.dtype)  # (M, C)
        k1 = table.shape[0]
        lookup = index.clone()
        lookup[is_mixed] = torch.arange(k1, k1 + mixed.shape[0], device=index.device)
        return cls(index, table, mixed, lookup, "gather")

    def crop(self, y0: int, y1: int, x0: int, x1: int) -> "PureMap":
        """The map of the cells [y0:y1, x0:x1] of this level (region-limited decoding),
        keeping only the mixed rows those cells use, so a window pays for its own
        boundary cells only."""
        index = self.index[:, y0:y1, x0:x1]
        if self.mode == "const":
            return PureMap(index, self.table, self.mixed, self.lookup, "const")
        lookup = self.lookup[:, y0:y1, x0:x1]
        is_mixed = index < 0
        k1 = self.table.shape[0]
        rows = lookup[is_mixed]  # rows into cat([table, mixed]) of the window's mixed cells
        mixed = self.mixed[rows - k1]
        lookup = lookup.clone()
        lookup[is_mixed] = torch.arange(k1, k1 + rows.shape[0], device=index.device)
        return PureMap(index, self.table, mixed, lookup, "gather")


def pure_maps(palette: torch.Tensor, table: torch.Tensor, levels: int = PYRAMID_LEVELS,
              mode: str = "bilinear") -> list[PureMap]:  # fmt: skip
    """:class:`PureMap` of every pyramid level for a palette (N, H, W) and the embedding
    table (K+1, C) (:func:`embedding_table`): the fast path's stand-in for
    ``embedding_pyramid(palette_embedding(palette, w))``, which it never builds."""
    fractions = palette_fractions(palette, table.shape[0], levels, mode)
    return [PureMap.build(f, table) for f in fractions]


class TaskCompositionBlock(nn.Module):
    """Eq. (1): h' = LeakyReLU(gamma(E) * BN(conv(h)) + beta(E)), gamma/beta per pixel.

    gamma and beta come from one shared 1x1 conv on E (``emb_ch -> hidden``, LeakyReLU),
    then a 1x1 conv each (Table 7: one shared conv is best). All conditioning is 1x1, so
    a pixel's task affects only that pixel's modulation. gamma's bias starts at 1 and
    beta's at 0, so an untrained block is a plain conv-BN-LeakyReLU.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: int, emb_ch: int, hidden: int):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2, bias=True)
        self.norm = nn.BatchNorm2d(out_ch, affine=False)
        self.shared = nn.Sequential(nn.Conv2d(emb_ch, hidden, 1), nn.LeakyReLU(0.01))
        self.gamma = nn.Conv2d(hidden, out_ch, 1)
        self.beta = nn.Conv2d(hidden, out_ch, 1)
        assert self.gamma.bias is not None and self.beta.bias is not None  # bias=True above
        nn.init.ones_(self.gamma.bias)
        nn.init.zeros_(self.beta.bias)
        self.act = nn.LeakyReLU(0.01)

    def modulation(self, e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-pixel (gamma, beta) from the palette embedding at this block's scale."""
        s = self.shared(e)
        return self.gamma(s), self.beta(s)

    def _mlp(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`modulation` of embedding vectors (R, C): the 1x1 convs as matmuls."""
        conv = cast(nn.Conv2d, self.shared[0])  # nn.Sequential's items type as nn.Module
        s = self.shared[1](F.linear(rows, conv.weight.flatten(1), conv.bias))
        return (F.linear(s, self.gamma.weight.flatten(1), self.gamma.bias),
                F.linear(s, self.beta.weight.flatten(1), self.beta.bias))  # fmt: skip

    def pure_modulation(self, pure: PureMap, channels_last: bool = False):
        """(gamma, beta) like :meth:`modulation` of the level's E, from a :class:`PureMap`.

        The shared conv and the gamma/beta convs run as matmuls on the K+1 table rows and
        on the mixed cells only; every cell then takes its row. ``const``
        mode gives (N, C, 1, 1) tensors that broadcast; ``gather`` mode (N, C, h, w), laid
        out channels-last or not as ``channels_last`` asks (the layout of the features).
        """
        g, b = self._mlp(pure.table)  # (K+1, C_out) each
        if pure.num_mixed:  # apart, so that pure cells do not depend on the mixed ones
            gm, bm = self._mlp(pure.mixed)
            g, b = torch.cat([g, gm]), torch.cat([b, bm])
        n = pure.index.shape[0]
        if pure.mode == "const":
            return g[pure.lookup].view(n, -1, 1, 1), b[pure.lookup].view(n, -1, 1, 1)
        if channels_last:  # (N, h, w, C) gathered rows, seen as (N, C, h, w)
            return (F.embedding(pure.lookup, g).permute(0, 3, 1, 2),
                    F.embedding(pure.lookup, b).permute(0, 3, 1, 2))  # fmt: skip
        # contiguous (N, C, h, w): gather the columns of the (C, R) tables
        c, (_, hh, ww) = g.shape[1], pure.lookup.shape
        where = pure.lookup.view(n, 1, hh * ww).expand(n, c, hh * ww)
        return (torch.gather(g.t().expand(n, c, -1), 2, where).view(n, c, hh, ww),
                torch.gather(b.t().expand(n, c, -1), 2, where).view(n, c, hh, ww))  # fmt: skip

    def forward(self, h: torch.Tensor, e: torch.Tensor | None, pure: PureMap | None = None):
        """``pure`` None: the plain path (the reference), gamma/beta from E everywhere.
        With a :class:`PureMap` of this level, E is not used (may be None)."""
        x = self.norm(self.conv(h))
        if pure is None:
            assert e is not None, "the plain path needs E"
            gamma, beta = self.modulation(e)
            return self.act(x * gamma + beta)
        cl = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)
        gamma, beta = self.pure_modulation(pure, channels_last=cl)
        y = torch.addcmul(beta, x, gamma)  # a new tensor: safe to activate in place
        return F.leaky_relu(y, self.act.negative_slope, inplace=True)


class PlainBlock(nn.Module):
    """conv -> BatchNorm (affine) -> LeakyReLU: the baselines' unconditioned block."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, emb_ch: int = 0, hidden: int = 0):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2, bias=True)
        self.norm = nn.BatchNorm2d(out_ch, affine=True)
        self.act = nn.LeakyReLU(0.01)

    def forward(self, h: torch.Tensor, e: torch.Tensor | None = None) -> torch.Tensor:
        return self.act(self.norm(self.conv(h)))


@dataclass(frozen=True)
class DecoderSpec:
    """Widths of the decoder (ResNet-34 widths, paper-notes table).

    ``skip_out``: output width of the skip blocks for [image b, L1, ..., L5];
    ``dec_out``: output width of dec4, dec3, dec2, dec1, dec0;
    ``hidden``: conditioning width of each block, in the order
    [img a, img b, skip1..skip5, dec4..dec0].
    """

    image_width: int = 64
    skip_out: tuple[int, ...] = (64, 64, 64, 128, 256, 512)
    dec_out: tuple[int, ...] = (512, 256, 256, 128, 64)
    hidden: tuple[int, ...] = (128, 128, 128, 128, 256, 256, 256, 256, 256, 128, 128, 128)
    dec_kernel: int = 3
    skip_kernel: int = 1
    out_channels: int = 3


class Decoder(nn.Module):
    """The CTN decoder (supplementary Fig. 12), conditioned or plain.

    Levels (stride): skips at 1 (image, two 3x3 blocks), 2, 4, 8, 16, 32 (1x1 blocks);
    skip5 is upsampled x2 and concatenated with skip4 for dec4; each of dec4..dec1 is
    followed by x2 bilinear upsampling (align_corners=True) and concatenation with the
    next finer skip; dec0 runs at stride 1; a final 1x1 conv gives the 3 channels.
    """

    def __init__(
        self,
        encoder_channels: tuple[int, ...],
        conditioned: bool = True,
        emb_ch: int = 128,
        spec: DecoderSpec = DecoderSpec(),
    ):
        super().__init__()
        if len(encoder_channels) != 6:
            raise ValueError("the decoder expects 6 encoder outputs (image, L1..L5)")
        block = TaskCompositionBlock if conditioned else PlainBlock
        self.conditioned = conditioned
        hid = spec.hidden
        so = spec.skip_out
        # stride-1 image skip: two 3x3 blocks (3 -> 64 -> 64)
        self.image_a = block(encoder_channels[0], spec.image_width, 3, emb_ch, hid[0])
        self.image_b = block(spec.image_width, so[0], 3, emb_ch, hid[1])
        # skips 1..5 on the encoder stages, 1x1 (Table 8 / section 5.2)
        self.skips = nn.ModuleList(
            block(encoder_channels[i], so[i], spec.skip_kernel, emb_ch, hid[1 + i]) for i in range(1, 6)
        )
        # dec4 at s16 ... dec0 at s1; input = upsampled previous + skip of that level
        dec_in = [so[5] + so[4], spec.dec_out[0] + so[3], spec.dec_out[1] + so[2],
                  spec.dec_out[2] + so[1], spec.dec_out[3] + so[0]]  # fmt: skip
        self.decs = nn.ModuleList(
            block(dec_in[j], spec.dec_out[j], spec.dec_kernel, emb_ch, hid[7 + j]) for j in range(5)
        )
        self.last = nn.Conv2d(spec.dec_out[4], spec.out_channels, 1)

    @staticmethod
    def _up(x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=True)

    def forward(self, feats: list[torch.Tensor], pyramid: list[torch.Tensor] | None = None,
                pure: list[PureMap] | None = None):  # fmt: skip
        """feats = [image, L1..L5] (strides 1..32); pyramid = E at s1..s32 (or None if plain);
        pure = the :class:`PureMap` of each level instead of the pyramid (the fast path)."""
        if self.conditioned and pyramid is None and pure is None:
            raise ValueError("a conditioned decoder needs the palette embedding pyramid")
        p = pyramid if pyramid is not None else [None] * PYRAMID_LEVELS
        if pure is None or not self.conditioned:

            def run(blk, x, level):
                return blk(x, p[level])
        else:

            def run(blk, x, level):
                return blk(x, p[level], pure[level])

        s0 = run(self.image_b, run(self.image_a, feats[0], 0), 0)  # (N, 64, H, W)
        skips = [s0] + [run(blk, feats[i], i) for i, blk in enumerate(self.skips, start=1)]
        x = skips[5]  # (N, 512, H/32, W/32)
        for j, blk in enumerate(self.decs):  # levels 4, 3, 2, 1, 0
            level = 4 - j
            x = torch.cat([self._up(x), skips[level]], dim=1)
            x = run(blk, x, level)
        return self.last(x)  # (N, 3, H, W)
