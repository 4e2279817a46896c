"""The ``run`` pipeline: scans -> embeddings (cache) -> bags -> cross-validation -> statistics -> boards.

Each stage reads only the previous stage's outputs. Everything it computes is content-addressed (the
embedding cache, the splits, each fold's result), so a rerun recomputes exactly what changed and an
interrupted run resumes. A scan that fails for any encoder is left out of that task for every encoder, so
all rows of a board are scored on the same patients.
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clear_bench import __version__
from clear_bench.atomic import atomic_write_text
from clear_bench.cache import EmbeddingCache, encoder_description, safe_filename
from clear_bench.config import BenchmarkConfig, ComponentRef
from clear_bench.data.slices import SlicePlan
from clear_bench.errors import DataError, UserError, WeightsNotFoundError
from clear_bench.evaluation.bags import pad_bags
from clear_bench.evaluation.bootstrap import summarize
from clear_bench.evaluation.compare import compare_rows
from clear_bench.evaluation.crossval import CrossValResult, permute_labels, run_crossval
from clear_bench.evaluation.splits import ensure_splits
from clear_bench.evaluation.training import TrainConfig
from clear_bench.extraction import build_encoder, extract, load_bags, resolve_device, slice_plan_for
from clear_bench.leaderboard import Row, TaskBoard, render_overall_board, render_task_board
from clear_bench.registry import Registry
from clear_bench.specs import Encoder, TaskData, TaskSpec, resolve_options, stable_hash


@dataclass
class LoadedTask:
    ref: ComponentRef
    spec: TaskSpec
    data: TaskData
    failed: dict[str, str] = field(default_factory=dict)
    """Scan id -> why it is left out (extraction failed for some encoder)."""


@dataclass
class EncoderRecord:
    """What the later stages need of an encoder once its model is freed: the cache identity."""

    ref: ComponentRef
    encoder: Encoder
    plan: SlicePlan

    @property
    def label(self) -> str:
        """The YAML row id, marked when the weights are random."""
        return f"{self.ref.id} (random init)" if self.encoder.random_init else self.ref.id


@dataclass
class RunOutcome:
    boards: list[Path]
    run_dir: Path
    failures: list[str]


def run_benchmark(config: BenchmarkConfig, registry: Registry, *, extract_missing: bool = True,
                  log: Callable[[str], None] = print, progress: bool = True) -> RunOutcome:
    """Run every encoder x task x aggregator of ``config``; returns the leaderboard paths.

    With ``extract_missing=False`` (``clear-bench evaluate``) nothing is embedded or pretrained: every
    embedding must already be in the cache.
    """
    run_dir = config.output_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    cache = EmbeddingCache(config.cache_dir)
    device = str(resolve_device(config.device))
    failures: list[str] = []
    left_out: list[str] = []

    tasks = [_load_task(ref, registry, log) for ref in config.tasks]
    records = []
    for ref in _with_reference(config.encoders, log):
        try:
            if ref.pretrain is not None:
                ref = resolve_pretrained(ref, registry, config.checkpoint_dir, log, train=extract_missing)
            records.append(_extract_encoder(ref, registry, tasks, config, cache, device, log, progress,
                                            failures, extract_missing))
        except WeightsNotFoundError as error:
            # One encoder without weights must not cost the user every other row.
            failures.append(f"encoder {ref.id} left out: {error}")
            left_out.append(f"`{ref.id}`: {error}")
            log(f"encoder {ref.id}: LEFT OUT, {error}")
        gc.collect()

    train = TrainConfig(
        epochs=config.crossval.epochs, lr=float(config.crossval.lr),
        weight_decay=float(config.crossval.weight_decay), batch_size=config.crossval.batch_size,
        patience=config.crossval.patience, max_instances=config.crossval.max_instances,
        val_fraction=float(config.crossval.val_fraction), seed=config.crossval.seed, device=device,
    )
    boards: list[TaskBoard] = []
    threads = torch.get_num_threads()
    if train.device == "cpu":
        # MIL heads are small: one thread avoids the synchronisation that dominates on a busy CPU.
        torch.set_num_threads(1)
    try:
        for task in tasks:
            board = _evaluate_task(task, records, config, registry, cache, train, run_dir, log)
            if board is not None:
                boards.append(board)
    finally:
        torch.set_num_threads(threads)

    written = _write_boards(boards, config, run_dir, left_out)
    _write_manifest(run_dir / "run.json", config, records, tasks, failures)
    for path in written:
        log(f"leaderboard: {path}")
    return RunOutcome(written, run_dir, failures)


REFERENCE_ENCODER = "hu-reference"


def _with_reference(encoders: tuple[ComponentRef, ...], log: Callable[[str], None]) -> list[ComponentRef]:
    """Every board carries the non-learned reference: the floor a deep encoder must beat."""
    if any(ref.name == REFERENCE_ENCODER for ref in encoders):
        return list(encoders)
    log(f"encoder {REFERENCE_ENCODER}: added, every board carries the non-learned reference")
    return [*encoders, ComponentRef(REFERENCE_ENCODER, REFERENCE_ENCODER)]


def resolve_pretrained(ref: ComponentRef, registry: Registry, checkpoint_dir: Path,
                log: Callable[[str], None], *, train: bool = True) -> ComponentRef:
    """Train the encoder of ``ref`` with its pretrainer unless a checkpoint of the same recipe exists.

    The checkpoint is content-addressed by the pretrainer, its config file's bytes and its extra flags;
    an interrupted pretraining resumes from its last training-state checkpoint.
    """
    assert ref.pretrain is not None
    spec = registry.pretrainer(ref.pretrain.name)
    key = stable_hash({"pretrainer": spec.name, "config": ref.pretrain.config.read_text(),
                       "args": list(ref.pretrain.args)})
    folder = checkpoint_dir / f"{safe_filename(ref.id)}-{key}"
    marker = folder / "encoder-checkpoint.json"
    if marker.is_file():
        checkpoint = Path(json.loads(marker.read_text())["checkpoint"])
        if checkpoint.is_file():
            log(f"encoder {ref.id}: pretrained checkpoint reused ({checkpoint})")
            return replace(ref, options={**ref.options, "checkpoint": str(checkpoint)})
    if not train:
        raise WeightsNotFoundError(f"encoder '{ref.id}' has not been pretrained yet (no checkpoint under "
                                   f"{folder}); `clear-bench run` trains it")
    parser = argparse.ArgumentParser(prog=f"clear-bench pretrain {spec.name}")
    spec.add_arguments(parser)
    argv = ["--config", str(ref.pretrain.config), "--output-dir", str(folder), *ref.pretrain.args]
    if folder.is_dir() and any(folder.iterdir()):
        argv.append("--resume")
    log(f"encoder {ref.id}: pretraining with {spec.name} ({ref.pretrain.config.name}) into {folder}")
    checkpoint = spec.run(parser.parse_args(argv))
    if checkpoint is None:
        raise DataError(f"pretrainer '{spec.name}' returned no checkpoint for encoder '{ref.id}'")
    atomic_write_text(marker, json.dumps({"checkpoint": str(checkpoint), "key": key}))
    return replace(ref, options={**ref.options, "checkpoint": str(checkpoint)})


def _load_task(ref: ComponentRef, registry: Registry, log: Callable[[str], None]) -> LoadedTask:
    spec = registry.task(ref.name)
    data = spec.load(resolve_options(spec.options, ref.options))
    if not data.labels:
        raise DataError(f"task '{ref.id}': no scan has a label")
    log(f"task {ref.id}: {len(data.labels)} labelled scans, {len(data.label_names)} "
        f"{'classes' if spec.label_type == 'multiclass' else 'labels'}")
    return LoadedTask(ref, spec, data)


def _extract_encoder(ref: ComponentRef, registry: Registry, tasks: list[LoadedTask], config: BenchmarkConfig,
                     cache: EmbeddingCache, device: str, log: Callable[[str], None], progress: bool,
                     failures: list[str], extract_missing: bool = True) -> EncoderRecord:
    encoder = build_encoder(registry.encoder(ref.name), ref.options)
    if encoder.random_init:
        log(f"encoder {ref.id}: RANDOM-INIT weights ({encoder.weights_digest}), as the config asks")
    prep = config.preprocessing
    record = EncoderRecord(ref, encoder, slice_plan_for(
        encoder, windows=prep.windows, window_mode=prep.window_mode, slice_step=prep.slice_step,
        slice_spacing_mm=prep.slice_spacing_mm, image_size=prep.image_size))
    for task in tasks if extract_missing else ():
        ids = sorted(task.data.labels)
        report = extract(encoder, task.data.source, ids, record.plan, cache,
                         batch_size=config.extraction.batch_size, num_workers=config.extraction.num_workers,
                         precision=config.extraction.precision, device=device, progress=progress)
        log(f"encoder {ref.id} x task {task.ref.id}: {report.summary()}")
        for failure in report.failed:
            task.failed.setdefault(failure.scan_id, str(failure))
            failures.append(f"{ref.id} / {task.ref.id}: {failure}")
    # The model is not needed past extraction; keep only what identifies the cache entries.
    encoder.model = encoder.model.to("meta")
    return record


def _evaluate_task(task: LoadedTask, records: list[EncoderRecord], config: BenchmarkConfig,
                   registry: Registry, cache: EmbeddingCache, train: TrainConfig, run_dir: Path,
                   log: Callable[[str], None]) -> TaskBoard | None:
    ids = sorted(set(task.data.labels) - set(task.failed))
    labels = {i: task.data.labels[i] for i in ids}
    patient_of = {i: task.data.patient_of[i] for i in ids} if task.data.patient_of else None
    if len(ids) < config.crossval.folds * 2:
        log(f"task {task.ref.id}: only {len(ids)} usable scans; skipped")
        return None
    task_dir = run_dir / "tasks" / safe_filename(task.ref.id)
    splits = ensure_splits(task_dir / "splits", labels, task.spec.label_type, k=config.crossval.folds,
                           seed=config.crossval.seed, val_fraction=config.crossval.val_fraction,
                           patient_of=patient_of)
    rows: list[Row] = []
    results: dict[str, CrossValResult] = {}
    for record in records:
        bags = load_bags(cache, record.encoder, record.plan, task.data.source, ids,
                         precision=config.extraction.precision, device=train.device)
        padded = pad_bags(bags, ids)
        bagset = stable_hash({"encoder": encoder_description(record.encoder),
                              "plan": record.plan.fingerprint(),
                              "scans": [task.data.source.fingerprint(i) for i in ids]})
        for agg_ref in config.aggregators:
            spec = registry.aggregator(agg_ref.name)
            name = f"{record.label} + {agg_ref.id}"
            log(f"cross-validating {name} on {task.ref.id}")
            result = run_crossval(padded, labels, task.spec.label_type, task.data.label_names, splits,
                                  spec, agg_ref.options, train, bagset_fingerprint=bagset,
                                  results_dir=task_dir / "folds")
            summary = summarize(result, n_boot=config.crossval.bootstrap, seed=config.crossval.seed)
            shuffled = None
            if config.crossval.shuffle_controls > 0:
                shuffled = _shuffle_controls(
                    config.crossval.shuffle_controls, config.crossval.seed, labels, patient_of,
                    partial(run_crossval, padded, label_type=task.spec.label_type,
                            label_names=task.data.label_names, splits=splits, aggregator=spec,
                            options=agg_ref.options, config=train, bagset_fingerprint=bagset,
                            results_dir=task_dir / "folds"))
            rows.append(Row(record.label, agg_ref.id, summary, _weights_text(record.encoder),
                            shuffled))
            results[name] = result
            _write_cell(task_dir / "results", name, result, summary)
        del padded, bags
    comparisons = compare_rows(results, n_boot=config.crossval.bootstrap, seed=config.crossval.seed)
    excluded = [f"{scan}: {why}" for scan, why in sorted(task.failed.items())]
    return TaskBoard(task.ref.id, task.spec.label_type, task.data.label_names, len(ids),
                     config.crossval.folds, rows, comparisons, excluded)


def _shuffle_controls(count: int, seed: int, labels: dict[str, np.ndarray], patient_of: dict[str, str] | None,
                      cross_validate: Callable[..., CrossValResult]) -> float:
    """Mean macro AUROC of ``count`` runs on labels shuffled across patients (leakage shows above 0.5)."""
    values = []
    for index in range(count):
        shuffled = permute_labels(labels, patient_of, seed=seed + 1000 + index)
        result = cross_validate(labels=shuffled, control=f"shuffle-{index}")
        values.append(summarize(result, n_boot=1, seed=0).get("auroc").mean)
    return float(np.nanmean(values))


def _weights_text(encoder: Encoder) -> str:
    if encoder.random_init:
        return f"random init ({encoder.weights_digest}), not a trained encoder"
    if encoder.weights_digest == "none":
        return "non-learned"
    return f"weights sha256 {encoder.weights_digest[:16]}"


def _write_cell(folder: Path, name: str, result: CrossValResult, summary: Any) -> None:
    """Summary JSON and out-of-fold predictions CSV of one (encoder, aggregator) cell."""
    stem = safe_filename(name)
    atomic_write_text(folder / f"{stem}.json", json.dumps(summary.to_dict(), indent=1, sort_keys=True))
    header = ["scan_id", "fold", *(f"p_{label}" for label in result.label_names)]
    lines = [header]
    for fold in sorted(result.folds, key=lambda f: f.fold):
        for scan_id, probs in zip(fold.test_ids, fold.test_probs, strict=True):
            lines.append([scan_id, str(fold.fold), *(f"{p:.6f}" for p in np.asarray(probs).reshape(-1))])
    atomic_write_text(folder / f"{stem}.predictions.csv", _csv_text(lines))


def _write_boards(boards: list[TaskBoard], config: BenchmarkConfig, run_dir: Path,
                  left_out: list[str]) -> list[Path]:
    written = []
    for folder in {config.leaderboard_dir, run_dir / "leaderboards"}:
        for board in boards:
            path = folder / f"{safe_filename(board.task)}.md"
            atomic_write_text(path, render_task_board(board, benchmark=config.name, version=__version__))
            written.append(path)
        if boards:
            path = folder / "overall.md"
            atomic_write_text(path, render_overall_board(boards, benchmark=config.name, version=__version__,
                                                    left_out=left_out))
            written.append(path)
    return sorted(set(written))


def _write_manifest(path: Path, config: BenchmarkConfig, records: list[EncoderRecord],
                    tasks: list[LoadedTask], failures: list[str]) -> None:
    manifest = {
        "benchmark": config.name, "config": str(config.path), "clear_bench_version": __version__,
        "encoders": [{"id": r.ref.id, "name": r.ref.name, "label": r.label,
                      "weights_digest": r.encoder.weights_digest, "random_init": r.encoder.random_init,
                      "embed_dim": r.encoder.embed_dim} for r in records],
        "tasks": [{"id": t.ref.id, "name": t.ref.name, "scans": len(t.data.labels),
                   "left_out": sorted(t.failed)} for t in tasks],
        "failures": failures,
    }
    atomic_write_text(path, json.dumps(manifest, indent=1, sort_keys=True))


def _csv_text(rows: list[list[str]]) -> str:
    import io

    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


__all__ = ["RunOutcome", "UserError", "run_benchmark"]
