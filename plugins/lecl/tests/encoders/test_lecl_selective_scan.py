"""The PyTorch selective scan against the step-by-step recurrence (and mamba-ssm's kernel on CUDA)."""

from __future__ import annotations

import pytest
import torch
from clear_bench_lecl.backbones.selective_scan import (
    cuda_scan_available,
    selective_scan,
    selective_scan_reference,
    selective_scan_torch,
)


def _inputs(batch=2, dim=8, length=37, state=4, groups: int | None = 2, seed=0, device="cpu"):
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=gen).to(device)

    bc_shape = (batch, groups, state, length) if groups else (batch, state, length)
    return dict(
        u=rand(batch, dim, length), delta=rand(batch, dim, length) * 0.5,
        A=-torch.exp(rand(dim, state)), B=rand(*bc_shape), C=rand(*bc_shape), D=rand(dim),
        z=rand(batch, dim, length), delta_bias=rand(dim) * 0.5,
    )


@pytest.mark.parametrize("chunk_size", [1, 5, 16, 64])
@pytest.mark.parametrize("groups", [None, 1, 4])
def test_torch_scan_matches_recurrence_with_skip_gate_and_delta_bias(chunk_size, groups):
    x = _inputs(groups=groups)
    expected = selective_scan_reference(**x, delta_softplus=True)
    got = selective_scan_torch(**x, delta_softplus=True, chunk_size=chunk_size)
    assert got.shape == (2, 8, 37)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_torch_scan_matches_recurrence_without_optional_terms():
    x = _inputs(groups=None)
    for key in ("D", "z", "delta_bias"):
        x.pop(key)
    x["delta"] = x["delta"].abs()  # without softplus the step size must be positive
    expected = selective_scan_reference(**x)
    torch.testing.assert_close(selective_scan_torch(**x, chunk_size=8), expected, rtol=1e-5, atol=1e-5)


def test_each_term_changes_the_output():
    """Guards the comparison above against terms that both implementations silently ignore."""
    x = _inputs()
    base = selective_scan_torch(**x, delta_softplus=True)
    for key in ("D", "z", "delta_bias"):
        without = {k: v for k, v in x.items() if k != key}
        assert not torch.allclose(selective_scan_torch(**without, delta_softplus=True), base)
    assert not torch.allclose(selective_scan_torch(**x, delta_softplus=False), base)


def test_long_sequences_with_strong_decay_stay_finite():
    x = _inputs(length=300, groups=1)
    x["delta"] = x["delta"] + 4.0  # large steps: exp(dt * A) underflows towards 0
    expected = selective_scan_reference(**x, delta_softplus=True)
    got = selective_scan_torch(**x, delta_softplus=True, chunk_size=64)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-4)


def test_gradients_match_recurrence():
    x = _inputs(length=20)
    x_ref = {k: v.clone().requires_grad_(True) for k, v in x.items()}
    x_fast = {k: v.clone().requires_grad_(True) for k, v in x.items()}
    selective_scan_reference(**x_ref, delta_softplus=True).square().sum().backward()
    selective_scan_torch(**x_fast, delta_softplus=True, chunk_size=8).square().sum().backward()
    for key in x:
        torch.testing.assert_close(x_fast[key].grad, x_ref[key].grad, rtol=1e-4, atol=1e-4)


def test_half_precision_inputs_return_their_dtype():
    x = {k: v.to(torch.bfloat16) for k, v in _inputs().items()}
    out = selective_scan(**x, delta_softplus=True)
    assert out.dtype == torch.bfloat16
    expected = selective_scan_reference(**x, delta_softplus=True)
    torch.testing.assert_close(out.float(), expected.float(), rtol=2e-2, atol=2e-2)


def test_cpu_inputs_never_use_the_cuda_kernel():
    x = _inputs()
    with pytest.raises(RuntimeError, match="mamba-ssm"):
        selective_scan(**x, backend="cuda")


@pytest.mark.skipif(not cuda_scan_available(), reason="needs mamba-ssm (the `gpu` extra) and a CUDA device")
@pytest.mark.parametrize("groups", [None, 4])
def test_cuda_kernel_matches_torch_scan(groups):
    x = _inputs(batch=3, dim=64, length=200, state=16, groups=groups, device="cuda")
    kernel = selective_scan(**x, delta_softplus=True, backend="cuda")
    torch_scan = selective_scan_torch(**x, delta_softplus=True)
    torch.testing.assert_close(kernel, torch_scan, rtol=1e-3, atol=1e-3)
