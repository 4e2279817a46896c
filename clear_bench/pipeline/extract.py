"""Stage 2, extract: every planned encoder embeds the labelled scans of every task into the cache.

Returns what it embedded and what failed, per task; later stages read that result, never a shared
object. With ``embed=False`` (``clear-bench evaluate``) encoders are only built, to know their cache
identity, and nothing is embedded.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from clear_bench.cache import EmbeddingCache, encoder_description
from clear_bench.components import build_encoder
from clear_bench.data.slices import SlicePlan
from clear_bench.errors import WeightsNotFoundError
from clear_bench.evaluation.bags import Bag
from clear_bench.evaluation.compare import EncoderRole
from clear_bench.extraction import ExtractionReport, extract, load_bags, slice_plan_for
from clear_bench.pipeline.plan import LeftOut, PlannedEncoder, RunPlan
from clear_bench.specs import Encoder, ScanSource, stable_hash

log = logging.getLogger(__name__)


@dataclass
class EncoderRecord:
    """What the later stages need of an encoder once its model is freed: its identity in the cache."""

    planned: PlannedEncoder
    encoder: Encoder
    plan: SlicePlan

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
        except WeightsNotFoundError as error:
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
        for task in plan.tasks if embed else ():
            ids = sorted(task.data.labels)
            report = extract(encoder, task.data.source, select(task.ref.id, ids) if select else ids,
                             slice_plan, cache, batch_size=settings.batch_size,
                             num_workers=settings.num_workers, precision=settings.precision, device=device,
                             progress=progress, force=force)
            log.info("encoder %s x task %s: %s", ref.id, task.ref.id, report.summary())
            result.reports.append((ref.id, task.ref.id, report))
            for failure in report.failed:
                result.failed[task.ref.id].setdefault(failure.scan_id, str(failure))
                result.failures.append(f"{ref.id} / {task.ref.id}: {failure}")
        # The model is not needed past extraction; keep only what identifies the cache entries.
        encoder.model = encoder.model.to("meta")
        result.records.append(EncoderRecord(planned, encoder, slice_plan))
        gc.collect()
    return result


@dataclass
class CachedBags:
    """One encoder's bags of one task, read from the embedding cache (a bag source for evaluation)."""

    cache: EmbeddingCache
    record: EncoderRecord
    source: ScanSource

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
