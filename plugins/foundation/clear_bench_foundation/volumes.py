"""Volume helpers shared by the 3D encoders."""

from __future__ import annotations

import torch
from torch import Tensor


def foreground_box(mask: Tensor) -> tuple[slice, slice, slice] | None:
    """The bounding box of the True voxels of ``mask [D, H, W]``, or ``None`` when there are none."""
    if not bool(mask.any()):
        return None
    bounds = []
    for axis in range(3):
        others = tuple(a for a in range(3) if a != axis)
        present = torch.nonzero(mask.any(dim=others)).flatten()
        bounds.append(slice(int(present[0]), int(present[-1]) + 1))
    return bounds[0], bounds[1], bounds[2]
