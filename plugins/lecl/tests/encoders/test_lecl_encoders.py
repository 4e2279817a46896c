"""The lecl-* encoder specs: registration, weight rules (checkpoint or explicit random), labels, digests."""

from __future__ import annotations

import hashlib

import pytest
import torch
from clear_bench_lecl.backbones import build_backbone
from clear_bench_lecl.checkpoint import save_encoder_checkpoint
from clear_bench_lecl.encoders import encoder_specs

from clear_bench.errors import ConfigError, WeightsNotFoundError
from clear_bench.registry import load_registry
from clear_bench.specs import Preprocessing

NAMES = ("lecl-vit", "lecl-mambaout", "lecl-vmamba")
TINY = {
    "lecl-vit": ("vit_conv_small", dict(embed_dim=32, depth=1, num_heads=2)),
    "lecl-mambaout": ("mambaout_femto", dict(dims=(8, 16, 24, 32), depths=(1, 1, 1, 1))),
    "lecl-vmamba": ("vmamba_micro", dict(dims=16, depths=(1, 1, 1, 1))),
}


def _spec(name):
    return next(spec for spec in encoder_specs() if spec.name == name)


def test_encoders_are_registered_by_the_lecl_distribution():
    registry = load_registry()
    for name in NAMES:
        assert name in registry.encoders, registry.failures
        entry = registry.encoders[name]
        assert entry.provider.distribution == "clear-bench-lecl"
        assert entry.spec.input_kind == "slice"
        assert {"weights", "checkpoint", "arch", "img_size", "seed"} <= set(entry.spec.options)
        assert entry.spec.options["weights"].default == "checkpoint"


@pytest.mark.parametrize("name", NAMES)
def test_random_weights_only_on_request_and_labelled(name):
    arch, kwargs = TINY[name]
    options = {"weights": "random", "arch": arch, "arch_kwargs": kwargs, "img_size": 32, "seed": 7}
    encoder = _spec(name).build(options)
    again = _spec(name).build(options)
    assert encoder.random_init and "random init" in encoder.label
    assert encoder.weights_digest == "random-init:7"
    assert encoder.preprocessing.image_size == 32 and encoder.preprocessing.channels == 3
    assert encoder.options["arch"] == arch and "checkpoint" not in encoder.options
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        out = encoder.model(x)
        torch.testing.assert_close(again.model(x), out)  # the seed fixes the weights
    assert out.shape == (3, encoder.embed_dim) and torch.isfinite(out).all()
    assert not any(p.requires_grad for p in encoder.model.parameters())


@pytest.mark.parametrize("name", NAMES)
def test_no_checkpoint_is_an_error_not_random_weights(name, tmp_path):
    with pytest.raises(WeightsNotFoundError, match="weights: random"):
        _spec(name).build({})
    missing = tmp_path / "nowhere" / "encoder.pt"
    with pytest.raises(WeightsNotFoundError, match="clear-bench pretrain lecl") as err:
        _spec(name).build({"checkpoint": str(missing)})
    assert str(missing) in str(err.value)


def test_checkpoint_encoder_uses_its_weights_preprocessing_and_digest(tmp_path):
    arch, kwargs = TINY["lecl-vmamba"]
    kwargs = {**kwargs, "img_size": 32}
    torch.manual_seed(0)
    model = build_backbone(arch, **kwargs).eval()
    path = tmp_path / "lecl.pt"
    prep = Preprocessing(image_size=32, mean=(0.1, 0.1, 0.1), std=(0.2, 0.2, 0.2))
    save_encoder_checkpoint(path, arch=arch, arch_kwargs=kwargs, state_dict=model.state_dict(),
                            preprocessing=prep, config={"epochs": 1})
    encoder = _spec("lecl-vmamba").build({"checkpoint": str(path)})
    assert not encoder.random_init and encoder.label == "lecl-vmamba"
    assert encoder.weights_digest == hashlib.sha256(path.read_bytes()).hexdigest()
    assert encoder.preprocessing == prep
    assert encoder.embed_dim == model.embed_dim == 128
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(encoder.model(x), model(x), rtol=0, atol=0)


def test_checkpoint_of_another_family_is_refused(tmp_path):
    arch, kwargs = TINY["lecl-mambaout"]
    path = tmp_path / "mambaout.pt"
    save_encoder_checkpoint(path, arch=arch, arch_kwargs={**kwargs, "img_size": 32},
                            state_dict=build_backbone(arch, img_size=32, **kwargs).state_dict(),
                            preprocessing=Preprocessing(image_size=32), config={})
    with pytest.raises(ConfigError, match="holds arch 'mambaout_femto'"):
        _spec("lecl-vit").build({"checkpoint": str(path)})
