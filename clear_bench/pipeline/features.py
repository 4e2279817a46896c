"""Embeddings that already exist as files: folders in the public CLEAR layout (``{id}.h5`` with dataset
``feats``) plus a label CSV, evaluated and reported by the same stages as a benchmark run."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from clear_bench.errors import UserError
from clear_bench.evaluation.bags import Bag
from clear_bench.evaluation.compare import EncoderRole
from clear_bench.evaluation.inputs import LabelTable, read_feature_folder
from clear_bench.pipeline.evaluate import EvaluationProtocol, TaskInputs, evaluate_task, task_folder
from clear_bench.pipeline.extract import weights_text
from clear_bench.pipeline.plan import PlannedHead
from clear_bench.pipeline.report import write_report
from clear_bench.pipeline.run import RunResult
from clear_bench.specs import MetricSpec

log = logging.getLogger(__name__)


@dataclass
class FolderBags:
    """One encoder's bags read from a feature folder (a bag source for evaluation)."""

    label: str
    weights: str
    bags: dict[str, Bag]
    fingerprint: str
    role: EncoderRole

    def load(self, scan_ids: Sequence[str]) -> tuple[dict[str, Bag], str]:
        return {i: self.bags[i] for i in scan_ids}, self.fingerprint

    def peek(self, scan_ids: Sequence[str]) -> tuple[str, int]:
        return self.fingerprint, next(iter(self.bags.values())).embeddings.shape[1]


def evaluate_features(features: Sequence[tuple[str, Path]], table: LabelTable, heads: Sequence[PlannedHead],
                      protocol: EvaluationProtocol, metrics: Sequence[MetricSpec], out_dir: Path, *,
                      task_id: str, benchmark: str, baselines: Sequence[str] = ()) -> RunResult:
    """Evaluate every ``(name, folder)`` of embeddings on the labels of ``table``; the scans every folder
    holds are used, the others are left out and listed on the board. The files' provenance (written by
    ``extract --export-clear``) says which folder is a reference or a random-init twin; ``baselines``
    names folders every other row is compared with."""
    sources, failed = [], {}
    for name, folder in features:
        read = read_feature_folder(folder, sorted(table.labels))
        for scan_id, why in read.failures.items():
            failed.setdefault(scan_id, f"{name}: {why}")
        info = read.provenance
        label = f"{name} (random init)" if info.get("random_init") else name
        weights = weights_text(str(info["weights_digest"]), random_init=bool(info.get("random_init")),
                               reference=bool(info.get("reference"))) if "weights_digest" in info else ""
        role = EncoderRole(label, str(info.get("encoder", name)), reference=bool(info.get("reference")),
                           random_init=bool(info.get("random_init")), baseline=name in baselines)
        sources.append(FolderBags(label, weights, read.bags, read.fingerprint, role))
    for scan_id, why in sorted(failed.items()):
        log.info("left out %s: %s", scan_id, why)
    ids = sorted(set(table.labels) - set(failed))
    patient_of = {i: table.patient_of[i] for i in ids} if table.patient_of else None
    inputs = TaskInputs(task_id, table.label_type, table.label_names, {i: table.labels[i] for i in ids},
                        patient_of, [f"{scan}: {why}" for scan, why in sorted(failed.items())])
    n_patients = len({(patient_of or {}).get(i, i) for i in ids})
    if n_patients < 2 * protocol.folds:
        raise UserError(f"{len(ids)} usable scans are too few for {protocol.folds} folds ({len(failed)} left "
                        f"out, {len(table.skipped)} without a complete label)")
    result = evaluate_task(inputs, sources, heads, protocol, metrics, task_folder(out_dir, task_id))
    assert result is not None  # enough patients, checked above
    manifest = {"features": {name: str(folder) for name, folder in features},
                "labels_without_value": table.skipped,
                "tasks": [{"id": task_id, "scans": len(table.labels), "left_out": sorted(failed)}],
                "failures": [f"{scan}: {why}" for scan, why in sorted(failed.items())]}
    boards = write_report([result], benchmark=benchmark, run_dir=out_dir, manifest=manifest)
    return RunResult(out_dir, boards, [result], [], manifest["failures"])
