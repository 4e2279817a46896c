"""``clear-bench run`` of a benchmark with an encoder it pretrains itself (a tiny LeCL ViT), killed with
SIGKILL at three points of the pretraining: before its first training state, just after the first, and in
the middle of the last epoch. Each rerun resumes from the newest state (or starts afresh when there is
none); the run that completes trains the weights of an uninterrupted run, bit for bit, and writes its
boards."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
import yaml
from clear_bench_lecl.pretrain.state import load_state

pytestmark = pytest.mark.slow

TOY_SOURCE = Path(__file__).resolve().parents[2] / "plugins" / "lecl" / "tests" / "lecl_toy_source.py"
STEPS = 9  # 54 toy slices, batches of 16: 3 steps per epoch, 3 epochs, a training state after each


def _recipe(path: Path) -> Path:
    path.write_text(yaml.safe_dump({
        "experiment": "tiny", "seed": 0, "plugins": [str(TOY_SOURCE)],
        "data": {"source": "lecl-toy", "options": {"scans": 6, "slices": 9}, "windows": ["soft-tissue"]},
        "model": {"arch": "vit_tiny_patch16",
                  "arch_kwargs": {"patch_size": 8, "embed_dim": 64, "depth": 2, "num_heads": 2},
                  "image_size": 32, "dim": 32, "mlp_dim": 64},
        "optim": {"epochs": 3, "batch_size": 16, "base_lr": 1.0e-3, "warmup_epochs": 0.5},
        "runtime": {"progress": False, "threads": 1},
    }))
    return path


def _config(kit, folder: Path, name: str) -> Path:
    return kit.bench_yaml(folder, file=f"{name}.yaml", cache=f"cache-{name}", out=f"run-{name}",
                          boards=f"boards-{name}", extra=f"checkpoint_dir: ckpt-{name}",
                          encoders="[hu-reference, {name: lecl-vit, id: lecl-tiny, "
                                   "pretrain: {name: lecl, config: recipe.yaml}}]")


def _steps_logged(folder: Path) -> int:
    """The last training step in the pretraining's loss log (0 before it has one)."""
    for log in folder.glob("*/*-loss.csv"):
        with log.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        return int(rows[-1]["step"]) if rows else 0
    return 0


def _states(folder: Path) -> list[Path]:
    return sorted(folder.glob("*/*-checkpoint_*.pth.tar"))



def _weights(folder: Path) -> dict[str, torch.Tensor]:
    (encoder,) = folder.glob("*/*-encoder.pt")
    return torch.load(encoder, weights_only=True)["state_dict"]


def test_sigkill_during_pretraining_then_rerun_trains_the_uninterrupted_weights_and_boards(
        tmp_path: Path, kit) -> None:
    kit.write_labels(tmp_path / "labels.csv", kit.write_cohort(tmp_path / "scans", 8))
    _recipe(tmp_path / "recipe.yaml")
    result = kit.run_here("run", _config(kit, tmp_path, "straight"), "--no-progress")
    assert result.returncode == 0, result.stdout[-3000:]

    config, ckpt = _config(kit, tmp_path, "killed"), tmp_path / "ckpt-killed"
    points = [
        ("before the first training state", lambda: _steps_logged(ckpt) >= 2, (2, 3), 0),
        ("just after the first state", lambda: len(_states(ckpt)) >= 1, (3, 5), 1),
        ("in the middle of the last epoch", lambda: _steps_logged(ckpt) >= 7, (7, 8), 2),
    ]
    for index, (where, reached, steps, states) in enumerate(points):
        kit.kill_when(config, tmp_path, tmp_path / f"killed-{index}.log", reached)
        assert steps[0] <= _steps_logged(ckpt) <= steps[1], where
        assert len(_states(ckpt)) == states, where
        assert not list(ckpt.glob("*/*-encoder.pt")) and not (tmp_path / "boards-killed").exists(), where
        for epoch, state in enumerate(_states(ckpt), start=1):  # whole, so the next run resumes from it
            assert load_state(state)["step"] == 3 * epoch, state

    result = kit.run_here("run", config, "--no-progress")
    assert result.returncode == 0, result.stdout[-3000:]
    assert "resumed from" in result.stdout
    assert _steps_logged(ckpt) == STEPS
    straight, resumed = _weights(tmp_path / "ckpt-straight"), _weights(ckpt)
    assert straight.keys() == resumed.keys()
    for key, value in straight.items():
        assert torch.equal(value, resumed[key]), key
    assert kit.boards(tmp_path / "boards-killed") == kit.boards(tmp_path / "boards-straight")
