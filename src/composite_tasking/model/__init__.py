"""The CompositeTasking network, its baselines, and checkpoints.

:mod:`.base` (config, stride, input checks) <- :mod:`.ctn` (CTN, MHN, STN), :mod:`.palette_net`
<- :mod:`.registry` (presets, ``build_model``) <- :mod:`.checkpoint`; no cycle.
"""

from .base import MODEL_KINDS, STRIDE, Encoded, ModelConfig
from .blocks import (
    Decoder,
    DecoderSpec,
    PlainBlock,
    TaskCompositionBlock,
    TaskRepresentationBlock,
    embedding_pyramid,
    palette_embedding,
)
from .checkpoint import (
    CheckpointError,
    CheckpointInfo,
    load_checkpoint,
    read_checkpoint_info,
    save_checkpoint,
)
from .ctn import CompositeTaskingNet, MultiHeadNet, PaletteModel, SingleTaskNets
from .encoder import (
    ENCODERS,
    EncoderWeightsUnavailable,
    ResNetEncoder,
    imagenet_weights_path,
)
from .palette_net import PaletteNet
from .registry import PRESETS, build_model, count_parameters, preset_config

__all__ = [
    "CheckpointError", "CheckpointInfo", "CompositeTaskingNet", "Decoder", "DecoderSpec",
    "ENCODERS", "Encoded", "EncoderWeightsUnavailable", "MODEL_KINDS", "ModelConfig",
    "MultiHeadNet", "PRESETS", "PaletteModel", "PaletteNet", "PlainBlock", "ResNetEncoder", "STRIDE", "SingleTaskNets",
    "TaskCompositionBlock", "TaskRepresentationBlock", "build_model", "count_parameters",
    "embedding_pyramid", "imagenet_weights_path", "load_checkpoint", "palette_embedding",
    "preset_config", "read_checkpoint_info", "save_checkpoint",
]  # fmt: skip
