"""``clear-bench run`` end to end on a tiny synthetic cohort: leaderboards, resumption, left-out parts."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from clear_bench.cli import main

BENCH = """
name: tiny
output_dir: run
cache_dir: cache
checkpoint_dir: checkpoints
leaderboard_dir: boards
preprocessing: {{windows: [soft-tissue, lung]}}
extraction: {{batch_size: 32, num_workers: 0}}
encoders:
  - hu-reference
  - name: lecl-vit
    id: vit-tiny
    options: {{weights: random, arch: vit_tiny_patch16, img_size: 32}}
{extra_encoders}
tasks:
  - name: lesion-location
    options: {{source: {{name: synthetic, patients: 20, slices: 8, matrix: 48, cache_dir: volumes}}}}
aggregators: [abmil, mean-pool]
crossval: {{folds: 2, epochs: 2, patience: 2, bootstrap: 50, batch_size: 8, permutations: 2,
           comparison_resamples: 2000}}
"""


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, int]:
    folder = tmp_path_factory.mktemp("bench")
    extra = textwrap.indent(textwrap.dedent("""
        - name: lecl-vit
          id: vit-missing-weights
          options: {arch: vit_tiny_patch16, img_size: 32}
    """).strip(), "  ")
    config = folder / "tiny.yaml"
    config.write_text(BENCH.format(extra_encoders=extra))
    code = main(["run", str(config), "--no-progress"])
    return config, (folder / "boards" / "lesion-location.md").read_text(), code


def test_run_writes_task_and_overall_boards(first_run) -> None:
    config, board, code = first_run
    assert code == 0
    assert board.startswith("# lesion-location")
    for row in ("hu-reference | abmil", "hu-reference | mean-pool", "vit-tiny (random init) | abmil",
                "vit-tiny (random init) | mean-pool"):
        assert row in board
    assert "split fingerprint `" in board
    assert "| bone | abdomen | mediastinum | liver | lung | kidney | soft tissue | pelvis |" in board
    overall = (config.parent / "boards" / "overall.md").read_text()
    assert overall.count("| vit-tiny (random init) |") == 2
    assert (config.parent / "run" / "leaderboards" / "overall.md").is_file()


def test_encoder_without_weights_is_left_out_and_reported(first_run) -> None:
    config, board, _ = first_run
    assert "| vit-missing-weights |" not in board  # no row; listed among the encoders left out
    assert "- `vit-missing-weights`: lecl-vit: no checkpoint" in board
    manifest = json.loads((config.parent / "run" / "run.json").read_text())
    [failure] = [f for f in manifest["failures"] if "vit-missing-weights" in f]
    assert "no checkpoint given" in failure
    overall = (config.parent / "boards" / "overall.md").read_text()
    assert "## Encoders left out" in overall and "`vit-missing-weights`: lecl-vit: no checkpoint" in overall
    assert {e["id"] for e in manifest["encoders"]} == {"hu-reference", "vit-tiny"}


def test_rerun_reuses_embeddings_and_folds(first_run, capsys) -> None:
    config, board, _ = first_run
    folds = sorted((config.parent / "run" / "tasks" / "lesion-location" / "folds").glob("*.npz"))
    stamps = {path: path.stat().st_mtime_ns for path in folds}
    assert len(folds) == 2 * 2 * 2 * 3  # encoders x aggregators x folds x (the real labels + 2 permutations)
    capsys.readouterr()
    assert main(["run", str(config), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "0 extracted, 20 cached" in out
    assert {path: path.stat().st_mtime_ns for path in folds} == stamps
    assert (config.parent / "boards" / "lesion-location.md").read_text() == board


def test_evaluate_reads_the_cache_and_extracts_nothing(first_run, capsys) -> None:
    config, board, _ = first_run
    capsys.readouterr()
    assert main(["evaluate", str(config)]) == 0
    captured = capsys.readouterr()
    assert "extracted" not in captured.out
    assert "left out: encoder vit-missing-weights" in captured.err
    assert (config.parent / "boards" / "lesion-location.md").read_text() == board


def test_a_benchmark_without_the_reference_gets_it(tmp_path: Path) -> None:
    config = tmp_path / "noref.yaml"
    config.write_text(BENCH.format(extra_encoders="").replace("  - hu-reference\n", "")
                      .replace("aggregators: [abmil, mean-pool]", "aggregators: [mean-pool]"))
    assert "hu-reference" not in config.read_text()
    assert main(["run", str(config), "--no-progress"]) == 0
    board = (tmp_path / "boards" / "lesion-location.md").read_text()
    assert "| hu-reference | mean-pool |" in board and "| vit-tiny (random init) | mean-pool |" in board
