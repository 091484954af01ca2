"""The CompositeTasking network (CTN) and the MHN / STN baselines, built from the same parts.

All three share one interface so that training, evaluation and inference treat them
alike:

- ``encode(image) -> Encoded``: the encoder part, cacheable per image;
- ``decode(encoded, palette) -> output``: the 3-channel composite output;
- ``forward(image, palette) = decode(encode(image), palette)``.

``image`` is (N, 3, H, W) float in [0, 1] (ImageNet normalisation happens inside), any
H x W: it is padded to multiples of 32 (replicating the border) and the output is cropped
back. ``palette`` is (N, H, W) integer, task id + 1 per pixel, 0 = no task.

Baselines (paper section 5.2): the MHN has the CTN's encoder and one plain decoder per
task (regular BatchNorm instead of task conditioning); the STN is one whole plain network
per task. Given a palette, each runs the decoders of the requested tasks and composes the
output per pixel, so they are trained and evaluated exactly like the CTN.
"""

from __future__ import annotations

from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from .base import STRIDE, Encoded, ModelConfig, check_image, pad_to_stride
from .blocks import (
    PYRAMID_LEVELS,
    Decoder,
    PureMap,
    TaskRepresentationBlock,
    embedding_pyramid,
    embedding_table,
    palette_embedding,
    pure_maps,
)
from .encoder import ResNetEncoder
from .region import (
    DEFAULT_GLOBAL_LEVEL,
    DEFAULT_TILE,
    FULL_DECODE_SHARE,
    Window,
    decode_windows,
    windows_for_region,
)

__all__ = ["CompositeTaskingNet", "MultiHeadNet", "SingleTaskNets", "PaletteModel"]


class PaletteModel(nn.Module):
    """Shared plumbing: padding, palette checks, feature broadcasting."""

    config: ModelConfig

    def encode(self, image: torch.Tensor) -> Encoded:
        """(N, 3, H, W) in [0, 1] -> the encoder features (each model its own)."""
        raise NotImplementedError

    def decode(self, encoded: Encoded, palette: torch.Tensor) -> torch.Tensor:
        """The composite output (N, 3, H, W) of ``encoded`` under ``palette``."""
        raise NotImplementedError

    @property
    def num_tasks(self) -> int:
        return len(self.config.tasks)

    def _check_palette(self, encoded: Encoded, palette: torch.Tensor) -> torch.Tensor:
        if palette.dim() == 2:
            palette = palette.unsqueeze(0)
        if palette.dim() != 3 or tuple(palette.shape[-2:]) != encoded.size:
            raise ValueError(
                f"palette shape {tuple(palette.shape)} does not match the image size "
                f"{encoded.size} (expected (N, H, W))"
            )
        if palette.is_floating_point():
            raise ValueError(f"a palette holds integers, got dtype {palette.dtype}")
        n = encoded.batch_size
        if palette.shape[0] != n and n != 1:
            raise ValueError(f"{palette.shape[0]} palettes for {n} encoded images")
        if palette.is_cuda and torch.cuda.is_current_stream_capturing():
            return palette  # a CUDA graph capture: values are unknown until each replay
        lo, hi = int(palette.min()), int(palette.max())
        if lo < 0 or hi > self.num_tasks:
            raise ValueError(
                f"palette values must be 0 (no task) or 1..{self.num_tasks} (task id + 1); found values in [{lo}, {hi}]"
            )
        return palette

    @staticmethod
    def _expand(feats: list[torch.Tensor], n: int) -> list[torch.Tensor]:
        """One encoding decoded under n palettes: broadcast without copying."""
        if feats[0].shape[0] == n:
            return feats
        return [f.expand(n, *f.shape[1:]) for f in feats]

    def _crop(self, out: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return out[..., : size[0], : size[1]]

    def forward(self, image: torch.Tensor, palette: torch.Tensor | None) -> torch.Tensor:
        """The composite output (N, 3, H, W) under ``palette``; with ``palette=None`` every
        task everywhere (rule S: complete labels), (N, T, 3, H, W) in task order, from one
        encoding (as :meth:`decode_all`)."""
        encoded = self.encode(image)
        if palette is None:
            return self.decode_all(encoded)
        return self.decode(encoded, palette)

    def decode_all(self, encoded: Encoded) -> torch.Tensor:
        """Every task everywhere, (N, T, 3, H, W): the encoding decoded under each
        single-task palette in turn (the CTN: T decodes of one encoding). Training a CTN
        this way (rule S) normalises each decode with one task's batch statistics, while
        evaluation uses running statistics pooled over tasks; the paper trains the CTN
        with palettes and only its MHN / STN baselines on complete labels."""
        n, f = encoded.batch_size, encoded.features[0]
        device = (f[0] if isinstance(f, list) else f).device
        outs = [self.decode(encoded, torch.full((n, *encoded.size), v, dtype=torch.long, device=device))
                for v in range(1, self.num_tasks + 1)]  # fmt: skip
        return torch.stack(outs, dim=1)


class CompositeTaskingNet(PaletteModel):
    """The CTN (Fig. 2, supplementary Fig. 12): one encoder, one palette-conditioned decoder.

    ``fast_conditioning`` (default True; set it on the class or on one model) makes
    :meth:`decode` use palette-aware conditioning: where a pyramid cell lies inside one
    palette region, gamma/beta are one of K+1 vectors, computed once and gathered; the
    1x1 conditioning MLP runs only on cells that mix tasks at region boundaries. The
    output is the same as the plain path's (False) up to float rounding; the state dict
    is the same.
    """

    #: palette-aware conditioning in :meth:`decode` (False: the plain, reference path)
    fast_conditioning: bool = True

    def __init__(self, config: ModelConfig = ModelConfig(), pretrained=False, allow_download=True):
        super().__init__()
        if config.kind != "ctn":
            raise ValueError(f"CompositeTaskingNet needs kind 'ctn', got {config.kind!r}")
        self.config = config
        self.encoder = ResNetEncoder(config.encoder, pretrained, allow_download)
        self.task_representation = TaskRepresentationBlock(
            len(config.tasks), config.embedding_width, config.mlp_layers, config.code_block
        )
        self.decoder = Decoder(
            self.encoder.channels, conditioned=True, emb_ch=config.embedding_width,
            spec=config.decoder,
        )  # fmt: skip

    def encode(self, image: torch.Tensor) -> Encoded:
        check_image(image)
        size = (image.shape[-2], image.shape[-1])
        return Encoded(self.encoder(pad_to_stride(image)), size)

    def embed_palette(self, palette: torch.Tensor) -> list[torch.Tensor]:
        """Palette (N, H', W') padded -> pyramid of E at strides 1..32."""
        e = palette_embedding(palette, self.task_representation())  # (N, 128, H', W')
        return embedding_pyramid(e, PYRAMID_LEVELS, self.config.pyramid_mode)

    def pure_maps(self, palette: torch.Tensor, dtype: torch.dtype | None = None) -> list[PureMap]:
        """Palette (N, H', W') padded -> the :class:`PureMap` of each pyramid level (the
        fast path's stand-in for :meth:`embed_palette`)."""
        table = embedding_table(self.task_representation())  # (K+1, 128)
        if dtype is not None:
            table = table.to(dtype)
        return pure_maps(palette, table, PYRAMID_LEVELS, self.config.pyramid_mode)

    def decode(self, encoded: Encoded, palette: torch.Tensor,
               region: torch.Tensor | str | None = None, *, tile: int = DEFAULT_TILE,
               global_level: int = DEFAULT_GLOBAL_LEVEL) -> torch.Tensor:  # fmt: skip
        """The composite output (N, 3, H, W) of ``encoded`` under ``palette``.

        ``region``: None computes every pixel; ``"palette"`` only where the palette asks
        for a task (value > 0); a boolean (H, W) or (N, H, W) tensor only there (the union
        over the batch). With a region, the decoder runs its fine levels only on grid
        cells of ``tile`` pixels that the region touches, plus the halo each level needs
        (:mod:`.region`): the output there equals the full decode up to float rounding,
        and is 0 on the cells left out. Needs eval mode. When the cells cover most of the
        image (>= ``FULL_DECODE_SHARE``), the full decode is run instead (it is cheaper).
        """
        palette = self._check_palette(encoded, palette)
        feats = self._expand(encoded.features, palette.shape[0])
        padded = pad_to_stride(palette)
        windows = None
        if region is not None:
            windows = self._windows(region, palette, padded.shape[-2:], tile)
            if sum(w.area for w in windows) >= FULL_DECODE_SHARE * padded[0].numel():
                windows = None  # nearly everything: the plain decoder is cheaper
        cond: dict[str, Any]  # the decoder's pure= or pyramid=
        if self.fast_conditioning:
            cond = {"pure": self.pure_maps(padded, feats[0].dtype)}
        else:
            cond = {"pyramid": [p.to(feats[0].dtype) for p in self.embed_palette(padded)]}
        if windows is None:
            out = self.decoder(feats, **cond)
        else:
            out = decode_windows(self.decoder, feats, windows, global_level=global_level, **cond)
        return self._crop(out, encoded.size)

    def _windows(self, region, palette: torch.Tensor, padded_size, tile: int) -> list[Window]:
        if self.training:
            raise RuntimeError("decoding a region needs eval mode (BatchNorm running statistics)")
        if isinstance(region, str):
            if region != "palette":
                raise ValueError(f"region is None, 'palette' or a boolean mask, not {region!r}")
            region = palette > 0
        if region.dtype != torch.bool or region.shape[-2:] != palette.shape[-2:]:
            raise ValueError(
                f"a region is a boolean mask of the image size {tuple(palette.shape[-2:])}, "
                f"got {region.dtype} {tuple(region.shape)}"
            )
        if tile % STRIDE:
            raise ValueError(f"tile must be a multiple of {STRIDE}, got {tile}")
        h, w = region.shape[-2:]
        region = F.pad(region.reshape(-1, h, w), (0, padded_size[1] - w, 0, padded_size[0] - h))
        return windows_for_region(region, tile)


def _compose(palette: torch.Tensor, outputs: dict[int, torch.Tensor], like: torch.Tensor):
    """Per pixel, the output of the decoder of that pixel's task; 0 where no task."""
    out = torch.zeros_like(like)
    for value, o in outputs.items():
        out = torch.where((palette == value).unsqueeze(1), o, out)
    return out


class MultiHeadNet(PaletteModel):
    """MHN baseline: shared encoder, one plain decoder per task (regular BatchNorm)."""

    def __init__(self, config: ModelConfig = ModelConfig(kind="mhn"), pretrained=False,
                 allow_download=True):  # fmt: skip
        super().__init__()
        if config.kind != "mhn":
            raise ValueError(f"MultiHeadNet needs kind 'mhn', got {config.kind!r}")
        self.config = config
        self.encoder = ResNetEncoder(config.encoder, pretrained, allow_download)
        self.decoders = nn.ModuleList(
            Decoder(self.encoder.channels, conditioned=False, spec=config.decoder) for _ in config.tasks
        )

    def encode(self, image: torch.Tensor) -> Encoded:
        check_image(image)
        return Encoded(self.encoder(pad_to_stride(image)), (image.shape[-2], image.shape[-1]))

    def decode_task(self, encoded: Encoded, k: int) -> torch.Tensor:
        """The output of task k's head everywhere, (N, 3, H, W)."""
        return self._crop(self.decoders[k](encoded.features), encoded.size)

    def decode_all(self, encoded: Encoded) -> torch.Tensor:
        """Every head everywhere, (N, T, 3, H, W): one encoding, each head once."""
        return torch.stack([self.decode_task(encoded, k) for k in range(self.num_tasks)], dim=1)

    def decode(self, encoded: Encoded, palette: torch.Tensor) -> torch.Tensor:
        palette = self._check_palette(encoded, palette)
        n = palette.shape[0]
        enc = Encoded(self._expand(encoded.features, n), encoded.size)
        present = [v for v in range(1, self.num_tasks + 1) if bool((palette == v).any())]
        outs = {v: self.decode_task(enc, v - 1) for v in present}
        like = next(iter(outs.values())) if outs else palette.new_zeros(
            (n, 3, *encoded.size), dtype=enc.features[0].dtype)  # fmt: skip
        return _compose(palette, outs, like)


class SingleTaskNets(PaletteModel):
    """STN baseline: one whole network (encoder + plain decoder) per task."""

    def __init__(self, config: ModelConfig = ModelConfig(kind="stn"), pretrained=False,
                 allow_download=True):  # fmt: skip
        super().__init__()
        if config.kind != "stn":
            raise ValueError(f"SingleTaskNets needs kind 'stn', got {config.kind!r}")
        self.config = config
        self.encoders = nn.ModuleList(ResNetEncoder(config.encoder, pretrained, allow_download) for _ in config.tasks)
        ch = cast(ResNetEncoder, self.encoders[0]).channels
        self.decoders = nn.ModuleList(Decoder(ch, conditioned=False, spec=config.decoder) for _ in config.tasks)

    def encode(self, image: torch.Tensor) -> Encoded:
        check_image(image)
        x = pad_to_stride(image)
        return Encoded([enc(x) for enc in self.encoders], (image.shape[-2], image.shape[-1]))

    def decode_all(self, encoded: Encoded) -> torch.Tensor:
        """Every network everywhere, (N, T, 3, H, W): each task's decoder on its encoder's
        features once."""
        outs = [self._crop(self.decoders[k](encoded.features[k]), encoded.size) for k in range(self.num_tasks)]
        return torch.stack(outs, dim=1)

    def decode(self, encoded: Encoded, palette: torch.Tensor) -> torch.Tensor:
        palette = self._check_palette(encoded, palette)
        n = palette.shape[0]
        outs = {}
        for v in range(1, self.num_tasks + 1):
            if bool((palette == v).any()):
                feats = self._expand(encoded.features[v - 1], n)
                outs[v] = self._crop(self.decoders[v - 1](feats), encoded.size)
        like = next(iter(outs.values())) if outs else palette.new_zeros(
            (n, 3, *encoded.size), dtype=encoded.features[0][0].dtype)  # fmt: skip
        return _compose(palette, outs, like)
