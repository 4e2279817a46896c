"""DINOv2, DINO ViT and SAM2-Hiera through timm: tiny random variants, strict local checkpoints (DINO / iBOT
training checkpoints too), hub weights rules."""

from __future__ import annotations

import hashlib

import pytest
import timm
import torch
from clear_bench_foundation.encoders import build_dino_vit, build_dinov2, build_sam2_hiera

from clear_bench.errors import UserError, WeightsNotFoundError

TINY = {
    "dinov2": (build_dinov2, "vit_small_patch14_dinov2.lvd142m",
               {"embed_dim": 32, "depth": 1, "num_heads": 2}, 56, {"img_size": 56}),
    "dino-vit": (build_dino_vit, "vit_small_patch16_224.dino",
                 {"embed_dim": 32, "depth": 1, "num_heads": 2}, 32, {"img_size": 32}),
    "sam2-hiera": (build_sam2_hiera, "sam2_hiera_tiny.fb_r896",
                   {"embed_dim": 16, "num_heads": 1, "stages": [1, 1, 1, 1]}, 64, {}),
}


def _images(batch: int, size: int) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", list(TINY))
def test_random_variant_embeds_a_batch_as_its_items(name):
    build, _, kwargs, size, _ = TINY[name]
    encoder = build({"weights": "random", "model_kwargs": kwargs, "img_size": size})
    assert encoder.random_init and "random init" in encoder.label
    assert encoder.weights_digest == "random-init:0"
    assert encoder.preprocessing.image_size == size
    assert encoder.preprocessing.mean == (0.485, 0.456, 0.406)
    assert encoder.preprocessing.std == (0.229, 0.224, 0.225)
    x = _images(3, size)
    with torch.no_grad():
        batch = encoder.model(x)
        alone = torch.cat([encoder.model(x[i : i + 1]) for i in range(3)])
    assert batch.shape == (3, encoder.embed_dim) and torch.isfinite(batch).all()
    torch.testing.assert_close(alone, batch, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", list(TINY))
def test_local_checkpoint_loads_through_timm_strictly(name, tmp_path):
    build, model_name, kwargs, size, size_kwargs = TINY[name]
    torch.manual_seed(2)
    reference = timm.create_model(model_name, pretrained=False, num_classes=0, **kwargs, **size_kwargs).eval()
    path = tmp_path / "weights.pth"
    torch.save(reference.state_dict(), path)
    encoder = build({"checkpoint": str(path), "model_kwargs": kwargs, "img_size": size})
    assert not encoder.random_init
    assert encoder.weights_digest == hashlib.sha256(path.read_bytes()).hexdigest()
    x = _images(2, size)
    with torch.no_grad():
        torch.testing.assert_close(encoder.model(x), reference(x), rtol=0, atol=0)
    broken = dict(reference.state_dict())
    broken.pop(next(iter(broken)))
    torch.save(broken, path)
    with pytest.raises(UserError, match="Missing key") as err:
        build({"checkpoint": str(path), "model_kwargs": kwargs, "img_size": size})
    assert str(path) in str(err.value)


@pytest.mark.parametrize("name", list(TINY))
def test_missing_weights_never_fall_back_to_random(name, tmp_path):
    build, model_name, *_ = TINY[name]
    with pytest.raises(WeightsNotFoundError, match=f"timm/{model_name}") as err:
        build({"cache_dir": str(tmp_path)})
    assert str(tmp_path) in str(err.value) and "checkpoint" in str(err.value)
    with pytest.raises(WeightsNotFoundError, match="file not found"):
        build({"checkpoint": str(tmp_path / "nope.safetensors")})


def test_default_architectures_on_the_meta_device():
    with torch.device("meta"):
        dino = timm.create_model("vit_small_patch14_dinov2.lvd142m", num_classes=0, img_size=224)
        hiera = timm.create_model("sam2_hiera_tiny.fb_r896", num_classes=0)
        x = torch.zeros(1, 3, 224, 224)
        assert dino(x).shape == (1, 384)
        assert hiera(x).shape == (1, 768)


@pytest.mark.parametrize("wrapper", ["teacher", "student", "state_dict"])
def test_an_original_dino_or_ibot_checkpoint_loads_its_backbone(wrapper, tmp_path):
    _, model_name, kwargs, size, size_kwargs = TINY["dino-vit"]
    torch.manual_seed(4)
    reference = timm.create_model(model_name, pretrained=False, num_classes=0, **kwargs, **size_kwargs).eval()
    # DINO / iBOT save the teacher and student as MultiCropWrapper(backbone, head) under DDP
    state = {f"module.backbone.{key}": value for key, value in reference.state_dict().items()}
    state["module.head.mlp.0.weight"] = torch.zeros(4, 32)
    path = tmp_path / "checkpoint.pth"
    torch.save({wrapper: state, "epoch": 100}, path)
    encoder = build_dino_vit({"checkpoint": str(path), "model_kwargs": kwargs, "img_size": size})
    x = _images(2, size)
    with torch.no_grad():
        torch.testing.assert_close(encoder.model(x), reference(x), rtol=0, atol=0)
    state.pop("module.backbone.cls_token")
    torch.save({wrapper: state}, path)
    with pytest.raises(UserError, match="no ViT backbone found"):
        build_dino_vit({"checkpoint": str(path), "model_kwargs": kwargs, "img_size": size})
    state["module.backbone.cls_token"] = reference.cls_token.detach().clone()
    state.pop("module.backbone.norm.weight")
    torch.save({wrapper: state}, path)
    with pytest.raises(UserError, match=r"Missing key.*norm\.weight") as err:
        build_dino_vit({"checkpoint": str(path), "model_kwargs": kwargs, "img_size": size})
    assert str(path) in str(err.value)
