"""The palette network: predicts the Task Palette of a rule from the image (section 6.2).

The paper trains "a separate network" to predict the Task Palette (75.04% mIoU on
PASCAL-MT) without describing it; the authors' code has none. This one is built from the
CTN's parts so it needs no new machinery: a ResNet encoder and the plain (unconditioned)
decoder with ``K + 1`` output channels, the logits of "no task" and of each task,
trained with cross-entropy against the rule's palettes. It shares the checkpoint format
(kind ``palette``), so it is saved, loaded and verified like any model.

Fine-tuned on palettes a person edited in a store, it learns a new rule from examples
without the rule being written down (sections 6.3-6.4).
"""

from __future__ import annotations

import torch
from torch import nn

from .base import STRIDE, ModelConfig, check_image, pad_to_stride
from .blocks import Decoder, DecoderSpec
from .encoder import ResNetEncoder

__all__ = ["PaletteNet"]


class PaletteNet(nn.Module):
    """Image (N, 3, H, W) in [0, 1] -> palette logits (N, K + 1, H, W)."""

    def __init__(self, config: ModelConfig = ModelConfig(kind="palette", encoder="resnet18"),
                 pretrained=False, allow_download=True):  # fmt: skip
        super().__init__()
        if config.kind != "palette":
            raise ValueError(f"PaletteNet needs kind 'palette', got {config.kind!r}")
        self.config = config
        self.encoder = ResNetEncoder(config.encoder, pretrained, allow_download)
        spec = DecoderSpec(**{**config.decoder.__dict__, "out_channels": len(config.tasks) + 1})
        self.decoder = Decoder(self.encoder.channels, conditioned=False, spec=spec)

    @property
    def num_tasks(self) -> int:
        return len(self.config.tasks)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        check_image(image)
        h, w = image.shape[-2:]
        logits = self.decoder(self.encoder(pad_to_stride(image, STRIDE)))
        return logits[..., :h, :w]

    @torch.inference_mode()
    def predict(self, image: torch.Tensor) -> torch.Tensor:
        """The predicted palette (N, H, W) int64: 0 = no task, task id + 1."""
        return self.forward(image).argmax(dim=1)
