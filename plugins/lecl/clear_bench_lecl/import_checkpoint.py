"""``clear-bench import-checkpoint``: a public CLEAR checkpoint as a LeCL encoder checkpoint.

    clear-bench import-checkpoint vit_conv_base-moco-lecl-1-exp-ps-checkpoint_0100.pth.tar [-o OUT] [--arch A]

Reads, with ``torch.load(weights_only=True)`` only, either the public code's training checkpoint (``epoch``,
``arch``, ``state_dict`` with ``module.base_encoder.*``, ``module.momentum_encoder.*`` and
``module.predictor.*``) or the bare backbone state dict its ``convert_to_deit.py`` writes. The base encoder
is kept; its projector (``head.*``; ``classifier.head.*`` for VMamba), the momentum encoder and the predictor
are dropped. ViT weights load strictly as they are; MambaOut's go through timm's
``mambaout.checkpoint_filter_fn`` (the original MambaOut's names to timm's) and then load strictly. A key
left unmapped, or one the backbone misses, is an error naming the keys. The result carries the public
code's preprocessing: 3 channels, ImageNet mean and std, the ViT's trained size (from its position
embedding; 224 otherwise).

This module is imported when the registry is loaded: only the standard library and the core's specs at
module level.
"""

from __future__ import annotations

import argparse
import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clear_bench.checkpoints import load_tensors
from clear_bench.specs import CommandSpec

if TYPE_CHECKING:
    from torch import Tensor, nn

_PREFIXES = ("module.", "")
_DROPPED = ("momentum_encoder.", "predictor.")
_PROJECTORS = {"vit": ("head.",), "mambaout": ("head.",), "vmamba": ("classifier.head.",)}
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def read_public_checkpoint(path: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The state dict of a public checkpoint and its other plain fields (``arch``, ``epoch``...).

    Only ``torch.load(weights_only=True)``: a file that needs arbitrary Python objects (an executable
    pickle) is refused with a :class:`~clear_bench_lecl.checkpoint.CheckpointError` naming it.
    """

    import torch

    from clear_bench_lecl.checkpoint import CheckpointError

    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    payload = load_tensors(path, what="public CLEAR checkpoint", error=CheckpointError)
    if not isinstance(payload, Mapping):
        raise CheckpointError(f"{path}: expected a dict with 'state_dict', got {type(payload).__name__}")
    if "state_dict" in payload:
        state, meta = payload["state_dict"], {k: v for k, v in payload.items() if k != "state_dict"}
    else:  # convert_to_deit.py's output: the backbone's state dict alone
        state, meta = payload, {}
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: field 'state_dict' is not a mapping of names to tensors")
    return dict(state), meta


def base_encoder_state(state: Mapping[str, Tensor], family: str, path: Path) -> dict[str, Tensor]:
    """The base encoder's weights without its projector; momentum encoder and predictor dropped. A key
    outside these (with or without DDP's ``module.``) is a :class:`CheckpointError` naming it."""
    from clear_bench_lecl.checkpoint import CheckpointError, _short

    projector = _PROJECTORS[family]
    wrapped = any(key.startswith(p + "base_encoder.") for key in state for p in _PREFIXES)
    kept: dict[str, Tensor] = {}
    unmapped: list[str] = []
    for key, value in state.items():
        inner = key[len("module."):] if key.startswith("module.") else key
        if wrapped:
            if inner.startswith(_DROPPED):
                continue
            if not inner.startswith("base_encoder."):
                unmapped.append(key)
                continue
            inner = inner[len("base_encoder."):]
        if inner.startswith(projector):
            continue
        kept[inner] = value
    if unmapped:
        raise CheckpointError(f"{path}: unmapped key(s) {_short(sorted(unmapped))}: neither the base "
                              "encoder, the momentum encoder nor the predictor")
    if not kept:
        raise CheckpointError(f"{path}: no base-encoder weights (expected module.base_encoder.* keys)")
    return kept


def resolve_arch(arch: str | None, meta: Mapping[str, Any], path: Path) -> tuple[str, dict[str, Any], str]:
    """``(our arch, its arch_kwargs, the name given)`` from ``--arch`` or the checkpoint's ``arch`` field:
    a public name (``vit_conv_base``, ``vit_small``, ``mambaout``...) or one of this project's archs."""
    from clear_bench_lecl.archs import ARCHS
    from clear_bench_lecl.checkpoint import CheckpointError
    from clear_bench_lecl.pretrain.seed_cli import SEED_ARCHS

    name = arch or meta.get("arch")
    if not isinstance(name, str) or not name:
        raise CheckpointError(f"{path}: no field 'arch'; give --arch (one of {', '.join(SEED_ARCHS)})")
    if name in SEED_ARCHS:
        ours, kwargs = SEED_ARCHS[name]
        return ours, dict(kwargs), name
    if name in ARCHS:
        return name, {}, name
    raise CheckpointError(f"{path}: arch {name!r} cannot be imported (public archs: {', '.join(SEED_ARCHS)}; "
                          f"this project's: {', '.join(ARCHS)})")


def import_checkpoint(path: str | Path, output: str | Path | None = None, *, arch: str | None = None) -> Path:
    """Convert the public checkpoint ``path`` into an encoder checkpoint at ``output`` (default: beside it,
    ``<name>-encoder.pt``); returns that path."""
    import torch

    from clear_bench.specs import Preprocessing
    from clear_bench_lecl.archs import family
    from clear_bench_lecl.checkpoint import save_encoder_checkpoint

    path = Path(path)
    state, meta = read_public_checkpoint(path)
    ours, kwargs, given = resolve_arch(arch, meta, path)
    kind = family(ours)
    weights = base_encoder_state(state, kind, path)
    img_size = _vit_img_size(weights, kwargs.get("patch_size", 16), path) if kind == "vit" else 224
    arch_kwargs = {"img_size": img_size, "in_chans": 3, **kwargs}
    model = _load_strictly(ours, arch_kwargs, weights, kind, path)
    out = Path(output) if output is not None else path.with_name(_stem(path) + "-encoder.pt")
    with torch.no_grad():
        state_dict = {key: value.clone() for key, value in model.state_dict().items()}
    epoch = meta.get("epoch")
    save_encoder_checkpoint(
        out, arch=ours, arch_kwargs=arch_kwargs, state_dict=state_dict,
        preprocessing=Preprocessing(image_size=img_size, input="windowed", channels=3, mean=_IMAGENET_MEAN,
                                    std=_IMAGENET_STD),
        config={"pretrainer": "clear-public", "imported_from": path.name, "source_sha256": _sha256(path),
                "public_arch": given, "epoch": epoch if isinstance(epoch, int) else None},
    )
    return out


def _load_strictly(arch: str, arch_kwargs: dict[str, Any], weights: dict[str, Tensor], kind: str,
                   path: Path) -> nn.Module:
    from clear_bench_lecl.backbones import build_backbone
    from clear_bench_lecl.checkpoint import CheckpointError, _short

    model = build_backbone(arch, **arch_kwargs)
    if kind == "mambaout":
        from timm.models.mambaout import checkpoint_filter_fn

        weights = checkpoint_filter_fn(weights, model)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    if missing or unexpected:
        hint = ""
        if kind == "mambaout" and any(key.startswith("head.pre_logits.") for key in missing):
            hint = (" (the public MambaOut embeds its pooled, normalised features: it has no "
                    "head.pre_logits; this build's backbone embeds through them)")
        raise CheckpointError(f"{path}: does not map onto {arch}: unmapped key(s) {_short(unexpected)}; "
                              f"key(s) the backbone misses {_short(missing)}{hint}")
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as exc:  # shape mismatches
        raise CheckpointError(f"{path}: does not map onto {arch}: {exc}") from exc
    return model.eval()


def _vit_img_size(weights: Mapping[str, Tensor], patch: int, path: Path) -> int:
    """The training size of a ViT from its position embedding ``[1, 1 + g * g, D]``."""
    import math

    from clear_bench_lecl.checkpoint import CheckpointError

    pos = weights.get("pos_embed")
    if pos is None or pos.dim() != 3:
        raise CheckpointError(f"{path}: no ViT position embedding (key module.base_encoder.pos_embed)")
    grid = math.isqrt(int(pos.shape[1]) - 1)
    if grid * grid != int(pos.shape[1]) - 1:
        raise CheckpointError(f"{path}: pos_embed has {pos.shape[1]} tokens, not 1 + a square grid")
    return grid * patch


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".pth.tar", ".pth", ".pt", ".tar"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Turn a public CLEAR checkpoint (main_moco.py's .pth.tar, or convert_to_deit.py's "
                          "state dict) into a LeCL encoder checkpoint for lecl-vit / lecl-mambaout / "
                          "lecl-vmamba (option checkpoint). Read with torch.load(weights_only=True) only.")
    parser.add_argument("checkpoint", type=Path, help="the public checkpoint")
    parser.add_argument("-o", "--output", type=Path, help="encoder checkpoint to write "
                        "(default: beside it, <name>-encoder.pt)")
    parser.add_argument("--arch", help="the public code's --arch (default: the checkpoint's 'arch' field), "
                        "or one of this project's archs")


def run(args: argparse.Namespace) -> int:
    from clear_bench_lecl.archs import family

    out = import_checkpoint(args.checkpoint, args.output, arch=args.arch)
    from clear_bench_lecl.checkpoint import read_encoder_checkpoint

    arch = read_encoder_checkpoint(out)["arch"]
    print(f"encoder checkpoint: {out} (arch {arch}; use it with lecl-{family(arch)}, option checkpoint)")
    return 0


IMPORT_COMMAND = CommandSpec(
    name="import-checkpoint", add_arguments=add_arguments, run=run,
    help="turn a public CLEAR checkpoint into a LeCL encoder checkpoint",
)
