"""Checkpoints from anywhere: a file whose pickle would run code is refused by every reader, nothing in it
runs, the message says why without suggesting unsafe loading, and a run carries on without that encoder."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from clear_bench_foundation.merlin_weights import read_state
from clear_bench_lecl.checkpoint import CheckpointError, read_encoder_checkpoint
from clear_bench_lecl.pretrain.state import ResumeError, load_state

from clear_bench.checkpoints import load_tensors
from clear_bench.errors import UserError


class _RunsCode:
    """Unpickling this calls ``os.system``: what a hostile checkpoint does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture()
def hostile(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "code-ran"
    path = tmp_path / "weights.pth.tar"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "extra": _RunsCode(marker)}, path)
    return path, marker


READERS = {
    "lecl encoder": (lambda p: read_encoder_checkpoint(p), CheckpointError),
    "training state": (lambda p: load_state(p), ResumeError),
    "merlin": (lambda p: read_state(p), UserError),
    "core": (lambda p: load_tensors(p), UserError),
}


@pytest.mark.parametrize("reader", sorted(READERS))
def test_every_reader_refuses_an_executable_pickle(reader: str, hostile: tuple[Path, Path]) -> None:
    path, marker = hostile
    read, error = READERS[reader]
    with pytest.raises(error) as caught:
        read(path)
    message = str(caught.value)
    assert str(path) in message and "refused" in message and "executable Python objects" in message
    assert "system" in message  # the object it would have called
    assert "weights_only" not in message and "trusted source" not in message  # no advice to load it unsafely
    assert not marker.exists()


def test_a_damaged_checkpoint_is_unreadable_not_unsafe(tmp_path: Path) -> None:
    path = tmp_path / "cut.pt"
    torch.save({"w": torch.zeros(64)}, path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError) as caught:
        read_encoder_checkpoint(path)
    assert str(path) in str(caught.value) and "not a readable encoder checkpoint" in str(caught.value)
    assert "refused" not in str(caught.value) and "weights_only" not in str(caught.value)


def test_a_run_leaves_out_the_encoder_of_a_hostile_checkpoint(kit, tmp_path: Path, hostile) -> None:
    path, marker = hostile
    kit.write_labels(tmp_path / "labels.csv", kit.write_cohort(tmp_path / "scans", 8))
    encoders = ("[hu-reference, {name: lecl-vit, id: untrusted, options: "
                f"{{checkpoint: {path}, arch: vit_tiny_patch16, img_size: 32}}}}]")
    bench = kit.bench_yaml(tmp_path, encoders=encoders)
    result = kit.run_here("run", bench, "--no-progress")
    assert result.returncode == 0, result.stdout
    assert not marker.exists()
    left_out = json.loads((tmp_path / "run" / "run.json").read_text())["encoders_left_out"]
    assert any("untrusted" in item and "refused" in item for item in left_out), left_out
    board = (tmp_path / "boards" / "finding.md").read_text()
    assert "| hu-reference |" in board and "untrusted" in board
