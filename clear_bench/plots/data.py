"""What the plots read: one row's folds (out-of-fold probabilities, attention) and its scans' labels."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from clear_bench.evaluation.crossval import FoldResult


@dataclass
class RowFolds:
    """The folds of one board row (the first repeat's cross-validation) with the labels of its scans."""

    label_type: str
    label_names: list[str]
    labels: dict[str, np.ndarray]
    folds: list[FoldResult] = field(default_factory=list)

    def targets(self, ids: Sequence[str]) -> np.ndarray:
        """Label rows of ``ids``: ``[n, L]`` 0/1, or ``[n]`` class indices for multi-class."""
        rows = np.stack([np.asarray(self.labels[i]).reshape(-1) for i in ids])
        return rows[:, 0].astype(np.int64) if self.label_type == "multiclass" else rows.astype(np.int64)

    def one_vs_rest(self, fold: FoldResult) -> tuple[np.ndarray, np.ndarray]:
        """``(targets, probabilities)`` of a fold's test scans, both ``[n, L]`` (one column per label, or
        per class against the rest)."""
        probs = np.asarray(fold.test_probs, dtype=np.float64).reshape(len(fold.test_ids), -1)
        y = self.targets(fold.test_ids)
        if self.label_type == "multiclass":
            y = np.eye(probs.shape[1])[np.asarray(y).reshape(-1)]
        return np.asarray(y, dtype=np.float64).reshape(probs.shape), probs
