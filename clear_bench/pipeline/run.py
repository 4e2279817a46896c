"""The whole benchmark: plan -> extract -> evaluate every task -> report.

Everything it computes is content-addressed (the embedding cache, the splits, each fold's result), so a
rerun recomputes exactly what changed and an interrupted run resumes. A scan that fails for any encoder
is left out of that task for every encoder, so all rows of a board are scored on the same patients.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from clear_bench.cache import EmbeddingCache
from clear_bench.config import BenchmarkConfig
from clear_bench.extraction import resolve_device
from clear_bench.pipeline.evaluate import (
    EvaluationProtocol,
    TaskInputs,
    TaskResult,
    evaluate_task,
    task_folder,
)
from clear_bench.pipeline.extract import CachedBags, Extraction, extract_embeddings
from clear_bench.pipeline.plan import PlannedTask, RunPlan, plan_run
from clear_bench.pipeline.report import write_report
from clear_bench.registry import Registry

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    """What a run produced: its folder, the boards written, every task's result, what was left out."""

    run_dir: Path
    boards: list[Path]
    tasks: list[TaskResult]
    left_out: list[str] = field(default_factory=list)
    """Encoders that could not take part, with the reason."""
    failures: list[str] = field(default_factory=list)
    """Scans that failed for some encoder, one line each (they are left out of that task)."""


def run_benchmark(config: BenchmarkConfig, registry: Registry, *, extract_missing: bool = True,
                  progress: bool = True) -> RunResult:
    """Run every encoder x task x head of ``config``.

    With ``extract_missing=False`` (``clear-bench evaluate``) nothing is embedded or pretrained: every
    embedding must already be in the cache.
    """
    config.output_dir.mkdir(parents=True, exist_ok=True)
    device = str(resolve_device(config.device))
    cache = EmbeddingCache(config.cache_dir)
    plan = plan_run(config, registry, pretrain=extract_missing)
    extraction = extract_embeddings(plan, cache, device, embed=extract_missing, progress=progress)
    protocol = EvaluationProtocol.from_crossval(config.crossval, device)
    results = []
    for task in plan.tasks:
        result = evaluate_task(task_inputs(task, extraction), [CachedBags(cache, r, task.data.source)
                                                                for r in extraction.records],
                               plan.heads, protocol, registry.metrics_for(task.spec.label_type),
                               task_folder(config.output_dir, task.ref.id))
        if result is not None:
            results.append(result)
    left_out = [f"`{item.encoder_id}`: {item.reason}" for item in extraction.left_out]
    boards = write_report(results, benchmark=config.name, run_dir=config.output_dir,
                          leaderboard_dirs=[config.leaderboard_dir], left_out=left_out,
                          manifest=_manifest(config, plan, extraction))
    for path in boards:
        log.info("leaderboard: %s", path)
    return RunResult(config.output_dir, boards, results, [str(item) for item in extraction.left_out],
                     extraction.failures)


def task_inputs(task: PlannedTask, extraction: Extraction) -> TaskInputs:
    """The task as evaluation sees it: labelled scans that every encoder could embed."""
    failed = extraction.failed.get(task.ref.id, {})
    ids = sorted(set(task.data.labels) - set(failed))
    known = task.data.patient_of or {}
    patient_of = {i: known[i] for i in ids if i in known} or None  # scans without a patient stay out
    return TaskInputs(task.ref.id, task.spec.label_type, list(task.data.label_names),
                      {i: task.data.labels[i] for i in ids}, patient_of,
                      [f"{scan}: {why}" for scan, why in sorted(failed.items())], task.spec.metric)


def _manifest(config: BenchmarkConfig, plan: RunPlan, extraction: Extraction) -> dict:
    return {
        "config": str(config.path),
        "encoders": [{"id": r.id, "name": r.planned.ref.name, "label": r.label,
                      "weights_digest": r.encoder.weights_digest, "random_init": r.encoder.random_init,
                      "reference": r.planned.spec.reference, "embed_dim": r.encoder.embed_dim}
                     for r in extraction.records],
        "tasks": [{"id": t.ref.id, "name": t.ref.name, "scans": len(t.data.labels),
                   "left_out": sorted(extraction.failed.get(t.ref.id, {}))} for t in plan.tasks],
        "failures": [*(str(item) for item in extraction.left_out), *extraction.failures],
    }
