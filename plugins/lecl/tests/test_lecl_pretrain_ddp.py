"""Two-process DDP (gloo, CPU) through `torchrun -m clear_bench pretrain lecl`: the ranks stay identical and
match one process trained on the same global batches."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from clear_bench_lecl.pretrain.config import load_config
from clear_bench_lecl.pretrain.train import DistContext, Trainer, state_digest
from lecl_pretrain_helpers import tiny_config, torchrun


def _losses(folder: Path) -> list[float]:
    (log,) = folder.glob("*-loss.csv")
    with log.open() as handle:
        return [float(row["loss"]) for row in csv.DictReader(handle)]


def test_two_ranks_match_each_other_and_one_process(tmp_path: Path) -> None:
    # fp32, so that the only difference between the runs is the order of floating-point sums
    settings = {"optim": {"epochs": 1, "precision": "fp32"}}
    ddp_yaml = tiny_config(tmp_path, "ddp", **settings)
    result = torchrun(["-m", "clear_bench", "pretrain", "lecl", "--config", str(ddp_yaml)])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "2 process(es)" in result.stdout
    assert "encoder checkpoint:" in result.stdout

    torch.set_num_threads(1)
    single = Trainer(load_config(tiny_config(tmp_path, "single", **settings)), DistContext())
    single.fit()

    (checkpoint,) = (tmp_path / "ddp").glob("*-checkpoint_0001.pth.tar")
    state = torch.load(checkpoint, weights_only=True)
    assert state["world_size"] == 2 and state["step"] == 3 and len(state["rng"]) == 2
    # Every rank hashed its own weights: equal digests = identical weights, and rank 0's are the saved ones.
    rank0, rank1 = state["rank_digests"]
    assert rank0 == rank1 == state_digest(state["model"])

    ddp_losses, single_losses = _losses(tmp_path / "ddp"), _losses(tmp_path / "single")
    assert len(ddp_losses) == len(single_losses) == 3
    # Step 1: same weights, same global batch -> same loss (keys gathered across ranks, global BatchNorm).
    assert ddp_losses[0] == pytest.approx(single_losses[0], rel=1e-5)
    assert ddp_losses == pytest.approx(single_losses, rel=1e-4)
    trained = single.model.state_dict()
    assert state["model"].keys() == trained.keys()
    for key, value in state["model"].items():
        # Adam turns rounding-level gradient differences into at most a few lr-sized steps
        torch.testing.assert_close(value, trained[key], rtol=0, atol=5 * single.peak_lr, msg=key)
