"""Stage 1, plan: which encoders (the declared references included, pretrained ones trained or found),
which tasks (loaded: scans and labels), which heads. Nothing is embedded yet."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

from clear_bench.atomic import atomic_write_text
from clear_bench.components import load_task
from clear_bench.config import BenchmarkConfig, ComponentRef
from clear_bench.errors import DataError, WeightsNotFoundError
from clear_bench.naming import safe_filename
from clear_bench.registry import Registry
from clear_bench.specs import RESUME_IF_PRESENT, AggregatorSpec, EncoderSpec, TaskData, TaskSpec, stable_hash

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PlannedEncoder:
    """A benchmark encoder entry with its spec; a pretrained entry carries its checkpoint option."""

    ref: ComponentRef
    spec: EncoderSpec


@dataclass(frozen=True)
class PlannedTask:
    ref: ComponentRef
    spec: TaskSpec
    data: TaskData


@dataclass(frozen=True)
class PlannedHead:
    ref: ComponentRef
    spec: AggregatorSpec


@dataclass(frozen=True)
class LeftOut:
    """An encoder that cannot take part (weights missing, not pretrained yet), and why."""

    encoder_id: str
    reason: str

    def __str__(self) -> str:
        return f"encoder {self.encoder_id} left out: {self.reason}"


@dataclass
class RunPlan:
    """What a run compares: encoders x tasks x heads, and the encoders it had to leave out."""

    config: BenchmarkConfig
    encoders: list[PlannedEncoder]
    tasks: list[PlannedTask]
    heads: list[PlannedHead]
    left_out: list[LeftOut] = field(default_factory=list)


def plan_run(config: BenchmarkConfig, registry: Registry, *, pretrain: bool = True,
             references: bool = True, progress: bool = True) -> RunPlan:
    """Load every task and resolve every encoder; ``pretrain=False`` (``evaluate``) trains nothing and
    leaves out a pretrained entry whose checkpoint does not exist yet; ``references=False`` (``extract``)
    takes the encoders exactly as listed; ``progress=False`` hides the pretrainers' progress bars."""
    tasks = []
    for ref in config.tasks:
        spec = registry.task(ref.name)
        data = load_task(registry, spec, ref.options, task_id=ref.id)
        noun = "classes" if spec.label_type == "multiclass" else "labels"
        log.info("task %s: %d labelled scans, %d %s", ref.id, len(data.labels), len(data.label_names), noun)
        tasks.append(PlannedTask(ref, spec, data))
    encoders, left_out = [], []
    for ref in with_references(config.encoders, registry) if references else config.encoders:
        try:
            if ref.pretrain is not None:
                ref = resolve_pretrained(ref, registry, config.checkpoint_dir, train=pretrain,
                                         progress=progress)
        except WeightsNotFoundError as error:
            left_out.append(LeftOut(ref.id, str(error)))
            log.info("encoder %s: LEFT OUT, %s", ref.id, error)
            continue
        encoders.append(PlannedEncoder(ref, registry.encoder(ref.name)))
    heads = [PlannedHead(ref, registry.aggregator(ref.name)) for ref in config.aggregators]
    return RunPlan(config, encoders, tasks, heads, left_out)


def with_references(encoders: tuple[ComponentRef, ...], registry: Registry) -> list[ComponentRef]:
    """Every board carries the non-learned references: the encoders declared ``reference`` are added
    when a benchmark leaves them out."""
    listed = {ref.name for ref in encoders}
    added = [ComponentRef(spec.name, spec.name) for spec in registry.references() if spec.name not in listed]
    for ref in added:
        log.info("encoder %s: added, every board carries the non-learned reference", ref.id)
    return [*encoders, *added]


def resolve_pretrained(ref: ComponentRef, registry: Registry, checkpoint_dir: Path, *,
                       train: bool = True, progress: bool = True) -> ComponentRef:
    """Train the encoder of ``ref`` with its pretrainer unless a checkpoint of the same recipe exists.

    The checkpoint is content-addressed by the pretrainer (its name and code version), its recipe file's
    bytes and its options; an interrupted pretraining resumes from its last training state.
    """
    assert ref.pretrain is not None
    spec = registry.pretrainer(ref.pretrain.name)
    identity = {"pretrainer": spec.name, "config": ref.pretrain.config.read_text(),
                "options": ref.pretrain.options}
    if spec.code_version:
        identity["code"] = spec.code_version
    key = stable_hash(identity)
    folder = checkpoint_dir / f"{safe_filename(ref.id)}-{key}"
    marker = folder / "encoder-checkpoint.json"
    if marker.is_file():
        checkpoint = Path(json.loads(marker.read_text())["checkpoint"])
        if checkpoint.is_file():
            log.info("encoder %s: pretrained checkpoint reused (%s)", ref.id, checkpoint)
            return replace(ref, options={**ref.options, "checkpoint": str(checkpoint)})
    if not train:
        raise WeightsNotFoundError(f"encoder '{ref.id}' has not been pretrained yet (no checkpoint under "
                                   f"{folder}); `clear-bench run` trains it")
    log.info("encoder %s: pretraining with %s (%s) into %s", ref.id, spec.name, ref.pretrain.config.name,
             folder)
    options = dict(ref.pretrain.options)
    if not progress and "progress" in spec.options:  # how it is shown, not what it trains: not in the key
        options["progress"] = False
    checkpoint = spec.run(ref.pretrain.config, folder, resume=RESUME_IF_PRESENT, options=options)
    if checkpoint is None:
        raise DataError(f"pretrainer '{spec.name}' returned no checkpoint for encoder '{ref.id}'")
    atomic_write_text(marker, json.dumps({"checkpoint": str(checkpoint), "key": key}))
    return replace(ref, options={**ref.options, "checkpoint": str(checkpoint)})
