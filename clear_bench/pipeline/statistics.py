"""A task's statistics (row summaries, permutation nulls, paired comparisons), content-addressed.

The patient bootstrap, the permutation nulls and the paired draws of a board cost more than reading its
stored folds back, and they are a pure function of those folds: of their content addresses (which hold
the bags, splits, labels, head, options and training settings), the resampling settings and the code of
the metrics. So each is stored once under ``<task>/stats/<key>.json`` and a rerun with the same folds
reads it instead of recomputing it; a changed fold, metric or setting gives a new key.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from clear_bench.atomic import atomic_write_text
from clear_bench.evaluation.bootstrap import Summary, summarize
from clear_bench.evaluation.compare import PairedComparison, all_pairs, compare_pairs, paired_draws
from clear_bench.evaluation.crossval import CrossValResult
from clear_bench.leaderboard import NullSummary
from clear_bench.specs import MetricSpec, stable_hash

STATS_CODE_VERSION = "1"
"""Bumped whenever a change to the bootstrap, the null or the comparisons would change their values."""

T = TypeVar("T")


class StatsCache:
    """Computes a task's statistics, or reads them back from ``folder`` (``None``: always computes)."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder

    def summary(self, results: Sequence[CrossValResult], *, n_boot: int, seed: int,
                metrics: Sequence[MetricSpec]) -> Summary:
        """:func:`~clear_bench.evaluation.bootstrap.summarize` of a row's repeats."""
        key = ["summary", _folds(results), n_boot, seed, _metrics(metrics)]
        return self._cached(key, lambda: summarize(results, n_boot=n_boot, seed=seed, metrics=metrics),
                            Summary.to_dict, Summary.from_dict)

    def null(self, nulls: Sequence[CrossValResult], observed: CrossValResult, metric: str,
             metrics: Sequence[MetricSpec]) -> NullSummary:
        """The row's :func:`permutation_null` against the point value of ``observed`` (its first repeat)."""
        def compute() -> NullSummary:
            point = summarize(observed, n_boot=1, seed=0, metrics=metrics).get(metric).mean
            return permutation_null(nulls, point, metric, metrics)

        key = ["null", _folds(nulls), _folds([observed]), metric, _metrics(metrics)]
        return self._cached(key, compute, asdict, lambda data: NullSummary(**_nan(data)))

    def comparisons(self, runs: Mapping[str, Sequence[CrossValResult]], pairs: Sequence[tuple[str, str, str]],
                    metric: str, *, n_boot: int, seed: int, metrics: Sequence[MetricSpec]
                    ) -> tuple[list[PairedComparison], list[PairedComparison]]:
        """The declared ``pairs`` and the all-pairs matrix on shared resamples (none with one row)."""
        if len(runs) < 2:
            return [], []

        def compute() -> tuple[list[PairedComparison], list[PairedComparison]]:
            draws = paired_draws(runs, metric, n_boot=n_boot, seed=seed, metrics=metrics)
            return compare_pairs(runs, pairs, draws=draws), all_pairs(runs, draws=draws)

        key = ["comparisons", {row: _folds(results) for row, results in runs.items()},
               [list(pair) for pair in pairs], metric, n_boot, seed, _metrics(metrics)]
        return self._cached(
            key, compute,
            lambda both: {"declared": [asdict(c) for c in both[0]], "pairs": [asdict(c) for c in both[1]]},
            lambda data: ([PairedComparison.from_dict(c) for c in data["declared"]],
                          [PairedComparison.from_dict(c) for c in data["pairs"]]))

    def _cached(self, key: list, compute: Callable[[], T], encode: Callable[[T], Any],
                decode: Callable[[Any], T]) -> T:
        if self.folder is None:
            return compute()
        path = self.folder / f"{key[0]}-{stable_hash([STATS_CODE_VERSION, key], length=24)}.json"
        if path.exists():
            try:
                return decode(json.loads(path.read_text()))
            except (OSError, ValueError, KeyError, TypeError):
                pass  # unreadable or from an older layout: computed again and replaced
        value = compute()
        atomic_write_text(path, json.dumps(json_finite(encode(value)), sort_keys=True))
        return value


def permutation_null(nulls: Sequence[CrossValResult], observed: float, metric: str,
                     metrics: Sequence[MetricSpec]) -> NullSummary:
    """The row's macro ``metric`` under its patient-level label permutations (``nulls``: each a
    cross-validation through the same folds and training); the permutation p is
    ``(1 + #{null >= observed}) / (count + 1)``."""
    values = [summarize(result, n_boot=1, seed=0, metrics=metrics).get(metric).mean for result in nulls]
    null = np.asarray(values, dtype=float)
    finite = null[~np.isnan(null)]
    if not len(finite):
        return NullSummary(len(nulls), math.nan, math.nan, math.nan, math.nan, values)
    low, high = np.percentile(finite, [2.5, 97.5])
    p = (1 + int(np.sum(finite >= observed))) / (len(finite) + 1)
    return NullSummary(len(nulls), float(finite.mean()), float(low), float(high), p, values)


def _folds(results: Sequence[CrossValResult]) -> list[list[str]]:
    """The content addresses of every fold of every result: they determine every statistic."""
    return [[fold.key for fold in sorted(result.folds, key=lambda f: f.fold)] for result in results]


_CODE_DIGESTS: dict[str, str] = {}


def _metrics(metrics: Sequence[MetricSpec]) -> list[list[str]]:
    """Name, label types and a digest of the code of each metric (a plugin's edited metric gets new keys)."""
    return [[m.name, ",".join(sorted(m.label_types)), _code_digest(m.compute)] for m in metrics]


def _code_digest(function: Callable) -> str:
    """A hash of the source files of ``function`` and of the functions its closure holds."""
    functions = [function, *(cell.cell_contents for cell in getattr(function, "__closure__", None) or ()
                             if callable(cell.cell_contents))]
    digests = []
    for fn in functions:
        try:
            name = inspect.getsourcefile(fn) or ""
        except TypeError:
            name = ""
        if name not in _CODE_DIGESTS:
            try:
                _CODE_DIGESTS[name] = hashlib.sha256(Path(name).read_bytes()).hexdigest()[:16]
            except OSError:
                _CODE_DIGESTS[name] = getattr(fn, "__qualname__", repr(fn))
        digests.append(_CODE_DIGESTS[name])
    return stable_hash(digests)


def json_finite(value: Any) -> Any:
    """``value`` with every NaN float made ``None`` (JSON has no NaN), through dicts, lists and tuples."""
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, dict):
        return {k: json_finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_finite(v) for v in value]
    return value


def _nan(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: math.nan if v is None else [math.nan if x is None else x for x in v] if isinstance(v, list)
            else v for k, v in data.items()}
