"""The whole benchmark: plan -> extract -> evaluate every task -> report.

Everything it computes is content-addressed (the embedding cache, the splits, each fold's result), so a
rerun recomputes exactly what changed and an interrupted run resumes. A scan that fails for any encoder
is left out of that task for every encoder, so all rows of a board are scored on the same patients; an
encoder that can embed none of a task's scans (while another can) sits out that task instead.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import platform
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clear_bench.atomic import atomic_write_text
from clear_bench.cache import EmbeddingCache
from clear_bench.config import BenchmarkConfig, TransferRef
from clear_bench.errors import UserError
from clear_bench.evaluation.transfer import TransferBoard
from clear_bench.extraction import resolve_device
from clear_bench.pipeline.evaluate import (
    EvaluationProtocol,
    TaskInputs,
    TaskResult,
    evaluate_task,
    task_folder,
)
from clear_bench.pipeline.extract import CachedBags, EncoderRecord, Extraction, extract_embeddings
from clear_bench.pipeline.plan import PlannedTask, RunPlan, plan_run
from clear_bench.pipeline.report import AttentionScans, choose_attention_scans, write_report
from clear_bench.pipeline.transfer import evaluate_transfer, transfer_folder
from clear_bench.registry import Registry
from clear_bench.specs import SiteSource, TaskData

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
    """Failed extractions, one line per (encoder, task, scan); their scans are left out of that task."""


def run_benchmark(config: BenchmarkConfig, registry: Registry, *, extract_missing: bool = True,
                  progress: bool = True) -> RunResult:
    """Run every encoder x task x head of ``config``.

    With ``extract_missing=False`` (``clear-bench evaluate``) nothing is embedded or pretrained: every
    embedding must already be in the cache.
    """
    timings: dict[str, float] = {}
    started = tick = time.perf_counter()
    config.output_dir.mkdir(parents=True, exist_ok=True)
    device = str(resolve_device(config.device))
    cache = EmbeddingCache(config.cache_dir)
    plan = plan_run(config, registry, pretrain=extract_missing, progress=progress)
    timings["plan"], tick = time.perf_counter() - tick, time.perf_counter()
    extraction = extract_embeddings(plan, cache, device, embed=extract_missing, progress=progress)
    timings["extract"], tick = time.perf_counter() - tick, time.perf_counter()
    protocol = EvaluationProtocol.from_crossval(config.crossval, device)
    compute = {record.label: record.compute for record in extraction.records}
    references = [record.label for record in extraction.records if record.planned.spec.reference]
    heads = {head.spec.name: head.spec for head in plan.heads}
    results, attention, embedding_sets = [], {}, {}
    for task in plan.tasks:
        inputs = task_inputs(task, extraction)
        sources = [CachedBags(cache, r, task.data.source) for r in task_records(extraction, task.ref.id)]
        metrics = registry.metrics_for(task.spec.label_type)
        result = evaluate_task(inputs, sources, plan.heads, protocol, metrics,
                               task_folder(config.output_dir, task.ref.id))
        timings[f"evaluate:{task.ref.id}"], tick = time.perf_counter() - tick, time.perf_counter()
        embedding_sets[task.ref.id] = {source.record.id: {"encoder_key": source.record.cache_key,
                                                          "bagset": source.fingerprint} for source in sources}
        if result is not None:
            attention[task.ref.id] = attention_scans(task, inputs)
            results.append(result)
    transfers = []
    for pair in config.transfer:
        transfers.append(_transfer(pair, plan, extraction, cache, protocol, registry, results,
                                   config.output_dir))
        timings[f"transfer:{pair.name}"], tick = time.perf_counter() - tick, time.perf_counter()
    sat_out = [(encoder_id, task_id, why) for task_id, absent in extraction.left_out_of_task.items()
               for encoder_id, why in absent.items()]
    left_out = [f"`{item.encoder_id}`: {item.reason}" for item in extraction.left_out]
    left_out += [f"`{encoder_id}` (task {task_id}): {why}" for encoder_id, task_id, why in sat_out]
    manifest = _manifest(config, plan, extraction, protocol, results, embedding_sets, timings)
    boards = write_report(results, benchmark=config.name, run_dir=config.output_dir,
                          leaderboard_dirs=[config.leaderboard_dir], left_out=left_out, manifest=manifest,
                          attention=attention, encoders=compute, heads=heads, references=references,
                          transfers=transfers)
    timings["report"] = time.perf_counter() - tick
    timings["total"] = time.perf_counter() - started
    _record_timings(config.output_dir / "run.json", timings)
    for path in boards:
        log.info("leaderboard: %s", path)
    return RunResult(config.output_dir, boards, results,
                     [*(str(item) for item in extraction.left_out),
                      *(f"encoder {encoder_id} left out of task {task_id}: {why}"
                        for encoder_id, task_id, why in sat_out)], extraction.failures)


def _transfer(pair: TransferRef, plan: RunPlan, extraction: Extraction, cache: EmbeddingCache,
              protocol: EvaluationProtocol, registry: Registry, results: Sequence[TaskResult],
              run_dir: Path) -> TransferBoard:
    """Evaluate one ``transfer:`` pair with every encoder and the pair's heads."""
    tasks = {task.ref.id: task for task in plan.tasks}
    train, test = tasks[pair.train], tasks[pair.test]
    heads = list(plan.heads)
    if pair.heads is not None:
        unknown = sorted(set(pair.heads) - {head.ref.id for head in heads})
        if unknown:
            raise UserError(f"transfer {pair.name}: {', '.join(unknown)} is not a head of this benchmark "
                            f"(heads: {', '.join(head.ref.id for head in heads)})")
        heads = [head for head in heads if head.ref.id in pair.heads]
    in_task = {cell.row.name: cell.row.summary.get(result.board.metric).mean
               for result in results if result.board.task == pair.train for cell in result.cells}
    # an encoder that sat out either task has no bags there: it sits out the pair
    in_test = {r.id for r in task_records(extraction, pair.test)}
    records = [r for r in task_records(extraction, pair.train) if r.id in in_test]
    return evaluate_transfer(
        task_inputs(train, extraction), task_inputs(test, extraction),
        [CachedBags(cache, r, train.data.source) for r in records],
        [CachedBags(cache, r, test.data.source) for r in records], heads, protocol,
        registry.metrics_for(train.spec.label_type), transfer_folder(run_dir, pair.name), in_task)


def _record_timings(path: Path, timings: Mapping[str, float]) -> None:
    """Add the report stage's and the whole run's time to ``run.json`` (written before they were known)."""
    body = json.loads(path.read_text())
    body["timings_seconds"] = dict(timings)
    atomic_write_text(path, json.dumps(body, indent=1, sort_keys=True))


def task_inputs(task: PlannedTask, extraction: Extraction) -> TaskInputs:
    """The task as evaluation sees it: labelled scans that every encoder could embed."""
    failed = extraction.failed.get(task.ref.id, {})
    ids = sorted(set(task.data.labels) - set(failed))
    known = task.data.patient_of or {}
    patient_of = {i: known[i] for i in ids if i in known} or None  # scans without a patient stay out
    return TaskInputs(task.ref.id, task.spec.label_type, list(task.data.label_names),
                      {i: task.data.labels[i] for i in ids}, patient_of,
                      [f"{scan}: {why}" for scan, why in sorted(failed.items())], task.spec.metric,
                      site_of=task_sites(task.data, ids), notes=scan_notes(extraction, task.ref.id, ids))


def task_records(extraction: Extraction, task_id: str) -> list[EncoderRecord]:
    """The encoders' extraction records that take part in task ``task_id`` (not those that sat it out)."""
    absent = extraction.left_out_of_task.get(task_id, {})
    return [record for record in extraction.records if record.id not in absent]


def scan_notes(extraction: Extraction, task_id: str, ids: Sequence[str]) -> dict[str, list[str]]:
    """What reading the scans ``ids`` of a task noted, by scan id (scans without notes left out)."""
    found = extraction.notes.get(task_id, {})
    return {i: list(found[i]) for i in sorted(ids) if found.get(i)}


def task_sites(data: TaskData, ids: Sequence[str]) -> dict[str, str] | None:
    """The acquisition site of each of ``ids``, from the task or its :class:`SiteSource`; ``None`` unless
    every scan has one."""
    sites = data.site_of
    if sites is None and isinstance(data.source, SiteSource):
        sites = {i: data.source.site_id(i) for i in ids}
    found = {i: str(sites[i]) for i in ids if sites and sites.get(i) is not None}
    return found if found and len(found) == len(ids) else None


def attention_scans(task: PlannedTask, inputs: TaskInputs) -> AttentionScans:
    """The scans of a task's attention plot (:func:`choose_attention_scans`) and the slices of each that
    carry a lesion box, read from the source (``None`` when it cannot be read)."""
    lesions: dict[str, list[int] | None] = {}
    chosen = choose_attention_scans(inputs.labels, inputs.label_type)
    for scan_id in chosen:
        try:
            lesions[scan_id] = sorted(int(s) for s in task.data.source.load(scan_id).lesion_slices())
        except Exception as error:  # the plot loses its lesion marks, the run goes on
            log.info("task %s: lesion slices of %s not read (%s)", task.ref.id, scan_id, error)
            lesions[scan_id] = None
    return AttentionScans(chosen, lesions)


def hardware(device: str) -> dict[str, Any]:
    """CPU model and cores, and the GPU when the run used one."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            names = [line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    info: dict[str, Any] = {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(),
                            "device": device}
    if device.startswith("cuda"):
        import torch

        index = torch.device(device).index or 0
        info["gpu"] = torch.cuda.get_device_name(index)
        info["gpu_memory_gib"] = round(torch.cuda.get_device_properties(index).total_memory / 2**30, 1)
    return info


def _resolved(config: BenchmarkConfig) -> dict[str, Any]:
    """The benchmark config as resolved (defaults filled in), JSON-ready."""
    def plain(value: Any) -> Any:
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, Mapping):
            return {str(k): plain(v) for k, v in value.items()}
        if isinstance(value, Sequence) and not isinstance(value, str):
            return [plain(v) for v in value]
        return value

    return plain(dataclasses.asdict(config))


def _manifest(config: BenchmarkConfig, plan: RunPlan, extraction: Extraction, protocol: EvaluationProtocol,
              results: Sequence[TaskResult], embedding_sets: Mapping[str, Any],
              timings: Mapping[str, float]) -> dict:
    seeds = {"benchmark": config.seed, "crossval": protocol.seed, "training": protocol.train.seed,
             "splits": [protocol.split_seed(r) for r in range(protocol.repeats)],
             "permutations": [protocol.seed + 1000 + i for i in range(protocol.permutations)]}
    return {
        "config": str(config.path),
        "config_resolved": _resolved(config),
        "hardware": hardware(str(protocol.train.device)),
        "seeds": seeds,
        "timings_seconds": dict(timings),
        "encoders": [{"id": r.id, "name": r.planned.ref.name, "label": r.label,
                      "weights_digest": r.encoder.weights_digest, "random_init": r.encoder.random_init,
                      "reference": r.planned.spec.reference, "embed_dim": r.encoder.embed_dim,
                      "cache_key": r.cache_key, "compute": r.compute.to_dict()}
                     for r in extraction.records],
        "tasks": [{"id": t.ref.id, "name": t.ref.name, "scans": len(t.data.labels),
                   "left_out": sorted(extraction.failed.get(t.ref.id, {})),
                   "left_out_reasons": dict(sorted(extraction.failed.get(t.ref.id, {}).items())),
                   "embedding_sets": embedding_sets.get(t.ref.id, {})} for t in plan.tasks],
        "split_fingerprints": {r.board.task: sorted({run.split_fingerprint for cell in r.cells
                                                     for run in cell.results}) for r in results},
        "encoders_left_out_reasons": {item.encoder_id: item.reason for item in extraction.left_out},
        "encoders_left_out_of_tasks": extraction.left_out_of_task,
        "failures": [*(str(item) for item in extraction.left_out), *extraction.failures],
    }
