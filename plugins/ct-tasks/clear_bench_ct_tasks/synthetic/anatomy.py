"""Procedural anatomy of one synthetic patient: organ cross-sections as ellipses at each height.

Coordinates are millimetres in patient space relative to the body centre: ``x`` to the image right (the
patient's left, radiological convention), ``y`` downwards in the image (posterior), ``t`` the normalised
height from the femoral heads (0) to the lung apices (1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Ellipse:
    """An in-plane ellipse: centre ``(cy, cx)``, semi-axes ``ry, rx`` (mm), rotation ``angle`` (degrees)."""

    cy: float
    cx: float
    ry: float
    rx: float
    angle: float = 0.0

    def scaled(self, factor: float) -> Ellipse:
        return Ellipse(self.cy, self.cx, self.ry * factor, self.rx * factor, self.angle)

    def point(self, u: float, phi: float) -> tuple[float, float]:
        """The point at normalised radius ``u`` (0 centre, 1 boundary) and angle ``phi`` (radians)."""
        dy, dx = u * self.ry * math.sin(phi), u * self.rx * math.cos(phi)
        a = math.radians(self.angle)
        return (self.cy + dx * math.sin(a) + dy * math.cos(a), self.cx + dx * math.cos(a) - dy * math.sin(a))


@dataclass(frozen=True)
class Anatomy:
    """A patient's body habitus and organ jitter, drawn once per patient."""

    a: float  # body half-width (mm)
    b: float  # body half-depth (mm)
    fat: float  # subcutaneous fat thickness (mm)
    wall: float  # muscle wall thickness (mm)
    height: float  # scale of the cranio-caudal extent
    shift_t: float  # shift of every landmark along t
    liver: float
    lungs: float
    heart: float
    kidneys: float
    offset_y: float
    offset_x: float

    @classmethod
    def sample(cls, rng: np.random.Generator) -> Anatomy:
        u = rng.uniform
        return cls(a=u(150, 185), b=u(100, 122), fat=u(8, 28), wall=u(9, 14), height=u(0.94, 1.06),
                   shift_t=u(-0.02, 0.02), liver=u(0.9, 1.1), lungs=u(0.92, 1.08), heart=u(0.9, 1.1),
                   kidneys=u(0.9, 1.1), offset_y=u(-12, 6), offset_x=u(-8, 8))

    # -- geometry at height t --------------------------------------------------------------------------

    def inner(self) -> tuple[float, float]:
        """Half-axes of the body cavity inside fat and muscle."""
        return self.a - self.fat - self.wall, self.b - self.fat - self.wall

    def body(self, t: float) -> Ellipse:
        chest = _smooth(t, 0.5, 0.65)
        hips = 1.0 - _smooth(t, 0.05, 0.2)
        return Ellipse(0.0, 0.0, self.b * (0.97 + 0.06 * chest), self.a * (1.0 + 0.04 * hips - 0.03 * chest))

    def cavity(self, t: float) -> Ellipse:
        ai, bi = self.inner()
        # the posterior wall holds the spine and paraspinal muscles, so the cavity sits anteriorly
        return Ellipse(-14.0, 0.0, bi - 16.0, ai)

    def vertebra(self, t: float) -> Ellipse:
        cav = self.cavity(t)
        r = 15.0 + 6.0 * (1.0 - t)  # lumbar vertebrae are larger than thoracic ones
        return Ellipse(cav.cy + cav.ry - r * 0.55, 0.0, r * 0.9, r)

    def lungs_at(self, t: float) -> list[Ellipse]:
        s = _bump(t, 0.50, 1.03) ** 0.7 * self.lungs
        if s <= 0:
            return []
        ai, _ = self.inner()
        cav = self.cavity(t)
        base = _smooth(t, 0.5, 0.62)  # at the bases only the posterior recesses are aerated
        cy = cav.cy + (1.0 - base) * 0.45 * cav.ry
        ry = cav.ry * (0.35 + 0.55 * base) * s
        rx = ai * 0.37 * s
        cx = ai * (0.56 - 0.1 * (1.0 - s))
        return [Ellipse(cy, -cx, ry, rx, 10.0), Ellipse(cy, cx, ry, rx, -10.0)]

    def heart_at(self, t: float) -> Ellipse | None:
        s = _bump(t, 0.555, 0.76) * self.heart
        if s <= 0:
            return None
        ai, bi = self.inner()
        return Ellipse(-0.28 * bi, 0.12 * ai, 0.48 * bi * s, 0.36 * ai * s, -25.0)

    def liver_at(self, t: float) -> Ellipse | None:
        s = _bump(t, 0.34, 0.61) ** 0.6 * self.liver
        if s <= 0:
            return None
        ai, bi = self.inner()
        return Ellipse(-0.05 * bi, -0.38 * ai, 0.8 * bi * s, 0.55 * ai * s, -10.0)

    def spleen_at(self, t: float) -> Ellipse | None:
        s = _bump(t, 0.43, 0.58)
        if s <= 0:
            return None
        ai, bi = self.inner()
        return Ellipse(0.35 * bi, 0.62 * ai, 0.32 * bi * s, 0.2 * ai * s, 35.0)

    def stomach_at(self, t: float) -> Ellipse | None:
        s = _bump(t, 0.45, 0.58)
        if s <= 0:
            return None
        ai, bi = self.inner()
        return Ellipse(-0.35 * bi, 0.35 * ai, 0.3 * bi * s, 0.26 * ai * s, 20.0)

    def kidneys_at(self, t: float) -> list[Ellipse]:
        out = []
        ai, _ = self.inner()
        v = self.vertebra(t)
        for side, (t0, t1) in ((-1, (0.29, 0.44)), (1, (0.31, 0.46))):
            s = _bump(t, t0, t1) ** 0.7 * self.kidneys
            if s > 0:
                out.append(Ellipse(v.cy - 12.0, side * (v.rx + 0.28 * ai), 30.0 * s, 22.0 * s, side * 30.0))
        return out

    def bladder_at(self, t: float) -> Ellipse | None:
        s = _bump(t, -0.02, 0.13)
        if s <= 0:
            return None
        ai, bi = self.inner()
        return Ellipse(-0.35 * bi, 0.0, 0.42 * bi * s, 0.3 * ai * s)

    def mediastinum_region(self, t: float) -> Ellipse | None:
        """Where mediastinal lymph nodes sit (paratracheal, subcarinal, prevascular)."""
        if not 0.64 <= t <= 0.93:
            return None
        ai, bi = self.inner()
        v = self.vertebra(t)
        return Ellipse(v.cy - v.ry - 0.3 * bi, 0.0, 0.22 * bi, 0.12 * ai)

    def abdomen_region(self, t: float) -> Ellipse | None:
        """Retroperitoneal and mesenteric node stations."""
        if not 0.22 <= t <= 0.46:
            return None
        ai, bi = self.inner()
        v = self.vertebra(t)
        return Ellipse(v.cy - v.ry - 0.25 * bi, 0.0, 0.25 * bi, 0.3 * ai)

    def pelvis_region(self, t: float) -> Ellipse | None:
        """The pelvic cavity (side walls, presacral space, around the bladder)."""
        if not 0.02 <= t <= 0.2:
            return None
        ai, bi = self.inner()
        return Ellipse(0.0, 0.0, 0.5 * bi, 0.55 * ai)

    def soft_tissue_region(self, t: float, phi: float) -> tuple[float, float]:
        """A point in the subcutaneous fat / muscle wall at polar angle ``phi``."""
        body = self.body(t)
        depth = self.fat * 0.5 + 2.0
        return ((body.ry - depth) * math.sin(phi), (body.rx - depth) * math.cos(phi))


def _bump(t: float, t0: float, t1: float) -> float:
    """An ellipsoid profile: 1 at the middle of ``[t0, t1]``, 0 outside."""
    c, h = (t0 + t1) / 2.0, (t1 - t0) / 2.0
    q = 1.0 - ((t - c) / h) ** 2
    return math.sqrt(q) if q > 0 else 0.0


def _smooth(t: float, t0: float, t1: float) -> float:
    """A smooth step from 0 below ``t0`` to 1 above ``t1``."""
    x = min(1.0, max(0.0, (t - t0) / (t1 - t0)))
    return x * x * (3.0 - 2.0 * x)
