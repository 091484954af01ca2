"""Named worlds: variants of :class:`~.scene.SceneConfig`, as data.

``default`` is the world the bundled models were trained and tested on. ``shifted`` is
a world they never saw, standing in for a user's own pictures (which are never the
training distribution): the same 20 classes, the same 7 parts and the same five tasks,
but other lighting (dimmer ambient light, a stronger, more coloured light, often from
the side), other room textures (more saturated, finer, with patterns the training rooms
never had), another camera (lower, wider, more tilted, with a vignette and more sensor
noise) and another object mix (more objects, mostly persons, furniture and pets, more
muted colours, closer). The
labelling-cycle benchmark labels and corrects scenes of it; docs/synthetic.md, "Worlds",
has what the bundled model scores on each.

A world is chosen by name: ``get_world("shifted")``, ``generate(seed, i, size,
get_world("shifted"))``, the data spec ``synthetic:seed=K,n=N,size=S,world=shifted``,
``SyntheticDataset(seed, n, size, world="shifted")`` or ``ctn synth OUT --world shifted``.
"""

from __future__ import annotations

from types import MappingProxyType

from .objects import OBJECTS
from .scene import SceneConfig

__all__ = ["DEFAULT_WORLD", "WORLDS", "get_world", "world_name"]

DEFAULT_WORLD = "default"

#: relative frequency of each class in the shifted world: a living room / street mix
#: with persons, furniture and pets common and the rest rarer (default: all equal)
_SHIFTED_MIX = {
    "person": 3.0, "chair": 2.0, "sofa": 2.0, "diningtable": 1.5, "tvmonitor": 1.5,
    "pottedplant": 1.5, "bottle": 1.5, "cat": 1.5, "dog": 1.5, "bicycle": 1.0,
    "car": 1.0, "motorbike": 1.0, "bird": 0.7, "horse": 0.5, "cow": 0.5, "sheep": 0.5,
    "aeroplane": 0.5, "boat": 0.5, "bus": 0.5, "train": 0.5,
}  # fmt: skip

#: name -> world (read-only)
WORLDS: MappingProxyType[str, SceneConfig] = MappingProxyType({
    DEFAULT_WORLD: SceneConfig(),
    "shifted": SceneConfig(
        # objects: more of them, an indoor-heavy mix, a little closer, more muted colours
        min_objects=2,
        max_objects=7,
        person_probability=0.6,
        classes=tuple(OBJECTS),
        class_weights=tuple(_SHIFTED_MIX[c] for c in OBJECTS),
        object_distance=0.92,
        object_saturation=0.85,
        # camera: lower, wider, more tilted, vignetting, noisier
        camera_height=(0.7, 1.4),
        pitch=(-0.02, 0.25),
        roll=(-0.15, 0.15),
        fov=(55.0, 75.0),
        vignette=0.2,
        max_noise=0.05,
        # light: dimmer ambient, a stronger, more coloured light, often from the side
        light_direction=((-2.0, 2.0), (0.3, 1.0), (-0.1, 0.8)),
        light_hues=((0.0, 0.08), (0.75, 0.9), (0.3, 0.4)),
        light_saturation=(0.1, 0.35),
        ambient=(0.2, 0.4),
        diffuse=(0.6, 1.0),
        exposure=(0.9, 1.4),
        # room: more saturated, finer textures, patterns the training rooms never had
        floor_patterns=("checker", "planks", "noise", "plain", "stripes", "spots"),
        wall_patterns=("plain", "stripes", "noise", "checker", "wool"),
        room_saturation=(0.1, 0.6),
        room_value=(0.3, 0.9),
        room_second_value=(0.15, 0.7),
        texture_scale=1.5,
    ),
})  # fmt: skip


def get_world(world: str | SceneConfig | None = None) -> SceneConfig:
    """The :class:`SceneConfig` of a world name (a config is returned as it is; None is
    the default world). An unknown name is a ``ValueError`` listing the known ones."""
    if world is None:
        return WORLDS[DEFAULT_WORLD]
    if isinstance(world, SceneConfig):
        return world
    if isinstance(world, str) and world.strip() in WORLDS:
        return WORLDS[world.strip()]
    raise ValueError(f"unknown world {world!r}; known worlds: {', '.join(WORLDS)}")


def world_name(config: SceneConfig) -> str | None:
    """The name of ``config`` among :data:`WORLDS`, or None for an unnamed config."""
    for name, cfg in WORLDS.items():
        if cfg == config:
            return name
    return None
