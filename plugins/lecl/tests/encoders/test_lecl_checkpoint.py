"""The LeCL encoder checkpoint: atomic write, strict load, clear errors naming the file."""

from __future__ import annotations

import hashlib

import pytest
import torch
from clear_bench_lecl.backbones import build_backbone
from clear_bench_lecl.checkpoint import (
    FORMAT,
    CheckpointError,
    load_encoder_checkpoint,
    save_encoder_checkpoint,
)

from clear_bench.errors import UserError, WeightsNotFoundError
from clear_bench.specs import Preprocessing

PREP = Preprocessing(image_size=32, mean=(0.2, 0.2, 0.2), std=(0.3, 0.3, 0.3))


def _save(path, arch, kwargs, state_dict=None, config=None):
    model = build_backbone(arch, **kwargs)
    state_dict = model.state_dict() if state_dict is None else state_dict
    digest = save_encoder_checkpoint(
        path, arch=arch, arch_kwargs=kwargs, state_dict=state_dict,
        preprocessing=PREP, config=config or {"epochs": 2, "lr": 1e-3, "lambda": 0.5, "views": (1, 2)},
    )
    return model.eval(), digest


def test_saved_checkpoint_loads_strictly_and_embeds_identically(tmp_path, tiny_backbone):
    arch, kwargs = tiny_backbone
    torch.manual_seed(0)
    path = tmp_path / "enc" / "encoder.pt"
    model, digest = _save(path, arch, kwargs)
    loaded, meta = load_encoder_checkpoint(path)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    assert not loaded.training
    assert loaded.embed_dim == model.embed_dim
    assert digest == meta["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert meta["arch"] == arch and meta["format"] == FORMAT and meta["format_version"] == 1
    assert meta["preprocessing"]["image_size"] == 32 and meta["preprocessing"]["mean"] == [0.2, 0.2, 0.2]
    assert meta["config"]["epochs"] == 2 and len(meta["fingerprint"]) == 16
    assert "state_dict" not in meta
    assert [p.name for p in path.parent.iterdir()] == ["encoder.pt"]  # no temp file left behind


def test_file_holds_only_safe_types(tmp_path):
    path = tmp_path / "e.pt"
    _save(path, "vmamba_micro", dict(img_size=32, dims=8, depths=(1, 1, 1, 1)))
    payload = torch.load(path, weights_only=True)
    assert set(payload) == {"format", "format_version", "arch", "arch_kwargs", "state_dict", "preprocessing",
                            "config", "fingerprint", "clear_bench_version"}


def test_fingerprint_follows_the_config(tmp_path):
    kwargs = dict(img_size=32, dims=8, depths=(1, 1, 1, 1))
    _save(tmp_path / "a.pt", "vmamba_micro", kwargs, config={"lr": 1e-3})
    _save(tmp_path / "b.pt", "vmamba_micro", kwargs, config={"lr": 2e-3})
    _save(tmp_path / "c.pt", "vmamba_micro", kwargs, config={"lr": 1e-3})
    prints = [load_encoder_checkpoint(tmp_path / f"{n}.pt")[1]["fingerprint"] for n in "abc"]
    assert prints[0] != prints[1] and prints[0] == prints[2]


def test_missing_key_fails_naming_file_and_key(tmp_path):
    kwargs = dict(img_size=32, embed_dim=32, depth=1, num_heads=2)
    state = build_backbone("vit_small_patch16", **kwargs).state_dict()
    del state["cls_token"]
    path = tmp_path / "missing.pt"
    _save(path, "vit_small_patch16", kwargs, state_dict=state)
    with pytest.raises(CheckpointError, match=r"missing keys \[cls_token\]; unexpected keys none") as err:
        load_encoder_checkpoint(path)
    assert str(path) in str(err.value)
    assert isinstance(err.value, UserError)


def test_extra_key_fails_naming_file_and_key(tmp_path):
    kwargs = dict(img_size=32, dims=(8, 16, 24, 32), depths=(1, 1, 1, 1))
    state = build_backbone("mambaout_femto", **kwargs).state_dict()
    state["projector.weight"] = torch.zeros(2, 2)
    path = tmp_path / "extra.pt"
    _save(path, "mambaout_femto", kwargs, state_dict=state)
    expected = r"missing keys none; unexpected keys \[projector\.weight\]"
    with pytest.raises(CheckpointError, match=expected) as err:
        load_encoder_checkpoint(path)
    assert str(path) in str(err.value)


def test_shape_mismatch_fails_naming_file(tmp_path):
    small = dict(img_size=32, dims=8, depths=(1, 1, 1, 1))
    state = build_backbone("vmamba_micro", **{**small, "dims": 16}).state_dict()
    path = tmp_path / "shape.pt"
    _save(path, "vmamba_micro", small, state_dict=state)
    with pytest.raises(CheckpointError, match="size mismatch") as err:
        load_encoder_checkpoint(path)
    assert str(path) in str(err.value)


def test_missing_file_says_how_to_get_one(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="clear-bench pretrain lecl") as err:
        load_encoder_checkpoint(tmp_path / "nope.pt")
    assert "nope.pt" in str(err.value) and "weights: random" in str(err.value)


def test_foreign_or_corrupt_files_are_rejected(tmp_path):
    other = tmp_path / "other.pt"
    torch.save({"model": {}}, other)
    with pytest.raises(CheckpointError, match="field 'format'"):
        load_encoder_checkpoint(other)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"corrupt\.pt: not a readable encoder checkpoint"):
        load_encoder_checkpoint(corrupt)


def test_unsafe_metadata_is_refused_at_save_time(tmp_path):
    with pytest.raises(TypeError, match="plain values"):
        _save(tmp_path / "x.pt", "vmamba_micro", dict(img_size=32, dims=8, depths=(1, 1, 1, 1)),
              config={"optimizer": object()})
    assert not list(tmp_path.iterdir())
