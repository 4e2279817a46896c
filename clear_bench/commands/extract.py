"""``clear-bench extract``: embed scans into the cache, for a benchmark YAML or one encoder x one source.

With a YAML, every encoder is run on the labelled scans of every task; with flags, one encoder
(``--encoder NAME --option k=v``) on one source (``--source NAME --source-option k=v``). Works under
``torchrun`` (each rank extracts its share). Exit code 1 when some scans failed (the others are cached).
"""

from __future__ import annotations

import argparse
import gc
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from clear_bench.cache import EmbeddingCache, export_clear, safe_filename
from clear_bench.errors import ConfigError
from clear_bench.extraction import ExtractionReport, build_encoder, extract, rank_and_world, slice_plan_for
from clear_bench.registry import Registry, load_registry
from clear_bench.specs import Encoder, Options, ScanSource, resolve_options


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "extract", help="embed scans into the embedding cache",
        description="Embed CT scans with frozen encoders into the content-addressed embedding cache. "
                    "Give a benchmark YAML (every encoder x every task's scans), or one encoder and one "
                    "source with flags. Cached scans are skipped; an interrupted run resumes.")
    parser.add_argument("config", nargs="?", help="benchmark YAML (e.g. benchmarks/all.yaml)")
    parser.add_argument("--encoder", metavar="NAME", help="registered encoder (instead of a YAML)")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="encoder option; VALUE is read as YAML (repeatable)")
    parser.add_argument("--source", metavar="NAME", help="registered scan source (instead of a YAML)")
    parser.add_argument("--source-option", action="append", default=[], metavar="KEY=VALUE",
                        help="source option; VALUE is read as YAML (repeatable)")
    parser.add_argument("--scan", action="append", default=[], metavar="ID",
                        help="only this scan id (repeatable; default: every scan)")
    parser.add_argument("--cache-dir", metavar="DIR", help="embedding cache folder (default: the YAML's, "
                                                            "else the user cache folder)")
    parser.add_argument("--batch-size", type=int, help="slices per forward pass (default 64)")
    parser.add_argument("--num-workers", type=int, help="DataLoader workers reading scans (default 2)")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), help="autocast precision")
    parser.add_argument("--device", help="auto, cpu, cuda or cuda:N (default: the YAML's, else auto)")
    parser.add_argument("--windows", metavar="W[,W...]",
                        help="HU windows, comma-separated presets or W<width>L<level> "
                             "(default soft-tissue,lung,bone)")
    parser.add_argument("--window-mode", choices=("per-window", "stacked"))
    parser.add_argument("--slice-step", type=int, help="use every k-th slice")
    parser.add_argument("--slice-spacing-mm", type=float, help="select slices this far apart")
    parser.add_argument("--image-size", type=int, help="input size (default: the encoder's)")
    parser.add_argument("--storage-dtype", choices=("float32", "float16"), default="float32",
                        help="dtype of cached embeddings (default float32)")
    parser.add_argument("--force", action="store_true", help="recompute entries that are already cached")
    parser.add_argument("--export-clear", metavar="DIR",
                        help="also write DIR/<encoder>/{scan_id}.h5 with dataset 'feats' "
                             "(the public CLEAR layout)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def run(args: argparse.Namespace) -> int:
    local_plugins = list(getattr(args, "plugin", []) or [])
    if args.config and (args.encoder or args.source):
        raise ConfigError("give either a benchmark YAML or --encoder/--source, not both")
    if args.config:
        jobs, settings = _jobs_from_config(args, local_plugins)
    elif args.encoder and args.source:
        jobs, settings = _jobs_from_flags(args, local_plugins)
    else:
        raise ConfigError("nothing to extract: give a benchmark YAML, or --encoder NAME and --source NAME")

    cache = EmbeddingCache(settings["cache_dir"], storage_dtype=args.storage_dtype)
    failed = 0
    rank, world = rank_and_world()
    for encoder_id, make_encoder, plan_options, sources in jobs:
        encoder = make_encoder()
        plan = slice_plan_for(encoder, **plan_options)
        for source_id, source, scan_ids in sources:
            report = extract(encoder, source, scan_ids, plan, cache, batch_size=settings["batch_size"],
                             num_workers=settings["num_workers"], precision=settings["precision"],
                             device=settings["device"], progress=not args.no_progress, force=args.force)
            print(f"[{source_id}] {report.summary()}")
            failed += len(report.failed)
            if args.export_clear:
                _export(cache, report, Path(args.export_clear) / safe_filename(encoder_id), rank, world)
        del encoder
        gc.collect()
    print(f"cache: {cache.root}")
    return 1 if failed else 0


def _export(cache: EmbeddingCache, report: ExtractionReport, folder: Path, rank: int, world: int) -> None:
    entries = {}
    for scan_id, key in report.keys.items():
        entry = cache.get(key)
        if entry is not None:
            entries[scan_id] = entry
    index = "index.csv" if world == 1 else f"index-rank{rank}.csv"
    written = export_clear(entries, folder, index_name=index)
    print(f"exported {len(written)} scan(s) in the CLEAR layout to {folder}")


Job = tuple[str, Any, dict[str, Any], list[tuple[str, ScanSource, list[str]]]]


def _settings(args: argparse.Namespace, defaults: Mapping[str, Any]) -> dict[str, Any]:
    chosen = dict(defaults)
    for name in ("batch_size", "num_workers", "precision", "device"):
        if getattr(args, name) is not None:
            chosen[name] = getattr(args, name)
    if args.cache_dir:
        chosen["cache_dir"] = Path(args.cache_dir).expanduser()
    return chosen


def _plan_options(args: argparse.Namespace, defaults: Mapping[str, Any]) -> dict[str, Any]:
    options = dict(defaults)
    if args.windows:
        options["windows"] = tuple(w.strip() for w in args.windows.split(",") if w.strip())
    for name in ("window_mode", "slice_step", "slice_spacing_mm", "image_size"):
        if getattr(args, name) is not None:
            options[name] = getattr(args, name)
    return options


def _jobs_from_flags(args: argparse.Namespace, local_plugins: list[str]) -> tuple[list[Job], dict[str, Any]]:
    from clear_bench.config import default_cache_dir

    registry = load_registry(local_plugins)
    encoder_spec = registry.encoder(args.encoder)
    source_spec = registry.source(args.source)
    encoder_options = _parse_pairs(args.option, "--option", encoder_spec.options, f"encoder '{args.encoder}'")
    source_options = _parse_pairs(args.source_option, "--source-option", source_spec.options,
                                  f"source '{args.source}'")
    source = source_spec.build(resolve_options(source_spec.options, source_options))
    scan_ids = _select(source.scan_ids(), args.scan, f"source '{args.source}'")
    settings = _settings(args, {"batch_size": 64, "num_workers": 2, "precision": "auto", "device": "auto",
                                "cache_dir": default_cache_dir() / "embeddings"})

    def make() -> Encoder:
        return build_encoder(encoder_spec, encoder_options)

    return [(args.encoder, make, _plan_options(args, {}), [(args.source, source, scan_ids)])], settings


def _jobs_from_config(args: argparse.Namespace, local_plugins: list[str]) -> tuple[list[Job], dict[str, Any]]:
    from clear_bench.config import load_benchmark_with_plugins

    config, registry = load_benchmark_with_plugins(args.config, local_plugins)
    sources = []
    for task_ref in config.tasks:
        spec = registry.task(task_ref.name)
        data = spec.load(resolve_options(spec.options, task_ref.options))
        labelled = [scan_id for scan_id in data.source.scan_ids() if scan_id in data.labels]
        sources.append((task_ref.id, data.source, _select(labelled, args.scan, f"task '{task_ref.id}'")))
    prep = config.preprocessing
    plan_defaults = {"windows": tuple(prep.windows), "window_mode": prep.window_mode,
                     "slice_step": prep.slice_step, "slice_spacing_mm": prep.slice_spacing_mm,
                     "image_size": prep.image_size}
    ext = config.extraction
    settings = _settings(args, {"batch_size": ext.batch_size, "num_workers": ext.num_workers,
                                "precision": ext.precision, "device": config.device,
                                "cache_dir": config.cache_dir})
    jobs: list[Job] = []
    for ref in config.encoders:
        def make(ref: Any = ref, registry: Registry = registry) -> Encoder:
            if ref.pretrain is not None:  # the same checkpoint `run` trains (or reuses) for this entry
                from clear_bench.pipeline import resolve_pretrained

                ref = resolve_pretrained(ref, registry, config.checkpoint_dir, print)
            return build_encoder(registry.encoder(ref.name), ref.options)

        jobs.append((ref.id, make, _plan_options(args, plan_defaults), sources))
    return jobs, settings


def _select(scan_ids: Sequence[str], wanted: Sequence[str], where: str) -> list[str]:
    if not wanted:
        return list(scan_ids)
    unknown = [scan_id for scan_id in wanted if scan_id not in set(scan_ids)]
    if unknown:
        raise ConfigError(f"--scan: {where} has no scan(s) {', '.join(unknown)}")
    return [scan_id for scan_id in scan_ids if scan_id in set(wanted)]


def _parse_pairs(pairs: Sequence[str], flag: str, declared: Options, owner: str) -> dict[str, Any]:
    """``KEY=VALUE`` flags to an options dict; values are YAML scalars/lists (``depth=2``, ``w=[1,2]``)."""
    values: dict[str, Any] = {}
    problems: list[str] = []
    for pair in pairs:
        match = re.fullmatch(r"([A-Za-z_][\w-]*)=(.*)", pair, flags=re.S)
        if not match:
            problems.append(f"{flag} {pair!r}: expected KEY=VALUE")
            continue
        key, text = match.groups()
        try:
            value = yaml.safe_load(text) if text else None
        except yaml.YAMLError:
            value = text
        if key not in declared:
            expected = ", ".join(declared) or "no options"
            problems.append(f"{flag} {key}: unknown option of {owner}; expected: {expected}")
            continue
        option = declared[key]
        types = option.type if isinstance(option.type, tuple) else (option.type,)
        if option.type is Path:  # relative to the working directory, like any command-line path
            if not text:
                values[key] = None
            elif not Path(text).expanduser().exists():
                problems.append(f"{flag} {key}={text}: file not found: {Path(text).expanduser().resolve()}")
            else:
                values[key] = str(Path(text).expanduser().resolve())
            continue
        if str in types and not _matches(value, types):
            value = text  # e.g. arch=123 for a str option
        if value is not None and not _matches(value, types):
            problems.append(f"{flag} {key}={text}: expected {option.type_name()}")
            continue
        if option.choices is not None and value not in option.choices:
            problems.append(f"{flag} {key}={text}: expected one of {', '.join(map(str, option.choices))}")
            continue
        values[key] = value
    if problems:
        raise ConfigError(problems[0], lines=problems)
    return values


def _matches(value: Any, types: tuple[type, ...]) -> bool:
    if isinstance(value, bool) and bool not in types:
        return False
    return isinstance(value, types) or (float in types and isinstance(value, int))
