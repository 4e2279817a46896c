"""LeCL backbones: ``build_backbone(arch)`` returns a module mapping ``[B, C, H, W]`` to pooled ``[B, D]``.

``D`` is exposed as ``.embed_dim`` and measured by running the model once, never read from a table (a
MambaOut's width depends on its ``embedding``: ``num_features`` pooled, its MLP head's hidden size
pre-logits).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from clear_bench_lecl.archs import ARCHS, MAMBAOUT_ARCHS, VIT_ARCHS, VMAMBA_ARCHS, family
from clear_bench_lecl.backbones.mambaout import DEFAULT_EMBEDDING, build_mambaout
from clear_bench_lecl.backbones.vit import CONV_STEM_CONFIGS, build_vit, default_pos_embed
from clear_bench_lecl.backbones.vmamba import VMAMBA_CONFIGS, VSSM


def build_backbone(arch: str, img_size: int = 224, in_chans: int = 3, **kwargs: Any) -> nn.Module:
    """A randomly initialised backbone whose ``forward`` returns pooled features ``[B, embed_dim]``.

    ``kwargs`` override the arch's defaults (e.g. ``embed_dim``/``depth``/``num_heads`` and ``pos_embed``
    (``learned`` / ``sincos``) for ViT, ``dims``/``depths`` and ``embedding`` (``pooled`` / ``pre-logits``)
    for MambaOut, ``d_state``/``scan_backend`` for VMamba), so small variants are one call away. The module
    carries ``.arch`` and ``.embed_dim`` (measured) attributes.
    """
    kind = family(arch)
    if kind == "vit":
        timm_name = arch if arch in CONV_STEM_CONFIGS else f"{arch}_224"
        model = build_vit(timm_name, img_size, in_chans, **kwargs)
    elif kind == "mambaout":
        # convolutional: works at any input size, so img_size only sets the probe input below
        model = build_mambaout(arch, in_chans, **kwargs)
    else:
        model = VSSM(in_chans=in_chans, **{**VMAMBA_CONFIGS[arch], **kwargs})
    model.arch = arch
    model.embed_dim = measure_embed_dim(model, img_size, in_chans)
    return model


def resolved_arch_kwargs(arch: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` with the choices that change what the backbone computes written out: a MambaOut's
    ``embedding`` and a ViT's ``pos_embed`` (their defaults where not given), as checkpoints record them."""
    kind = family(arch)
    if kind == "mambaout":
        return {**kwargs, "embedding": kwargs.get("embedding") or DEFAULT_EMBEDDING}
    if kind == "vit":
        return {**kwargs, "pos_embed": kwargs.get("pos_embed") or default_pos_embed(arch)}
    return dict(kwargs)


def checkpoint_arch_kwargs(arch: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The ``arch_kwargs`` of a checkpoint, completed for files written before ``embedding`` and
    ``pos_embed`` were recorded: such a MambaOut embedded pre-logits, such a ViT's position embedding was
    learned."""
    kind = family(arch)
    if kind == "mambaout" and "embedding" not in kwargs:
        return {**kwargs, "embedding": "pre-logits"}
    if kind == "vit" and "pos_embed" not in kwargs:
        return {**kwargs, "pos_embed": "learned"}
    return dict(kwargs)


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


__all__ = ["ARCHS", "MAMBAOUT_ARCHS", "VIT_ARCHS", "VMAMBA_ARCHS", "build_backbone", "checkpoint_arch_kwargs",
           "family", "measure_embed_dim", "resolved_arch_kwargs"]
