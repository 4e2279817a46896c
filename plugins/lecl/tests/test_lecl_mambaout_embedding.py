"""MambaOut's embedding: pooled + head.norm by default (the public code's), timm's pre-logits on request; the
frozen encoder, the pretraining projector and the checkpoint between them agree."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import timm
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from clear_bench_lecl.backbones import build_backbone
from clear_bench_lecl.checkpoint import load_encoder_checkpoint, save_encoder_checkpoint
from clear_bench_lecl.pretrain import pretrainer_specs
from clear_bench_lecl.pretrain.config import load_config
from clear_bench_lecl.pretrain.train import build_model
from lecl_pretrain_helpers import TOY_SOURCE, tiny_config

from clear_bench.errors import ConfigError
from clear_bench.registry import load_registry
from clear_bench.specs import Preprocessing

TINY = {"dims": [8, 16, 24, 32], "depths": [1, 1, 1, 1]}


@pytest.fixture(scope="module")
def femto() -> timm.models.MambaOut:
    """timm's own mambaout_femto (full size), random weights."""
    torch.manual_seed(0)
    return timm.create_model("mambaout_femto", pretrained=False, num_classes=0).eval()


def test_pooled_is_mean_over_space_then_head_norm_of_timms_model(femto) -> None:
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    ours = build_backbone("mambaout_femto", img_size=64).eval()
    result = ours.load_state_dict(femto.state_dict(), strict=False)
    assert not result.missing_keys
    assert sorted(result.unexpected_keys) == sorted(k for k in femto.state_dict() if ".pre_logits." in k)
    with torch.no_grad():
        features = femto.forward_features(x)  # [B, H, W, C]: timm's MambaOut is channels-last
        expected = femto.head.norm(features.mean(dim=(1, 2)))
        got = ours(x)
    assert ours.embed_dim == 288 and got.shape == (2, 288)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_pre_logits_is_timms_forward_head_pre_logits(femto) -> None:
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    ours = build_backbone("mambaout_femto", img_size=64, embedding="pre-logits").eval()
    ours.load_state_dict(femto.state_dict(), strict=True)
    with torch.no_grad():
        expected = femto.forward_head(femto.forward_features(x), pre_logits=True)
        got = ours(x)
    assert ours.embed_dim == 1152 and got.shape == (2, 1152)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_the_encoder_option_builds_either_embedding_and_records_it() -> None:
    spec = load_registry().encoder("lecl-mambaout")
    assert spec.options["embedding"].default == "pooled"
    base = {"weights": "random", "img_size": 32, "arch_kwargs": TINY}
    pooled = spec.build(base)
    pre_logits = spec.build({**base, "embedding": "pre-logits"})
    assert (pooled.embed_dim, pre_logits.embed_dim) == (32, 128)
    assert pooled.options["embedding"] == "pooled" and pre_logits.options["embedding"] == "pre-logits"
    with torch.no_grad():
        assert pooled.model(torch.zeros(1, 3, 32, 32)).shape == (1, 32)


def test_a_bad_embedding_names_the_option() -> None:
    from clear_bench.cli import main as cli_main

    with pytest.raises(ConfigError, match=r"option 'arch_kwargs' sets 'embedding'; use option 'embedding'"):
        load_registry().encoder("lecl-mambaout").build(
            {"weights": "random", "img_size": 32, "arch_kwargs": {**TINY, "embedding": "pooled"}})
    assert cli_main(["check-encoder", "lecl-mambaout", "--option", "weights=random",
                     "--option", "embedding=mean"]) != 0


def test_a_bad_recipe_embedding_names_the_key(tmp_path: Path) -> None:
    mambaout = {"arch": "mambaout_femto", "arch_kwargs": TINY}
    expected = r"model\.embedding: expected one of pooled, pre-logits, got 'mean'"
    with pytest.raises(ConfigError, match=expected):
        load_config(tiny_config(tmp_path, "bad", model={**mambaout, "embedding": "mean"}))
    with pytest.raises(ConfigError, match=r"model\.embedding: only for mambaout archs"):
        load_config(tiny_config(tmp_path, "vit", model={"embedding": "pooled"}))
    with pytest.raises(ConfigError, match=r"model\.embedding: 'pooled' contradicts model\.arch_kwargs"):
        both = {"arch": "mambaout_femto", "embedding": "pooled",
                "arch_kwargs": {**TINY, "embedding": "pre-logits"}}
        load_config(tiny_config(tmp_path, "both", model=both))


@pytest.mark.parametrize(("embedding", "width"), [(None, 32), ("pre-logits", 128)])
def test_the_projector_sees_the_chosen_embedding(tmp_path: Path, embedding: str | None, width: int) -> None:
    model = {"arch": "mambaout_femto", "arch_kwargs": TINY}
    if embedding:
        model["embedding"] = embedding
    moco = build_model(load_config(tiny_config(tmp_path, model=model)))
    assert moco.backbone.embed_dim == width
    assert moco.projector[0].in_features == width and moco.momentum_projector[0].in_features == width
    assert any(k.startswith("head.pre_logits.") for k in moco.backbone.state_dict()) == (width == 128)


def test_a_pretrained_mambaout_loads_into_the_encoder_with_its_embedding(tmp_path: Path) -> None:
    (spec,) = pretrainer_specs()
    recipe = tiny_config(tmp_path, "mambaout", model={"arch": "mambaout_femto", "arch_kwargs": TINY},
                         optim={"epochs": 1, "batch_size": 16, "base_lr": 1.0e-3, "warmup_epochs": 0.5})
    path = spec.run(recipe, tmp_path / "out", options={"threads": 1, "max_steps": 1})
    if path is None:  # max_steps stopped the run before its end: finish it
        path = spec.run(recipe, tmp_path / "out", resume=True, options={"threads": 1})
    assert path is not None
    module, meta = load_encoder_checkpoint(path)
    assert meta["arch_kwargs"]["embedding"] == "pooled" and module.embed_dim == 32

    encoders = load_registry([TOY_SOURCE]).encoder("lecl-mambaout")
    encoder = encoders.build({"checkpoint": str(path)})
    assert encoder.embed_dim == 32 and encoder.options["embedding"] == "pooled"
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(encoder.model(x), module(x), rtol=0, atol=0)
    with pytest.raises(ConfigError, match=r"option 'embedding' is 'pre-logits'.*holds no MLP head"):
        encoders.build({"checkpoint": str(path), "embedding": "pre-logits"})


def test_a_pre_logits_checkpoint_embeds_either_way(tmp_path: Path) -> None:
    """Written before the option existed (no ``embedding`` recorded): pre-logits, its pooled features too."""
    torch.manual_seed(0)
    model = build_backbone("mambaout_femto", img_size=32, embedding="pre-logits", **TINY).eval()
    path = tmp_path / "old.pt"
    save_encoder_checkpoint(path, arch="mambaout_femto",
                            arch_kwargs={"img_size": 32, "embedding": "pre-logits", **TINY},
                            state_dict=model.state_dict(), preprocessing=Preprocessing(image_size=32),
                            config={})
    legacy = torch.load(path, weights_only=True)
    del legacy["arch_kwargs"]["embedding"]
    torch.save(legacy, path)

    spec = load_registry().encoder("lecl-mambaout")
    as_trained = spec.build({"checkpoint": str(path), "embedding": "pre-logits"})
    pooled = spec.build({"checkpoint": str(path)})
    assert (as_trained.embed_dim, pooled.embed_dim) == (128, 32)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(as_trained.model(x), model(x), rtol=0, atol=0)
        expected = model.head.norm(model.forward_features(x).mean(dim=(1, 2)))
        torch.testing.assert_close(pooled.model(x), expected, rtol=0, atol=0)
