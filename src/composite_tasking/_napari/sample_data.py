"""Sample data (``napari.yaml``): scenes of the synthetic world, with their semantics.

Each sample is the image and its exact semantic segmentation (ground truth, as a Labels
layer with the class colours and names), so a semantic rule (R2, R3) can fill a Task
Palette without a trained model. The scenes are those of the shipped sample PNGs (world
seed 424242, held out from every training recipe; scenes 3 to 5, whose semantics
make R2 ask for three or four tasks), rendered at 256 x 256.
"""

from __future__ import annotations

import uuid

from ..synthetic import generate
from .palette_layer import METADATA_KEY
from .task_layers import task_label_colormap, task_label_features

__all__ = ["SAMPLE_SEED", "SAMPLE_SIZE", "synthetic_scene", "scene_3", "scene_4", "scene_5"]

SAMPLE_SEED = 424242
SAMPLE_SIZE = 256


def synthetic_scene(index: int = 0, seed: int = SAMPLE_SEED, size: int = SAMPLE_SIZE) -> list:
    """[(image, kwargs, "image"), (semantics, kwargs, "labels")] of one scene."""
    s = generate(seed, index, size)
    name = f"scene-{index}"
    # the semantics belong to this image (its key): a palette of another image never
    # reads them (one key per opened copy)
    key = f"sample:{seed}:{index}::{uuid.uuid4().hex[:8]}"
    return [
        (s["image"], {"name": name, "rgb": True,
                      "metadata": {METADATA_KEY: {"kind": "image", "source": "synthetic",
                                                  "seed": seed, "index": index, "image_key": key}}}, "image"),
        (s["semseg"], {"name": f"{name} semantics (ground truth)",
                       "colormap": task_label_colormap("semseg"),
                       "features": task_label_features("semseg"), "opacity": 0.5,
                       "visible": False,
                       "metadata": {METADATA_KEY: {"kind": "semantics", "image_key": key}}}, "labels"),
    ]  # fmt: skip


def scene_3() -> list:
    """A person, a train, a pottedplant, a motorbike: R2 asks for parts, semseg, edges and
    normals."""
    return synthetic_scene(3)


def scene_4() -> list:
    return synthetic_scene(4)


def scene_5() -> list:
    return synthetic_scene(5)
