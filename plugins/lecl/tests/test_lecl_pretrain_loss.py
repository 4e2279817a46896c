"""The LeCL losses against a loop-by-loop evaluation of their formulas; gradients reach queries only."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from clear_bench_lecl.pretrain.loss import LossConfig, contrastive_loss, loss_from_logits, similarity_logits
from clear_bench_lecl.pretrain.model import MoCoV3

torch.set_num_threads(1)


def loop_loss(logits: torch.Tensor, lesion: list[bool], offset: int, variant: str, lam: float) -> float:
    """``-log(e^{s_ii} / denominator)`` averaged over queries, one scalar at a time, in float64."""
    s = logits.double().tolist()
    total = 0.0
    for i, row in enumerate(s):
        positive = i + offset
        denominator = sum(math.exp(v) for v in row)
        for j, v in enumerate(row):
            if lesion[j] and j != positive:
                denominator += lam * math.exp(v) if variant == "lecl" else math.exp(lam * v)
        total += -math.log(math.exp(row[positive]) / denominator)
    return total / len(s)


@pytest.mark.parametrize("variant", ["lecl", "lecl-reference"])
@pytest.mark.parametrize("lam", [0.5, 1.0, 3.0])
@pytest.mark.parametrize("offset", [0, 6])
def test_loss_matches_the_formula_loop_by_loop(variant: str, lam: float, offset: int) -> None:
    generator = torch.Generator().manual_seed(int(lam * 10) + offset)
    q = F.normalize(torch.randn(6, 8, generator=generator), dim=1)
    k = F.normalize(torch.randn(12, 8, generator=generator), dim=1)
    lesion = torch.tensor([1, 0, 0, 1, 1, 0, 0, 1, 0, 1, 0, 0], dtype=torch.bool)
    # The positive of query 0 (key 0 or key 6) is a lesion key for one offset and not for the other.
    logits = q @ k.t() / 0.2
    got = loss_from_logits(logits, lesion, offset, variant, lam)
    want = loop_loss(logits, lesion.tolist(), offset, variant, lam)
    assert got.item() == pytest.approx(want, rel=1e-5)
    plain = F.cross_entropy(logits, torch.arange(6) + offset).item()
    assert got.item() > plain + 1e-4  # other lesion keys make the denominator larger


@pytest.mark.parametrize("variant", ["lecl", "lecl-reference", "infonce"])
def test_lambda_zero_is_moco_v3_infonce(variant: str) -> None:
    generator = torch.Generator().manual_seed(3)
    q, k = torch.randn(8, 16, generator=generator), torch.randn(8, 16, generator=generator)
    lesion = torch.tensor([1, 1, 0, 0, 1, 0, 0, 0], dtype=torch.bool)
    tau = 0.2
    config = LossConfig(variant, lam=0.0, temperature=tau)
    got = contrastive_loss(q, k, lesion, config)
    # MoCo v3: CrossEntropy(q.k^T / tau, arange) * 2 tau on unit vectors
    logits = F.normalize(q, dim=1) @ F.normalize(k, dim=1).t() / tau
    want = F.cross_entropy(logits, torch.arange(8)) * 2 * tau
    assert got.item() == pytest.approx(want.item(), rel=1e-6)
    unscaled = contrastive_loss(q, k, lesion, LossConfig(variant, 0.0, tau, scale_by_2tau=False))
    assert unscaled.item() == pytest.approx(want.item() / (2 * tau), rel=1e-6)


def test_no_lesion_in_batch_reduces_to_infonce() -> None:
    generator = torch.Generator().manual_seed(5)
    logits = torch.randn(4, 4, generator=generator)
    none = torch.zeros(4, dtype=torch.bool)
    for variant in ("lecl", "lecl-reference"):
        got = loss_from_logits(logits, none, 0, variant, 2.0)
        assert got.item() == pytest.approx(F.cross_entropy(logits, torch.arange(4)).item(), rel=1e-6)


def test_gradient_flows_through_queries_only() -> None:
    q = torch.randn(6, 8, requires_grad=True)
    k = torch.randn(6, 8, requires_grad=True)
    lesion = torch.tensor([1, 0, 1, 0, 0, 0], dtype=torch.bool)
    contrastive_loss(q, k, lesion, LossConfig("lecl", 2.0)).backward()
    assert q.grad is not None and q.grad.abs().sum() > 0
    assert k.grad is None


@pytest.mark.parametrize("variant", ["lecl", "lecl-reference", "infonce"])
def test_the_loss_is_float32_under_bf16_autocast(variant: str) -> None:
    generator = torch.Generator().manual_seed(11)
    q = torch.randn(16, 32, generator=generator)
    k = torch.randn(16, 32, generator=generator)
    lesion = torch.rand(16, generator=generator) < 0.4
    config = LossConfig(variant, 2.0, temperature=0.1)
    want = contrastive_loss(q, k, lesion, config)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert (q @ k.t()).dtype == torch.bfloat16  # autocast is really on for a plain matmul
        logits = similarity_logits(q, k, 0.1)
        got = contrastive_loss(q, k, lesion, config)
    assert logits.dtype == got.dtype == torch.float32
    torch.testing.assert_close(logits, q @ k.t() / 0.1, rtol=0, atol=1e-5)
    assert got.item() == pytest.approx(want.item(), abs=1e-6)


def _tiny_moco() -> MoCoV3:
    torch.manual_seed(0)
    backbone = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 16))
    return MoCoV3(backbone, 16, LossConfig("lecl", 1.0), dim=8, mlp_dim=16)


def test_momentum_encoder_gets_no_gradient_and_follows_the_ema() -> None:
    model = _tiny_moco().train()
    x1, x2 = torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8)
    loss = model(x1, x2, torch.tensor([1, 0, 0, 1], dtype=torch.bool))
    loss.backward()
    momentum = [*model.momentum_backbone.parameters(), *model.momentum_projector.parameters()]
    assert all(not p.requires_grad and p.grad is None for p in momentum)
    online = [p for p in model.parameters() if p.requires_grad]
    assert online and all(p.grad is not None for p in online)
    with torch.no_grad():
        for p in model.backbone.parameters():
            p.add_(1.0)
    before = [p.clone() for p in model.momentum_backbone.parameters()]
    model.update_momentum(0.9)
    for old, new, online_p in zip(before, model.momentum_backbone.parameters(), model.backbone.parameters(),
                                  strict=True):
        torch.testing.assert_close(new, 0.9 * old + 0.1 * online_p)
