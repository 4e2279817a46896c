"""LeCL backbones: real timm ViT / MambaOut and the VMamba SS2D model, built tiny with random weights."""

from __future__ import annotations

import pytest
import torch
from clear_bench_lecl.backbones import ARCHS, build_backbone
from clear_bench_lecl.backbones.vmamba import SS2D, cross_merge, cross_scan
from torch import nn


def _images(batch: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_builds_and_embeds_to_measured_width(tiny_backbone):
    arch, kwargs = tiny_backbone
    model = build_backbone(arch, **kwargs).eval()
    with torch.no_grad():
        out = model(_images(3))
    assert out.shape == (3, model.embed_dim)
    assert torch.isfinite(out).all()
    assert out.std() > 0
    assert model.arch == arch


def test_item_embeds_the_same_alone_and_inside_a_batch(tiny_backbone):
    arch, kwargs = tiny_backbone
    torch.manual_seed(1)
    model = build_backbone(arch, **kwargs).eval()
    batch = _images(5, seed=2)
    with torch.no_grad():
        together = model(batch)
        alone = torch.cat([model(batch[i : i + 1]) for i in range(5)])
    torch.testing.assert_close(alone, together, rtol=1e-4, atol=1e-5)


def test_mambaout_width_follows_its_embedding():
    kwargs = dict(img_size=32, dims=(8, 16, 24, 32), depths=(1, 1, 1, 1))
    pooled = build_backbone("mambaout_femto", **kwargs)
    assert pooled.num_features == 32 and pooled.embed_dim == 32  # the last stage's width
    pre_logits = build_backbone("mambaout_femto", embedding="pre-logits", **kwargs)
    assert pre_logits.embed_dim == 128  # MambaOut's MLP head: 4x the last stage width


def test_conv_stem_vit_replaces_the_patchify_conv():
    model = build_backbone("vit_conv_small", img_size=32, embed_dim=32, depth=1, num_heads=2)
    convs = [m for m in model.patch_embed.proj.modules() if isinstance(m, nn.Conv2d)]
    assert [c.stride for c in convs] == [(2, 2)] * 4 + [(1, 1)]
    assert [c.kernel_size for c in convs] == [(3, 3)] * 4 + [(1, 1)]
    assert convs[0].out_channels == 4 and convs[-1].out_channels == 32
    assert model.patch_embed.num_patches == 4  # 32 px / stride 16 -> 2 x 2 tokens


def test_vit_defaults_are_the_timm_archs():
    model = build_backbone("vit_tiny_patch16", img_size=32)
    assert model.embed_dim == 192 and len(model.blocks) == 12


def test_vmamba_scan_backends_agree():
    torch.manual_seed(3)
    model = build_backbone("vmamba_micro", img_size=32, dims=16, depths=(1, 1, 1, 1), d_state=4).eval()
    x = _images(2)
    with torch.no_grad():
        fast = model(x)
        model.set_scan_backend("reference")
        slow = model(x)
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-5)


def test_cross_scan_visits_every_position_in_four_orders_and_merge_inverts_it():
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).view(2, 3, 4, 5)
    xs = cross_scan(x)
    assert xs.shape == (2, 4, 3, 20)
    assert torch.equal(xs[:, 0], x.flatten(2))
    assert torch.equal(xs[:, 1, :, :4], x[:, :, :, 0])  # column-major: first column first
    assert torch.equal(xs[:, 2], x.flatten(2).flip(-1))
    assert torch.equal(cross_merge(xs, 4, 5), 4 * x.flatten(2))


def test_ss2d_mixes_along_rows_and_columns_in_both_directions():
    """A change at one position reaches positions before and after it on both axes."""
    torch.manual_seed(0)
    block = SS2D(8, d_state=2, ssm_ratio=1.0, d_conv=1).eval()  # 1x1 conv: only the scans mix positions
    x = torch.randn(1, 5, 5, 8)
    y = x.clone()
    y[0, 2, 2] += 1.0
    with torch.no_grad():
        diff = (block(x) - block(y)).abs().sum(-1)[0]
    for pos in [(2, 0), (2, 4), (0, 2), (4, 2), (0, 0), (4, 4)]:
        assert diff[pos] > 0, pos


def test_vmamba_trains_end_to_end():
    torch.manual_seed(0)
    model = build_backbone("vmamba_micro", img_size=32, dims=16, depths=(1, 1, 1, 1), d_state=4)
    model(_images(2)).square().mean().backward()
    ss2d = next(m for m in model.modules() if isinstance(m, SS2D))
    for name in ("A_logs", "Ds", "dt_projs_bias", "x_proj_weight", "dt_projs_weight"):
        grad = getattr(ss2d, name).grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name


def test_unknown_arch_lists_the_known_ones():
    with pytest.raises(ValueError, match="vmamba_tiny"):
        build_backbone("vmamba_huge")
    assert {"vit_small_patch16", "mambaout_femto", "vmamba_tiny"} <= set(ARCHS)


def test_arch_names_listed_without_torch_match_the_configs():
    from clear_bench_lecl import archs
    from clear_bench_lecl.backbones.vit import CONV_STEM_CONFIGS
    from clear_bench_lecl.backbones.vmamba import VMAMBA_CONFIGS

    assert tuple(VMAMBA_CONFIGS) == archs.VMAMBA_ARCHS
    assert set(CONV_STEM_CONFIGS) <= set(archs.VIT_ARCHS)


def test_vmamba_clear_is_the_public_vssm_configuration():
    """The public CLEAR code's VSSM() defaults: depths 2-2-9-2, dims 96..768, d_state 16, ssm_ratio 2, gated
    SS2D with a biased depth-wise conv, a 4x4 stride-4 patch embedding, 2x2 stride-2 downsampling, drop-path
    0.1 reached by the last block."""
    model = build_backbone("vmamba_clear", img_size=64)
    assert [len(stage) for stage in model.stages] == [2, 2, 9, 2]
    assert [stage[0].op.out_proj.out_features for stage in model.stages] == [96, 192, 384, 768]
    first = model.stages[0][0].op
    assert first.gated and first.d_state == 16 and first.d_inner == 192
    assert first.in_proj.out_features == 2 * 192  # x and the gate z
    assert first.conv2d.bias is not None
    stem = model.patch_embed[0]
    assert (stem.kernel_size, stem.stride, len(model.patch_embed)) == ((4, 4), (4, 4), 2)
    assert all(d.conv.kernel_size == (2, 2) and d.conv.stride == (2, 2) for d in list(model.downsamples)[1:])
    assert model.stages[-1][-1].drop_path.drop_prob == pytest.approx(0.1)
    assert model.stages[0][0].drop_path.__class__.__name__ == "Identity"  # rate 0 at the first block
    with torch.no_grad():
        features = model.eval()(torch.randn(2, 3, 64, 64))
    assert features.shape == (2, 768) and torch.isfinite(features).all()


def test_the_public_vmamba_arch_name_maps_to_vmamba_clear():
    from clear_bench_lecl.pretrain.seed_cli import SEED_ARCHS

    assert SEED_ARCHS["vmamba"] == ("vmamba_clear", {})
