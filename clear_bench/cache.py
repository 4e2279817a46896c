"""The embedding cache: one HDF5 file per (encoder, scan, preprocessing), content-addressed.

An entry's key is a hash of what it is the embeddings of: the encoder (name, weights digest, architecture
signature, build options, preprocessing), the slice plan, the storage dtype, the clear-bench version and the
scan's content fingerprint. The machine that extracted an entry does not enter its address: the autocast
precision is recorded in the entry's provenance instead, so a CPU finds what a bf16 GPU extracted. Files
live at ``root/<encoder key>/<aa>/<key>.h5``, named by the hash alone, so no scan id ever reaches a file name.

Writes are atomic (:mod:`clear_bench.atomic`) and serialised per entry by a file lock. Every read validates
the file (structure, sizes, checksum); a corrupt or partial entry is reported, removed and treated as
missing, so it is recomputed and never served.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import h5py
import numpy as np
from filelock import FileLock, Timeout

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

RECORDED_ONLY = frozenset({"precision"})
"""Provenance fields an entry records that are not part of its key: how it was computed, not what of."""

StorageDtype = Literal["float32", "float16"]
_KEY_RE = re.compile(r"^[0-9a-f]{16}-[0-9a-f]{32}$")
_LOCK_TIMEOUT_S = 600.0


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

    def __init__(self, root: str | Path, *, storage_dtype: StorageDtype = "float32") -> None:
        if storage_dtype not in ("float32", "float16"):
            raise UserError(f"cache storage dtype '{storage_dtype}': expected float32 or float16")
        self.root = Path(root).expanduser()
        self.storage_dtype: StorageDtype = storage_dtype
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

    def lock(self, key: str) -> FileLock:
        """The inter-process lock that serialises writers of entry ``key``."""
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        return FileLock(str(path) + ".lock", timeout=_LOCK_TIMEOUT_S)

    # --- reading ----------------------------------------------------------------------------------------

    def inspect(self, key: str) -> EntryStatus:
        """Check entry ``key`` without keeping its data: valid, missing, or corrupt with the reason."""
        path = self.path(key)
        if not path.exists():
            return EntryStatus("missing", path)
        try:
            self._read(key, path)
        except _Corrupt as exc:
            return EntryStatus("corrupt", path, str(exc))
        return EntryStatus("valid", path)

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
        except (OSError, Timeout) as exc:
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
