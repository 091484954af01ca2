"""Ray casting of the synthetic world's primitives: ellipsoids, boxes, cylinders.

Every primitive has a centre ``c`` and a rotation ``R`` (its local axes as columns) in
world coordinates. A ray ``o + t d`` is moved into the local frame,
``o' = R^T (o - c)``, ``d' = R^T d``, intersected there with the canonical shape, and
the hit normal is rotated back. All rays of a primitive share the camera's origin, so
``o'`` is one vector and the per-ray work is a 3x3 product and a few element-wise
operations over the pixels of the primitive's screen window.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Primitive", "intersect", "surface", "rotation", "look_rotation"]

_INF = np.float32(np.inf)


@dataclass
class Primitive:
    """One shape of an object.

    kind: "ellipsoid" (semi-axes ``size``), "box" (half extents ``size``) or "cylinder"
    (radius ``size[0]`` = ``size[1]`` across local x/y, half height ``size[2]`` on z).
    """

    kind: str
    center: np.ndarray  # (3,) world
    rot: np.ndarray  # (3, 3) world <- local
    size: np.ndarray  # (3,)
    material: int  # index into the scene's materials
    part: int = 0  # human part label for person primitives, else 0

    def extent(self, axis: int = 1) -> float:
        """Half extent of the primitive along a world axis (exact for all three kinds)."""
        r = self.rot[axis]  # the world axis expressed in local coordinates
        if self.kind == "box":
            return float(np.abs(r) @ self.size)
        if self.kind == "ellipsoid":
            return float(np.sqrt(((r * self.size) ** 2).sum()))
        c = abs(r[2])
        return float(c * self.size[2] + self.size[0] * np.sqrt(max(0.0, 1 - c * c)))

    def corners(self) -> np.ndarray:
        """The 8 corners (8, 3) of the primitive's oriented bounding box, world coordinates."""
        half = self.size if self.kind != "cylinder" else np.array([self.size[0], self.size[0], self.size[2]])
        signs = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], float)
        return self.center + (signs * half) @ self.rot.T

    def bounding_radius(self) -> float:
        if self.kind == "cylinder":
            return float(np.hypot(self.size[0], self.size[2]))
        return float(np.linalg.norm(self.size)) if self.kind == "box" else float(self.size.max())


def rotation(yaw: float = 0.0, pitch: float = 0.0, roll: float = 0.0) -> np.ndarray:
    """R = Ry(yaw) @ Rx(pitch) @ Rz(roll): yaw about world up (y), pitch about x, roll about z."""
    cy, sy = np.cos(yaw), np.sin(yaw)
    cp, sp = np.cos(pitch), np.sin(pitch)
    cr, sr = np.cos(roll), np.sin(roll)
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    return ry @ rx @ rz


def look_rotation(axis: np.ndarray) -> np.ndarray:
    """A rotation whose local z axis points along ``axis`` (for limbs, wheels, masts)."""
    z = np.asarray(axis, dtype=np.float64)
    z = z / np.linalg.norm(z)
    helper = np.array([0.0, 1.0, 0.0]) if abs(z[1]) < 0.9 else np.array([1.0, 0.0, 0.0])
    x = np.cross(helper, z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    return np.stack([x, y, z], axis=1)


def intersect(prim: Primitive, origin: np.ndarray, dirs: np.ndarray):
    """Distance to the nearest hit of rays ``origin + t * dirs`` (dirs (n, 3) float32).

    Returns ``t`` (n,) float32, inf where a ray misses, and the rays' local directions
    (n, 3) and local origin (3,), which :func:`surface` takes for the rays that are kept.
    """
    rt = prim.rot.T.astype(np.float32)
    o = (rt @ (origin - prim.center)).astype(np.float32)  # (3,)
    d = dirs @ rt.T  # (n, 3) local directions
    size = prim.size.astype(np.float32)
    if prim.kind == "ellipsoid":
        t = _ellipsoid(o, d, size)
    elif prim.kind == "box":
        t = _box(o, d, size)
    elif prim.kind == "cylinder":
        t = _cylinder(o, d, float(size[0]), float(size[2]))
    else:
        raise ValueError(f"unknown primitive kind {prim.kind!r}")
    return t, d, o


def surface(prim: Primitive, o: np.ndarray, d: np.ndarray, t: np.ndarray):
    """Local hit points (n, 3) and unit world normals (n, 3) of hits at distances ``t``."""
    p = o + t[:, None] * d
    size = prim.size.astype(np.float32)
    if prim.kind == "ellipsoid":
        nl = p / (size * size)  # gradient of |p / r|^2
    elif prim.kind == "box":
        q = np.abs(p) / size  # the face hit is where |p| reaches the half extent
        axis = np.argmax(q, axis=1)
        nl = np.zeros_like(p)
        rows = np.arange(len(p))
        nl[rows, axis] = np.sign(p[rows, axis])
    else:
        r, h = size[0], size[2]
        cap = np.abs(p[:, 2]) >= h * (1 - 1e-4) - 1e-6
        cap &= (p[:, 0] ** 2 + p[:, 1] ** 2) <= (r * r) * (1 - 1e-3)
        nl = np.where(cap[:, None], np.stack([0 * p[:, 0], 0 * p[:, 0], np.sign(p[:, 2])], 1),
                      np.stack([p[:, 0], p[:, 1], 0 * p[:, 0]], 1))  # fmt: skip
    n = nl @ prim.rot.T.astype(np.float32)
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
    return p, n


def _ellipsoid(o, d, radii):
    inv = 1.0 / radii
    os_ = o * inv
    ds = d * inv
    a = np.einsum("ij,ij->i", ds, ds)
    b = 2.0 * (ds @ os_)
    c = float(os_ @ os_) - 1.0
    disc = b * b - 4.0 * a * c
    hit = disc >= 0
    t = (-b - np.sqrt(np.maximum(disc, 0.0))) / (2.0 * a)
    hit &= t > 1e-4
    return np.where(hit, t, _INF).astype(np.float32)


def _box(o, d, half):
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / d
        t1 = (-half - o) * inv
        t2 = (half - o) * inv
    tmin = np.nan_to_num(np.minimum(t1, t2), nan=float(-_INF)).max(axis=1)  # (inf either way)
    tmax = np.nan_to_num(np.maximum(t1, t2), nan=float(_INF)).min(axis=1)
    hit = (tmax >= tmin) & (tmin > 1e-4)
    return np.where(hit, tmin, _INF).astype(np.float32)


def _cylinder(o, d, r, h):
    # side: (ox + t dx)^2 + (oy + t dy)^2 = r^2, with |z| <= h
    a = d[:, 0] ** 2 + d[:, 1] ** 2
    b = 2.0 * (o[0] * d[:, 0] + o[1] * d[:, 1])
    c = o[0] ** 2 + o[1] ** 2 - r * r
    disc = b * b - 4.0 * a * c
    ok = (disc >= 0) & (a > 1e-12)
    with np.errstate(divide="ignore", invalid="ignore"):
        ts = (-b - np.sqrt(np.maximum(disc, 0.0))) / (2.0 * a)
    z = o[2] + ts * d[:, 2]
    ts = np.where(ok & (ts > 1e-4) & (np.abs(z) <= h), ts, _INF)
    if abs(o[2]) <= h:  # the camera is level with the cylinder: no cap faces it
        return ts.astype(np.float32)
    # the cap on the camera's side: z = sign(oz) * h
    zc = h if o[2] > 0 else -h
    with np.errstate(divide="ignore", invalid="ignore"):
        tc = (zc - o[2]) / d[:, 2]
    xc = o[0] + tc * d[:, 0]
    yc = o[1] + tc * d[:, 1]
    cap = np.isfinite(tc) & (tc > 1e-4) & (xc * xc + yc * yc <= r * r)
    return np.minimum(ts, np.where(cap, tc, _INF)).astype(np.float32)
