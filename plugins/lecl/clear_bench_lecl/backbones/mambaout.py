"""MambaOut from timm, embedding either its pooled, normalised features or its MLP head's output.

timm's MambaOut head pools the last stage (mean over space), applies ``head.norm`` (LayerNorm), then
``head.pre_logits`` (Linear 4x + GELU + LayerNorm) before the classifier. The public CLEAR code attaches its
projector after ``head.norm`` (the original MambaOut's ``forward_features``): that is ``pooled``, the default
here. ``pre-logits`` keeps timm's MLP head as part of the embedding (4x wider).
"""

from __future__ import annotations

from typing import Any

import timm
from torch import nn

from clear_bench_lecl.archs import MAMBAOUT_EMBEDDINGS as EMBEDDINGS

DEFAULT_EMBEDDING = "pooled"


def build_mambaout(arch: str, in_chans: int, embedding: str = DEFAULT_EMBEDDING, **kwargs: Any) -> nn.Module:
    """A timm MambaOut without classifier whose ``forward`` returns the ``embedding`` features ``[B, D]``."""
    if embedding not in EMBEDDINGS:
        raise ValueError(f"embedding must be one of {', '.join(EMBEDDINGS)}, got {embedding!r}")
    model = timm.create_model(arch, pretrained=False, num_classes=0, in_chans=in_chans, **kwargs)
    if embedding == "pooled":
        use_pooled_embedding(model)
    model.embedding = embedding
    return model


def use_pooled_embedding(model: nn.Module) -> nn.Module:
    """Drop timm's MLP head (``head.pre_logits``): ``forward`` then ends at pool + ``head.norm``. In place."""
    head = model.head
    if not hasattr(head, "pre_logits") or not hasattr(head, "norm"):
        raise ValueError(f"expected timm's MambaOut MlpHead (norm, pre_logits), got {type(head).__name__}")
    head.pre_logits = nn.Identity()
    head.num_features = model.num_features
    model.head_hidden_size = model.num_features
    model.embedding = "pooled"
    return model
