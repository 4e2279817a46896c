"""Stage 2, extract: every planned encoder embeds the labelled scans of every task into the cache.

Returns what it embedded and what failed, per task; later stages read that result, never a shared
object. With ``embed=False`` (``clear-bench evaluate``) encoders are only built, to know their cache
identity, and nothing is embedded.

Each encoder's cost is recorded as well: parameters, the FLOPs of one forward pass (counted on the meta
device, so nothing is computed) and the measured throughput of the extraction that made its embeddings,
kept beside its cache entries (``<cache>/<encoder key>/throughput.json``) so that a cached rerun reports
the figure of the run that extracted.
"""

from __future__ import annotations

import gc
import json
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clear_bench.atomic import atomic_write_text
from clear_bench.cache import EmbeddingCache, encoder_description
from clear_bench.components import build_encoder
from clear_bench.data.scan import ScanFailure
from clear_bench.data.slices import SlicePlan
from clear_bench.errors import UnusableWeightsError, WeightsNotFoundError
from clear_bench.evaluation.bags import Bag
from clear_bench.evaluation.compare import EncoderRole
from clear_bench.extraction import ExtractionReport, extract, load_bags, slice_plan_for
from clear_bench.leaderboard import EncoderCompute
from clear_bench.pipeline.plan import LeftOut, PlannedEncoder, RunPlan
from clear_bench.specs import Encoder, ScanSource, stable_hash

log = logging.getLogger(__name__)


@dataclass
class EncoderRecord:
    """What the later stages need of an encoder once its model is freed: its identity in the cache."""

    planned: PlannedEncoder
    encoder: Encoder
    plan: SlicePlan
    compute: EncoderCompute = field(default_factory=EncoderCompute)
    cache_key: str = ""
    """The encoder part of its cache entries' keys (the folder they live in)."""

    @property
    def id(self) -> str:
        return self.planned.ref.id

    @property
    def label(self) -> str:
        """The YAML row id, marked when the weights are random."""
        return f"{self.id} (random init)" if self.encoder.random_init else self.id

    @property
    def weights(self) -> str:
        """What a board says about the weights."""
        return weights_text(self.encoder.weights_digest, random_init=self.encoder.random_init,
                            reference=self.planned.spec.reference)

    @property
    def role(self) -> EncoderRole:
        """What the declared comparisons need to know of this encoder."""
        ref = self.planned.ref
        return EncoderRole(self.label, ref.name, reference=self.planned.spec.reference,
                           random_init=self.encoder.random_init, baseline=ref.baseline, twin_of=ref.twin_of)


@dataclass
class Extraction:
    """The extract stage's result: the encoders that took part, the scans that failed per task (for some
    encoder: they are left out of that task for every row), and the encoders left out entirely."""

    records: list[EncoderRecord]
    failed: dict[str, dict[str, str]] = field(default_factory=dict)
    """Task id -> scan id -> why it is left out."""
    failures: list[str] = field(default_factory=list)
    """One line per failed (encoder, task, scan)."""
    left_out: list[LeftOut] = field(default_factory=list)
    reports: list[tuple[str, str, ExtractionReport]] = field(default_factory=list)
    """(encoder id, task id, report) of every extraction that ran."""
    notes: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    """Task id -> scan id -> what reading the scan noted (for any encoder, each note once)."""
    left_out_of_task: dict[str, dict[str, str]] = field(default_factory=dict)
    """Task id -> encoder id -> why that encoder takes no part in the task (it could embed none of its
    scans, which others could: an HU encoder on pre-windowed PNG slices)."""


def extract_embeddings(plan: RunPlan, cache: EmbeddingCache, device: str, *, embed: bool = True,
                       progress: bool = True, force: bool = False,
                       select: Callable[[str, list[str]], list[str]] | None = None) -> Extraction:
    """Embed every task's labelled scans with every planned encoder (``embed=False``: only build).

    ``select(task_id, scan_ids)`` narrows the scans (``clear-bench extract --scan``); ``force``
    recomputes cached entries."""
    settings = plan.config.extraction
    prep = plan.config.preprocessing
    result = Extraction([], {task.ref.id: {} for task in plan.tasks}, left_out=list(plan.left_out))
    for planned in plan.encoders:
        ref = planned.ref
        try:
            encoder = build_encoder(planned.spec, ref.options)
        except (WeightsNotFoundError, UnusableWeightsError) as error:
            # One encoder without weights must not cost the user every other row.
            result.left_out.append(LeftOut(ref.id, str(error)))
            log.info("encoder %s: LEFT OUT, %s", ref.id, error)
            continue
        if encoder.random_init:
            log.info("encoder %s: RANDOM-INIT weights (%s), as the config asks", ref.id,
                     encoder.weights_digest)
        slice_plan = slice_plan_for(encoder, windows=prep.windows, window_mode=prep.window_mode,
                                    slice_step=prep.slice_step, slice_spacing_mm=prep.slice_spacing_mm,
                                    image_size=prep.image_size)
        description = encoder_description(encoder)
        reports = []
        for task in plan.tasks if embed else ():
            ids = sorted(task.data.labels)
            report = extract(encoder, task.data.source, select(task.ref.id, ids) if select else ids,
                             slice_plan, cache, batch_size=settings.batch_size,
                             num_workers=settings.num_workers, precision=settings.precision, device=device,
                             progress=progress, force=force)
            log.info("encoder %s x task %s: %s", ref.id, task.ref.id, report.summary())
            result.reports.append((ref.id, task.ref.id, report))
            reports.append(report)
            for scan_id, notes in report.notes.items():
                kept = result.notes.setdefault(task.ref.id, {}).setdefault(scan_id, [])
                kept += [note for note in notes if note not in kept]
            for failure in report.failed:
                result.failed[task.ref.id].setdefault(failure.scan_id, failure_reason(ref.id, failure))
                result.failures.append(f"{ref.id} / {task.ref.id}: {failure}")
        cache_key = stable_hash(description, 16)
        measured = throughput(cache.root / cache_key / THROUGHPUT_FILE, reports)
        if not measured:
            measured = probe_throughput(encoder, slice_plan, device, settings.batch_size, settings.precision,
                                        cache.root / cache_key / THROUGHPUT_FILE)
        # The model is not needed past extraction; keep only what identifies the cache entries.
        encoder.model = encoder.model.to("meta")
        compute = EncoderCompute(
            embed_dim=int(encoder.embed_dim), parameters=parameter_count(encoder.model),
            gflops=forward_gflops(encoder, slice_plan), per=encoder.input_kind,
            throughput=measured.get("throughput"), device=measured.get("device", ""),
            measured=measured.get("measured", "extraction"),
            windows=list(slice_plan.windows) if slice_plan.input == "windowed" else [])
        result.records.append(EncoderRecord(planned, encoder, slice_plan, compute, cache_key))
        gc.collect()
    leave_out_encoders_that_read_nothing(result)
    return result


def failure_reason(encoder_id: str, failure: ScanFailure) -> str:
    """Why a scan is left out of its task: the encoder, the file when the error does not name it, the
    error (the reason names no scan, so that boards can group scans by reason)."""
    where = f" ({failure.file})" if failure.file and failure.file not in failure.error else ""
    return f"{encoder_id}{where}: {failure.error}"


def leave_out_encoders_that_read_nothing(result: Extraction) -> None:
    """An encoder that embedded none of a task's scans, where another encoder embedded some, is left out of
    that task instead of taking every scan of it out of every row; its failures stay on record. (Under
    ``torchrun`` each rank sees only its share, so the rule is not applied there.)"""
    runs: dict[str, list[tuple[str, ExtractionReport]]] = {}
    for encoder_id, task_id, report in result.reports:
        runs.setdefault(task_id, []).append((encoder_id, report))
    for task_id, reports in runs.items():
        useless = {encoder_id: report for encoder_id, report in reports
                   if report.failed and not report.keys and report.world_size == 1}
        if not useless or not any(report.keys for _, report in reports):
            continue
        for encoder_id, report in useless.items():
            errors = Counter(f.error.replace(f"'{f.scan_id}'", "'<scan>'") for f in report.failed)
            error, count = errors.most_common(1)[0]
            why = (f"embedded none of the {len(report.failed)} scans of task {task_id} ({count} of them: "
                   f"{error})")
            result.left_out_of_task.setdefault(task_id, {})[encoder_id] = why
            log.warning("encoder %s: left out of task %s, it %s", encoder_id, task_id, why)
        failed: dict[str, str] = {}
        for encoder_id, report in reports:
            if encoder_id not in useless:
                for failure in report.failed:
                    failed.setdefault(failure.scan_id, failure_reason(encoder_id, failure))
        result.failed[task_id] = failed


THROUGHPUT_FILE = "throughput.json"


def throughput(path: Path, reports: Sequence[ExtractionReport]) -> dict[str, Any]:
    """The throughput of an encoder's extraction: measured now when ``reports`` embedded at least as many
    inputs as the measurement stored at ``path`` (which it then replaces), else the stored one; ``{}``
    when nothing was ever measured. ``throughput`` is inputs per second of forward passes."""
    stored: dict[str, Any] = {}
    if path.is_file():
        try:
            stored = json.loads(path.read_text())
        except (OSError, ValueError):
            stored = {}
    instances = sum(r.instances for r in reports)
    forward = sum(r.forward_seconds for r in reports)
    if instances and forward > 0 and instances >= int(stored.get("instances", 0)):
        devices = sorted({r.device for r in reports if r.instances})
        stored = {"instances": instances, "forward_seconds": forward,
                  "seconds": sum(r.seconds for r in reports if r.instances),
                  "throughput": instances / forward, "device": ", ".join(devices),
                  "precision": ", ".join(sorted({r.precision for r in reports if r.instances})),
                  "measured": "extraction"}
        atomic_write_text(path, json.dumps(stored, indent=1, sort_keys=True))
    return stored


def probe_throughput(encoder: Encoder, plan: SlicePlan, device: str, batch_size: int, precision: str,
                     path: Path) -> dict[str, Any]:
    """Time forward passes of blank inputs (one warm-up, then one batch of up to 32 slices, or one volume)
    at the extraction's device and precision, and store the figure at ``path`` marked ``probe``: for
    embeddings that were all served from a cache written before throughput was recorded. ``{}`` when the
    model cannot run (it is then left without a figure)."""
    import time

    import torch

    from clear_bench.extraction.device import encoder_precision, resolve_device

    dev = resolve_device(device)
    resolved = encoder_precision(encoder, precision, dev)
    size, channels = plan.image_size, plan.channels
    if encoder.input_kind == "volume":
        if not encoder.preprocessing.depth:
            return {}
        batch, shape = 1, (channels, encoder.preprocessing.depth, size, size)
    else:
        batch, shape = max(1, min(batch_size, 32)), (channels, size, size)
    try:
        model = encoder.model.eval().to(dev)
        autocast = torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=resolved == "bf16")
        with torch.inference_mode(), autocast:
            model(torch.zeros((1, *shape), device=dev)).float().cpu()
            tick = time.perf_counter()
            model(torch.zeros((batch, *shape), device=dev)).float().cpu()  # .cpu() waits for the device
            seconds = time.perf_counter() - tick
    except Exception as error:  # a figure is left out, not the encoder
        log.info("encoder %s: throughput not probed (%s)", encoder.label, error)
        return {}
    measured = {"instances": 0, "probe_instances": batch, "forward_seconds": seconds, "seconds": seconds,
                "throughput": batch / seconds if seconds > 0 else None, "device": str(dev),
                "precision": resolved, "measured": "probe"}
    atomic_write_text(path, json.dumps(measured, indent=1, sort_keys=True))
    log.info("encoder %s: no recorded extraction throughput; probed %.1f inputs/s on %s", encoder.label,
             measured["throughput"] or 0.0, dev)
    return measured


def parameter_count(model: Any) -> int:
    """Parameters of a model (works on the meta device)."""
    return int(sum(p.numel() for p in model.parameters()))


def forward_gflops(encoder: Encoder, plan: SlicePlan) -> float | None:
    """GFLOPs of one forward pass on one input of the encoder's shape (a slice ``[1, C, S, S]``, or a
    volume ``[1, C, D, S, S]`` when its depth is declared), counted by torch's FlopCounterMode on the
    meta device (matrix products and convolutions; nothing is computed). ``None`` when it cannot run."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    size, channels = plan.image_size, plan.channels
    if encoder.input_kind == "volume":
        if not encoder.preprocessing.depth:
            return None
        shape: tuple[int, ...] = (1, channels, encoder.preprocessing.depth, size, size)
    else:
        shape = (1, channels, size, size)
    model = encoder.model
    try:
        if any(p.device.type != "meta" for p in model.parameters()):
            return None
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(shape, device="meta"))
    except Exception as error:  # an op without a meta kernel: the figure is left out, not the encoder
        log.info("encoder %s: FLOPs not counted (%s)", encoder.label, error)
        return None
    return counter.get_total_flops() / 1e9


@dataclass
class CachedBags:
    """One encoder's bags of one task, read from the embedding cache (a bag source for evaluation)."""

    cache: EmbeddingCache
    record: EncoderRecord
    source: ScanSource
    fingerprint: str = ""
    """The fingerprint of the last bags loaded or peeked at (the embedding set a task's rows were
    evaluated on)."""

    @property
    def label(self) -> str:
        return self.record.label

    @property
    def weights(self) -> str:
        return self.record.weights

    @property
    def role(self) -> EncoderRole:
        return self.record.role

    def load(self, scan_ids: Sequence[str]) -> tuple[dict[str, Bag], str]:
        """The bags of ``scan_ids`` and a fingerprint of what they were computed from."""
        bags = load_bags(self.cache, self.record.encoder, self.record.plan, self.source, scan_ids)
        return bags, self.peek(scan_ids)[0]

    def peek(self, scan_ids: Sequence[str]) -> tuple[str, int]:
        """The fingerprint of the bags of ``scan_ids`` and their width, without reading them."""
        fingerprint = stable_hash({"encoder": encoder_description(self.record.encoder),
                                   "plan": self.record.plan.fingerprint(),
                                   "scans": [self.source.fingerprint(i) for i in scan_ids]})
        self.fingerprint = fingerprint
        return fingerprint, self.record.encoder.embed_dim


def weights_text(weights_digest: str, *, random_init: bool, reference: bool) -> str:
    """How a board describes an encoder's weights."""
    if random_init:
        return f"random init ({weights_digest}), not a trained encoder"
    if reference:
        return "non-learned"
    if weights_digest in ("", "none"):
        return "no weights (a fixed, non-learned feature map)"
    return f"weights sha256 {weights_digest[:16]}"
