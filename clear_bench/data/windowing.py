"""HU windowing: map Hounsfield units to [0, 1] intensities for a 2D encoder."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Window:
    """A display window: intensities ``level - width/2 .. level + width/2`` HU map to 0..1."""

    name: str
    width: float
    level: float

    def apply(self, hu: np.ndarray) -> np.ndarray:
        low = self.level - self.width / 2.0
        return np.clip((np.asarray(hu, dtype=np.float32) - low) / self.width, 0.0, 1.0)


PRESETS: dict[str, Window] = {
    "soft-tissue": Window("soft-tissue", 400.0, 40.0),
    "lung": Window("lung", 1500.0, -600.0),
    "bone": Window("bone", 1800.0, 400.0),
}
