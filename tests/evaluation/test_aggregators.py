"""MIL heads: padding is invisible, attention is a distribution over real instances, gradients stay finite."""

from __future__ import annotations

import pytest
import torch

from clear_bench.aggregators.masking import masked_softmax
from clear_bench.builtin import clear_bench_aggregators
from clear_bench.registry import load_registry

SPECS = {spec.name: spec for spec in clear_bench_aggregators()}
VARIANTS = [("abmil", {"gated": True}), ("abmil", {"gated": False, "pooled_norm": False}),
            ("pma", {"num_seeds": 2}), ("pma", {}), ("mean-pool", {"pooled_norm": False}), ("mean-pool", {})]


def build(name: str, options: dict, in_dim: int = 12, n_out: int = 3) -> torch.nn.Module:
    torch.manual_seed(0)
    return SPECS[name].build(in_dim, n_out, {"hidden_dim": 16, **options}).eval()


@pytest.mark.parametrize(("name", "options"), VARIANTS)
def test_padding_garbage_cannot_change_a_prediction(name, options):
    model = build(name, options)
    x = torch.randn(4, 9, 12)
    mask = torch.ones(4, 9, dtype=torch.bool)
    mask[1, 5:] = False
    mask[2, 2:] = False
    garbage = torch.randn(4, 9, 12) * 1e4
    garbage[0, 0, 0], garbage[3, 1, 1] = float("inf"), float("nan")
    x_garbage = torch.where(mask.unsqueeze(-1), x, garbage)
    padded = torch.cat([x_garbage, torch.full((4, 6, 12), float("nan"))], dim=1)
    padded_mask = torch.cat([mask, torch.zeros(4, 6, dtype=torch.bool)], dim=1)
    with torch.no_grad():
        reference = model(torch.where(mask.unsqueeze(-1), x, torch.zeros_like(x)), mask)
        out = model(padded, padded_mask)
    # Bitwise equality is not promised across tensor shapes (BLAS blocking); the tolerance is float32 noise.
    torch.testing.assert_close(out.logits, reference.logits, rtol=1e-5, atol=1e-6)
    assert torch.isfinite(out.logits).all()
    # A bag of its real instances alone gives the same logits as the bag inside a padded batch.
    with torch.no_grad():
        alone = model(x[1:2, :5], mask[1:2, :5])
    torch.testing.assert_close(alone.logits, reference.logits[1:2], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("name", "options"), VARIANTS)
def test_attention_is_a_distribution_over_real_instances(name, options):
    model = build(name, options)
    x = torch.randn(3, 7, 12)
    mask = torch.tensor([[1] * 7, [1] * 3 + [0] * 4, [1] + [0] * 6], dtype=torch.bool)
    out = model(x, mask)
    assert out.logits.shape == (3, 3)
    assert out.attention.shape == (3, 7)
    assert torch.all(out.attention[~mask] == 0)
    torch.testing.assert_close(out.attention.sum(dim=1), torch.ones(3))
    assert torch.all(out.attention[mask] > 0)


@pytest.mark.parametrize(("name", "options"), VARIANTS)
def test_gradients_finite_even_with_an_empty_bag(name, options):
    model = build(name, options).train()
    x = torch.randn(2, 5, 12)
    mask = torch.tensor([[1, 1, 0, 0, 0], [0, 0, 0, 0, 0]], dtype=torch.bool)
    model(x, mask).logits.sum().backward()
    for parameter in model.parameters():
        assert parameter.grad is None or torch.isfinite(parameter.grad).all()


def test_masked_softmax_gives_exact_zeros_and_no_nan():
    scores = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]], requires_grad=True)
    mask = torch.tensor([[True, False, True], [False, False, False]])
    weights = masked_softmax(scores, mask)
    assert weights[0, 1] == 0 and torch.all(weights[1] == 0)
    torch.testing.assert_close(weights[0, [0, 2]], torch.softmax(torch.tensor([1.0, 3.0]), 0))
    weights.sum().backward()
    assert torch.isfinite(scores.grad).all()


def test_bad_shapes_are_refused():
    model = build("abmil", {})
    with pytest.raises(ValueError, match="bool mask"):
        model(torch.randn(2, 4, 12), torch.ones(2, 4))


def test_heads_are_registered_through_the_hooks():
    registry = load_registry([])
    for name in ("abmil", "pma", "mean-pool"):
        assert name in registry.aggregators
