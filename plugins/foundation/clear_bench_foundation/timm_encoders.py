"""Image encoders that timm provides with their published weights: DINOv2 and DINO ViTs, SAM2's Hiera encoder.

Weights come from a local file (``checkpoint``: a timm / original state dict, loaded through timm's own
pretrained path with ``pretrained_cfg_overlay=dict(file=...)``, strictly) or from the model's timm hub repo
(Hugging Face cache first). ``weights: random`` builds the architecture alone. For ``dino-vit`` a checkpoint
may also be an original DINO / iBOT training checkpoint (``teacher`` / ``student`` / ``state_dict`` holding
``module.backbone.*`` ViT tensors, the projection head dropped): its backbone is loaded strictly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import timm
import torch
from timm.models import get_pretrained_cfg

from clear_bench.checkpoints import load_tensors
from clear_bench.errors import ConfigError, UserError
from clear_bench.specs import Encoder, Preprocessing, resolve_options
from clear_bench_foundation.weights import existing_file, hub_file, sha256_file

HUB_FILES = ("model.safetensors", "pytorch_model.bin")


def _how(model_name: str, hub_id: str) -> str:
    return (f"set `checkpoint:` to a local weights file of {model_name}, fill the Hugging Face cache "
            f"(`hf download {hub_id}` on a machine with internet), or set `weights: random` for a "
            "random-initialised baseline")


def build(encoder: str, options: Mapping[str, Any], declared: Mapping[str, Any], *,
          takes_img_size: bool) -> Encoder:
    """Build a timm image encoder (``dinov2`` or ``sam2-hiera``) pooled to ``[B, num_features]``."""
    opts = resolve_options(declared, options)
    model_name = opts["model"]
    try:
        cfg = get_pretrained_cfg(model_name)
    except Exception as exc:
        raise ConfigError(f"{encoder}: option 'model': unknown timm model '{model_name}'") from exc
    if cfg is None:
        raise ConfigError(f"{encoder}: option 'model': timm has no pretrained config for '{model_name}'")
    img_size = int(opts["img_size"])
    kwargs: dict[str, Any] = {"num_classes": 0, **dict(opts["model_kwargs"] or {})}
    if takes_img_size:  # ViTs size their position embedding; timm resamples pretrained ones on load
        kwargs["img_size"] = img_size
    random_init = opts["weights"] == "random"
    if random_init:
        seed = int(opts["seed"])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = timm.create_model(model_name, pretrained=False, **kwargs)
        digest = f"random-init:{seed}"
    else:
        hub_id = cfg.hf_hub_id or f"timm/{model_name}"
        how = _how(model_name, hub_id)
        if opts["checkpoint"]:
            weights_file = existing_file(opts["checkpoint"], who=encoder, option="checkpoint", how=how)
        else:
            weights_file = hub_file(hub_id, list(HUB_FILES), who=encoder, how=how,
                                    cache_dir=opts["cache_dir"])
        training_state = _ssl_backbone(weights_file) if encoder == "dino-vit" else None
        try:
            if training_state is not None:
                model = _load_backbone(model_name, training_state, kwargs)
            else:
                model = timm.create_model(model_name, pretrained=True,
                                          pretrained_cfg_overlay={"file": str(weights_file)}, **kwargs)
        except RuntimeError as exc:  # strict load: missing / unexpected keys, shape mismatches
            raise UserError(f"{weights_file}: does not match timm model {model_name}: {exc}") from exc
        digest = sha256_file(weights_file)
    model.eval()
    for param in model.parameters():
        param.requires_grad_(False)
    with torch.no_grad():
        embed_dim = int(model(torch.zeros(1, 3, img_size, img_size)).shape[1])
    preprocessing = Preprocessing(image_size=img_size, channels=3, mean=tuple(cfg.mean), std=tuple(cfg.std))
    return Encoder(name=encoder, model=model, embed_dim=embed_dim, preprocessing=preprocessing,
                   weights_digest=digest, input_kind="slice", random_init=random_init,
                   options={"model": model_name, "img_size": img_size, "weights": opts["weights"],
                            "model_kwargs": dict(opts["model_kwargs"] or {}),
                            **({"seed": int(opts["seed"])} if random_init else {})})


SSL_WRAPPERS = ("teacher", "student", "state_dict", "model")
SSL_PREFIXES = ("module.", "backbone.")


def _ssl_backbone(path: Any) -> dict[str, torch.Tensor] | None:
    """The ViT backbone of an original DINO / iBOT checkpoint (prefixes and head removed), or ``None`` when
    ``path`` is a plain timm state dict (or safetensors) that timm's own loader reads."""
    if str(path).endswith(".safetensors"):
        return None
    payload = load_tensors(path, what="DINO / iBOT checkpoint")
    if not isinstance(payload, dict):
        raise UserError(f"{path}: expected a state dict, found {type(payload).__name__}")
    wrapped = next((payload[key] for key in SSL_WRAPPERS if isinstance(payload.get(key), dict)), None)
    state = wrapped if wrapped is not None else payload
    if not any(key.startswith(SSL_PREFIXES) for key in state):
        return None
    backbone: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        for prefix in SSL_PREFIXES:
            key = key.removeprefix(prefix)
        if not key.startswith("head.") and isinstance(value, torch.Tensor):
            backbone[key] = value
    if "cls_token" not in backbone:
        raise UserError(f"{path}: no ViT backbone found (no 'cls_token' under the prefixes "
                        f"{', '.join(SSL_PREFIXES)})")
    return backbone


def _load_backbone(model_name: str, state: dict[str, torch.Tensor],
                   kwargs: dict[str, Any]) -> torch.nn.Module:
    """``model_name`` built without weights, ``state`` loaded strictly through timm's ViT checkpoint filter
    (it resamples the position embedding to the model's size)."""
    from timm.models.vision_transformer import checkpoint_filter_fn

    model = timm.create_model(model_name, pretrained=False, **kwargs)
    model.load_state_dict(checkpoint_filter_fn(state, model), strict=True)
    return model
