"""Vision Transformers from timm, including MoCo v3's convolutional-stem variant and, as an option, MoCo v3's
fixed 2D sin-cos position embedding and initialisation."""

from __future__ import annotations

import math
from typing import Any

import timm
import torch
from timm.layers import PatchEmbed
from torch import nn

from clear_bench_lecl.archs import VIT_POS_EMBEDS as POS_EMBEDS

# MoCo v3 conv-stem ViTs: one transformer block fewer than the patchify versions, to keep the compute equal.
CONV_STEM_CONFIGS: dict[str, dict[str, Any]] = {
    "vit_conv_small": dict(base="vit_small_patch16_224", embed_dim=384, depth=11, num_heads=12),
    "vit_conv_base": dict(base="vit_base_patch16_224", embed_dim=768, depth=11, num_heads=12),
}
PATCHIFY_ARCHS = ("vit_tiny_patch16_224", "vit_small_patch16_224", "vit_base_patch16_224")


def default_pos_embed(arch: str) -> str:
    """MoCo v3's fixed sin-cos table for its conv-stem ViTs, timm's learned embedding for the others."""
    return "sincos" if arch in CONV_STEM_CONFIGS else "learned"


class ConvStemPatchEmbed(PatchEmbed):
    """Patch embedding made of four 3x3 stride-2 convs (BN + ReLU) and a 1x1 projection (total stride 16).

    Channels double at each conv, starting from ``embed_dim // 8`` (MoCo v3, "An Empirical Study of Training
    Self-Supervised Vision Transformers").
    """

    def __init__(self, img_size: Any = 224, patch_size: int = 16, in_chans: int = 3, embed_dim: int = 768,
                 **kwargs: Any) -> None:
        if patch_size != 16:
            raise ValueError(f"the conv stem has a fixed stride of 16, got patch_size={patch_size}")
        super().__init__(img_size=img_size, patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim,
                         **kwargs)
        layers: list[nn.Module] = []
        channels_in, channels_out = in_chans, embed_dim // 8
        for _ in range(4):
            layers += [nn.Conv2d(channels_in, channels_out, 3, stride=2, padding=1, bias=False),
                       nn.BatchNorm2d(channels_out), nn.ReLU(inplace=True)]
            channels_in, channels_out = channels_out, channels_out * 2
        layers.append(nn.Conv2d(channels_in, embed_dim, 1))
        self.proj = nn.Sequential(*layers)


def build_vit(arch: str, img_size: int, in_chans: int, pos_embed: str | None = None,
              **kwargs: Any) -> nn.Module:
    """A timm ViT without classifier: ``forward`` returns the class-token feature ``[B, embed_dim]``.

    ``pos_embed``: ``learned`` (timm's position embedding and init) or ``sincos`` (MoCo v3: a fixed 2D
    sin-cos table and MoCo v3's init, see :func:`init_mocov3`); ``None``: :func:`default_pos_embed`. ``arch``
    is a timm name or a key of :data:`CONV_STEM_CONFIGS`.
    """
    pos_embed = pos_embed or default_pos_embed(arch)
    if pos_embed not in POS_EMBEDS:
        raise ValueError(f"pos_embed must be one of {', '.join(POS_EMBEDS)}, got {pos_embed!r}")
    if arch in CONV_STEM_CONFIGS:
        config = dict(CONV_STEM_CONFIGS[arch])
        base = config.pop("base")
        config.update(kwargs)
        model = timm.create_model(base, pretrained=False, num_classes=0, img_size=img_size, in_chans=in_chans,
                                  embed_layer=ConvStemPatchEmbed, **config)
    else:
        model = timm.create_model(arch, pretrained=False, num_classes=0, img_size=img_size,
                                  in_chans=in_chans, **kwargs)
    if pos_embed == "sincos":
        init_mocov3(model)
    model.pos_embed_kind = pos_embed
    return model


def sincos_table(grid_h: int, grid_w: int, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """MoCo v3's fixed 2D position embedding ``[1, 1 + grid_h * grid_w, dim]``, tokens in row-major order.

    Token ``(r, c)`` gets ``[sin(r w), cos(r w), sin(c w), cos(c w)]`` with ``w_i = temperature^(-i / (dim /
    4))``, ``i < dim / 4``; the class token's row is zero. (MoCo v3 labels the first half "w", but its
    meshgrid makes it follow the row of timm's row-major tokens.)
    """
    if dim % 4:
        raise ValueError(f"the sin-cos position embedding needs embed_dim divisible by 4, got {dim}")
    quarter = dim // 4
    omega = temperature ** (-torch.arange(quarter, dtype=torch.float64) / quarter)
    rows = torch.arange(grid_h, dtype=torch.float64).repeat_interleave(grid_w)
    cols = torch.arange(grid_w, dtype=torch.float64).repeat(grid_h)
    angle_r, angle_c = rows[:, None] * omega, cols[:, None] * omega
    table = torch.cat([angle_r.sin(), angle_r.cos(), angle_c.sin(), angle_c.cos()], dim=1)
    return torch.cat([torch.zeros(1, dim, dtype=torch.float64), table]).float()[None]


@torch.no_grad()
def init_mocov3(model: nn.Module) -> None:
    """MoCo v3's ViT: fixed sin-cos position embedding (not trained), Q/K/V each Xavier-uniform, other
    Linear layers Xavier-uniform, zero biases, class token N(0, 1e-6), and a patchify projection
    Xavier-uniform over its fan-in (a conv stem keeps its own init). In place."""
    if model.num_prefix_tokens != 1 or model.cls_token is None or model.no_embed_class:
        raise ValueError("the sin-cos position embedding expects a ViT with a class token inside pos_embed")
    grid_h, grid_w = model.patch_embed.grid_size
    table = sincos_table(grid_h, grid_w, model.embed_dim)
    if tuple(model.pos_embed.shape) != tuple(table.shape):
        raise ValueError(f"pos_embed has shape {tuple(model.pos_embed.shape)}, the sin-cos table "
                         f"{tuple(table.shape)}")
    model.pos_embed.copy_(table)
    model.pos_embed.requires_grad_(False)
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        if name.endswith("qkv"):  # three stacked projections: the bound of one of them
            bound = math.sqrt(6.0 / (module.weight.shape[0] // 3 + module.weight.shape[1]))
            nn.init.uniform_(module.weight, -bound, bound)
        else:
            nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    nn.init.normal_(model.cls_token, std=1e-6)
    if not isinstance(model.patch_embed, ConvStemPatchEmbed):
        proj = model.patch_embed.proj
        fan_in = proj.weight.shape[1] * proj.weight.shape[2] * proj.weight.shape[3]
        bound = math.sqrt(6.0 / (fan_in + model.embed_dim))
        nn.init.uniform_(proj.weight, -bound, bound)
        if proj.bias is not None:
            nn.init.zeros_(proj.bias)
