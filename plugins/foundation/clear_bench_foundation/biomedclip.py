"""BiomedCLIP's vision tower through open_clip: a timm ViT-B/16 plus a linear projection to 512-d.

Weights come from a local folder (``local_dir``: ``open_clip_config.json`` and an ``open_clip_*`` weights
file, as published on the hub), from the Hugging Face cache / hub (``hub_id``), or are random with
``weights: random`` (architecture from the config only). Only the ``visual.*`` part of the checkpoint is
loaded, strictly: the text tower is not needed for image embeddings.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from clear_bench.errors import ConfigError, UserError, WeightsNotFoundError
from clear_bench.specs import Encoder, Preprocessing, resolve_options
from clear_bench_foundation.catalog import BIOMEDCLIP_HUB_ID as HUB_ID
from clear_bench_foundation.weights import existing_file, hub_file, load_strict, sha256_file

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
CONFIG_NAME = "open_clip_config.json"
WEIGHT_NAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.safetensors",
                "open_clip_pytorch_model.bin")
# The vision half of BiomedCLIP's published open_clip_config.json (its text tower is not built).
BIOMEDCLIP_CONFIG: dict[str, Any] = {
    "model_cfg": {
        "embed_dim": 512,
        "vision_cfg": {"timm_model_name": "vit_base_patch16_224", "timm_model_pretrained": False,
                       "timm_pool": "", "timm_proj": "linear", "image_size": 224},
    },
    "preprocess_cfg": {"mean": list(OPENAI_MEAN), "std": list(OPENAI_STD)},
}
HOW = ("set `local_dir:` to a folder holding open_clip_config.json and open_clip_pytorch_model.bin (download "
       f"them from huggingface.co/{HUB_ID} on a machine with internet), fill the Hugging Face cache "
       f"(`hf download {HUB_ID}`), or set `weights: random` for a random-initialised baseline")


class VisionTower(nn.Module):
    """open_clip vision tower returning the projected embedding (``output: projected``) or the trunk's
    pooled feature (``output: pooled``)."""

    def __init__(self, tower: nn.Module, output: str) -> None:
        super().__init__()
        self.tower = tower
        self.output = output

    def forward(self, x: Tensor) -> Tensor:
        if self.output == "pooled":
            return self.tower.trunk(x)
        return self.tower(x)


def read_config(folder: Path, who: str = "biomedclip") -> dict[str, Any]:
    """``open_clip_config.json`` of ``folder`` (``model_cfg`` + ``preprocess_cfg``)."""
    path = existing_file(folder / CONFIG_NAME, who=who, option="local_dir", how=HOW)
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not a readable open_clip config ({exc})") from exc
    if "vision_cfg" not in config.get("model_cfg", config):
        raise ConfigError(f"{path}: field 'model_cfg.vision_cfg' is missing")
    return config


def build_vision_tower(config: Mapping[str, Any]) -> nn.Module:
    """The open_clip vision tower described by an open_clip config (random weights)."""
    from open_clip.model import _build_vision_tower

    model_cfg = config.get("model_cfg", config)
    return _build_vision_tower(model_cfg["embed_dim"], dict(model_cfg["vision_cfg"]),
                               quick_gelu=bool(model_cfg.get("quick_gelu", False)))


def load_visual_weights(tower: nn.Module, weights_file: Path) -> None:
    """Load the ``visual.*`` tensors of an open_clip checkpoint into ``tower``, strictly."""
    from open_clip.factory import load_state_dict

    try:
        state = load_state_dict(str(weights_file), weights_only=True)
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}"
        raise UserError(f"{weights_file}: not a readable open_clip checkpoint ({reason})") from exc
    visual = {key[len("visual."):]: value for key, value in state.items() if key.startswith("visual.")}
    if not visual:
        raise UserError(f"{weights_file}: no 'visual.*' tensors (not an open_clip CLIP checkpoint)")
    load_strict(tower, visual, f"{weights_file}: vision tower does not match the config", UserError)


def _find_weights(folder: Path) -> Path:
    for name in WEIGHT_NAMES:
        if (folder / name).is_file():
            return folder / name
    patterns = ("*.safetensors", "*.bin", "*.pth")
    candidates = [path for pattern in patterns for path in sorted(folder.glob(pattern))]
    if candidates:
        return candidates[0]
    raise WeightsNotFoundError(f"biomedclip: option 'local_dir': no weights file in {folder.resolve()} "
                               f"(looked for {', '.join(WEIGHT_NAMES)}, {', '.join(patterns)}); {HOW}")


def build(options: Mapping[str, Any], declared: Mapping[str, Any]) -> Encoder:
    """Build the ``biomedclip`` encoder from its options."""
    opts = resolve_options(declared, options)
    local_dir = Path(opts["local_dir"]).expanduser() if opts["local_dir"] else None
    random_init = opts["weights"] == "random"
    if local_dir is not None:
        config = read_config(local_dir)
    elif random_init:
        config = BIOMEDCLIP_CONFIG
    else:
        config_file = hub_file(opts["hub_id"], [CONFIG_NAME], who="biomedclip", how=HOW,
                               cache_dir=opts["cache_dir"])
        config = read_config(config_file.parent)
    seed = int(opts["seed"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        tower = build_vision_tower(config)
    if random_init:
        digest = f"random-init:{seed}"
    else:
        if local_dir is not None:
            weights_file = _find_weights(local_dir)
        else:
            weights_file = hub_file(opts["hub_id"], list(WEIGHT_NAMES[1:]), who="biomedclip", how=HOW,
                                    cache_dir=opts["cache_dir"])
        load_visual_weights(tower, weights_file)
        digest = sha256_file(weights_file)
    model = VisionTower(tower, opts["output"]).eval()
    for param in model.parameters():
        param.requires_grad_(False)
    vision_cfg = config.get("model_cfg", config)["vision_cfg"]
    image_size = vision_cfg.get("image_size", 224)
    image_size = image_size[0] if isinstance(image_size, (list, tuple)) else int(image_size)
    prep_cfg = config.get("preprocess_cfg", {})
    preprocessing = Preprocessing(image_size=image_size, channels=3,
                                  mean=tuple(prep_cfg.get("mean", OPENAI_MEAN)),
                                  std=tuple(prep_cfg.get("std", OPENAI_STD)))
    with torch.no_grad():
        embed_dim = int(model(torch.zeros(1, 3, image_size, image_size)).shape[1])
    return Encoder(name="biomedclip", model=model, embed_dim=embed_dim, preprocessing=preprocessing,
                   weights_digest=digest, input_kind="slice", random_init=random_init,
                   options={"output": opts["output"], "weights": opts["weights"],
                            "vision_cfg": dict(vision_cfg), **({"seed": seed} if random_init else {})})
