"""Linear and k-NN probes of frozen embeddings: the heads every neighbouring harness reports.

A probe sees one vector per scan: the mean (and, optionally, the max) of its instance embeddings per
window, the windows side by side. Features are standardised with the training rows' statistics. The
linear probe is an L2-regularised logistic regression (one per label for multi-label tasks, multinomial
for multi-class) whose strength is chosen by an inner cross-validation on the training rows only; the
k-NN probe votes among the ``k`` nearest training scans by cosine similarity. Both are fitted in closed
form (no epochs, no early stopping); the fold's validation rows stay held out, so thresholds are chosen on
scans the probe has not seen, as for the MIL heads.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from clear_bench.evaluation.bags import PaddedBags


def pooled_features(bags: PaddedBags, rows: torch.Tensor, *, max_pool: bool = False) -> np.ndarray:
    """``[len(rows), W * D]`` (``2 * W * D`` with ``max_pool``): per window id, the mean (and max) of the
    bag's real instances of that window, in window-id order; a window a bag lacks contributes zeros."""
    rows = rows.to(bags.x.device)
    x, mask = bags.x[rows].double(), bags.mask[rows]
    windows = bags.window_id[rows.to(bags.window_id.device)].to(x.device)
    ids = sorted(int(w) for w in torch.unique(bags.window_id[bags.mask.to(bags.window_id.device)]))
    parts = []
    for window in ids:
        member = (mask & (windows == window)).unsqueeze(-1)
        count = member.sum(dim=1).clamp(min=1)
        parts.append(torch.where(member, x, 0.0).sum(dim=1) / count)
        if max_pool:
            peak = torch.where(member, x, -torch.inf).amax(dim=1)
            parts.append(torch.where(torch.isfinite(peak), peak, 0.0))
    return torch.cat(parts, dim=1).cpu().numpy()


@dataclass
class Standardizer:
    """Mean and scale of the training features (constant features keep scale 1)."""

    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, features: np.ndarray) -> Standardizer:
        scale = features.std(axis=0)
        return cls(features.mean(axis=0), np.where(scale > 1e-12, scale, 1.0))

    def __call__(self, features: np.ndarray) -> np.ndarray:
        return (features - self.mean) / self.scale


class LinearProbe:
    """L2 logistic regression on standardised pooled features, strength by inner CV (mean AUROC)."""

    def __init__(self, grid: Sequence[float] = (1e-3, 1e-2, 1e-1, 1.0), inner_folds: int = 3,
                 max_pool: bool = False, seed: int = 0) -> None:
        self.grid = tuple(float(c) for c in grid)
        self.inner_folds = inner_folds
        self.max_pool = max_pool
        self.seed = seed
        self.chosen: float | None = None

    def fit(self, features: np.ndarray, targets: np.ndarray, label_type: str) -> LinearProbe:
        """Choose the strength on inner folds of ``features`` and refit on all of them."""
        self.label_type = label_type
        self.width = int(targets.max()) + 1 if label_type == "multiclass" else None
        self.standardize = Standardizer.fit(features)
        x = self.standardize(features)
        folds = [(train, test, row_space_basis(x[train])) for train, test in self._inner_folds(x, targets)]
        scores = [self._inner_score(x, targets, folds, c) for c in self.grid]
        finite = [s if np.isfinite(s) else -np.inf for s in scores]
        self.chosen = self.grid[int(np.argmax(finite))] if np.isfinite(max(finite)) else self.grid[-1]
        self.models = _fit_logistic(x, targets, label_type, self.chosen, self.seed, row_space_basis(x),
                                    self.width)
        return self

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Probabilities ``[n, n_outputs]``."""
        return _predict_logistic(self.models, self.standardize(features), self.label_type)

    def _inner_folds(self, x: np.ndarray, targets: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        from sklearn.model_selection import KFold, StratifiedKFold

        stratify = targets if self.label_type == "multiclass" else targets[:, 0]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # a class with fewer members than folds
                return list(StratifiedKFold(self.inner_folds, shuffle=True, random_state=self.seed)
                            .split(x, stratify))
        except ValueError:  # a class too rare to stratify: plain folds
            return list(KFold(self.inner_folds, shuffle=True, random_state=self.seed).split(x))

    def _inner_score(self, x: np.ndarray, targets: np.ndarray, folds: list, c: float) -> float:
        """Mean AUROC of strength ``c`` over the inner ``folds`` (train, test, row-space basis of train)."""
        from sklearn.metrics import roc_auc_score

        values = []
        for train, test, basis in folds:
            # an inner training fold may lack a class the inner test fold has: width over all classes
            model = _fit_logistic(x[train], targets[train], self.label_type, c, self.seed, basis, self.width)
            probs = _predict_logistic(model, x[test], self.label_type)
            multiclass = self.label_type == "multiclass"
            truth = _onehot(targets[test], probs.shape[1]) if multiclass else targets[test]
            for j in range(probs.shape[1]):
                if len(np.unique(truth[:, j])) == 2:
                    values.append(roc_auc_score(truth[:, j], probs[:, j]))
        return float(np.mean(values)) if values else float("nan")


class KnnProbe:
    """Votes of the ``k`` nearest training scans (cosine similarity of standardised pooled features)."""

    def __init__(self, k: int = 10, max_pool: bool = False) -> None:
        self.k = k
        self.max_pool = max_pool

    def fit(self, features: np.ndarray, targets: np.ndarray, label_type: str) -> KnnProbe:
        self.label_type = label_type
        self.standardize = Standardizer.fit(features)
        self.train = _unit(self.standardize(features))
        width = int(targets.max()) + 1 if label_type == "multiclass" else targets.shape[1]
        self.targets = _onehot(targets, width) if label_type == "multiclass" else targets.astype(float)
        return self

    def predict(self, features: np.ndarray) -> np.ndarray:
        similarity = _unit(self.standardize(features)) @ self.train.T
        k = min(self.k, len(self.train))
        nearest = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
        return self.targets[nearest].mean(axis=1)


def build_probe(name: str, options: Mapping[str, Any], seed: int) -> LinearProbe | KnnProbe:
    """The probe ``name`` (``linear`` or ``knn``) with its resolved options."""
    if name == "linear":
        return LinearProbe(grid=options["grid"], inner_folds=options["inner_folds"],
                           max_pool=options["max_pool"], seed=seed)
    return KnnProbe(k=options["k"], max_pool=options["max_pool"])


@dataclass
class _Logistic:
    """Fitted logistic models and the basis their inputs are expressed in (``None``: the features)."""

    models: list
    basis: np.ndarray | None

    def inputs(self, x: np.ndarray) -> np.ndarray:
        return x if self.basis is None else x @ self.basis


def row_space_basis(x: np.ndarray) -> np.ndarray | None:
    """An orthonormal basis ``[d, r]`` of the span of ``x``'s rows when it is smaller than the feature
    space (``None`` otherwise).

    With more features than training rows (hundreds of embedding dims x 3 windows against about a hundred
    scans),
    an L2-regularised linear model's optimum lies in the span of the training rows: its loss gradient
    does, so the penalty's does at the optimum. Fitting the coordinates ``x @ basis`` (``r <= n``) has the
    same optimum and the same predictions, and lbfgs converges in a fraction of the time.
    """
    n, d = x.shape
    if d <= n:
        return None
    _, singular, vt = np.linalg.svd(x, full_matrices=False)
    keep = singular > singular[0] * d * np.finfo(float).eps  # numpy's matrix_rank tolerance
    return vt[keep].T if keep.any() else vt[:1].T  # all-zero rows: any one direction


def _fit_logistic(x: np.ndarray, targets: np.ndarray, label_type: str, c: float, seed: int,
                  basis: np.ndarray | None, width: int | None = None) -> _Logistic:
    """One fitted model per label (multi-label), one multinomial model (multi-class, probabilities over
    ``width`` classes, default those up to the largest in ``targets``), on ``x`` in ``basis``
    (:func:`row_space_basis` of ``x``); a label with a single class in ``targets`` is kept as its constant
    rate."""
    from sklearn.linear_model import LogisticRegression

    z = x if basis is None else x @ basis

    def fit(y: np.ndarray) -> Any:
        if len(np.unique(y)) < 2:
            return float(np.mean(y))
        model = LogisticRegression(C=c, max_iter=500, tol=1e-6, random_state=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # lbfgs may stop at max_iter on separable folds
            return model.fit(z, y)

    if label_type == "multiclass":
        return _Logistic([fit(targets.astype(np.int64)), width or int(targets.max()) + 1], basis)
    return _Logistic([fit(targets[:, j]) for j in range(targets.shape[1])], basis)


def _predict_logistic(fitted: _Logistic, x: np.ndarray, label_type: str) -> np.ndarray:
    models, z = fitted.models, fitted.inputs(x)
    if label_type == "multiclass":
        model, width = models
        probs = np.zeros((len(z), width))
        if isinstance(model, float):
            probs[:, int(model)] = 1.0
            return probs
        probs[:, model.classes_] = model.predict_proba(z)
        return probs
    columns = [np.full(len(z), m) if isinstance(m, float) else m.predict_proba(z)[:, 1] for m in models]
    return np.stack(columns, axis=1)


def _onehot(classes: np.ndarray, width: int) -> np.ndarray:
    out = np.zeros((len(classes), width))
    out[np.arange(len(classes)), np.asarray(classes, dtype=np.int64).reshape(-1)] = 1.0
    return out


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
