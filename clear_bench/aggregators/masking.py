"""Masked reductions shared by the MIL heads."""

from __future__ import annotations

import torch


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Softmax of ``scores`` over ``dim`` where masked-out entries get exactly zero weight.

    Masked scores are replaced by the lowest finite value (not ``-inf``), so a row without any real
    instance yields zeros instead of NaN, in the forward and in the backward pass.
    """
    scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    return torch.softmax(scores, dim=dim) * mask


def zero_padding(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``x`` with padded instances set to zero, so that no value stored in padding (even inf or NaN)
    can reach a sum: ``0 * inf`` would be NaN even under a zero attention weight."""
    return x.masked_fill(~mask.unsqueeze(-1), 0.0)


def check_bag(x: torch.Tensor, mask: torch.Tensor) -> None:
    """Raise on shapes that would silently broadcast: ``x [..., B, N, D]`` and ``mask [..., B, N]`` bool
    (leading dimensions are ensemble members, see :mod:`clear_bench.evaluation.ensemble`)."""
    if x.dim() < 3 or mask.shape != x.shape[:-1] or mask.dtype != torch.bool:
        raise ValueError(f"expected x [B, N, D] and bool mask [B, N], got {tuple(x.shape)} and "
                         f"{tuple(mask.shape)} {mask.dtype}")
