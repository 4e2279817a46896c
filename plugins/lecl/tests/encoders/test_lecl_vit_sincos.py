"""ViT ``pos_embed: sincos``: MoCo v3's fixed 2D sin-cos table and initialisation; ``learned`` unchanged."""

from __future__ import annotations

import math

import pytest
import timm
import torch
from clear_bench_lecl.backbones import build_backbone
from clear_bench_lecl.backbones.vit import sincos_table

from clear_bench.errors import ConfigError
from clear_bench.registry import load_registry

SMALL = dict(img_size=64, embed_dim=32, depth=2, num_heads=2)


def _loop_table(grid_h: int, grid_w: int, dim: int) -> list[list[float]]:
    """The formula written out: row r, column c -> [sin(r w_i)..., cos(r w_i)..., sin(c w_i)...,
    cos(c w_i)...] with w_i = 1 / 10000^(i / (dim / 4)); a zero row first for the class token."""
    quarter = dim // 4
    rows = [[0.0] * dim]
    for r in range(grid_h):
        for c in range(grid_w):
            omegas = [1.0 / 10000 ** (i / quarter) for i in range(quarter)]
            rows.append([math.sin(r * w) for w in omegas] + [math.cos(r * w) for w in omegas]
                        + [math.sin(c * w) for w in omegas] + [math.cos(c * w) for w in omegas])
    return rows


def test_the_table_matches_the_loop_formula() -> None:
    for grid_h, grid_w, dim in [(3, 3, 16), (2, 4, 8), (4, 4, 32)]:
        table = sincos_table(grid_h, grid_w, dim)
        assert table.shape == (1, 1 + grid_h * grid_w, dim) and table.dtype == torch.float32
        torch.testing.assert_close(table[0], torch.tensor(_loop_table(grid_h, grid_w, dim)),
                                   rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_table(2, 2, 30)


def test_sincos_is_the_table_and_does_not_train() -> None:
    model = build_backbone("vit_small_patch16", pos_embed="sincos", **SMALL)
    assert not model.pos_embed.requires_grad
    torch.testing.assert_close(model.pos_embed.detach(), sincos_table(4, 4, 32), rtol=0, atol=0)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert "pos_embed" not in trainable and "cls_token" in trainable
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model.train()(torch.randn(2, 3, 64, 64)).square().sum().backward()
    optimizer.step()
    assert model.pos_embed.grad is None
    torch.testing.assert_close(model.pos_embed.detach(), sincos_table(4, 4, 32), rtol=0, atol=0)


def _uniform_within(weight: torch.Tensor, bound: float) -> None:
    assert weight.abs().max() <= bound + 1e-7
    assert weight.abs().max() > 0.9 * bound  # spread over the range, not a narrower init
    assert abs(weight.var().item() - bound * bound / 3) < 0.25 * bound * bound / 3


def test_sincos_brings_mocov3s_init() -> None:
    torch.manual_seed(0)
    model = build_backbone("vit_small_patch16", pos_embed="sincos", img_size=64, embed_dim=64, depth=2,
                           num_heads=2)
    qkv = model.blocks[0].attn.qkv
    _uniform_within(qkv.weight, math.sqrt(6.0 / (qkv.weight.shape[0] // 3 + qkv.weight.shape[1])))
    for linear in (model.blocks[0].attn.proj, model.blocks[1].mlp.fc1, model.blocks[1].mlp.fc2):
        _uniform_within(linear.weight, math.sqrt(6.0 / (linear.weight.shape[0] + linear.weight.shape[1])))
        assert torch.count_nonzero(linear.bias) == 0
    assert torch.count_nonzero(qkv.bias) == 0
    assert 0 < model.cls_token.abs().max() < 1e-5
    proj = model.patch_embed.proj
    _uniform_within(proj.weight, math.sqrt(6.0 / (3 * 16 * 16 + 64)))
    assert torch.count_nonzero(proj.bias) == 0


def test_a_conv_stem_keeps_its_own_init_and_defaults_to_sincos() -> None:
    torch.manual_seed(0)
    model = build_backbone("vit_conv_small", img_size=64, embed_dim=32, depth=1, num_heads=2)
    assert model.pos_embed_kind == "sincos" and not model.pos_embed.requires_grad
    torch.testing.assert_close(model.pos_embed.detach(), sincos_table(4, 4, 32), rtol=0, atol=0)
    torch.manual_seed(0)
    learned = build_backbone("vit_conv_small", pos_embed="learned", img_size=64, embed_dim=32, depth=1,
                             num_heads=2)
    assert learned.pos_embed.requires_grad
    # MoCo v3 re-initialises a patchify projection only: the conv stem is timm's draw in both
    for name, param in model.patch_embed.state_dict().items():
        assert torch.equal(param, learned.patch_embed.state_dict()[name]), name


def test_learned_stays_timms_vit_by_default() -> None:
    torch.manual_seed(0)
    ours = build_backbone("vit_tiny_patch16", img_size=32)
    torch.manual_seed(0)
    reference = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=32)
    assert ours.pos_embed_kind == "learned" and ours.pos_embed.requires_grad
    for name, value in reference.state_dict().items():
        assert torch.equal(ours.state_dict()[name], value), name


def test_the_encoder_option_and_its_checks(tmp_path) -> None:
    spec = load_registry().encoder("lecl-vit")
    base = {"weights": "random", "img_size": 32, "arch": "vit_small_patch16",
            "arch_kwargs": {"embed_dim": 32, "depth": 1, "num_heads": 2}}
    learned = spec.build(base)
    assert "pos_embed" not in learned.options  # the default ViT's cache key is unchanged
    sincos = spec.build({**base, "pos_embed": "sincos"})
    assert sincos.options["pos_embed"] == "sincos"
    torch.testing.assert_close(sincos.model.pos_embed, sincos_table(2, 2, 32), rtol=0, atol=0)
    conv = spec.build({**base, "arch": "vit_conv_small"})
    assert conv.options["pos_embed"] == "sincos"

    from clear_bench_lecl.checkpoint import save_encoder_checkpoint

    from clear_bench.specs import Preprocessing

    path = tmp_path / "vit.pt"
    save_encoder_checkpoint(path, arch="vit_small_patch16",
                            arch_kwargs={"img_size": 32, **base["arch_kwargs"]},
                            state_dict=learned.model.state_dict(), preprocessing=Preprocessing(image_size=32),
                            config={})
    loaded = spec.build({"checkpoint": str(path)})
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), learned.model(x), rtol=0, atol=0)
    with pytest.raises(ConfigError, match=r"option 'pos_embed' is 'sincos'.*trained with 'learned'"):
        spec.build({"checkpoint": str(path), "pos_embed": "sincos"})
