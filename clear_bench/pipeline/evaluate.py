"""Stage 3, evaluate one task: bags + labels + splits + heads + protocol -> a task result.

``run``, ``evaluate BENCH.yaml``, ``evaluate --features`` and the Python API all end here: the splits
are made (or reused) once per task and shared by every row, every (encoder, head) cell is
cross-validated with content-addressed folds, summarised with the patient bootstrap, optionally checked
with label-shuffle controls, and the rows are compared on shared resamples.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Protocol

import numpy as np

from clear_bench.config import ComponentRef, CrossValConfig
from clear_bench.errors import DataError, UserError
from clear_bench.evaluation.bags import Bag, pad_bags
from clear_bench.evaluation.bootstrap import Summary
from clear_bench.evaluation.compare import EncoderRole, declared_pairs
from clear_bench.evaluation.crossval import (
    CrossValResult,
    CrossValRun,
    permute_labels,
    run_crossvals,
    stored_crossvals,
)
from clear_bench.evaluation.fractions import fraction_splits, training_patients
from clear_bench.evaluation.parallel import run_in_workers, worker_count
from clear_bench.evaluation.settings import TrainConfig
from clear_bench.evaluation.sites import patient_sites, site_labels, site_splits
from clear_bench.evaluation.splits import Splits, ensure_splits
from clear_bench.evaluation.tuning import Tuning, settings_text
from clear_bench.leaderboard import EfficiencyPoint, Row, SiteHeldOut, TaskBoard
from clear_bench.naming import safe_filename
from clear_bench.pipeline.plan import PlannedHead
from clear_bench.pipeline.statistics import StatsCache
from clear_bench.specs import AggregatorSpec, MetricSpec, stable_hash

log = logging.getLogger(__name__)


class BagSource(Protocol):
    """One encoder's embeddings for a task: the cache (``run``) or a folder of files (``--features``)."""

    @property
    def label(self) -> str:
        """The row label of the encoder."""
        ...

    @property
    def weights(self) -> str:
        """What the board says about its weights."""
        ...

    @property
    def role(self) -> EncoderRole:
        """What the declared comparisons need to know of the encoder (reference, random-init twin...)."""
        ...

    def load(self, scan_ids: Sequence[str]) -> tuple[dict[str, Bag], str]:
        """The bags of ``scan_ids`` and a fingerprint of what they were computed from."""
        ...

    def peek(self, scan_ids: Sequence[str]) -> tuple[str, int]:
        """The fingerprint :meth:`load` gives and the bags' width, without reading the bags (a rerun
        whose folds are all stored never reads them)."""
        ...


@dataclass
class TaskInputs:
    """One task as evaluation sees it: the usable scans' labels, patients and what was left out."""

    task_id: str
    label_type: str
    label_names: list[str]
    labels: dict[str, np.ndarray]
    patient_of: dict[str, str] | None = None
    excluded: list[str] = field(default_factory=list)
    """Scans left out of this task, as 'id: reason'."""
    metric: str = "auroc"
    """The primary metric: it ranks the rows and is the one compared."""
    site_of: dict[str, str] | None = None
    """The acquisition site of every scan, when the source knows it."""
    notes: dict[str, list[str]] = field(default_factory=dict)
    """What reading the scans noted (uneven spacing, series chosen...), by scan id; those scans are kept."""


@dataclass(frozen=True)
class EvaluationProtocol:
    """How every cell of a task is evaluated (identical for every encoder and head)."""

    folds: int
    seed: int
    val_fraction: float
    bootstrap: int
    train: TrainConfig
    comparison_resamples: int = 30000
    permutations: int = 20
    permutation_heads: tuple[str, ...] | None = None
    """Heads whose rows get the permutation null (``None``: every head)."""
    repeats: int = 1
    require_patients: bool = False
    threads: int = 1
    workers: int = 0
    """Processes that train heads in parallel (0: one per CPU core)."""
    train_fractions: tuple[float, ...] = ()
    """Fractions of each fold's labelled training patients of the label-efficiency curves (``()``: none)."""
    fraction_draws: int = 3
    fraction_heads: tuple[str, ...] | None = None
    """Heads whose rows get label-efficiency curves (``None``: every head)."""
    site_held_out: bool = False
    """Also evaluate leave-one-site-out where the task knows sites, and probe the site from the embeddings."""
    site_heads: tuple[str, ...] | None = None
    tuning: Tuning | None = None
    """An inner-CV search of each fold's head settings (``None``: the fixed settings)."""

    @classmethod
    def from_crossval(cls, section: CrossValConfig, device: str = "cpu") -> EvaluationProtocol:
        """The protocol a benchmark YAML's ``crossval`` section declares."""
        def named(heads: Sequence[str] | None) -> tuple[str, ...] | None:
            return tuple(heads) if heads is not None else None

        return cls(section.folds, section.seed, section.val_fraction, section.bootstrap,
                   section.train_config(device), section.comparison_resamples, section.permutations,
                   named(section.permutation_heads), section.repeats, section.require_patients,
                   section.threads, section.workers, train_fractions=tuple(section.train_fractions),
                   fraction_draws=section.fraction_draws, fraction_heads=named(section.fraction_heads),
                   site_held_out=section.site_held_out, site_heads=named(section.site_heads),
                   tuning=Tuning.from_config(section.tuning) if section.tuning else None)

    @property
    def curve_fractions(self) -> list[float]:
        """The training fractions below the full data, smallest first."""
        return sorted({float(f) for f in self.train_fractions if f < 1.0})

    def split_seed(self, repeat: int) -> int:
        """The split seed of repeat ``repeat`` (repeat 0 uses the protocol's own seed)."""
        return self.seed if repeat == 0 else int(stable_hash(["repeat", self.seed, repeat]), 16) % (2**31 - 1)


@dataclass
class Cell:
    """One (encoder, head) on one task: its board row and its cross-validation results (one per
    repeat)."""

    row: Row
    results: list[CrossValResult]

    @property
    def result(self) -> CrossValResult:
        """The first repeat's result."""
        return self.results[0]

    @property
    def summary(self) -> Summary:
        return self.row.summary


@dataclass
class TaskResult:
    """What evaluating one task produced: its board and every cell."""

    board: TaskBoard
    cells: list[Cell]
    task_dir: Path


def evaluate_task(inputs: TaskInputs, encoders: Sequence[BagSource], heads: Sequence[PlannedHead],
                  protocol: EvaluationProtocol, metrics: Sequence[MetricSpec], task_dir: Path
                  ) -> TaskResult | None:
    """Cross-validate every head on every encoder's bags of ``inputs``; ``None`` when too few scans."""
    labels = inputs.labels
    level, patient_of = _patient_level(inputs, protocol)
    patients = {(patient_of or {}).get(i, i) for i in labels}
    if len(patients) < protocol.folds * 2:
        log.info("task %s: only %d usable scans (%d patients); skipped", inputs.task_id, len(labels),
                 len(patients))
        return None
    splits = [ensure_splits(task_dir / "splits", labels, inputs.label_type, k=protocol.folds,
                            seed=protocol.split_seed(r), val_fraction=protocol.val_fraction,
                            patient_of=patient_of) for r in range(protocol.repeats)]
    ids = splits[0].scan_ids
    site_metrics = [m for m in metrics if "multiclass" in m.label_types]
    metrics = [m for m in metrics if inputs.label_type in m.label_types]
    permuted = [permute_labels(labels, patient_of, seed=protocol.seed + 1000 + index)
                for index in range(protocol.permutations)]
    real = [CrossValRun(labels, split) for split in splits]
    nulls = [CrossValRun(null, splits[0], f"permutation-{index}") for index, null in enumerate(permuted)]
    null_heads = _named_heads(protocol.permutation_heads, heads, "crossval.permutation_heads")
    fractions = protocol.curve_fractions
    draws = protocol.fraction_draws
    subsets = [CrossValRun(labels, fraction_splits(splits[0], labels, inputs.label_type, f, d),
                           f"fraction-{f:g}-draw-{d}") for f in fractions for d in range(draws)]
    curve_heads = (_named_heads(protocol.fraction_heads, heads, "crossval.fraction_heads") if fractions
                   else set())
    held_out = site_splits(splits[0], labels, inputs.label_type, inputs.site_of, seed=protocol.seed) \
        if protocol.site_held_out and inputs.site_of else None
    site_runs = [CrossValRun(labels, held_out, "site-held-out")] if held_out else []
    site_heads = _named_heads(protocol.site_heads, heads, "crossval.site_heads") if held_out else set()
    row_runs = {head.ref.id: real + (nulls if head.ref.id in null_heads else [])
                + (subsets if head.ref.id in curve_heads else [])
                + (site_runs if head.ref.id in site_heads else []) for head in heads}
    rows_of, sites = list(heads), []
    if held_out:  # one more row per encoder: the linear probe predicting the site from the embeddings
        sites = sorted(set(patient_sites(inputs.site_of, splits[0].patient_of).values()))
        shortcut = CrossValRun(site_labels({i: inputs.site_of[i] for i in ids}, splits[0].patient_of, sites),
                               splits[0], "site-shortcut")
        rows_of.append(PlannedHead(ComponentRef("linear-probe", SITE_PROBE, {}), _linear_probe_spec()))
        row_runs[SITE_PROBE] = [shortcut]
    tuned = tuned_heads(protocol.tuning, heads)

    def tuning_of(head: PlannedHead) -> Tuning | None:
        return protocol.tuning if head.ref.id in tuned else None

    peeked = [source.peek(ids) for source in encoders]

    def targets(head: PlannedHead) -> tuple[str, list[str]]:
        return ("multiclass", sites) if head.ref.id == SITE_PROBE else (inputs.label_type, inputs.label_names)

    def stored(source_index: int, head: PlannedHead) -> list[CrossValResult] | None:
        bagset, dim = peeked[source_index]
        return stored_crossvals(row_runs[head.ref.id], *targets(head), head.spec, head.ref.options,
                                protocol.train, dim=dim, bagset_fingerprint=bagset,
                                results_dir=task_dir / "folds", tuning=tuning_of(head))

    computed: dict[tuple[int, str], list[CrossValResult]] = {}
    for index in range(len(encoders)):
        for head in rows_of:
            found = stored(index, head)
            if found is not None:
                computed[index, head.ref.id] = found
    position = {id(source): index for index, source in enumerate(encoders)}
    missing = [source for index, source in enumerate(encoders)
               if any((index, head.ref.id) not in computed for head in rows_of)]
    with _cpu_threads(protocol.threads if protocol.train.device == "cpu" else None):
        for group in _memory_groups(missing, ids):
            padded = {source.label: pad_bags(bags, ids, cap=protocol.train.eval_max_instances)
                      for source, bags, _ in group}
            todo = [(position[id(source)], head, bagset) for source, _, bagset in group for head in rows_of
                    if (position[id(source)], head.ref.id) not in computed]
            rows = [partial(run_crossvals, padded[encoders[index].label], row_runs[head.ref.id],
                            *targets(head), head.spec, head.ref.options,
                            protocol.train, bagset_fingerprint=bagset, results_dir=task_dir / "folds",
                            tuning=tuning_of(head))
                    for index, head, bagset in todo]
            # The rows are independent: forked workers fill the fold cache (largest first: bag size x
            # cross-validations), then each row runs here, reading its folds back (or training them
            # when there are no workers).
            largest_first = sorted(rows, key=lambda row: -row.args[0].x.numel() * len(row.args[1]))
            run_in_workers(largest_first, worker_count(protocol.workers, len(rows)))
            for (index, head, _), cross_validate in zip(todo, rows, strict=True):
                log.info("cross-validating %s + %s on %s", encoders[index].label, head.ref.id, inputs.task_id)
                computed[index, head.ref.id] = cross_validate()
            del padded, group, rows
    stats = StatsCache(task_dir / "stats")
    cells: list[Cell] = []
    for index, source in enumerate(encoders):
        for head in heads:
            found = computed[index, head.ref.id]
            results, rest = found[:len(splits)], found[len(splits):]
            null_results = rest[:len(nulls)] if head.ref.id in null_heads else []
            summary = stats.summary(results, n_boot=protocol.bootstrap, seed=protocol.seed, metrics=metrics)
            null = stats.null(null_results, results[0], inputs.metric, metrics) if null_results else None
            if head.ref.id in site_heads:
                rest, site_results = rest[:-1], rest[-1:]
            subset_results = rest[len(null_results):]
            row = Row(source.label, head.ref.id, summary, source.weights, null)
            if head.ref.id in tuned:
                row.tuned = chosen_settings(results)
            if subset_results:
                row.efficiency = _efficiency_curve(subset_results, [run.splits for run in subsets], splits[0],
                                                   summary, fractions, draws, stats, protocol, inputs.metric,
                                                   metrics)
            if head.ref.id in site_heads:
                value = stats.summary(site_results, n_boot=protocol.bootstrap, seed=protocol.seed,
                                      metrics=metrics).get(inputs.metric)
                row.site_held_out = SiteHeldOut(value.mean, value.ci_low, value.ci_high,
                                                dict(zip(sites, value.fold_values, strict=True)))
            if held_out:
                row.site_shortcut = stats.summary(computed[index, SITE_PROBE], n_boot=1, seed=protocol.seed,
                                                  metrics=site_metrics).get("auroc").mean
            cells.append(Cell(row, results))
    runs = {cell.row.name: cell.results for cell in cells}
    pairs = declared_pairs([source.role for source in encoders], [head.ref.id for head in heads])
    comparisons, matrix = stats.comparisons(runs, pairs, inputs.metric, n_boot=protocol.comparison_resamples,
                                            seed=protocol.seed, metrics=metrics)
    extra = [(m.name, m.title or m.name, m.interval) for m in metrics if m.name not in _BOARD_COLUMNS]
    board = TaskBoard(inputs.task_id, inputs.label_type, inputs.label_names, len(ids), protocol.folds,
                      [cell.row for cell in cells], comparisons, list(inputs.excluded), metric=inputs.metric,
                      extra_metrics=extra, level=level, repeats=protocol.repeats,
                      permutations=protocol.permutations, pairs=matrix,
                      null_heads=[] if len(null_heads) == len(heads) else sorted(null_heads),
                      fraction_draws=draws if curve_heads else 0, sites=sites if held_out else [],
                      tuning=_tuning_note(protocol.tuning, tuned),
                      scan_notes={i: list(inputs.notes[i]) for i in sorted(ids) if inputs.notes.get(i)})
    return TaskResult(board, cells, task_dir)


SITE_PROBE = "site-from-embeddings"
"""The id of the per-encoder row that predicts the site (stored like a head's row, never on the board)."""


def chosen_settings(results: Sequence[CrossValResult]) -> dict[str, int]:
    """How many folds (of every repeat) chose each setting of the grid, most often chosen first."""
    counts: dict[str, int] = {}
    for result in results:
        for fold in result.folds:
            text = settings_text(fold.settings)
            counts[text] = counts.get(text, 0) + 1
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def tuned_heads(tuning: Tuning | None, heads: Sequence[PlannedHead]) -> set[str]:
    """The heads the tuning applies to: those it names, else every trained (not closed-form) head."""
    if tuning is None:
        return set()
    if tuning.heads is None:
        return {head.ref.id for head in heads if head.spec.fit is None}
    return _named_heads(tuning.heads, heads, "crossval.tuning.heads")


def _tuning_note(tuning: Tuning | None, tuned: set[str]) -> dict[str, object]:
    if tuning is None or not tuned:
        return {}
    return {"heads": sorted(tuned), "protocol": tuning.describe(), **tuning.key()}


def _linear_probe_spec() -> AggregatorSpec:
    from clear_bench.builtin import clear_bench_aggregators

    return next(spec for spec in clear_bench_aggregators() if spec.name == "linear-probe")


def _efficiency_curve(results: Sequence[CrossValResult], subsets: Sequence[Splits], full: Splits,
                      summary: Summary, fractions: Sequence[float], draws: int, stats: StatsCache,
                      protocol: EvaluationProtocol, metric: str, metrics: Sequence[MetricSpec]
                      ) -> list[EfficiencyPoint]:
    """One point per fraction (its draws summarised as repeats), then the full-data point of the row."""
    points = []
    for position, fraction in enumerate(fractions):
        chunk = slice(position * draws, (position + 1) * draws)
        value = stats.summary(results[chunk], n_boot=protocol.bootstrap, seed=protocol.seed,
                              metrics=metrics).get(metric)
        patients = float(np.mean([training_patients(s) for s in subsets[chunk]]))
        points.append(EfficiencyPoint(fraction, patients, value.mean, value.ci_low, value.ci_high, draws))
    whole = summary.get(metric)
    points.append(EfficiencyPoint(1.0, training_patients(full), whole.mean, whole.ci_low, whole.ci_high, 1))
    return points


def _patient_level(inputs: TaskInputs, protocol: EvaluationProtocol) -> tuple[str, dict[str, str] | None]:
    """``("patient-level", patients)`` when every scan names its patient; otherwise the scans without
    one become their own group, the board says "scan-level", and the run warns (or refuses, when the
    protocol requires patients)."""
    known = {i: p for i, p in (inputs.patient_of or {}).items() if i in inputs.labels}
    missing = len(inputs.labels) - len(known)
    if not missing:
        return "patient-level", known
    message = (f"task {inputs.task_id}: {missing} of {len(inputs.labels)} scans name no patient, so their "
               "folds are scan-level: several scans of one patient may fall into different folds")
    if protocol.require_patients:
        raise DataError(message + " (crossval.require_patients is set)")
    log.warning("WARNING: %s", message)
    return "scan-level", ({**{i: i for i in inputs.labels}, **known} if known else None)


def _named_heads(names: Sequence[str] | None, heads: Sequence[PlannedHead], key: str) -> set[str]:
    """The ids of the heads ``names`` selects (``None``: every head); an unknown one is an error naming
    the ``key`` of the YAML."""
    ids = [head.ref.id for head in heads]
    if names is None:
        return set(ids)
    unknown = sorted(set(names) - set(ids))
    if unknown:
        raise UserError(f"{key}: {', '.join(unknown)} is not a head of this benchmark "
                        f"(heads: {', '.join(ids)})")
    return set(names)


def _memory_groups(encoders: Sequence[BagSource], ids: Sequence[str]
                   ) -> Iterator[list[tuple[BagSource, dict[str, Bag], str]]]:
    """The encoders with their bags, in groups whose bags together stay under :data:`ROW_GROUP_BYTES`,
    so that the rows of a group can train in parallel without holding every encoder's bags at once."""
    group: list[tuple[BagSource, dict[str, Bag], str]] = []
    size = 0
    for source in encoders:
        bags, bagset = source.load(ids)
        nbytes = sum(bag.embeddings.nbytes for bag in bags.values())
        if group and size + nbytes > ROW_GROUP_BYTES:
            yield group
            group, size = [], 0
        group.append((source, bags, bagset))
        size += nbytes
    if group:
        yield group


ROW_GROUP_BYTES = 4 << 30
"""The bags of encoders evaluated side by side (their rows in parallel) stay under this many bytes."""


_BOARD_COLUMNS = ("auroc", "auprc", "balanced_accuracy", "f1_macro")
"""Metrics every board shows in its fixed columns; any other registered metric gets a column of its own."""


def task_folder(run_dir: Path, task_id: str) -> Path:
    """Where a task's splits, folds and results live in a run folder."""
    return run_dir / "tasks" / safe_filename(task_id)


@contextlib.contextmanager
def _cpu_threads(threads: int | None) -> Iterator[None]:
    """Run heads on ``threads`` CPU threads, restoring torch's setting afterwards."""
    import torch

    if not threads:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
