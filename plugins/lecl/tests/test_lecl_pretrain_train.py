"""Training end to end on toy scans: exact resume after an interruption; the encoder checkpoint it writes."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from clear_bench_lecl.checkpoint import load_encoder_checkpoint
from clear_bench_lecl.pretrain import pretrainer_specs
from lecl_pretrain_helpers import TOY_SOURCE, tiny_config

from clear_bench.cli import main as cli_main
from clear_bench.registry import load_registry

SETTINGS = {"runtime": {"checkpoint_every_steps": 2, "progress": False, "threads": 1}}


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six steps (two epochs of three) without interruption, through the spec's typed run (as a benchmark
    YAML's ``pretrain:`` entry is trained); returns the run folder."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("straight")
    (spec,) = pretrainer_specs()
    # the output folder given to the run wins over the recipe's
    encoder = spec.run(tiny_config(root, "resume", **SETTINGS), root / "given", options={"threads": 1})
    assert encoder is not None and encoder.is_file()
    assert encoder.parent == root / "given" and not (root / "resume").exists()
    return encoder.parent


def _rows(folder: Path) -> list[dict[str, str]]:
    (log,) = folder.glob("*-loss.csv")
    with log.open() as handle:
        return list(csv.DictReader(handle))


def test_interrupted_and_resumed_run_ends_with_identical_weights(
        straight: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    yaml_path = tiny_config(tmp_path, "resume", **SETTINGS)
    args = ["pretrain", "lecl", "--config", str(yaml_path)]
    assert cli_main([*args, "--max-steps", "4"]) == 0  # stops in the middle of epoch 2
    assert "stopped at step 4/6" in capsys.readouterr().out
    assert not list((tmp_path / "resume").glob("*-encoder.pt"))
    assert cli_main([*args, "--resume"]) == 0  # the newest checkpoint of the output folder
    assert "resumed from" in capsys.readouterr().out

    (resumed,) = (tmp_path / "resume").glob("*-encoder.pt")
    (uninterrupted,) = straight.glob("*-encoder.pt")
    _, meta_a = load_encoder_checkpoint(uninterrupted)
    _, meta_b = load_encoder_checkpoint(resumed)
    state_a = torch.load(uninterrupted, weights_only=True)["state_dict"]
    state_b = torch.load(resumed, weights_only=True)["state_dict"]
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        assert torch.equal(state_a[key], state_b[key]), key
    assert meta_a["fingerprint"] == meta_b["fingerprint"]
    rows_a, rows_b = _rows(straight), _rows(tmp_path / "resume")
    assert [r["step"] for r in rows_b] == ["1", "2", "3", "4", "5", "6"]
    assert [(r["loss"], r["lr"], r["momentum"]) for r in rows_a] == \
        [(r["loss"], r["lr"], r["momentum"]) for r in rows_b]


def test_resume_refuses_a_checkpoint_of_other_settings(
        straight: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    yaml_path = tiny_config(tmp_path, "resume", **SETTINGS)
    (checkpoint, *_) = sorted(straight.glob("*-checkpoint_*.pth.tar"))
    args = ["pretrain", "lecl", "--config", str(yaml_path), "--lr", "0.01", "--resume", str(checkpoint)]
    code = cli_main(args)
    assert code == 2
    assert "optim.base_lr" in capsys.readouterr().err


def test_encoder_checkpoint_loads_strictly_and_through_the_encoder_plugin(straight: Path) -> None:
    (encoder_path,) = straight.glob("*-encoder.pt")
    assert encoder_path.name == "vit_tiny_patch16-lecl-resume-encoder.pt"
    module, meta = load_encoder_checkpoint(encoder_path)
    assert meta["arch"] == "vit_tiny_patch16" and meta["preprocessing"]["image_size"] == 32
    assert meta["config"]["steps"] == 6 and meta["config"]["mode"] == "lecl"
    (state_path, *_) = sorted(straight.glob("*-checkpoint_*.pth.tar"))[-1:]
    trained = torch.load(state_path, weights_only=True)["model"]
    for key, value in module.state_dict().items():
        assert torch.equal(value, trained[f"backbone.{key}"]), key
    with torch.no_grad():
        features = module(torch.randn(2, 3, 32, 32))
    assert features.shape == (2, 64)

    spec = load_registry([TOY_SOURCE]).encoder("lecl-vit")
    encoder = spec.build({"checkpoint": str(encoder_path)})
    assert not encoder.random_init and encoder.embed_dim == 64
    assert encoder.weights_digest == meta["sha256"]
    assert encoder.preprocessing.image_size == 32


def test_loss_log_and_curve_are_written(straight: Path) -> None:
    rows = _rows(straight)
    assert len(rows) == 6 and all(float(r["loss"]) > 0 for r in rows)
    assert float(rows[0]["lr"]) == 0.0  # warm-up starts at zero, as in MoCo v3
    (png,) = straight.glob("*-loss.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_benchmark_run_resumes_if_a_state_exists_and_starts_afresh_otherwise(
        straight: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A run killed before its first training state leaves only a loss log: the next benchmark run must
    start afresh there, not fail on resume (``RESUME_IF_PRESENT``, what ``clear-bench run`` passes)."""
    from clear_bench.specs import RESUME_IF_PRESENT

    (spec,) = pretrainer_specs()
    out = tmp_path / "killed-early"
    out.mkdir()
    (out / "stray-loss.csv").write_text("step,loss\n")
    recipe = tiny_config(tmp_path, "resume", **SETTINGS)
    assert spec.run(recipe, out, resume=RESUME_IF_PRESENT, options={"max_steps": 2}) is None
    assert "resumed from" not in capsys.readouterr().out
    encoder = spec.run(recipe, out, resume=RESUME_IF_PRESENT)
    assert "resumed from" in capsys.readouterr().out
    (uninterrupted,) = straight.glob("*-encoder.pt")
    state_a = torch.load(uninterrupted, weights_only=True)["state_dict"]
    state_b = torch.load(encoder, weights_only=True)["state_dict"]
    assert all(torch.equal(state_a[key], state_b[key]) for key in state_a)
