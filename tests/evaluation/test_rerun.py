"""A rerun over stored folds reads no bags and recomputes no statistics, and still gives the same board."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from clear_bench.builtin import clear_bench_aggregators, clear_bench_metrics
from clear_bench.config import ComponentRef
from clear_bench.evaluation.compare import EncoderRole
from clear_bench.evaluation.settings import TrainConfig
from clear_bench.evaluation.synthetic import planted_bags
from clear_bench.leaderboard import render_task_board
from clear_bench.pipeline import statistics
from clear_bench.pipeline.evaluate import EvaluationProtocol, TaskInputs, evaluate_task
from clear_bench.pipeline.features import FolderBags
from clear_bench.pipeline.plan import PlannedHead

SPECS = {spec.name: spec for spec in clear_bench_aggregators()}


@dataclass
class CountingBags(FolderBags):
    """An encoder's bags in memory that counts how often evaluation reads them."""

    loads: list[int] = field(default_factory=list)

    def load(self, scan_ids):
        self.loads.append(len(scan_ids))
        return super().load(scan_ids)


def evaluate(folder: Path, bootstrap: int = 40):
    signal, labels = planted_bags(24, 10, 5, n_labels=2, n_signal=3, amplitude=3.0, seed=3)
    noise, _ = planted_bags(24, 10, 4, n_labels=2, amplitude=0.0, seed=4)
    encoders = [CountingBags("floor", "in memory", noise, "memory-floor",
                             EncoderRole("floor", reference=True)),
                CountingBags("signal", "in memory", signal, "memory-signal", EncoderRole("signal"))]
    abmil = ComponentRef("abmil", "abmil", {"hidden_dim": 8, "attention_dim": 8})
    heads = [PlannedHead(abmil, SPECS["abmil"])]
    protocol = EvaluationProtocol(folds=3, seed=0, val_fraction=0.2, bootstrap=bootstrap,
                                  train=TrainConfig(epochs=2, lr=1e-2, batch_size=8, patience=2),
                                  comparison_resamples=300, permutations=2, workers=1)
    inputs = TaskInputs("task", "multilabel", ["a", "b"], labels)
    result = evaluate_task(inputs, encoders, heads, protocol, clear_bench_metrics(), folder)
    return render_task_board(result.board, benchmark="t", version="0"), encoders


def test_a_rerun_reads_no_bags_and_no_statistic_is_computed_twice(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    first, encoders = evaluate(tmp_path)
    assert all(source.loads == [24] for source in encoders)
    stored = sorted(path.name.split("-")[0] for path in (tmp_path / "stats").glob("*.json"))
    assert stored == ["comparisons", "null", "null", "summary", "summary"]

    calls = []
    for name in ("summarize", "paired_draws", "compare_pairs", "all_pairs"):
        original = getattr(statistics, name)
        monkeypatch.setattr(statistics, name,
                            lambda *a, _f=original, _n=name, **k: calls.append(_n) or _f(*a, **k))
    again, encoders = evaluate(tmp_path)
    assert again == first
    assert calls == []
    assert all(source.loads == [] for source in encoders)

    changed, _ = evaluate(tmp_path, bootstrap=41)  # another setting: new keys, computed again
    assert "summarize" in calls and "paired_draws" not in calls
    assert "41 resamples" in changed


def test_an_unreadable_statistic_is_computed_again(tmp_path: Path) -> None:
    first, _ = evaluate(tmp_path)
    for path in (tmp_path / "stats").glob("summary-*.json"):
        path.write_text(json.dumps({"not": "a summary"}))
    again, _ = evaluate(tmp_path)
    assert again == first
    for path in (tmp_path / "stats").glob("summary-*.json"):
        assert "metrics" in json.loads(path.read_text())
