"""Speed of the data stage: rendering the synthetic cohort, reading it back from the cache, and turning
scans into encoder instances (windowing + resizing), measured side by side in one run.

    uv run python benchmarks/perf/data_speed.py            # default cohort: 100 patients
    uv run python benchmarks/perf/data_speed.py --patients 20 --json speed.json   # also the figures as JSON
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time

import torch
from clear_bench_ct_tasks.synthetic.config import CohortConfig
from clear_bench_ct_tasks.synthetic.source import SyntheticSource

from clear_bench.atomic import atomic_write_text
from clear_bench.data.slices import SlicePlan, slice_instances


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a DataLoader worker uses 1)")
    parser.add_argument("--json", metavar="PATH", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    config = CohortConfig(patients=args.patients)
    with tempfile.TemporaryDirectory() as cache:
        source = SyntheticSource(config, cache_dir=cache)
        ids = source.scan_ids()
        start = time.perf_counter()
        scans = [source.load(i) for i in ids]  # renders and writes the cache
        render_s = time.perf_counter() - start
        start = time.perf_counter()
        for i in ids:
            SyntheticSource(config, cache_dir=cache).load(i)  # a fresh source reads the .npz
        cached_s = time.perf_counter() - start
    slices = sum(s.num_slices for s in scans)
    print(f"cohort: {len(ids)} patients, {slices} slices of {config.matrix}x{config.matrix}")
    print(f"render + cache : {render_s:6.1f} s  ({render_s / len(ids) * 1000:6.1f} ms per scan)")
    print(f"read from cache: {cached_s:6.1f} s  ({cached_s / len(ids) * 1000:6.1f} ms per scan, "
          f"{render_s / max(cached_s, 1e-9):.0f}x faster than rendering)")
    plans = {
        "per-window 3 windows, 224 px": SlicePlan(),
        "stacked 3 windows, 224 px": SlicePlan(window_mode="stacked"),
        "HU, 1 channel, 128 px": SlicePlan(input="hu", channels=1, image_size=128),
    }
    subset = scans[: min(20, len(scans))]
    rates = {}
    for name, plan in plans.items():
        start = time.perf_counter()
        images = sum(len(slice_instances(s, plan)) for s in subset)
        elapsed = time.perf_counter() - start
        rates[name] = images / elapsed
        print(f"slice_instances {name:<30}: {images / elapsed:7.0f} images/s "
              f"({elapsed / len(subset) * 1000:5.0f} ms per scan)")
    if args.json:
        result = {"patients": len(ids), "slices": slices, "matrix": config.matrix, "render_s": render_s,
                  "cached_s": cached_s, "cache_speedup": render_s / max(cached_s, 1e-9),
                  "instances_per_s": rates}
        atomic_write_text(args.json, json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
