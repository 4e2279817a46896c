"""The clinical story of one synthetic patient, drawn before any pixel is rendered.

A patient has a stage (I-IV) and a primary tumour; stage II means a large primary, stage III regional
lymph nodes, stage IV distant metastases (with or without nodes). Benign incidental findings (cysts,
calcified granulomas and nodes, bone islands) add lesions that count for lesion location but not for
staging. Lung disease patterns are drawn independently. Labels of every task follow from this plan alone,
so a task can list its labels without rendering a single volume.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from clear_bench.data.annotations import LESION_TYPES
from clear_bench_ct_tasks.synthetic.anatomy import Anatomy, Ellipse
from clear_bench_ct_tasks.synthetic.config import COVERAGE_MM, SITES, CohortConfig, Difficulty, Site

STAGES: tuple[str, ...] = ("I", "II", "III", "IV")
LUNG_DISEASES: tuple[str, ...] = ("emphysema", "nodule", "consolidation", "effusion")

_PRIMARY_SITES = {"lung": 0.3, "liver": 0.15, "kidney": 0.15, "pelvis": 0.2, "soft tissue": 0.2}
_NODE_STATION = {"lung": "mediastinum", "liver": "abdomen", "kidney": "abdomen", "pelvis": "pelvis",
                 "soft tissue": "soft tissue"}
_METASTASIS_SITES = {"liver": 0.35, "bone": 0.3, "lung": 0.25, "abdomen": 0.1}
# chance of one or two benign incidental lesions per organ, chosen so that every location label is
# positive in roughly 35-45% of patients (measured by `clear-bench data cohort --summary`)
_BENIGN_RATE = {"bone": 0.32, "abdomen": 0.3, "mediastinum": 0.3, "liver": 0.22, "lung": 0.1,
                "kidney": 0.32, "soft tissue": 0.22, "pelvis": 0.2}
_DISEASE_RATE = {"emphysema": 0.4, "consolidation": 0.38, "effusion": 0.38}

# (tissue HU the lesion replaces, malignant HU difference at contrast 1, benign lesion HU)
_LESION_HU = {
    "lung": (-850.0, None, 380.0),
    "liver": (105.0, -55.0, 8.0),
    "kidney": (170.0, -95.0, 6.0),
    "bone": (230.0, -170.0, 900.0),
    "mediastinum": (-90.0, 120.0, 420.0),
    "abdomen": (-90.0, 120.0, 420.0),
    "soft tissue": (-100.0, 135.0, 12.0),
    "pelvis": (-90.0, 125.0, 420.0),
}
_CLIP_TO = {"lung": "lung", "liver": "liver"}


@dataclass(frozen=True)
class Lesion:
    """An ellipsoidal lesion: centre ``(z, y, x)`` mm (z from the bottom of the scan), semi-axes, HU."""

    organ: str
    role: str  # primary | node | metastasis | benign
    z: float
    y: float
    x: float
    rz: float
    ry: float
    rx: float
    angle: float
    hu: float
    clip: str | None
    necrotic: bool
    rim_hu: float = 0.0
    """HU added to the outer third of the radius (an enhancing rim around the mass; 0 for none)."""

    @property
    def diameter_mm(self) -> float:
        return 2.0 * max(self.ry, self.rx)


@dataclass(frozen=True)
class DiseasePlan:
    """Lung patterns: emphysema severity, a consolidation ellipsoid, effusion sides and height."""

    emphysema: float  # fraction of upper-zone lung made low-attenuation (0 = none)
    consolidation: Lesion | None
    effusion_sides: tuple[int, ...]  # -1 image left, +1 image right
    effusion_depth: float  # fraction of the lung depth filled at the base
    effusion_top: float  # t where the effusion ends


@dataclass(frozen=True)
class PatientPlan:
    """Everything that determines one synthetic scan and its labels."""

    index: int
    scan_id: str
    site: Site
    anatomy: Anatomy
    n_slices: int
    thickness_mm: float
    pixel_mm: float
    matrix: int
    stage: int
    primary: str
    lesions: tuple[Lesion, ...]
    disease: DiseasePlan
    noise_hu: float
    render_seed: int
    mimics: tuple[Lesion, ...] = ()
    """Lesion mimics: elongated structures with a lesion's HU in its organ (vessels, bowel, fissures),
    drawn like anatomy, never boxed and never labelled: voxel counts at lesion HU values cannot tell a
    patient with a lesion from one with a mimic; the shape (round versus elongated) can."""

    @property
    def extent_mm(self) -> float:
        return self.n_slices * self.thickness_mm

    def t_of_z(self, z: float) -> float:
        return z / self.extent_mm - self.anatomy.shift_t

    def z_of_t(self, t: float) -> float:
        return (t + self.anatomy.shift_t) * self.extent_mm

    def location_labels(self) -> np.ndarray:
        """0/1 over :data:`LESION_TYPES`: the organs holding at least one lesion."""
        organs = {lesion.organ for lesion in self.lesions}
        return np.array([t in organs for t in LESION_TYPES], dtype=np.float32)

    def lung_disease_labels(self) -> np.ndarray:
        """0/1 over :data:`LUNG_DISEASES`."""
        has = {
            "emphysema": self.disease.emphysema > 0,
            "nodule": any(lesion.organ == "lung" for lesion in self.lesions),
            "consolidation": self.disease.consolidation is not None,
            "effusion": bool(self.disease.effusion_sides),
        }
        return np.array([has[name] for name in LUNG_DISEASES], dtype=np.float32)

    def stage_label(self) -> np.ndarray:
        return np.array([self.stage], dtype=np.int64)


def scan_id_of(config: CohortConfig, index: int) -> str:
    return f"syn{config.seed}-{index:05d}"


def plan_patient(config: CohortConfig, index: int) -> PatientPlan:
    """The plan of patient ``index``: independent of the cohort size, deterministic in (seed, index)."""
    seq = np.random.SeedSequence([config.seed, index, 20240601])
    plan_seed, render_seed, mimic_seed = seq.spawn(3)
    rng = np.random.default_rng(plan_seed)
    diff = config.difficulty
    site = SITES[int(rng.integers(config.sites))]
    anatomy = Anatomy.sample(rng)
    thickness = COVERAGE_MM / config.slices * site.thickness_factor
    n_slices = max(4, round(COVERAGE_MM * anatomy.height / thickness))
    stage = int(rng.integers(4))
    primary = _choice(rng, _PRIMARY_SITES)
    partial = PatientPlan(index, scan_id_of(config, index), site, anatomy, n_slices, thickness,
                          site.fov_mm / config.matrix, config.matrix, stage, primary, (),
                          DiseasePlan(0.0, None, (), 0.0, 0.0), site.noise_hu * diff.noise, 0)
    lo, hi = diff.lesion_diameter_mm
    span = hi - lo
    lesions: list[Lesion] = []
    size = {0: (lo, lo + 0.4 * span), 1: (lo + 0.6 * span, hi)}.get(stage, (lo, hi))
    lesions.append(_lesion(rng, partial, diff, primary, "primary", rng.uniform(*size)))
    if stage == 2 or (stage == 3 and rng.random() < 0.6):
        for _ in range(int(rng.integers(1, diff.max_lesions + 1))):
            lesions.append(_lesion(rng, partial, diff, _NODE_STATION[primary], "node",
                                   rng.uniform(lo, lo + 0.5 * span)))
    if stage == 3:
        candidates = {k: v for k, v in _METASTASIS_SITES.items() if k != primary}
        for organ in _choices(rng, candidates, int(rng.integers(1, 3))):
            for _ in range(int(rng.integers(1, diff.max_lesions + 1))):
                size = rng.uniform(lo, lo + 0.6 * span)
                lesions.append(_lesion(rng, partial, diff, organ, "metastasis", size))
    for organ in LESION_TYPES:
        if rng.random() < _BENIGN_RATE[organ]:
            for _ in range(int(rng.integers(1, max(2, diff.max_lesions)))):
                lesions.append(_lesion(rng, partial, diff, organ, "benign", rng.uniform(lo, lo + 0.4 * span)))
    disease = _disease(rng, partial, diff)
    mimics = _mimics(np.random.default_rng(mimic_seed), partial, diff)
    return replace(partial, lesions=tuple(lesions), disease=disease, mimics=mimics,
                   render_seed=int(render_seed.generate_state(1)[0]))


def _mimics(rng: np.random.Generator, plan: PatientPlan, diff: Difficulty) -> tuple[Lesion, ...]:
    """Per organ, with probability ``diff.mimic_rate``, one or two elongated look-alikes of a lesion of
    that organ: the same HU (malignant or benign, at random) and the same in-plane area as a lesion of
    the preset's sizes, but ``diff.mimic_aspect`` times longer than wide."""
    lo, hi = diff.lesion_diameter_mm
    out: list[Lesion] = []
    for organ in LESION_TYPES:
        if rng.random() >= diff.mimic_rate:
            continue
        for _ in range(int(rng.integers(1, 3))):
            role = "benign" if rng.random() < 0.5 else "primary"
            like = _lesion(rng, plan, diff, organ, role, rng.uniform(lo, lo + 0.6 * (hi - lo)))
            r = max(like.rx, like.ry)
            long, short = r * math.sqrt(diff.mimic_aspect), r / math.sqrt(diff.mimic_aspect)
            # in the body wall a tube runs along the wall, not out of the body
            angle = math.degrees(math.atan2(like.y, like.x)) + 90.0 if organ == "soft tissue" else like.angle
            out.append(replace(like, role="mimic", rx=long, ry=short, rz=like.rz * 0.8, angle=angle,
                               necrotic=False))
    return tuple(out)


def _lesion(rng: np.random.Generator, plan: PatientPlan, diff: Difficulty, organ: str, role: str,
            diameter: float) -> Lesion:
    t, (y, x) = _place(rng, plan.anatomy, organ)
    radius = diameter / 2.0
    tissue, delta, benign_hu = _LESION_HU[organ]
    if role == "benign":
        hu = benign_hu
    elif delta is None:
        hu = 35.0
    else:
        # more contrast means more conspicuous, but a mass stays between water and ~100 HU (enhancing)
        hu = min(max(tissue + delta * diff.contrast, 0.0), 100.0)
    elong = rng.uniform(0.8, 1.0)
    return Lesion(organ, role, plan.z_of_t(t), y, x, radius * rng.uniform(0.85, 1.15), radius * elong, radius,
                  float(rng.uniform(0, 180)), float(hu), _CLIP_TO.get(organ),
                  role != "benign" and diameter >= 30.0, 0.0 if role == "benign" else diff.rim_hu)


def _place(rng: np.random.Generator, anat: Anatomy, organ: str) -> tuple[float, tuple[float, float]]:
    """A height and an in-plane point inside ``organ``."""
    for _ in range(100):
        ellipse, t, u_max = _region(rng, anat, organ)
        if ellipse is not None:
            u = math.sqrt(rng.random()) * u_max
            return t, ellipse.point(u, rng.uniform(0, 2 * math.pi))
        if organ == "soft tissue":
            phi = rng.uniform(0, 2 * math.pi)
            return t, anat.soft_tissue_region(t, phi)
    raise RuntimeError(f"cannot place a lesion in {organ}")  # pragma: no cover - regions are never empty


def _region(rng: np.random.Generator, anat: Anatomy, organ: str) -> tuple[Ellipse | None, float, float]:
    if organ == "lung":
        t = rng.uniform(0.6, 0.95)
        lungs = anat.lungs_at(t)
        return (lungs[int(rng.integers(len(lungs)))] if lungs else None), t, 0.6
    if organ == "liver":
        t = rng.uniform(0.4, 0.56)
        return anat.liver_at(t), t, 0.55
    if organ == "kidney":
        t = rng.uniform(0.32, 0.43)
        kidneys = anat.kidneys_at(t)
        return (kidneys[int(rng.integers(len(kidneys)))] if kidneys else None), t, 0.4
    if organ == "bone":
        t = rng.uniform(0.15, 0.95)
        return anat.vertebra(t), t, 0.3
    if organ == "mediastinum":
        t = rng.uniform(0.66, 0.9)
        return anat.mediastinum_region(t), t, 0.8
    if organ == "abdomen":
        t = rng.uniform(0.24, 0.44)
        return anat.abdomen_region(t), t, 0.8
    if organ == "pelvis":
        t = rng.uniform(0.04, 0.18)
        return anat.pelvis_region(t), t, 0.8
    if organ == "soft tissue":
        return None, rng.uniform(0.1, 0.9), 0.0
    raise ValueError(f"unknown organ {organ}")


def _disease(rng: np.random.Generator, plan: PatientPlan, diff: Difficulty) -> DiseasePlan:
    ext = diff.disease_extent
    emphysema = rng.uniform(0.12, 0.3) * ext if rng.random() < _DISEASE_RATE["emphysema"] else 0.0
    consolidation = None
    if rng.random() < _DISEASE_RATE["consolidation"]:
        t = rng.uniform(0.58, 0.8)
        lungs = plan.anatomy.lungs_at(t)
        lung = lungs[int(rng.integers(len(lungs)))]
        y, x = lung.point(math.sqrt(rng.random()) * 0.5, rng.uniform(0, 2 * math.pi))
        r = rng.uniform(22, 40) * ext
        consolidation = Lesion("lung", "consolidation", plan.z_of_t(t), y, x, r * 1.2, r, r * 0.8,
                               float(rng.uniform(0, 180)), 30.0, "lung", False)
    sides: tuple[int, ...] = ()
    depth = top = 0.0
    if rng.random() < _DISEASE_RATE["effusion"]:
        sides = ((-1,), (1,), (-1, 1))[int(rng.integers(3))]
        depth = rng.uniform(0.3, 0.55) * ext
        top = rng.uniform(0.68, 0.8)
    return DiseasePlan(float(emphysema), consolidation, sides, float(depth), float(top))


def _choice(rng: np.random.Generator, weights: dict[str, float]) -> str:
    names = list(weights)
    p = np.array([weights[n] for n in names])
    return names[int(rng.choice(len(names), p=p / p.sum()))]


def _choices(rng: np.random.Generator, weights: dict[str, float], k: int) -> list[str]:
    names = list(weights)
    p = np.array([weights[n] for n in names])
    picked = rng.choice(len(names), size=min(k, len(names)), replace=False, p=p / p.sum())
    return [names[int(i)] for i in sorted(picked)]
