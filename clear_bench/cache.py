"""The embedding cache: one HDF5 file per (encoder, scan, preprocessing), content-addressed.

An entry's key is a hash of what it is the embeddings of: the encoder (name, weights digest, architecture
signature, build options, preprocessing), the slice plan, the storage dtype, the clear-bench version and the
scan's content fingerprint. The machine that extracted an entry does not enter its address: the autocast
precision is recorded in the entry's provenance instead, so a CPU finds what a bf16 GPU extracted. Files
live at ``root/<encoder key>/<aa>/<key>.h5``, named by the hash alone, so no scan id ever reaches a file name.

Writes are atomic (:mod:`clear_bench.atomic`) and serialised per entry by a short-lived lock file
(``<entry>.h5.lock``, an ``flock`` the kernel drops when its holder dies; the holder removes the file when
it is done). Every read validates the file (structure, sizes, checksum); a corrupt or partial entry is
reported, removed and treated as missing, so it is recomputed and never served.

Concurrent runs on one cache share the work through claims: the extraction about to embed a scan writes
``<entry>.h5.claim`` naming its owner (host, process, start time) and keeps its mtime fresh (a heartbeat)
until the entry is written, when it removes it. Another extraction that meets a claim waits for the entry
instead of embedding the scan again. A claim whose owner is no longer running (same host) or whose
heartbeat stopped more than :data:`CLAIM_TIMEOUT_S` ago (any host, for shared file systems) is stale: it
is reported and taken over.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import h5py
import numpy as np

from clear_bench import __version__
from clear_bench.atomic import atomic_path, atomic_write_text, temporaries
from clear_bench.errors import DataError, UserError
from clear_bench.naming import safe_filename
from clear_bench.specs import stable_hash

if TYPE_CHECKING:
    import torch

    from clear_bench.data.slices import SlicePlan
    from clear_bench.specs import Encoder

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
"""Bumped when the layout of an entry file changes (enters every key)."""

RECORDED_ONLY = frozenset({"precision", "scan_notes"})
"""Provenance fields an entry records that are not part of its key: how it was computed (and what reading
the scan noted), not what of."""

StorageDtype = Literal["float32", "float16"]
_KEY_RE = re.compile(r"^[0-9a-f]{16}-[0-9a-f]{32}$")
_LOCK_TIMEOUT_S = 600.0

CLAIM_TIMEOUT_S = 300.0
"""A claim whose heartbeat (its file's mtime) is older than this is stale, whoever holds it. Clocks of the
hosts sharing a cache must agree to well within it."""

HEARTBEAT_S = 20.0
"""How often a running extraction refreshes the claims it holds."""


@dataclass
class CachedEmbeddings:
    """One scan's instance embeddings as stored: ``embeddings [N, D]``, ``slice_index`` and ``window_id [N]``
    (window id -1 for stacked windows or HU input, slice index -1 for whole-volume instances)."""

    embeddings: np.ndarray
    slice_index: np.ndarray
    window_id: np.ndarray
    provenance: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    def __len__(self) -> int:
        return int(self.embeddings.shape[0])


@dataclass(frozen=True)
class EntryStatus:
    """What :meth:`EmbeddingCache.inspect` found: ``state`` is ``valid``, ``missing`` or ``corrupt``."""

    state: Literal["valid", "missing", "corrupt"]
    path: Path
    reason: str = ""
    provenance: dict[str, Any] = field(default_factory=dict)
    """A valid entry's provenance."""


@dataclass(frozen=True)
class CacheProblem:
    """A corrupt entry that was found, reported and removed (it will be recomputed)."""

    key: str
    path: Path
    reason: str

    def __str__(self) -> str:
        return f"corrupt cache entry {self.path}: {self.reason} (removed; it will be recomputed)"


def architecture_signature(model: torch.nn.Module) -> str:
    """A hash of the model's class and of every parameter and buffer name, shape and dtype.

    Two random-init encoders with the same digest but different architectures get different keys.
    """
    shapes = [(name, list(t.shape), str(t.dtype)) for name, t in model.state_dict().items()]
    return stable_hash({"class": f"{type(model).__module__}.{type(model).__qualname__}", "tensors": shapes})


def encoder_description(encoder: Encoder) -> dict[str, Any]:
    """Everything about an encoder that determines its embeddings (provenance and key material)."""
    return {
        "name": encoder.name,
        "weights_digest": encoder.weights_digest,
        "random_init": bool(encoder.random_init),
        "architecture": architecture_signature(encoder.model),
        "embed_dim": int(encoder.embed_dim),
        "input_kind": encoder.input_kind,
        "preprocessing": asdict(encoder.preprocessing),
        "options": dict(encoder.options),
    }


def _checksum(embeddings: np.ndarray, slice_index: np.ndarray, window_id: np.ndarray) -> str:
    digest = hashlib.sha256()
    for array in (embeddings, slice_index, window_id):
        digest.update(str(array.dtype).encode())
        digest.update(str(array.shape).encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def write_h5_atomic(path: Path, fill: Any) -> None:
    """Write an HDF5 file at ``path`` atomically (:func:`~clear_bench.atomic.atomic_path`): ``fill(h5file)``
    writes the content, and readers see all of it or none."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w", locking=False) as h5:
        fill(h5)


class EmbeddingCache:
    """Content-addressed HDF5 embedding entries under ``root``.

    ``storage_dtype`` is ``float32`` (default) or ``float16`` (half the disk, enters the key). Corrupt entries
    met while reading are logged, removed and listed in :attr:`problems`.
    """

    def __init__(self, root: str | Path, *, storage_dtype: StorageDtype = "float32",
                 claim_timeout_s: float = CLAIM_TIMEOUT_S) -> None:
        if storage_dtype not in ("float32", "float16"):
            raise UserError(f"cache storage dtype '{storage_dtype}': expected float32 or float16")
        self.root = Path(root).expanduser()
        self.storage_dtype: StorageDtype = storage_dtype
        self.claim_timeout_s = float(claim_timeout_s)
        self.problems: list[CacheProblem] = []

    def __repr__(self) -> str:
        return f"EmbeddingCache({str(self.root)!r}, storage_dtype={self.storage_dtype!r})"

    # --- keys -------------------------------------------------------------------------------------------

    def describe(self, encoder: Encoder | Mapping[str, Any], plan: SlicePlan, scan_id: str,
                 scan_fingerprint: str) -> dict[str, Any]:
        """The address of an entry: every input of its key, JSON-serialisable, no patient data. An entry's
        provenance is this plus the fields of :data:`RECORDED_ONLY` (the precision it was computed at).

        ``encoder`` is an :class:`Encoder` or its :func:`encoder_description` (computed once per run)."""
        return {
            "format": CACHE_FORMAT,
            "clear_bench_version": __version__,
            "encoder": dict(encoder) if isinstance(encoder, Mapping) else encoder_description(encoder),
            "slice_plan": {**asdict(plan), "fingerprint": plan.fingerprint()},
            "storage_dtype": self.storage_dtype,
            "scan_id": scan_id,
            "scan_fingerprint": scan_fingerprint,
        }

    def key(self, encoder: Encoder | Mapping[str, Any], plan: SlicePlan, scan_id: str,
            scan_fingerprint: str) -> str:
        """The entry key ``<encoder key>-<entry hash>``: a content hash of :meth:`describe`."""
        return self.key_of(self.describe(encoder, plan, scan_id, scan_fingerprint))

    @staticmethod
    def key_of(description: Mapping[str, Any]) -> str:
        """The key of an address from :meth:`describe`, or of an entry's provenance (its
        :data:`RECORDED_ONLY` fields are left out, so both give the same key)."""
        address = {k: v for k, v in description.items() if k not in RECORDED_ONLY}
        return f"{stable_hash(address['encoder'], 16)}-{stable_hash(address, 32)}"

    def path(self, key: str) -> Path:
        """Where entry ``key`` lives; the key must be one this class made (hex only, so no path tricks)."""
        if not _KEY_RE.match(key):
            raise ValueError(f"not an embedding cache key: {key!r}")
        encoder_key, entry = key.split("-")
        return self.root / encoder_key / entry[:2] / f"{entry}.h5"

    def lock(self, key: str) -> EntryLock:
        """The inter-process lock that serialises writers of entry ``key`` (removed on release)."""
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        return EntryLock(path.with_name(path.name + ".lock"), timeout=_LOCK_TIMEOUT_S)

    # --- claims -----------------------------------------------------------------------------------------

    def claim_path(self, key: str) -> Path:
        """The claim file of entry ``key``: present while some extraction is embedding that scan."""
        path = self.path(key)
        return path.with_name(path.name + ".claim")

    def claim(self, key: str, owner: ClaimOwner) -> bool:
        """Claim entry ``key`` for ``owner``: True when it is ``owner``'s now (a stale claim is reported and
        taken over), False while another live extraction holds it."""
        claim_path = self.claim_path(key)
        with self.lock(key):
            holder = _read_claim(claim_path)
            if holder is not None:
                if holder.token == owner.token:
                    return True
                reason = holder.stale_reason(claim_path, self.claim_timeout_s)
                if reason is None:
                    return False
                log.warning("stale claim on cache entry %s cleared: %s", claim_path, reason)
            elif claim_path.exists():
                log.warning("unreadable claim on cache entry %s cleared", claim_path)
            atomic_write_text(claim_path, json.dumps(asdict(owner), sort_keys=True))
        return True

    def claim_holder(self, key: str) -> ClaimOwner | None:
        """Who holds the claim on entry ``key`` (stale or not), ``None`` when nobody does."""
        return _read_claim(self.claim_path(key))

    def release(self, key: str, owner: ClaimOwner) -> None:
        """Remove ``owner``'s claim on entry ``key`` (a claim someone else took over is left alone)."""
        claim_path = self.claim_path(key)
        if not claim_path.exists():
            return
        with self.lock(key):
            holder = _read_claim(claim_path)
            if holder is not None and holder.token == owner.token:
                claim_path.unlink()

    def tidy(self, key: str) -> None:
        """Clear what a killed writer left beside the valid entry ``key``: its lock file (a lock whose
        holder died holds nothing, so taking it is safe; release removes the file) and a stale claim. Call
        without holding the entry's lock."""
        path = self.path(key)
        claim_path = self.claim_path(key)
        if not path.with_name(path.name + ".lock").exists() and not claim_path.exists():
            return
        with self.lock(key):
            holder = _read_claim(claim_path)
            reason = "unreadable" if holder is None else holder.stale_reason(claim_path, self.claim_timeout_s)
            if claim_path.exists() and reason is not None:
                log.info("stale claim beside the valid cache entry %s cleared: %s", path, reason)
                claim_path.unlink()

    # --- reading ----------------------------------------------------------------------------------------

    def inspect(self, key: str) -> EntryStatus:
        """Check entry ``key`` without keeping its data: valid, missing, or corrupt with the reason."""
        path = self.path(key)
        if not path.exists():
            return EntryStatus("missing", path)
        try:
            entry = self._read(key, path)
        except _Corrupt as exc:
            return EntryStatus("corrupt", path, str(exc))
        return EntryStatus("valid", path, provenance=entry.provenance)

    def contains(self, key: str) -> bool:
        """True when a valid entry exists; a corrupt one is reported and removed (returns False)."""
        status = self.inspect(key)
        if status.state == "corrupt":
            self.discard(key, status.reason)
        return status.state == "valid"

    def get(self, key: str) -> CachedEmbeddings | None:
        """The entry, validated; ``None`` when missing or corrupt (a corrupt one is reported and removed)."""
        path = self.path(key)
        if not path.exists():
            return None
        try:
            return self._read(key, path)
        except _Corrupt as exc:
            self.discard(key, str(exc))
            return None

    def discard(self, key: str, reason: str) -> CacheProblem:
        """Report a corrupt entry and remove it (under its lock, re-checking that it is still bad)."""
        path = self.path(key)
        problem = CacheProblem(key, path, reason)
        log.warning("%s", problem)
        self.problems.append(problem)
        try:
            with self.lock(key):
                if self.inspect(key).state == "corrupt":
                    path.unlink()
        except OSError as exc:  # TimeoutError included
            log.warning("could not remove corrupt cache entry %s: %s", path, exc)
        return problem

    def _read(self, key: str, path: Path) -> CachedEmbeddings:
        try:
            with h5py.File(path, "r", locking=False) as h5:
                attrs = dict(h5.attrs)
                missing = [name for name in ("embeddings", "slice_index", "window_id") if name not in h5]
                if missing:
                    raise _Corrupt(f"dataset(s) missing: {', '.join(missing)}")
                embeddings = h5["embeddings"][()]
                slice_index = h5["slice_index"][()]
                window_id = h5["window_id"][()]
        except _Corrupt:
            raise
        except Exception as exc:  # h5py raises OSError, KeyError, ValueError... on damaged files
            raise _Corrupt(f"unreadable HDF5 file ({type(exc).__name__}: {exc})") from None
        if attrs.get("key") != key:
            raise _Corrupt(f"key attribute {attrs.get('key')!r} does not match the file name")
        if embeddings.ndim != 2 or embeddings.shape[0] == 0:
            raise _Corrupt(f"embeddings have shape {embeddings.shape}, expected [N > 0, D]")
        n, dim = embeddings.shape
        if slice_index.shape != (n,) or window_id.shape != (n,):
            raise _Corrupt(f"slice_index {slice_index.shape} / window_id {window_id.shape} do not match "
                           f"{n} embeddings")
        if int(attrs.get("embed_dim", -1)) != dim:
            raise _Corrupt(f"embed_dim attribute {attrs.get('embed_dim')} != stored width {dim}")
        if attrs.get("sha256") != _checksum(embeddings, slice_index, window_id):
            raise _Corrupt("checksum mismatch (truncated or altered data)")
        try:
            provenance = json.loads(attrs["provenance"])
        except (KeyError, TypeError, ValueError):
            raise _Corrupt("provenance attribute missing or not JSON") from None
        return CachedEmbeddings(embeddings, slice_index.astype(np.int64), window_id.astype(np.int64),
                                provenance, path)

    # --- writing ----------------------------------------------------------------------------------------

    def put(self, key: str, embeddings: np.ndarray, slice_index: np.ndarray, window_id: np.ndarray,
            provenance: Mapping[str, Any], *, overwrite: bool = False) -> Path:
        """Store an entry atomically under its lock. Unless ``overwrite``, an entry that another process
        finished meanwhile is kept as is. Returns the entry's path."""
        embeddings = np.asarray(embeddings, dtype=np.float32)
        slice_index = np.asarray(slice_index, dtype=np.int64)
        window_id = np.asarray(window_id, dtype=np.int64)
        if embeddings.ndim != 2 or embeddings.shape[0] == 0:
            raise ValueError(f"embeddings must be [N > 0, D], got {embeddings.shape}")
        n, dim = embeddings.shape
        if slice_index.shape != (n,) or window_id.shape != (n,):
            raise ValueError("slice_index and window_id need one value per embedding row")
        stored = embeddings.astype(self.storage_dtype, copy=False)
        overflow = self.storage_dtype == "float16" and not np.isfinite(stored).all()
        if overflow and np.isfinite(embeddings).all():
            raise DataError(f"embeddings of scan '{provenance.get('scan_id')}' exceed the float16 range; "
                            "use float32 cache storage")
        path = self.path(key)
        provenance_json = json.dumps(dict(provenance), sort_keys=True, default=str)

        def fill(h5: h5py.File) -> None:
            h5.create_dataset("embeddings", data=stored)
            h5.create_dataset("slice_index", data=slice_index)
            h5.create_dataset("window_id", data=window_id)
            h5.attrs["key"] = key
            h5.attrs["embed_dim"] = dim
            h5.attrs["sha256"] = _checksum(stored, slice_index, window_id)
            h5.attrs["provenance"] = provenance_json
            h5.attrs["created_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

        with self.lock(key):
            self._remove_stale_temporaries(path)
            if not overwrite and path.exists():
                status = self.inspect(key)
                if status.state == "valid":
                    return path
                if status.state == "corrupt":
                    problem = CacheProblem(key, path, status.reason)
                    log.warning("%s", problem)
                    self.problems.append(problem)
            write_h5_atomic(path, fill)
        return path

    @staticmethod
    def _remove_stale_temporaries(path: Path) -> None:
        """Temporary files of this entry left by a killed writer (we hold the entry's lock)."""
        for stale in temporaries(path):
            with contextlib.suppress(OSError):
                stale.unlink()

    # --- listing ----------------------------------------------------------------------------------------

    def entry_keys(self, encoder_key: str | None = None) -> Iterator[str]:
        """Keys of the entry files present (not validated), optionally of one encoder key."""
        pattern = f"{encoder_key or '*'}/??/*.h5"
        for path in sorted(self.root.glob(pattern)):
            key = f"{path.parent.parent.name}-{path.stem}"
            if _KEY_RE.match(key):
                yield key


class _Corrupt(Exception):
    """An entry file that must not be served."""


class EntryLock:
    """An exclusive inter-process lock on ``path`` (``flock``), removed by its holder on release.

    A lock file left by a killed holder locks nothing (the kernel dropped its ``flock``); the next holder
    takes it and removes it. Whoever gets the lock checks that the file it locked is still the one at
    ``path`` (a releasing holder may have removed it meanwhile), else it tries again. Threads of one process
    are serialised too (on NFS an ``flock`` is a per-process POSIX lock).
    """

    def __init__(self, path: Path, *, timeout: float = _LOCK_TIMEOUT_S) -> None:
        self.path = path
        self.timeout = timeout
        self._fd: int | None = None

    def __enter__(self) -> EntryLock:
        deadline = time.monotonic() + self.timeout
        local = _thread_lock(str(self.path))
        if not local.acquire(timeout=self.timeout):
            raise TimeoutError(f"could not lock {self.path} within {self.timeout:.0f} s")
        try:
            self._fd = self._acquire(deadline)
        except BaseException:
            local.release()
            raise
        return self

    def _acquire(self, deadline: float) -> int:
        pause = 0.001
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                if time.monotonic() > deadline:
                    raise TimeoutError(f"could not lock {self.path} within {self.timeout:.0f} s") from None
                time.sleep(pause)
                pause = min(pause * 2, 0.05)
                continue
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                return fd
            os.close(fd)  # locked a file its holder removed on release: take the new one

    def __exit__(self, *exc: object) -> None:
        fd, self._fd = self._fd, None
        try:
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.unlink(self.path)  # still holding the flock, so nobody else holds this file
                os.close(fd)
        finally:
            _thread_lock(str(self.path)).release()


_THREAD_LOCKS: dict[str, threading.Lock] = {}
_THREAD_LOCKS_GUARD = threading.Lock()


def _thread_lock(name: str) -> threading.Lock:
    with _THREAD_LOCKS_GUARD:
        return _THREAD_LOCKS.setdefault(name, threading.Lock())


def _forget_thread_locks() -> None:
    """A forked child (a DataLoader worker) must not inherit locks held by its parent's threads."""
    global _THREAD_LOCKS_GUARD
    _THREAD_LOCKS_GUARD = threading.Lock()
    _THREAD_LOCKS.clear()


os.register_at_fork(after_in_child=_forget_thread_locks)


@dataclass(frozen=True)
class ClaimOwner:
    """Who holds a claim: the host, the process (pid, its start time and pid namespace, so that a reused
    pid is not mistaken for the owner) and a token of one extraction."""

    host: str
    pid: int
    started: str
    pid_namespace: str
    token: str

    @classmethod
    def current(cls) -> ClaimOwner:
        """This process, with a fresh token."""
        pid = os.getpid()
        return cls(socket.gethostname(), pid, _process_start(pid) or "", _pid_namespace(),
                   uuid.uuid4().hex)

    def stale_reason(self, claim_path: Path, timeout_s: float) -> str | None:
        """Why this claim (stored at ``claim_path``) is stale, or ``None`` while its owner may be alive."""
        here = self.host == socket.gethostname() and self.pid_namespace == _pid_namespace()
        if here and not _running(self.pid, self.started):
            return f"its owner, process {self.pid} on {self.host}, is no longer running"
        try:
            age = time.time() - claim_path.stat().st_mtime
        except FileNotFoundError:
            return "it was removed"
        if age > timeout_s:
            return (f"its owner, process {self.pid} on {self.host}, sent no heartbeat for {age:.0f} s "
                    f"(timeout {timeout_s:.0f} s)")
        return None

    def __str__(self) -> str:
        return f"process {self.pid} on {self.host}"


def _read_claim(claim_path: Path) -> ClaimOwner | None:
    try:
        data = json.loads(claim_path.read_text())
        return ClaimOwner(str(data["host"]), int(data["pid"]), str(data["started"]),
                          str(data["pid_namespace"]), str(data["token"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def _process_start(pid: int) -> str | None:
    """The start time of process ``pid`` (clock ticks since boot), ``None`` if it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()
    if not fields or fields[0] in ("Z", "X"):
        return None
    return fields[19] if len(fields) > 19 else ""


def _running(pid: int, started: str) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if not Path("/proc").is_dir():
        return True
    now = _process_start(pid)
    return now is not None and (not started or not now or now == started)


class ClaimKeeper:
    """The claims one extraction holds: refreshed every :data:`HEARTBEAT_S` while it runs, each released
    once its entry is written (:meth:`put`), and all released when the extraction ends.

    Claims are taken where scans are read (:meth:`EmbeddingCache.claim` with :attr:`owner`, in DataLoader
    workers too) and handed to the keeper with :meth:`hold`.
    """

    def __init__(self, cache: EmbeddingCache, *, heartbeat_s: float = HEARTBEAT_S) -> None:
        self.cache = cache
        self.owner = ClaimOwner.current()
        self.heartbeat_s = heartbeat_s
        self._held: set[str] = set()
        self._guard = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> ClaimKeeper:
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name="cache-claims", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._guard:
            held, self._held = self._held, set()
        for key in held:
            self._release(key)

    def hold(self, key: str) -> None:
        """Keep the claim on ``key`` (taken by :attr:`owner`) alive until it is released."""
        with self._guard:
            self._held.add(key)

    def release(self, key: str) -> None:
        """Release the claim on ``key``."""
        with self._guard:
            self._held.discard(key)
        self._release(key)

    def put(self, key: str, *args: Any, **kwargs: Any) -> Path:
        """:meth:`EmbeddingCache.put`, then release the claim on ``key`` (whether the write worked or not)."""
        try:
            return self.cache.put(key, *args, **kwargs)
        finally:
            self.release(key)

    def _release(self, key: str) -> None:
        try:
            self.cache.release(key, self.owner)
        except OSError as exc:
            log.warning("could not release the claim on cache entry %s: %s", self.cache.claim_path(key), exc)

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            with self._guard:
                held = list(self._held)
            for key in held:
                with contextlib.suppress(OSError):
                    os.utime(self.cache.claim_path(key))


def export_clear(entries: Mapping[str, CachedEmbeddings], out_dir: str | Path, *,
                 index_name: str = "index.csv", reference: bool = False) -> dict[str, Path]:
    """Write entries in the public CLEAR layout: ``out_dir/{scan_id}.h5`` with dataset ``feats [N, D]``
    float32 (plus ``slice_index`` and ``window_id``). Ids that are not plain file names are sanitised;
    ``index_name`` (a CSV) maps every scan id to its file; ``reference`` marks a non-learned reference
    encoder's files. Returns ``{scan_id: path}``."""
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for scan_id, entry in entries.items():
        path = out / f"{safe_filename(scan_id)}.h5"
        keep = ("clear_bench_version", "precision", "scan_fingerprint")
        provenance = {k: v for k, v in entry.provenance.items() if k in keep}
        encoder = entry.provenance.get("encoder", {})

        def fill(h5: h5py.File, entry: CachedEmbeddings = entry, scan_id: str = scan_id,
                 provenance: dict[str, Any] = provenance, encoder: dict[str, Any] = encoder) -> None:
            h5.create_dataset("feats", data=np.asarray(entry.embeddings, dtype=np.float32))
            h5.create_dataset("slice_index", data=entry.slice_index)
            h5.create_dataset("window_id", data=entry.window_id)
            h5.attrs["scan_id"] = scan_id
            h5.attrs["encoder"] = str(encoder.get("name", ""))
            h5.attrs["weights_digest"] = str(encoder.get("weights_digest", ""))
            h5.attrs["random_init"] = bool(encoder.get("random_init", False))
            h5.attrs["reference"] = reference
            h5.attrs["provenance"] = json.dumps(provenance, sort_keys=True)

        write_h5_atomic(path, fill)
        written[scan_id] = path
    index = out / index_name
    rows = ["scan_id,file"] + [f"{_csv_field(sid)},{p.name}" for sid, p in sorted(written.items())]
    atomic_write_text(index, "\n".join(rows) + "\n")
    return written


def _csv_field(text: str) -> str:
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\n') else text
