"""The non-learned reference encoder: per-slice HU histograms and first-order statistics.

Every leaderboard carries it as the floor a deep encoder must beat, and it calibrates the synthetic
cohort's difficulty. It reads one channel of resized Hounsfield units (``Preprocessing(input="hu")``), so
it sees intensities, not windows, and has no weights.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from clear_bench.specs import Encoder, EncoderSpec, Option, Preprocessing, resolve_options

# finer bins where lung, fat, soft tissue and enhancement differ; coarse ones for air and bone
HU_EDGES: tuple[float, ...] = (
    -1100, -950, -900, -850, -800, -700, -600, -500, -300, -200, -150, -100, -50, -25, 0, 25, 50, 75, 100,
    150, 200, 300, 500, 700, 1000, 1500,
)
TISSUE_RANGES: dict[str, tuple[float, float]] = {
    "air": (-2000, -950), "lung": (-950, -500), "fat": (-200, -30), "soft_tissue": (-30, 100),
    "enhanced": (100, 300), "bone": (300, 4000),
}
_PERCENTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
_HU_SCALE = 1000.0
REFERENCE_VERSION = 1
"""Bumped when the features change (enters the embedding cache key through the encoder options)."""
_SOFT = (-200.0, 300.0)


def feature_names() -> list[str]:
    """Names of the output dimensions, in order."""
    names = [f"hist[{lo:g},{hi:g})" for lo, hi in itertools.pairwise(HU_EDGES)]
    names += ["mean", "std", *(f"p{round(q * 100)}" for q in _PERCENTILES), "skewness", "kurtosis"]
    names += [f"frac_{name}" for name in TISSUE_RANGES]
    names += ["soft_mean", "soft_std", "soft_skewness", "soft_kurtosis"]
    return names


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

        scaled = hu / _HU_SCALE
        mean, std, skew, kurt = _moments(scaled, torch.ones_like(scaled))
        quantiles = torch.quantile(scaled, torch.tensor(_PERCENTILES, device=hu.device), dim=1).T
        fractions = _range_fractions(hu)
        soft = ((hu > _SOFT[0]) & (hu < _SOFT[1])).float()
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


REFERENCE_OPTIONS: dict[str, Option] = {
    "image_size": Option(int, 128, "slices are resized to this square size before the histogram"),
}


def build_reference(options: Mapping[str, Any]) -> Encoder:
    values = resolve_options(REFERENCE_OPTIONS, options)
    model = HUReference().eval()
    preprocessing = Preprocessing(image_size=int(values["image_size"]), input="hu", channels=1,
                                  mean=(0.0,), std=(1.0,))
    return Encoder(name="hu-reference", model=model, embed_dim=model.embed_dim, preprocessing=preprocessing,
                   weights_digest="none", label="HU histogram reference (non-learned)",
                   options={"image_size": int(values["image_size"]), "features": REFERENCE_VERSION})


def reference_encoder_spec() -> EncoderSpec:
    """The spec the core registers: name ``hu-reference``, no weights."""
    return EncoderSpec(
        name="hu-reference",
        build=build_reference,
        embed_dim=len(feature_names()),
        weights_source="none (non-learned)",
        description="per-slice HU histogram + first-order statistics (the floor every encoder must beat)",
        options=REFERENCE_OPTIONS,
    )
