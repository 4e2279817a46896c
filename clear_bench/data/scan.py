"""The scan: an HU volume with its geometry, a pseudonymous id and optional lesion boxes; and the record of a
scan that could not be read or embedded."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from clear_bench.specs import LesionBox


@dataclass
class Scan:
    """One CT scan.

    ``volume`` is ``[slices, rows, cols]`` float32, axial slices ordered by patient position (inferior to
    superior). Its values are Hounsfield units, except for sources of pre-windowed images (the CLEAR seed
    PNG layout), where ``prewindowed`` is True and values lie in [0, 1]. ``spacing`` is ``(z, y, x)`` in mm.
    ``direction`` (row-major 3x3, columns the x, y, z voxel axes in patient LPS) and ``origin`` (the LPS
    position of voxel ``[0, 0, 0]`` in mm) place the voxels in the patient, as SimpleITK does.
    ``scan_id`` is pseudonymous: never a patient name or a hospital identifier. ``notes`` are what reading
    it noticed (series chosen, voxel values out of range, annotations without a match), never identifying.
    """

    scan_id: str
    volume: np.ndarray
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    lesions: list[LesionBox] = field(default_factory=list)
    prewindowed: bool = False
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    notes: list[str] = field(default_factory=list)

    @property
    def num_slices(self) -> int:
        return int(self.volume.shape[0])

    def lesion_slices(self) -> set[int]:
        """Indices of slices that carry at least one lesion box."""
        return {box.slice_index for box in self.lesions}

    def index_of(self, points_mm: np.ndarray) -> np.ndarray:
        """Continuous voxel indices ``[z, y, x]`` of patient LPS points ``[..., 3]`` (mm)."""
        direction = np.asarray(self.direction, dtype=np.float64).reshape(3, 3)
        dz, dy, dx = self.spacing
        axes = direction * np.array([dx, dy, dz])  # column j: one voxel step along axis j, in mm
        relative = np.asarray(points_mm, dtype=np.float64) - np.asarray(self.origin, dtype=np.float64)
        xyz = np.linalg.solve(axes, relative.reshape(-1, 3).T).T
        return xyz[:, ::-1].reshape(np.shape(points_mm))


@dataclass(frozen=True)
class ScanFailure:
    """A scan that could not be read or extracted: the error text and, when the source knows it, its file."""

    scan_id: str
    error: str
    file: str | None = None

    def __str__(self) -> str:
        where = f" ({self.file})" if self.file and self.file not in self.error else ""
        return f"{self.scan_id}{where}: {self.error}"
