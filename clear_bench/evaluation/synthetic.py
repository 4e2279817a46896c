"""Synthetic instance-embedding bags with a planted signal, for tests, benchmarks and sanity runs.

Every instance is Gaussian noise ``N(0, I_D)``. For label ``l`` of a positive bag, ``n_signal`` randomly
placed instances get ``amplitude * v_l`` added (``v_l`` orthonormal directions); ``n_signal = None``
spreads the signal over every instance. Labels are independent Bernoulli(``prevalence``) draws.
"""

from __future__ import annotations

import numpy as np

from clear_bench.evaluation.bags import Bag


def planted_bags(n_bags: int, n_instances: int, dim: int, n_labels: int = 1, n_signal: int | None = 2,
                 amplitude: float = 3.0, prevalence: float = 0.4, seed: int = 0,
                 n_windows: int = 1) -> tuple[dict[str, Bag], dict[str, np.ndarray]]:
    """``(bags, labels)`` keyed by ids ``scan-0000``...; labels are 0/1 float vectors of ``n_labels``."""
    if n_labels > dim:
        raise ValueError(f"{n_labels} orthogonal signal directions need dim >= {n_labels}, got {dim}")
    rng = np.random.default_rng(seed)
    directions = np.linalg.qr(rng.normal(size=(dim, dim)))[0][:n_labels]
    bags, labels = {}, {}
    for b in range(n_bags):
        y = (rng.random(n_labels) < prevalence).astype(np.float32)
        x = rng.normal(size=(n_instances, dim)).astype(np.float32)
        for label in np.flatnonzero(y):
            if n_signal is None:
                rows = np.arange(n_instances)
            else:
                rows = rng.choice(n_instances, n_signal, replace=False)
            x[rows] += amplitude * directions[label]
        scan_id = f"scan-{b:04d}"
        slices = np.arange(n_instances) // n_windows
        bags[scan_id] = Bag(x, slices, np.arange(n_instances) % n_windows)
        labels[scan_id] = y
    return bags, labels
