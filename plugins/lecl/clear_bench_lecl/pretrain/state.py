"""Training-state checkpoints: written atomically, read with ``torch.load(weights_only=True)``.

Everything in the file is a tensor, dict, list, tuple, number, bool, None or string; random-number
generator states are converted to such values (:func:`capture_rng` / :func:`restore_rng`).
"""

from __future__ import annotations

import io
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clear_bench.atomic import atomic_write_bytes
from clear_bench.cache import safe_filename
from clear_bench.checkpoints import load_tensors
from clear_bench.errors import UserError

STATE_FORMAT = "clear-bench/lecl-train-state"
STATE_VERSION = 1


class ResumeError(UserError):
    """A training-state checkpoint that cannot be resumed from (missing, unreadable or another run's)."""


def checkpoint_stem(arch: str, mode: str, experiment: str) -> str:
    """``{arch}-moco-{mode}-{experiment}``, the file-name stem of the seed's checkpoints (an experiment name
    that is not a plain file name is made one by the core's :func:`safe_filename`, as the run folder is)."""
    return f"{arch}-moco-{mode}-{safe_filename(experiment)}"


def run_stem(config: Any) -> str:
    """The stem of a run's training states: its ``runtime.checkpoint_stem`` (made a plain file name), else
    :func:`checkpoint_stem` of its arch, mode and experiment."""
    stem = config.runtime.checkpoint_stem
    if stem:
        return safe_filename(stem)
    return checkpoint_stem(config.model.arch, config.mode, config.experiment)


def checkpoint_name(stem: str, epoch: int) -> str:
    """``{stem}-checkpoint_{epoch:04d}.pth.tar``; ``epoch`` counts from 1 (the epoch in progress or done)."""
    return f"{stem}-checkpoint_{epoch:04d}.pth.tar"


def list_checkpoints(folder: Path, stem: str) -> list[Path]:
    """This run's training-state checkpoints in ``folder``, oldest epoch first."""
    pattern = re.compile(re.escape(stem) + r"-checkpoint_(\d+)\.pth\.tar$")
    found = [
        (int(m.group(1)), p)
        for p in folder.glob(f"{stem}-checkpoint_*.pth.tar")
        if (m := pattern.search(p.name))
    ]
    return [p for _, p in sorted(found)]


def save_state(path: Path, state: dict[str, Any]) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename (never a half-written file)."""
    buffer = io.BytesIO()
    torch.save({"format": STATE_FORMAT, "format_version": STATE_VERSION, **state}, buffer)
    atomic_write_bytes(path, buffer.getbuffer())


def load_state(path: Path, data: bytes | None = None) -> dict[str, Any]:
    """Read a training state (``weights_only=True``) from ``path``, or from ``data``, the bytes of that file
    (received from another rank); :class:`ResumeError` naming the file otherwise."""
    if data is None and not path.is_file():
        raise ResumeError(f"--resume: no training-state checkpoint at {path}")
    source: Path | bytes = path if data is None else data
    state = load_tensors(source, what="training-state checkpoint", origin=path, error=ResumeError)
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise ResumeError(f"{path}: field 'format' is not {STATE_FORMAT!r}; is it an encoder checkpoint?")
    if state.get("format_version") != STATE_VERSION:
        raise ResumeError(
            f"{path}: field 'format_version' is {state.get('format_version')!r}, expected {STATE_VERSION}"
        )
    return state


def capture_rng() -> dict[str, Any]:
    """The python, numpy and torch (CPU and CUDA) generator states as checkpoint-safe values."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": {"version": version, "state": list(internal), "gauss": gauss},
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng`."""
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    nps = state["numpy"]
    np.random.set_state(
        (nps["kind"], nps["keys"].numpy().astype(np.uint32), nps["pos"], nps["has_gauss"], nps["cached"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
