"""``clear-bench import-checkpoint``: public CLEAR checkpoints (main_moco.py's key layout) as LeCL encoders.

The public models are built here from the public code's published structure: a timm VisionTransformer with
MoCo v3's ViT-Small settings whose ``head`` is the 3-layer projector, a momentum copy, a 2-layer predictor,
saved under DDP's ``module.`` prefix with the fields main_moco.py writes.
"""

from __future__ import annotations

import argparse
import copy
import re
from functools import partial
from pathlib import Path

import pytest
import timm
import torch
from clear_bench_lecl.backbones import build_backbone
from clear_bench_lecl.checkpoint import CheckpointError, load_encoder_checkpoint
from clear_bench_lecl.import_checkpoint import import_checkpoint
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from clear_bench.cli import main as cli_main
from clear_bench.registry import load_registry

IMG = 32
MLP_DIM, DIM = 64, 32


def _mlp(layers: int, width_in: int, hidden: int, width_out: int) -> nn.Sequential:
    """MoCo v3's MLP: Linear (no bias) + BN + ReLU between layers, a BN without affine at the end."""
    parts: list[nn.Module] = []
    for layer in range(layers):
        a = width_in if layer == 0 else hidden
        b = width_out if layer == layers - 1 else hidden
        parts.append(nn.Linear(a, b, bias=False))
        parts += [nn.BatchNorm1d(b), nn.ReLU(inplace=True)] if layer < layers - 1 else \
            [nn.BatchNorm1d(b, affine=False)]
    return nn.Sequential(*parts)


class PublicMoCo(nn.Module):
    """The attribute names of the public code's MoCo_ViT: base_encoder (projector as its head),
    momentum_encoder, predictor."""

    def __init__(self, base: nn.Module, width: int) -> None:
        super().__init__()
        base.head = _mlp(3, width, MLP_DIM, DIM)
        self.base_encoder = base
        self.momentum_encoder = copy.deepcopy(base)
        self.predictor = _mlp(2, DIM, MLP_DIM, DIM)


def public_vit_small() -> VisionTransformer:
    """The public vits.vit_small (MoCo v3's: 12 heads where timm's ViT-Small has 6), at a small size."""
    torch.manual_seed(0)
    model = VisionTransformer(img_size=IMG, patch_size=16, embed_dim=384, depth=12, num_heads=12, mlp_ratio=4,
                              qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6), num_classes=MLP_DIM)
    with torch.no_grad():  # non-trivial values everywhere (timm zero-initialises some)
        model.pos_embed.normal_(std=0.5)
        model.cls_token.normal_(std=0.5)
    return model


def save_public(path: Path, moco: nn.Module, arch: str | None, **extra: torch.Tensor) -> Path:
    state = {f"module.{key}": value for key, value in moco.state_dict().items()}
    state.update(extra)
    optimizer = torch.optim.AdamW(moco.parameters(), lr=1e-4, weight_decay=1e-6)
    payload = {"epoch": 100, "state_dict": state, "optimizer": optimizer.state_dict(),
               "scaler": {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5,
                          "growth_interval": 2000, "_growth_tracker": 0}}
    if arch is not None:
        payload["arch"] = arch
    torch.save(payload, path)
    return path


@pytest.fixture(scope="module")
def public_vit(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, VisionTransformer]:
    torch.set_num_threads(1)
    base = public_vit_small()
    moco = PublicMoCo(base, 384).eval()
    path = tmp_path_factory.mktemp("public") / "vit_small-moco-lecl-1-exp-ps-checkpoint_0100.pth.tar"
    return save_public(path, moco, "vit_small"), base


def public_features(base: VisionTransformer, x: torch.Tensor) -> torch.Tensor:
    """What the public code embeds: the class token before the projector (its head)."""
    return base.forward_head(base.forward_features(x), pre_logits=True)


def test_a_public_vit_imports_strictly_and_gives_identical_features(
        public_vit: tuple[Path, VisionTransformer], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    path, base = public_vit
    out = tmp_path / "imported.pt"
    assert cli_main(["import-checkpoint", str(path), "-o", str(out)]) == 0
    assert "lecl-vit" in capsys.readouterr().out
    _, meta = load_encoder_checkpoint(out)
    assert meta["arch"] == "vit_small_patch16" and meta["arch_kwargs"]["num_heads"] == 12
    assert meta["config"]["public_arch"] == "vit_small" and meta["config"]["epoch"] == 100
    assert meta["preprocessing"]["image_size"] == IMG

    encoder = load_registry([]).encoder("lecl-vit").build({"checkpoint": str(out)})
    assert tuple(encoder.preprocessing.mean) == (0.485, 0.456, 0.406) and encoder.embed_dim == 384
    x = torch.randn(3, 3, IMG, IMG)
    with torch.no_grad():
        theirs, ours = public_features(base, x), encoder.model(x)
    assert torch.equal(ours, theirs)
    # timm's own ViT-Small (6 heads) with the same weights would embed differently: the heads matter
    sixes = build_backbone("vit_small_patch16", img_size=IMG).eval()
    sixes.load_state_dict(encoder.model.state_dict())
    with torch.no_grad():
        assert not torch.allclose(sixes(x), theirs, atol=1e-3)


def test_the_bare_state_dict_of_convert_to_deit_imports_too(
        public_vit: tuple[Path, VisionTransformer], tmp_path: Path) -> None:
    path, base = public_vit
    state = torch.load(path, weights_only=True)["state_dict"]
    bare = {k[len("module.base_encoder."):]: v for k, v in state.items()
            if k.startswith("module.base_encoder.") and not k.startswith("module.base_encoder.head")}
    torch.save(bare, tmp_path / "deit.pth")
    with pytest.raises(CheckpointError, match="no field 'arch'; give --arch"):
        import_checkpoint(tmp_path / "deit.pth")
    out = import_checkpoint(tmp_path / "deit.pth", arch="vit_small")
    assert out == tmp_path / "deit-encoder.pt"
    model, _ = load_encoder_checkpoint(out)
    x = torch.randn(2, 3, IMG, IMG)
    with torch.no_grad():
        assert torch.equal(model(x), public_features(base, x))


def test_unmapped_keys_are_errors_naming_them(public_vit: tuple[Path, VisionTransformer],
                                              tmp_path: Path) -> None:
    path, _ = public_vit
    payload = torch.load(path, weights_only=True)
    outside = dict(payload, state_dict={**payload["state_dict"], "module.queue": torch.zeros(4)})
    torch.save(outside, tmp_path / "queue.pth.tar")
    with pytest.raises(CheckpointError, match=re.escape("unmapped key(s) [module.queue]")):
        import_checkpoint(tmp_path / "queue.pth.tar")
    inside = dict(payload, state_dict={**payload["state_dict"],
                                       "module.base_encoder.dist_token": torch.zeros(1, 1, 384)})
    torch.save(inside, tmp_path / "dist.pth.tar")
    with pytest.raises(CheckpointError, match=re.escape("unmapped key(s) [dist_token]")):
        import_checkpoint(tmp_path / "dist.pth.tar")
    missing = dict(payload, state_dict={k: v for k, v in payload["state_dict"].items()
                                        if k != "module.base_encoder.norm.weight"})
    torch.save(missing, tmp_path / "short.pth.tar")
    with pytest.raises(CheckpointError, match=re.escape("misses [norm.weight]")):
        import_checkpoint(tmp_path / "short.pth.tar")
    assert not list(tmp_path.glob("*-encoder.pt"))


def test_an_executable_pickle_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "with-args.pth.tar"
    torch.save({"args": argparse.Namespace(arch="vit_small"), "state_dict": {}}, path)
    with pytest.raises(CheckpointError, match=r"refused.*executable Python objects.*argparse\.Namespace"):
        import_checkpoint(path)
    assert cli_main(["import-checkpoint", str(path)]) == 2
    err = capsys.readouterr().err
    assert "executable Python objects" in err and "weights_only=False" not in err


def _original_mambaout_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm's MambaOut names -> the original MambaOut's (yuweihao/MambaOut), which the public code trains."""
    out = {}
    for key, value in state.items():
        key = key.replace("stem.", "downsample_layers.0.")
        key = re.sub(r"stages\.(\d+)\.downsample\.", r"downsample_layers.\1.", key)
        key = re.sub(r"stages\.(\d+)\.blocks\.(\d+)\.", r"stages.\1.\2.", key)
        out[key.replace("head.norm.", "norm.")] = value
    return out


def test_a_public_mambaout_maps_through_timms_filter(tmp_path: Path) -> None:
    """The public MambaOut embeds norm(mean over space) and carries its projector as ``head``."""
    torch.manual_seed(0)
    timm_model = timm.create_model("mambaout_femto", num_classes=0).eval()
    timm_model.head.pre_logits = nn.Identity()  # the original has no MLP head left: the projector replaced it
    original = _original_mambaout_names(timm_model.state_dict())
    assert "downsample_layers.0.conv1.weight" in original and "norm.weight" in original

    class Base(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = _mlp(3, 288, MLP_DIM, DIM)

    base, predictor = Base(), _mlp(2, DIM, MLP_DIM, DIM)
    public_state = {**{f"module.base_encoder.{k}": v for k, v in original.items()},
                    **{f"module.base_encoder.{k}": v for k, v in base.state_dict().items()},
                    **{f"module.momentum_encoder.{k}": v for k, v in original.items()},
                    **{f"module.predictor.{k}": v for k, v in predictor.state_dict().items()}}
    path = tmp_path / "mambaout-moco-lecl-1-exp-ps-checkpoint_0001.pth.tar"
    torch.save({"epoch": 1, "arch": "mambaout", "state_dict": public_state}, path)

    ours = build_backbone("mambaout_femto")
    embeds_pre_logits = any(key.startswith("head.pre_logits.") for key in ours.state_dict())
    if embeds_pre_logits:  # a backbone that embeds through head.pre_logits cannot hold the public weights
        expected = r"misses \[head\.pre_logits.*pooled, normalised"
        with pytest.raises(CheckpointError, match=expected) as info:
            import_checkpoint(path, arch="mambaout_femto")
        assert "unmapped key(s) none" in str(info.value)  # every public key found its timm name
        return
    model, _ = load_encoder_checkpoint(import_checkpoint(path, arch="mambaout_femto"))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), timm_model(x))
