"""Render a patient plan into an HU volume with per-slice lesion boxes.

Each axial slice is a slab of the site's thickness: organs are drawn at the slab centre, lesions by the
part of their ellipsoid inside the slab (partial volume lowers the contrast of a lesion thinner than the
slab). Edges are anti-aliased, then the site's reconstruction blur and correlated noise are applied and
the result is rounded to integer HU as a scanner would store it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from clear_bench.specs import LesionBox
from clear_bench_ct_tasks.synthetic.anatomy import Ellipse
from clear_bench_ct_tasks.synthetic.plan import Lesion, PatientPlan

AIR, FAT, MUSCLE, LUNG = -1000.0, -100.0, 50.0, -850.0
CORTEX, MARROW = 650.0, 230.0
BLOOD = 160.0
MIN_VISIBLE = 0.25  # slab fraction a lesion must fill to be drawn with a box on that slice


@dataclass
class Rendered:
    volume: np.ndarray  # int16 [z, y, x] HU
    boxes: list[LesionBox]
    owners: list[int]  # index into plan.lesions of each box


class _Canvas:
    """One slice in patient millimetres with cropped, anti-aliased ellipse painting."""

    def __init__(self, plan: PatientPlan) -> None:
        m, p = plan.matrix, plan.pixel_mm
        self.p = p
        self.ys = (np.arange(m) - (m - 1) / 2.0) * p - plan.anatomy.offset_y
        self.xs = (np.arange(m) - (m - 1) / 2.0) * p - plan.anatomy.offset_x
        self.img = np.full((m, m), AIR, dtype=np.float32)

    def mask(self, e: Ellipse, power: float = 2.0) -> tuple[tuple[slice, slice], np.ndarray]:
        reach = max(e.rx, e.ry) + 2 * self.p
        i0, i1 = np.searchsorted(self.ys, [e.cy - reach, e.cy + reach])
        j0, j1 = np.searchsorted(self.xs, [e.cx - reach, e.cx + reach])
        box = (slice(int(i0), int(i1)), slice(int(j0), int(j1)))
        if i1 <= i0 or j1 <= j0 or e.rx <= 0 or e.ry <= 0:
            return box, np.zeros((max(0, int(i1 - i0)), max(0, int(j1 - j0))), np.float32)
        dy = self.ys[i0:i1, None] - e.cy
        dx = self.xs[None, j0:j1] - e.cx
        if e.angle:
            a = math.radians(e.angle)
            dx, dy = dx * math.cos(a) + dy * math.sin(a), -dx * math.sin(a) + dy * math.cos(a)
        r = (np.abs(dx / e.rx) ** power + np.abs(dy / e.ry) ** power) ** (1.0 / power)
        inside = (1.0 - r) * min(e.rx, e.ry)
        return box, np.clip(inside / self.p + 0.5, 0.0, 1.0).astype(np.float32)

    def full_mask(self, e: Ellipse | None, power: float = 2.0) -> np.ndarray:
        out = np.zeros_like(self.img)
        if e is not None:
            box, m = self.mask(e, power)
            out[box] = m
        return out

    def paint(self, e: Ellipse | None, hu: float, power: float = 2.0, weight: float = 1.0) -> None:
        if e is None:
            return
        box, m = self.mask(e, power)
        region = self.img[box]
        region += (m * weight) * (hu - region)

    def paint_mask(self, mask: np.ndarray, hu: float) -> None:
        self.img += mask * (hu - self.img)

    def paint_organ(self, e: Ellipse | None, outer: float, inner: float, ratio: float) -> None:
        """An organ with a rim (cortex, wall, myocardium) and a different core."""
        if e is not None:
            self.paint(e, outer)
            self.paint(e.scaled(ratio), inner)


def render(plan: PatientPlan, *, lesions: bool = True, disease: bool = True, noise: bool = True) -> Rendered:
    """The plan's volume (int16 HU) and its lesion boxes; switches leave findings or noise out (for tests)."""
    rng = np.random.default_rng(plan.render_seed)
    texture_rng = np.random.default_rng([plan.render_seed, 1])
    slices, boxes, owners = [], [], []
    for k in range(plan.n_slices):
        z = (k + 0.5) * plan.thickness_mm
        t = plan.t_of_z(z)
        canvas = _Canvas(plan)
        lung_mask, liver_mask = _anatomy(canvas, plan, t, texture_rng)
        if disease:
            _lung_disease(canvas, plan, z, t, lung_mask, rng)
        for mimic in plan.mimics:  # look-alikes are part of the anatomy: no box, no label, always drawn
            _lesion(canvas, plan, mimic, z, {"lung": lung_mask, "liver": liver_mask})
        if lesions:
            for owner, lesion in enumerate(plan.lesions):
                box = _lesion(canvas, plan, lesion, z, {"lung": lung_mask, "liver": liver_mask})
                if box is not None:
                    boxes.append(LesionBox(k, *box, label=lesion.organ))
                    owners.append(owner)
        slices.append(canvas.img)
    volume = np.stack(slices)
    site = plan.site
    if site.blur_px > 0:
        volume = ndimage.gaussian_filter(volume, sigma=(0, site.blur_px, site.blur_px), mode="nearest")
    if noise and plan.noise_hu > 0:
        white = rng.standard_normal(volume.shape, dtype=np.float32)
        grain = ndimage.gaussian_filter(white, sigma=(0, 0.7, 0.7))
        grain *= plan.noise_hu / max(float(grain.std()), 1e-6)
        volume += grain
    volume = np.clip(np.rint(volume), -1024, 3071).astype(np.int16)
    return Rendered(volume, boxes, owners)


def _anatomy(c: _Canvas, plan: PatientPlan, t: float,
             rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    an = plan.anatomy
    body = an.body(t)
    cav = an.cavity(t)
    ai, bi = an.inner()
    v = an.vertebra(t)
    _table(c, body)
    c.paint(body, FAT, power=2.3)
    c.paint(Ellipse(body.cy, 0, body.ry - an.fat, body.rx - an.fat), MUSCLE, power=2.3)
    if t < 0.24:  # gluteal muscles
        for side in (-1, 1):
            c.paint(Ellipse(0.45 * an.b, side * 0.42 * an.a, 0.42 * an.b, 0.36 * an.a, side * 20), MUSCLE - 5)
    chest = t > 0.52
    c.paint(cav, -85.0 if chest else -95.0, power=2.2)
    for side in (-1, 1):  # paraspinal muscles
        c.paint(Ellipse(v.cy + v.ry + 18, side * (v.rx + 8), 20, 17), MUSCLE)
    _skeleton(c, plan, t, body, v)
    _vessels(c, t, v, ai, bi)
    if not chest or t < 0.6:
        _abdomen(c, plan, t, v, cav, rng)
    liver = an.liver_at(t)
    c.paint(liver, 105.0)
    if liver is not None:
        for _ in range(4):  # hepatic veins and portal branches
            y, x = liver.point(math.sqrt(rng.random()) * 0.7, rng.uniform(0, 2 * math.pi))
            c.paint(Ellipse(y, x, 3.5, 3.5), 150.0)
    liver_mask = c.full_mask(liver) * (c.img > 60)
    lungs = an.lungs_at(t)
    for lung in lungs:
        c.paint(lung, LUNG, power=2.2)
        for _ in range(int(lung.rx * lung.ry / 180)):  # pulmonary vessels, denser towards the hilum
            u = rng.random() ** 0.7 * 0.92
            y, x = lung.point(u, rng.uniform(0, 2 * math.pi))
            r = 2.6 - 1.4 * u
            c.paint(Ellipse(y, x, r, r), 40.0, weight=0.8)
    if chest:
        _mediastinum(c, plan, t, v, bi, ai)
    lung_union = np.zeros_like(c.img)
    for lung in lungs:
        lung_union = np.maximum(lung_union, c.full_mask(lung, 2.2))
    lung_mask = lung_union * (c.img < -500)
    return lung_mask, liver_mask


def _table(c: _Canvas, body: Ellipse) -> None:
    top = body.cy + body.ry + 12.0
    for y0, hu in ((top, 250.0), (top + 14.0, 250.0)):
        rows = (c.ys >= y0) & (c.ys < y0 + 3.0)
        cols = np.abs(c.xs) < body.rx * 1.1
        c.img[np.ix_(rows, cols)] = hu


def _skeleton(c: _Canvas, plan: PatientPlan, t: float, body: Ellipse, v: Ellipse) -> None:
    an = plan.anatomy
    ai, bi = an.inner()
    if t >= 0.16:
        c.paint_organ(v, CORTEX, MARROW, 0.82)  # vertebral body
        c.paint(Ellipse(v.cy + v.ry + 9, 0, 7, 7), 15.0)  # spinal canal
        c.paint(Ellipse(v.cy + v.ry + 20, 0, 9, 5), 500.0)  # spinous process
        for side in (-1, 1):  # laminae / transverse processes
            c.paint(Ellipse(v.cy + v.ry + 12, side * 12, 4, 8, side * 30), 450.0)
    else:  # sacrum and pelvic ring
        sac = Ellipse(v.cy + 4, 0, 14, 38)
        c.paint_organ(sac, 500.0, 260.0, 0.7)
    for side in (-1, 1):
        wing = _profile(t, 0.09, 0.25)
        if wing > 0:  # iliac wings
            c.paint_organ(Ellipse(0.15 * bi, side * 0.58 * ai, 0.1 * bi * wing + 4, 0.3 * ai * wing + 6,
                                  side * -55), CORTEX, 280.0, 0.55)
        head = _profile(t, -0.06, 0.1)
        if head > 0:  # femoral heads and greater trochanters
            c.paint_organ(Ellipse(0.0, side * 0.66 * ai, 24 * head, 24 * head), CORTEX, 300.0, 0.8)
            c.paint_organ(Ellipse(0.05 * bi, side * 0.88 * ai, 14 * head, 12 * head), CORTEX, 280.0, 0.7)
    if 0.5 < t < 0.99:  # ribs in the chest wall, sparing spine and sternum
        ry = body.ry - an.fat - an.wall * 0.5
        rx = body.rx - an.fat - an.wall * 0.5
        for deg in list(range(118, 250, 22)) + list(range(-70, 62, 22)):
            phi = math.radians(deg)
            y, x = ry * math.sin(phi), rx * math.cos(phi)
            c.paint_organ(Ellipse(y, x, 3.5, 7.0, deg + 90), 550.0, 220.0, 0.5)
    if 0.6 < t < 0.9:  # sternum
        c.paint(Ellipse(-(body.ry - an.fat - an.wall * 0.6), 0, 6, 14), 380.0)
    if t > 0.8:  # scapulae
        for side in (-1, 1):
            c.paint(Ellipse(0.6 * an.b, side * 0.55 * an.a, 3.5, 30, side * -22), 480.0)


def _vessels(c: _Canvas, t: float, v: Ellipse, ai: float, bi: float) -> None:
    front = v.cy - v.ry
    if 0.2 < t < 0.82:
        c.paint(Ellipse(front - 13, 14, 12, 12), BLOOD)  # descending aorta
    if 0.08 < t <= 0.2:
        for side in (-1, 1):
            c.paint(Ellipse(front - 10, side * 30, 7, 7), BLOOD)  # iliac arteries
    if 0.22 < t < 0.58:
        c.paint(Ellipse(front - 12, -24, 12, 10), 130.0)  # inferior vena cava


def _abdomen(c: _Canvas, plan: PatientPlan, t: float, v: Ellipse, cav: Ellipse,
             rng: np.random.Generator) -> None:
    an = plan.anatomy
    if 0.05 < t < 0.47:  # bowel loops with fluid, air or faeces
        region = Ellipse(cav.cy - 0.15 * cav.ry, 0, cav.ry * 0.7, cav.rx * 0.8)
        for _ in range(9):
            y, x = region.point(math.sqrt(rng.random()), rng.uniform(0, 2 * math.pi))
            r = rng.uniform(9, 18)
            content = (15.0, -950.0, -250.0)[int(rng.choice(3, p=(0.55, 0.3, 0.15)))]
            c.paint_organ(Ellipse(y, x, r, r * rng.uniform(0.8, 1.2)), 45.0, content, 0.75)
    if 0.12 < t < 0.44:  # psoas muscles
        r = 10 + 14 * (0.44 - t) / 0.32
        for side in (-1, 1):
            c.paint(Ellipse(v.cy - 2, side * (v.rx + r * 0.8), r * 0.9, r), MUSCLE)
    c.paint(an.spleen_at(t), 110.0)
    stomach = an.stomach_at(t)
    if stomach is not None:
        c.paint_organ(stomach, 45.0, 20.0, 0.85)
        gas = Ellipse(stomach.cy - stomach.ry * 0.45, stomach.cx, stomach.ry * 0.35, stomach.rx * 0.6)
        c.paint(gas, -950.0)
    for kidney in an.kidneys_at(t):
        c.paint(kidney, 170.0)
        c.paint(kidney.scaled(0.6), 95.0)
        c.paint(Ellipse(kidney.cy, kidney.cx * 0.85, kidney.ry * 0.25, kidney.rx * 0.25), -60.0)
    c.paint(an.bladder_at(t), 8.0)
    if t < 0.16:  # rectum
        c.paint_organ(Ellipse(v.cy - 26, 0, 13, 14), 45.0, -600.0, 0.5)


def _mediastinum(c: _Canvas, plan: PatientPlan, t: float, v: Ellipse, bi: float, ai: float) -> None:
    heart = plan.anatomy.heart_at(t)
    if heart is not None:
        c.paint_organ(heart, 55.0, 150.0, 0.72)
    front = v.cy - v.ry
    c.paint(Ellipse(front - 8, 6, 6, 6), 45.0)  # oesophagus
    if t > 0.76:
        c.paint(Ellipse(front - 24, 0, 9, 9), 5.0)  # trachea wall
        c.paint(Ellipse(front - 24, 0, 7.5, 7.5), AIR)
    elif t > 0.72:
        for side in (-1, 1):
            c.paint(Ellipse(front - 20, side * 15, 6, 6), AIR)  # main bronchi
    if 0.74 < t < 0.9:
        c.paint(Ellipse(-0.3 * bi, 0.05 * ai, 15, 15), BLOOD)  # ascending aorta / arch
        c.paint(Ellipse(-0.3 * bi, -0.2 * ai, 9, 9), 120.0)  # superior vena cava
    if 0.7 < t <= 0.77:
        c.paint(Ellipse(-0.4 * bi, 0.18 * ai, 14, 14), 140.0)  # pulmonary trunk


def _lung_disease(c: _Canvas, plan: PatientPlan, z: float, t: float, lung_mask: np.ndarray,
                  rng: np.random.Generator) -> None:
    d = plan.disease
    if not lung_mask.any():
        return
    if d.emphysema > 0:
        # upper-zone predominant low-attenuation areas: a smooth random field thresholded in the lung
        white = rng.standard_normal(c.img.shape).astype(np.float32)
        field = ndimage.gaussian_filter(white, max(1.0, 5.0 / c.p))
        share = min(0.9, d.emphysema * (0.6 + 1.4 * max(0.0, t - 0.55) / 0.45))
        inside = lung_mask > 0.5
        cut = np.quantile(field[inside], 1.0 - share) if inside.any() else np.inf
        c.paint_mask(lung_mask * (field > cut), -990.0)
        c.paint_mask(lung_mask * 0.5, -900.0)  # the rest of the lung is hyperinflated
    if d.consolidation is not None:
        _lesion(c, plan, d.consolidation, z, {"lung": lung_mask})
    if d.effusion_sides and t < d.effusion_top:
        fill = d.effusion_depth * min(1.0, (d.effusion_top - t) / (d.effusion_top - 0.5))
        for lung in plan.anatomy.lungs_at(t):
            if math.copysign(1, lung.cx) not in d.effusion_sides:
                continue
            # a dependent crescent: the lung minus an ellipse pushed anteriorly by the fluid depth
            shift = fill * lung.ry
            aerated = Ellipse(lung.cy - shift, lung.cx, lung.ry - shift, lung.rx * (1.0 - 0.3 * fill),
                              lung.angle)
            fluid = c.full_mask(lung, 2.2) * (1.0 - c.full_mask(aerated, 2.2))
            c.paint_mask(lung_mask * fluid, 12.0)


def _lesion(c: _Canvas, plan: PatientPlan, lesion: Lesion, z: float,
            masks: dict[str, np.ndarray]) -> tuple[float, float, float, float] | None:
    """Paint the part of ``lesion`` inside the slab centred at ``z``; its box (x0, y0, x1, y1) in pixels."""
    half = plan.thickness_mm / 2.0
    overlap = min(z + half, lesion.z + lesion.rz) - max(z - half, lesion.z - lesion.rz)
    if overlap <= 0:
        return None
    weight = min(1.0, overlap / plan.thickness_mm)
    holds_centre = z - half <= lesion.z < z + half
    if weight < MIN_VISIBLE and not holds_centre:
        return None
    nearest = min(max(lesion.z, z - half), z + half)
    scale = math.sqrt(max(0.0, 1.0 - ((nearest - lesion.z) / lesion.rz) ** 2))
    e = Ellipse(lesion.y, lesion.x, lesion.ry * scale, lesion.rx * scale, lesion.angle)
    if min(e.rx, e.ry) < c.p * 0.6:
        if not holds_centre:
            return None
        # a lesion smaller than a pixel still darkens or brightens the pixel that holds its centre
        grow = c.p * 0.6 / min(e.rx, e.ry)
        weight *= 1.0 / (grow * grow)
        e = e.scaled(grow)
    box, m = c.mask(e)
    if lesion.clip is not None:
        clipped = m * masks[lesion.clip][box]
        # the organ is drawn at the slab centre; keep the lesion where it lies at its own height
        m = clipped if (clipped > 0.5).any() or not holds_centre else m
    if not (m > 0.5).any():
        if not holds_centre:
            return None
        m = np.maximum(m, (m >= m.max()).astype(np.float32))
    region = c.img[box]
    region += (m * weight) * (lesion.hu + lesion.rim_hu - region)
    if lesion.rim_hu:
        box_c, m_c = c.mask(e.scaled(2.0 / 3.0))
        c.img[box_c] += (m_c * weight) * (lesion.hu - c.img[box_c])
    if lesion.necrotic:
        box_n, m_n = c.mask(e.scaled(0.45))
        c.img[box_n] += (m_n * weight) * (lesion.hu - 35.0 - c.img[box_n])
    rows = np.flatnonzero((m > 0.5).any(axis=1)) + box[0].start
    cols = np.flatnonzero((m > 0.5).any(axis=0)) + box[1].start
    return float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)


def _profile(t: float, t0: float, t1: float) -> float:
    c, h = (t0 + t1) / 2.0, (t1 - t0) / 2.0
    q = 1.0 - ((t - c) / h) ** 2
    return math.sqrt(q) if q > 0 else 0.0
