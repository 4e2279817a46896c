"""BiomedCLIP's vision tower through open_clip: config-built architecture, strict visual-only loading."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from clear_bench_foundation.biomedclip import BIOMEDCLIP_CONFIG, OPENAI_MEAN, build_vision_tower
from clear_bench_foundation.encoders import build_biomedclip

from clear_bench.errors import UserError, WeightsNotFoundError


def _images(batch: int, size: int = 160) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))


def test_random_tower_from_a_local_config(tiny_clip_dir):
    encoder = build_biomedclip({"weights": "random", "local_dir": str(tiny_clip_dir), "seed": 3})
    assert encoder.random_init and encoder.label == "biomedclip (random init)"
    assert encoder.weights_digest == "random-init:3"
    assert encoder.embed_dim == 32 and encoder.input_kind == "slice"
    assert encoder.preprocessing.image_size == 160 and encoder.preprocessing.mean == OPENAI_MEAN
    x = _images(4)
    with torch.no_grad():
        batch = encoder.model(x)
        alone = torch.cat([encoder.model(x[i : i + 1]) for i in range(4)])
    assert batch.shape == (4, 32) and torch.isfinite(batch).all()
    torch.testing.assert_close(alone, batch, rtol=1e-4, atol=1e-5)
    pooled = build_biomedclip({"weights": "random", "local_dir": str(tiny_clip_dir), "output": "pooled"})
    assert pooled.embed_dim == 64  # test_vit's width, before the projection


def test_local_checkpoint_loads_the_visual_half_strictly(tiny_clip_dir):
    torch.manual_seed(1)
    tower = build_vision_tower(json.loads((tiny_clip_dir / "open_clip_config.json").read_text()))
    state = {f"visual.{key}": value for key, value in tower.state_dict().items()}
    state["text.proj.weight"] = torch.zeros(4, 4)  # real checkpoints hold the text tower too: ignored
    state["logit_scale"] = torch.tensor(4.6)
    weights = tiny_clip_dir / "open_clip_pytorch_model.bin"
    torch.save(state, weights)
    encoder = build_biomedclip({"local_dir": str(tiny_clip_dir)})
    assert not encoder.random_init and encoder.label == "biomedclip"
    assert encoder.weights_digest == hashlib.sha256(weights.read_bytes()).hexdigest()
    x = _images(2)
    with torch.no_grad():
        torch.testing.assert_close(encoder.model(x), tower.eval()(x), rtol=0, atol=0)


def test_checkpoint_missing_a_visual_key_fails_naming_the_file(tiny_clip_dir):
    tower = build_vision_tower(json.loads((tiny_clip_dir / "open_clip_config.json").read_text()))
    state = {f"visual.{key}": value for key, value in tower.state_dict().items() if key != "head.proj.weight"}
    weights = tiny_clip_dir / "open_clip_pytorch_model.bin"
    torch.save(state, weights)
    with pytest.raises(UserError, match=r"missing keys \[head\.proj\.weight\]") as err:
        build_biomedclip({"local_dir": str(tiny_clip_dir)})
    assert str(weights) in str(err.value)


def test_local_dir_without_weights_is_weights_not_found(tiny_clip_dir):
    with pytest.raises(WeightsNotFoundError, match="no weights file") as err:
        build_biomedclip({"local_dir": str(tiny_clip_dir)})
    assert str(tiny_clip_dir) in str(err.value) and "weights: random" in str(err.value)


def test_hub_weights_absent_from_the_cache_is_weights_not_found(tmp_path):
    with pytest.raises(WeightsNotFoundError) as err:
        build_biomedclip({"cache_dir": str(tmp_path / "hf")})
    message = str(err.value)
    assert "microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224" in message
    assert str(tmp_path / "hf") in message and "local_dir" in message and "HF_HUB_OFFLINE" in message


def test_real_biomedclip_tower_shape_on_the_meta_device():
    with torch.device("meta"):
        tower = build_vision_tower(BIOMEDCLIP_CONFIG)
        out = tower(torch.zeros(2, 3, 224, 224))
    assert out.shape == (2, 512)
    assert type(tower.trunk).__name__ == "VisionTransformer"
    assert tower.trunk.patch_embed.patch_size == (16, 16)
    assert len(tower.trunk.blocks) == 12 and tower.trunk.embed_dim == 768
    assert tower.head.proj.weight.shape == (512, 768) and tower.head.proj.bias is None
    assert sum(p.numel() for p in tower.parameters()) == 86_191_872
