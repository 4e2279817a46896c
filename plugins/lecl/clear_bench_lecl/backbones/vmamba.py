"""VMamba: a visual state-space model (VSSM) built from SS2D blocks.

SS2D scans the feature map along four paths (rows, columns, and both reversed), runs a selective scan (S6)
with input-dependent step size and B/C maps along each, and merges the four outputs back onto the grid.
Stages follow the VMamba-v2 layout: a two-conv stem (stride 4), stages of [SS2D + MLP] blocks separated by
stride-2 conv downsampling, a final LayerNorm and global average pooling. ``vmamba_clear`` is the
configuration the public CLEAR code builds with ``VSSM()``'s defaults: a 4x4 stride-4 patch embedding
("v1"), 2x2 stride-2 downsampling ("v2"), gated SS2D with a biased depth-wise conv, d_state 16.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import DropPath, Mlp, trunc_normal_
from torch import Tensor, nn

from clear_bench_lecl.backbones.selective_scan import Backend, selective_scan

DIRECTIONS = 4

# Published VMamba-v2 classification configs (tiny = "0230s"); "micro" is a small config for fast runs.
VMAMBA_CONFIGS: dict[str, dict[str, Any]] = {
    "vmamba_micro": dict(dims=32, depths=(1, 1, 2, 1), d_state=4, ssm_ratio=1.0, mlp_ratio=2.0),
    "vmamba_tiny": dict(dims=96, depths=(2, 2, 8, 2), d_state=1, ssm_ratio=1.0, mlp_ratio=4.0),
    "vmamba_small": dict(dims=96, depths=(2, 2, 15, 2), d_state=1, ssm_ratio=2.0, mlp_ratio=4.0),
    "vmamba_base": dict(dims=128, depths=(2, 2, 15, 2), d_state=1, ssm_ratio=2.0, mlp_ratio=4.0),
    "vmamba_clear": dict(dims=96, depths=(2, 2, 9, 2), d_state=16, ssm_ratio=2.0, mlp_ratio=4.0, gated=True,
                         conv_bias=True, patch_embed="v1", downsample="v2", drop_path_rate=0.1),
}
PATCH_EMBEDS = ("v1", "v2")
"""v1: one 4x4 stride-4 conv + LayerNorm; v2: two 3x3 stride-2 convs with LayerNorm and GELU between."""
DOWNSAMPLES = ("v2", "v3")
"""v2: 2x2 stride-2 conv + LayerNorm; v3: 3x3 stride-2 conv (padding 1) + LayerNorm."""


def cross_scan(x: Tensor) -> Tensor:
    """``[B, D, H, W]`` -> ``[B, 4, D, H*W]``: row-major, column-major, and both reversed."""
    rows = x.flatten(2)
    cols = x.transpose(2, 3).flatten(2)
    return torch.stack([rows, cols, rows.flip(-1), cols.flip(-1)], dim=1)


def cross_merge(ys: Tensor, height: int, width: int) -> Tensor:
    """Inverse of :func:`cross_scan` summed over directions: ``[B, 4, D, L]`` -> ``[B, D, L]`` (row-major)."""
    batch, _, dim, length = ys.shape
    rows = ys[:, 0] + ys[:, 2].flip(-1)
    cols = ys[:, 1] + ys[:, 3].flip(-1)
    return rows + cols.view(batch, dim, width, height).transpose(2, 3).reshape(batch, dim, length)


class SS2D(nn.Module):
    """2D selective-scan mixer on channels-last maps ``[B, H, W, C]``.

    ``gated`` multiplies the scan output by ``silu(z)`` of a second input projection (VMamba v1); without it
    the output is only normalised (VMamba v2's "noz" form, the default).
    """

    def __init__(
        self, d_model: int, d_state: int = 1, ssm_ratio: float = 2.0, dt_rank: int | str = "auto",
        d_conv: int = 3, conv_bias: bool = False, gated: bool = False, dt_min: float = 0.001,
        dt_max: float = 0.1, dt_init_floor: float = 1e-4, scan_backend: Backend = "auto",
    ) -> None:
        super().__init__()
        d_inner = int(ssm_ratio * d_model)
        rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.d_inner, self.d_state, self.dt_rank, self.gated = d_inner, d_state, rank, gated
        self.scan_backend: Backend = scan_backend
        self.in_proj = nn.Linear(d_model, d_inner * (2 if gated else 1), bias=False)
        self.conv2d = nn.Conv2d(d_inner, d_inner, d_conv, padding=(d_conv - 1) // 2, groups=d_inner,
                                bias=conv_bias)
        # per direction: x -> (dt_low_rank, B, C), and dt_low_rank -> dt per channel
        bound, dt_bound = d_inner**-0.5, rank**-0.5
        self.x_proj_weight = nn.Parameter(
            torch.empty(DIRECTIONS, rank + 2 * d_state, d_inner).uniform_(-bound, bound))
        self.dt_projs_weight = nn.Parameter(
            torch.empty(DIRECTIONS, d_inner, rank).uniform_(-dt_bound, dt_bound))
        log_dt = torch.rand(DIRECTIONS, d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        dt = torch.exp(log_dt).clamp(min=dt_init_floor)
        self.dt_projs_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
        self.dt_projs_bias._no_weight_decay = True  # type: ignore[attr-defined]
        a_init = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(DIRECTIONS * d_inner, 1)
        self.A_logs = nn.Parameter(torch.log(a_init))  # S4D-real initialisation
        self.A_logs._no_weight_decay = True  # type: ignore[attr-defined]
        self.Ds = nn.Parameter(torch.ones(DIRECTIONS * d_inner))
        self.Ds._no_weight_decay = True  # type: ignore[attr-defined]
        self.out_norm = nn.LayerNorm(d_inner)
        self.out_proj = nn.Linear(d_inner, d_model, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        batch, height, width, _ = x.shape
        x = self.in_proj(x)
        z = None
        if self.gated:
            x, z = x.chunk(2, dim=-1)
        x = F.silu(self.conv2d(x.permute(0, 3, 1, 2)))
        ys = self._scan(x)
        y = cross_merge(ys, height, width).transpose(1, 2).reshape(batch, height, width, self.d_inner)
        y = self.out_norm(y)
        if z is not None:
            y = y * F.silu(z)
        return self.out_proj(y)

    def _scan(self, x: Tensor) -> Tensor:
        batch, dim, height, width = x.shape
        length = height * width
        xs = cross_scan(x)  # [B, K, D, L]
        x_dbl = torch.einsum("bkdl,kcd->bkcl", xs, self.x_proj_weight)
        dts, Bs, Cs = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=2)
        dts = torch.einsum("bkrl,kdr->bkdl", dts, self.dt_projs_weight)
        ys = selective_scan(
            xs.reshape(batch, DIRECTIONS * dim, length), dts.reshape(batch, DIRECTIONS * dim, length),
            -torch.exp(self.A_logs.float()), Bs.contiguous(), Cs.contiguous(), self.Ds.float(),
            delta_bias=self.dt_projs_bias.reshape(-1).float(), delta_softplus=True, backend=self.scan_backend,
        )
        return ys.view(batch, DIRECTIONS, dim, length).to(x.dtype)


class VSSBlock(nn.Module):
    """Residual SS2D mixer followed by a residual MLP (skipped when ``mlp_ratio`` is 0)."""

    def __init__(self, dim: int, drop_path: float = 0.0, mlp_ratio: float = 4.0, **ss2d_kwargs: Any) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.op = SS2D(dim, **ss2d_kwargs)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.mlp_branch = mlp_ratio > 0
        if self.mlp_branch:
            self.norm2 = nn.LayerNorm(dim)
            self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path(self.op(self.norm(x)))
        if self.mlp_branch:
            x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x


class _ChannelsLastNorm(nn.Module):
    """LayerNorm over channels of an NCHW map."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class Downsample(nn.Module):
    """Stride-2 conv between stages (3x3, or 2x2 for "v2"), then LayerNorm (channels-last in and out)."""

    def __init__(self, dim: int, dim_out: int, version: str = "v3") -> None:
        super().__init__()
        self.conv = (nn.Conv2d(dim, dim_out, 2, stride=2) if version == "v2"
                     else nn.Conv2d(dim, dim_out, 3, stride=2, padding=1))
        self.norm = nn.LayerNorm(dim_out)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))


class VSSM(nn.Module):
    """The VMamba backbone: ``forward(x [B, C, H, W])`` returns pooled features ``[B, dims[-1]]``."""

    def __init__(
        self, in_chans: int = 3, dims: int | Sequence[int] = 96, depths: Sequence[int] = (2, 2, 8, 2),
        d_state: int = 1, ssm_ratio: float = 1.0, mlp_ratio: float = 4.0, dt_rank: int | str = "auto",
        gated: bool = False, drop_path_rate: float = 0.0, scan_backend: Backend = "auto",
        conv_bias: bool = False, patch_embed: str = "v2", downsample: str = "v3",
    ) -> None:
        super().__init__()
        widths = [dims * 2**i for i in range(len(depths))] if isinstance(dims, int) else list(dims)
        if len(widths) != len(depths):
            raise ValueError(f"dims {widths} and depths {list(depths)} differ in length")
        if patch_embed not in PATCH_EMBEDS or downsample not in DOWNSAMPLES:
            raise ValueError(f"patch_embed {patch_embed!r} / downsample {downsample!r}: expected one of "
                             f"{PATCH_EMBEDS} / {DOWNSAMPLES}")
        half = widths[0] // 2
        self.patch_embed = nn.Sequential(
            nn.Conv2d(in_chans, widths[0], 4, stride=4), _ChannelsLastNorm(widths[0]),
        ) if patch_embed == "v1" else nn.Sequential(
            nn.Conv2d(in_chans, half, 3, stride=2, padding=1), _ChannelsLastNorm(half), nn.GELU(),
            nn.Conv2d(half, widths[0], 3, stride=2, padding=1), _ChannelsLastNorm(widths[0]),
        )
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        self.stages = nn.ModuleList()
        self.downsamples = nn.ModuleList()
        offset = 0
        for i, (width, depth) in enumerate(zip(widths, depths, strict=True)):
            self.downsamples.append(Downsample(widths[i - 1], width, downsample) if i > 0 else nn.Identity())
            self.stages.append(nn.Sequential(*[
                VSSBlock(width, drop_path=rates[offset + j], mlp_ratio=mlp_ratio, d_state=d_state,
                         ssm_ratio=ssm_ratio, dt_rank=dt_rank, gated=gated, conv_bias=conv_bias,
                         scan_backend=scan_backend)
                for j in range(depth)
            ]))
            offset += depth
        self.norm = nn.LayerNorm(widths[-1])
        self.num_features = widths[-1]
        self.apply(_init_weights)

    def set_scan_backend(self, backend: Backend) -> None:
        """Choose the selective scan of every SS2D block ("auto", "torch", "cuda" or "reference")."""
        for module in self.modules():
            if isinstance(module, SS2D):
                module.scan_backend = backend

    def forward_features(self, x: Tensor) -> Tensor:
        """Channels-last feature map ``[B, H/32, W/32, dims[-1]]`` after the final norm."""
        x = self.patch_embed(x).permute(0, 2, 3, 1)
        for downsample, stage in zip(self.downsamples, self.stages, strict=True):
            x = stage(downsample(x))
        return self.norm(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_features(x).mean(dim=(1, 2))


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
