"""``clear-bench run`` with a tuning grid and a transfer pair: the chosen settings and the transfer board
reach the leaderboard folder, and ``clear-bench leaderboard`` renders them again from the run folder."""

from __future__ import annotations

import json
import re
from pathlib import Path

from clear_bench.builtin import clear_bench_aggregators
from clear_bench.cli import main

BENCH = """
name: tuned
output_dir: run
cache_dir: cache
leaderboard_dir: boards
preprocessing: {windows: [soft-tissue]}
extraction: {batch_size: 32, num_workers: 0}
encoders: [hu-reference]
tasks:
  - name: lung-disease
    id: cohort-a
    options: {source: {name: synthetic, patients: 24, slices: 6, matrix: 32, seed: 0, cache_dir: volumes}}
  - name: lung-disease
    id: cohort-b
    options: {source: {name: synthetic, patients: 24, slices: 6, matrix: 32, seed: 1, cache_dir: volumes}}
aggregators:
  - {name: abmil, options: {hidden_dim: 8, attention_dim: 8}}
  - mean-pool
crossval:
  folds: 2
  epochs: 2
  patience: 2
  bootstrap: 20
  batch_size: 8
  permutations: 0
  comparison_resamples: 200
  workers: 1
  tuning: {grid: {lr: [0.001, 0.01], hidden_dim: [8, 12]}, inner_folds: 2, heads: [abmil]}
transfer:
  - {train: cohort-a, test: cohort-b}
"""


def test_a_tuned_run_with_a_transfer_pair(tmp_path: Path) -> None:
    config = tmp_path / "tuned.yaml"
    config.write_text(BENCH)
    assert main(["run", str(config), "--no-progress"]) == 0
    boards = tmp_path / "boards"
    board = (boards / "cohort-a.md").read_text()
    tuning = board.split("## Tuning")[1].split("\n## ")[0]
    assert "Rows of `abmil` are tuned" in tuning and "lr in {0.001, 0.01} x hidden_dim in {8, 12}" in tuning
    [line] = [line for line in tuning.splitlines() if line.startswith("| hu-reference | abmil |")]
    assert "(2 folds)" in line or line.count("(1 fold)") == 2
    assert "mean-pool" not in tuning
    # the compute table counts the parameters of the head width the folds chose
    widths = {int(width) for width in re.findall(r"hidden_dim=(\d+)", line)}
    compute = {r["aggregator"]: r for r in json.loads((boards / "cohort-a.json").read_text())["compute"]}
    spec = next(s for s in clear_bench_aggregators() if s.name == "abmil")
    dim = compute["abmil"]["embed_dim"]
    built = [spec.build(dim, 4, {"hidden_dim": width, "attention_dim": 8}) for width in widths]
    assert compute["abmil"]["head_parameters"] in {sum(p.numel() for p in m.parameters()) for m in built}
    if len(widths) == 1:
        assert compute["abmil"]["head_parameters"] == sum(p.numel() for p in built[0].parameters())
    transfer = (boards / "cohort-a-to-cohort-b.transfer.md").read_text()
    assert transfer.startswith("# cohort-a → cohort-b")
    assert "| hu-reference | abmil |" in transfer and "| hu-reference | mean-pool |" in transfer
    records = json.loads((boards / "cohort-a-to-cohort-b.transfer.json").read_text())["transfer"]
    assert {r["aggregator"] for r in records} == {"abmil", "mean-pool"}
    assert all(r["test_patients"] == 24 and r["train_patients"] + r["val_patients"] == 24 for r in records)
    assert all(r["in_task_auroc"] is not None for r in records)
    before = {path.name: path.read_bytes() for path in boards.iterdir() if path.suffix in (".md", ".csv")}
    assert main(["leaderboard", str(tmp_path / "run"), "--out", str(tmp_path / "again")]) == 0
    again = {path.name: path.read_bytes() for path in (tmp_path / "again").iterdir()
             if path.suffix in (".md", ".csv")}
    assert again == before
