"""The meters of the five tasks' metrics, one module per task family, each with its
protocol (the overview and where the conventions come from:
:mod:`composite_tasking.training.metrics`, which also imports them all):

- :mod:`.inputs`: what every meter takes (numpy arrays or torch tensors, batches, valid
  masks, image selections) and the counting they share;
- :mod:`.segmentation`: :class:`SegmentationMeter` (semseg, parts), :func:`has_person`;
- :mod:`.saliency`: :class:`SaliencyMeter`;
- :mod:`.normals`: :class:`NormalsMeter`;
- :mod:`.edges`: :class:`EdgeMeter`.
"""

from .edges import EDGE_THRESHOLDS, EdgeMeter
from .inputs import as_numpy
from .normals import NormalsMeter
from .saliency import SALIENCY_THRESHOLDS, SaliencyMeter
from .segmentation import SegmentationMeter, has_person

__all__ = [
    "SegmentationMeter",
    "SaliencyMeter",
    "NormalsMeter",
    "EdgeMeter",
    "has_person",
    "as_numpy",
    "SALIENCY_THRESHOLDS",
    "EDGE_THRESHOLDS",
]
