"""Extraction throughput and memory, measured side by side in one run.

Prints, for one encoder (default: a random-init ViT-S/16 at 224 px):

* the raw forward throughput of the model on a batch already in memory (the ceiling), at the precision
  the harness uses, measured before and after the other runs;
* the harness's end-to-end throughput (``clear_bench.extraction.extract``) on NIfTI scans read from disk,
  written to a fresh cache, and its ratio to the ceiling;
* the public CLEAR scripts' pattern on the same scans (one scan per DataLoader item, one slice per forward
  call, fp32) and the harness/seed ratio;
* a rerun of the first round's extraction on its now complete cache (every scan served from the cache)
  and how many times faster it is than extracting;
* the peak resident memory of extraction runs over N and 2N scans, each in a fresh process (the main
  process's VmHWM, and the largest DataLoader worker's max RSS through RUSAGE_CHILDREN).

    uv run python benchmarks/perf/extract.py                 # about two minutes on two CPU cores
    uv run python benchmarks/perf/extract.py --device cuda --scans 16 --slices 64

``--json PATH`` also writes every figure as JSON.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import SimpleITK as sitk
import torch
from torch.utils.data import DataLoader, Dataset

from clear_bench.atomic import atomic_write_text
from clear_bench.cache import EmbeddingCache
from clear_bench.components import build_encoder
from clear_bench.data.files import files_digest
from clear_bench.data.readers import read_scan
from clear_bench.data.scan import Scan
from clear_bench.data.slices import SlicePlan
from clear_bench.extraction import (
    extract,
    make_instances,
    resolve_device,
    resolve_precision,
    slice_plan_for,
)
from clear_bench.registry import load_registry
from clear_bench.specs import Encoder


class FolderSource:
    """``<id>.nii.gz`` files of a folder, read with the harness's own scan reader."""

    name = "perf-folder"

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def scan_ids(self) -> list[str]:
        return sorted(p.name[: -len(".nii.gz")] for p in self.folder.glob("*.nii.gz"))

    def path(self, scan_id: str) -> Path:
        return self.folder / f"{scan_id}.nii.gz"

    def load(self, scan_id: str) -> Scan:
        return read_scan(self.path(scan_id), scan_id)

    def fingerprint(self, scan_id: str) -> str:
        return files_digest([self.path(scan_id)])


def write_scans(folder: Path, count: int, slices: int, matrix: int) -> list[str]:
    """Synthetic CT-like int16 volumes (body ellipse, lungs, spine, noise) as compressed NIfTI."""
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:matrix, :matrix] / matrix
    body = ((yy - 0.5) / 0.38) ** 2 + ((xx - 0.5) / 0.45) ** 2 < 1
    lungs = (((yy - 0.45) / 0.2) ** 2 + ((np.abs(xx - 0.5) - 0.18) / 0.12) ** 2 < 1) & body
    spine = ((yy - 0.75) / 0.05) ** 2 + ((xx - 0.5) / 0.05) ** 2 < 1
    ids = []
    for index in range(count):
        rng = np.random.default_rng(index)
        base = np.where(body, 40.0, -1000.0)
        base[lungs] = -850.0
        base[spine] = 700.0
        volume = base[None] + rng.normal(0.0, 25.0, (slices, matrix, matrix))
        image = sitk.GetImageFromArray(volume.astype(np.int16))
        image.SetSpacing((0.7, 0.7, 2.5))
        scan_id = f"perf{index:03d}"
        sitk.WriteImage(image, str(folder / f"{scan_id}.nii.gz"), useCompression=True)
        ids.append(scan_id)
    return ids


def raw_forward(encoder: Encoder, device: torch.device, precision: str, batch_size: int,
                iterations: int) -> float:
    """Images per second of the model alone on one normalised batch already on the device."""
    size, channels = encoder.preprocessing.image_size, encoder.preprocessing.channels
    x = torch.randn(batch_size, channels, size, size, device=device)
    model = encoder.model.eval().to(device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    with torch.inference_mode(), autocast:
        model(x[:2])  # warm-up
        _sync(device)
        started = time.perf_counter()
        for _ in range(iterations):
            model(x)
        _sync(device)
    return iterations * batch_size / (time.perf_counter() - started)


class SeedScans(Dataset):
    """The public CLEAR scripts' loader: one whole scan (all its slices) per item."""

    def __init__(self, source: FolderSource, scan_ids: list[str], plan: SlicePlan, encoder: Encoder) -> None:
        self.source, self.scan_ids, self.plan, self.encoder = source, scan_ids, plan, encoder

    def __len__(self) -> int:
        return len(self.scan_ids)

    def __getitem__(self, index: int) -> tuple[str, torch.Tensor]:
        scan = self.source.load(self.scan_ids[index])
        images, _, _ = make_instances(scan, self.plan, self.encoder.preprocessing, "slice")
        return self.scan_ids[index], torch.from_numpy(images)


def seed_pattern(encoder: Encoder, source: FolderSource, scan_ids: list[str], plan: SlicePlan, out: Path,
                 device: torch.device, num_workers: int) -> tuple[float, int]:
    """Instances per second of the seed pattern: fp32, one slice per forward call, ``{id}.h5`` per scan."""
    model = encoder.model.eval().to(device)
    loader = DataLoader(SeedScans(source, scan_ids, plan, encoder), batch_size=1, num_workers=num_workers)
    out.mkdir(parents=True, exist_ok=True)
    count = 0
    started = time.perf_counter()
    with torch.no_grad():
        for (scan_id,), images in loader:
            feats = [model(images[0, i: i + 1].to(device)).cpu() for i in range(images.shape[1])]
            with h5py.File(out / f"{scan_id}.h5", "w") as h5:
                h5.create_dataset("feats", data=torch.cat(feats).numpy())
            count += len(feats)
    return count / (time.perf_counter() - started), count


def peak_memory_mb() -> tuple[float, float]:
    """(this process's peak RSS, the largest reaped child's peak RSS) in MiB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        with open("/proc/self/status") as status:
            own = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        pass
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return own / 1024, children / 1024


def memory_child(args: argparse.Namespace, encoder: Encoder, plan: SlicePlan, precision: str,
                 device: torch.device) -> None:
    """One extraction of ``--memory-child`` scans of ``--scan-dir`` in this fresh process; prints JSON."""
    source = FolderSource(Path(args.scan_dir))
    ids = source.scan_ids()[: args.memory_child]
    with tempfile.TemporaryDirectory(prefix="clear-bench-perf-mem-") as tmp:
        report = extract(encoder, source, ids, plan, EmbeddingCache(tmp), batch_size=args.batch_size,
                         num_workers=args.num_workers, precision=precision, device=device, progress=False)
    main_mb, workers_mb = peak_memory_mb()
    print(json.dumps({"scans": len(report.extracted), "instances": report.instances, "main_mb": main_mb,
                      "workers_mb": workers_mb}))


def measure_memory(argv: list[str], scan_dir: Path, count: int) -> dict[str, float]:
    """Run :func:`memory_child` in a fresh interpreter with this script's own options."""
    command = [sys.executable, __file__, *argv, "--memory-child", str(count), "--scan-dir", str(scan_dir)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoder", default="lecl-vit")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="encoder option (default: weights=random arch=vit_small_patch16 img_size=224)")
    parser.add_argument("--scans", type=int, default=12, help="scans of the throughput runs")
    parser.add_argument("--seed-scans", type=int, default=4,
                        help="scans of the seed-pattern run (it is slow; its fixed costs are negligible)")
    parser.add_argument("--memory-scans", type=int, default=6, help="N of the N / 2N memory runs")
    parser.add_argument("--slices", type=int, default=8, help="axial slices per scan")
    parser.add_argument("--matrix", type=int, default=512, help="in-plane pixels of the written scans")
    parser.add_argument("--windows", default="soft-tissue,lung,bone", help="comma-separated HU windows")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--rounds", type=int, default=3, help="side-by-side rounds (ratios: their median)")
    parser.add_argument("--json", metavar="PATH", help="also write the figures to this JSON file")
    parser.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--scan-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    import yaml

    options = {}
    if args.encoder == "lecl-vit":
        options = {"weights": "random", "arch": "vit_small_patch16", "img_size": 224}
    for pair in args.option:
        key, _, value = pair.partition("=")
        options[key] = yaml.safe_load(value)
    encoder = build_encoder(load_registry().encoder(args.encoder), options)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.exit(2, f"extract.py: --device {args.device}, but torch sees no CUDA device on this machine\n")
    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device)
    windows = tuple(w for w in args.windows.split(",") if w)
    plan = slice_plan_for(encoder, windows=windows)
    per_scan = args.slices * len(windows)
    n = args.scans
    print(f"encoder {encoder.label} ({encoder.embed_dim}-d, {encoder.preprocessing.image_size} px) "
          f"on {device}, torch threads {torch.get_num_threads()}, harness precision {precision}")
    if args.memory_child is not None:
        memory_child(args, encoder, plan, precision, device)
        return
    m = args.memory_scans
    print(f"scans: {n} (throughput) and {m}/{2 * m} (memory) of {args.slices} slices at {args.matrix}^2, "
          f"windows {', '.join(windows)} -> {per_scan} instances per scan; batch {args.batch_size}, "
          f"{args.num_workers} workers")

    with tempfile.TemporaryDirectory(prefix="clear-bench-perf-") as tmp:
        root = Path(tmp)
        ids = write_scans(root / "scans", max(n, 2 * m), args.slices, args.matrix)
        source = FolderSource(root / "scans")
        iterations = max(1, -(-n * per_scan // (2 * args.batch_size)))  # as many images as the harness
        rounds = []
        for index in range(args.rounds):
            rounds.append(_round(index, encoder, source, ids[:n], ids[: min(n, args.seed_scans)], plan, root,
                                 device, precision, args.batch_size, args.num_workers, iterations))
        started = time.perf_counter()
        rerun = extract(encoder, source, ids[:n], plan, EmbeddingCache(root / "cache-0"),
                        batch_size=args.batch_size, num_workers=args.num_workers, precision=precision,
                        device=device, progress=False)
        rerun_s = time.perf_counter() - started
        assert len(rerun.cached) == n and not rerun.extracted, rerun.summary()
        memory = [measure_memory(_child_argv(sys.argv[1:]), root / "scans", count) for count in (m, 2 * m)]

    print()
    for r in rounds:
        print(f"round {r['round']}: raw forward {precision} batch {args.batch_size}: {r['raw']:6.1f} img/s "
              f"(before {r['raw_before']:.1f}, after {r['raw_after']:.1f})")
        print(f"  harness end to end from disk: {r['harness']:6.1f} img/s ({r['instances']} instances in "
              f"{r['seconds']:.1f} s, {r['forward_seconds']:.1f} s in the model, start-up until the first "
              f"batch {r['startup']:.1f} s)")
        print(f"  seed pattern (1 scan/item, 1 slice/call, fp32): {r['seed']:6.1f} img/s (raw fp32 batch-1 "
              f"forward {r['raw_b1']:.1f} img/s)")
        if not _stable(r):
            print("  note: the raw forward moved by more than 15% across this round (the CPU's load "
                  "changed); its ratios are left out when a steadier round exists")
    steady_rounds = [r for r in rounds if _stable(r)]
    chosen = steady_rounds or rounds
    which = (f"median of {len(chosen)} steady round(s)" if steady_rounds
             else "median of all rounds; none was steady")
    to_raw = statistics.median(r["harness"] / r["raw"] for r in chosen)
    steady = statistics.median(r["steady"] / r["raw"] for r in chosen)
    to_seed = statistics.median(r["harness"] / r["seed"] for r in chosen)
    print(f"harness / raw forward:  {to_raw:5.2f}  (target >= 0.85; after start-up {steady:.2f}; {which})")
    print(f"harness / seed pattern: {to_seed:5.2f}  (target >= 1.8 on CPU, >= 5 on a GPU; {which})")
    for run in memory:
        print(f"peak RSS extracting {run['scans']:3.0f} scans ({run['instances']:.0f} instances, fresh "
              f"process): main {run['main_mb']:7.1f} MiB, largest DataLoader worker "
              f"{run['workers_mb']:7.1f} MiB")
    first_s = rounds[0]["wall"]
    print(f"cached rerun of round 1 ({n} scans, all from the cache): {rerun_s:.2f} s against {first_s:.1f} s "
          f"extracting: {first_s / rerun_s:.0f}x faster")
    growth = memory[1]["main_mb"] - memory[0]["main_mb"]
    print(f"main-process peak growth from {m} to {2 * m} scans: {growth:+.1f} MiB")
    if args.json:
        result = {
            "encoder": encoder.label, "embed_dim": encoder.embed_dim,
            "image_size": encoder.preprocessing.image_size, "device": str(device), "precision": precision,
            "threads": torch.get_num_threads(), "scans": n, "seed_scans": min(n, args.seed_scans),
            "memory_scans": [m, 2 * m], "slices": args.slices, "matrix": args.matrix,
            "windows": list(windows),
            "instances_per_scan": per_scan, "batch_size": args.batch_size, "num_workers": args.num_workers,
            "rounds": rounds, "chosen": which, "harness_to_raw": to_raw, "harness_to_raw_steady": steady,
            "harness_to_seed": to_seed,
            "rerun": {"scans": len(rerun.cached), "seconds": rerun_s, "first_seconds": first_s,
                      "speedup": first_s / rerun_s},
            "memory": memory, "memory_growth_mb": growth,
            "memory_ratio": memory[1]["main_mb"] / memory[0]["main_mb"],
        }
        atomic_write_text(args.json, json.dumps(result, indent=1))


def _child_argv(argv: list[str]) -> list[str]:
    """This script's options without ``--json`` (a memory child prints its figures, it writes no file)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--json":
            skip = True
        elif not arg.startswith("--json="):
            out.append(arg)
    return out


def _stable(measured: dict[str, float]) -> bool:
    return abs(measured["raw_before"] - measured["raw_after"]) <= 0.15 * measured["raw"]


def _round(index: int, encoder: Encoder, source: FolderSource, ids: list[str], seed_ids: list[str],
           plan: SlicePlan, root: Path, device: torch.device, precision: str, batch_size: int,
           num_workers: int, iterations: int) -> dict[str, float]:
    """Raw forward, harness, seed pattern, raw forward again: one side-by-side measurement."""
    raw_before = raw_forward(encoder, device, precision, batch_size, iterations)
    started = time.perf_counter()
    report = extract(encoder, source, ids, plan, EmbeddingCache(root / f"cache-{index}"),
                     batch_size=batch_size, num_workers=num_workers, precision=precision, device=device,
                     progress=False)
    wall = time.perf_counter() - started
    assert not report.failed, report.summary()
    seed, _ = seed_pattern(encoder, source, seed_ids, plan, root / f"seed-{index}", device, num_workers)
    raw_after = raw_forward(encoder, device, precision, batch_size, iterations)
    return {
        "round": index + 1, "raw_before": raw_before, "raw_after": raw_after,
        "raw": (raw_before + raw_after) / 2, "harness": report.instances / report.seconds,
        "steady": report.instances / (report.seconds - report.first_batch_seconds),
        "instances": report.instances, "seconds": report.seconds, "wall": wall,
        "forward_seconds": report.forward_seconds,
        "startup": report.first_batch_seconds, "seed": seed,
        "raw_b1": raw_forward(encoder, device, "fp32", 1, 8),
    }


if __name__ == "__main__":
    main()
