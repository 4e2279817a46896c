"""The slice store: windowed CT slices at their native resolution, in RAM or memory-mapped from a file.

Every item is one slice in one window (or the stacked windows of a slice), uint8 ``[c, h, w]``, kept at
the scan's resolution (centre-padded to square, downsampled only where its side exceeds ``native_max``)
or, when asked for, resized to one fixed side. Items of any size share one layout: a flat pixel buffer,
one :data:`ITEM_DTYPE` record per item (offset, shape, scan, slice, window, lesion boxes) and the boxes
``[m, 4]`` (x0, y0, x1, y1) in pixels of the stored slice.

* ``memory`` (:func:`build_slice_table`): the buffer lives in the process's RAM; each process holds its own.
* ``disk`` (:func:`open_slice_store`): the buffer and the records are files in a folder named by the data's
  fingerprint (source, scan content fingerprints, slice plan, size policy), built once and opened read-only
  by every rank and loader worker: the records memory-mapped, each item's pixels read on demand (``pread``)
  into a buffer of its own. The file's pages are shared through the node's page cache, and a process's
  memory does not grow with the number of slices, nor with how many it has read (pages of a mapping that
  a process touched would count in its RSS, whole large folios at a time on recent kernels, and may be
  held against a job's memory limit). A later run on the same data reuses the folder.

Building is serialised by a lock file beside the folder; the store is written into a temporary folder that
is renamed into place when complete, with its ``manifest.json`` (the ready marker), so a reader never sees
a partial store and a killed builder leaves only a temporary folder that the next builder removes. Ranks
that do not build (``builder=False``: every local rank but 0) wait for the folder to appear.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

from clear_bench.data.scan import Scan
from clear_bench.data.slices import SlicePlan, select_slices, slice_instances
from clear_bench.errors import DataError
from clear_bench.specs import ScanSource, stable_hash

if TYPE_CHECKING:
    from clear_bench_lecl.pretrain.config import DataConfig

STORE_FORMAT = 1
"""Bumped when the files of a disk store or the pixels it holds change (enters every store key)."""

ITEM_DTYPE = np.dtype([
    ("offset", "<i8"), ("channels", "<i4"), ("height", "<i4"), ("width", "<i4"),
    ("scan", "<i4"), ("slice", "<i4"), ("window", "<i4"), ("box_start", "<i8"), ("box_count", "<i4"),
])
"""One record per item: where its pixels start in the buffer, their shape, where it comes from, its boxes."""

WAIT_TIMEOUT_S = 48 * 3600.0
"""How long a rank waits for another process to build a store (building DeepLesion takes hours)."""

_CHUNK_SLICES = 16  # slices windowed at once: bounds the float32 transients of a scan
_PIXELS, _ITEMS, _BOXES, _MANIFEST = "pixels.u8", "items.npy", "boxes.npy", "manifest.json"


@dataclass
class SliceTable:
    """Stored slices: ``pixels`` (flat uint8, in RAM, or memory-mapped for bulk reads of a disk store), one
    ``items`` record per item (:data:`ITEM_DTYPE`), ``box_xyxy [m, 4]`` float32 in pixels of the stored
    slice. ``location`` is the folder of a disk store (``None`` in RAM)."""

    pixels: np.ndarray
    items: np.ndarray
    box_xyxy: np.ndarray
    scan_ids: list[str]
    windows: tuple[str, ...] = ()
    failures: list[str] = field(default_factory=list)
    location: Path | None = None
    _file: tuple[int, int] | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def from_images(cls, images: Sequence[np.ndarray], boxes: Sequence[np.ndarray],
                    scan_ids: Sequence[str] = ("scan",), scan_of: Sequence[int] | None = None,
                    slice_of: Sequence[int] | None = None, window_of: Sequence[int] | None = None,
                    windows: Sequence[str] = ()) -> SliceTable:
        """An in-RAM table of uint8 ``[c, h, w]`` images (any sizes) and their boxes ``[k, 4]``."""
        n = len(images)
        items = np.zeros(n, dtype=ITEM_DTYPE)
        offset = box_start = 0
        for i, (image, box) in enumerate(zip(images, boxes, strict=True)):
            c, h, w = np.shape(image)
            k = len(box)
            items[i] = (offset, c, h, w, 0, i, 0, box_start, k)
            offset += c * h * w
            box_start += k
        for name, values in (("scan", scan_of), ("slice", slice_of), ("window", window_of)):
            if values is not None:
                items[name] = values
        pixels = (np.concatenate([np.asarray(im, dtype=np.uint8).reshape(-1) for im in images])
                  if n else np.zeros(0, dtype=np.uint8))
        flat = [np.asarray(b, dtype=np.float32).reshape(-1, 4) for b in boxes]
        box_xyxy = np.concatenate(flat) if flat else np.zeros((0, 4), dtype=np.float32)
        return cls(pixels, items, box_xyxy, list(scan_ids), tuple(windows))

    def __len__(self) -> int:
        return int(self.items.shape[0])

    @property
    def kind(self) -> str:
        return "memory" if self.location is None else "disk"

    def image(self, index: int) -> np.ndarray:
        """Item ``index`` as uint8 ``[c, h, w]``: a view of the RAM buffer, or read from a disk store."""
        item = self.items[index]
        c, h, w = int(item["channels"]), int(item["height"]), int(item["width"])
        start, size = int(item["offset"]), c * h * w
        if self.location is None:
            return self.pixels[start:start + size].reshape(c, h, w)
        return np.frombuffer(self._read(start, size), dtype=np.uint8).reshape(c, h, w)

    def _read(self, start: int, size: int) -> bytes:
        pid = os.getpid()
        if self._file is None or self._file[0] != pid:  # one descriptor per process (forked workers too)
            self._file = (pid, os.open(self.location / _PIXELS, os.O_RDONLY))
        fd = self._file[1]
        data = os.pread(fd, size, start)
        while len(data) < size:
            more = os.pread(fd, size - len(data), start + len(data))
            if not more:
                raise DataError(f"{self.location / _PIXELS}: ends at byte {start + len(data)}, "
                                f"item needs {start + size}; delete {self.location} to rebuild it")
            data += more
        return data

    @property
    def images(self) -> np.ndarray:
        """All items as one ``[n, c, h, w]`` array, when they share one shape (a fixed-size table)."""
        shapes = {(int(c), int(h), int(w)) for c, h, w in
                  zip(self.items["channels"], self.items["height"], self.items["width"], strict=True)}
        if len(shapes) != 1:
            raise ValueError(f"stored slices have {len(shapes)} different shapes; read each with image(i)")
        ((c, h, w),) = shapes
        return self.pixels[:len(self) * c * h * w].reshape(len(self), c, h, w)

    @property
    def boxes(self) -> _Boxes:
        """``boxes[i]``: the lesion boxes of item ``i``, ``[k, 4]`` in pixels of its stored slice."""
        return _Boxes(self)

    @property
    def is_lesion(self) -> np.ndarray:
        return np.asarray(self.items["box_count"]) > 0

    @property
    def scan_of(self) -> np.ndarray:
        return np.asarray(self.items["scan"], dtype=np.int64)

    @property
    def slice_of(self) -> np.ndarray:
        return np.asarray(self.items["slice"], dtype=np.int64)

    @property
    def window_of(self) -> np.ndarray:
        return np.asarray(self.items["window"], dtype=np.int64)

    @property
    def nbytes(self) -> int:
        return int(self.pixels.nbytes)

    def __getstate__(self) -> dict[str, Any]:
        # A disk store travels to spawned loader workers as its folder and is mapped again there.
        state = dict(self.__dict__, _file=None)
        if self.location is not None:
            state.update(pixels=None, items=None, box_xyxy=None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self.location is not None and self.pixels is None:
            self.pixels, self.items, self.box_xyxy = _map_arrays(self.location, _read_manifest(self.location))


class _Boxes(Sequence[np.ndarray]):
    def __init__(self, table: SliceTable) -> None:
        self.table = table

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, index: int) -> np.ndarray:  # type: ignore[override]
        item = self.table.items[index]
        start = int(item["box_start"])
        return np.asarray(self.table.box_xyxy[start:start + int(item["box_count"])], dtype=np.float32)


# --- building --------------------------------------------------------------------------------------


class _MemoryPixels:
    """A buffer grown in place (``realloc``: remapped, not copied, at these sizes), so building the table
    takes about the table's memory, not the scans' pieces and the table together."""

    def __init__(self) -> None:
        self.buffer = np.empty(0, dtype=np.uint8)
        self.size = 0

    def write(self, data: np.ndarray) -> None:
        flat = data.reshape(-1)
        end = self.size + flat.size
        if end > self.buffer.size:
            self.buffer.resize(max(end, 2 * self.buffer.size, 1 << 20), refcheck=False)
        self.buffer[self.size:end] = flat
        self.size = end

    def result(self) -> np.ndarray:
        self.buffer.resize(self.size, refcheck=False)
        return self.buffer


class _FilePixels:
    def __init__(self, handle: BinaryIO) -> None:
        self.handle = handle

    def write(self, data: np.ndarray) -> None:
        self.handle.write(np.ascontiguousarray(data).tobytes())


@dataclass
class _Collected:
    items: np.ndarray
    box_xyxy: np.ndarray
    scan_ids: list[str]
    failures: list[str]
    pixel_bytes: int


def _collect(source: ScanSource, scan_ids: Sequence[str], plan: SlicePlan, keep_lesion_slices: bool,
             native_max: int | None, sink: _MemoryPixels | _FilePixels, progress: bool) -> _Collected:
    """Window the chosen slices of every scan, write their pixels to ``sink`` and return the records."""
    records: list[np.ndarray] = []
    boxes: list[np.ndarray] = []
    kept_ids: list[str] = []
    failures: list[str] = []
    offset = box_start = 0
    iterator: Sequence[str] | Iterator[str] = scan_ids
    if progress:
        from tqdm import tqdm

        iterator = tqdm(scan_ids, desc="slices", unit="scan", leave=False)
    for scan_id in iterator:
        try:
            scan = source.load(scan_id)
            chosen = _chosen_slices(scan, plan, keep_lesion_slices)
            side = max(scan.volume.shape[1:]) if scan.volume.ndim == 3 else 0
            size = plan.image_size if native_max is None else max(1, min(side, native_max))
            step_plan = replace(plan, slice_step=1, slice_spacing_mm=None, image_size=size)
            parts = [_windowed(scan, chosen[i:i + _CHUNK_SLICES], step_plan)
                     for i in range(0, len(chosen), _CHUNK_SLICES)]
        except DataError as exc:
            failures.append(f"{scan_id}: {exc}")
            continue
        scan_boxes = _boxes_by_slice(scan, size)
        scan_index = len(kept_ids)
        kept_ids.append(scan_id)
        for images, slice_index, window_id in parts:
            sink.write(images)
            n, c, h, w = images.shape
            counts = np.array([len(scan_boxes.get(int(s), ())) for s in slice_index], dtype=np.int64)
            part = np.zeros(n, dtype=ITEM_DTYPE)
            part["offset"] = offset + np.arange(n, dtype=np.int64) * (c * h * w)
            part["channels"], part["height"], part["width"] = c, h, w
            part["scan"], part["slice"], part["window"] = scan_index, slice_index, window_id
            part["box_start"] = box_start + np.cumsum(counts) - counts
            part["box_count"] = counts
            records.append(part)
            boxes.extend(scan_boxes[int(s)] for s, k in zip(slice_index, counts, strict=True) if k)
            offset += n * c * h * w
            box_start += int(counts.sum())
    if not records:
        detail = f": {failures[0]}" if failures else ""
        raise DataError(f"no slices to pretrain on ({len(scan_ids)} scan(s) selected){detail}")
    items = np.concatenate(records)
    box_xyxy = np.concatenate(boxes) if boxes else np.zeros((0, 4), dtype=np.float32)
    return _Collected(items, box_xyxy.astype(np.float32), kept_ids, failures, offset)


def _windowed(scan: Scan, chosen: np.ndarray, plan: SlicePlan) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """uint8 instances of slices ``chosen`` (windowed, padded, sized by ``plan``); their slices, windows."""
    sub = Scan(scan.scan_id, scan.volume[chosen], scan.spacing, scan.direction, [], scan.prewindowed)
    instances = slice_instances(sub, plan)
    images = np.rint(instances.images * 255.0).astype(np.uint8)
    return images, chosen[instances.slice_index], instances.window_id


def build_slice_table(
    source: ScanSource,
    scan_ids: Sequence[str],
    plan: SlicePlan,
    keep_lesion_slices: bool = True,
    progress: bool = False,
    *,
    native_max: int | None = None,
) -> SliceTable:
    """An in-RAM table of the slices of ``scan_ids``: each at ``plan.image_size`` when ``native_max`` is
    ``None``, else at its scan's resolution (downsampled to ``native_max`` where larger). A per-window plan
    should have ``channels == 1`` (grey images are repeated to the encoder's channels later).

    Every ``plan.slice_step``-th slice is kept, and with ``keep_lesion_slices`` every slice carrying a
    lesion box too. A scan that cannot be read is recorded in ``failures`` and skipped.
    """
    sink = _MemoryPixels()
    got = _collect(source, scan_ids, plan, keep_lesion_slices, native_max, sink, progress)
    return SliceTable(sink.result(), got.items, got.box_xyxy, got.scan_ids, tuple(plan.windows), got.failures)


def _chosen_slices(scan: Scan, plan: SlicePlan, keep_lesion_slices: bool) -> np.ndarray:
    chosen = set(select_slices(scan, plan).tolist())
    if keep_lesion_slices:
        chosen |= {s for s in scan.lesion_slices() if 0 <= s < scan.num_slices}
    return np.array(sorted(chosen), dtype=np.int64)


def _boxes_by_slice(scan: Scan, size: int) -> dict[int, np.ndarray]:
    """Lesion boxes mapped like the slice itself: centre-padded to square, then scaled to ``size``."""
    h, w = scan.volume.shape[1:]
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    scale = size / side
    by_slice: dict[int, list[list[float]]] = {}
    for box in scan.lesions:
        x0, x1 = sorted((box.x0, box.x1))
        y0, y1 = sorted((box.y0, box.y1))
        by_slice.setdefault(box.slice_index, []).append(
            [(x0 + left) * scale, (y0 + top) * scale, (x1 + left) * scale, (y1 + top) * scale]
        )
    return {s: np.asarray(b, dtype=np.float32) for s, b in by_slice.items()}


# --- the disk store --------------------------------------------------------------------------------


def store_description(source: ScanSource, scan_ids: Sequence[str], plan: SlicePlan,
                      keep_lesion_slices: bool, native_max: int | None) -> dict[str, Any]:
    """What a store holds, by content: its key is the hash of this."""
    size = {"native_max": native_max} if native_max is not None else {"fixed": plan.image_size}
    pixels_plan = replace(plan, image_size=native_max or plan.image_size)
    return {
        "format": STORE_FORMAT,
        "source": getattr(source, "name", type(source).__name__),
        "scans": stable_hash([[scan_id, source.fingerprint(scan_id)] for scan_id in scan_ids], 32),
        "n_scans": len(scan_ids),
        "plan": pixels_plan.fingerprint(),
        "windows": list(plan.windows),
        "keep_lesion_slices": keep_lesion_slices,
        "size": size,
    }


def store_key(description: dict[str, Any]) -> str:
    return stable_hash(description, 32)


def write_slice_store(folder: Path, source: ScanSource, scan_ids: Sequence[str], plan: SlicePlan,
                      keep_lesion_slices: bool, native_max: int | None, progress: bool = False) -> None:
    """Write a store's files into ``folder`` (a fresh, empty folder); ``manifest.json`` last."""
    description = store_description(source, scan_ids, plan, keep_lesion_slices, native_max)
    with open(folder / _PIXELS, "wb") as handle:
        got = _collect(source, scan_ids, plan, keep_lesion_slices, native_max, _FilePixels(handle), progress)
        handle.flush()
        os.fsync(handle.fileno())
    for name, array in ((_ITEMS, got.items), (_BOXES, got.box_xyxy)):
        with open(folder / name, "wb") as handle:
            np.save(handle, array)
            handle.flush()
            os.fsync(handle.fileno())
    manifest = {
        "format": STORE_FORMAT,
        "key": store_key(description),
        "description": description,
        "items": len(got.items),
        "boxes": len(got.box_xyxy),
        "pixel_bytes": got.pixel_bytes,
        "scan_ids": got.scan_ids,
        "windows": list(plan.windows),
        "failures": got.failures,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    with open(folder / _MANIFEST, "w", encoding="utf-8") as handle:
        json.dump(manifest, handle, indent=1)
        handle.flush()
        os.fsync(handle.fileno())


def open_store(folder: Path) -> SliceTable:
    """A disk store opened read-only and memory-mapped; :class:`DataError` naming the file when it is bad."""
    manifest = _read_manifest(folder)
    pixels, items, box_xyxy = _map_arrays(folder, manifest)
    return SliceTable(pixels, items, box_xyxy, list(manifest["scan_ids"]), tuple(manifest["windows"]),
                      list(manifest["failures"]), location=folder)


def _read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / _MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable slice store manifest ({exc}); "
                        f"delete {folder} to rebuild it") from None
    if manifest.get("format") != STORE_FORMAT or manifest.get("key") != folder.name:
        raise DataError(f"{path}: format {manifest.get('format')!r} / key {manifest.get('key')!r} do not "
                        f"match this store (format {STORE_FORMAT}, key {folder.name}); "
                        f"delete {folder} to rebuild it")
    return manifest


def _map_arrays(folder: Path, manifest: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pixels_path = folder / _PIXELS
    size = pixels_path.stat().st_size if pixels_path.exists() else -1
    if size != manifest["pixel_bytes"]:
        raise DataError(f"{pixels_path}: {size} bytes, the manifest says pixel_bytes "
                        f"{manifest['pixel_bytes']}; delete {folder} to rebuild it")
    pixels = (np.memmap(pixels_path, dtype=np.uint8, mode="r", shape=(size,)) if size
              else np.zeros(0, dtype=np.uint8))
    arrays = []
    for name, count, dtype in ((_ITEMS, "items", ITEM_DTYPE), (_BOXES, "boxes", np.dtype(np.float32))):
        path = folder / name
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: unreadable ({exc}); delete {folder} to rebuild it") from None
        if array.dtype != dtype or len(array) != manifest[count]:
            raise DataError(f"{path}: {len(array)} rows of {array.dtype}, the manifest says {count} "
                            f"{manifest[count]} of {dtype}; delete {folder} to rebuild it")
        arrays.append(array)
    items, box_xyxy = arrays
    if not len(items):
        return pixels, items, box_xyxy
    end = int(items["offset"][-1]) + int(np.prod([items[k][-1] for k in ("channels", "height", "width")]))
    if end != size:
        raise DataError(f"{folder / _ITEMS}: items end at byte {end} of {size}; "
                        f"delete {folder} to rebuild it")
    return pixels, items, box_xyxy


def ensure_store(root: Path, key: str, write: Callable[[Path], None], *, builder: bool,
                 timeout_s: float = WAIT_TIMEOUT_S, poll_s: float = 0.2) -> Path:
    """The folder ``root/key`` of a complete store: built by ``write(folder)`` under the store's lock when
    ``builder`` and missing; otherwise waited for (``timeout_s``), failing when a builder reports an error
    after the wait began."""
    final = root / key
    if (final / _MANIFEST).is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    failed = root / f"{key}.failed"
    if not builder:
        start = time.time()
        while not (final / _MANIFEST).is_file():
            reason = _failure_since(failed, start - 1.0)
            if reason is not None:
                raise DataError(f"{final}: the slice store could not be built: {reason}")
            if time.time() - start > timeout_s:
                raise DataError(f"{final}: no slice store after waiting {timeout_s:.0f} s for the rank "
                                "that builds it (local rank 0)")
            time.sleep(poll_s)
        return final
    from clear_bench.atomic import atomic_write_text
    from clear_bench.cache import EntryLock

    with EntryLock(root / f"{key}.lock", timeout=timeout_s):
        if (final / _MANIFEST).is_file():
            return final
        for stale in root.glob(f".{key}.*.tmp"):  # left by a killed builder: we hold the lock
            shutil.rmtree(stale, ignore_errors=True)
        if final.exists():  # no manifest: never complete
            shutil.rmtree(final)
        failed.unlink(missing_ok=True)
        tmp = root / f".{key}.{uuid.uuid4().hex[:8]}.tmp"
        tmp.mkdir()
        try:
            write(tmp)
            os.replace(tmp, final)
        except BaseException as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            atomic_write_text(failed, f"{type(exc).__name__}: {exc}\n")
            raise
    _fsync_dir(root)
    return final


def _failure_since(path: Path, since: float) -> str | None:
    """The error a builder recorded in ``path`` at or after ``since`` (epoch seconds), else ``None``."""
    try:
        if path.stat().st_mtime < since:
            return None
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def default_store_root() -> Path:
    """``<clear-bench cache>/pretrain-slices`` (``$CLEAR_BENCH_CACHE`` overrides the cache root)."""
    from clear_bench.config import default_cache_dir

    return default_cache_dir() / "pretrain-slices"


def open_slice_store(data: DataConfig, source: ScanSource, scan_ids: Sequence[str], plan: SlicePlan, *,
                     builder: bool = True, progress: bool = False) -> SliceTable:
    """The slices of a run as its ``data`` section asks (``plan``: its slice plan): in RAM, or a disk store
    under ``data.store_dir`` built by the ``builder`` process of each node and mapped by all."""
    native_max = None if data.slice_size else data.native_max_size
    if data.store == "memory":
        return build_slice_table(source, scan_ids, plan, data.keep_lesion_slices, progress,
                                 native_max=native_max)
    root = Path(data.store_dir) if data.store_dir else default_store_root()
    key = store_key(store_description(source, scan_ids, plan, data.keep_lesion_slices, native_max))
    if progress and builder:
        verb = "using" if (root / key / _MANIFEST).is_file() else "building"
        print(f"{verb} the slice store {root / key}", flush=True)

    def write(folder: Path) -> None:
        write_slice_store(folder, source, scan_ids, plan, data.keep_lesion_slices, native_max, progress)

    return open_store(ensure_store(root, key, write, builder=builder))
