"""RAD-DINO and MedSigLIP: tiny random models saved with ``save_pretrained`` load back through the plugin's
local-folder path, embed a synthetic-cohort CT as the published processor declares, and conform."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from clear_bench_foundation.encoders import build_medsiglip, build_rad_dino
from safetensors.torch import load_file, save_file
from transformers import Dinov2Config, Dinov2Model, SiglipConfig, SiglipModel

from clear_bench.conformance import PROPERTIES, check_encoder, encoder_inputs
from clear_bench.errors import ConfigError, UnusableWeightsError, WeightsNotFoundError
from clear_bench.registry import load_registry
from clear_bench.specs import Preprocessing

# the published processors' fields (microsoft/rad-dino, google/medsiglip-448), at a tiny size
PROCESSORS = {
    "rad-dino": {"image_processor_type": "BitImageProcessor", "do_resize": True,
                 "size": {"shortest_edge": 28}, "do_center_crop": True,
                 "crop_size": {"height": 28, "width": 28}, "do_rescale": True,
                 "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": [0.5307] * 3,
                 "image_std": [0.2583] * 3, "resample": 3},
    "medsiglip": {"image_processor_type": "SiglipImageProcessor", "do_resize": True,
                  "size": {"height": 32, "width": 32}, "do_rescale": True, "rescale_factor": 1 / 255,
                  "do_normalize": True, "image_mean": [0.5] * 3, "image_std": [0.5] * 3, "resample": 3},
}
DECLARED = {"rad-dino": Preprocessing(image_size=28, channels=3, mean=(0.5307,) * 3, std=(0.2583,) * 3),
            "medsiglip": Preprocessing(image_size=32, channels=3, mean=(0.5,) * 3, std=(0.5,) * 3)}
BUILD = {"rad-dino": build_rad_dino, "medsiglip": build_medsiglip}


def _tiny(name: str) -> torch.nn.Module:
    torch.manual_seed(3)
    if name == "rad-dino":
        return Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                        mlp_ratio=2, image_size=28, patch_size=14)).eval()
    # MedSigLIP is published as a full vision-text SigLIP model; the plugin reads its vision tower
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
              "image_size": 32, "patch_size": 8}
    text = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
            "vocab_size": 64, "max_position_embeddings": 16}
    return SiglipModel(SiglipConfig(vision_config=vision, text_config=text)).eval()


def _save(name: str, folder) -> torch.nn.Module:
    model = _tiny(name)
    model.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(PROCESSORS[name]), encoding="utf-8")
    return model


def _reference(name: str, model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        if name == "rad-dino":
            return model(pixel_values=x).last_hidden_state[:, 0].clone()  # CLS after the final layer norm
        features = model.get_image_features(pixel_values=x)
        return getattr(features, "pooler_output", features)


@pytest.mark.parametrize("name", list(BUILD))
def test_a_saved_model_loads_from_its_folder_and_embeds_a_ct(name, tmp_path, ct_scan):
    folder = tmp_path / name
    model = _save(name, folder)
    encoder = BUILD[name]({"local_dir": str(folder)})
    assert not encoder.random_init and encoder.input_kind == "slice"
    assert encoder.weights_digest == hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    assert encoder.preprocessing == DECLARED[name]
    assert encoder.embed_dim == 32
    images, _ = encoder_inputs(encoder, ct_scan, slices=2)
    x = torch.from_numpy(images)
    assert x.shape[1:] == (3, DECLARED[name].image_size, DECLARED[name].image_size)
    with torch.no_grad():
        out = encoder.model(x)
        again = encoder.model(x)
    assert out.shape == (len(x), 32) and torch.isfinite(out).all()
    torch.testing.assert_close(out, again, rtol=0, atol=0)
    torch.testing.assert_close(out, _reference(name, model, x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", list(BUILD))
def test_the_saved_model_conforms(name, tmp_path, ct_scan):
    folder = tmp_path / name
    _save(name, folder)
    spec = load_registry().encoder(name)
    report = check_encoder(spec, {"local_dir": str(folder)}, scan=ct_scan, slices=2, declared=DECLARED[name])
    assert report.passed, "\n".join(report.lines())
    assert [r.name for r in report.results] == list(PROPERTIES)
    random = check_encoder(spec, {"local_dir": str(folder), "weights": "random"}, scan=ct_scan, slices=1)
    assert random.passed and "random init" in random.label, "\n".join(random.lines())


@pytest.mark.parametrize("name", list(BUILD))
def test_missing_weights_fail_clearly_without_the_network(name, tmp_path):
    with pytest.raises(WeightsNotFoundError) as err:
        BUILD[name]({"cache_dir": str(tmp_path)})
    message = str(err.value)
    assert "HF_HUB_OFFLINE is set" in message and str(tmp_path) in message and "local_dir" in message
    folder = tmp_path / "saved"
    _save(name, folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(WeightsNotFoundError, match=f"no weights file in {folder}"):
        BUILD[name]({"local_dir": str(folder)})
    with pytest.raises(WeightsNotFoundError, match="folder not found"):
        BUILD[name]({"local_dir": str(tmp_path / "nowhere")})


def test_weights_of_another_architecture_are_refused(tmp_path):
    folder = tmp_path / "dino"
    _save("rad-dino", folder)
    with pytest.raises(ConfigError, match="field 'model_type' is 'dinov2'; medsiglip expects"):
        build_medsiglip({"local_dir": str(folder)})
    state = load_file(folder / "model.safetensors")
    state.pop("layernorm.weight")
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(UnusableWeightsError, match="do not match rad-dino's architecture: missing_keys"):
        build_rad_dino({"local_dir": str(folder)})
    config = json.loads((folder / "config.json").read_text())
    config["hidden_size"] = 48
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnusableWeightsError, match=f"{folder}: not a loadable rad-dino model"):
        build_rad_dino({"local_dir": str(folder)})


def test_a_model_that_needs_remote_code_is_never_loaded(tmp_path):
    folder = tmp_path / "remote"
    _save("rad-dino", folder)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "modeling_custom.CustomModel"}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "modeling_custom.py").write_text("raise SystemExit('remote code ran')\n")
    for weights in ("pretrained", "random"):
        with pytest.raises(UnusableWeightsError, match=r"field 'auto_map'.*trust_remote_code"):
            build_rad_dino({"local_dir": str(folder), "weights": weights})


def test_a_processor_with_a_non_square_size_is_a_config_error(tmp_path):
    folder = tmp_path / "sig"
    _save("medsiglip", folder)
    processor = dict(PROCESSORS["medsiglip"], size={"height": 32, "width": 48})
    (folder / "preprocessor_config.json").write_text(json.dumps(processor))
    with pytest.raises(ConfigError, match=r"preprocessor_config\.json: field 'size': expected a square size"):
        build_medsiglip({"local_dir": str(folder)})


def test_without_a_processor_file_the_published_normalisation_applies_at_the_config_size(tmp_path):
    folder = tmp_path / "dino"
    _save("rad-dino", folder)
    (folder / "preprocessor_config.json").unlink()
    encoder = build_rad_dino({"local_dir": str(folder)})
    assert encoder.preprocessing == Preprocessing(image_size=28, channels=3, mean=(0.5307,) * 3,
                                                  std=(0.2583,) * 3)


@pytest.mark.slow  # builds ViT-B/14 and embeds one 518 px image (about 10 s)
def test_the_published_rad_dino_architecture_is_built_for_random_weights():
    published = build_rad_dino({"weights": "random"})
    assert published.preprocessing == Preprocessing(image_size=518, channels=3, mean=(0.5307,) * 3,
                                                    std=(0.2583,) * 3)
    assert published.embed_dim == 768 and published.label == "rad-dino (random init)"
