"""Parameters of the synthetic CT cohort: size, difficulty presets and simulated scanner sites."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from clear_bench.errors import ConfigError
from clear_bench.specs import stable_hash

GENERATOR_VERSION = 3
"""Bumped whenever the generator's output for given parameters changes (enters every fingerprint)."""

COVERAGE_MM = 450.0
"""Nominal cranio-caudal extent of a scan, femoral heads to lung apices (scaled by patient height)."""


@dataclass(frozen=True)
class Difficulty:
    """How visible the inserted findings are.

    ``lesion_diameter_mm`` bounds lesion diameters; ``contrast`` scales every lesion's HU difference from its
    surrounding tissue; ``noise`` scales each site's noise; ``disease_extent`` scales the lung patterns;
    ``max_lesions`` caps the lesions per involved organ (nodes, metastases and benign findings: 1..max);
    ``rim_hu`` is the enhancement of a malignant lesion's rim over its core (a ring, visible as shape);
    ``mimic_rate`` is the chance per organ of unlabelled look-alikes with a lesion's HU and area but
    ``mimic_aspect`` times longer than wide (tubes, not masses), so that counting voxels at lesion HU values
    is not enough and the shape has to be seen.
    """

    lesion_diameter_mm: tuple[float, float]
    contrast: float
    noise: float
    disease_extent: float
    max_lesions: int = 3
    rim_hu: float = 0.0
    mimic_rate: float = 0.0
    mimic_aspect: float = 4.0


# Calibrated with benchmarks/difficulty.py (100 patients, 5-fold CV, the HU-histogram reference and the
# image-space filter probe). Realistic 8-30 mm lesions ("hard") are close to invisible to both references
# on 15-20 mm slices, so the default preset uses large lesions with an enhancing rim (a ring an image encoder
# can see at 112 px) and unlabelled elongated mimics with the lesions' HU (which a histogram cannot tell
# from lesions), so that seeing shape pays and counting voxels alone does not.
DIFFICULTY_PRESETS: dict[str, Difficulty] = {
    "easy": Difficulty((50.0, 95.0), 2.2, 0.5, 1.3, 8, rim_hu=120.0, mimic_rate=0.15),
    "default": Difficulty((40.0, 80.0), 1.8, 0.8, 1.0, 5, rim_hu=90.0, mimic_rate=0.3),
    "hard": Difficulty((8.0, 30.0), 1.0, 1.2, 0.7, 3, rim_hu=40.0, mimic_rate=0.5),
}


@dataclass(frozen=True)
class Site:
    """A simulated scanner/protocol: slice thickness relative to nominal, field of view, noise, sharpness."""

    name: str
    thickness_factor: float
    fov_mm: float
    noise_hu: float
    blur_px: float


SITES: tuple[Site, ...] = (
    Site("site-a", 1.00, 380.0, 12.0, 0.5),
    Site("site-b", 1.15, 430.0, 22.0, 0.8),
    Site("site-c", 1.25, 480.0, 30.0, 0.6),
)


@dataclass(frozen=True)
class CohortConfig:
    """A synthetic cohort: ``patients`` scans of ``matrix`` x ``matrix`` pixels and about ``slices`` slices
    (at the thinnest site), drawn deterministically from ``seed``."""

    patients: int = 100
    slices: int = 30
    matrix: int = 112
    seed: int = 0
    preset: str = "default"
    sites: int = 3

    def __post_init__(self) -> None:
        if self.preset not in DIFFICULTY_PRESETS:
            raise ConfigError(f"synthetic preset '{self.preset}': expected one of "
                              f"{', '.join(DIFFICULTY_PRESETS)}")
        if self.patients < 1 or self.slices < 4 or self.matrix < 32:
            raise ConfigError("synthetic cohort: patients >= 1, slices >= 4 and matrix >= 32 are required")
        if not 1 <= self.sites <= len(SITES):
            raise ConfigError(f"synthetic cohort: sites must be 1..{len(SITES)}, got {self.sites}")

    @property
    def difficulty(self) -> Difficulty:
        return DIFFICULTY_PRESETS[self.preset]

    def fingerprint(self) -> str:
        """Hash of every generator input, the presets' values and the generator version."""
        return stable_hash({"config": asdict(self), "difficulty": asdict(self.difficulty),
                            "sites": [asdict(s) for s in SITES[: self.sites]],
                            "version": GENERATOR_VERSION})

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> CohortConfig:
        """A config from source options; unknown keys are ignored (they belong to the caller)."""
        names = {f.name for f in fields(cls)}
        given = {key: options[key] for key in names if options.get(key) is not None}
        return replace(cls(), **given)
