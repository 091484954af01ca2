"""Procedural surface appearance: a base colour, a second colour and a pattern.

Patterns are evaluated at the hit point in the primitive's own frame, so a texture
sticks to its object whatever the camera does. Noise comes from one small random table
per scene (bilinear value noise), so a scene's look is reproducible from its seed.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np

__all__ = ["Material", "NoiseTable", "hsv", "PATTERNS"]

PATTERNS = ("plain", "noise", "stripes", "checker", "spots", "wool", "screen", "windows", "planks")


def hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), dtype=np.float32)


class NoiseTable:
    """Bilinear value noise on a wrapped ``n x n`` random grid, values in [0, 1]."""

    def __init__(self, rng: np.random.Generator, n: int = 64):
        if n & (n - 1):
            raise ValueError("the noise table size must be a power of two")
        self.n = n
        self.flat = rng.random(n * n, dtype=np.float32)

    def __call__(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        n = self.n  # a power of two: indices wrap with a bit mask
        fu = np.floor(u)
        fv = np.floor(v)
        au = (u - fu).astype(np.float32)
        av = (v - fv).astype(np.float32)
        # smoothstep weights hide the grid
        au = au * au * (3 - 2 * au)
        av = av * av * (3 - 2 * av)
        i0 = fu.astype(np.int32) & (n - 1)
        j0 = (fv.astype(np.int32) & (n - 1)) * n
        i1 = (i0 + 1) & (n - 1)
        j1 = (j0 + n) & (n * n - 1)
        t = self.flat
        top = t[j0 + i0] * (1 - au) + t[j0 + i1] * au
        bot = t[j1 + i0] * (1 - au) + t[j1 + i1] * au
        return top * (1 - av) + bot * av


@dataclass
class Material:
    base: np.ndarray  # (3,) RGB in [0, 1]
    second: np.ndarray  # (3,) RGB in [0, 1]
    pattern: str = "plain"
    scale: float = 4.0  # pattern frequency (cycles per metre-ish)
    contrast: float = 0.2
    offset: float = 0.0  # shifts the noise so materials sharing a table differ

    def albedo(self, p: np.ndarray, noise: NoiseTable) -> np.ndarray:
        """Colour (n, 3) at local points ``p`` (n, 3)."""
        x, y, z = p[:, 0], p[:, 1], p[:, 2]
        s = self.scale
        u = (x + 0.61 * z) * s + self.offset
        v = (y + 0.37 * z) * s + 1.7 * self.offset
        pat = self.pattern
        if pat == "plain":
            k = 1.0 - self.contrast * (noise(u, v) - 0.5)
            return self.base * k[:, None]
        if pat == "noise":
            k = noise(u, v) * 0.6 + noise(3.1 * u, 3.1 * v) * 0.4
            return _mix(self.base, self.second, k)
        if pat == "wool":
            k = 0.75 + 0.5 * noise(6 * u, 6 * v) * noise(2 * u + 9, 2 * v)
            return self.base * k[:, None]
        if pat == "stripes":
            k = (np.sin(u * 2.5) > 0.0).astype(np.float32)
            return _mix(self.base, self.second, k * (0.85 + 0.3 * noise(u, v)))
        if pat == "checker":
            k = ((np.floor(x * s) + np.floor(z * s)).astype(np.int64) & 1).astype(np.float32)
            return _mix(self.base, self.second, k) * (1 - self.contrast * (noise(u, v) - 0.5))[:, None]
        if pat == "planks":
            k = noise(u * 0.3, np.floor(z * s) * 7.3 + v * 0.05)
            return _mix(self.base, self.second, k)
        if pat == "spots":
            k = (noise(u * 0.8, v * 0.8) > 0.55).astype(np.float32)
            return _mix(self.base, self.second, k)
        if pat == "screen":  # a television showing some colourful picture
            r = noise(u * 0.5, v * 0.5)
            g = noise(u * 0.5 + 17, v * 0.5 + 5)
            b = noise(u * 0.5 + 33, v * 0.5 + 29)
            return np.stack([r, g, b], axis=1) * 0.9 + 0.05
        if pat == "windows":  # a band of dark windows along local y near the top
            band = (y > self.contrast) & (np.sin(x * s) > -0.4)
            return _mix(self.base, self.second, band.astype(np.float32))
        raise ValueError(f"unknown pattern {pat!r}")


def _mix(a: np.ndarray, b: np.ndarray, k: np.ndarray) -> np.ndarray:
    k = np.clip(k, 0.0, 1.0)[:, None]
    return a * (1 - k) + b * k
