"""Pooling by multi-head attention (Set Transformer, Lee et al., 2019) with learned seed vectors."""

from __future__ import annotations

import torch
from torch import nn

from clear_bench.aggregators.masking import check_bag, masked_softmax, zero_padding
from clear_bench.specs import AggregatorOutput


class PMA(nn.Module):
    """``num_seeds`` learned queries attend over the projected instances (multi-head, padding masked out of
    the softmax), followed by the Set Transformer's residual feed-forward block and a linear classifier.

    The reported per-instance attention is the softmax weight averaged over heads and seeds.
    """

    def __init__(self, in_dim: int, n_outputs: int, hidden_dim: int = 128, num_heads: int = 4,
                 num_seeds: int = 1, dropout: float = 0.25) -> None:
        super().__init__()
        if hidden_dim % num_heads:
            raise ValueError(f"hidden_dim {hidden_dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.project = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(), nn.Dropout(dropout))
        self.seeds = nn.Parameter(torch.randn(num_seeds, hidden_dim) * hidden_dim**-0.5)
        self.query = nn.Linear(hidden_dim, hidden_dim)
        self.key = nn.Linear(hidden_dim, hidden_dim)
        self.value = nn.Linear(hidden_dim, hidden_dim)
        self.out = nn.Linear(hidden_dim, hidden_dim)
        self.norm1 = nn.LayerNorm(hidden_dim)
        self.feedforward = nn.Sequential(nn.Linear(hidden_dim, hidden_dim), nn.ReLU())
        self.norm2 = nn.LayerNorm(hidden_dim)
        self.classifier = nn.Linear(num_seeds * hidden_dim, n_outputs)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        """``[..., L, H]`` -> ``[..., heads, L, H / heads]``."""
        *lead, length, width = t.shape
        return t.reshape(*lead, length, self.num_heads, width // self.num_heads).transpose(-3, -2)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> AggregatorOutput:
        check_bag(x, mask)
        x = zero_padding(x, mask)
        h = self.project(x)
        seeds = self.seeds.unsqueeze(-3).expand(*x.shape[:-2], -1, -1)  # [..., B, seeds, H]
        q, k, v = self._heads(self.query(seeds)), self._heads(self.key(h)), self._heads(self.value(h))
        scores = q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5  # [..., B, heads, seeds, N]
        weights = masked_softmax(scores, mask[..., None, None, :])
        attended = (weights @ v).transpose(-3, -2).reshape(seeds.shape)
        pooled = self.norm1(seeds + self.out(attended))
        pooled = self.norm2(pooled + self.feedforward(pooled))
        return AggregatorOutput(logits=self.classifier(pooled.flatten(-2)),
                               attention=weights.mean(dim=(-3, -2)))
