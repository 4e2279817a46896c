"""DataLoader workers: scans -> normalised encoder inputs -> fixed-size batches that span scan boundaries.

A worker checks the cache first (a valid entry is reported, not recomputed), claims the entry (a scan that
another extraction on the same cache is embedding waits until that one has written it), reads the scan,
cuts it into instances (:func:`make_instances`) and hands them to a :class:`Batcher`; everything the main
process needs to know about a scan travels as events next to the batches. A scan that fails is an event,
not an error.
"""

from __future__ import annotations

import contextlib
import time
import traceback
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from clear_bench.cache import ClaimOwner, EmbeddingCache
from clear_bench.data.slices import SlicePlan, slice_instances
from clear_bench.errors import ConfigError, DataError, UserError
from clear_bench.specs import LocatedSource, Preprocessing, ScanSource

WAIT_POLL_S = 0.2
"""How often a worker looks again at scans that another extraction is embedding."""

_BUSY = object()


def scan_location(source: ScanSource, scan_id: str) -> str | None:
    """The file a :class:`~clear_bench.specs.LocatedSource` reads ``scan_id`` from, for failure reports;
    ``None`` when the source has no such capability or cannot say."""
    if not isinstance(source, LocatedSource):
        return None
    with contextlib.suppress(Exception):
        location = source.path(scan_id)
        return None if location is None else str(location)
    return None


def make_instances(scan: Any, plan: SlicePlan, preprocessing: Preprocessing,
                   input_kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A scan's encoder inputs, normalised: ``[n, C, S, S]`` slices, or for a volume encoder one
    ``[C, D, S, S]`` volume per window (slice index -1), resampled along z to ``preprocessing.depth`` when
    that is set. Returns (images, slice_index, window_id)."""
    instances = slice_instances(scan, plan)
    images, slice_index, window_id = instances.images, instances.slice_index, instances.window_id
    if input_kind == "volume":
        depth = preprocessing.depth
        volumes, windows = [], []
        for wid in np.unique(window_id):
            rows = np.flatnonzero(window_id == wid)
            rows = rows[np.argsort(slice_index[rows], kind="stable")]
            volume = np.ascontiguousarray(images[rows].transpose(1, 0, 2, 3))  # [C, D, S, S]
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
class Job:
    """One scan to embed: its position in this rank's share and its id."""

    pos: int
    scan_id: str


class InstanceStream(IterableDataset):
    """Yields ``{"events": [...], "images": Tensor | None, "pos": Tensor | None}`` items.

    Events: ``("start", pos, key, provenance, n, slice_index, window_id)`` before the first rows of a scan,
    ``("cached", pos, key, scan notes)``, ``("failed", pos, error, file)``, ``("corrupt", pos, reason)``.
    Rows of one scan come from one worker, in order; ``pos`` names the scan of every row of ``images``.
    ``precision`` is recorded in the provenance of the entries; it is not part of their key.

    With an ``owner``, a scan is claimed for it before it is read (the claim of a ``start`` event is the
    main process's to keep and release); scans claimed by another extraction are put aside and looked at
    again, after the batches in hand are sent on, until their entry is written or their claim goes stale.
    """

    def __init__(self, jobs: list[Job], source: ScanSource, cache: EmbeddingCache,
                 encoder_desc: dict[str, Any], plan: SlicePlan, preprocessing: Preprocessing,
                 input_kind: str, precision: str, batch_size: int, force: bool,
                 owner: ClaimOwner | None = None) -> None:
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
        self.owner = owner

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        jobs = self.jobs
        if info is not None:
            torch.set_num_threads(1)  # the main process's threads belong to the model
            jobs = jobs[info.id::info.num_workers]
        batcher = Batcher(self.batch_size)
        queue, waiting = deque(jobs), deque[Job]()
        while queue or waiting:
            if not queue:  # only scans that others are embedding are left: send what we have, then wait
                yield from batcher.finish()
                time.sleep(WAIT_POLL_S)
                queue, waiting = waiting, queue
            job = queue.popleft()
            events, prepared = self._prepare(job)
            batcher.events.extend(events)
            if prepared is _BUSY:
                waiting.append(job)
            elif prepared is not None:
                key, provenance, images, slice_index, window_id = prepared
                batcher.events.append(("start", job.pos, key, provenance, len(images), slice_index,
                                       window_id))
                yield from batcher.add(job.pos, images)
            elif not batcher.rows:
                yield batcher.take_events()
        yield from batcher.finish()

    def _prepare(self, job: Job) -> tuple[list[tuple[Any, ...]], Any]:
        events: list[tuple[Any, ...]] = []
        claimed = None
        try:
            fingerprint = self.source.fingerprint(job.scan_id)
            address = self.cache.describe(self.encoder_desc, self.plan, job.scan_id, fingerprint)
            key = self.cache.key_of(address)
            if not self.force:
                status = self.cache.inspect(key)
                if status.state == "valid":
                    self.cache.tidy(key)
                    return [("cached", job.pos, key, entry_notes(status.provenance))], None
                if status.state == "corrupt":
                    problem = self.cache.discard(key, status.reason)
                    events.append(("corrupt", job.pos, str(problem)))
            if self.owner is not None:
                if not self.cache.claim(key, self.owner):
                    return events, _BUSY
                claimed = key
                status = None if self.force else self.cache.inspect(key)
                if status is not None and status.state == "valid":  # finished meanwhile
                    self.cache.release(key, self.owner)
                    return [*events, ("cached", job.pos, key, entry_notes(status.provenance))], None
            scan = self.source.load(job.scan_id)
            images, slice_index, window_id = make_instances(scan, self.plan, self.preprocessing,
                                                            self.input_kind)
            if len(images) == 0:
                raise DataError(f"scan '{job.scan_id}': no instances to embed")
        except Exception as exc:
            if claimed is not None:
                with contextlib.suppress(Exception):
                    self.cache.release(claimed, self.owner)
            events.append(("failed", job.pos, describe_error(exc), scan_location(self.source, job.scan_id)))
            return events, None
        provenance = {**address, "precision": self.precision, "scan_notes": list(scan.notes)}
        return events, (key, provenance, images, slice_index, window_id)


class Batcher:
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


def entry_notes(provenance: dict[str, Any]) -> list[str]:
    """The scan notes a cache entry's provenance records (none in entries written before they were)."""
    notes = provenance.get("scan_notes") or []
    return [str(note) for note in notes] if isinstance(notes, list) else []


def identity(item: Any) -> Any:
    """The DataLoader's collate function: the stream yields finished batches."""
    return item


def describe_error(exc: BaseException) -> str:
    """A one-line failure text: a user error's own message, else its type, message and where it rose."""
    if isinstance(exc, UserError):
        return str(exc)
    frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    where = f" (at {Path(frame.filename).name}:{frame.lineno})" if frame else ""
    return f"{type(exc).__name__}: {exc}{where}"
