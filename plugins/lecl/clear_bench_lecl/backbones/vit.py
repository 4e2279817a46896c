"""Vision Transformers from timm, including MoCo v3's convolutional-stem variant."""

from __future__ import annotations

from typing import Any

import timm
from timm.layers import PatchEmbed
from torch import nn

# MoCo v3 conv-stem ViTs: one transformer block fewer than the patchify versions, to keep the compute equal.
CONV_STEM_CONFIGS: dict[str, dict[str, Any]] = {
    "vit_conv_small": dict(base="vit_small_patch16_224", embed_dim=384, depth=11, num_heads=12),
    "vit_conv_base": dict(base="vit_base_patch16_224", embed_dim=768, depth=11, num_heads=12),
}
PATCHIFY_ARCHS = ("vit_tiny_patch16_224", "vit_small_patch16_224", "vit_base_patch16_224")


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


def build_vit(arch: str, img_size: int, in_chans: int, **kwargs: Any) -> nn.Module:
    """A timm ViT without classifier: ``forward`` returns the class-token feature ``[B, embed_dim]``."""
    if arch in CONV_STEM_CONFIGS:
        config = dict(CONV_STEM_CONFIGS[arch])
        base = config.pop("base")
        config.update(kwargs)
        return timm.create_model(base, pretrained=False, num_classes=0, img_size=img_size, in_chans=in_chans,
                                 embed_layer=ConvStemPatchEmbed, **config)
    return timm.create_model(arch, pretrained=False, num_classes=0, img_size=img_size, in_chans=in_chans,
                             **kwargs)
