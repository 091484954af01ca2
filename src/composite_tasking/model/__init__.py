"""The CompositeTasking network, its baselines, and checkpoints."""

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
from .ctn import (
    MODEL_KINDS,
    PRESETS,
    STRIDE,
    CompositeTaskingNet,
    Encoded,
    ModelConfig,
    MultiHeadNet,
    SingleTaskNets,
    build_model,
    count_parameters,
    preset_config,
)
from .palette_net import PaletteNet
from .encoder import ENCODERS, EncoderWeightsUnavailable, ResNetEncoder, imagenet_weights_path

__all__ = [
    "CheckpointError", "CheckpointInfo", "CompositeTaskingNet", "Decoder", "DecoderSpec",
    "ENCODERS", "Encoded", "EncoderWeightsUnavailable", "MODEL_KINDS", "ModelConfig",
    "MultiHeadNet", "PRESETS", "PaletteNet", "PlainBlock", "ResNetEncoder", "STRIDE", "SingleTaskNets",
    "TaskCompositionBlock", "TaskRepresentationBlock", "build_model", "count_parameters",
    "embedding_pyramid", "imagenet_weights_path", "load_checkpoint", "palette_embedding",
    "preset_config", "read_checkpoint_info", "save_checkpoint",
]  # fmt: skip
