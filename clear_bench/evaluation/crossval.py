"""K-fold cross-validation of one MIL head on one task's bags, with content-addressed fold results.

Usage (one (encoder, task, aggregator) cell of a benchmark)::

    splits = ensure_splits(run_dir / "splits" / task, task_data.labels, label_type, k, seed, val_fraction)
    padded = pad_bags(bags, splits.scan_ids, cap=config.eval_max_instances)   # once per (encoder, task)
    result = run_crossval(padded, task_data.labels, label_type, task_data.label_names, splits,
                          registry.aggregators["abmil"].spec, options, config,
                          bagset_fingerprint=<hash of the encoder's cache keys of these scans>,
                          results_dir=run_dir / "folds")

Each fold's result is stored as ``results_dir/<key>.npz`` (atomic write), ``key`` = hash of the bag-set
fingerprint, the split fingerprint, the fold, the labels, the aggregator name and resolved options,
the :class:`TrainConfig` (device excluded), :data:`EVAL_CODE_VERSION` and the caller's ``code_version``
(e.g. the aggregator plugin's version). A finished fold is loaded, never retrained; an interrupted run
resumes at the first missing fold. Every fold trains a fresh model (see :mod:`training`).
"""

from __future__ import annotations

import hashlib
import inspect
import itertools
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clear_bench.atomic import atomic_write
from clear_bench.evaluation.bags import PaddedBags
from clear_bench.evaluation.batched import Member, train_members
from clear_bench.evaluation.probes import pooled_features
from clear_bench.evaluation.splits import Splits
from clear_bench.evaluation.training import TrainConfig, TrainedFold, fold_seed, predict, train_fold
from clear_bench.evaluation.tuning import OuterFold, Tuning, tune_folds
from clear_bench.specs import AggregatorSpec, resolve_options, stable_hash

log = logging.getLogger(__name__)

EVAL_CODE_VERSION = "4"
"""Bumped whenever a change to training or prediction would change fold results."""


@dataclass
class FoldResult:
    """What one fold produced: out-of-fold (test) and validation probabilities, attention, the curve."""

    fold: int
    key: str
    test_ids: list[str]
    test_probs: np.ndarray
    val_ids: list[str]
    val_probs: np.ndarray
    attention: list[np.ndarray]
    slice_index: list[np.ndarray]
    window_id: list[np.ndarray]
    curve: list[dict[str, float]]
    best_epoch: int
    init_digest: str
    seconds: float
    settings: dict[str, Any] = field(default_factory=dict)
    """The settings an inner-CV search chose for this fold (:mod:`tuning`; empty: untuned)."""


@dataclass
class CrossValResult:
    """All folds of one (bags, task, aggregator) cell, with what is needed to score them."""

    label_names: list[str]
    label_type: str
    labels: dict[str, np.ndarray]
    patient_of: dict[str, str]
    split_fingerprint: str
    bagset_fingerprint: str
    aggregator: str
    options: dict[str, Any]
    config: TrainConfig
    folds: list[FoldResult] = field(default_factory=list)
    control: str = ""
    """Empty for a real run; e.g. ``"shuffle-1"`` for a label-shuffle control."""

    def targets(self, ids: Sequence[str]) -> np.ndarray:
        """Label rows of ``ids``: ``[n, L]`` 0/1, or ``[n]`` class indices for multi-class."""
        rows = np.stack([np.asarray(self.labels[i]).reshape(-1) for i in ids])
        return rows[:, 0].astype(np.int64) if self.label_type == "multiclass" else rows.astype(np.int64)

    def predictions(self) -> dict[str, np.ndarray]:
        """Out-of-fold probabilities per scan id."""
        return {i: f.test_probs[r] for f in self.folds for r, i in enumerate(f.test_ids)}


def labels_digest(labels: Mapping[str, np.ndarray], ids: Sequence[str]) -> str:
    return stable_hash({i: np.asarray(labels[i]).astype(float).tolist() for i in sorted(ids)})


def fold_key(bagset_fingerprint: str, splits: Splits, fold: int, labels: Mapping[str, np.ndarray],
             label_type: str, aggregator: str, options: Mapping[str, Any], config: TrainConfig,
             code_version: str = "", tuning: Tuning | None = None) -> str:
    """The content address of one fold's result (a tuned fold's also holds the tuning grid)."""
    content = {
        "bags": bagset_fingerprint, "splits": splits.fingerprint, "fold": int(fold),
        "labels": labels_digest(labels, splits.scan_ids), "label_type": label_type,
        "aggregator": aggregator, "options": dict(options), "train": config.key(),
        "code": [EVAL_CODE_VERSION, code_version],
    }
    if tuning is not None:
        content["tuning"] = tuning.key()
    return stable_hash(content, length=24)


_SOURCE_DIGESTS: dict[type, str] = {}


def head_code_digest(model: torch.nn.Module) -> str:
    """A hash of the source files of every module class in ``model``: an edited head (built-in or a
    plugin's) gets new fold keys instead of reusing results of its old code."""
    classes = sorted({type(m) for m in model.modules()}, key=lambda c: f"{c.__module__}.{c.__qualname__}")
    return stable_hash([_class_digest(cls) for cls in classes])


def object_code_digest(value: object) -> str:
    """A hash of the source file of ``value``'s class (a probe's, see :func:`head_code_digest`)."""
    return _class_digest(type(value))


def _class_digest(cls: type) -> str:
    if cls not in _SOURCE_DIGESTS:
        try:
            source = Path(inspect.getsourcefile(cls) or "").read_bytes()
        except (OSError, TypeError):
            source = f"{cls.__module__}.{cls.__qualname__}".encode()  # no source (compiled, builtin)
        _SOURCE_DIGESTS[cls] = hashlib.sha256(source).hexdigest()[:16]
    return _SOURCE_DIGESTS[cls]


@dataclass(frozen=True)
class CrossValRun:
    """One cross-validation of a row: the labels (real or permuted), the splits (one repeat) and the
    control name (``""`` for the real labels)."""

    labels: Mapping[str, np.ndarray]
    splits: Splits
    control: str = ""


def run_crossval(bags: PaddedBags, labels: Mapping[str, np.ndarray], label_type: str,
                 label_names: Sequence[str], splits: Splits, aggregator: AggregatorSpec,
                 options: Mapping[str, Any] | None, config: TrainConfig, *, bagset_fingerprint: str,
                 results_dir: str | Path | None = None, code_version: str = "",
                 folds: Sequence[int] | None = None, control: str = "",
                 tuning: Tuning | None = None) -> CrossValResult:
    """Train and evaluate ``aggregator`` on every fold of ``splits`` (or the given ``folds``).

    ``bags`` must hold every scan of ``splits``; ``labels`` maps scan id -> label vector (TaskData
    convention). With ``results_dir`` set, finished folds are loaded instead of retrained.
    """
    return run_crossvals(bags, [CrossValRun(labels, splits, control)], label_type, label_names, aggregator,
                         options, config, bagset_fingerprint=bagset_fingerprint, results_dir=results_dir,
                         code_version=code_version, folds=folds, tuning=tuning)[0]


def run_crossvals(bags: PaddedBags, runs: Sequence[CrossValRun], label_type: str,
                  label_names: Sequence[str], aggregator: AggregatorSpec, options: Mapping[str, Any] | None,
                  config: TrainConfig, *, bagset_fingerprint: str, results_dir: str | Path | None = None,
                  code_version: str = "", folds: Sequence[int] | None = None,
                  tuning: Tuning | None = None) -> list[CrossValResult]:
    """Cross-validate ``aggregator`` on the same bags for every run (repeats, label permutations), training
    every missing fold of every run together (:mod:`~clear_bench.evaluation.batched`) when the head
    can be stacked (``aggregator.ensemble``), one fold at a time otherwise. One result per run, in order.
    With ``tuning``, each fold's settings are first chosen by inner CV on its training patients."""
    resolved = resolve_options(aggregator.options, options)
    if tuning is not None:
        tuning.check_head(aggregator)
    device = torch.device(config.device)
    bags = _on_device(bags, device)
    results, pending = _stored_folds(runs, label_type, label_names, aggregator, resolved, config, bags.dim,
                                     bagset_fingerprint, results_dir, code_version, folds, tuning=tuning)
    if pending and aggregator.fit is not None:
        n_outputs = _outputs(runs, label_type, label_names)
        # Pooled once for every fold, run and permutation: only the rows and labels differ between them.
        max_pool = aggregator.fit(resolved, 0).max_pool
        features = pooled_features(bags, torch.arange(len(bags)), max_pool=max_pool)
        targets = {id(run): _targets(bags.ids, run.labels, label_type, n_outputs).numpy() for run in runs}
        for run, result, slot, splits, index, key, path in pending:
            fold_result = _fit_probe_fold(bags, features, targets[id(run)], label_type, splits, index, key,
                                          aggregator, resolved, fold_seed(config.seed, index), n_outputs)
            if path is not None:
                save_fold(fold_result, path)
            result.folds[slot] = fold_result
    elif pending:
        n_outputs = _outputs(runs, label_type, label_names)
        targets = {id(run): _targets(bags.ids, run.labels, label_type, n_outputs).to(device) for run in runs}
        if tuning is not None:
            tuned = tune_folds([OuterFold(splits, index, targets[id(run)])
                                for run, _, _, splits, index, _, _ in pending], bags, label_type, n_outputs,
                               aggregator, resolved, config, tuning)
            trained, settings = [t.trained for t in tuned], [t.settings for t in tuned]
        else:
            trained = _train([(*slot, targets[id(run)]) for run, *slot in pending], bags, label_type,
                             n_outputs, aggregator, resolved, config)
            settings = [{} for _ in pending]
        for (_, result, slot, splits, index, key, path), model, chosen in zip(pending, trained, settings,
                                                                             strict=True):
            fold_result = _predict_fold(bags, label_type, splits, index, key, model, config)
            fold_result.settings = chosen
            if path is not None:
                save_fold(fold_result, path)
            result.folds[slot] = fold_result
            log.debug("fold %d: best epoch %d/%d", index, fold_result.best_epoch, len(fold_result.curve))
    return results


def stored_crossvals(runs: Sequence[CrossValRun], label_type: str, label_names: Sequence[str],
                     aggregator: AggregatorSpec, options: Mapping[str, Any] | None, config: TrainConfig, *,
                     dim: int, bagset_fingerprint: str, results_dir: str | Path,
                     code_version: str = "", tuning: Tuning | None = None) -> list[CrossValResult] | None:
    """What :func:`run_crossvals` would return when every fold of every run is already stored in
    ``results_dir`` (without reading the bags: ``dim`` is their width); ``None`` when one is missing."""
    resolved = resolve_options(aggregator.options, options)
    results, pending = _stored_folds(runs, label_type, label_names, aggregator, resolved, config, dim,
                                     bagset_fingerprint, results_dir, code_version, None, load=False,
                                     tuning=tuning)
    if pending:
        return None
    for result in results:
        result.folds = [load_fold(path) for path in result.folds]
    return results


def _outputs(runs: Sequence[CrossValRun], label_type: str, label_names: Sequence[str]) -> int:
    return len(label_names) if label_type == "multiclass" else len(next(iter(runs[0].labels.values())))


def _stored_folds(runs: Sequence[CrossValRun], label_type: str, label_names: Sequence[str],
                  aggregator: AggregatorSpec, resolved: dict[str, Any], config: TrainConfig, dim: int,
                  bagset_fingerprint: str, results_dir: str | Path | None, code_version: str,
                  folds: Sequence[int] | None, *, load: bool = True,
                  tuning: Tuning | None = None) -> tuple[list[CrossValResult], list]:
    """One result per run with its stored folds in place (``load=False``: their paths) and ``None`` in
    the slots still to train, and the list of those slots ``(run, result, slot, splits, fold, key, path)``."""
    n_outputs = _outputs(runs, label_type, label_names)
    if aggregator.fit is not None:
        code = stable_hash([code_version, object_code_digest(aggregator.fit(resolved, 0))])
    else:
        with torch.random.fork_rng(devices=[]):  # building a probe model must not move the caller's RNG
            code = stable_hash([code_version, head_code_digest(aggregator.build(dim, n_outputs, resolved))])
    results, pending = [], []
    for run in runs:
        patient_of = {i: run.splits.patient_of.get(i, i) for i in run.splits.scan_ids}
        used_labels = {i: np.asarray(run.labels[i]) for i in run.splits.scan_ids}
        result = CrossValResult(list(label_names), label_type, used_labels, patient_of,
                                run.splits.fingerprint, bagset_fingerprint, aggregator.name, resolved, config,
                                control=run.control)
        for index in range(len(run.splits.folds)) if folds is None else folds:
            key = fold_key(bagset_fingerprint, run.splits, index, run.labels, label_type, aggregator.name,
                           resolved, config, code, tuning=tuning)
            path = Path(results_dir) / f"{key}.npz" if results_dir is not None else None
            if path is not None and path.exists():
                result.folds.append(load_fold(path) if load else path)
                log.debug("fold %d: reused %s", index, path.name)
            else:
                result.folds.append(None)
                pending.append((run, result, len(result.folds) - 1, run.splits, index, key, path))
        results.append(result)
    return results, pending


def _train(pending: list, bags: PaddedBags, label_type: str, n_outputs: int, aggregator: AggregatorSpec,
           options: dict[str, Any], config: TrainConfig) -> list[TrainedFold]:
    """Train the pending folds: stacked when the head allows it, one by one otherwise."""
    def build() -> torch.nn.Module:
        return aggregator.build(bags.dim, n_outputs, options)

    members = [Member(bags.rows(splits.folds[index].train), bags.rows(splits.folds[index].val), targets,
                      fold_seed(config.seed, index)) for _, _, splits, index, _, _, targets in pending]
    if aggregator.ensemble:
        return train_members(build, members, bags, label_type, n_outputs, config,
                             input_layer=aggregator.input_layer)
    return [train_fold(build, bags, m.targets, label_type, n_outputs, m.train_rows, m.val_rows, config,
                       m.seed) for m in members]


def permute_labels(labels: Mapping[str, np.ndarray], patient_of: Mapping[str, str] | None,
                   seed: int) -> dict[str, np.ndarray]:
    """Labels shuffled across patients (a label-shuffle control): every scan of a patient takes the label
    of the first scan of another, randomly assigned patient. Any signal left afterwards is leakage."""
    patient_of = {i: (patient_of or {}).get(i, i) for i in labels}
    patients = sorted(set(patient_of.values()))
    first_scan = {p: min(i for i in labels if patient_of[i] == p) for p in patients}
    donors = np.random.default_rng(seed).permutation(len(patients))
    donor_of = {p: patients[d] for p, d in zip(patients, donors, strict=True)}
    return {i: np.asarray(labels[first_scan[donor_of[patient_of[i]]]]).copy() for i in labels}


def _predict_fold(bags: PaddedBags, label_type: str, splits: Splits, index: int, key: str,
                  trained: TrainedFold, config: TrainConfig) -> FoldResult:
    fold = splits.folds[index]
    test_rows, val_rows = bags.rows(fold.test), bags.rows(fold.val)
    test_probs, attention = predict(trained.model, bags, test_rows, label_type, config.batch_size * 2)
    val_probs, _ = predict(trained.model, bags, val_rows, label_type, config.batch_size * 2)
    lengths = bags.lengths[test_rows].numpy()
    slices = bags.slice_index[test_rows].numpy()
    windows = bags.window_id[test_rows].numpy()
    return FoldResult(
        index, key, list(fold.test), test_probs, list(fold.val), val_probs, attention,
        [slices[r, :n].copy() for r, n in enumerate(lengths)],
        [windows[r, :n].copy() for r, n in enumerate(lengths)],
        trained.curve, trained.best_epoch, trained.init_digest, trained.seconds,
    )


def _fit_probe_fold(bags: PaddedBags, features: np.ndarray, targets: np.ndarray, label_type: str,
                    splits: Splits, index: int, key: str, aggregator: AggregatorSpec, options: dict[str, Any],
                    seed: int, n_outputs: int) -> FoldResult:
    """Fit a closed-form probe (``aggregator.fit``) on the fold's training rows of ``features`` (one pooled
    row per bag); its attention is the uniform weight of mean pooling. A class no training scan has gets
    probability 0 (a probe sees only the classes it was fitted on)."""
    started = time.perf_counter()
    fold = splits.folds[index]
    probe = aggregator.fit(options, seed)
    rows = {part: bags.rows(getattr(fold, part)) for part in ("train", "val", "test")}
    train, val, test = (rows[part].numpy() for part in ("train", "val", "test"))
    probe.fit(features[train], targets[train], label_type)
    lengths = bags.lengths[rows["test"]].numpy()
    slices = bags.slice_index[rows["test"]].numpy()
    windows = bags.window_id[rows["test"]].numpy()
    def predicted(rows: np.ndarray) -> np.ndarray:
        probs = np.asarray(probe.predict(features[rows]), dtype=np.float32)
        missing = n_outputs - probs.shape[1]
        return np.pad(probs, ((0, 0), (0, missing))) if missing > 0 else probs

    return FoldResult(
        index, key, list(fold.test), predicted(test), list(fold.val), predicted(val),
        [np.full(n, 1.0 / max(n, 1), dtype=np.float32) for n in lengths],
        [slices[r, :n].copy() for r, n in enumerate(lengths)],
        [windows[r, :n].copy() for r, n in enumerate(lengths)],
        [], 0, "", time.perf_counter() - started,
    )


def save_fold(result: FoldResult, path: str | Path) -> None:
    """Write one fold's result as a single ``.npz`` atomically (temp file + rename)."""
    offsets = np.cumsum([0] + [len(a) for a in result.attention]).astype(np.int64)
    meta = {"fold": result.fold, "key": result.key, "test_ids": result.test_ids, "val_ids": result.val_ids,
            "curve": result.curve, "best_epoch": result.best_epoch, "init_digest": result.init_digest,
            "seconds": result.seconds, **({"settings": result.settings} if result.settings else {})}
    atomic_write(path, lambda handle: np.savez_compressed(
        handle, meta=np.array(json.dumps(meta)), test_probs=result.test_probs, val_probs=result.val_probs,
        offsets=offsets, attention=_flat(result.attention, np.float32),
        slice_index=_flat(result.slice_index, np.int64), window_id=_flat(result.window_id, np.int64),
    ))


def load_fold(path: str | Path) -> FoldResult:
    """Read a fold written by :func:`save_fold`."""
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data["meta"]))
        offsets = data["offsets"]

        def split(values: np.ndarray) -> list[np.ndarray]:
            return [values[a:b].copy() for a, b in itertools.pairwise(offsets)]

        return FoldResult(
            int(meta["fold"]), str(meta["key"]), list(meta["test_ids"]), data["test_probs"].copy(),
            list(meta["val_ids"]), data["val_probs"].copy(), split(data["attention"]),
            split(data["slice_index"]), split(data["window_id"]), list(meta["curve"]),
            int(meta["best_epoch"]), str(meta["init_digest"]), float(meta["seconds"]),
            dict(meta.get("settings", {})),
        )


def _flat(arrays: list[np.ndarray], dtype: type) -> np.ndarray:
    return np.concatenate(arrays).astype(dtype) if arrays else np.zeros(0, dtype=dtype)


def _targets(ids: Sequence[str], labels: Mapping[str, np.ndarray], label_type: str,
             width: int) -> torch.Tensor:
    """One target row per bag row; bags without a label get a zero row (they are in no fold)."""
    if label_type == "multiclass":
        return torch.tensor([int(np.asarray(labels[i]).reshape(-1)[0]) if i in labels else 0 for i in ids],
                            dtype=torch.int64)
    empty = np.zeros(width, np.float32)
    rows = [np.asarray(labels[i], dtype=np.float32).reshape(-1) if i in labels else empty for i in ids]
    return torch.from_numpy(np.stack(rows))


def _on_device(bags: PaddedBags, device: torch.device) -> PaddedBags:
    if bags.x.device == device:
        return bags
    return PaddedBags(bags.ids, bags.x.to(device), bags.mask.to(device), bags.slice_index, bags.window_id,
                      bags.lengths)
