"""Embedding extraction: scans -> windowed instances -> a frozen encoder in batches -> the embedding cache.

DataLoader workers read scans, window and resize their slices, normalise them and cut the stream of
instances into fixed-size batches that span scan boundaries; the main process only runs the model (inference
mode, bf16 autocast and channels-last where they help) and hands each scan's finished embeddings to a writer
thread. Memory stays bounded by the batches in flight, never by the number of scans. A scan that fails to load
is recorded and the run goes on; under ``torchrun`` every rank takes its own share of the scans.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import traceback
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from clear_bench.cache import EmbeddingCache, encoder_description
from clear_bench.data.slices import SlicePlan, slice_instances
from clear_bench.errors import ConfigError, DataError, PluginError, UserError
from clear_bench.evaluation.bags import Bag
from clear_bench.specs import Encoder, EncoderSpec, Preprocessing, ScanSource, resolve_options

log = logging.getLogger(__name__)

Precision = Literal["auto", "fp32", "bf16"]
_MAX_PENDING_WRITES = 4


# --- settings ------------------------------------------------------------------------------------------


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU. Under ``torchrun`` a bare ``cuda`` means this rank's GPU."""
    text = str(device)
    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    if text == "cuda" and "LOCAL_RANK" in os.environ:
        text = f"cuda:{int(os.environ['LOCAL_RANK'])}"
    try:
        resolved = torch.device(text)
    except RuntimeError as exc:
        raise ConfigError(f"device '{device}': {exc}") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device '{device}': CUDA is not available on this machine")
    return resolved


def cpu_has_native_bf16() -> bool:
    """True when the CPU computes bfloat16 natively (AVX512-BF16 or AMX), where bf16 autocast pays off."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    for name in checks:
        check = getattr(torch.cpu, name, None)
        with contextlib.suppress(Exception):
            if check is not None and check():
                return True
    return False


def resolve_precision(precision: str, device: torch.device) -> Literal["fp32", "bf16"]:
    """``auto`` -> bf16 on GPUs that support it and on CPUs with native bf16, fp32 elsewhere."""
    if precision in ("fp32", "bf16"):
        return precision  # type: ignore[return-value]
    if precision != "auto":
        raise ConfigError(f"precision '{precision}': expected auto, fp32 or bf16")
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        return "bf16" if cpu_has_native_bf16() else "fp32"
    return "fp32"


def encoder_precision(encoder: Encoder, precision: str, device: torch.device) -> Literal["fp32", "bf16"]:
    """The precision ``encoder`` runs at: :func:`resolve_precision`, except that a model without floating
    point parameters (a fixed feature extractor) always runs in fp32, where autocast gains nothing."""
    resolved = resolve_precision(precision, device)
    if resolved == "bf16" and not any(p.is_floating_point() for p in encoder.model.parameters()):
        return "fp32"
    return resolved


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the world size from ``torchrun``'s environment (0, 1 when not under it)."""
    try:
        return int(os.environ.get("RANK", "0")), max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        raise ConfigError("RANK / WORLD_SIZE environment variables must be integers") from None


def _use_channels_last(model: torch.nn.Module, device: torch.device) -> bool:
    """Channels-last helps convolutions (cuDNN, oneDNN); for a ViT on CPU it only adds layout changes."""
    if device.type == "cuda":
        return True
    conv = sum(p.numel() for m in model.modules() if isinstance(m, torch.nn.Conv2d) for p in m.parameters())
    total = sum(p.numel() for p in model.parameters())
    return total > 0 and conv / total > 0.5


def build_encoder(spec: EncoderSpec, options: Mapping[str, Any] | None = None) -> Encoder:
    """Build a registered encoder; its options (bar weight paths) are recorded for the cache key."""
    values = resolve_options(spec.options, options)
    encoder = spec.build(values)
    if not encoder.options:
        encoder.options = {k: v for k, v in values.items()
                           if not (k in spec.options and spec.options[k].type is Path)}
    return encoder


def slice_plan_for(encoder: Encoder, *, windows: Sequence[str] = ("soft-tissue", "lung", "bone"),
                   window_mode: str = "per-window", slice_step: int = 1,
                   slice_spacing_mm: float | None = None, image_size: int | None = None) -> SlicePlan:
    """The slice plan that feeds ``encoder``: its size, channels and input kind, with the given windows."""
    prep = encoder.preprocessing
    return SlicePlan(windows=tuple(windows), window_mode=window_mode,  # type: ignore[arg-type]
                     slice_step=slice_step, slice_spacing_mm=slice_spacing_mm,
                     image_size=image_size or prep.image_size, channels=prep.channels, input=prep.input)


# --- report --------------------------------------------------------------------------------------------


@dataclass
class ScanFailure:
    """A scan that could not be extracted, with the error text and (when the source knows it) its file."""

    scan_id: str
    error: str
    file: str | None = None

    def __str__(self) -> str:
        where = f" ({self.file})" if self.file else ""
        return f"{self.scan_id}{where}: {self.error}"


@dataclass
class ExtractionReport:
    """What one extraction did: scans served from the cache, extracted now, failed; the entry key of every
    scan that has one; corrupt entries that were recomputed; scans whose embeddings are not finite."""

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


# --- workers: scans -> normalised instance batches -----------------------------------------------------


def scan_location(source: ScanSource, scan_id: str) -> str | None:
    """The file a source reads ``scan_id`` from, when it says (``path(scan_id)``), for failure reports."""
    locate = getattr(source, "path", None)
    if not callable(locate):
        return None
    with contextlib.suppress(Exception):
        location = locate(scan_id)
        return None if location is None else str(location)
    return None


def make_instances(scan: Any, plan: SlicePlan, preprocessing: Preprocessing,
                   input_kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A scan's encoder inputs, normalised: ``[n, C, S, S]`` slices, or for a volume encoder one
    ``[C, D, S, S]`` volume per window (slice index -1). Returns (images, slice_index, window_id)."""
    instances = slice_instances(scan, plan)
    images, slice_index, window_id = instances.images, instances.slice_index, instances.window_id
    if input_kind == "volume":
        volumes, windows = [], []
        for wid in np.unique(window_id):
            rows = np.flatnonzero(window_id == wid)
            rows = rows[np.argsort(slice_index[rows], kind="stable")]
            volume = np.ascontiguousarray(images[rows].transpose(1, 0, 2, 3))  # [C, D, S, S]
            depth = getattr(preprocessing, "depth", None)
            if depth and volume.shape[1] != depth:
                resized = torch.nn.functional.interpolate(
                    torch.from_numpy(volume)[None], size=(depth, *volume.shape[2:]), mode="trilinear",
                    align_corners=False)
                volume = resized[0].numpy()
            volumes.append(volume)
            windows.append(wid)
        images = np.stack(volumes)
        slice_index = np.full(len(windows), -1, dtype=np.int64)
        window_id = np.asarray(windows, dtype=np.int64)
    if plan.input == "windowed":
        channels = images.shape[1]
        mean = np.asarray(preprocessing.mean, dtype=np.float32)
        std = np.asarray(preprocessing.std, dtype=np.float32)
        if mean.shape != (channels,) or std.shape != (channels,):
            raise ConfigError(f"encoder preprocessing has {len(mean)} mean / {len(std)} std values for "
                              f"{channels} input channels")
        shape = (1, channels) + (1,) * (images.ndim - 2)
        normalised = np.multiply(images, (1.0 / std).reshape(shape), dtype=np.float32)  # one allocation
        normalised += (-mean / std).reshape(shape)
        images = normalised
    return np.ascontiguousarray(images, dtype=np.float32), slice_index, window_id


@dataclass
class _Job:
    pos: int
    scan_id: str


class _InstanceStream(IterableDataset):
    """Yields ``{"events": [...], "images": Tensor | None, "pos": Tensor | None}`` items.

    Events: ``("start", pos, key, provenance, n, slice_index, window_id)`` before the first rows of a scan,
    ``("cached", pos, key)``, ``("failed", pos, error, file)``, ``("corrupt", pos, reason)``. Rows of one
    scan come from one worker, in order; ``pos`` names the scan of every row of ``images``.
    """

    def __init__(self, jobs: list[_Job], source: ScanSource, cache: EmbeddingCache,
                 encoder_desc: dict[str, Any], plan: SlicePlan, preprocessing: Preprocessing,
                 input_kind: str, precision: str, batch_size: int, force: bool) -> None:
        self.jobs = jobs
        self.source = source
        self.cache = cache
        self.encoder_desc = encoder_desc
        self.plan = plan
        self.preprocessing = preprocessing
        self.input_kind = input_kind
        self.precision = precision
        self.batch_size = batch_size
        self.force = force

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        jobs = self.jobs
        if info is not None:
            torch.set_num_threads(1)  # the main process's threads belong to the model
            jobs = jobs[info.id::info.num_workers]
        batcher = _Batcher(self.batch_size)
        for job in jobs:
            events, prepared = self._prepare(job)
            batcher.events.extend(events)
            if prepared is not None:
                key, provenance, images, slice_index, window_id = prepared
                batcher.events.append(("start", job.pos, key, provenance, len(images), slice_index,
                                       window_id))
                yield from batcher.add(job.pos, images)
            elif not batcher.rows:
                yield batcher.take_events()
        yield from batcher.finish()

    def _prepare(self, job: _Job) -> tuple[list[tuple[Any, ...]], tuple[Any, ...] | None]:
        events: list[tuple[Any, ...]] = []
        try:
            fingerprint = self.source.fingerprint(job.scan_id)
            provenance = self.cache.describe(self.encoder_desc, self.plan, job.scan_id, fingerprint,
                                             precision=self.precision)
            key = self.cache.key_of(provenance)
            if not self.force:
                status = self.cache.inspect(key)
                if status.state == "valid":
                    return [("cached", job.pos, key)], None
                if status.state == "corrupt":
                    problem = self.cache.discard(key, status.reason)
                    events.append(("corrupt", job.pos, str(problem)))
            scan = self.source.load(job.scan_id)
            images, slice_index, window_id = make_instances(scan, self.plan, self.preprocessing,
                                                            self.input_kind)
            if len(images) == 0:
                raise DataError(f"scan '{job.scan_id}': no instances to embed")
        except Exception as exc:
            events.append(("failed", job.pos, _describe_error(exc), scan_location(self.source, job.scan_id)))
            return events, None
        return events, (key, provenance, images, slice_index, window_id)


class _Batcher:
    """Cuts a stream of per-scan instance arrays into batches of at most ``batch_size`` slice-equivalents
    (a volume of depth D counts D); batches span scans but never mix instance shapes."""

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size
        self.parts: deque[tuple[int, np.ndarray]] = deque()
        self.rows = 0
        self.events: list[tuple[Any, ...]] = []
        self.started = False

    def _limit(self, shape: tuple[int, ...]) -> int:
        depth = shape[1] if len(shape) == 4 else 1  # [C, D, S, S] volumes
        return max(1, self.batch_size // depth)

    def add(self, pos: int, images: np.ndarray) -> Iterator[dict[str, Any]]:
        if self.parts and self.parts[0][1].shape[1:] != images.shape[1:]:
            yield from self._emit(self.rows)
        self.parts.append((pos, images))
        self.rows += len(images)
        limit = self._limit(images.shape[1:])
        if not self.started:  # the first scan goes out at once, so the model starts early
            self.started = True
            limit = min(limit, self.rows)
        while self.rows >= limit:
            yield from self._emit(limit)
            limit = self._limit(images.shape[1:])

    def finish(self) -> Iterator[dict[str, Any]]:
        if self.rows:
            yield from self._emit(self.rows)
        if self.events:
            yield self.take_events()

    def take_events(self) -> dict[str, Any]:
        events, self.events = self.events, []
        return {"events": events, "images": None, "pos": None}

    def _emit(self, count: int) -> Iterator[dict[str, Any]]:
        chunks, positions = [], []
        need = count
        while need:
            pos, images = self.parts[0]
            take = min(need, len(images))
            chunks.append(images[:take])
            positions.append(np.full(take, pos, dtype=np.int64))
            if take == len(images):
                self.parts.popleft()
            else:
                self.parts[0] = (pos, images[take:])
            need -= take
        self.rows -= count
        batch = chunks[0] if len(chunks) == 1 else np.concatenate(chunks)
        item = self.take_events()
        item["images"] = torch.from_numpy(np.ascontiguousarray(batch))
        item["pos"] = torch.from_numpy(np.concatenate(positions))
        yield item


def _identity(item: Any) -> Any:
    return item


def _describe_error(exc: BaseException) -> str:
    if isinstance(exc, UserError):
        return str(exc)
    frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    where = f" (at {Path(frame.filename).name}:{frame.lineno})" if frame else ""
    return f"{type(exc).__name__}: {exc}{where}"


# --- main process: model, per-scan assembly, writes ----------------------------------------------------


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
    and enters the cache key (read the bags back with the same ``precision`` and ``device``). Under
    ``torchrun`` (``WORLD_SIZE > 1``) this rank takes ``scan_ids[rank::world]``. ``force`` recomputes
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
    jobs = [_Job(pos, scan_id) for pos, scan_id in enumerate(ids[rank::world])]
    report = ExtractionReport(encoder=encoder.label, precision=resolved, device=str(dev), rank=rank,
                              world_size=world)
    started = time.perf_counter()
    if not jobs:
        return report

    model = encoder.model.eval().to(dev)
    channels_last = encoder.input_kind == "slice" and _use_channels_last(model, dev)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    stream = _InstanceStream(jobs, source, cache, encoder_description(encoder), plan, prep,
                             encoder.input_kind, resolved, batch_size, force)
    workers = min(num_workers, len(jobs))
    loader = DataLoader(stream, batch_size=None, collate_fn=_identity, num_workers=workers,
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
        except Exception as exc:
            error = f"cannot write cache entry: {_describe_error(exc)}"
            report.failed.append(ScanFailure(item.scan_id, error, str(cache.path(item.key))))

    def complete(item: _Pending, writer: ThreadPoolExecutor) -> None:
        embeddings = np.concatenate(item.chunks) if len(item.chunks) > 1 else item.chunks[0]
        item.chunks = []
        if not np.isfinite(embeddings).all():
            log.warning("scan '%s': encoder '%s' produced non-finite embeddings", item.scan_id, encoder.label)
            report.nonfinite.append(item.scan_id)
        future = writer.submit(cache.put, item.key, embeddings, item.slice_index, item.window_id,
                               item.provenance, overwrite=force)
        writes.append((future, item))
        while len(writes) > _MAX_PENDING_WRITES or (writes and writes[0][0].done()):
            finish_write(*writes.popleft())

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="cache-writer") as writer:
        try:
            with torch.inference_mode(), autocast:
                for item in loader:
                    for event in item["events"]:
                        _handle_event(event, jobs, pending, report, bar)
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


def _handle_event(event: tuple[Any, ...], jobs: list[_Job], pending: dict[int, _Pending],
                  report: ExtractionReport, bar: Any) -> None:
    kind, pos = event[0], event[1]
    scan_id = jobs[pos].scan_id
    if kind == "start":
        _, _, key, provenance, total, slice_index, window_id = event
        pending[pos] = _Pending(scan_id, key, provenance, total, np.asarray(slice_index),
                                np.asarray(window_id))
    elif kind == "cached":
        report.cached.append(scan_id)
        report.keys[scan_id] = event[2]
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


# --- reading back --------------------------------------------------------------------------------------


def load_bags(
    cache: EmbeddingCache,
    encoder: Encoder,
    plan: SlicePlan,
    source: ScanSource,
    scan_ids: Sequence[str],
    *,
    precision: Precision | str = "auto",
    device: str | torch.device = "cpu",
    on_missing: Literal["raise", "skip"] = "raise",
) -> dict[str, Bag]:
    """The cached bags of ``scan_ids`` (float32), keyed by scan id, for the same settings as the extraction.

    A missing entry raises :class:`DataError` listing the scans (or is left out with ``on_missing="skip"``);
    non-finite embeddings raise :class:`DataError` naming the scan and the cache file.
    """
    resolved = encoder_precision(encoder, str(precision), resolve_device(device))
    desc = encoder_description(encoder)
    bags: dict[str, Bag] = {}
    missing: list[str] = []
    for scan_id in scan_ids:
        key = cache.key(desc, plan, scan_id, source.fingerprint(scan_id), precision=resolved)
        entry = cache.get(key)
        if entry is None:
            missing.append(scan_id)
            continue
        embeddings = np.asarray(entry.embeddings, dtype=np.float32)
        if not np.isfinite(embeddings).all():
            bad = int((~np.isfinite(embeddings)).any(axis=1).sum())
            raise DataError(f"scan '{scan_id}': {bad} of {len(embeddings)} embeddings of encoder "
                            f"'{encoder.label}' are NaN or infinite (cache file {entry.path})")
        bags[scan_id] = Bag(embeddings, entry.slice_index, entry.window_id)
    if missing and on_missing == "raise":
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise DataError(f"no cached embeddings of encoder '{encoder.label}' ({resolved}) for {len(missing)} "
                        f"scan(s): {shown}; run `clear-bench extract` first (cache: {cache.root})")
    return bags
