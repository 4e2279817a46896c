"""Equal tuning budgets: the same small grid searched by inner cross-validation for every encoder's head.

For each outer fold, the fold's *training* patients (never its validation or test patients) are split
again, patient-grouped and stratified (:func:`~clear_bench.evaluation.splits.make_splits`), into
``inner_folds`` inner folds, each with its own inner early-stopping split. Every candidate of the grid
(learning rate x weight decay x head options such as ``hidden_dim``) trains on every inner fold, and the
candidate with the best mean macro AUROC on the inner held-out folds wins (ties: the first in grid
order). The head is then retrained on the outer fold's training patients with the chosen settings,
early-stopping on the outer validation patients as an untuned head does. Candidates that share the head's
architecture (the same head options) train as one stack of members
(:func:`~clear_bench.evaluation.batched.train_members`), each member with its own learning rate and
weight decay.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from clear_bench.errors import UserError
from clear_bench.evaluation.bags import PaddedBags
from clear_bench.evaluation.batched import Member, train_members
from clear_bench.evaluation.metrics import auroc
from clear_bench.evaluation.settings import TrainConfig
from clear_bench.evaluation.splits import Splits, make_splits
from clear_bench.evaluation.training import TrainedFold, fold_seed, predict, train_fold
from clear_bench.specs import AggregatorSpec, stable_hash

METHOD = "inner-cv-auroc-v1"
TRAIN_KEYS = ("lr", "weight_decay")
"""Grid keys that are training settings; every other key is an option of the head."""


@dataclass(frozen=True)
class Tuning:
    """A declared grid (key -> candidate values, in order), the number of inner folds, and the heads (by
    aggregator id; ``None``: every trained head) it applies to."""

    grid: dict[str, tuple[Any, ...]]
    inner_folds: int = 3
    heads: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if not self.grid or any(not values for values in self.grid.values()):
            raise ValueError("a tuning grid needs at least one value for every key")
        if self.inner_folds < 2:
            raise ValueError(f"inner_folds must be >= 2, got {self.inner_folds}")

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> Tuning:
        """From the validated ``crossval.tuning`` mapping of a benchmark YAML."""
        if not isinstance(section.get("grid"), Mapping):
            raise UserError("crossval.tuning: expected {grid: {KEY: [VALUES...]}, inner_folds: N, "
                            "heads: [...]}")
        heads = section.get("heads")
        return cls({str(k): tuple(v) for k, v in section["grid"].items()}, int(section.get("inner_folds", 3)),
                   tuple(heads) if heads is not None else None)

    def candidates(self) -> list[dict[str, Any]]:
        """Every combination of the grid, the last key varying fastest."""
        keys = list(self.grid)
        return [dict(zip(keys, values, strict=True)) for values in itertools.product(*self.grid.values())]

    def key(self) -> dict[str, Any]:
        """What determines a tuned fold's result (the heads it applies to do not)."""
        return {"grid": {k: list(v) for k, v in self.grid.items()}, "inner_folds": self.inner_folds,
                "method": METHOD}

    def describe(self) -> str:
        """One line for a board: the grid and how the setting is chosen."""
        grid = " x ".join(f"{k} in {{{', '.join(format_value(v) for v in values)}}}"
                          for k, values in self.grid.items())
        return (f"{grid}; {self.inner_folds}-fold inner CV on each outer fold's training patients, chosen by "
                "the mean inner macro AUROC, then retrained on the outer training patients")

    def check_head(self, aggregator: AggregatorSpec) -> None:
        """Refuse grid keys that are neither training settings nor options of ``aggregator``."""
        if aggregator.fit is not None:
            raise UserError(f"crossval.tuning.heads: '{aggregator.name}' is a closed-form probe (it chooses "
                            "its regularisation by its own inner CV); tune trained heads only")
        unknown = sorted(k for k in self.grid if k not in TRAIN_KEYS and k not in aggregator.options)
        if unknown:
            known = ", ".join([*TRAIN_KEYS, *aggregator.options])
            raise UserError(f"crossval.tuning.grid: {', '.join(unknown)} is not a training setting or an "
                            f"option of head '{aggregator.name}' (known: {known})")


def format_value(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def head_options(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The head options among chosen settings (what is not a training setting nor the inner score)."""
    return {k: v for k, v in settings.items() if k not in TRAIN_KEYS and k != "inner_auroc"}


def settings_text(settings: Mapping[str, Any]) -> str:
    """``lr=0.001, weight_decay=0.01, hidden_dim=64`` (the chosen grid values, in grid order)."""
    return ", ".join(f"{k}={format_value(v)}" for k, v in settings.items() if k != "inner_auroc")


@dataclass
class TunedFold:
    """The outer fold's head retrained with the chosen settings, and those settings."""

    trained: TrainedFold
    settings: dict[str, Any] = field(default_factory=dict)
    """The chosen grid values and their ``inner_auroc``."""


@dataclass(frozen=True)
class OuterFold:
    """One outer fold to tune: its splits, fold index and targets (one row per bag)."""

    splits: Splits
    index: int
    targets: torch.Tensor


def inner_splits(splits: Splits, index: int, targets: torch.Tensor, bags: PaddedBags, label_type: str,
                 inner_folds: int, val_fraction: float, seed: int) -> Splits:
    """The inner folds of outer fold ``index``: its training scans only, patient-grouped and stratified on
    the labels the fold trains on (``targets``), each inner fold with its own early-stopping split."""
    fold = splits.folds[index]
    rows = bags.rows(fold.train)
    labels = {scan: np.atleast_1d(targets[row].cpu().numpy()).astype(np.float32)
              for scan, row in zip(fold.train, rows.tolist(), strict=True)}
    patient_of = {scan: splits.patient_of.get(scan, scan) for scan in fold.train}
    patients = len(set(patient_of.values()))
    if patients < 2 * inner_folds:
        raise UserError(f"crossval.tuning: fold {index} has {patients} training patients, too few for "
                        f"{inner_folds} inner folds (at least {2 * inner_folds})")
    inner_seed = int(stable_hash([METHOD, splits.fingerprint, index, seed]), 16) % (2**31 - 1)
    return make_splits(labels, label_type, k=inner_folds, seed=inner_seed, val_fraction=val_fraction,
                       patient_of=patient_of)


def macro_auroc(label_type: str, targets: np.ndarray, probs: np.ndarray) -> float:
    """Mean AUROC over labels (one-vs-rest classes for multi-class) that have both classes; NaN if none."""
    if label_type == "multiclass":
        columns = [(targets == c, probs[:, c]) for c in range(probs.shape[1])]
    else:
        targets = targets.reshape(len(targets), -1)
        columns = [(targets[:, j] > 0.5, probs[:, j]) for j in range(probs.shape[1])]
    values = [auroc(y, p) for y, p in columns]
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def tune_folds(folds: Sequence[OuterFold], bags: PaddedBags, label_type: str, n_outputs: int,
               aggregator: AggregatorSpec, options: Mapping[str, Any], config: TrainConfig,
               tuning: Tuning) -> list[TunedFold]:
    """Choose each outer fold's settings by inner CV and retrain it with them (one result per fold); a
    fold's ``seconds`` include its share of the search."""
    candidates = tuning.candidates()
    started = time.perf_counter()
    scores = inner_scores(folds, bags, label_type, n_outputs, aggregator, options, config, tuning)
    search = (time.perf_counter() - started) / max(len(folds), 1)
    chosen = []
    for fold_scores in scores:
        ranked = [(-math.inf if math.isnan(s) else s) for s in fold_scores]
        best = int(np.argmax(ranked))
        chosen.append({**candidates[best], "inner_auroc": fold_scores[best]})
    members = []
    for outer, settings in zip(folds, chosen, strict=True):
        fold = outer.splits.folds[outer.index]
        seed = fold_seed(config.seed, outer.index)  # as an untuned fold's
        members.append((settings, Member(bags.rows(fold.train), bags.rows(fold.val), outer.targets, seed,
                                         *_train_values(settings, config))))
    trained = _train_grouped(members, bags, label_type, n_outputs, aggregator, options, config)
    for model in trained:
        model.seconds += search
    return [TunedFold(model, settings) for model, settings in zip(trained, chosen, strict=True)]


def inner_scores(folds: Sequence[OuterFold], bags: PaddedBags, label_type: str, n_outputs: int,
                 aggregator: AggregatorSpec, options: Mapping[str, Any], config: TrainConfig,
                 tuning: Tuning) -> list[list[float]]:
    """``scores[f][c]``: candidate ``c``'s mean macro AUROC over the inner folds of outer fold ``f``. Every
    candidate of an inner fold starts from the same seed, so candidates differ in their settings only."""
    candidates = tuning.candidates()
    members, where = [], []
    for f, outer in enumerate(folds):
        inner = inner_splits(outer.splits, outer.index, outer.targets, bags, label_type, tuning.inner_folds,
                             config.val_fraction, config.seed)
        for j, fold in enumerate(inner.folds):
            seed = inner_seed(config.seed, outer.index, j)
            for c, settings in enumerate(candidates):
                members.append((settings, Member(bags.rows(fold.train), bags.rows(fold.val), outer.targets,
                                                 seed, *_train_values(settings, config))))
                where.append((f, c, bags.rows(fold.test)))
    trained = _train_grouped(members, bags, label_type, n_outputs, aggregator, options, config)
    values: dict[tuple[int, int], list[float]] = {}
    for (f, c, test_rows), model in zip(where, trained, strict=True):
        probs, _ = predict(model.model, bags, test_rows, label_type, config.batch_size * 2)
        targets = folds[f].targets[test_rows.to(folds[f].targets.device)].cpu().numpy()
        values.setdefault((f, c), []).append(macro_auroc(label_type, targets, probs))
    return [[_nanmean(values[f, c]) for c in range(len(candidates))] for f in range(len(folds))]


def inner_seed(seed: int, outer: int, inner: int) -> int:
    """The seed every candidate of inner fold ``inner`` of outer fold ``outer`` trains from."""
    return int(stable_hash([METHOD, "seed", seed, outer, inner]), 16) % (2**31 - 1)


def _nanmean(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def _train_values(settings: Mapping[str, Any], config: TrainConfig) -> tuple[float, float]:
    return float(settings.get("lr", config.lr)), float(settings.get("weight_decay", config.weight_decay))


def _train_grouped(members: Sequence[tuple[Mapping[str, Any], Member]], bags: PaddedBags, label_type: str,
                   n_outputs: int, aggregator: AggregatorSpec, options: Mapping[str, Any],
                   config: TrainConfig) -> list[TrainedFold]:
    """Train every member; members whose head options agree (one architecture) form one stack."""
    groups: dict[str, list[int]] = {}
    for position, (settings, _) in enumerate(members):
        groups.setdefault(stable_hash(head_options(settings)), []).append(position)
    trained: list[TrainedFold | None] = [None] * len(members)
    for positions in groups.values():
        head = {**options, **head_options(members[positions[0]][0])}

        def build(head: dict[str, Any] = head) -> torch.nn.Module:
            return aggregator.build(bags.dim, n_outputs, head)

        group = [members[p][1] for p in positions]
        if aggregator.ensemble:
            results = train_members(build, group, bags, label_type, n_outputs, config,
                                    input_layer=aggregator.input_layer)
        else:
            results = [train_fold(build, bags, m.targets, label_type, n_outputs, m.train_rows, m.val_rows,
                                  dataclasses.replace(config, lr=m.lr, weight_decay=m.weight_decay), m.seed)
                       for m in group]
        for position, result in zip(positions, results, strict=True):
            trained[position] = result
    return [t for t in trained if t is not None]
