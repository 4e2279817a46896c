"""The extraction run: the model in the main process, per-scan assembly of its outputs, a writer thread.

The main process only runs the model (inference mode, bf16 autocast and channels-last where they help) and
hands each scan's finished embeddings to a writer thread. Memory stays bounded by the batches in flight,
never by the number of scans. A scan that fails is recorded and the run goes on; under ``torchrun`` every
rank takes its own share of the scans.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from clear_bench.cache import ClaimKeeper, EmbeddingCache, encoder_description
from clear_bench.data.scan import ScanFailure
from clear_bench.data.slices import SlicePlan
from clear_bench.errors import ConfigError, DiskFullError, PluginError
from clear_bench.extraction.device import (
    Precision,
    encoder_precision,
    rank_and_world,
    resolve_device,
    use_channels_last,
)
from clear_bench.extraction.instances import InstanceStream, Job, describe_error, entry_notes, identity
from clear_bench.specs import Encoder, ScanSource

log = logging.getLogger(__name__)

_MAX_PENDING_WRITES = 4


@dataclass
class ExtractionReport:
    """What one extraction did: scans served from the cache, extracted now, failed; the entry key of every
    scan that has one; corrupt entries that were recomputed; scans whose embeddings are not finite.
    ``precision`` is the one the model ran at (entries served from the cache keep the one they record)."""

    encoder: str
    precision: str
    device: str
    rank: int = 0
    world_size: int = 1
    cached: list[str] = field(default_factory=list)
    extracted: list[str] = field(default_factory=list)
    failed: list[ScanFailure] = field(default_factory=list)
    keys: dict[str, str] = field(default_factory=dict)
    recomputed: list[str] = field(default_factory=list)
    nonfinite: list[str] = field(default_factory=list)
    notes: dict[str, list[str]] = field(default_factory=dict)
    """What reading each scan noted (uneven spacing, series chosen...), kept in its entry's provenance so
    that a scan served from the cache still has them."""
    instances: int = 0
    forward_calls: int = 0
    forward_seconds: float = 0.0
    """Time spent in the model; the rest of ``seconds`` is waiting for data and bookkeeping."""
    first_batch_seconds: float = 0.0
    """Start-up: from the call until the first batch reached the model (workers starting, first reads)."""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed

    def summary(self) -> str:
        shard = f" [rank {self.rank}/{self.world_size}]" if self.world_size > 1 else ""
        work = f"{self.instances} instances in {self.seconds:.1f} s"
        if self.instances and self.seconds > 0:
            work += f" ({self.instances / self.seconds:.1f}/s)"
        lines = [f"{self.encoder}{shard}: {len(self.extracted)} extracted, {len(self.cached)} cached, "
                 f"{len(self.failed)} failed; {work}, {self.precision} on {self.device}"]
        lines += [f"  failed: {failure}" for failure in self.failed]
        lines += [f"  recomputed a corrupt cache entry: {scan_id}" for scan_id in self.recomputed]
        lines += [f"  non-finite embeddings: {scan_id}" for scan_id in self.nonfinite]
        return "\n".join(lines)


@dataclass
class _Pending:
    scan_id: str
    key: str
    provenance: dict[str, Any]
    total: int
    slice_index: np.ndarray
    window_id: np.ndarray
    chunks: list[np.ndarray] = field(default_factory=list)
    received: int = 0


def extract(
    encoder: Encoder,
    source: ScanSource,
    scan_ids: Sequence[str],
    plan: SlicePlan,
    cache: EmbeddingCache,
    *,
    batch_size: int = 64,
    num_workers: int = 2,
    precision: Precision | str = "auto",
    device: str | torch.device = "cpu",
    progress: bool = True,
    force: bool = False,
) -> ExtractionReport:
    """Embed every scan of ``scan_ids`` that has no valid cache entry yet, writing one entry per scan.

    The model is put in eval mode on ``device``; ``precision`` is resolved by :func:`encoder_precision`
    and recorded in each new entry's provenance. It is not part of the cache key: an entry is found again
    whatever machine or precision reads it (an entry that exists is served, whichever precision made it).
    Under ``torchrun`` (``WORLD_SIZE > 1``) this rank takes ``scan_ids[rank::world]``. ``force`` recomputes
    entries that exist. Failures of single scans are recorded in the report; the run carries on.
    """
    if batch_size < 1 or num_workers < 0:
        raise ConfigError(f"batch_size must be >= 1 and num_workers >= 0 (got {batch_size}, {num_workers})")
    prep = encoder.preprocessing
    if plan.channels != prep.channels or plan.input != prep.input:
        raise ConfigError(f"slice plan gives {plan.channels}-channel '{plan.input}' images but encoder "
                          f"'{encoder.name}' expects {prep.channels}-channel '{prep.input}' input")
    dev = resolve_device(device)
    resolved = encoder_precision(encoder, str(precision), dev)
    rank, world = rank_and_world()
    ids = list(scan_ids)
    if len(set(ids)) != len(ids):
        raise ConfigError("scan ids passed to extraction are not unique")
    report = ExtractionReport(encoder=encoder.label, precision=resolved, device=str(dev), rank=rank,
                              world_size=world)
    started = time.perf_counter()
    mine = ids[rank::world]
    if not force:  # served entries need no model, no workers and no scan reading
        found = {scan_id: _valid_key(cache, encoder, source, plan, scan_id) for scan_id in mine}
        keys = {scan_id: key for scan_id, (key, _) in found.items()}
        report.notes.update({scan_id: notes for scan_id, (_, notes) in found.items() if notes})
        report.keys.update({scan_id: key for scan_id, key in keys.items() if key})
        report.cached.extend(scan_id for scan_id, key in keys.items() if key)
        mine = [scan_id for scan_id, key in keys.items() if not key]
    jobs = [Job(pos, scan_id) for pos, scan_id in enumerate(mine)]
    if not jobs:
        report.seconds = time.perf_counter() - started
        return report

    model = encoder.model.eval().to(dev)
    channels_last = encoder.input_kind == "slice" and use_channels_last(model, dev)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    claims = ClaimKeeper(cache)  # scans this run embeds are claimed, so a concurrent run waits for them
    stream = InstanceStream(jobs, source, cache, encoder_description(encoder), plan, prep,
                            encoder.input_kind, resolved, batch_size, force, claims.owner)
    workers = min(num_workers, len(jobs))
    loader = DataLoader(stream, batch_size=None, collate_fn=identity, num_workers=workers,
                        pin_memory=dev.type == "cuda", in_order=False,
                        prefetch_factor=2 if workers else None, persistent_workers=False)
    autocast = torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=resolved == "bf16")
    pending: dict[int, _Pending] = {}
    writes: deque[tuple[Future[Path], _Pending]] = deque()
    bar = _progress_bar(len(jobs), encoder.label, rank, world, enabled=progress)

    def finish_write(future: Future[Path], item: _Pending) -> None:
        try:
            future.result()
            report.extracted.append(item.scan_id)
            report.keys[item.scan_id] = item.key
        except DiskFullError:
            raise  # no scan would fare better: the run stops and says which file
        except Exception as exc:
            error = f"cannot write cache entry: {describe_error(exc)}"
            report.failed.append(ScanFailure(item.scan_id, error, str(cache.path(item.key))))

    def complete(item: _Pending, writer: ThreadPoolExecutor) -> None:
        embeddings = np.concatenate(item.chunks) if len(item.chunks) > 1 else item.chunks[0]
        item.chunks = []
        if not np.isfinite(embeddings).all():
            log.warning("scan '%s': encoder '%s' produced non-finite embeddings", item.scan_id, encoder.label)
            report.nonfinite.append(item.scan_id)
        future = writer.submit(claims.put, item.key, embeddings, item.slice_index, item.window_id,
                               item.provenance, overwrite=force)
        writes.append((future, item))
        while len(writes) > _MAX_PENDING_WRITES or (writes and writes[0][0].done()):
            finish_write(*writes.popleft())

    with claims, ThreadPoolExecutor(max_workers=1, thread_name_prefix="cache-writer") as writer:
        try:
            with torch.inference_mode(), autocast:
                for item in loader:
                    for event in item["events"]:
                        _handle_event(event, jobs, pending, report, bar, claims)
                    if item["images"] is None:
                        continue
                    if not report.forward_calls:
                        report.first_batch_seconds = time.perf_counter() - started
                    x = item["images"].to(dev, non_blocking=True)
                    if channels_last:
                        x = x.contiguous(memory_format=torch.channels_last)
                    tick = time.perf_counter()
                    out = model(x)
                    values = out.float().cpu().numpy()  # also waits for an asynchronous device
                    report.forward_seconds += time.perf_counter() - tick
                    report.forward_calls += 1
                    if out.ndim != 2 or out.shape != (x.shape[0], encoder.embed_dim):
                        raise PluginError(f"encoder '{encoder.name}' returned shape {tuple(out.shape)} for a "
                                          f"batch of {x.shape[0]}; it declares [batch, {encoder.embed_dim}]")
                    positions = item["pos"].numpy()
                    report.instances += len(positions)
                    starts = np.flatnonzero(np.r_[True, positions[1:] != positions[:-1]])
                    for begin, end in zip(starts, [*starts[1:], len(positions)], strict=True):
                        scan = pending[int(positions[begin])]
                        scan.chunks.append(values[begin:end].copy())
                        scan.received += end - begin
                        if scan.received == scan.total:
                            del pending[int(positions[begin])]
                            complete(scan, writer)
                            bar.update(1)
                    _show_rate(bar, report, started)
        finally:
            while writes:  # entries already computed are written even when the run stops early
                finish_write(*writes.popleft())
            bar.close()
    report.seconds = time.perf_counter() - started
    return report


_VERIFIED: dict[Path, tuple[tuple[int, int, int], list[str]]] = {}
"""Entries this process has verified, with (inode, size, mtime) then and their scan notes: a rewritten file
is checked again."""


def _valid_key(cache: EmbeddingCache, encoder: Encoder, source: ScanSource, plan: SlicePlan,
               scan_id: str) -> tuple[str | None, list[str]]:
    """The key of the valid cache entry of ``scan_id`` and its scan notes, or ``(None, [])`` (missing,
    corrupt, unreadable id: the worker that embeds it reports why)."""
    try:
        key = cache.key(encoder_description(encoder), plan, scan_id, source.fingerprint(scan_id))
        path = cache.path(key)
        stat = path.stat()
    except Exception:
        return None, []
    seen = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
    verified = _VERIFIED.get(path)
    if verified is not None and verified[0] == seen:
        return key, list(verified[1])
    status = cache.inspect(key)
    if status.state != "valid":
        return None, []
    cache.tidy(key)
    notes = entry_notes(status.provenance)
    _VERIFIED[path] = (seen, notes)
    return key, list(notes)


def _handle_event(event: tuple[Any, ...], jobs: list[Job], pending: dict[int, _Pending],
                  report: ExtractionReport, bar: Any, claims: ClaimKeeper) -> None:
    kind, pos = event[0], event[1]
    scan_id = jobs[pos].scan_id
    if kind == "start":
        _, _, key, provenance, total, slice_index, window_id = event
        claims.hold(key)
        if provenance.get("scan_notes"):
            report.notes[scan_id] = list(provenance["scan_notes"])
        pending[pos] = _Pending(scan_id, key, provenance, total, np.asarray(slice_index),
                                np.asarray(window_id))
    elif kind == "cached":
        report.cached.append(scan_id)
        report.keys[scan_id] = event[2]
        if event[3]:
            report.notes[scan_id] = list(event[3])
        bar.update(1)
    elif kind == "failed":
        failure = ScanFailure(scan_id, event[2], event[3])
        log.warning("extraction of scan %s failed: %s", scan_id, failure)
        report.failed.append(failure)
        bar.update(1)
    elif kind == "corrupt":
        report.recomputed.append(scan_id)


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(total: int, label: str, rank: int, world: int, *, enabled: bool) -> Any:
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    desc = f"extract {label}" + (f" [rank {rank}/{world}]" if world > 1 else "")
    return tqdm(total=total, desc=desc, unit="scan", dynamic_ncols=True, position=rank if world > 1 else None)


def _show_rate(bar: Any, report: ExtractionReport, started: float) -> None:
    elapsed = time.perf_counter() - started
    if elapsed > 0:
        bar.set_postfix_str(f"{report.instances / elapsed:.1f} slices/s", refresh=False)
