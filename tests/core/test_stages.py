"""One set of stages behind every entry point: ``run`` and ``evaluate --features`` give the same board,
the Python API drives a benchmark and reads its results, and a metric plugin reaches the board."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

import clear_bench
from clear_bench.cli import main
from clear_bench.components import load_task
from clear_bench.errors import ConfigError
from clear_bench.registry import load_registry

BENCH = """
name: tiny
output_dir: run
cache_dir: cache
leaderboard_dir: boards
{plugins}
preprocessing: {{windows: [soft-tissue, lung]}}
extraction: {{batch_size: 32, num_workers: 0}}
encoders:
  - hu-reference
  - name: lecl-vit
    id: vit-tiny
    options: {{weights: random, arch: vit_tiny_patch16, img_size: 32}}
tasks:
  - name: lesion-location
    options: {{source: {{name: synthetic, patients: 20, slices: 8, matrix: 48, cache_dir: volumes}}}}
aggregators: [abmil, mean-pool]
crossval: {{folds: 2, epochs: 2, patience: 2, bootstrap: 50, batch_size: 8, permutations: 2,
           comparison_resamples: 2000}}
"""

MAE_PLUGIN = '''
"""A metric plugin: the mean absolute error of each label's probabilities (lower is better)."""

import numpy as np

from clear_bench import hookimpl
from clear_bench.specs import MetricSpec, per_label_metric


def absolute_error(y, scores, weights):
    w = np.ones((1, len(y))) if weights is None else np.atleast_2d(weights)
    return (w * np.abs(scores - y.astype(float))).sum(axis=1) / w.sum(axis=1)


@hookimpl
def clear_bench_metrics():
    return [MetricSpec("mae", per_label_metric(absolute_error), higher_is_better=False, title="MAE")]
'''


def test_run_and_evaluate_features_give_identical_boards(tmp_path: Path) -> None:
    config = tmp_path / "tiny.yaml"
    config.write_text(BENCH.format(plugins=""))
    assert main(["run", str(config), "--no-progress"]) == 0
    exported = tmp_path / "exported"
    assert main(["extract", str(config), "--no-progress", "--export-clear", str(exported)]) == 0

    registry = load_registry()
    spec = registry.task("lesion-location")
    data = load_task(registry, spec, {"source": {"name": "synthetic", "patients": 20, "slices": 8,
                                                 "matrix": 48, "cache_dir": str(tmp_path / "volumes")}})
    with (tmp_path / "labels.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "patient_id", *data.label_names])
        for scan_id, label in sorted(data.labels.items()):
            writer.writerow([scan_id, data.patient_of[scan_id], *(int(v) for v in label)])

    out = tmp_path / "features-run"
    assert main(["evaluate", "--features", f"hu-reference={exported / 'hu-reference'}",
                 "--features", f"vit-tiny={exported / 'vit-tiny'}", "--labels", str(tmp_path / "labels.csv"),
                 "--out", str(out), "--task", "lesion-location", "--name", "tiny",
                 "--aggregator", "abmil", "--aggregator", "mean-pool", "--folds", "2", "--epochs", "2",
                 "--patience", "2", "--bootstrap", "50", "--batch-size", "8", "--permutations", "2",
                 "--comparison-resamples", "2000"]) == 0
    from_run = (tmp_path / "boards" / "lesion-location.md").read_text()
    from_features = (out / "leaderboards" / "lesion-location.md").read_text()
    assert "| vit-tiny (random init) | abmil |" in from_features
    assert "`hu-reference`: non-learned" in from_features
    # the same board but for what the rows cost: feature folders carry no encoder figures, and the heads
    # were trained again (their CV time is measured anew)
    assert _without_compute(from_features) == _without_compute(from_run)
    assert "| hu-reference | abmil | – | – | – | – | – |" in from_features


def _without_compute(board: str) -> str:
    head, _, rest = board.partition("\n## Compute\n")
    return head + "\n## " + rest.split("\n## ", 1)[1]


def test_python_api_runs_a_benchmark_and_reads_dataframes_with_a_metric_plugin(tmp_path: Path) -> None:
    (tmp_path / "mae_metric.py").write_text(MAE_PLUGIN)
    config = tmp_path / "tiny.yaml"
    config.write_text(BENCH.format(plugins="plugins: [mae_metric.py]"))

    result = clear_bench.run(config)
    tables = clear_bench.load_results(result.run_dir)

    assert len(result.tasks) == 1 and result.boards
    rows = tables.rows.set_index(["encoder", "aggregator"])
    assert set(rows.index) == {("hu-reference", "abmil"), ("hu-reference", "mean-pool"),
                               ("vit-tiny (random init)", "abmil"), ("vit-tiny (random init)", "mean-pool")}
    assert rows["auroc"].between(0, 1).all() and (rows["auroc_ci_low"] <= rows["auroc_ci_high"]).all()
    assert rows["mae"].between(0, 1).all() and rows["brier"].between(0, 1).all()  # plugin and built-in
    per_label = tables.metrics.query("metric == 'mae' and label != 'macro'")
    assert set(per_label["label"]) <= {"bone", "abdomen", "mediastinum", "liver", "lung", "kidney",
                                       "soft tissue", "pelvis"} and len(per_label) > 0
    # declared before any result: each vit-tiny row against the HU floor with the same head
    assert sorted(zip(tables.comparisons["row"], tables.comparisons["reference"], tables.comparisons["kind"],
                      strict=True)) == [
        ("vit-tiny (random init) + abmil", "hu-reference + abmil", "floor"),
        ("vit-tiny (random init) + mean-pool", "hu-reference + mean-pool", "floor")]
    assert tables.comparisons["p_holm"].between(0, 1).all()
    assert (tables.comparisons["p_holm"] >= tables.comparisons["p_value"]).all()
    predictions = tables.predictions
    assert set(predictions["aggregator"]) == {"abmil", "mean-pool"}
    assert predictions.groupby(["encoder", "aggregator"])["scan_id"].nunique().eq(20).all()
    assert predictions["probability"].between(0, 1).all()

    board = (tmp_path / "boards" / "lesion-location.md").read_text()
    header = next(line for line in board.splitlines() if line.startswith("| rank |"))
    assert "| MAE |" in header and "| Brier |" in header and "| ECE |" in header
    macro_mae = rows.loc[("hu-reference", "abmil"), "mae"]
    hu_line = next(line for line in board.splitlines() if "| hu-reference | abmil |" in line)
    cells = [c.strip() for c in hu_line.split("|")]
    mae_cell = cells[header.split("|").index(" MAE ")]
    assert mae_cell.startswith(f"{macro_mae:.3f}")


def test_create_encoder_builds_a_registered_encoder() -> None:
    encoder = clear_bench.create_encoder("lecl-vit", weights="random", arch="vit_tiny_patch16", img_size=32)
    assert encoder.random_init and encoder.embed_dim == 192
    import torch

    with torch.no_grad():
        out = encoder.model(torch.zeros(2, 3, 32, 32))
    assert out.shape == (2, 192) and np.isfinite(out.numpy()).all()


def test_create_encoder_refuses_an_unknown_option() -> None:
    with pytest.raises(ConfigError, match=r"archh.*did you mean 'arch'"):
        clear_bench.create_encoder("lecl-vit", archh="vit_tiny_patch16")




def test_building_a_component_checks_the_options_it_is_given() -> None:
    registry = load_registry()
    spec = registry.task("lesion-location")
    with pytest.raises(ConfigError) as error:
        load_task(registry, spec, {"source": {"name": "synthetic", "patient": 3, "slices": "many"}})
    lines = error.value.lines
    assert any("patient: unknown option (did you mean 'patients'?)" in line for line in lines)
    assert any("source 'synthetic': slices: expected int, got str 'many'" in line for line in lines)
