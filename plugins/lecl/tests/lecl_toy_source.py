"""A tiny deterministic CT scan source for the pretraining tests (loaded as a local plugin file).

Each scan is a ``[slices, 48, 48]`` HU volume: air around a soft-tissue ellipse with a fat rim and noise;
every third slice carries a bright round lesion (+ a LesionBox) at a scan-dependent place.
"""

from __future__ import annotations

import hashlib

import numpy as np

from clear_bench import hookimpl
from clear_bench.data.scan import Scan
from clear_bench.specs import LesionBox, Option, SourceSpec


class ToySource:
    name = "lecl-toy"

    def __init__(self, scans: int, slices: int, size: int, seed: int) -> None:
        self.scans, self.slices, self.size, self.seed = scans, slices, size, seed

    def scan_ids(self) -> list[str]:
        return [f"toy-{i:03d}" for i in range(self.scans)]

    def fingerprint(self, scan_id: str) -> str:
        key = f"{scan_id}:{self.slices}:{self.size}:{self.seed}"
        return hashlib.sha256(key.encode()).hexdigest()[:16]

    def load(self, scan_id: str) -> Scan:
        index = int(scan_id.split("-")[1])
        rng = np.random.default_rng([self.seed, index])
        n, s = self.slices, self.size
        yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
        body = ((xx - s / 2) / (0.42 * s)) ** 2 + ((yy - s / 2) / (0.32 * s)) ** 2
        volume = np.full((n, s, s), -1000.0, dtype=np.float32)
        volume[:, body <= 1.0] = -100.0
        volume[:, body <= 0.8] = 40.0
        volume += rng.normal(0.0, 15.0, size=volume.shape).astype(np.float32)
        lesions = []
        cx, cy = rng.uniform(0.35 * s, 0.65 * s, size=2)
        for z in range(1, n, 3):
            r = rng.uniform(3.0, 6.0)
            disc = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
            volume[z, disc] = 160.0 + rng.normal(0.0, 10.0)
            lesions.append(LesionBox(z, cx - r, cy - r, cx + r, cy + r, "toy"))
        return Scan(scan_id, volume, (5.0, 0.8, 0.8), lesions=lesions)


@hookimpl
def clear_bench_sources() -> list[SourceSpec]:
    options = {
        "scans": Option(int, 6, "number of scans"),
        "slices": Option(int, 9, "slices per scan"),
        "size": Option(int, 48, "matrix size"),
        "seed": Option(int, 0, "generator seed"),
    }
    return [SourceSpec("lecl-toy", lambda o: ToySource(o["scans"], o["slices"], o["size"], o["seed"]),
                       "tiny deterministic scans for LeCL tests", options)]
