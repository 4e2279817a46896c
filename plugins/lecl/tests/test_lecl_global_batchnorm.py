"""Global-batch BatchNorm: the 1D head's and the 2D conv stem's match PyTorch's BatchNorm in one process,
and a 2-rank gloo step of a conv-stem ViT matches one process on the global batch."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from clear_bench_lecl.backbones import build_backbone
from clear_bench_lecl.pretrain.config import load_config
from clear_bench_lecl.pretrain.model import (
    GlobalBatchNorm1d,
    GlobalBatchNorm2d,
    convert_global_batchnorm,
    plain_batchnorm,
)
from clear_bench_lecl.pretrain.train import DistContext, Trainer, state_digest
from lecl_batchnorm_worker import first_step
from lecl_pretrain_helpers import HERE, tiny_config, torchrun

from clear_bench.registry import load_registry

torch.set_num_threads(1)
WORKER = str(HERE / "lecl_batchnorm_worker.py")
CONV_STEM = {"arch": "vit_conv_small", "arch_kwargs": {"embed_dim": 64, "depth": 1, "num_heads": 2}}


def _assert_same_steps(ours: nn.Module, reference: nn.Module, shape: tuple[int, ...]) -> None:
    """Three training steps (outputs, input and parameter gradients, running statistics), then eval."""
    generator = torch.Generator().manual_seed(1)
    for _ in range(3):
        x = torch.randn(shape, generator=generator) * 3 + 2  # off-centre, as activations are
        weights = torch.randn(shape, generator=generator)
        x_ours, x_ref = x.clone().requires_grad_(), x.clone().requires_grad_()
        y_ours, y_ref = ours(x_ours), reference(x_ref)
        torch.testing.assert_close(y_ours, y_ref, rtol=1e-5, atol=1e-5)
        (y_ours * weights).sum().backward()
        (y_ref * weights).sum().backward()
        torch.testing.assert_close(x_ours.grad, x_ref.grad, rtol=1e-5, atol=1e-5)
    for (name, ours_p), ref_p in zip(ours.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(ours_p.grad, ref_p.grad, rtol=1e-5, atol=1e-5, msg=name)
    ours_state, ref_state = ours.state_dict(), reference.state_dict()
    assert ours_state.keys() == ref_state.keys()
    for key, value in ref_state.items():
        torch.testing.assert_close(ours_state[key], value, rtol=1e-5, atol=1e-6, msg=key)
    assert int(ours_state["num_batches_tracked"]) == 3
    ours.eval(), reference.eval()
    x = torch.randn(shape, generator=generator) * 3 + 2
    torch.testing.assert_close(ours(x), reference(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("affine", "momentum"), [(True, 0.1), (False, 0.3), (True, None)])
def test_global_batchnorm_2d_matches_batchnorm_2d_in_one_process(affine: bool,
                                                                  momentum: float | None) -> None:
    reference = nn.BatchNorm2d(5, affine=affine, momentum=momentum)
    if affine:
        with torch.no_grad():
            reference.weight.uniform_(0.5, 1.5)
            reference.bias.normal_()
    ours = GlobalBatchNorm2d(5, affine=affine, momentum=momentum)
    ours.load_state_dict(reference.state_dict())
    _assert_same_steps(ours, reference, (6, 5, 4, 3))


def test_global_batchnorm_1d_matches_batchnorm_1d_in_one_process() -> None:
    reference = nn.BatchNorm1d(7)
    ours = GlobalBatchNorm1d(7)
    ours.load_state_dict(reference.state_dict())
    _assert_same_steps(ours, reference, (10, 7))


def test_a_conv_stem_converts_and_reverts_with_the_same_state() -> None:
    torch.manual_seed(0)
    backbone = build_backbone("vit_conv_small", img_size=32, **CONV_STEM["arch_kwargs"])
    original = copy.deepcopy(backbone)
    weights = [id(p) for p in backbone.parameters()]
    converted = convert_global_batchnorm(backbone)
    stem_norms = [m for m in converted.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(stem_norms) == 4 and all(type(m) is GlobalBatchNorm2d for m in stem_norms)
    assert [id(p) for p in converted.parameters()] == weights  # the same tensors, for the optimizer and EMA
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(converted.train()(x), original.train()(x), rtol=1e-5, atol=1e-5)

    plain = plain_batchnorm(converted)
    assert any(type(m) is GlobalBatchNorm2d for m in converted.modules())  # a copy: the trainer's stays
    assert [type(m) for m in plain.modules() if isinstance(m, nn.BatchNorm2d)] == [nn.BatchNorm2d] * 4
    fresh = build_backbone("vit_conv_small", img_size=32, **CONV_STEM["arch_kwargs"])
    fresh.load_state_dict(plain.state_dict(), strict=True)
    for key, value in converted.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key


def _distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).norm()


def _conv_recipe(tmp_path: Path, name: str) -> Path:
    # fp32, so that the only difference between the runs is the order of floating-point sums
    return tiny_config(tmp_path, name, model=CONV_STEM, optim={"epochs": 1, "precision": "fp32"})


@pytest.mark.slow
def test_two_rank_conv_stem_step_matches_one_process_on_the_global_batch(tmp_path: Path) -> None:
    out = tmp_path / "records"
    out.mkdir()
    result = torchrun([WORKER, str(_conv_recipe(tmp_path, "ddp")), str(_conv_recipe(tmp_path, "local")),
                       str(out)], timeout=150)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ranks = [torch.load(out / f"global-rank{r}.pt", weights_only=True) for r in (0, 1)]
    per_rank = torch.load(out / "local-rank0.pt", weights_only=True)

    single = Trainer(load_config(_conv_recipe(tmp_path, "single")), DistContext())
    expected = first_step(single)
    assert ranks[0]["norms"] == ["GlobalBatchNorm2d"] and expected["norms"] == ["BatchNorm2d"]
    assert per_rank["norms"] == ["BatchNorm2d"]
    stem = [key for key in expected["buffers"] if "patch_embed" in key and key.endswith("running_var")]
    assert len(stem) == 8  # 4 BatchNorms in each of the online and the momentum stem

    for record in ranks:
        assert record["loss"] == pytest.approx(expected["loss"], rel=1e-5)
        assert record["grads"].keys() == expected["grads"].keys()
        for key, grad in expected["grads"].items():  # about 1e-5 of each gradient's norm
            assert _distance(record["grads"][key], grad) <= 5e-5 * grad.norm() + 1e-6, key
        assert record["buffers"].keys() == expected["buffers"].keys()
        for key, buffer in expected["buffers"].items():  # the momentum stem's statistics included
            torch.testing.assert_close(record["buffers"][key], buffer, rtol=1e-5, atol=1e-5, msg=key)

    # Per-rank statistics are really different: the loss, the stem's gradients and running statistics.
    assert abs(per_rank["loss"] - expected["loss"]) > 1e-2
    assert max((per_rank["buffers"][k] - expected["buffers"][k]).abs().max().item() for k in stem) > 1e-3
    for key in (k for k in expected["grads"] if "patch_embed" in k):
        assert _distance(per_rank["grads"][key], expected["grads"][key]) > 0.1 * expected["grads"][key].norm()

    # The rest of the run: the ranks stay equal (momentum EMA and buffers too), and the encoder is plain.
    single.step = 1
    single.fit()
    (checkpoint,) = (tmp_path / "ddp").glob("*-checkpoint_0001.pth.tar")
    state = torch.load(checkpoint, weights_only=True)
    assert state["step"] == single.step == 3
    assert state["rank_digests"][0] == state["rank_digests"][1] == state_digest(state["model"])
    trained = single.model.state_dict()
    for key, value in state["model"].items():
        # Adam turns rounding-level gradient differences into at most a few lr-sized steps
        torch.testing.assert_close(value, trained[key], rtol=1e-4, atol=5 * single.peak_lr, msg=key)
    (encoder_path,) = (tmp_path / "ddp").glob("*-encoder.pt")
    encoder = load_registry([]).encoder("lecl-vit").build({"checkpoint": str(encoder_path)})  # strict load
    for key, value in encoder.model.state_dict().items():
        assert torch.equal(value, state["model"][f"backbone.{key}"]), key
