"""Backbone names of the LeCL encoders by family (no torch import: used to list and check configs)."""

from __future__ import annotations

VIT_ARCHS = ("vit_tiny_patch16", "vit_small_patch16", "vit_base_patch16", "vit_conv_small", "vit_conv_base")
MAMBAOUT_ARCHS = ("mambaout_femto", "mambaout_kobe", "mambaout_tiny", "mambaout_small", "mambaout_base")
VMAMBA_ARCHS = ("vmamba_micro", "vmamba_tiny", "vmamba_small", "vmamba_base", "vmamba_clear")
ARCHS = (*VIT_ARCHS, *MAMBAOUT_ARCHS, *VMAMBA_ARCHS)
MAMBAOUT_EMBEDDINGS = ("pooled", "pre-logits")
"""What a MambaOut embeds: pool + ``head.norm`` (the public CLEAR code's), or timm's MLP head output."""
VIT_POS_EMBEDS = ("learned", "sincos")
"""A ViT's position embedding: timm's learned one, or MoCo v3's fixed 2D sin-cos table."""


def family(arch: str) -> str:
    """"vit", "mambaout" or "vmamba"; a ValueError listing the known archs otherwise."""
    for name, archs in (("vit", VIT_ARCHS), ("mambaout", MAMBAOUT_ARCHS), ("vmamba", VMAMBA_ARCHS)):
        if arch in archs:
            return name
    raise ValueError(f"unknown arch '{arch}' (known: {', '.join(ARCHS)})")
