"""Models by name: the presets, :func:`build_model` (a CTN, MHN, STN or palette network
from a config, a preset name or a dict) and :func:`count_parameters`."""

from __future__ import annotations

from torch import nn

from .base import ModelConfig
from .ctn import CompositeTaskingNet, MultiHeadNet, SingleTaskNets
from .encoder import ENCODERS
from .palette_net import PaletteNet

__all__ = ["PRESETS", "preset_config", "build_model", "count_parameters"]

_CLASSES = {"ctn": CompositeTaskingNet, "mhn": MultiHeadNet, "stn": SingleTaskNets}

#: Named model configurations; "ctn-resnet34" is the paper's CTN.
PRESETS: dict[str, ModelConfig] = {
    **{f"ctn-{e}": ModelConfig(kind="ctn", encoder=e) for e in ENCODERS},
    **{f"mhn-{e}": ModelConfig(kind="mhn", encoder=e) for e in ("resnet18", "resnet34")},
    **{f"stn-{e}": ModelConfig(kind="stn", encoder=e) for e in ("resnet18", "resnet34")},
    **{f"palette-{e}": ModelConfig(kind="palette", encoder=e) for e in ("resnet18", "resnet34")},
}


def preset_config(name: str) -> ModelConfig:
    if name not in PRESETS:
        raise KeyError(f"unknown model preset {name!r}; presets: {', '.join(PRESETS)}")
    return PRESETS[name]


def build_model(config: ModelConfig | str | dict = "ctn-resnet34", pretrained=False,
                allow_download: bool = True) -> nn.Module:  # fmt: skip
    """Build a CTN, MHN, STN or palette network from a config, a preset name, or a dict.

    ``pretrained`` initialises the encoder(s) with ImageNet weights (True), from a
    torchvision ResNet state dict file (a path), or randomly (False).
    """
    if isinstance(config, str):
        config = preset_config(config)
    elif isinstance(config, dict):
        config = ModelConfig.from_dict(config)
    if config.kind == "palette":
        return PaletteNet(config, pretrained=pretrained, allow_download=allow_download)
    return _CLASSES[config.kind](config, pretrained=pretrained, allow_download=allow_download)


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
