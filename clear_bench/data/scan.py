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
    ``scan_id`` is pseudonymous: never a patient name or a hospital identifier.
    """

    scan_id: str
    volume: np.ndarray
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    lesions: list[LesionBox] = field(default_factory=list)
    prewindowed: bool = False

    @property
    def num_slices(self) -> int:
        return int(self.volume.shape[0])

    def lesion_slices(self) -> set[int]:
        """Indices of slices that carry at least one lesion box."""
        return {box.slice_index for box in self.lesions}


@dataclass(frozen=True)
class ScanFailure:
    """A scan that could not be read or extracted: the error text and, when the source knows it, its file."""

    scan_id: str
    error: str
    file: str | None = None

    def __str__(self) -> str:
        where = f" ({self.file})" if self.file else ""
        return f"{self.scan_id}{where}: {self.error}"
