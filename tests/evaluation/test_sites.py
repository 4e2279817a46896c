"""Site-held-out evaluation: leave-one-site-out folds never test on a training site, and a planted site
shortcut scores high with sites pooled, falls to chance on held-out sites, and the site probe flags it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from clear_bench.builtin import clear_bench_aggregators, clear_bench_metrics
from clear_bench.config import ComponentRef
from clear_bench.evaluation.bags import Bag
from clear_bench.evaluation.compare import EncoderRole
from clear_bench.evaluation.settings import TrainConfig
from clear_bench.evaluation.sites import site_splits
from clear_bench.evaluation.splits import make_splits
from clear_bench.leaderboard import render_task_board, task_tables
from clear_bench.pipeline.evaluate import EvaluationProtocol, TaskInputs, evaluate_task
from clear_bench.pipeline.features import FolderBags
from clear_bench.pipeline.plan import PlannedHead

SPECS = {spec.name: spec for spec in clear_bench_aggregators()}
SITES = ("site-a", "site-b", "site-c")
POSITIVE_RATE = {"site-a": 0.9, "site-b": 0.1, "site-c": 0.5}


@pytest.fixture(scope="module")
def cohort():
    """150 scans of 75 patients at three sites; labels confounded with the site (90%, 10%, 50% positive)
    and, within a site, independent of everything else. Encoder 'shortcut' sees only the site; encoder
    'lesion' sees only the label (a real signal)."""
    rng = np.random.default_rng(11)
    labels, site_of, patient_of, shortcut, lesion = {}, {}, {}, {}, {}
    for p in range(75):
        site = SITES[p % 3]
        y = float(rng.random() < POSITIVE_RATE[site])
        for k in range(2):
            scan = f"p{p:03d}-s{k}"
            labels[scan], site_of[scan], patient_of[scan] = np.array([y], np.float32), site, f"p{p:03d}"
            noise = rng.normal(size=(6, 4)).astype(np.float32)
            shortcut[scan] = Bag(noise + 3.0 * np.eye(4)[SITES.index(site)], np.arange(6), np.zeros(6))
            lesion[scan] = Bag(rng.normal(size=(6, 4)) + 1.5 * y * np.eye(4)[1], np.arange(6), np.zeros(6))
    return labels, site_of, patient_of, shortcut, lesion


def test_leave_one_site_out_never_tests_on_a_training_site(cohort) -> None:
    labels, site_of, patient_of, *_ = cohort
    splits = make_splits(labels, "binary", k=5, seed=0, patient_of=patient_of)
    held = site_splits(splits, labels, "binary", site_of, seed=0)
    assert held is not None and held.k == 3 and held.fingerprint != splits.fingerprint
    tested = []
    for fold, site in zip(held.folds, SITES, strict=True):
        assert {site_of[s] for s in fold.test} == {site}
        assert site not in {site_of[s] for s in fold.train + fold.val}
        assert not {patient_of[s] for s in fold.test} & {patient_of[s] for s in fold.train + fold.val}
        assert fold.val and len(fold.val) < len(fold.train)
        tested += fold.test
    assert sorted(tested) == sorted(labels)  # every scan is tested exactly once
    one_site = {s: "site-a" for s in labels}
    assert site_splits(splits, labels, "binary", one_site) is None


def test_a_site_shortcut_falls_to_chance_on_held_out_sites(cohort, tmp_path: Path) -> None:
    labels, site_of, patient_of, shortcut, lesion = cohort
    heads = [PlannedHead(ComponentRef("linear-probe", "linear-probe", {}), SPECS["linear-probe"])]
    protocol = EvaluationProtocol(folds=5, seed=0, val_fraction=0.2, bootstrap=50, train=TrainConfig(),
                                  comparison_resamples=200, permutations=0, workers=1, site_held_out=True)
    sources = [FolderBags("shortcut", "in memory", shortcut, "memory-shortcut", EncoderRole("shortcut")),
               FolderBags("lesion", "in memory", lesion, "memory-lesion", EncoderRole("lesion"))]
    inputs = TaskInputs("task", "binary", ["finding"], labels, patient_of, site_of=site_of)
    result = evaluate_task(inputs, sources, heads, protocol, clear_bench_metrics(), tmp_path)
    rows = {row.encoder: row for row in result.board.rows}
    cheat, real = rows["shortcut"], rows["lesion"]
    assert cheat.summary.get("auroc").mean > 0.75  # sites pooled: the site predicts the label
    assert abs(cheat.site_held_out.mean - 0.5) < 0.1  # within a site it predicts nothing
    assert set(cheat.site_held_out.per_site) == set(SITES)
    # the probe flags the shortcut; the real signal predicts the site only through the confounded labels
    assert cheat.site_shortcut > 0.95 and real.site_shortcut < cheat.site_shortcut - 0.2
    assert real.site_held_out.mean > 0.8
    assert abs(real.site_held_out.mean - real.summary.get("auroc").mean) < 0.1
    assert result.board.sites == list(SITES)
    board = render_task_board(result.board, benchmark="b", version="v")
    assert "## Site held out" in board and "| shortcut | linear-probe |" in board.split("## Site held out")[1]
    assert {r["encoder"] for r in task_tables(result.board)["site_held_out"]} == {"shortcut", "lesion"}
    assert all(row.aggregator == "linear-probe" for row in result.board.rows)  # the site probe is no row
