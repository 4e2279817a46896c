"""LeCL pretraining data: peak memory per rank and items/s of the disk slice store vs the in-RAM table.

One run, four arms: each store kind (``data.store: disk`` and ``memory``) on a synthetic cohort at 1x and
4x the slices. An arm starts two ranks (spawned processes, as torchrun starts the local ranks of a node);
each opens the slices as the trainer does (:func:`open_slice_store`: the disk store is built by local rank
0 while rank 1 waits, then mapped by both; the in-RAM table is built by each rank) and iterates its part of
``--steps`` global batches through a DataLoader of :class:`PretrainDataset` views (lesion sampling, MoCo v3
augmentations, ``--image-size`` px). Per rank it prints:

* peak RSS (``VmHWM``, with ``RssAnon`` / ``RssFile`` at the end): the in-RAM table grows with the
  slices (each rank holds the whole table), the disk store stays flat (its items are read per item;
  the file's pages live in the node's page cache, outside the processes);
* ``open s``: building or opening the slices (rank 1 of the disk arm waits for rank 0's build);
* items/s while iterating (opening excluded).

The cohort is generated on the fly: ``--scans`` scans (x4 for the 4x arms) of ``--slices`` slices of
``--size`` px, two windows, a lesion box on every third slice; the disk stores go to a temporary folder
(written just before, so reads hit a warm page cache). Other work on the machine changes every figure;
compare the ratios of one run.

    uv run python benchmarks/perf/pretrain_data.py        # about 2-4 minutes on two idle cores

``--json PATH`` also writes every figure as JSON.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from clear_bench.atomic import atomic_write_text
from clear_bench.data.scan import Scan
from clear_bench.data.slices import SlicePlan
from clear_bench.specs import LesionBox

WINDOWS = ("soft-tissue", "lung")


class BenchCohort:
    """Deterministic synthetic CT scans: a soft-tissue ellipse with a fat rim, noise, round lesions."""

    name = "bench-cohort"

    def __init__(self, scans: int, slices: int, size: int) -> None:
        self.scans, self.slices, self.size = scans, slices, size

    def scan_ids(self) -> list[str]:
        return [f"bench-{i:04d}" for i in range(self.scans)]

    def fingerprint(self, scan_id: str) -> str:
        return hashlib.sha256(f"{scan_id}:{self.slices}:{self.size}".encode()).hexdigest()[:16]

    def load(self, scan_id: str) -> Scan:
        index = int(scan_id.split("-")[1])
        rng = np.random.default_rng(index)
        n, s = self.slices, self.size
        yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
        body = ((xx - s / 2) / (0.42 * s)) ** 2 + ((yy - s / 2) / (0.32 * s)) ** 2
        volume = rng.normal(0.0, 15.0, size=(n, s, s)).astype(np.float32)
        volume += np.where(body <= 0.8, 40.0, np.where(body <= 1.0, -100.0, -1000.0)).astype(np.float32)
        cx, cy = rng.uniform(0.35 * s, 0.65 * s, size=2)
        lesions = []
        for z in range(1, n, 3):
            r = rng.uniform(0.02, 0.06) * s
            volume[z, (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r] += 120.0
            lesions.append(LesionBox(z, cx - r, cy - r, cx + r, cy + r, "bench"))
        return Scan(scan_id, volume, (5.0, 0.8, 0.8), lesions=lesions)


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def rank_main(rank: int, args: dict, out: str) -> None:
    """One local rank: open the slices as the trainer does, then iterate its part of the batches."""
    import torch
    from clear_bench_lecl.pretrain.config import DataConfig
    from clear_bench_lecl.pretrain.data import Augment, BatchPlan, EpochBatches, PretrainDataset, collate
    from clear_bench_lecl.pretrain.store import open_slice_store
    from torch.utils.data import DataLoader

    torch.set_num_threads(1)
    source = BenchCohort(args["scans"], args["slices"], args["size"])
    data = DataConfig(windows=list(WINDOWS), store=args["store"], store_dir=args["store_dir"])
    plan = SlicePlan(windows=WINDOWS, image_size=args["image_size"], channels=1)
    tic = time.perf_counter()
    table = open_slice_store(data, source, source.scan_ids(), plan, builder=rank == 0)
    opened = time.perf_counter() - tic
    dataset = PretrainDataset(table, args["image_size"], 3, (0.5,) * 3, (0.5,) * 3, "lesion", Augment())
    batches = BatchPlan(table.is_lesion, args["batch"], world=2, rank=rank, seed=0)
    loader = DataLoader(dataset, batch_sampler=EpochBatches(batches, 0), collate_fn=collate,
                        num_workers=args["workers"])
    items, tic = 0, time.perf_counter()
    for step, (view1, _view2, _lesion) in enumerate(loader):
        if step == args["steps"]:
            break
        items += len(view1)
    seconds = time.perf_counter() - tic
    peak = _status_mb("VmHWM")
    if args["workers"]:  # the workers' own peaks (the largest of them)
        peak += resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
    result = {"rank": rank, "slices": len(table), "table_mb": table.nbytes / 2**20, "open_s": opened,
              "peak_mb": peak, "anon_mb": _status_mb("RssAnon"), "file_mb": _status_mb("RssFile"),
              "items": items, "items_per_s": items / seconds}
    Path(out, f"rank-{rank}.json").write_text(json.dumps(result))


def run_arm(store: str, scale: int, args: argparse.Namespace, tmp: Path) -> tuple[list[dict], float]:
    """Both ranks of one store kind at one scale: their figures, and the arm's wall seconds."""
    import torch.multiprocessing as mp

    out = tmp / f"{store}-{scale}x"
    out.mkdir()
    settings = {"store": store, "store_dir": str(tmp / "stores"), "scans": args.scans * scale,
                "slices": args.slices, "size": args.size, "image_size": args.image_size,
                "batch": args.batch, "steps": args.steps, "workers": args.workers}
    tic = time.perf_counter()
    mp.spawn(rank_main, args=(settings, str(out)), nprocs=2, join=True)
    wall = time.perf_counter() - tic
    print(f"  {store:<6} {scale}x: {wall:.0f}s wall", flush=True)
    return [json.loads((out / f"rank-{r}.json").read_text()) for r in range(2)], wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scans", type=int, default=32, help="scans of the 1x cohort (x4 for 4x)")
    parser.add_argument("--slices", type=int, default=25, help="slices per scan")
    parser.add_argument("--size", type=int, default=256, help="native side of the slices (px)")
    parser.add_argument("--image-size", type=int, default=224, help="side of the views")
    parser.add_argument("--batch", type=int, default=32, help="global batch (two ranks)")
    parser.add_argument("--steps", type=int, default=20, help="batches each rank iterates")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers per rank")
    parser.add_argument("--json", metavar="PATH", help="also write the figures to this JSON file")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    print(f"cohort: {args.scans} / {4 * args.scans} scans x {args.slices} slices x {len(WINDOWS)} windows at "
          f"{args.size} px; views {args.image_size} px, global batch {args.batch}, {args.steps} steps, "
          f"{args.workers} workers per rank; load average before: {load_before:.1f}", flush=True)
    results: dict[tuple[str, int], list[dict]] = {}
    walls: dict[tuple[str, int], float] = {}
    with tempfile.TemporaryDirectory(prefix="pretrain-data-") as tmp:
        for scale in (1, 4):
            for store in ("memory", "disk"):
                results[store, scale], walls[store, scale] = run_arm(store, scale, args, Path(tmp))
    header = (f"\n{'store':<8}{'scale':>6}{'slices':>8}{'table MB':>10}{'rank':>6}{'open s':>8}"
              f"{'peak RSS MB':>13}{'RssAnon MB':>12}{'RssFile MB':>12}{'items/s':>9}")
    print(header)
    for (store, scale), ranks in results.items():
        for r in ranks:
            print(f"{store:<8}{f'{scale}x':>6}{r['slices']:>8}{r['table_mb']:>10.0f}{r['rank']:>6}"
                  f"{r['open_s']:>8.1f}{r['peak_mb']:>13.0f}{r['anon_mb']:>12.0f}{r['file_mb']:>12.0f}"
                  f"{r['items_per_s']:>9.1f}")
    print()
    growth = {}
    for store in ("memory", "disk"):
        growth[store] = [results[store, 4][r]["peak_mb"] / results[store, 1][r]["peak_mb"] for r in range(2)]
        print(f"{store}: peak RSS 4x / 1x per rank: {growth[store][0]:.2f}, {growth[store][1]:.2f}")
    rates = {}
    for scale in (1, 4):
        rate = {s: sum(r["items_per_s"] for r in results[s, scale]) for s in ("memory", "disk")}
        rates[f"{scale}x"] = {**rate, "disk_vs_memory": rate["disk"] / rate["memory"]}
        print(f"{scale}x: items/s (both ranks) disk {rate['disk']:.1f}, memory {rate['memory']:.1f}, "
              f"disk / memory {rate['disk'] / rate['memory']:.2f}")
    load_after = os.getloadavg()[0]
    print(f"load average after: {load_after:.1f}")
    if args.json:
        figures = {
            "scans": [args.scans, 4 * args.scans], "slices": args.slices, "size": args.size,
            "windows": list(WINDOWS), "image_size": args.image_size, "batch": args.batch,
            "steps": args.steps, "workers": args.workers, "ranks": 2,
            "arms": [{"store": store, "scale": scale, "wall_s": walls[store, scale], "ranks": ranks}
                     for (store, scale), ranks in results.items()],
            "peak_growth_4x": growth, "items_per_s": rates,
            "load_before": load_before, "load_after": load_after,
        }
        atomic_write_text(args.json, json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
