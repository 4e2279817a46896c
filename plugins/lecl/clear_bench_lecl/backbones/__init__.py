"""LeCL backbones: ``build_backbone(arch)`` returns a module mapping ``[B, C, H, W]`` to pooled ``[B, D]``.

``D`` is exposed as ``.embed_dim`` and measured by running the model once, never read from a table (timm's
``mambaout_*`` with ``num_classes=0`` returns its head's hidden size, not ``num_features``).
"""

from __future__ import annotations

from typing import Any

import timm
import torch
from torch import nn

from clear_bench_lecl.archs import ARCHS, MAMBAOUT_ARCHS, VIT_ARCHS, VMAMBA_ARCHS, family
from clear_bench_lecl.backbones.vit import CONV_STEM_CONFIGS, build_vit
from clear_bench_lecl.backbones.vmamba import VMAMBA_CONFIGS, VSSM


def build_backbone(arch: str, img_size: int = 224, in_chans: int = 3, **kwargs: Any) -> nn.Module:
    """A randomly initialised backbone whose ``forward`` returns pooled features ``[B, embed_dim]``.

    ``kwargs`` override the arch's defaults (e.g. ``embed_dim``/``depth``/``num_heads`` for ViT, ``dims``/
    ``depths`` for MambaOut and VMamba, ``d_state``/``scan_backend`` for VMamba), so small variants are one
    call away. The module carries ``.arch`` and ``.embed_dim`` (measured) attributes.
    """
    kind = family(arch)
    if kind == "vit":
        timm_name = arch if arch in CONV_STEM_CONFIGS else f"{arch}_224"
        model = build_vit(timm_name, img_size, in_chans, **kwargs)
    elif kind == "mambaout":
        # convolutional: works at any input size, so img_size only sets the probe input below
        model = timm.create_model(arch, pretrained=False, num_classes=0, in_chans=in_chans, **kwargs)
    else:
        model = VSSM(in_chans=in_chans, **{**VMAMBA_CONFIGS[arch], **kwargs})
    model.arch = arch
    model.embed_dim = measure_embed_dim(model, img_size, in_chans)
    return model


@torch.no_grad()
def measure_embed_dim(model: nn.Module, img_size: int, in_chans: int) -> int:
    """The width of ``model``'s output on one input of the given size (eval mode for the probe only)."""
    param = next(model.parameters())
    was_training = model.training
    model.eval()
    try:
        out = model(torch.zeros(1, in_chans, img_size, img_size, device=param.device, dtype=param.dtype))
    finally:
        model.train(was_training)
    if out.dim() != 2:
        raise ValueError(f"backbone output should be [batch, dim], got shape {tuple(out.shape)}")
    return int(out.shape[1])


__all__ = ["ARCHS", "MAMBAOUT_ARCHS", "VIT_ARCHS", "VMAMBA_ARCHS", "build_backbone", "family",
           "measure_embed_dim"]
