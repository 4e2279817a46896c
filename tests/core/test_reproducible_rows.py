"""Rows whose inputs are deterministic (non-learned references, random-init encoders) reproduce exactly
from a cold start in another folder with its own caches, and boards say which commit and package
versions produced them."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
from pathlib import Path

import pytest

from clear_bench.cli import main
from clear_bench.leaderboard import mask_measured
from clear_bench.pipeline.report import provenance

BENCH = """
name: repro
output_dir: run
cache_dir: cache
checkpoint_dir: checkpoints
leaderboard_dir: boards
preprocessing: {windows: [soft-tissue, lung]}
extraction: {batch_size: 32, num_workers: 0}
encoders:
  - hu-reference
  - name: image-probe
    options: {image_size: 48}
  - name: lecl-vit
    id: vit-tiny
    options: {weights: random, arch: vit_tiny_patch16, img_size: 32}
tasks:
  - name: lesion-location
    options: {source: {name: synthetic, patients: 16, slices: 8, matrix: 48, cache_dir: volumes}}
aggregators: [mean-pool]
crossval: {folds: 2, epochs: 2, patience: 2, bootstrap: 50, batch_size: 8, permutations: 0,
           comparison_resamples: 2000}
"""


def _run(folder: Path) -> Path:
    folder.mkdir()
    (folder / "repro.yaml").write_text(BENCH)
    assert main(["run", str(folder / "repro.yaml"), "--no-progress"]) == 0
    return folder


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("repro")
    return _run(root / "a"), _run(root / "b")


def test_deterministic_rows_reproduce_byte_for_byte(two_runs) -> None:
    a, b = two_runs
    results = Path("run") / "tasks" / "lesion-location" / "results"
    predictions = sorted(p.name for p in (a / results).glob("*.predictions.csv"))
    assert len(predictions) == 3  # hu-reference, image-probe, vit-tiny (random init) x mean-pool
    for name in predictions:
        assert (a / results / name).read_bytes() == (b / results / name).read_bytes(), name
    for name in sorted(p.name for p in (a / results).glob("*.json")):
        assert _unmeasured(json.loads((a / results / name).read_text())) == \
            _unmeasured(json.loads((b / results / name).read_text())), name
    board_a = (a / "boards" / "lesion-location.md").read_text()
    assert mask_measured(board_a) == mask_measured((b / "boards" / "lesion-location.md").read_text())
    assert "| image-probe | mean-pool |" in board_a


def test_boards_state_commit_and_package_versions(two_runs) -> None:
    a, _ = two_runs
    info = provenance()
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent
    ).stdout.strip()
    assert info["commit"] == head and len(head) == 40
    assert {"clear-bench", "torch", "numpy", "scikit-learn"} <= set(info["packages"])
    assert info["packages"]["torch"] == importlib.metadata.version("torch")
    for board in ("lesion-location.md", "overall.md"):
        text = (a / "boards" / board).read_text()
        assert f"Produced from commit `{head[:12]}`" in text
        assert f"torch {info['packages']['torch']}" in text and "clear-bench-lecl " in text
    manifest = json.loads((a / "run" / "run.json").read_text())
    assert manifest["provenance"]["commit"] == head


def _unmeasured(value):
    """``value`` without the measured costs (CV seconds, throughput), which differ between runs."""
    if isinstance(value, dict):
        return {k: _unmeasured(v) for k, v in value.items() if k not in ("cv_seconds", "throughput")}
    if isinstance(value, list):
        return [_unmeasured(v) for v in value]
    return value
