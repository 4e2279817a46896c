"""The LeCL encoders: ViT, MambaOut and VMamba backbones from a LeCL checkpoint (or random init on request).

Weights come from an encoder checkpoint (``checkpoint: PATH``, written by ``clear-bench pretrain lecl``) and
are loaded strictly. Random initialisation happens only with ``weights: random``; such an encoder's
digest is ``random-init:<seed>`` and its label says "random init".

``lecl-mambaout`` embeds the pooled, normalised features by default (``embedding: pooled``: mean over
space, then timm's ``head.norm``, where the public CLEAR code attaches its projector), or timm's MLP head
output (``embedding: pre-logits``). ``lecl-vit`` takes ``pos_embed: learned | sincos`` (MoCo v3's fixed
table and init; the default of the ``vit_conv_*`` archs) for random init.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clear_bench.errors import ConfigError, WeightsNotFoundError
from clear_bench.specs import Encoder, EncoderSpec, Option, Preprocessing, resolve_options
from clear_bench_lecl.archs import (
    MAMBAOUT_ARCHS,
    MAMBAOUT_EMBEDDINGS,
    VIT_ARCHS,
    VIT_POS_EMBEDS,
    VMAMBA_ARCHS,
    family,
)

if TYPE_CHECKING:  # listing the specs imports no torch; building does
    from torch import nn

DEFAULT_MEAN = (0.5, 0.5, 0.5)
DEFAULT_STD = (0.5, 0.5, 0.5)
_FAMILIES = {
    "lecl-vit": ("vit", VIT_ARCHS, "vit_small_patch16", "ViT (timm; vit_conv_* = MoCo v3 conv stem)"),
    "lecl-mambaout": ("mambaout", MAMBAOUT_ARCHS, "mambaout_femto", "MambaOut (timm)"),
    "lecl-vmamba": ("vmamba", VMAMBA_ARCHS, "vmamba_tiny", "VMamba (SS2D cross-scan selective-scan blocks)"),
}


_FAMILY_OPTIONS = {
    "mambaout": {"embedding": Option(
        str, "pooled", "pooled (mean over space + head.norm, the public CLEAR code's embedding) or "
        "pre-logits (timm's MLP head, 4x wider; needs a checkpoint trained so, or random init)",
        choices=MAMBAOUT_EMBEDDINGS)},
    "vit": {"pos_embed": Option(
        str, None, "learned (timm) or sincos (MoCo v3's fixed 2D sin-cos table and init) for random init "
        "(default: sincos for vit_conv_*, learned otherwise); with a checkpoint: the checkpoint's",
        choices=VIT_POS_EMBEDS)},
}


def _options(archs: tuple[str, ...], default_arch: str, kind: str) -> dict[str, Option]:
    return {
        "weights": Option(str, "checkpoint", "'checkpoint' (load option `checkpoint`) or 'random' "
                          "(random init, labelled so)", choices=("checkpoint", "random")),
        "checkpoint": Option(Path, None, "LeCL encoder checkpoint written by `clear-bench pretrain lecl`"),
        "arch": Option(str, None, f"backbone (default {default_arch} for random init, else the checkpoint's)",
                       choices=archs),
        "arch_kwargs": Option(dict, {}, "overrides of the arch's defaults for random init (e.g. depth)"),
        "img_size": Option(int, None, "input size (default: the checkpoint's, 224 for random init)"),
        "seed": Option(int, 0, "seed of the random initialisation (weights: random)"),
        **_FAMILY_OPTIONS.get(kind, {}),
    }


def encoder_specs() -> list[EncoderSpec]:
    """One spec per backbone family: lecl-vit, lecl-mambaout, lecl-vmamba."""
    return [
        EncoderSpec(
            name=name, build=partial(build_encoder, name), input_kind="slice", embed_dim=None,
            weights_source="option checkpoint (LeCL encoder checkpoint) or weights: random",
            description=f"LeCL-pretrained {about}", options=_options(archs, default_arch, kind),
        )
        for name, (kind, archs, default_arch, about) in _FAMILIES.items()
    ]


def build_encoder(name: str, given: Mapping[str, Any]) -> Encoder:
    """Build the encoder ``name`` (one of lecl-vit / lecl-mambaout / lecl-vmamba) from its options."""
    kind, archs, default_arch, _ = _FAMILIES[name]
    options = resolve_options(_options(archs, default_arch, kind), given)
    if options["weights"] == "random":
        return _random_encoder(name, default_arch, options)
    if options["weights"] != "checkpoint":
        raise ConfigError(f"{name}: option 'weights' must be 'checkpoint' or 'random', "
                          f"got {options['weights']!r}")
    if not options["checkpoint"]:
        raise WeightsNotFoundError(
            f"{name}: no checkpoint given (option 'checkpoint' is not set); train one with "
            "`clear-bench pretrain lecl --config CONFIG` and set `checkpoint: PATH`, or set "
            "`weights: random` for a random-initialised baseline")
    path = Path(options["checkpoint"]).expanduser()
    if not path.is_file():
        raise WeightsNotFoundError(
            f"{name}: checkpoint not found: {path.resolve()} (option 'checkpoint'); train one with "
            "`clear-bench pretrain lecl --config CONFIG`, or set `weights: random` for a random-initialised "
            "baseline")
    from clear_bench_lecl.checkpoint import load_encoder_checkpoint

    model, meta = load_encoder_checkpoint(path)
    arch = meta["arch"]
    if family(arch) != kind or (options["arch"] and options["arch"] != arch):
        wanted = options["arch"] or f"a {kind} arch"
        raise ConfigError(f"{name}: checkpoint {path} holds arch '{arch}', but this encoder expects {wanted} "
                          "(option 'arch' / the encoder name)")
    prep = dict(meta["preprocessing"])
    prep["image_size"] = _checked_img_size(name, path, kind, options["img_size"], prep["image_size"])
    prep = {key: tuple(value) if isinstance(value, list) else value for key, value in prep.items()}
    preprocessing = Preprocessing(**prep)
    built = {"arch": arch, "arch_kwargs": meta["arch_kwargs"], "img_size": prep["image_size"],
             "weights": "checkpoint"}
    if kind == "mambaout":
        model = _with_embedding(name, path, model, meta["arch_kwargs"]["embedding"], options["embedding"],
                                prep["image_size"])
        built["embedding"] = options["embedding"]
    elif kind == "vit" and options["pos_embed"] not in (None, meta["arch_kwargs"]["pos_embed"]):
        raise ConfigError(f"{name}: option 'pos_embed' is {options['pos_embed']!r}, but the ViT in {path} "
                          f"was trained with {meta['arch_kwargs']['pos_embed']!r}; remove the option")
    return _encoder(name, model, preprocessing, weights_digest=meta["sha256"], random_init=False,
                    options=built)


def _with_embedding(name: str, path: Path, model: nn.Module, trained: str, wanted: str,
                    img_size: int) -> nn.Module:
    """A MambaOut checkpoint's backbone embedding ``wanted``: pooled features exist in every MambaOut, its
    MLP head's output only where the checkpoint holds that head."""
    if wanted == trained:
        return model
    if wanted == "pooled":
        from clear_bench_lecl.backbones import measure_embed_dim
        from clear_bench_lecl.backbones.mambaout import use_pooled_embedding

        use_pooled_embedding(model)
        model.embed_dim = measure_embed_dim(model, img_size, model.stem.conv1.in_channels)
        return model
    raise ConfigError(f"{name}: option 'embedding' is {wanted!r}, but the MambaOut in {path} was trained to "
                      f"embed {trained!r} features and holds no MLP head (head.pre_logits); use "
                      f"'embedding: {trained}'")


def _checked_img_size(name: str, path: Path, kind: str, wanted: int | None, trained: int) -> int:
    if wanted is None or wanted == trained:
        return trained
    if kind == "vit":  # position embeddings are sized for the training resolution
        raise ConfigError(f"{name}: option 'img_size' is {wanted}, but the ViT in {path} was trained at "
                          f"{trained} px; remove the option or use {trained}")
    return wanted


def _random_encoder(name: str, default_arch: str, options: Mapping[str, Any]) -> Encoder:
    import torch

    from clear_bench_lecl.backbones import build_backbone

    arch = options["arch"] or default_arch
    img_size = options["img_size"] or 224
    seed = int(options["seed"])
    arch_kwargs = dict(options["arch_kwargs"] or {})
    chosen = {key: options[key] for key in ("embedding", "pos_embed") if options.get(key) is not None}
    for key in ("embedding", "pos_embed"):
        if key in arch_kwargs:
            raise ConfigError(f"{name}: option 'arch_kwargs' sets {key!r}; use option '{key}' instead")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_backbone(arch, img_size=img_size, **chosen, **arch_kwargs)
    preprocessing = Preprocessing(image_size=img_size, channels=3, mean=DEFAULT_MEAN, std=DEFAULT_STD)
    built = {"arch": arch, "arch_kwargs": arch_kwargs, "img_size": img_size, "weights": "random",
             "seed": seed}
    if hasattr(model, "embedding"):
        built["embedding"] = model.embedding
    if getattr(model, "pos_embed_kind", "learned") != "learned":  # learned ViTs keep their cache keys
        built["pos_embed"] = model.pos_embed_kind
    return _encoder(name, model.eval(), preprocessing, weights_digest=f"random-init:{seed}", random_init=True,
                    options=built)


def _encoder(name: str, model: nn.Module, preprocessing: Preprocessing, *, weights_digest: str,
             random_init: bool, options: dict[str, Any]) -> Encoder:
    for param in model.parameters():
        param.requires_grad_(False)
    return Encoder(name=name, model=model.eval(), embed_dim=int(model.embed_dim), preprocessing=preprocessing,
                   weights_digest=weights_digest, input_kind="slice", random_init=random_init,
                   options=options)
