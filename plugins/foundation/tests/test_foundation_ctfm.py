"""CT-FM: a tiny MONAI SegResEncoder saved as its published safetensors + config.json loads back through
``local_dir``, embeds a synthetic-cohort CT in HU with CT-FM's scaling and crop, and conforms."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from clear_bench_foundation.ctfm import crop_foreground
from clear_bench_foundation.encoders import build_ct_fm
from monai.networks.nets.segresnet_ds import SegResEncoder
from safetensors.torch import save_file

from clear_bench.conformance import PROPERTIES, check_encoder, encoder_inputs
from clear_bench.errors import UnusableWeightsError, WeightsNotFoundError
from clear_bench.registry import load_registry
from clear_bench.specs import Preprocessing

TINY = {"spatial_dims": 3, "in_channels": 1, "init_filters": 4, "blocks_down": [1, 1, 1]}


def _save(folder, *, prefix: str = "") -> torch.nn.Module:
    torch.manual_seed(5)
    model = SegResEncoder(**{**TINY, "blocks_down": tuple(TINY["blocks_down"])}).eval()
    folder.mkdir(parents=True, exist_ok=True)
    state = {prefix + key: value.contiguous() for key, value in model.state_dict().items()}
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(TINY), encoding="utf-8")
    return model


def test_a_saved_encoder_loads_from_its_folder_and_embeds_a_ct_in_hu(tmp_path, ct_scan):
    folder = tmp_path / "ct-fm"
    model = _save(folder)
    encoder = build_ct_fm({"local_dir": str(folder), "image_size": 32, "depth": 16})
    assert not encoder.random_init and encoder.input_kind == "volume" and encoder.embed_dim == 16
    assert encoder.weights_digest == hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    assert encoder.preprocessing == Preprocessing(image_size=32, input="hu", channels=1, mean=(0.0,),
                                                  std=(1.0,), depth=16)
    images, _ = encoder_inputs(encoder, ct_scan)
    x = torch.from_numpy(images)
    assert x.shape == (1, 1, 16, 32, 32) and float(x.min()) < -500  # Hounsfield units, air included
    with torch.no_grad():
        out = encoder.model(x)
        scaled = ((x[0] + 1024) / 3072).clamp(0, 1)
        expected = model(crop_foreground(scaled)[None])[-1].mean(dim=(2, 3, 4))
    assert out.shape == (1, 16) and torch.isfinite(out).all()
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)


def test_the_foreground_crop_keeps_the_body():
    volume = torch.zeros(1, 6, 8, 8)
    volume[0, 1:4, 2:5, 3:7] = 0.5
    assert crop_foreground(volume).shape == (1, 3, 3, 4)
    assert crop_foreground(torch.zeros(1, 2, 3, 3)).shape == (1, 2, 3, 3)


def test_a_full_segresnet_checkpoint_gives_its_encoder(tmp_path, ct_scan):
    folder = tmp_path / "segresnet"
    _save(folder, prefix="encoder.")
    report = check_encoder(load_registry().encoder("ct-fm"),
                           {"local_dir": str(folder), "image_size": 32, "depth": 16}, scan=ct_scan,
                           declared=Preprocessing(image_size=32, input="hu", channels=1, mean=(0.0,),
                                                  std=(1.0,), depth=16))
    assert report.passed, "\n".join(report.lines())
    assert [r.name for r in report.results] == list(PROPERTIES)


def test_missing_or_mismatched_weights_fail_clearly(tmp_path):
    with pytest.raises(WeightsNotFoundError) as err:
        build_ct_fm({"cache_dir": str(tmp_path)})
    assert "project-lighter/ct_fm_feature_extractor" in str(err.value) and "HF_HUB_OFFLINE" in str(err.value)
    folder = tmp_path / "ct-fm"
    _save(folder)
    config = dict(TINY, init_filters=8)
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnusableWeightsError, match="does not match CT-FM's SegResEncoder"):
        build_ct_fm({"local_dir": str(folder)})
    (folder / "model.safetensors").unlink()
    with pytest.raises(WeightsNotFoundError, match=r"model\.safetensors"):
        build_ct_fm({"local_dir": str(folder)})


def test_the_published_architecture_has_ct_fm_s_size():
    with torch.device("meta"):
        model = SegResEncoder(spatial_dims=3, in_channels=1, init_filters=32, blocks_down=(1, 2, 2, 4, 4))
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 1) == 77.8
