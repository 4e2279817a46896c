"""The torch module of the image-space filter probe (see :mod:`clear_bench.encoders.image_probe`)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from clear_bench.encoders.image_probe import SIGMAS_AT_112, feature_count


def _gaussian(sigma: float) -> torch.Tensor:
    radius = max(1, math.ceil(3.0 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    return kernel / kernel.sum()


class ImageProbe(nn.Module):
    """``[B, 1, S, S]`` windowed grey in [0, 1] -> ``[B, D]``, pooled on a ``grid x grid`` partition:
    mean intensity, mean gradient magnitude, and for each blob scale the maximum and mean of the bright
    (positive) and dark (negative) part of a difference of Gaussians (inner sigma, outer 2 sigma)."""

    def __init__(self, image_size: int, grid: int) -> None:
        super().__init__()
        if grid < 1 or image_size < grid:
            raise ValueError(f"grid {grid} must be 1..image_size ({image_size})")
        self.grid = grid
        self.embed_dim = feature_count(grid)
        scale = image_size / 112.0
        self.sigmas = [s * scale for s in SIGMAS_AT_112]
        for i, sigma in enumerate(self.sigmas):
            self.register_buffer(f"inner{i}", _gaussian(sigma), persistent=False)
            self.register_buffer(f"outer{i}", _gaussian(2.0 * sigma), persistent=False)

    def _blur(self, x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
        """Separable Gaussian blur with edge replication."""
        r = (len(kernel) - 1) // 2
        x = F.pad(x, (r, r, r, r), mode="replicate")
        x = F.conv2d(x, kernel.view(1, 1, 1, -1))
        return F.conv2d(x, kernel.view(1, 1, -1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(f"expected [B, 1, H, W] windowed slices, got {tuple(x.shape)}")
        x = x.float()
        g = self.grid
        maps_mean = [x]
        padded = F.pad(x, (1, 1, 1, 1), mode="replicate")
        gy = padded[:, :, 2:, 1:-1] - padded[:, :, :-2, 1:-1]
        gx = padded[:, :, 1:-1, 2:] - padded[:, :, 1:-1, :-2]
        maps_mean.append(torch.sqrt(gx * gx + gy * gy + 1e-12) / 2.0)
        maps_blob = []
        for i in range(len(self.sigmas)):
            dog = self._blur(x, getattr(self, f"inner{i}")) - self._blur(x, getattr(self, f"outer{i}"))
            maps_blob += [dog.clamp_min(0.0), (-dog).clamp_min(0.0)]
        blobs = torch.cat(maps_blob, 1)
        parts = [
            F.adaptive_avg_pool2d(torch.cat(maps_mean, 1), g),
            F.adaptive_max_pool2d(blobs, g),
            F.adaptive_avg_pool2d(blobs, g),
        ]
        return torch.cat([p.flatten(1) for p in parts], 1)
