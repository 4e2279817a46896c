"""The dataset sources this plugin registers, and how a task option ``source:`` becomes a ScanSource.

``source`` is a name (``synthetic``) or a mapping ``{name: folder, root: /data/ct, ...}`` whose other keys
are that source's options. A name this plugin does not know is looked up among every installed plugin.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from clear_bench.errors import ConfigError
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


SOURCE_SPECS: dict[str, SourceSpec] = {}
_BUILDERS: dict[str, Callable[[Mapping[str, Any]], ScanSource]] = {}


def _register(spec: SourceSpec) -> None:
    SOURCE_SPECS[spec.name] = spec
    _BUILDERS[spec.name] = spec.build


_register(SourceSpec("synthetic", build_synthetic,
                     "procedural CT cohort with inserted lesions, lung disease and stage (seeded)",
                     options=_SYNTHETIC_OPTIONS))


def _file_sources() -> None:
    from clear_bench_ct_tasks import filesources as fs

    _register(SourceSpec("folder", fs.build_folder, "a folder of NIfTI / NRRD / MHA files and DICOM series, "
                         "optional lesion masks", options=fs.FOLDER_OPTIONS))
    _register(SourceSpec("seed-png", fs.build_seed_png, "CLEAR seed layout: a folder of pre-windowed PNG "
                         "slices per patient, optional lesion CSV", options=fs.SEED_OPTIONS))
    _register(SourceSpec("deeplesion", fs.build_deeplesion, "DeepLesion Images_png + DL_info.csv (key-slice "
                         "boxes, 8 coarse lesion types)", options=fs.DEEPLESION_OPTIONS))
    _register(SourceSpec("samples", fs.build_samples, "public sample CTs from pinned PyPI sdists "
                         "(TotalSegmentator, pyradiomics), lung tumour masks as boxes",
                         options=fs.SAMPLES_OPTIONS))


_file_sources()


def split_source_option(value: str | Mapping[str, Any] | None, default: str = "synthetic"
                        ) -> tuple[str, dict[str, Any]]:
    """``(name, options)`` of a task's ``source`` option."""
    if value is None:
        return default, {}
    if isinstance(value, str):
        return value, {}
    if isinstance(value, Mapping):
        if "name" not in value or not isinstance(value["name"], str):
            raise ConfigError(f"source {dict(value)!r}: a mapping needs 'name' (e.g. synthetic, folder)")
        return value["name"], {k: v for k, v in value.items() if k != "name"}
    raise ConfigError(f"source {value!r}: expected a source name or a mapping with 'name'")


def resolve_source(value: str | Mapping[str, Any] | None, default: str = "synthetic") -> ScanSource:
    """Build the source named by a task's ``source`` option, checking its options."""
    name, options = split_source_option(value, default)
    if name in SOURCE_SPECS:
        spec = SOURCE_SPECS[name]
    else:
        from clear_bench.registry import load_registry

        spec = load_registry().source(name)
    unknown = sorted(set(options) - set(spec.options)) if spec.options else []
    if unknown:
        raise ConfigError(f"source '{name}': unknown option(s) {', '.join(unknown)} "
                          f"(known: {', '.join(spec.options) or 'none'})")
    for key, option in spec.options.items():
        if option.required and options.get(key) is None:
            raise ConfigError(f"source '{name}': option '{key}' is required ({option.help})")
    return spec.build(options)
