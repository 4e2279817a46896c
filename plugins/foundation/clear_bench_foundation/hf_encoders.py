"""RAD-DINO and MedSigLIP through Hugging Face transformers' own model classes (never remote code).

Weights come from a local ``save_pretrained`` folder (``local_dir``: ``config.json``, ``model.safetensors``
and, as published, ``preprocessor_config.json``), from the Hugging Face cache / hub (``hub_id``), or are
random with ``weights: random`` (the published architecture, seeded). The image size and normalisation are
read from the folder's ``preprocessor_config.json`` when it has one (the published processor), else the
published mean / std below apply at the model config's image size.

- RAD-DINO (``microsoft/rad-dino``): a DINOv2 ViT-B/14 (``Dinov2Model``); the embedding is the class token
  after the final layer norm (``pooler_output``, 768-d), on 518 px inputs normalised with the processor's
  mean 0.5307 / std 0.2583.
- MedSigLIP (``google/medsiglip-448``): the vision tower of a SigLIP model (``SiglipVisionModel``, loaded
  from the full vision-text checkpoint); the embedding is its attention-pooled output (``pooler_output``,
  1152-d, what ``SiglipModel.get_image_features`` returns), on 448 px inputs normalised with mean / std 0.5.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from clear_bench.errors import ConfigError, UnusableWeightsError, WeightsNotFoundError
from clear_bench.specs import Encoder, Preprocessing, resolve_options
from clear_bench_foundation.weights import existing_file, hub_file, refuse_remote_code, sha256_file

CONFIG_NAME = "config.json"
PROCESSOR_NAME = "preprocessor_config.json"
WEIGHT_NAMES = ("model.safetensors", "pytorch_model.bin")
ARCH_FIELDS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "patch_size", "image_size")


@dataclass(frozen=True)
class HFModel:
    """A transformers image encoder this module builds: its class, published config and preprocessing."""

    encoder: str
    hub_id: str
    model_type: str
    """``model_type`` of its config.json (the full model's, e.g. ``siglip`` for MedSigLIP)."""
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    architecture: Mapping[str, Any]
    """The published config's architecture fields, for ``weights: random``."""

    def model_class(self) -> type[nn.Module]:
        if self.model_type == "dinov2":
            from transformers import Dinov2Model

            return Dinov2Model
        from transformers import SiglipVisionModel

        return SiglipVisionModel

    def random_config(self) -> Any:
        if self.model_type == "dinov2":
            from transformers import Dinov2Config

            return Dinov2Config(**self.architecture)
        from transformers import SiglipVisionConfig

        return SiglipVisionConfig(**self.architecture)


RAD_DINO = HFModel(
    "rad-dino", "microsoft/rad-dino", "dinov2", 518, (0.5307,) * 3, (0.2583,) * 3,
    {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "mlp_ratio": 4,
     "patch_size": 14, "image_size": 518, "layerscale_value": 1.0})
MEDSIGLIP = HFModel(
    "medsiglip", "google/medsiglip-448", "siglip", 448, (0.5,) * 3, (0.5,) * 3,
    {"hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27, "num_attention_heads": 16,
     "patch_size": 14, "image_size": 448})
MODELS = {model.encoder: model for model in (RAD_DINO, MEDSIGLIP)}


class PooledImageModel(nn.Module):
    """A transformers vision model returning its ``pooler_output`` ``[B, hidden]`` for ``pixel_values``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(pixel_values=x).pooler_output


def how_to_get(model: HFModel) -> str:
    gated = " (a gated repo: accept its terms on the hub first)" if model.encoder == "medsiglip" else ""
    return (f"set `local_dir:` to a folder holding config.json, model.safetensors and "
            f"preprocessor_config.json of {model.hub_id}{gated} (download them on a machine with internet), "
            f"fill the Hugging Face cache (`hf download {model.hub_id}`), or set `weights: random` for a "
            "random-initialised baseline")


def read_json(path: Path, what: str) -> dict[str, Any]:
    """A JSON object file, or a ConfigError naming the file."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not a readable {what} ({exc})") from exc
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: a {what} must be a JSON object, found {type(value).__name__}")
    return value


def processor_preprocessing(path: Path, model: HFModel) -> Preprocessing:
    """The harness preprocessing a published ``preprocessor_config.json`` describes: the square size the
    model sees (the centre crop when the processor crops, else the resize) and its mean / std."""
    config = read_json(path, "image processor config")
    if config.get("do_rescale", True) is False:
        raise ConfigError(f"{path}: field 'do_rescale' is false (the harness feeds [0, 1] images)")
    key = "crop_size" if config.get("do_center_crop") and "crop_size" in config else "size"
    size = config.get(key, model.image_size)
    if isinstance(size, Mapping):
        sides = {int(v) for k, v in size.items() if k in ("height", "width", "shortest_edge")}
        if len(sides) != 1:
            raise ConfigError(f"{path}: field '{key}': expected a square size, found {dict(size)}")
        size = sides.pop()
    if config.get("do_normalize", True):
        mean, std = config.get("image_mean", model.mean), config.get("image_std", model.std)
    else:
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    for field, values in (("image_mean", mean), ("image_std", std)):
        if not isinstance(values, list | tuple) or len(values) != 3:
            raise ConfigError(f"{path}: field '{field}': expected 3 values, found {values!r}")
    return Preprocessing(image_size=int(size), channels=3, mean=tuple(float(v) for v in mean),
                         std=tuple(float(v) for v in std))


def published_preprocessing(model: HFModel, image_size: int) -> Preprocessing:
    """The published processor's normalisation at the model config's ``image_size`` (for a folder without
    a processor config; the published configs agree on the size)."""
    return Preprocessing(image_size=image_size, channels=3, mean=model.mean, std=model.std)


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' load reports and progress bars (the loader checks the keys itself)."""
    from transformers.utils import logging

    level = logging.get_verbosity()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(level)
        logging.enable_progress_bar()


def load_folder(model: HFModel, folder: Path) -> nn.Module:
    """Load ``folder`` (a ``save_pretrained`` layout) into the model's transformers class; every parameter
    of the image model must come from the file."""
    config_path = existing_file(folder / CONFIG_NAME, who=model.encoder, option="local_dir",
                                how=how_to_get(model))
    config = read_json(config_path, "model config")
    refuse_remote_code(config, config_path, who=model.encoder)
    found = config.get("model_type")
    accepted = {model.model_type} | ({"siglip_vision_model"} if model.model_type == "siglip" else set())
    if found not in accepted:
        raise ConfigError(f"{config_path}: field 'model_type' is {found!r}; {model.encoder} expects "
                          f"{' or '.join(sorted(accepted))}")
    if not any((folder / name).is_file() for name in WEIGHT_NAMES):
        raise WeightsNotFoundError(f"{model.encoder}: option 'local_dir': no weights file in {folder} "
                                   f"(looked for {', '.join(WEIGHT_NAMES)}); {how_to_get(model)}")
    with _quiet_transformers():
        try:
            net, info = model.model_class().from_pretrained(
                str(folder), local_files_only=True, output_loading_info=True, trust_remote_code=False)
        except (OSError, ValueError, RuntimeError) as exc:
            raise UnusableWeightsError(f"{folder}: not a loadable {model.encoder} model "
                                       f"({type(exc).__name__}: {exc})") from exc
    problems = [f"{kind} {sorted(info[kind])[:6]}" for kind in ("missing_keys", "mismatched_keys")
                if info.get(kind)]
    if problems:
        raise UnusableWeightsError(f"{folder}: weights do not match {model.encoder}'s architecture: "
                                   f"{'; '.join(problems)}")
    return net


def build(name: str, options: Mapping[str, Any], declared: Mapping[str, Any]) -> Encoder:
    """Build the ``rad-dino`` or ``medsiglip`` encoder from its options."""
    model = MODELS[name]
    opts = resolve_options(declared, options)
    random_init = opts["weights"] == "random"
    folder: Path | None = None
    if opts["local_dir"]:
        folder = Path(opts["local_dir"]).expanduser().resolve()
        if not folder.is_dir():
            raise WeightsNotFoundError(f"{name}: option 'local_dir': folder not found: {folder}; "
                                       f"{how_to_get(model)}")
    elif not random_init:
        config_file = hub_file(opts["hub_id"], [CONFIG_NAME], who=name, how=how_to_get(model),
                               cache_dir=opts["cache_dir"])
        hub_file(opts["hub_id"], list(WEIGHT_NAMES), who=name, how=how_to_get(model),
                 cache_dir=opts["cache_dir"])
        with contextlib.suppress(WeightsNotFoundError):  # published processors are optional here
            hub_file(opts["hub_id"], [PROCESSOR_NAME], who=name, how="", cache_dir=opts["cache_dir"])
        folder = config_file.parent
    seed = int(opts["seed"])
    if random_init:
        config = model.random_config() if folder is None else _folder_config(model, folder)
        with torch.random.fork_rng(devices=[]), _quiet_transformers():
            torch.manual_seed(seed)
            net = model.model_class()(config)
        digest = f"random-init:{seed}"
    else:
        assert folder is not None
        net = load_folder(model, folder)
        digest = sha256_file(next(folder / n for n in WEIGHT_NAMES if (folder / n).is_file()))
    processor = folder / PROCESSOR_NAME if folder is not None else None
    if processor is not None and processor.is_file():
        preprocessing = processor_preprocessing(processor, model)
    else:
        preprocessing = published_preprocessing(model, int(net.config.image_size))
    encoder_model = PooledImageModel(net).eval()
    for param in encoder_model.parameters():
        param.requires_grad_(False)
    patch = int(net.config.patch_size)
    with torch.no_grad():  # measured on one patch, the position embedding interpolated to it
        probe = net(pixel_values=torch.zeros(1, 3, patch, patch), interpolate_pos_encoding=True)
        embed_dim = int(probe.pooler_output.shape[1])
    arch = {key: getattr(net.config, key, None) for key in ARCH_FIELDS}
    return Encoder(name=name, model=encoder_model, embed_dim=embed_dim, preprocessing=preprocessing,
                   weights_digest=digest, input_kind="slice", random_init=random_init,
                   options={"weights": opts["weights"], "model_type": net.config.model_type, "arch": arch,
                            **({"seed": seed} if random_init else {})})


def _folder_config(model: HFModel, folder: Path) -> Any:
    """The image model's config from ``folder``'s config.json (the vision part of a vision-text one)."""
    from transformers import AutoConfig

    path = existing_file(folder / CONFIG_NAME, who=model.encoder, option="local_dir", how=how_to_get(model))
    refuse_remote_code(read_json(path, "model config"), path, who=model.encoder)
    with _quiet_transformers():
        config = AutoConfig.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
    return getattr(config, "vision_config", config)


OUTPUTS = ("pooler", "cls", "mean")


class HiddenStateImageModel(nn.Module):
    """Any transformers image model: ``pooler_output``, the first token, or the token mean, ``[B, D]``."""

    def __init__(self, model: nn.Module, output: str) -> None:
        super().__init__()
        self.model, self.output = model, output

    def forward(self, x: Tensor) -> Tensor:
        out = self.model(pixel_values=x)
        if self.output == "pooler":
            return out.pooler_output
        hidden = out.last_hidden_state
        return hidden[:, 0] if self.output == "cls" else hidden.mean(dim=1)


def build_generic(options: Mapping[str, Any], declared: Mapping[str, Any]) -> Encoder:
    """Build ``hf-image``: any transformers image model from a folder or the hub cache, preprocessing from its
    ``preprocessor_config.json``; a model that needs its repo's code runs only at a trusted commit."""
    from transformers import AutoModel

    from clear_bench_foundation.weights import allow_remote_code, cached_hub_file

    opts = resolve_options(declared, options)
    who, hub_id, trusted = "hf-image", opts["hub_id"], opts["trust_remote_code"]
    how = (f"set `local_dir:` to a save_pretrained folder with config.json, weights and "
           f"preprocessor_config.json, or fill the Hugging Face cache (`hf download {hub_id or 'ORG/NAME'}`)")
    if opts["local_dir"]:
        folder = Path(opts["local_dir"]).expanduser().resolve()
        config_path = existing_file(folder / CONFIG_NAME, who=who, option="local_dir", how=how)
    elif not hub_id:
        raise ConfigError(f"{who}: set option 'hub_id' (a Hugging Face repo) or 'local_dir' (a folder)")
    elif trusted:  # the snapshot of exactly the trusted commit
        found = cached_hub_file(hub_id, CONFIG_NAME, opts["cache_dir"], revision=str(trusted))
        if found is None:
            raise WeightsNotFoundError(f"{who}: no snapshot of commit {trusted} of hub repo '{hub_id}' "
                                       f"in the Hugging Face cache (`hf download {hub_id} --revision "
                                       f"{trusted}`)")
        config_path = found
    else:
        config_path = hub_file(hub_id, [CONFIG_NAME], who=who, how=how, cache_dir=opts["cache_dir"])
    folder = config_path.parent
    remote = allow_remote_code(read_json(config_path, "model config"), config_path, who=who, trusted=trusted)
    weights = next((folder / n for n in WEIGHT_NAMES if (folder / n).is_file()), None)
    if weights is None:
        raise WeightsNotFoundError(f"{who}: no weights file in {folder} (looked for "
                                   f"{', '.join(WEIGHT_NAMES)}); {how}")
    processor = existing_file(folder / PROCESSOR_NAME, who=who, option="local_dir",
                              how="the image size and normalisation come from the model's own processor")
    fields = read_json(processor, "image processor config")
    for field in ("image_mean", "image_std", "size"):
        if field not in fields:
            raise ConfigError(f"{processor}: field '{field}' is missing (the encoder's preprocessing)")
    generic = HFModel(who, hub_id or "", "", 224, (0.5,) * 3, (0.5,) * 3, {})
    preprocessing = processor_preprocessing(processor, generic)
    with _quiet_transformers():
        try:
            net, info = AutoModel.from_pretrained(str(folder), local_files_only=True,
                                                  output_loading_info=True, trust_remote_code=remote)
        except (OSError, ValueError, RuntimeError, ImportError) as exc:
            raise UnusableWeightsError(f"{folder}: not a loadable transformers model "
                                       f"({type(exc).__name__}: {exc})") from exc
    if info.get("missing_keys") or info.get("mismatched_keys"):
        raise UnusableWeightsError(f"{folder}: weights do not match the config: missing keys "
                                   f"{sorted(info.get('missing_keys') or [])[:6]}; mismatched keys "
                                   f"{sorted(info.get('mismatched_keys') or [])[:6]}")
    model = HiddenStateImageModel(net, opts["output"]).eval()
    for param in model.parameters():
        param.requires_grad_(False)
    size = preprocessing.image_size
    with torch.no_grad():
        try:
            embed_dim = int(model(torch.zeros(1, 3, size, size)).shape[1])
        except (AttributeError, TypeError) as exc:
            raise ConfigError(f"{who}: option 'output': '{opts['output']}' is not available for "
                              f"{type(net).__name__} ({exc})") from exc
    return Encoder(name=who, model=model, embed_dim=embed_dim, preprocessing=preprocessing,
                   weights_digest=sha256_file(weights), input_kind="slice",
                   label=f"hf-image ({hub_id or folder.name})",
                   options={"output": opts["output"], "model_type": net.config.model_type,
                            "remote_code": trusted if remote else None})
