"""Where and how an encoder runs: device, autocast precision, ``torchrun`` rank, memory format."""

from __future__ import annotations

import contextlib
import os
from typing import Literal

import torch

from clear_bench.errors import ConfigError
from clear_bench.specs import Encoder

Precision = Literal["auto", "fp32", "bf16"]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU. Under ``torchrun`` a bare ``cuda`` means this rank's GPU."""
    text = str(device)
    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    if text == "cuda" and "LOCAL_RANK" in os.environ:
        text = f"cuda:{int(os.environ['LOCAL_RANK'])}"
    try:
        resolved = torch.device(text)
    except RuntimeError as exc:
        raise ConfigError(f"device '{device}': {exc}") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device '{device}': CUDA is not available on this machine")
    return resolved


def cpu_has_native_bf16() -> bool:
    """True when the CPU computes bfloat16 natively (AVX512-BF16 or AMX), where bf16 autocast pays off."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    for name in checks:
        check = getattr(torch.cpu, name, None)
        with contextlib.suppress(Exception):
            if check is not None and check():
                return True
    return False


def resolve_precision(precision: str, device: torch.device) -> Literal["fp32", "bf16"]:
    """``auto`` -> bf16 on GPUs that support it and on CPUs with native bf16, fp32 elsewhere."""
    if precision in ("fp32", "bf16"):
        return precision  # type: ignore[return-value]
    if precision != "auto":
        raise ConfigError(f"precision '{precision}': expected auto, fp32 or bf16")
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        return "bf16" if cpu_has_native_bf16() else "fp32"
    return "fp32"


def encoder_precision(encoder: Encoder, precision: str, device: torch.device) -> Literal["fp32", "bf16"]:
    """The precision ``encoder`` runs at: :func:`resolve_precision`, except that a model without floating
    point parameters (a fixed feature extractor) always runs in fp32, where autocast gains nothing."""
    resolved = resolve_precision(precision, device)
    if resolved == "bf16" and not any(p.is_floating_point() for p in encoder.model.parameters()):
        return "fp32"
    return resolved


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the world size from ``torchrun``'s environment (0, 1 when not under it)."""
    try:
        return int(os.environ.get("RANK", "0")), max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        raise ConfigError("RANK / WORLD_SIZE environment variables must be integers") from None


def use_channels_last(model: torch.nn.Module, device: torch.device) -> bool:
    """Channels-last helps convolutions (cuDNN, oneDNN); for a ViT on CPU it only adds layout changes."""
    if device.type == "cuda":
        return True
    conv = sum(p.numel() for m in model.modules() if isinstance(m, torch.nn.Conv2d) for p in m.parameters())
    total = sum(p.numel() for p in model.parameters())
    return total > 0 and conv / total > 0.5
