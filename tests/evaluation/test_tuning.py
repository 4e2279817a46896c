"""Equal tuning budgets: inner folds stay inside each outer fold's training patients, the chosen setting is
the best inner score (checked against a candidate trained by hand), tuned folds get their own keys, and
the chosen settings reach the board."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from clear_bench.builtin import clear_bench_aggregators, clear_bench_metrics
from clear_bench.config import ComponentRef
from clear_bench.evaluation.bags import pad_bags
from clear_bench.evaluation.batched import Member, train_members
from clear_bench.evaluation.compare import EncoderRole
from clear_bench.evaluation.crossval import _targets, fold_key
from clear_bench.evaluation.settings import TrainConfig
from clear_bench.evaluation.splits import make_splits
from clear_bench.evaluation.synthetic import planted_bags
from clear_bench.evaluation.training import predict, train_fold
from clear_bench.evaluation.tuning import (
    OuterFold,
    Tuning,
    inner_scores,
    inner_seed,
    inner_splits,
    macro_auroc,
    tune_folds,
)
from clear_bench.pipeline.evaluate import EvaluationProtocol, TaskInputs, evaluate_task
from clear_bench.pipeline.features import FolderBags
from clear_bench.pipeline.plan import PlannedHead
from clear_bench.pipeline.report import write_report

SPECS = {spec.name: spec for spec in clear_bench_aggregators()}
HEAD = {"hidden_dim": 8, "attention_dim": 8, "dropout": 0.0}
CONFIG = TrainConfig(epochs=4, patience=4, batch_size=8, max_instances=None, lr=5e-3)
GRID = Tuning({"lr": (1e-3, 1e-2), "weight_decay": (0.0, 0.1), "hidden_dim": (8, 12)}, inner_folds=3)


@pytest.fixture(scope="module")
def task():
    """40 patients with two scans each, a planted binary signal."""
    bags, labels = planted_bags(80, 8, 6, n_labels=1, n_signal=None, amplitude=0.8, seed=4)
    patient_of = {scan: f"p{int(scan.split('-')[1]) // 2:03d}" for scan in bags}
    for scan in bags:  # both scans of a patient share its label
        first = f"scan-{2 * (int(scan.split('-')[1]) // 2):04d}"
        labels[scan] = labels[first]
    splits = make_splits(labels, "binary", k=4, seed=0, patient_of=patient_of)
    padded = pad_bags(bags, splits.scan_ids)
    targets = _targets(padded.ids, labels, "binary", 1)
    return bags, labels, patient_of, splits, padded, targets


def test_inner_folds_stay_inside_the_outer_training_patients(task) -> None:
    _, _, patient_of, splits, padded, targets = task
    for index, fold in enumerate(splits.folds):
        inner = inner_splits(splits, index, targets, padded, "binary", 3, 0.2, seed=0)
        held = {patient_of[s] for s in fold.test + fold.val}
        assert len(inner.folds) == 3
        tested = []
        for part in inner.folds:
            scans = part.train + part.val + part.test
            assert set(scans) <= set(fold.train)  # no outer test or outer validation scan
            assert not {patient_of[s] for s in scans} & held
            assert not {patient_of[s] for s in part.test} & {patient_of[s] for s in part.train + part.val}
            assert part.val
            tested += part.test
        assert sorted(tested) == sorted(fold.train)


def test_the_chosen_setting_has_the_best_inner_score(task) -> None:
    _, _, _, splits, padded, targets = task
    folds = [OuterFold(splits, index, targets) for index in (0, 1)]
    spec = SPECS["abmil"]
    scores = inner_scores(folds, padded, "binary", 1, spec, HEAD, CONFIG, GRID)
    candidates = GRID.candidates()
    assert len(scores) == 2 and all(len(s) == len(candidates) == 8 for s in scores)
    assert len({round(v, 6) for v in scores[0]}) > 1  # the settings matter

    # Candidate 5 of outer fold 1, trained by hand on each inner fold, one at a time.
    settings = candidates[5]
    inner = inner_splits(splits, 1, targets, padded, "binary", 3, CONFIG.val_fraction, CONFIG.seed)
    config = dataclasses.replace(CONFIG, lr=settings["lr"], weight_decay=settings["weight_decay"])
    by_hand = []
    for j, part in enumerate(inner.folds):
        head = {**HEAD, "hidden_dim": settings["hidden_dim"]}
        model = train_fold(lambda head=head: spec.build(padded.dim, 1, head), padded, targets, "binary", 1,
                           padded.rows(part.train), padded.rows(part.val), config,
                           inner_seed(CONFIG.seed, 1, j))
        probs, _ = predict(model.model, padded, padded.rows(part.test), "binary")
        by_hand.append(macro_auroc("binary", targets[padded.rows(part.test)].numpy(), probs))
    assert scores[1][5] == pytest.approx(float(np.mean(by_hand)), abs=1e-6)

    tuned = tune_folds(folds, padded, "binary", 1, spec, HEAD, CONFIG, GRID)
    for fold_scores, result in zip(scores, tuned, strict=True):
        best = int(np.argmax(fold_scores))
        assert {k: v for k, v in result.settings.items() if k != "inner_auroc"} == candidates[best]
        assert result.settings["inner_auroc"] == pytest.approx(max(fold_scores), abs=1e-6)
        assert result.trained.model.head.classifier.in_features == candidates[best]["hidden_dim"]


def test_members_with_their_own_learning_rate_train_as_alone(task) -> None:
    _, _, _, splits, padded, targets = task
    fold = splits.folds[0]
    spec = SPECS["abmil"]
    rows = padded.rows(fold.train), padded.rows(fold.val)
    mixed = [Member(*rows, targets, 3, lr=lr, weight_decay=wd) for lr, wd in ((1e-3, 0.0), (1e-2, 0.1))]
    together = train_members(lambda: spec.build(padded.dim, 1, HEAD), mixed, padded, "binary", 1, CONFIG)
    for member, trained in zip(mixed, together, strict=True):
        config = dataclasses.replace(CONFIG, lr=member.lr, weight_decay=member.weight_decay)
        alone = train_fold(lambda: spec.build(padded.dim, 1, HEAD), padded, targets, "binary", 1, *rows,
                           config, 3)
        test = padded.rows(fold.test)
        np.testing.assert_allclose(predict(trained.model, padded, test, "binary")[0],
                                   predict(alone.model, padded, test, "binary")[0], atol=1e-5)
        assert trained.best_epoch == alone.best_epoch


def test_the_fold_key_holds_the_grid(task) -> None:
    _, labels, _, splits, _, _ = task
    def key(tuning):
        return fold_key("bags", splits, 0, labels, "binary", "abmil", HEAD, CONFIG, "code", tuning=tuning)

    untuned = key(None)
    assert untuned == fold_key("bags", splits, 0, labels, "binary", "abmil", HEAD, CONFIG, "code")
    other = Tuning({"lr": (1e-3, 1e-2), "weight_decay": (0.0, 0.1), "hidden_dim": (8, 16)}, inner_folds=3)
    keys = {untuned, key(GRID), key(other), key(dataclasses.replace(GRID, inner_folds=4))}
    assert len(keys) == 4
    assert key(dataclasses.replace(GRID, heads=("abmil",))) == key(GRID)  # which heads: not a fold's content


def test_tuned_rows_show_their_chosen_settings_on_the_board(task, tmp_path: Path) -> None:
    bags, labels, patient_of, *_ = task
    heads = [PlannedHead(ComponentRef("abmil", "abmil", HEAD), SPECS["abmil"]),
             PlannedHead(ComponentRef("linear-probe", "linear-probe", {}), SPECS["linear-probe"])]
    grid = Tuning({"lr": (1e-3, 1e-2), "hidden_dim": (8, 12)}, inner_folds=2)
    protocol = EvaluationProtocol(folds=3, seed=0, val_fraction=0.2, bootstrap=30, train=CONFIG,
                                  comparison_resamples=200, permutations=1, workers=1, tuning=grid)
    source = FolderBags("signal", "in memory", bags, "memory-signal", EncoderRole("signal"))
    result = evaluate_task(TaskInputs("task", "binary", ["finding"], labels, patient_of), [source], heads,
                           protocol, clear_bench_metrics(), tmp_path / "run" / "tasks" / "task")
    rows = {row.aggregator: row for row in result.board.rows}
    assert sum(rows["abmil"].tuned.values()) == 3 and rows["linear-probe"].tuned == {}
    assert all(f.settings["lr"] in (1e-3, 1e-2) for f in result.cells[0].results[0].folds)
    write_report([result], benchmark="tiny", run_dir=tmp_path / "run")
    board = (tmp_path / "run" / "leaderboards" / "task.md").read_text()
    section = board.split("## Tuning")[1].split("\n## ")[0]
    assert "2-fold inner CV" in section and "lr in {0.001, 0.01} x hidden_dim in {8, 12}" in section
    [line] = [line for line in section.splitlines() if line.startswith("| signal | abmil |")]
    assert "lr=" in line and "hidden_dim=" in line and "fold" in line
    assert "linear-probe" not in section
    table = json.loads((tmp_path / "run" / "leaderboards" / "task.json").read_text())["leaderboard"]
    tuned = {r["aggregator"]: r["tuned_settings"] for r in table}
    assert tuned["linear-probe"] is None and "hidden_dim=" in tuned["abmil"]
    assert "tuned_settings" in (tmp_path / "run" / "leaderboards" / "task.csv").read_text().splitlines()[0]
    # the untuned protocol's folds are other files: tuned and untuned results never mix
    tuned_folds = set((tmp_path / "run" / "tasks" / "task" / "folds").glob("*.npz"))
    plain = dataclasses.replace(protocol, tuning=None)
    evaluate_task(TaskInputs("task", "binary", ["finding"], labels, patient_of), [source], heads[:1], plain,
                  clear_bench_metrics(), tmp_path / "run" / "tasks" / "task")
    untuned = set((tmp_path / "run" / "tasks" / "task" / "folds").glob("*.npz")) - tuned_folds
    assert len(untuned) == 3 * 2  # the real labels and one permutation, 3 folds each


def test_a_probe_cannot_be_tuned() -> None:
    from clear_bench.errors import UserError

    with pytest.raises(UserError, match="closed-form probe"):
        GRID.check_head(SPECS["linear-probe"])
    with pytest.raises(UserError, match="not a training setting or an option of head 'abmil'"):
        Tuning({"width": (1, 2)}).check_head(SPECS["abmil"])
