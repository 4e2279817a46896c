"""Processes of the slice-store tests (importable by spawned children): a toy source that records every
scan it reads, and one rank opening the disk store."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
from clear_bench_lecl.pretrain.config import DataConfig
from clear_bench_lecl.pretrain.store import open_slice_store
from lecl_toy_source import ToySource

from clear_bench.data.scan import Scan
from clear_bench.data.slices import SlicePlan

PLAN = SlicePlan(windows=("soft-tissue", "lung"), slice_step=2, image_size=32, channels=1)


class LoggedSource(ToySource):
    """:class:`ToySource` that appends each scan it loads to ``log`` (one line per load), slowly."""

    def __init__(self, log: Path, scans: int = 3, delay_s: float = 0.0) -> None:
        super().__init__(scans=scans, slices=9, size=48, seed=0)
        self.log, self.delay_s = Path(log), delay_s

    def load(self, scan_id: str) -> Scan:
        with self.log.open("a") as handle:
            handle.write(scan_id + "\n")
        time.sleep(self.delay_s)
        return super().load(scan_id)


def loads(log: Path) -> list[str]:
    return Path(log).read_text().split() if Path(log).exists() else []


def disk_config(root: Path, **changes: object) -> DataConfig:
    values = {"windows": list(PLAN.windows), "slice_step": PLAN.slice_step, "store": "disk",
              "store_dir": str(root), **changes}
    return DataConfig(**values)  # type: ignore[arg-type]


def open_as_rank(rank: int, root: str, out: str) -> None:
    """Local rank ``rank`` of a node: rank 0 builds the store (slowly), the other waits; both record what
    they read and a digest of what they mapped."""
    log = Path(out) / f"loads-{rank}.txt"
    source = LoggedSource(log, delay_s=0.3 if rank == 0 else 0.0)
    if rank == 1:
        time.sleep(0.2)  # let rank 0 take the lock first, as it would while this rank starts
    table = open_slice_store(disk_config(Path(root)), source, source.scan_ids(), PLAN, builder=rank == 0)
    digest = hashlib.sha256(np.asarray(table.pixels).tobytes()).hexdigest()
    mapped = type(table.pixels).__name__
    (Path(out) / f"rank-{rank}.txt").write_text(f"{digest} {len(table)} {mapped} {table.location}\n")
