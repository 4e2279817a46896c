"""Embedding extraction: scans -> windowed instances -> a frozen encoder in batches -> the embedding cache.

One module per job: :mod:`.device` (device, precision, rank, memory format), :mod:`.slice_plan` (what feeds an
encoder), :mod:`.instances` (the DataLoader workers' instance stream and batcher), :mod:`.loop`
(:func:`extract` and its report) and :mod:`.readback` (:func:`load_bags`).
"""

from clear_bench.data.scan import ScanFailure
from clear_bench.extraction.device import (
    Precision,
    cpu_has_native_bf16,
    encoder_precision,
    rank_and_world,
    resolve_device,
    resolve_precision,
)
from clear_bench.extraction.instances import make_instances, scan_location
from clear_bench.extraction.loop import ExtractionReport, extract
from clear_bench.extraction.readback import load_bags
from clear_bench.extraction.slice_plan import slice_plan_for

__all__ = [
    "ExtractionReport",
    "Precision",
    "ScanFailure",
    "cpu_has_native_bf16",
    "encoder_precision",
    "extract",
    "load_bags",
    "make_instances",
    "rank_and_world",
    "resolve_device",
    "resolve_precision",
    "scan_location",
    "slice_plan_for",
]
