"""Extraction throughput and memory, measured side by side in one run.

Prints, for one encoder (default: a random-init ViT-S/16 at 224 px):

* the raw forward throughput of the model on a batch already in memory (the ceiling), at the precision
  the harness uses, measured before and after the other runs;
* the harness's end-to-end throughput (``clear_bench.extraction.extract``) on NIfTI scans read from disk,
  written to a fresh cache, and its ratio to the ceiling;
* the public CLEAR scripts' pattern on the same scans (one scan per DataLoader item, one slice per forward
  call, fp32) and the harness/seed ratio;
* the peak resident memory of extraction runs over N and 2N scans (main process peak reset between
  runs through /proc/self/clear_refs; DataLoader workers through RUSAGE_CHILDREN).

    uv run python benchmarks/perf/extract.py                 # about two minutes on two CPU cores
    uv run python benchmarks/perf/extract.py --device cuda --scans 16 --slices 64
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import SimpleITK as sitk
import torch
from torch.utils.data import DataLoader, Dataset

from clear_bench.cache import EmbeddingCache
from clear_bench.data.files import files_digest
from clear_bench.data.readers import read_scan
from clear_bench.data.scan import Scan
from clear_bench.data.slices import SlicePlan
from clear_bench.extraction import (
    build_encoder,
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
    """(this process's VmHWM, the largest child's max RSS) in MiB."""
    with open("/proc/self/status") as status:
        hwm = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return hwm / 1024, children / 1024


def reset_peak_memory() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


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
    parser.add_argument("--memory-scans", type=int, default=6, help="N of the N / 2N memory runs")
    parser.add_argument("--slices", type=int, default=8, help="axial slices per scan")
    parser.add_argument("--matrix", type=int, default=512, help="in-plane pixels of the written scans")
    parser.add_argument("--windows", default="soft-tissue,lung,bone", help="comma-separated HU windows")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
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
    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device)
    windows = tuple(w for w in args.windows.split(",") if w)
    plan = slice_plan_for(encoder, windows=windows)
    per_scan = args.slices * len(windows)
    n = args.scans
    print(f"encoder {encoder.label} ({encoder.embed_dim}-d, {encoder.preprocessing.image_size} px) "
          f"on {device}, "
          f"torch threads {torch.get_num_threads()}, harness precision {precision}")
    m = args.memory_scans
    print(f"scans: {n} (throughput) and {m}/{2 * m} (memory) of {args.slices} slices at {args.matrix}^2, "
          f"windows {', '.join(windows)} -> {per_scan} instances per scan; batch {args.batch_size}, "
          f"{args.num_workers} workers")

    with tempfile.TemporaryDirectory(prefix="clear-bench-perf-") as tmp:
        root = Path(tmp)
        ids = write_scans(root / "scans", max(n, 2 * m), args.slices, args.matrix)
        source = FolderSource(root / "scans")
        iterations = max(1, -(-n * per_scan // (2 * args.batch_size)))  # as many images as the harness

        raw_before = raw_forward(encoder, device, precision, args.batch_size, iterations)
        report = extract(encoder, source, ids[:n], plan, EmbeddingCache(root / "cache-e2e"),
                         batch_size=args.batch_size, num_workers=args.num_workers, precision=precision,
                         device=device, progress=False)
        assert not report.failed, report.summary()
        harness = report.instances / report.seconds
        steady = report.instances / (report.seconds - report.first_batch_seconds)
        seed, seed_count = seed_pattern(encoder, source, ids[:n], plan, root / "seed", device,
                                        args.num_workers)
        raw_after = raw_forward(encoder, device, precision, args.batch_size, iterations)
        raw = (raw_before + raw_after) / 2
        seed_raw_batch1 = raw_forward(encoder, device, "fp32", 1, 8)

        memory = []
        for count, cache_name in ((m, "cache-mem-n"), (2 * m, "cache-mem-2n")):
            reset = reset_peak_memory()
            extract(encoder, source, ids[:count], plan, EmbeddingCache(root / cache_name),
                    batch_size=args.batch_size, num_workers=args.num_workers, precision=precision,
                    device=device, progress=False)
            memory.append((count, reset, *peak_memory_mb()))

    print()
    print(f"raw forward, {precision}, batch {args.batch_size} (ceiling): {raw:8.1f} img/s "
          f"(before {raw_before:.1f}, after {raw_after:.1f})")
    print(f"harness end to end from disk, {precision}:       {harness:8.1f} img/s "
          f"({report.instances} instances in {report.seconds:.1f} s, {report.forward_calls} forward calls, "
          f"{report.forward_seconds:.1f} s in the model)")
    print(f"  of which start-up until the first batch: {report.first_batch_seconds:.1f} s "
          f"(workers start, first reads); after it {steady:.1f} img/s")
    print(f"seed pattern (1 scan/item, 1 slice/call, fp32): {seed:8.1f} img/s ({seed_count} instances; "
          f"raw fp32 batch-1 forward {seed_raw_batch1:.1f} img/s)")
    print(f"harness / raw forward:  {harness / raw:6.2f}   (target >= 0.85; after start-up "
          f"{steady / raw:.2f})")
    print(f"harness / seed pattern: {harness / seed:6.2f}   (target >= 1.8 on CPU, >= 5 on a GPU)")
    for count, reset, main_mb, workers_mb in memory:
        note = "" if reset else " (peak not resettable here: cumulative)"
        print(f"peak RSS extracting {count:3d} scans: main process {main_mb:7.1f} MiB{note}, "
              f"largest worker so far {workers_mb:7.1f} MiB")


if __name__ == "__main__":
    main()
