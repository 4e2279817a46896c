"""The dataset sources this plugin registers (through its ``clear_bench_sources`` hook).

A task's ``source`` option names one of them, or a source of any other plugin (a ``--plugin`` file
included); the core builds it from its registry and the task receives the built :class:`ScanSource`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from clear_bench.specs import Option, ScanSource, SourceSpec, resolve_options

_SYNTHETIC_OPTIONS: dict[str, Option] = {
    "patients": Option(int, 100, "number of patients"),
    "slices": Option(int, 30, "slices per scan at the thinnest site (others are thicker)"),
    "matrix": Option(int, 112, "in-plane pixels (square)"),
    "seed": Option(int, 0, "cohort seed; patient i depends only on (seed, i, parameters)"),
    "preset": Option(str, "default", "difficulty preset", choices=("easy", "default", "hard")),
    "sites": Option(int, 3, "simulated scanner sites (noise, slice thickness, field of view)"),
    "cache": Option(bool, True, "keep rendered volumes as .npz in the cache folder"),
    "cache_dir": Option(Path, None, "where to cache volumes (default: <user cache>/synthetic)",
                        must_exist=False),
}


def build_synthetic(options: Mapping[str, Any]) -> ScanSource:
    from clear_bench.config import default_cache_dir
    from clear_bench_ct_tasks.synthetic.config import CohortConfig
    from clear_bench_ct_tasks.synthetic.source import SyntheticSource

    values = resolve_options(_SYNTHETIC_OPTIONS, options)
    config = CohortConfig.from_options(values)
    cache_dir = None
    if values["cache"]:
        cache_dir = values["cache_dir"] or default_cache_dir() / "synthetic"
    return SyntheticSource(config, cache_dir)


def source_specs() -> list[SourceSpec]:
    """Every source of this plugin (the file sources' module is imported here, not at plugin load)."""
    from clear_bench_ct_tasks import filesources as fs

    return [
        SourceSpec("synthetic", build_synthetic,
                   "procedural CT cohort with inserted lesions, lung disease and stage (seeded)",
                   options=_SYNTHETIC_OPTIONS),
        SourceSpec("folder", fs.build_folder, "a folder of NIfTI / NRRD / MHA files and DICOM patient "
                   "exports (CT series; RTSTRUCT, SEG or mask lesion boxes)", options=fs.FOLDER_OPTIONS),
        SourceSpec("seed-png", fs.build_seed_png, "CLEAR seed layout: a folder of pre-windowed PNG "
                   "slices per patient, optional lesion CSV", options=fs.SEED_OPTIONS),
        SourceSpec("deeplesion", fs.build_deeplesion, "DeepLesion Images_png + DL_info.csv (key-slice "
                   "boxes, 8 coarse lesion types)", options=fs.DEEPLESION_OPTIONS),
        SourceSpec("samples", fs.build_samples, "public sample CTs from pinned PyPI sdists "
                   "(TotalSegmentator, pyradiomics), lung tumour masks as boxes",
                   options=fs.SAMPLES_OPTIONS),
    ]
