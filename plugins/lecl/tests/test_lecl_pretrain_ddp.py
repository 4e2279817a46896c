"""Two-process DDP (gloo, CPU) through `torchrun -m clear_bench pretrain lecl`: the ranks stay identical and
match one process trained on the same global batches."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from clear_bench_lecl.pretrain.config import load_config
from clear_bench_lecl.pretrain.train import DistContext, Trainer, state_digest
from lecl_pretrain_helpers import HERE, tiny_config, torchrun

SPLIT_WORKER = str(HERE / "lecl_split_folders_worker.py")


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


def _split_run(recipe: Path, base: Path, resume: str) -> subprocess.CompletedProcess[str]:
    try:
        return torchrun([SPLIT_WORKER, str(recipe), str(base), resume], timeout=150)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the ranks hung (resume {resume}): {str(exc.output)[-2000:]} {str(exc.stderr)[-2000:]}")


@pytest.mark.slow
def test_ranks_that_see_different_output_folders_take_rank_0s_checkpoint_decisions(tmp_path: Path) -> None:
    # Each rank writes to its own folder, as nodes without a shared filesystem do; only rank 0's gets files.
    recipe = tiny_config(tmp_path, "split", optim={"epochs": 2, "precision": "fp32"},
                         runtime={"max_steps": 4, "checkpoint_every_steps": 0})
    base = tmp_path / "split-runs"
    first = _split_run(recipe, base, "no")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    saved = sorted((base / "rank0").glob("*-checkpoint_*.pth.tar"))[-1]  # the state at step 4
    assert not (base / "rank1").exists() or not any((base / "rank1").iterdir())
    # Rank 1 sees no state, or another run's file under the same name: it must still resume rank 0's.
    (base / "rank1").mkdir(parents=True, exist_ok=True)
    (base / "rank1" / saved.name).write_bytes(b"another run's training state")

    recipe = tiny_config(tmp_path, "split", optim={"epochs": 2, "precision": "fp32"},
                         runtime={"checkpoint_every_steps": 0})  # the same training, to its end
    second = _split_run(recipe, base, "if-present")
    output = second.stdout[-3000:] + second.stderr[-3000:]
    assert second.returncode == 0, output
    assert "resumed from" in second.stdout and "at step 4/6" in second.stdout
    assert "rank 0 finished" in second.stdout and "rank 1 finished" in second.stdout, output
    # Rank 0's folder held a state, rank 1's none of this run: no extra final state was asked of one rank.
    (final,) = (base / "rank0").glob("*-checkpoint_0002.pth.tar")
    state = torch.load(final, weights_only=True)
    assert state["step"] == 6
    rank0, rank1 = state["rank_digests"]
    assert rank0 == rank1 == state_digest(state["model"])
    assert list((base / "rank0").glob("*-encoder.pt"))

    # --resume with no state in rank 0's folder is an error on every rank, even where rank 1 sees one.
    other = tmp_path / "split-missing"
    (other / "rank1").mkdir(parents=True)
    (other / "rank1" / saved.name).write_bytes(saved.read_bytes())
    third = _split_run(recipe, other, "latest")
    assert third.returncode != 0
    assert third.stderr.count("--resume: no checkpoint") >= 2, third.stderr[-3000:]
