"""Scenes of the synthetic world and their exact five-task ground truth.

A scene is a room (a floor and a back wall, each with its own texture) seen by a pinhole
camera at 1-2 m height looking slightly down, lit by one directional light and ambient
light, holding 1 to 6 objects of the 20 PASCAL object classes (:mod:`.objects`). It is
drawn from ``(seed, index)`` alone; the image size only enters when it is rendered, so
the same scene renders at any size. Sensor noise is drawn from its own generator after
the scene, so it never changes the scene. :class:`SceneConfig` sets the ranges all of
this is drawn from; its defaults are the training world, and :mod:`.worlds` names
variants of it (``get_world("shifted")``).

Ground truth, per pixel, from the ray cast itself (no anti-aliasing, so labels are exact):

- ``semseg``: class of the nearest surface (0 = background: floor and wall);
- ``parts``: the body part of a person's surface (1-6), 0 elsewhere; all 255 (ignore)
  when no person is visible, as in PASCAL-MT;
- ``normals``: the nearest surface's unit normal in camera space (x right, y up, z
  towards the camera, the OpenGL convention); every pixel hits a surface, so all valid;
- ``edges``: 1 where the *context* label (the semantic class, with floor and wall as
  two more classes, as PASCAL-Context separates them) differs from the pixel's right or
  lower neighbour: one pixel wide at any resolution, exactly on class boundaries;
- ``saliency``: the conspicuous objects. An object is salient when its visible area is
  at least 1% of the image and at least 10% of the largest visible object's area,
  so big, unoccluded foreground objects are salient and small, distant or mostly hidden
  ones are not; every pixel of a salient object is salient, nothing else is.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass, field

import numpy as np

from ..tasks import IGNORE, SEMSEG_CLASSES
from .geometry import Primitive, intersect, rotation, surface
from .materials import PATTERNS, Material, NoiseTable, hsv
from .objects import OBJECTS, Builder

__all__ = ["SceneConfig", "Scene", "make_scene", "render_scene", "generate", "FLOOR", "WALL",
           "SALIENT_MIN_AREA", "SALIENT_REL_AREA"]  # fmt: skip

#: context labels of the room's surfaces (after the 21 semantic classes)
FLOOR, WALL = 21, 22
PERSON = SEMSEG_CLASSES.index("person")
SALIENT_MIN_AREA = 0.01
SALIENT_REL_AREA = 0.1


@dataclass(frozen=True)
class SceneConfig:
    """What scenes to draw. The defaults are the world used for training and tests
    (``worlds.WORLDS["default"]``); every ``(lo, hi)`` pair is the range a scene's value
    is drawn from uniformly. Named variants are in :mod:`.worlds`.

    The defaults draw exactly the scenes drawn before these knobs existed (a test holds
    the hashes): a range is drawn where a constant was, multipliers of 1 and a vignette
    of 0 change nothing, and ``class_weights=None`` draws classes as before.
    """

    # objects
    min_objects: int = 1
    max_objects: int = 6
    person_probability: float = 0.45  # chance that the first object is a person
    classes: tuple[str, ...] = tuple(OBJECTS)  # object classes to draw from
    class_weights: tuple[float, ...] | None = None  # relative weight of each of classes; None: equal
    object_scale: float = 1.0  # multiplies every object's size
    object_distance: float = 1.0  # multiplies every object's distance from the camera
    object_saturation: float = 1.0  # multiplies the saturation of object colours (clipped to 1)
    # camera
    camera_height: tuple[float, float] = (1.0, 1.9)  # metres above the floor
    pitch: tuple[float, float] = (0.05, 0.3)  # radians looking down (negative: up)
    roll: tuple[float, float] = (-0.05, 0.05)  # radians
    fov: tuple[float, float] = (45.0, 65.0)  # vertical field of view, degrees
    vignette: float = 0.0  # brightness lost in the image corners (0 = none, 0.5 = half)
    max_noise: float = 0.03  # std of the Gaussian sensor noise, drawn in [0, max_noise]
    # light: one directional light plus ambient light
    light_direction: tuple[tuple[float, float], ...] = ((-1.0, 1.0), (0.5, 1.5), (0.1, 1.0))
    """ranges of the (unnormalised) direction towards the light, world x (right), y (up),
    z (towards the camera's side of the room)"""
    light_hues: tuple[tuple[float, float], ...] = ((0.05, 0.15), (0.55, 0.65))
    """colour temperature: a hue drawn from each range, then one of them picked (default:
    warm or cool)"""
    light_saturation: tuple[float, float] = (0.0, 0.25)  # how coloured the light is
    ambient: tuple[float, float] = (0.25, 0.5)
    diffuse: tuple[float, float] = (0.45, 0.85)
    exposure: tuple[float, float] = (0.85, 1.2)
    # room textures (floor and back wall)
    floor_patterns: tuple[str, ...] = ("checker", "planks", "noise", "plain")
    wall_patterns: tuple[str, ...] = ("plain", "stripes", "noise")
    room_saturation: tuple[float, float] = (0.05, 0.5)  # of both colours of a room texture
    room_value: tuple[float, float] = (0.35, 0.9)  # brightness of its base colour
    room_second_value: tuple[float, float] = (0.2, 0.8)  # brightness of its second colour
    texture_scale: float = 1.0  # multiplies room pattern frequencies (2 = twice as fine)

    def __post_init__(self):
        unknown = [c for c in self.classes if c not in OBJECTS]
        if unknown:
            raise ValueError(f"unknown object class(es) {unknown}; known: {', '.join(OBJECTS)}")
        if not self.classes:
            raise ValueError("classes must name at least one object class")
        if not 0 <= self.min_objects <= self.max_objects:
            raise ValueError("need 0 <= min_objects <= max_objects")
        if not 0 <= self.person_probability <= 1:
            raise ValueError(f"person_probability must be in [0, 1], got {self.person_probability}")
        if self.class_weights is not None:
            w = self.class_weights
            if len(w) != len(self.classes) or any(not np.isfinite(x) or x < 0 for x in w) or sum(w) <= 0:
                raise ValueError(f"class_weights must be {len(self.classes)} finite weights >= 0 "
                                 f"(one per class), not all 0; got {w}")  # fmt: skip
        for name in ("object_scale", "object_distance", "texture_scale"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not self.object_saturation >= 0:
            raise ValueError(f"object_saturation must be >= 0, got {self.object_saturation}")
        if not 0 <= self.vignette < 1:
            raise ValueError(f"vignette must be in [0, 1), got {self.vignette}")
        if not self.max_noise >= 0:
            raise ValueError(f"max_noise must be >= 0, got {self.max_noise}")
        ranges = {"camera_height": self.camera_height, "pitch": self.pitch, "roll": self.roll,
                  "fov": self.fov, "light_saturation": self.light_saturation, "ambient": self.ambient,
                  "diffuse": self.diffuse, "exposure": self.exposure,
                  "room_saturation": self.room_saturation, "room_value": self.room_value,
                  "room_second_value": self.room_second_value}  # fmt: skip
        ranges.update({f"light_direction[{i}]": r for i, r in enumerate(self.light_direction)})
        ranges.update({f"light_hues[{i}]": r for i, r in enumerate(self.light_hues)})
        for name, r in ranges.items():
            if len(r) != 2 or not r[0] <= r[1]:
                raise ValueError(f"{name} is a range (lo, hi) with lo <= hi, got {r}")
        if len(self.light_direction) != 3:
            raise ValueError(f"light_direction is 3 ranges (x, y, z), got {self.light_direction}")
        if not self.light_hues:
            raise ValueError("light_hues needs at least one range")
        if self.camera_height[0] <= 0:
            raise ValueError(f"camera_height must be above the floor, got {self.camera_height}")
        if not (0 < self.fov[0] and self.fov[1] < 180):
            raise ValueError(f"fov must be within (0, 180) degrees, got {self.fov}")
        for name in ("floor_patterns", "wall_patterns"):
            pats = getattr(self, name)
            bad = [p for p in pats if p not in PATTERNS]
            if not pats or bad:
                raise ValueError(f"{name} must name patterns of {', '.join(PATTERNS)}; got {pats}")


@dataclass
class Scene:
    seed: int
    index: int
    cam_height: float
    cam_rot: np.ndarray  # world <- camera
    vfov: float  # radians
    light_dir: np.ndarray  # unit, towards the light
    light_rgb: np.ndarray
    ambient: float
    diffuse: float
    exposure: float
    noise_std: float
    wall_distance: float
    floor: Material
    wall: Material
    noise: NoiseTable
    prims: list[Primitive] = field(default_factory=list)
    prim_class: list[int] = field(default_factory=list)
    prim_instance: list[int] = field(default_factory=list)
    materials: list[Material] = field(default_factory=list)
    objects: list[dict] = field(default_factory=list)  # class name, instance id, position
    vignette: float = 0.0  # brightness lost in the corners


def _room_material(rng: np.random.Generator, floor: bool, config: SceneConfig) -> Material:
    h = rng.uniform(0, 1)
    base = hsv(h, rng.uniform(*config.room_saturation), rng.uniform(*config.room_value))
    second = hsv(h + rng.uniform(-0.1, 0.1), rng.uniform(*config.room_saturation),
                 rng.uniform(*config.room_second_value))  # fmt: skip
    patterns = list(config.floor_patterns if floor else config.wall_patterns)
    pat = str(rng.choice(patterns))
    scale = rng.uniform(0.8, 2.5) if pat in ("checker", "planks", "stripes") else rng.uniform(0.5, 3)
    return Material(base, second, pat, float(scale * config.texture_scale), float(rng.uniform(0.1, 0.4)),
                    float(rng.uniform(0, 64)))  # fmt: skip


def _saturate(materials: list[Material], factor: float) -> None:
    """Scale the saturation of every colour of ``materials`` by ``factor`` (in place)."""
    for m in materials:
        for name in ("base", "second"):
            rgb = getattr(m, name)
            top = float(rgb.max())
            if top <= 0:
                continue
            h, s, v = colorsys.rgb_to_hsv(*(np.clip(rgb, 0, None) / top))
            setattr(m, name, (hsv(h, min(1.0, s * factor), v) * top).astype(np.float32))


def make_scene(seed: int, index: int, config: SceneConfig = SceneConfig()) -> Scene:
    """Draw scene ``index`` of the world with ``seed`` (independent of image size)."""
    c = config
    rng = np.random.default_rng([int(seed), int(index), 0])
    vfov = np.deg2rad(rng.uniform(*c.fov))
    pitch = rng.uniform(*c.pitch)
    scene = Scene(
        seed=int(seed), index=int(index),
        cam_height=float(rng.uniform(*c.camera_height)),
        cam_rot=rotation(yaw=0.0, pitch=-pitch, roll=rng.uniform(*c.roll)),
        vfov=float(vfov),
        light_dir=_unit(np.array([rng.uniform(*r) for r in c.light_direction])),
        light_rgb=hsv(rng.choice([rng.uniform(*r) for r in c.light_hues]), rng.uniform(*c.light_saturation), 1.0),
        ambient=float(rng.uniform(*c.ambient)),
        diffuse=float(rng.uniform(*c.diffuse)),
        exposure=float(rng.uniform(*c.exposure)),
        noise_std=float(rng.uniform(0, c.max_noise)),
        wall_distance=0.0,
        floor=_room_material(rng, floor=True, config=c),
        wall=_room_material(rng, floor=False, config=c),
        noise=NoiseTable(rng),
        vignette=float(c.vignette),
    )  # fmt: skip
    weights = None if c.class_weights is None else np.asarray(c.class_weights, float) / sum(c.class_weights)
    n_objects = int(rng.integers(config.min_objects, config.max_objects + 1))
    footprints: list[tuple[np.ndarray, float]] = []
    tan_h = np.tan(vfov / 2) * 1.3  # horizontal half-angle for a 4:3-ish frame
    far = 4.0
    for k in range(n_objects):
        if k == 0 and "person" in config.classes and rng.random() < config.person_probability:
            name = "person"
        else:
            name = str(rng.choice(config.classes) if weights is None else rng.choice(config.classes, p=weights))
        spec = OBJECTS[name]
        b = Builder(rng)
        spec.build(b)
        if c.object_saturation != 1.0:
            _saturate(b.materials, c.object_saturation)
        s = rng.uniform(*spec.scale) * c.object_scale
        yaw = rng.uniform(0, 2 * np.pi)
        rot = rotation(yaw=yaw)
        prims = [Primitive(p.kind, p.center * s, p.rot, p.size * s, p.material, p.part) for p in b.prims]
        low = min(p.center[1] - p.extent(1) for p in prims)
        lift = rng.uniform(0.3, 2.2) if spec.flies and rng.random() < 0.7 else 0.0
        radius = max(np.hypot(*(rot @ p.center)[[0, 2]]) + max(p.extent(0), p.extent(2)) for p in prims)
        placed = None
        for _ in range(20):
            dist = rng.uniform(1.8 + radius * 0.5, 6.0 + radius) * c.object_distance
            x = rng.uniform(-1, 1) * dist * tan_h * 0.75
            pos = np.array([x, lift - low, -dist])
            if all(np.hypot(*(pos - q)[[0, 2]]) > radius + r for q, r in footprints):
                placed = pos
                break
        if placed is None:
            continue
        footprints.append((placed, radius))
        far = max(far, -placed[2] + radius)
        offset = len(scene.materials)
        scene.materials += b.materials
        instance = len(scene.objects) + 1
        for p in prims:
            scene.prims.append(Primitive(p.kind, rot @ p.center + placed, rot @ p.rot, p.size,
                                         p.material + offset, p.part))  # fmt: skip
            scene.prim_class.append(SEMSEG_CLASSES.index(name))
            scene.prim_instance.append(instance)
        scene.objects.append({"class": name, "instance": instance, "position": placed.round(3).tolist()})
    scene.wall_distance = float(far + rng.uniform(1.0, 5.0))
    return scene


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _size(size) -> tuple[int, int]:
    h, w = (size, size) if np.isscalar(size) else size
    # np.isscalar's TypeGuard narrows to numpy's generic, which has no int() in its stubs
    h, w = int(h), int(w)  # type: ignore[arg-type]
    if h < 1 or w < 1:
        raise ValueError(f"image size must be positive, got {(h, w)}")
    return h, w


def render_scene(scene: Scene, size: int | tuple[int, int]) -> dict:
    """Render ``scene`` at ``size`` (S or (H, W)) -> the canonical sample dict."""
    h, w = _size(size)
    f = (h / 2) / np.tan(scene.vfov / 2)
    cam = np.array([0.0, scene.cam_height, 0.0])
    rc = scene.cam_rot.astype(np.float32)
    xs = (np.arange(w, dtype=np.float32) + 0.5 - w / 2) / f
    ys = (np.arange(h, dtype=np.float32) + 0.5 - h / 2) / f
    inv = 1.0 / np.sqrt(xs[None, :] ** 2 + ys[:, None] ** 2 + 1.0)  # (h, w)
    # world ray directions: R @ (x, -y, -1) / norm, column by column of R
    dirs = np.empty((h, w, 3), np.float32)
    for k in range(3):
        dirs[..., k] = (rc[k, 0] * xs[None, :] - rc[k, 1] * ys[:, None] - rc[k, 2]) * inv

    # the room: floor y = 0, wall z = -D
    dy, dz = dirs[..., 1], dirs[..., 2]
    with np.errstate(divide="ignore"):
        t_floor = np.where(dy < 0, -scene.cam_height / dy, np.inf).astype(np.float32)
        t_wall = np.where(dz < 0, -scene.wall_distance / dz, np.inf).astype(np.float32)
    on_floor = t_floor < t_wall
    depth = np.where(on_floor, t_floor, t_wall)
    ctx = np.where(on_floor, FLOOR, WALL).astype(np.uint8)
    normal = np.zeros((h, w, 3), np.float32)
    normal[..., 1] = on_floor
    normal[..., 2] = ~on_floor
    albedo = _room_albedo(scene, dirs, on_floor)
    part = np.zeros((h, w), np.uint8)
    inst = np.zeros((h, w), np.uint16)

    # objects, each primitive only over its screen window
    for prim, cls, ins in zip(scene.prims, scene.prim_class, scene.prim_instance):
        win = _window(prim, cam, rc, f, h, w)
        if win is None:
            continue
        y0, y1, x0, x1 = win
        d = dirs[y0:y1, x0:x1].reshape(-1, 3)
        t, dl, ol = intersect(prim, cam, d)
        dw = depth[y0:y1, x0:x1]
        closer = (t < dw.reshape(-1)).reshape(y1 - y0, x1 - x0)
        if not closer.any():
            continue
        sel = closer.reshape(-1)
        ts = t[sel]
        local, n = surface(prim, ol, dl[sel], ts)
        dw[closer] = ts
        normal[y0:y1, x0:x1][closer] = n
        albedo[y0:y1, x0:x1][closer] = scene.materials[prim.material].albedo(local, scene.noise)
        ctx[y0:y1, x0:x1][closer] = cls
        part[y0:y1, x0:x1][closer] = prim.part
        inst[y0:y1, x0:x1][closer] = ins

    # shading: Lambert with ambient light, then exposure and sensor noise
    lam = np.clip(normal @ scene.light_dir.astype(np.float32), 0, None)
    shade = (scene.ambient + scene.diffuse * lam)[..., None] * scene.light_rgb.astype(np.float32)
    img = albedo * shade * np.float32(scene.exposure)
    if scene.vignette > 0:  # cos^4-like fall-off towards the corners
        r2 = (xs[None, :] ** 2 + ys[:, None] ** 2) / max(float(xs[0] ** 2 + ys[0] ** 2), 1e-12)
        img *= (1 - np.float32(scene.vignette) * r2)[..., None]
    if scene.noise_std > 0:
        noise_rng = np.random.default_rng([scene.seed, scene.index, 1, h, w])
        img += _gaussian(noise_rng, img.shape) * np.float32(scene.noise_std)
    image = (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)

    return _labels(scene, image, ctx, part, inst, normal @ rc)


def _room_albedo(scene: Scene, dirs: np.ndarray, on_floor: np.ndarray) -> np.ndarray:
    """Floor and wall colours. Textures are evaluated on every other pixel of every
    other row and repeated (a quarter of the work, the largest share of a render);
    both materials are evaluated there so the floor/wall border stays exact."""
    h, w = on_floor.shape
    d = dirs[::2, ::2]
    cam_y = np.float32(scene.cam_height)
    with np.errstate(divide="ignore", invalid="ignore"):
        tf = -cam_y / np.minimum(d[..., 1], -1e-6)  # floor y = 0
        tw = -np.float32(scene.wall_distance) / np.minimum(d[..., 2], -1e-6)  # wall z = -D
    pf = (tf[..., None] * d).reshape(-1, 3)
    pf[:, 1] = 0.0
    pw = (tw[..., None] * d).reshape(-1, 3)
    pw[:, 1] += cam_y
    hh, ww = d.shape[:2]
    floor = scene.floor.albedo(pf, scene.noise).reshape(hh, ww, 3)
    wall = scene.wall.albedo(pw, scene.noise).reshape(hh, ww, 3)
    floor = np.repeat(np.repeat(floor, 2, axis=0), 2, axis=1)[:h, :w]
    wall = np.repeat(np.repeat(wall, 2, axis=0), 2, axis=1)[:h, :w]
    return np.where(on_floor[..., None], floor, wall).astype(np.float32)


def _window(prim: Primitive, cam, rc, f, h, w):
    """Pixel rectangle [y0, y1) x [x0, x1) that can see ``prim``: the projection of its
    oriented bounding box (the whole image when the box reaches behind the camera)."""
    p = (prim.corners() - cam) @ rc  # camera coordinates (8, 3)
    z = -p[:, 2]
    if z.max() <= 1e-3:
        return None  # behind the camera
    if z.min() <= 1e-3:
        return 0, h, 0, w
    u = f * p[:, 0] / z + w / 2
    v = -f * p[:, 1] / z + h / 2
    x0, x1 = max(0, int(u.min()) - 1), min(w, int(u.max()) + 2)
    y0, y1 = max(0, int(v.min()) - 1), min(h, int(v.max()) + 2)
    if x0 >= x1 or y0 >= y1:
        return None
    return y0, y1, x0, x1


_BANK: np.ndarray | None = None
_BANK_SIZE = 1 << 22


def _gaussian(rng: np.random.Generator, shape) -> np.ndarray:
    """Standard normal noise of ``shape``: a slice of a fixed bank at an offset drawn from
    ``rng`` (drawing fresh normals costs more than rendering a small scene), or fresh
    normals when the image is larger than the bank. Deterministic in both cases."""
    global _BANK
    n = int(np.prod(shape))
    if n > _BANK_SIZE // 2:
        return rng.standard_normal(shape, dtype=np.float32)
    if _BANK is None:
        _BANK = np.random.default_rng(20210601).standard_normal(_BANK_SIZE, dtype=np.float32)
    start = int(rng.integers(0, _BANK_SIZE - n))
    return _BANK[start : start + n].reshape(shape)


def _labels(scene: Scene, image, ctx, part, inst, normals) -> dict:
    h, w = ctx.shape
    semseg = np.where(ctx >= FLOOR, 0, ctx).astype(np.uint8)
    has_person = bool((semseg == PERSON).any())
    parts = np.where(semseg == PERSON, part, 0).astype(np.uint8) if has_person else np.full(
        (h, w), IGNORE, np.uint8)  # fmt: skip
    edges = np.zeros((h, w), np.uint8)
    edges[:, :-1] |= ctx[:, :-1] != ctx[:, 1:]
    edges[:-1, :] |= ctx[:-1, :] != ctx[1:, :]
    areas = np.bincount(inst.ravel(), minlength=len(scene.objects) + 1)[1:]
    salient_ids = []
    if areas.size and areas.max() > 0:
        for i, a in enumerate(areas, start=1):
            if a >= SALIENT_MIN_AREA * h * w and a >= SALIENT_REL_AREA * areas.max():
                salient_ids.append(i)
    is_salient = np.zeros(len(scene.objects) + 1, np.uint8)
    is_salient[salient_ids] = 1
    saliency = is_salient[inst]
    objects = [dict(o, area=int(areas[o["instance"] - 1]), salient=o["instance"] in salient_ids)
               for o in scene.objects]  # fmt: skip
    return {
        "image": image,
        "semseg": semseg,
        "parts": parts,
        "edges": edges,
        "saliency": saliency,
        "normals": np.ascontiguousarray(normals, dtype=np.float32),
        "meta": {
            "source": "synthetic",
            "seed": scene.seed,
            "index": scene.index,
            "size": [h, w],
            "objects": objects,
        },  # fmt: skip
    }


def generate(seed: int, index: int, size: int | tuple[int, int] = 256,
             config: SceneConfig = SceneConfig()) -> dict:  # fmt: skip
    """Scene ``index`` of world ``seed`` rendered at ``size``, with its exact labels."""
    return render_scene(make_scene(seed, index, config), size)
