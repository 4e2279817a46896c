"""Mean pooling + linear classifier: the baseline an attention head must beat."""

from __future__ import annotations

import torch
from torch import nn

from clear_bench.aggregators.masking import check_bag, zero_padding
from clear_bench.specs import AggregatorOutput


class MeanPool(nn.Module):
    """Average the projected real instances of a bag and classify the average (the same projection and
    head as :class:`~clear_bench.aggregators.abmil.ABMIL`, uniform weights instead of attention)."""

    def __init__(self, in_dim: int, n_outputs: int, hidden_dim: int = 128, dropout: float = 0.25,
                 pooled_norm: bool = True) -> None:
        super().__init__()
        self.project = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(), nn.Dropout(dropout))
        self.norm = nn.LayerNorm(hidden_dim) if pooled_norm else nn.Identity()
        self.classifier = nn.Linear(hidden_dim, n_outputs)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> AggregatorOutput:
        check_bag(x, mask)
        x = zero_padding(x, mask)
        weights = mask.float() / mask.sum(dim=-1, keepdim=True).clamp(min=1)
        pooled = torch.einsum("...n,...nd->...d", weights, self.project(x))
        return AggregatorOutput(logits=self.classifier(self.norm(pooled)), attention=weights)
