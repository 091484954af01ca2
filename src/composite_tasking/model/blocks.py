"""The building blocks of the CompositeTasking network (paper section 3.2, supplementary B).

- :class:`TaskRepresentationBlock` (Fig. 3): frozen task codes -> MLP -> one embedding per task.
- :func:`palette_embedding` and :func:`embedding_pyramid`: broadcast the task embeddings
  by the Task Palette into E (N, C, H, W), and its bilinear pyramid s1 .. s32.
- :class:`TaskCompositionBlock` (Fig. 4, eq. 1): conv -> BN without affine -> per-pixel
  gamma/beta from E -> LeakyReLU.
- :class:`PlainBlock`: the same block with a regular BatchNorm, for the MHN/STN baselines.
- :class:`Decoder`: skips and decoder stages with the paper's widths, 3 output channels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "TaskRepresentationBlock",
    "palette_embedding",
    "embedding_pyramid",
    "TaskCompositionBlock",
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


def palette_embedding(palette: torch.Tensor, task_embeddings: torch.Tensor) -> torch.Tensor:
    """Broadcast task embeddings by the palette: (N, H, W) ints -> E (N, C, H, W).

    Palette value 0 (no task) gets a zero embedding, value k+1 gets w_k.
    """
    k, c = task_embeddings.shape
    table = torch.cat([task_embeddings.new_zeros(1, c), task_embeddings], dim=0)  # (K+1, C)
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
        nn.init.ones_(self.gamma.bias)
        nn.init.zeros_(self.beta.bias)
        self.act = nn.LeakyReLU(0.01)

    def modulation(self, e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-pixel (gamma, beta) from the palette embedding at this block's scale."""
        s = self.shared(e)
        return self.gamma(s), self.beta(s)

    def forward(self, h: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.conv(h))
        gamma, beta = self.modulation(e)
        return self.act(x * gamma + beta)


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
            block(encoder_channels[i], so[i], spec.skip_kernel, emb_ch, hid[1 + i])
            for i in range(1, 6)
        )
        # dec4 at s16 ... dec0 at s1; input = upsampled previous + skip of that level
        dec_in = [so[5] + so[4], spec.dec_out[0] + so[3], spec.dec_out[1] + so[2],
                  spec.dec_out[2] + so[1], spec.dec_out[3] + so[0]]  # fmt: skip
        self.decs = nn.ModuleList(
            block(dec_in[j], spec.dec_out[j], spec.dec_kernel, emb_ch, hid[7 + j])
            for j in range(5)
        )
        self.last = nn.Conv2d(spec.dec_out[4], spec.out_channels, 1)

    @staticmethod
    def _up(x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=True)

    def forward(self, feats: list[torch.Tensor], pyramid: list[torch.Tensor] | None = None):
        """feats = [image, L1..L5] (strides 1..32); pyramid = E at s1..s32 (or None if plain)."""
        if self.conditioned and pyramid is None:
            raise ValueError("a conditioned decoder needs the palette embedding pyramid")
        p = pyramid if pyramid is not None else [None] * PYRAMID_LEVELS
        s0 = self.image_b(self.image_a(feats[0], p[0]), p[0])  # (N, 64, H, W)
        skips = [s0] + [blk(feats[i], p[i]) for i, blk in enumerate(self.skips, start=1)]
        x = skips[5]  # (N, 512, H/32, W/32)
        for j, blk in enumerate(self.decs):  # levels 4, 3, 2, 1, 0
            level = 4 - j
            x = torch.cat([self._up(x), skips[level]], dim=1)
            x = blk(x, p[level])
        return self.last(x)  # (N, 3, H, W)
