"""Shared helpers of the evaluation tests: small synthetic bag sets and a quick cross-validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clear_bench.builtin import clear_bench_aggregators
from clear_bench.evaluation.bags import pad_bags
from clear_bench.evaluation.bootstrap import summarize
from clear_bench.evaluation.crossval import CrossValResult, run_crossval
from clear_bench.evaluation.splits import make_splits
from clear_bench.evaluation.training import TrainConfig

SPECS = {spec.name: spec for spec in clear_bench_aggregators()}
SMALL = {
    "abmil": {"hidden_dim": 16, "attention_dim": 16, "dropout": 0.0},
    "pma": {"hidden_dim": 16, "num_heads": 2, "dropout": 0.0},
    "mean-pool": {"hidden_dim": 16, "dropout": 0.0},
}


@pytest.fixture(autouse=True)
def _one_thread():
    """Small models run fastest (and reproducibly) on one thread; restore the setting afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def cv():
    """``cv(bags, labels, aggregator, ...)``: a quick cross-validation (see :func:`quick_crossval`)."""
    return quick_crossval


@pytest.fixture
def auroc_of():
    """``auroc_of(result)``: the mean-over-folds macro AUROC."""
    return macro_auroc


def quick_crossval(bags, labels, aggregator: str, label_type: str = "binary", label_names=None,
                   epochs: int = 20, lr: float = 5e-3, k: int = 5, patience: int | None = None,
                   seed: int = 0, results_dir=None, folds=None, splits=None) -> CrossValResult:
    """Cross-validate one small head with the test hyper-parameters."""
    splits = splits or make_splits(labels, label_type, k=k, seed=seed)
    padded = pad_bags(bags, splits.scan_ids)
    width = len(next(iter(labels.values())))
    label_names = label_names or [f"label{j}" for j in range(width)]
    config = TrainConfig(epochs=epochs, lr=lr, batch_size=32, patience=patience or epochs,
                         max_instances=None, seed=seed)
    return run_crossval(padded, labels, label_type, label_names, splits, SPECS[aggregator], SMALL[aggregator],
                        config, bagset_fingerprint="test-bags", results_dir=results_dir, folds=folds)


def macro_auroc(result: CrossValResult, n_boot: int = 200) -> float:
    return summarize(result, n_boot=n_boot).get("auroc").mean


def noise_labels(n: int, width: int, seed: int, prevalence: float = 0.4) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {f"scan-{i:04d}": (rng.random(width) < prevalence).astype(np.float32) for i in range(n)}
