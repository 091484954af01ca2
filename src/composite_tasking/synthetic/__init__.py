"""The synthetic multi-task world: procedurally rendered scenes with exact labels.

``generate(seed, index, size)`` returns the canonical sample: ``image`` (H, W, 3) uint8,
``semseg``, ``parts``, ``edges``, ``saliency`` (H, W) uint8 with 255 = ignore, ``normals``
(H, W, 3) float32 unit vectors in camera space, and ``meta``. See :mod:`.scene` for how
each label is defined, and :mod:`.worlds` for the named worlds (``get_world("shifted")``,
a world the bundled models never saw).
"""

from .objects import OBJECTS
from .scene import FLOOR, WALL, Scene, SceneConfig, generate, make_scene, render_scene
from .worlds import WORLDS, get_world

__all__ = ["OBJECTS", "FLOOR", "WALL", "Scene", "SceneConfig", "generate", "make_scene",
           "render_scene", "WORLDS", "get_world"]  # fmt: skip
