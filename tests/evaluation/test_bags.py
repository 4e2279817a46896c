"""Bags: padding once, deterministic evaluation subsets, random subsets only for training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clear_bench.evaluation.bags import Bag, evaluation_indices, pad_bags, subsample_instances


def make_bag(n: int, dim: int = 4, seed: int = 0) -> Bag:
    rng = np.random.default_rng(seed)
    return Bag(rng.normal(size=(n, dim)), np.arange(n) // 2, np.arange(n) % 2)


def test_pad_bags_keeps_instances_and_metadata_in_order():
    bags = {"a": make_bag(3), "b": make_bag(6, seed=1)}
    padded = pad_bags(bags, ["b", "a"])
    assert padded.ids == ["b", "a"]
    assert padded.x.shape == (2, 6, 4) and padded.x.dtype == torch.float32
    assert padded.lengths.tolist() == [6, 3]
    assert padded.mask.sum(dim=1).tolist() == [6, 3]
    np.testing.assert_array_equal(padded.x[1, :3].numpy(), bags["a"].embeddings)
    assert torch.all(padded.x[1, 3:] == 0)
    assert padded.slice_index[1].tolist() == [0, 0, 1, -1, -1, -1]
    assert padded.window_id[1].tolist() == [0, 1, 0, -1, -1, -1]
    x, mask = padded.batch(padded.rows(["a"]))
    assert x.shape == (1, 3, 4) and mask.all()


def test_evaluation_cap_is_deterministic_and_evenly_spaced():
    keep = evaluation_indices(100, 10)
    assert keep[0] == 0 and keep[-1] == 99 and len(keep) == 10
    assert np.all(np.diff(keep) >= 10)
    np.testing.assert_array_equal(keep, evaluation_indices(100, 10))
    np.testing.assert_array_equal(evaluation_indices(5, 10), np.arange(5))
    padded = pad_bags({"a": make_bag(100)}, ["a"], cap=10)
    assert padded.slice_index[0].tolist() == (keep // 2).tolist()


def test_training_subsample_is_random_real_and_ordered():
    padded = pad_bags({"a": make_bag(50), "b": make_bag(8, seed=1)}, ["a", "b"])
    x, mask = padded.batch(torch.tensor([0, 1]))
    generator = torch.Generator().manual_seed(0)
    sub_x, sub_mask = subsample_instances(x, mask, 10, generator)
    assert sub_x.shape == (2, 10, 4)
    assert sub_mask[0].all() and sub_mask[1].sum() == 8
    # Every kept instance of bag b is one of its real rows; its padding stays padding.
    torch.testing.assert_close(sub_x[1, :8], x[1, :8])
    # Drawn rows of bag a come from a and are kept in their original order.
    rows = [int(torch.nonzero((x[0] == r).all(dim=1))[0]) for r in sub_x[0]]
    assert rows == sorted(rows)
    other_x, _ = subsample_instances(x, mask, 10, generator)
    assert not torch.equal(other_x[0], sub_x[0])
    same_x, same_mask = subsample_instances(x, mask, None, generator)
    assert same_x is x and same_mask is mask


def test_bad_bags_are_refused():
    with pytest.raises(ValueError, match="embeddings"):
        Bag(np.zeros((3, 4)), np.arange(2), np.arange(3))
    with pytest.raises(KeyError, match="no bag"):
        pad_bags({"a": make_bag(2)}, ["a", "b"])
    with pytest.raises(ValueError, match="widths"):
        pad_bags({"a": make_bag(2), "b": make_bag(2, dim=5)}, ["a", "b"])
    with pytest.raises(ValueError, match="no instance"):
        pad_bags({"a": Bag(np.zeros((0, 4)), np.zeros(0), np.zeros(0))}, ["a"])
