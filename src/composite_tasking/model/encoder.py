"""ResNet encoders from torchvision, cut into the five stages the CTN uses as skips.

=====  ===================  ======  =========  ==========
stage  made of              stride  R18/34 ch  R50/101 ch
=====  ===================  ======  =========  ==========
L1     conv1 + bn + relu    2       64         64
L2     maxpool + layer1     4       64         256
L3     layer2               8       128        512
L4     layer3               16      256        1024
L5     layer4               32      512        2048
=====  ===================  ======  =========  ==========

avgpool and fc are dropped; no dilation. The input image itself (ImageNet-normalised) is
a sixth, stride-1 skip, so :meth:`ResNetEncoder.forward` returns six tensors.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torchvision import models

__all__ = [
    "ENCODERS",
    "EncoderSpec",
    "ResNetEncoder",
    "EncoderWeightsUnavailable",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "imagenet_weights_path",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class EncoderSpec:
    name: str
    builder: str  # torchvision.models function name
    weights: str  # torchvision weights enum name, member IMAGENET1K_V1
    channels: tuple[int, ...]  # image, L1..L5


#: The registry of encoders by name; the decoder only ever sees ``channels``.
ENCODERS: dict[str, EncoderSpec] = {
    s.name: s
    for s in (
        EncoderSpec("resnet18", "resnet18", "ResNet18_Weights", (3, 64, 64, 128, 256, 512)),
        EncoderSpec("resnet34", "resnet34", "ResNet34_Weights", (3, 64, 64, 128, 256, 512)),
        EncoderSpec("resnet50", "resnet50", "ResNet50_Weights", (3, 64, 256, 512, 1024, 2048)),
        EncoderSpec("resnet101", "resnet101", "ResNet101_Weights", (3, 64, 256, 512, 1024, 2048)),
    )
}


class EncoderWeightsUnavailable(RuntimeError):
    """ImageNet weights were asked for but are neither cached nor downloadable."""


def _weights_enum(spec: EncoderSpec):
    return getattr(models, spec.weights).IMAGENET1K_V1


def imagenet_weights_path(name: str) -> Path:
    """Where torchvision keeps (and where a user can put) the ImageNet weights file."""
    spec = ENCODERS[name]
    url = _weights_enum(spec).url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def _load_imagenet_state(spec: EncoderSpec, allow_download: bool) -> dict:
    weights = _weights_enum(spec)
    path = imagenet_weights_path(spec.name)
    if path.is_file():
        # torchvision's files are plain tensors; weights_only never runs pickled code
        return torch.load(path, map_location="cpu", weights_only=True)
    hint = (
        f"ImageNet weights for {spec.name} are not on this machine. Download\n"
        f"  {weights.url}\n"
        f"on a machine with internet access and put the file at\n"
        f"  {path}\n"
        f"(the folder follows $TORCH_HOME), or pass pretrained=PATH to a torchvision "
        f"ResNet state dict, or build the model with pretrained=False."
    )
    if not allow_download:
        raise EncoderWeightsUnavailable(hint)
    try:
        return weights.get_state_dict(progress=True, check_hash=True)
    except Exception as e:  # URLError, socket errors, hash mismatch, ...
        raise EncoderWeightsUnavailable(f"{hint}\nDownload failed: {e}") from None


class ResNetEncoder(nn.Module):
    """A torchvision ResNet returning the image and its five stage outputs.

    ``pretrained``: False (random init), True (ImageNet weights from torchvision's cache,
    downloaded if ``allow_download`` and the network allows), or the path of a
    torchvision ResNet state dict.
    """

    #: ImageNet mean and std, (1, 3, 1, 1) buffers (not saved)
    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self,
        name: str = "resnet34",
        pretrained: bool | str | Path = False,
        allow_download: bool = True,
    ):
        super().__init__()
        if name not in ENCODERS:
            raise ValueError(f"unknown encoder {name!r}; choose one of {', '.join(ENCODERS)}")
        self.spec = ENCODERS[name]
        net = getattr(models, self.spec.builder)(weights=None)
        if pretrained is not False and pretrained is not None:
            if pretrained is True:
                state = _load_imagenet_state(self.spec, allow_download)
            else:
                p = Path(pretrained)
                if p.suffix in (".safetensors",):
                    from safetensors.torch import load_file

                    state = load_file(str(p))
                else:
                    state = torch.load(p, map_location="cpu", weights_only=True)
            missing, unexpected = net.load_state_dict(state, strict=False)
            missing = [k for k in missing if not k.startswith("fc.")]
            if missing:
                raise ValueError(f"encoder weights lack {len(missing)} tensors, e.g. {missing[0]}")
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu)  # L1, stride 2
        self.layer1 = nn.Sequential(net.maxpool, net.layer1)  # L2, stride 4
        self.layer2 = net.layer2  # L3, stride 8
        self.layer3 = net.layer3  # L4, stride 16
        self.layer4 = net.layer4  # L5, stride 32
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def channels(self) -> tuple[int, ...]:
        return self.spec.channels

    def normalize(self, image: torch.Tensor) -> torch.Tensor:
        """ImageNet normalisation of an image in [0, 1]."""
        return (image - self.mean.to(image.dtype)) / self.std.to(image.dtype)

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        """(N, 3, H, W) in [0, 1], H and W multiples of 32 -> [x, L1, ..., L5]."""
        x = self.normalize(image)
        f1 = self.stem(x)  # (N, 64, H/2, W/2)
        f2 = self.layer1(f1)  # (N, c2, H/4, W/4)
        f3 = self.layer2(f2)  # (N, c3, H/8, W/8)
        f4 = self.layer3(f3)  # (N, c4, H/16, W/16)
        f5 = self.layer4(f4)  # (N, c5, H/32, W/32)
        return [x, f1, f2, f3, f4, f5]
