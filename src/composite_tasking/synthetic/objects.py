"""The 20 object classes of the synthetic world: shape families, proportions, looks.

Every class is a builder that returns primitives in the object's own frame (metres,
``y`` up, standing on ``y = 0``, facing ``+x``), drawing its proportions, pose and
colours from the scene's random generator. Appearance ranges overlap between classes
(cars, buses and boats come in any colour; cats, dogs and cows share browns and blacks),
so a class is told by its shape and layout, not by one colour.

Persons are articulated: head, torso, upper and lower arms, upper and lower legs (the
6 parts of Table 6; hands belong to the lower arms, feet to the lower legs, the neck to
the torso), posed by joint angles (standing, walking, waving, arms out).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..tasks import PARTS_CLASSES
from .geometry import Primitive, look_rotation, rotation
from .materials import Material, hsv

__all__ = ["ObjectSpec", "OBJECTS", "Builder"]

HEAD, TORSO, UPPER_ARM, LOWER_ARM, UPPER_LEG, LOWER_LEG = (
    PARTS_CLASSES.index(n) for n in ("head", "torso", "upper_arm", "lower_arm", "upper_leg", "lower_leg")
)
_I = np.eye(3)


class Builder:
    """Collects primitives and materials for one object."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.prims: list[Primitive] = []
        self.materials: list[Material] = []

    def mat(self, base, second=None, pattern="plain", scale=4.0, contrast=0.2) -> int:
        second = base * 0.5 if second is None else second
        off = float(self.rng.uniform(0, 64))
        self.materials.append(Material(np.asarray(base, np.float32), np.asarray(second, np.float32),
                                       pattern, scale, contrast, off))  # fmt: skip
        return len(self.materials) - 1

    def ellipsoid(self, c, radii, m, rot=_I, part=0):
        self.prims.append(Primitive("ellipsoid", np.asarray(c, float), rot, np.asarray(radii, float), m, part))

    def box(self, c, half, m, rot=_I, part=0):
        self.prims.append(Primitive("box", np.asarray(c, float), rot, np.asarray(half, float), m, part))

    def cylinder(self, c, axis, r, half_len, m, part=0):
        self.prims.append(Primitive("cylinder", np.asarray(c, float), look_rotation(axis),
                                    np.array([r, r, half_len], float), m, part))  # fmt: skip

    def limb(self, a, b, r, m, part=0):
        """An ellipsoid from point a to point b (rounded, overlapping at joints)."""
        a, b = np.asarray(a, float), np.asarray(b, float)
        length = np.linalg.norm(b - a)
        self.ellipsoid((a + b) / 2, (r, r, length / 2 + r * 0.6), m, look_rotation(b - a), part)

    def u(self, lo, hi):
        return float(self.rng.uniform(lo, hi))


def _any_colour(b: Builder, s=(0.3, 0.9), v=(0.3, 0.95)) -> np.ndarray:
    return hsv(b.u(0, 1), b.u(*s), b.u(*v))


def _dark(b: Builder) -> np.ndarray:
    return hsv(b.u(0, 1), b.u(0, 0.3), b.u(0.05, 0.2))


def _fur(b: Builder) -> tuple[np.ndarray, np.ndarray]:
    kind = b.rng.integers(5)
    base = [hsv(0.07, 0.7, 0.75), hsv(0.08, 0.5, 0.35), hsv(0, 0, 0.12), hsv(0.1, 0.15, 0.9),
            hsv(0, 0, 0.5)][kind]  # fmt: skip
    return base * b.u(0.8, 1.1), base * b.u(0.4, 0.7)


def _quadruped(b: Builder, body_len, body_h, leg_len, leg_r, head_r, neck, fur, pattern="noise"):
    base, second = fur
    m = b.mat(base, second, pattern, scale=b.u(3, 8), contrast=0.3)
    y = leg_len + body_h * 0.8
    b.ellipsoid((0, y, 0), (body_len / 2, body_h, body_h * 0.9), m)
    hx, hy = body_len / 2 + neck[0], y + neck[1]
    b.limb((body_len * 0.35, y + body_h * 0.3, 0), (hx, hy, 0), head_r * 0.6, m)
    b.ellipsoid((hx + head_r * 0.3, hy, 0), (head_r * 1.3, head_r, head_r * 0.9), m)
    spread = body_h * 0.55
    for sx in (-1, 1):
        for sz in (-1, 1):
            swing = b.u(-0.25, 0.25)
            top = np.array([sx * body_len * 0.33, y - body_h * 0.3, sz * spread])
            foot = top + leg_len * np.array([np.sin(swing), -np.cos(swing), 0])
            foot[1] = 0.02
            b.limb(top, foot, leg_r, m)
    tail = b.u(0.3, 1.2)
    b.limb((-body_len / 2, y + body_h * 0.2, 0),
           (-body_len / 2 - 0.3 * body_len * np.cos(tail), y + 0.3 * body_len * np.sin(tail), 0),
           leg_r * 0.6, m)  # fmt: skip
    return m, (hx, hy)


def aeroplane(b: Builder):
    body = b.mat(*(lambda c: (c, c * 0.6))(hsv(b.u(0, 1), b.u(0, 0.4), b.u(0.6, 0.95))), "plain")
    accent = b.mat(_any_colour(b), pattern="plain")
    L = b.u(2.0, 2.6)
    r = b.u(0.22, 0.3)
    b.ellipsoid((0, 0.6, 0), (L, r, r), body)
    sweep = b.u(-0.4, 0.0)
    b.box((0.2, 0.55, 0), (0.4, 0.03, b.u(1.6, 2.2)), body, rotation(yaw=sweep * 0))
    b.box((-L + 0.25, 0.95, 0), (0.3, 0.38, 0.03), accent)
    b.box((-L + 0.25, 0.62, 0), (0.25, 0.02, 0.7), body)
    for z in (-0.8, 0.8):
        b.cylinder((0.35, 0.42, z), (1, 0, 0), 0.11, 0.3, accent)


def bicycle(b: Builder):
    tyre = b.mat(_dark(b), pattern="plain")
    frame = b.mat(_any_colour(b, v=(0.4, 0.9)), pattern="plain")
    wr = b.u(0.3, 0.37)
    base = 0.55
    for x in (-base, base):
        b.cylinder((x, wr, 0), (0, 0, 1), wr, 0.025, tyre)
    seat, head, crank = (-0.2, wr + 0.45, 0), (0.38, wr + 0.5, 0), (0.0, wr, 0)
    for a, c in [(seat, head), (head, crank), (seat, crank), (crank, (-base, wr, 0)),
                 (seat, (-base, wr, 0)), (head, (base, wr, 0))]:  # fmt: skip
        b.limb(a, c, 0.028, frame)
    b.cylinder((0.4, wr + 0.62, 0), (0, 0, 1), 0.022, 0.24, tyre)
    b.box((-0.22, wr + 0.55, 0), (0.11, 0.025, 0.05), tyre)


def bird(b: Builder):
    base = _any_colour(b, s=(0.1, 0.9), v=(0.2, 0.9))
    m = b.mat(base, base * 0.5, "noise", scale=8)
    beak = b.mat(hsv(b.u(0.05, 0.15), 0.9, 0.9))
    b.ellipsoid((0, 0.45, 0), (0.42, 0.22, 0.2), m, rotation(roll=b.u(0, 0.3)))
    b.ellipsoid((0.42, 0.68, 0), (0.15, 0.14, 0.13), m)
    b.box((0.6, 0.67, 0), (0.09, 0.025, 0.025), beak)
    flap = b.u(-0.6, 0.6)
    for s in (-1, 1):
        b.ellipsoid((-0.05, 0.52, s * 0.32), (0.3, 0.04, 0.28), m, rotation(pitch=s * flap))
    b.box((-0.5, 0.45, 0), (0.18, 0.025, 0.09), m)
    for s in (-1, 1):
        b.limb((0.0, 0.28, s * 0.07), (0.02, 0.01, s * 0.08), 0.018, beak)


def boat(b: Builder):
    hull = b.mat(_any_colour(b), hsv(0, 0, 0.95), "stripes", scale=b.u(2, 5))
    deck = b.mat(hsv(b.u(0.05, 0.12), 0.5, b.u(0.5, 0.8)), pattern="noise", scale=6)
    L, W, H = b.u(1.4, 1.9), b.u(0.45, 0.6), b.u(0.25, 0.35)
    b.box((0, H, 0), (L, H, W), hull)
    b.ellipsoid((L, H, 0), (0.7, H, W), hull)
    b.box((-0.3, 2 * H + 0.18, 0), (0.5, 0.18, W * 0.7), deck)
    if b.rng.random() < 0.6:
        b.cylinder((0.3, 2 * H + 0.9, 0), (0, 1, 0), 0.035, 0.9, deck)
        b.box((0.7, 2 * H + 1.0, 0), (0.38, 0.65, 0.01), b.mat(hsv(0, 0, b.u(0.8, 1.0))))


def bottle(b: Builder):
    glass = hsv(b.rng.choice([0.3, 0.08, 0.55, 0.0]), b.u(0.3, 0.9), b.u(0.2, 0.7))
    m = b.mat(glass, hsv(b.u(0, 1), 0.2, 0.95), "windows", scale=0.0, contrast=b.u(-0.05, 0.05))
    r = b.u(0.11, 0.16)
    h = b.u(0.3, 0.4)
    b.cylinder((0, h, 0), (0, 1, 0), r, h, m)
    b.ellipsoid((0, 2 * h, 0), (r, 0.1, r), m)
    b.cylinder((0, 2 * h + 0.14, 0), (0, 1, 0), r * 0.38, 0.13, m)
    b.cylinder((0, 2 * h + 0.29, 0), (0, 1, 0), r * 0.42, 0.035, b.mat(_any_colour(b)))


def bus(b: Builder):
    paint = b.rng.choice([hsv(0.14, 0.9, 0.95), hsv(0.0, 0.8, 0.8), hsv(0.6, 0.7, 0.7), hsv(0, 0, 0.9)])
    m = b.mat(paint, hsv(0.6, 0.3, 0.15), "windows", scale=b.u(1.8, 2.6), contrast=b.u(0.05, 0.2))
    L, W, H = b.u(2.2, 2.8), b.u(0.5, 0.6), b.u(0.45, 0.55)
    b.box((0, 0.2 + H, 0), (L, H, W), m)
    tyre = b.mat(_dark(b))
    for x in (-L * 0.65, L * 0.65):
        for z in (-W, W):
            b.cylinder((x, 0.17, z), (0, 0, 1), 0.17, 0.05, tyre)


def car(b: Builder):
    paint = _any_colour(b, s=(0, 0.9), v=(0.15, 0.95))
    body = b.mat(paint, paint * 0.6, "plain", contrast=0.1)
    glass = b.mat(hsv(0.58, 0.3, 0.2), hsv(0.58, 0.2, 0.4), "noise", scale=2)
    L, W = b.u(0.9, 1.1), b.u(0.38, 0.45)
    b.box((0, 0.33, 0), (L, 0.17, W), body)
    b.box((-0.1 * L, 0.62, 0), (0.55 * L, 0.14, W * 0.9), glass)
    b.box((-0.1 * L, 0.78, 0), (0.5 * L, 0.025, W * 0.88), body)
    tyre = b.mat(_dark(b))
    for x in (-0.65 * L, 0.65 * L):
        for z in (-W, W):
            b.cylinder((x, 0.16, z), (0, 0, 1), 0.16, 0.05, tyre)


def cat(b: Builder):
    m, (hx, hy) = _quadruped(b, b.u(0.8, 1.0), b.u(0.16, 0.2), b.u(0.22, 0.28), 0.045, 0.15,
                             (0.05, 0.25), _fur(b), pattern=b.rng.choice(["stripes", "noise"]))  # fmt: skip
    for s in (-1, 1):
        b.box((hx + 0.02, hy + 0.15, s * 0.08), (0.03, 0.06, 0.03), m, rotation(roll=s * 0.3))


def chair(b: Builder):
    wood = hsv(b.u(0.04, 0.12), b.u(0.3, 0.8), b.u(0.2, 0.8))
    m = b.mat(wood, wood * 0.7, b.rng.choice(["planks", "plain"]), scale=8)
    seat = b.mat(_any_colour(b), pattern="noise", scale=8) if b.rng.random() < 0.5 else m
    w = b.u(0.22, 0.27)
    sh = b.u(0.42, 0.5)
    b.box((0, sh, 0), (w, 0.03, w), seat)
    b.box((-w + 0.02, sh + b.u(0.28, 0.36), 0), (0.025, b.u(0.26, 0.34), w), m)
    for x in (-w + 0.03, w - 0.03):
        for z in (-w + 0.03, w - 0.03):
            b.box((x, sh / 2, z), (0.022, sh / 2, 0.022), m)


def cow(b: Builder):
    base = b.rng.choice([hsv(0, 0, 0.92), hsv(0.07, 0.6, 0.45), hsv(0, 0, 0.15)])
    second = hsv(0, 0, 0.1) if base[0] > 0.5 else hsv(0, 0, 0.9)
    m, (hx, hy) = _quadruped(b, b.u(1.4, 1.7), b.u(0.28, 0.33), b.u(0.45, 0.55), 0.07, 0.2,
                             (0.25, 0.05), (base, second), pattern="spots")  # fmt: skip
    horn = b.mat(hsv(0.1, 0.2, 0.85))
    for s in (-1, 1):
        b.limb((hx, hy + 0.15, s * 0.1), (hx - 0.05, hy + 0.28, s * 0.22), 0.025, horn)


def diningtable(b: Builder):
    wood = hsv(b.u(0.04, 0.12), b.u(0.3, 0.8), b.u(0.25, 0.85))
    m = b.mat(wood, wood * 0.75, "planks", scale=6)
    L, W, H = b.u(0.7, 1.0), b.u(0.45, 0.6), b.u(0.7, 0.78)
    b.box((0, H, 0), (L, 0.035, W), m)
    if b.rng.random() < 0.4:  # a tablecloth
        b.box((0, H - 0.1, 0), (L + 0.02, 0.13, W + 0.02), b.mat(_any_colour(b), hsv(0, 0, 0.95),
                                                               "checker", scale=6))  # fmt: skip
    for x in (-L + 0.06, L - 0.06):
        for z in (-W + 0.06, W - 0.06):
            b.box((x, H / 2, z), (0.04, H / 2, 0.04), m)


def dog(b: Builder):
    m, (hx, hy) = _quadruped(b, b.u(0.9, 1.2), b.u(0.2, 0.26), b.u(0.32, 0.42), 0.055, 0.17,
                             (0.15, 0.3), _fur(b))  # fmt: skip
    b.ellipsoid((hx + 0.22, hy - 0.05, 0), (0.12, 0.07, 0.07), m)
    for s in (-1, 1):
        b.ellipsoid((hx - 0.02, hy + 0.02, s * 0.14), (0.05, 0.11, 0.03), m, rotation(roll=s * 0.2))


def horse(b: Builder):
    base = b.rng.choice([hsv(0.07, 0.7, 0.45), hsv(0.06, 0.6, 0.25), hsv(0, 0, 0.85), hsv(0, 0, 0.1)])
    m, (hx, hy) = _quadruped(b, b.u(1.5, 1.8), b.u(0.3, 0.35), b.u(0.85, 1.0), 0.065, 0.16,
                             (0.35, 0.55), (base, base * 0.6), pattern="noise")  # fmt: skip
    b.ellipsoid((hx + 0.2, hy - 0.1, 0), (0.28, 0.11, 0.11), m, rotation(roll=-0.5))
    mane = b.mat(base * 0.3)
    b.limb((hx - 0.1, hy + 0.1, 0), (hx - 0.45, hy - 0.35, 0), 0.06, mane)


def motorbike(b: Builder):
    tyre = b.mat(_dark(b))
    paint = b.mat(_any_colour(b), pattern="plain", contrast=0.1)
    metal = b.mat(hsv(0, 0, b.u(0.5, 0.8)))
    wr = b.u(0.28, 0.33)
    for x in (-0.65, 0.65):
        b.cylinder((x, wr, 0), (0, 0, 1), wr, 0.07, tyre)
    b.ellipsoid((0, wr + 0.25, 0), (0.45, 0.2, 0.15), metal)
    b.ellipsoid((0.2, wr + 0.45, 0), (0.26, 0.12, 0.15), paint)
    b.box((-0.28, wr + 0.45, 0), (0.3, 0.05, 0.13), tyre)
    b.limb((0.45, wr + 0.7, 0), (0.65, wr, 0), 0.035, metal)
    b.cylinder((0.45, wr + 0.72, 0), (0, 0, 1), 0.025, 0.3, metal)


def _person_pose(b: Builder):
    """Joint angles (radians): swing forward (+) / back, and abduction, per limb."""
    kind = b.rng.choice(["stand", "walk", "wave", "arms_out", "reach"])
    walk = b.u(0.2, 0.5) if kind == "walk" else b.u(0, 0.08)
    arm = {
        "stand": [(b.u(-0.1, 0.1), b.u(0.05, 0.2), b.u(0, 0.3))] * 2,
        "walk": [(-walk, 0.1, b.u(0.1, 0.5)), (walk, 0.1, b.u(0.1, 0.5))],
        "wave": [(b.u(-0.1, 0.1), 0.15, 0.2), (0.0, b.u(2.2, 2.8), b.u(0.3, 1.2))],
        "arms_out": [(0.0, b.u(1.2, 1.6), b.u(0, 0.3))] * 2,
        "reach": [(b.u(0.9, 1.5), 0.1, b.u(0, 0.4)), (b.u(-0.2, 1.4), 0.15, b.u(0, 0.6))],
    }[kind]
    legs = [(walk, b.u(0.02, 0.1), b.u(0, 0.3) + walk), (-walk, b.u(0.02, 0.1), b.u(0, 0.2))]
    return arm, legs


def person(b: Builder):
    skin = hsv(b.u(0.03, 0.09), b.u(0.3, 0.6), b.u(0.3, 0.95))
    shirt = _any_colour(b, s=(0.1, 0.9), v=(0.15, 0.95))
    trousers = _any_colour(b, s=(0.1, 0.7), v=(0.1, 0.6))
    m_skin = b.mat(skin, skin * 0.8, "plain", contrast=0.1)
    m_shirt = b.mat(shirt, shirt * 0.6, b.rng.choice(["plain", "stripes", "noise"]), scale=b.u(6, 14))
    m_trousers = b.mat(trousers, trousers * 0.7, "plain", contrast=0.2)
    m_hair = b.mat(b.rng.choice([hsv(0.08, 0.6, 0.15), hsv(0.1, 0.5, 0.6), hsv(0, 0, 0.05), hsv(0.06, 0.7, 0.4)]))
    m_shoes = b.mat(_dark(b))
    long_sleeves = b.rng.random() < 0.5
    shorts = b.rng.random() < 0.3
    arm_pose, leg_pose = _person_pose(b)

    u_arm, l_arm, u_leg, l_leg = b.u(0.27, 0.31), b.u(0.24, 0.28), b.u(0.4, 0.46), b.u(0.4, 0.46)
    hip_y = u_leg + l_leg + 0.07
    torso_h = b.u(0.5, 0.58)
    shoulder_w = b.u(0.18, 0.22)
    neck_y = hip_y + torso_h
    b.ellipsoid((0, hip_y + torso_h / 2, 0), (0.11, torso_h / 2 + 0.04, shoulder_w), m_shirt, part=TORSO)
    b.limb((0, neck_y - 0.02, 0), (0, neck_y + 0.08, 0), 0.05, m_skin, part=TORSO)
    head_c = np.array([0.01, neck_y + 0.17, 0])
    b.ellipsoid(head_c, (0.1, 0.12, 0.09), m_skin, part=HEAD)
    b.ellipsoid(head_c + [-0.02, 0.04, 0], (0.1, 0.1, 0.095), m_hair, part=HEAD)

    def limb_dir(swing, abduct, side):
        # down, rotated forward (+x) by swing and sideways (side * z) by abduct
        return np.array([np.sin(swing) * np.cos(abduct), -np.cos(swing) * np.cos(abduct),
                         side * np.sin(abduct)])  # fmt: skip

    for side, (swing, abduct, bend) in zip((-1, 1), arm_pose):
        shoulder = np.array([0, neck_y - 0.05, side * (shoulder_w + 0.03)])
        elbow = shoulder + u_arm * limb_dir(swing, abduct, side)
        wrist = elbow + l_arm * limb_dir(swing + bend, abduct, side)
        b.limb(shoulder, elbow, 0.05, m_shirt, part=UPPER_ARM)
        b.limb(elbow, wrist, 0.042, m_shirt if long_sleeves else m_skin, part=LOWER_ARM)
        b.ellipsoid(wrist + 0.05 * limb_dir(swing + bend, abduct, side), (0.04, 0.05, 0.03), m_skin,
                    look_rotation(limb_dir(swing + bend, abduct, side)), part=LOWER_ARM)  # fmt: skip
    for side, (swing, abduct, bend) in zip((-1, 1), leg_pose):
        hip = np.array([0, hip_y, side * 0.09])
        knee = hip + u_leg * limb_dir(swing, abduct, side)
        ankle = knee + l_leg * limb_dir(swing - bend, abduct, side)
        b.limb(hip, knee, 0.075, m_trousers, part=UPPER_LEG)
        b.limb(knee, ankle, 0.058, m_skin if shorts else m_trousers, part=LOWER_LEG)
        b.box(ankle + [0.06, -0.02, 0], (0.12, 0.04, 0.05), m_shoes, part=LOWER_LEG)


def pottedplant(b: Builder):
    pot = b.mat(hsv(b.u(0.02, 0.08), b.u(0.5, 0.8), b.u(0.4, 0.8)), pattern="plain")
    leaf = hsv(b.u(0.22, 0.38), b.u(0.5, 0.9), b.u(0.2, 0.6))
    leaves = b.mat(leaf, leaf * 0.5, "noise", scale=b.u(8, 14))
    ph = b.u(0.14, 0.2)
    b.cylinder((0, ph, 0), (0, 1, 0), b.u(0.14, 0.2), ph, pot)
    for _ in range(int(b.rng.integers(3, 7))):
        c = (b.u(-0.15, 0.15), 2 * ph + b.u(0.1, 0.5), b.u(-0.15, 0.15))
        b.ellipsoid(c, (b.u(0.1, 0.22), b.u(0.12, 0.3), b.u(0.1, 0.22)), leaves,
                    rotation(b.u(0, 6), b.u(-0.5, 0.5)))  # fmt: skip


def sheep(b: Builder):
    wool = hsv(b.u(0.08, 0.14), b.u(0.05, 0.25), b.u(0.75, 0.95))
    m = b.mat(wool, wool, "wool", scale=b.u(10, 16))
    face = b.mat(b.rng.choice([hsv(0, 0, 0.1), hsv(0.08, 0.2, 0.85)]))
    body_y = b.u(0.5, 0.6)
    b.ellipsoid((0, body_y, 0), (b.u(0.5, 0.6), 0.28, 0.3), m)
    b.ellipsoid((0.55, body_y + 0.1, 0), (0.16, 0.12, 0.11), face, rotation(roll=-0.4))
    for sx in (-0.35, 0.35):
        for sz in (-0.14, 0.14):
            b.limb((sx, body_y - 0.15, sz), (sx + b.u(-0.05, 0.05), 0.02, sz), 0.04, face)


def sofa(b: Builder):
    fabric = _any_colour(b, s=(0.1, 0.7), v=(0.2, 0.8))
    m = b.mat(fabric, fabric * 0.7, b.rng.choice(["noise", "plain", "stripes"]), scale=b.u(5, 10))
    L = b.u(0.8, 1.1)
    b.box((0, 0.22, 0), (0.45, 0.2, L), m)
    b.box((-0.36, 0.55, 0), (0.1, 0.32, L), m)
    for s in (-1, 1):
        b.box((0, 0.37, s * (L - 0.08)), (0.45, 0.16, 0.09), m)
        b.box((0.03, 0.46, s * L / 2), (0.38, 0.06, L / 2 - 0.1), m)


def train(b: Builder):
    paint = _any_colour(b, s=(0.3, 0.9), v=(0.3, 0.9))
    m = b.mat(paint, hsv(0.6, 0.3, 0.12), "windows", scale=b.u(2.5, 3.5), contrast=b.u(0.1, 0.25))
    L, W, H = b.u(2.6, 3.4), b.u(0.45, 0.55), b.u(0.42, 0.5)
    b.box((0, 0.25 + H, 0), (L, H, W), m)
    b.ellipsoid((L, 0.25 + H, 0), (b.u(0.5, 0.8), H, W), m)
    roof = b.mat(hsv(0, 0, b.u(0.3, 0.7)))
    b.cylinder((0, 0.25 + 2 * H, 0), (1, 0, 0), W * 0.9, L, roof)
    tyre = b.mat(_dark(b))
    for x in np.linspace(-L * 0.85, L * 0.85, 4):
        for z in (-W, W):
            b.cylinder((x, 0.13, z), (0, 0, 1), 0.13, 0.04, tyre)


def tvmonitor(b: Builder):
    case = b.mat(hsv(0, 0, b.u(0.03, 0.3)))
    screen = b.mat(hsv(0, 0, 0), hsv(0, 0, 0), "screen", scale=b.u(2, 6))
    w, h = b.u(0.4, 0.6), b.u(0.25, 0.35)
    cy = b.u(0.45, 0.6)
    b.box((0, cy, 0), (0.04, h, w), case)
    b.box((0.041, cy, 0), (0.004, h - 0.03, w - 0.03), screen)
    b.cylinder((-0.01, (cy - h) / 2 + 0.03, 0), (0, 1, 0), 0.035, (cy - h) / 2, case)
    b.box((0, 0.02, 0), (0.12, 0.02, 0.22), case)


@dataclass(frozen=True)
class ObjectSpec:
    """How one class is built and placed."""

    name: str
    build: Callable[[Builder], None]
    scale: tuple[float, float]  # multiplies the builder's metres (world sizes are compressed)
    flies: bool = False  # may float above the floor


#: class name -> spec, for the 20 PASCAL object classes (background is the room itself)
OBJECTS: dict[str, ObjectSpec] = {
    s.name: s
    for s in (
        ObjectSpec("aeroplane", aeroplane, (0.9, 1.4), flies=True),
        ObjectSpec("bicycle", bicycle, (1.0, 1.3)),
        ObjectSpec("bird", bird, (0.8, 1.4), flies=True),
        ObjectSpec("boat", boat, (0.9, 1.3)),
        ObjectSpec("bottle", bottle, (0.8, 1.3)),
        ObjectSpec("bus", bus, (1.6, 2.2)),
        ObjectSpec("car", car, (1.4, 1.9)),
        ObjectSpec("cat", cat, (0.9, 1.3)),
        ObjectSpec("chair", chair, (1.0, 1.3)),
        ObjectSpec("cow", cow, (1.0, 1.3)),
        ObjectSpec("diningtable", diningtable, (1.0, 1.3)),
        ObjectSpec("dog", dog, (0.9, 1.3)),
        ObjectSpec("horse", horse, (0.9, 1.1)),
        ObjectSpec("motorbike", motorbike, (1.0, 1.3)),
        ObjectSpec("person", person, (0.95, 1.1)),
        ObjectSpec("pottedplant", pottedplant, (1.0, 1.6)),
        ObjectSpec("sheep", sheep, (1.0, 1.3)),
        ObjectSpec("sofa", sofa, (1.0, 1.2)),
        ObjectSpec("train", train, (1.6, 2.2)),
        ObjectSpec("tvmonitor", tvmonitor, (1.0, 1.5)),
    )
}
