"""The LeCL encoder checkpoint: one file with the backbone's weights and everything needed to rebuild it.

Content (only types that ``torch.load(weights_only=True)`` accepts)::

    {"format": "clear-bench/lecl-encoder", "format_version": 1, "arch": str, "arch_kwargs": dict,
     "state_dict": {name: tensor}, "preprocessing": dict, "config": dict, "fingerprint": str,
     "clear_bench_version": str}

``arch`` and ``arch_kwargs`` are the arguments of :func:`build_backbone` (with a MambaOut's ``embedding`` and
a ViT's ``pos_embed`` always written out; a file without them predates them, see
:func:`~clear_bench_lecl.backbones.checkpoint_arch_kwargs`); ``fingerprint`` is a hash of arch,
arch_kwargs, preprocessing and training config (what produced the weights); the sha256 of the file is the
weights digest that keys cached embeddings.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from clear_bench import __version__
from clear_bench.atomic import atomic_write_bytes
from clear_bench.checkpoints import load_tensors
from clear_bench.errors import UnusableWeightsError, WeightsNotFoundError
from clear_bench.specs import Preprocessing, stable_hash
from clear_bench_lecl.backbones import build_backbone, checkpoint_arch_kwargs, resolved_arch_kwargs

FORMAT = "clear-bench/lecl-encoder"
FORMAT_VERSION = 1
_REQUIRED = ("arch", "arch_kwargs", "state_dict", "preprocessing", "config", "fingerprint")


class CheckpointError(UnusableWeightsError):
    """An encoder checkpoint that cannot be read or does not match its architecture."""


def checkpoint_fingerprint(arch: str, arch_kwargs: Mapping[str, Any], preprocessing: Mapping[str, Any],
                           config: Mapping[str, Any]) -> str:
    """Hash of what determines a checkpoint besides its weights."""
    return stable_hash({"arch": arch, "arch_kwargs": dict(arch_kwargs), "preprocessing": dict(preprocessing),
                        "config": dict(config)})


def save_encoder_checkpoint(
    path: str | Path, *, arch: str, arch_kwargs: dict, state_dict: dict[str, Tensor],
    preprocessing: Preprocessing, config: dict,
) -> str:
    """Write an encoder checkpoint atomically (temp file + rename); returns the sha256 hex digest of the file.

    ``state_dict`` is the backbone's own state dict (the module :func:`build_backbone` returns); tensors are
    copied to CPU. ``config`` must hold plain values (str, int, float, bool, None, lists, tuples, dicts).
    """
    path = Path(path)
    prep = _plain(asdict(preprocessing))
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "arch": arch,
        "arch_kwargs": _plain(resolved_arch_kwargs(arch, dict(arch_kwargs))),
        "state_dict": {key: value.detach().cpu().contiguous().clone() for key, value in state_dict.items()},
        "preprocessing": prep,
        "config": _plain(config),
        "fingerprint": "",
        "clear_bench_version": __version__,
    }
    payload["fingerprint"] = checkpoint_fingerprint(arch, payload["arch_kwargs"], prep, payload["config"])
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    data = buffer.getvalue()
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def read_encoder_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint's content (state dict included) plus ``sha256`` and ``path``; validated format."""
    path = Path(path)
    if not path.is_file():
        raise WeightsNotFoundError(
            f"encoder checkpoint not found: {path} (train one with `clear-bench pretrain lecl --config ...`, "
            "or set `weights: random` for a random-initialised baseline)")
    data = path.read_bytes()
    payload = load_tensors(data, what="encoder checkpoint", origin=path, error=CheckpointError)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(f"{path}: field 'format' is {found!r}, expected {FORMAT!r} "
                              "(a LeCL encoder checkpoint written by `clear-bench pretrain lecl`)")
    if payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: field 'format_version' is {payload.get('format_version')!r}; "
                              f"this clear-bench reads version {FORMAT_VERSION}")
    missing = [key for key in _REQUIRED if key not in payload]
    if missing:
        raise CheckpointError(f"{path}: missing field(s) {', '.join(missing)}")
    state = payload["state_dict"]
    if not isinstance(state, Mapping) or not all(isinstance(key, str) for key in state):
        raise CheckpointError(f"{path}: field 'state_dict' is a {type(state).__name__}, expected a mapping "
                              "of parameter names to tensors")
    not_tensors = [key for key, value in state.items() if not isinstance(value, Tensor)]
    if not_tensors:
        raise CheckpointError(f"{path}: field 'state_dict': {_short(not_tensors)} hold(s) a "
                              f"{type(state[not_tensors[0]]).__name__}, not a tensor")
    payload["sha256"] = hashlib.sha256(data).hexdigest()
    payload["path"] = str(path)
    return payload


def load_encoder_checkpoint(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the backbone of a checkpoint and load its weights strictly; the module is in eval mode.

    Returns the module and the metadata (every field but ``state_dict``, plus ``sha256`` of the file and
    ``path``). A state dict that does not match the architecture is a :class:`CheckpointError` naming the
    file and the missing / unexpected keys.
    """
    payload = read_encoder_checkpoint(path)
    state_dict = payload.pop("state_dict")
    try:
        payload["arch_kwargs"] = checkpoint_arch_kwargs(payload["arch"], dict(payload["arch_kwargs"]))
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: field 'arch' / 'arch_kwargs': {exc}") from exc
    try:
        model = build_backbone(payload["arch"], **payload["arch_kwargs"])
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: cannot build arch {payload['arch']!r} with arch_kwargs "
                              f"{payload['arch_kwargs']}: {exc}") from exc
    expected = set(model.state_dict())
    missing = sorted(expected - set(state_dict))
    unexpected = sorted(set(state_dict) - expected)
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: state_dict does not match arch {payload['arch']!r}: "
            f"missing keys {_short(missing)}; unexpected keys {_short(unexpected)}")
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:  # shape mismatches; torch's message spans lines
        raise CheckpointError(f"{path}: state_dict does not match arch {payload['arch']!r}: "
                              f"{' '.join(str(exc).split())}") from exc
    return model.eval(), payload


def _short(keys: list[str], limit: int = 8) -> str:
    if not keys:
        return "none"
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return "[" + ", ".join(keys[:limit]) + "]" + more


def _plain(value: Any) -> Any:
    """Dicts/lists/tuples of plain values, checked: anything else would not load with weights_only=True."""
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"checkpoint metadata must hold plain values, got {type(value).__name__}: {value!r}")
