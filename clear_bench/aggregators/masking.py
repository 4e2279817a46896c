"""Masked reductions shared by the MIL heads."""

from __future__ import annotations

import torch


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Softmax of ``scores`` over ``dim`` where masked-out entries get exactly zero weight."""
    scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=dim)
    # A row with no real instance would be all-NaN; it has no attention to give.
    return torch.nan_to_num(weights, nan=0.0)


def check_bag(x: torch.Tensor, mask: torch.Tensor) -> None:
    """Raise on shapes that would silently broadcast: ``x [B, N, D]`` and ``mask [B, N]`` bool."""
    if x.dim() != 3 or mask.shape != x.shape[:2] or mask.dtype != torch.bool:
        raise ValueError(f"expected x [B, N, D] and bool mask [B, N], got {tuple(x.shape)} and "
                         f"{tuple(mask.shape)} {mask.dtype}")
