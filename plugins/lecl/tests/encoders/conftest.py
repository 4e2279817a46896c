"""Shared fixtures of the LeCL encoder tests: tiny variants of every backbone family."""

from __future__ import annotations

import pytest
import torch

# (arch, build_backbone kwargs): a few thousand parameters each, 32 px inputs
TINY_BACKBONES = {
    "vit_small_patch16": dict(img_size=32, embed_dim=32, depth=2, num_heads=2),
    "vit_conv_small": dict(img_size=32, embed_dim=32, depth=1, num_heads=2),
    "mambaout_femto": dict(img_size=32, dims=(8, 16, 24, 32), depths=(1, 1, 1, 1)),
    "vmamba_micro": dict(img_size=32, dims=16, depths=(1, 1, 1, 1), d_state=4),
}


@pytest.fixture(autouse=True)
def _few_threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(params=list(TINY_BACKBONES), ids=list(TINY_BACKBONES))
def tiny_backbone(request) -> tuple[str, dict]:
    """(arch, build_backbone kwargs) of each family's tiny variant."""
    return request.param, dict(TINY_BACKBONES[request.param])
