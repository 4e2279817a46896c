"""Voxel checks every reader applies: the rule for NaN / infinite voxels, and the plausible HU range.

The rule: a volume with any NaN or infinite voxel is refused. Its read fails with a :class:`DataError`
naming the file and the counts (NaN, +inf, -inf, of how many voxels), so a run leaves that scan out and
its board says why. No value is filled in: whether a NaN means air outside the field of view, a failed
resampling or a broken export cannot be told from the file, and any guess would change the embedding.

HU values outside :data:`PLAUSIBLE_HU` (padding outside the field of view at -2048 or -3024, metal, or
values that are not HU at all) are kept as they are (windowing clips them) and reported once per scan: a
log warning and a line in ``Scan.notes``.
"""

from __future__ import annotations

import logging

import numpy as np

from clear_bench.data.scan import Scan
from clear_bench.errors import DataError

log = logging.getLogger(__name__)

PLAUSIBLE_HU: tuple[float, float] = (-1200.0, 4000.0)
"""HU values a CT body scan holds: air is -1000, cortical bone up to about 2000, dense metal beyond."""


def check_finite(volume: np.ndarray, where: object) -> None:
    """Refuse a volume holding NaN or infinite voxels: a :class:`DataError` naming ``where`` (the file)
    and the counts."""
    finite = np.isfinite(volume)
    if finite.all():
        return
    nan = int(np.isnan(volume).sum())
    pos = int(np.isposinf(volume).sum())
    neg = int(np.isneginf(volume).sum())
    counts = ", ".join(f"{n} {name}" for n, name in ((nan, "NaN"), (pos, "+inf"), (neg, "-inf")) if n)
    raise DataError(f"{where}: {counts} voxel(s) of {volume.size}; a volume with non-finite values is "
                    "refused (see docs/datasets.md, 'Voxel values')")


def report_hu_range(scan: Scan, where: object) -> None:
    """Note once on ``scan`` (and log) how many voxels lie outside :data:`PLAUSIBLE_HU`, with the range
    found; pre-windowed scans are not HU and are not checked."""
    if scan.prewindowed or scan.volume.size == 0:
        return
    lo, hi = PLAUSIBLE_HU
    outside = int(np.count_nonzero((scan.volume < lo) | (scan.volume > hi)))
    if not outside:
        return
    note = (f"{outside} voxel(s) outside the plausible HU range {lo:.0f}..{hi:.0f} (found "
            f"{float(scan.volume.min()):.0f}..{float(scan.volume.max()):.0f}); kept, windowing clips them")
    scan.notes.append(note)
    log.warning("%s (%s): %s", scan.scan_id, where, note)
