"""Pooling by multi-head attention (Set Transformer, Lee et al., 2019) with learned seed vectors."""

from __future__ import annotations

import torch
from torch import nn

from clear_bench.aggregators.masking import check_bag
from clear_bench.specs import AggregatorOutput


class PMA(nn.Module):
    """``num_seeds`` learned queries attend over the instances (padding masked), then a classifier."""

    def __init__(self, in_dim: int, n_outputs: int, hidden_dim: int = 128, num_heads: int = 4,
                 num_seeds: int = 1, dropout: float = 0.25) -> None:
        super().__init__()
        self.project = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(), nn.Dropout(dropout))
        self.seeds = nn.Parameter(torch.randn(num_seeds, hidden_dim) * hidden_dim**-0.5)
        self.attention = nn.MultiheadAttention(hidden_dim, num_heads, batch_first=True)
        self.norm1 = nn.LayerNorm(hidden_dim)
        self.feedforward = nn.Sequential(nn.Linear(hidden_dim, hidden_dim), nn.ReLU())
        self.norm2 = nn.LayerNorm(hidden_dim)
        self.classifier = nn.Linear(num_seeds * hidden_dim, n_outputs)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> AggregatorOutput:
        check_bag(x, mask)
        h = self.project(x)
        seeds = self.seeds.unsqueeze(0).expand(x.shape[0], -1, -1)
        pooled, weights = self.attention(seeds, h, h, key_padding_mask=~mask, need_weights=True,
                                         average_attn_weights=True)
        pooled = self.norm1(seeds + pooled)
        pooled = self.norm2(pooled + self.feedforward(pooled))
        attention = torch.nan_to_num(weights.mean(dim=1), nan=0.0) * mask
        return AggregatorOutput(logits=self.classifier(pooled.flatten(1)), attention=attention)
