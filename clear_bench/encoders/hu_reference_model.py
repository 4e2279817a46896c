"""The torch module of the HU-histogram reference encoder (see :mod:`clear_bench.encoders.hu_reference`)."""

from __future__ import annotations

import torch
from torch import nn

from clear_bench.encoders.hu_reference import HU_EDGES, HU_SCALE, PERCENTILES, SOFT_TISSUE_HU, feature_names


class HUReference(nn.Module):
    """``[B, 1, H, W]`` HU -> ``[B, D]``: histogram fractions over :data:`HU_EDGES`, first-order statistics
    of the slice (HU / 1000), tissue-range fractions, and statistics of the soft-tissue voxels."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("edges", torch.tensor(HU_EDGES, dtype=torch.float32), persistent=False)
        self.embed_dim = len(feature_names())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(f"expected [B, 1, H, W] HU, got {tuple(x.shape)}")
        hu = x.flatten(1).float()  # [B, N]
        b, n = hu.shape
        inner = self.edges[1:-1].contiguous()
        index = torch.bucketize(hu.contiguous(), inner, right=True)  # [lo, hi) bins; outside -> end bins
        hist = torch.zeros(b, len(HU_EDGES) - 1, device=hu.device)
        hist.scatter_add_(1, index, torch.ones_like(hu))
        hist /= n

        scaled = hu / HU_SCALE
        mean, std, skew, kurt = _moments(scaled, torch.ones_like(scaled))
        quantiles = torch.quantile(scaled, torch.tensor(PERCENTILES, device=hu.device), dim=1).T
        fractions = _range_fractions(hu)
        soft = ((hu > SOFT_TISSUE_HU[0]) & (hu < SOFT_TISSUE_HU[1])).float()
        s_mean, s_std, s_skew, s_kurt = _moments(scaled, soft)
        return torch.cat([hist, torch.stack([mean, std], 1), quantiles, torch.stack([skew, kurt], 1),
                          fractions, torch.stack([s_mean, s_std, s_skew, s_kurt], 1)], dim=1)


_TISSUE_EDGES = torch.tensor([-950.0, -500.0, -200.0, -30.0, 100.0, 300.0])
_TISSUE_BINS = [0, 1, 3, 4, 5, 6]  # air, lung, (-500..-200 skipped), fat, soft tissue, enhanced, bone


def _range_fractions(hu: torch.Tensor) -> torch.Tensor:
    """Fractions of each row in the :data:`TISSUE_RANGES` (one bucketize instead of six comparisons)."""
    index = torch.bucketize(hu.contiguous(), _TISSUE_EDGES.to(hu.device), right=True)
    counts = torch.zeros(hu.shape[0], len(_TISSUE_EDGES) + 1, device=hu.device)
    counts.scatter_add_(1, index, torch.ones_like(hu))
    return counts[:, _TISSUE_BINS] / hu.shape[1]


def _moments(values: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Weighted mean, std, skewness and excess kurtosis per row (zeros for an empty or flat row)."""
    count = weights.sum(1).clamp_min(1.0)
    mean = (values * weights).sum(1) / count
    centred = (values - mean[:, None]) * (weights > 0)
    var = (centred**2 * weights).sum(1) / count
    std = var.sqrt()
    safe = std.clamp_min(1e-6)
    skew = (centred**3 * weights).sum(1) / count / safe**3
    kurt = (centred**4 * weights).sum(1) / count / safe**4 - 3.0
    flat = std < 1e-6
    return mean, std, torch.where(flat, 0.0, skew), torch.where(flat, 0.0, kurt)
