"""What every network of the package shares: the model config, encoder features, the
stride inputs are padded to, and the input checks (no network here, so that every
network module imports it and none imports another)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
import torch.nn.functional as F

from ..tasks import TASK_NAMES
from .blocks import DecoderSpec
from .encoder import ENCODERS

__all__ = ["STRIDE", "MODEL_KINDS", "ModelConfig", "Encoded", "pad_to_stride", "check_image"]

#: the encoder's total stride; inputs are padded to a multiple of it
STRIDE = 32
MODEL_KINDS = ("ctn", "mhn", "stn", "palette")


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model (stored as JSON in a checkpoint)."""

    kind: str = "ctn"
    encoder: str = "resnet34"
    tasks: tuple[str, ...] = TASK_NAMES
    embedding_width: int = 128  # Table 12
    mlp_layers: int = 6  # Table 11
    code_block: int = 20  # task code length 20 * K
    pyramid_mode: str = "bilinear"  # Table 10
    decoder: DecoderSpec = field(default_factory=DecoderSpec)

    def __post_init__(self):
        if self.kind not in MODEL_KINDS:
            raise ValueError(f"unknown model kind {self.kind!r}; choose one of {MODEL_KINDS}")
        if self.encoder not in ENCODERS:
            raise ValueError(f"unknown encoder {self.encoder!r}; choose one of {', '.join(ENCODERS)}")
        unknown = [t for t in self.tasks if t not in TASK_NAMES]
        if unknown:
            raise ValueError(f"unknown task(s) {unknown}; known: {', '.join(TASK_NAMES)}")
        if list(self.tasks) != [t for t in TASK_NAMES if t in self.tasks]:
            raise ValueError(f"tasks must keep the order of the task table {TASK_NAMES}")
        if self.pyramid_mode not in ("bilinear", "nearest"):
            raise ValueError(f"pyramid_mode is 'bilinear' or 'nearest', not {self.pyramid_mode!r}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["tasks"] = list(self.tasks)
        d["decoder"] = {k: list(v) if isinstance(v, tuple) else v for k, v in d["decoder"].items()}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown model config key(s): {sorted(unknown)}")
        d = dict(d)
        if "tasks" in d:
            d["tasks"] = tuple(d["tasks"])
        if "decoder" in d:
            dk = {f.name for f in fields(DecoderSpec)}
            bad = set(d["decoder"]) - dk
            if bad:
                raise ValueError(f"unknown decoder config key(s): {sorted(bad)}")
            spec: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in d["decoder"].items()}
            d["decoder"] = DecoderSpec(**spec)
        return cls(**d)


@dataclass
class Encoded:
    """Encoder features of a batch of images, with the size to crop the output back to."""

    features: Any  # list[Tensor] (CTN, MHN) or list of such lists (STN)
    size: tuple[int, int]  # original (H, W)

    @property
    def batch_size(self) -> int:
        f = self.features[0]
        return (f[0] if isinstance(f, list) else f).shape[0]


def pad_to_stride(x: torch.Tensor, stride: int = STRIDE) -> torch.Tensor:
    """Pad the last two dims up to a multiple of ``stride`` by replicating the border."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % stride, (-w) % stride
    if ph == 0 and pw == 0:
        return x
    if x.dim() == 3:  # palettes (N, H, W): integer, so pad by index replication
        iy = torch.arange(h + ph, device=x.device).clamp_max(h - 1)
        ix = torch.arange(w + pw, device=x.device).clamp_max(w - 1)
        return x[:, iy][:, :, ix]
    return F.pad(x, (0, pw, 0, ph), mode="replicate")


def check_image(image: torch.Tensor) -> None:
    if image.dim() != 4 or image.shape[1] != 3:
        raise ValueError(f"expected an image batch (N, 3, H, W), got shape {tuple(image.shape)}")
    if not image.is_floating_point():
        raise ValueError(f"expected a float image in [0, 1], got dtype {image.dtype}")
