"""Input standardisation of the MIL heads: statistics from the training fold's real instances only."""

from __future__ import annotations

import numpy as np
import torch

from clear_bench.evaluation.bags import Bag, pad_bags
from clear_bench.evaluation.training import instance_moments


def test_standardisation_uses_training_instances_only_and_ignores_padding() -> None:
    rng = np.random.default_rng(0)
    bags = {f"s{i}": Bag(rng.normal(loc=i, size=(3 + i, 4)).astype(np.float32),
                         np.arange(3 + i), np.zeros(3 + i, dtype=np.int64)) for i in range(4)}
    padded = pad_bags(bags, list(bags))
    padded.x[~padded.mask] = float("nan")  # whatever padding holds must not count
    mean, std = instance_moments(padded, torch.tensor([0, 1]))
    real = np.concatenate([bags["s0"].embeddings, bags["s1"].embeddings])
    np.testing.assert_allclose(mean.numpy(), real.mean(0), rtol=1e-5)
    np.testing.assert_allclose(std.numpy(), real.std(0), rtol=1e-4)
