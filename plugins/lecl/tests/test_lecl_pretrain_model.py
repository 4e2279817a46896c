"""The MoCo v3 model as the trainer builds it: what ``model.stop_grad_patch_embed`` freezes."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from clear_bench_lecl.pretrain.config import load_config
from clear_bench_lecl.pretrain.train import build_model
from lecl_pretrain_helpers import tiny_config

torch.set_num_threads(1)


def _one_backward(tmp_path: Path, model_settings: dict) -> nn.Module:
    config = load_config(tiny_config(tmp_path, model={**model_settings, "stop_grad_patch_embed": True}))
    model = build_model(config).train()
    views = torch.randn(2, 4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    model(views[0], views[1], torch.tensor([True, False, False, True])).backward()
    return model.backbone


def test_a_conv_stem_freezes_only_its_final_projection(tmp_path: Path) -> None:
    backbone = _one_backward(tmp_path, {"arch": "vit_conv_small",
                                        "arch_kwargs": {"embed_dim": 64, "depth": 1, "num_heads": 2}})
    stem = backbone.patch_embed.proj
    projection = stem[-1]
    assert isinstance(projection, nn.Conv2d) and projection.kernel_size == (1, 1)
    assert all(not p.requires_grad and p.grad is None for p in projection.parameters())
    earlier = [layer for layer in stem[:-1] if isinstance(layer, nn.Conv2d | nn.BatchNorm2d)]
    assert len(earlier) == 8
    for layer in earlier:
        for p in layer.parameters():
            assert p.requires_grad and p.grad is not None and p.grad.abs().sum() > 0, layer


def test_a_patchify_vit_freezes_its_patch_projection_only(tmp_path: Path) -> None:
    backbone = _one_backward(tmp_path, {})
    projection = backbone.patch_embed.proj
    assert isinstance(projection, nn.Conv2d)
    assert all(not p.requires_grad and p.grad is None for p in projection.parameters())
    frozen = {name for name, p in backbone.named_parameters() if not p.requires_grad}
    assert frozen <= {"patch_embed.proj.weight", "patch_embed.proj.bias", "pos_embed"}
    assert backbone.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
