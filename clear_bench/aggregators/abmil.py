"""Attention-based MIL (Ilse et al., 2018), optionally with the gated attention branch."""

from __future__ import annotations

import torch
from torch import nn

from clear_bench.aggregators.masking import check_bag, masked_softmax, zero_padding
from clear_bench.specs import AggregatorOutput


class ABMIL(nn.Module):
    """Project instances, score each with (gated) attention, pool by the masked softmax, classify.

    ``pooled_norm`` puts a LayerNorm between the pooled embedding and the classifier: a bag whose signal
    sits in a few instances has a small pooled deviation, and the norm lets the classifier see it from
    the first epochs (without it, learning with the usual small learning rates is markedly slower).
    """

    def __init__(self, in_dim: int, n_outputs: int, hidden_dim: int = 128, attention_dim: int = 64,
                 dropout: float = 0.25, gated: bool = True, pooled_norm: bool = True) -> None:
        super().__init__()
        self.project = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(), nn.Dropout(dropout))
        self.attention_v = nn.Linear(hidden_dim, attention_dim)
        self.attention_u = nn.Linear(hidden_dim, attention_dim) if gated else None
        self.attention_w = nn.Linear(attention_dim, 1)
        self.norm = nn.LayerNorm(hidden_dim) if pooled_norm else nn.Identity()
        self.classifier = nn.Linear(hidden_dim, n_outputs)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> AggregatorOutput:
        check_bag(x, mask)
        x = zero_padding(x, mask)
        h = self.project(x)
        a = torch.tanh(self.attention_v(h))
        if self.attention_u is not None:
            a = a * torch.sigmoid(self.attention_u(h))
        weights = masked_softmax(self.attention_w(a).squeeze(-1), mask)
        pooled = torch.einsum("...n,...nd->...d", weights, h)
        return AggregatorOutput(logits=self.classifier(self.norm(pooled)), attention=weights)
