"""Shared by the pretraining tests: a tiny config and a torchrun launcher."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
TOY_SOURCE = HERE / "lecl_toy_source.py"


def tiny_config(tmp_path: Path, name: str = "tiny", **sections: dict[str, Any]) -> Path:
    """A 32 px two-block ViT on 6 toy scans of 9 slices (54 slices, 18 with lesions); returns its YAML."""
    config: dict[str, Any] = {
        "experiment": name,
        "seed": 0,
        "plugins": [str(TOY_SOURCE)],
        "data": {"source": "lecl-toy", "options": {"scans": 6, "slices": 9}, "windows": ["soft-tissue"]},
        "model": {"arch": "vit_tiny_patch16",
                  "arch_kwargs": {"patch_size": 8, "embed_dim": 64, "depth": 2, "num_heads": 2},
                  "image_size": 32, "dim": 32, "mlp_dim": 64},
        "optim": {"epochs": 2, "batch_size": 16, "base_lr": 1.0e-3, "warmup_epochs": 0.5},
        "runtime": {"output_dir": str(tmp_path / name), "progress": False, "threads": 1},
    }
    for section, values in sections.items():
        if isinstance(values, dict) and isinstance(config.get(section), dict):
            config[section].update(values)
        else:
            config[section] = values
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def torchrun(args: list[str], nproc: int = 2, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """``python -m torch.distributed.run --nproc-per-node N ARGS`` on a free local port, one thread each.

    Past ``timeout`` the launcher and its workers are killed (a hang fails the test instead of blocking it)
    and :class:`subprocess.TimeoutExpired` is raised with their output so far.
    """
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
               "--master-addr", "127.0.0.1", "--master-port", str(free_port()), *args]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        raise subprocess.TimeoutExpired(command, timeout, output=stdout, stderr=stderr) from None
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
