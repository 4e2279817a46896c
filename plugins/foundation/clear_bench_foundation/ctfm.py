"""CT-FM (project-lighter): MONAI's 3D SegResEncoder pretrained on 148k CTs, one vector per scan.

The published feature extractor (``project-lighter/ct_fm_feature_extractor``) is a MONAI ``SegResEncoder``
(``init_filters=32``, ``blocks_down=(1, 2, 2, 4, 4)``, batch norm, 77.8M parameters) saved as
``model.safetensors`` with its init arguments in ``config.json``. It is built here from MONAI alone (the
``monai`` extra): lighter-zoo, the authors' wrapper, pulls in Jupyter and is not needed to read the file.

Published preprocessing, implemented inside the model so that it sees Hounsfield units (``input: hu``):
orientation SPL (clear-bench's own volume layout: slices inferior to superior, rows anterior to posterior,
columns right to left, so nothing moves), ``ScaleIntensityRange(-1024, 2048) -> [0, 1]`` with clipping,
then ``CropForeground`` (the bounding box of voxels above -1024 HU, each scan on its own). The embedding is
the last stage's feature map averaged over space (512-d).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from clear_bench.errors import UnusableWeightsError, UserError, WeightsNotFoundError
from clear_bench.specs import Encoder, Preprocessing, resolve_options
from clear_bench_foundation.volumes import foreground_box
from clear_bench_foundation.weights import (
    existing_file,
    hub_file,
    load_strict,
    refuse_remote_code,
    sha256_file,
)

HU_RANGE = (-1024.0, 2048.0)
ARCHITECTURE = {"spatial_dims": 3, "in_channels": 1, "init_filters": 32, "blocks_down": (1, 2, 2, 4, 4)}
ARCH_KEYS = ("spatial_dims", "in_channels", "init_filters", "blocks_down", "act", "norm",
             "anisotropic_scales")
WEIGHT_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


class CTFMEncoder(nn.Module):
    """HU volumes ``[B, 1, D, H, W]`` -> ``[B, C]``: CT-FM's intensity scaling and foreground crop, then
    MONAI's SegResEncoder and a global average of its last feature map."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, x: Tensor) -> Tensor:
        low, high = HU_RANGE
        scaled = ((x - low) / (high - low)).clamp(0.0, 1.0)
        rows = []
        for volume in scaled:  # the crop differs per scan; each one is embedded alone
            rows.append(self.encoder(crop_foreground(volume)[None])[-1].mean(dim=(2, 3, 4)))
        return torch.cat(rows)


def crop_foreground(volume: Tensor) -> Tensor:
    """``[C, D, H, W]`` cropped to the bounding box of its voxels above 0 (MONAI's CropForeground default);
    a volume without any is kept whole."""
    box = foreground_box((volume > 0).any(dim=0))
    return volume if box is None else volume[(slice(None), *box)]


def how_to_get(hub_id: str) -> str:
    return (f"set `local_dir:` to a folder holding {WEIGHT_NAME} (and config.json) of {hub_id} (download "
            f"them on a machine with internet), fill the Hugging Face cache (`hf download {hub_id}`), or set "
            "`weights: random` for a random-initialised baseline")


def architecture(config_path: Path | None, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """SegResEncoder arguments: the published ones, then a folder's config.json, then ``arch_kwargs``."""
    import json

    arch: dict[str, Any] = dict(ARCHITECTURE)
    if config_path is not None and config_path.is_file():
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise UserError(f"{config_path}: not a readable CT-FM config ({exc})") from exc
        if not isinstance(config, dict):
            raise UserError(f"{config_path}: a CT-FM config must be a JSON object")
        refuse_remote_code(config, config_path, who="ct-fm")
        arch.update({key: config[key] for key in ARCH_KEYS if key in config})
    unknown = sorted(set(overrides) - set(ARCH_KEYS))
    if unknown:
        raise UserError(f"ct-fm: option 'arch_kwargs': unknown field(s) {', '.join(unknown)} (known: "
                        f"{', '.join(ARCH_KEYS)})")
    arch.update(overrides)
    for key in ("blocks_down", "anisotropic_scales"):
        if isinstance(arch.get(key), list):
            arch[key] = tuple(arch[key])
    return arch


def build_segres(arch: Mapping[str, Any]) -> nn.Module:
    from monai.networks.nets.segresnet_ds import SegResEncoder

    return SegResEncoder(**arch)


def load_weights(model: nn.Module, path: Path) -> None:
    """``path`` (safetensors) into ``model``, strictly; a full SegResNet's ``encoder.*`` part is taken."""
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except Exception as exc:
        raise UnusableWeightsError(f"{path}: not a readable safetensors file ({type(exc).__name__}: "
                                   f"{exc})") from exc
    if any(key.startswith("encoder.") for key in state):
        state = {key[len("encoder."):]: value for key, value in state.items() if key.startswith("encoder.")}
    load_strict(model, state, f"{path}: does not match CT-FM's SegResEncoder")


def build(options: Mapping[str, Any], declared: Mapping[str, Any]) -> Encoder:
    """Build the ``ct-fm`` volume encoder from its options."""
    opts = resolve_options(declared, options)
    hub_id = opts["hub_id"]
    random_init = opts["weights"] == "random"
    folder: Path | None = None
    weights_file: Path | None = None
    if opts["local_dir"]:
        folder = Path(opts["local_dir"]).expanduser().resolve()
        if not folder.is_dir():
            raise WeightsNotFoundError(f"ct-fm: option 'local_dir': folder not found: {folder}; "
                                       f"{how_to_get(hub_id)}")
        if not random_init:
            weights_file = existing_file(folder / WEIGHT_NAME, who="ct-fm", option="local_dir",
                                         how=how_to_get(hub_id))
    elif not random_init:
        weights_file = hub_file(hub_id, [WEIGHT_NAME], who="ct-fm", how=how_to_get(hub_id),
                                cache_dir=opts["cache_dir"])
        folder = weights_file.parent
    arch = architecture(folder / CONFIG_NAME if folder is not None else None, dict(opts["arch_kwargs"] or {}))
    seed = int(opts["seed"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        segres = build_segres(arch)
    if weights_file is not None:
        load_weights(segres, weights_file)
        digest = sha256_file(weights_file)
    else:
        digest = f"random-init:{seed}"
    model = CTFMEncoder(segres).eval()
    for param in model.parameters():
        param.requires_grad_(False)
    with torch.no_grad():  # fully convolutional: measured on a small probe volume
        embed_dim = int(model(torch.zeros(1, 1, 16, 32, 32)).shape[1])
    depth = opts["depth"]
    preprocessing = Preprocessing(image_size=int(opts["image_size"]), input="hu", channels=1, mean=(0.0,),
                                  std=(1.0,), depth=int(depth) if depth else None)
    return Encoder(name="ct-fm", model=model, embed_dim=embed_dim, preprocessing=preprocessing,
                   weights_digest=digest, input_kind="volume", random_init=random_init,
                   options={"weights": opts["weights"], "arch": _jsonable(arch),
                            **({"seed": seed} if random_init else {})})


def _jsonable(arch: Mapping[str, Any]) -> dict[str, Any]:
    return {key: list(value) if isinstance(value, Sequence) and not isinstance(value, str) else value
            for key, value in arch.items()}
