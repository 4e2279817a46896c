"""Reading extracted embeddings back from the cache as bags, for any machine and precision."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from clear_bench.cache import EmbeddingCache, encoder_description
from clear_bench.data.slices import SlicePlan
from clear_bench.errors import DataError
from clear_bench.evaluation.bags import Bag
from clear_bench.specs import Encoder, ScanSource


def load_bags(
    cache: EmbeddingCache,
    encoder: Encoder,
    plan: SlicePlan,
    source: ScanSource,
    scan_ids: Sequence[str],
    *,
    on_missing: Literal["raise", "skip"] = "raise",
) -> dict[str, Bag]:
    """The cached bags of ``scan_ids`` (float32), keyed by scan id, for ``encoder`` and ``plan``.

    The precision an entry was extracted at is recorded in its provenance, not in its key, so the bags are
    found whichever device or precision extracted them. A missing entry raises :class:`DataError` listing
    the scans (or is left out with ``on_missing="skip"``); non-finite embeddings raise :class:`DataError`
    naming the scan and the cache file.
    """
    desc = encoder_description(encoder)
    bags: dict[str, Bag] = {}
    missing: list[str] = []
    for scan_id in scan_ids:
        key = cache.key(desc, plan, scan_id, source.fingerprint(scan_id))
        entry = cache.get(key)
        if entry is None:
            missing.append(scan_id)
            continue
        embeddings = np.asarray(entry.embeddings, dtype=np.float32)
        if not np.isfinite(embeddings).all():
            bad = int((~np.isfinite(embeddings)).any(axis=1).sum())
            raise DataError(f"scan '{scan_id}': {bad} of {len(embeddings)} embeddings of encoder "
                            f"'{encoder.label}' are NaN or infinite (cache file {entry.path})")
        bags[scan_id] = Bag(embeddings, entry.slice_index, entry.window_id)
    if missing and on_missing == "raise":
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise DataError(f"no cached embeddings of encoder '{encoder.label}' for {len(missing)} scan(s): "
                        f"{shown}; run `clear-bench extract` first (cache: {cache.root})")
    return bags
