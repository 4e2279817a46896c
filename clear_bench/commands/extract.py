"""``clear-bench extract``: embed scans into the cache, for a benchmark YAML or one encoder x one source.

With a YAML, every encoder is run on the labelled scans of every task; with flags, one encoder
(``--encoder NAME --option k=v``) on one source (``--source NAME --source-option k=v``). Works under
``torchrun`` (each rank extracts its share). Exit code 1 when some scans failed (the others are cached).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clear_bench.config import SECTIONS, default_cache_dir, load_benchmark_with_plugins
from clear_bench.errors import ConfigError
from clear_bench.naming import safe_filename
from clear_bench.registry import load_registry
from clear_bench.schema import add_flags, given_flags, parse_assignments, resolve_options

if TYPE_CHECKING:  # torch-heavy: imported when extracting, not when the command line is built
    from clear_bench.cache import EmbeddingCache
    from clear_bench.extraction import ExtractionReport

_PLAN_FLAGS = SECTIONS["preprocessing"]


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
    parser.add_argument("--device", help="auto, cpu, cuda or cuda:N (default: the YAML's, else auto)")
    add_flags(parser.add_argument_group("extraction (the YAML's extraction section)"), SECTIONS["extraction"])
    add_flags(parser.add_argument_group("slices (the YAML's preprocessing section)"), _PLAN_FLAGS)
    parser.add_argument("--storage-dtype", choices=("float32", "float16"), default="float32",
                        help="dtype of cached embeddings (default float32)")
    parser.add_argument("--force", action="store_true", help="recompute entries that are already cached")
    parser.add_argument("--export-clear", metavar="DIR",
                        help="also write DIR/<encoder>/{scan_id}.h5 with dataset 'feats' "
                             "(the public CLEAR layout)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def run(args: argparse.Namespace) -> int:
    if args.config and (args.encoder or args.source):
        raise ConfigError("give either a benchmark YAML or --encoder/--source, not both")
    if args.config:
        reports = _extract_benchmark(args)
    elif args.encoder and args.source:
        reports = _extract_one(args)
    else:
        raise ConfigError("nothing to extract: give a benchmark YAML, or --encoder NAME and --source NAME")
    return 1 if any(report.failed for _, _, report in reports) else 0


def _extract_benchmark(args: argparse.Namespace) -> list[tuple[str, str, ExtractionReport]]:
    """Every encoder of the YAML on the labelled scans of every task: the run's extract stage."""
    from clear_bench.cache import EmbeddingCache
    from clear_bench.extraction import resolve_device
    from clear_bench.pipeline.extract import extract_embeddings
    from clear_bench.pipeline.plan import plan_run

    config, registry = load_benchmark_with_plugins(args.config, args.plugin)
    config = replace(
        config, cache_dir=Path(args.cache_dir).expanduser() if args.cache_dir else config.cache_dir,
        extraction=replace(config.extraction, **given_flags(args, SECTIONS["extraction"])),
        preprocessing=replace(config.preprocessing, **_tuple_windows(given_flags(args, _PLAN_FLAGS))))
    cache = EmbeddingCache(config.cache_dir, storage_dtype=args.storage_dtype)
    plan = plan_run(config, registry, references=False)
    device = str(resolve_device(args.device or config.device))
    extraction = extract_embeddings(plan, cache, device, progress=not args.no_progress, force=args.force,
                                    select=lambda task, ids: _select(ids, args.scan, f"task '{task}'"))
    for item in extraction.left_out:
        print(f"left out: {item}")
    if args.export_clear:
        references = {r.id for r in extraction.records if r.planned.spec.reference}
        for encoder_id, _, report in extraction.reports:
            _export(cache, report, Path(args.export_clear) / safe_filename(encoder_id),
                    reference=encoder_id in references)
    print(f"cache: {cache.root}")
    return extraction.reports


def _extract_one(args: argparse.Namespace) -> list[tuple[str, str, ExtractionReport]]:
    """One encoder on one source, both given with flags."""
    from clear_bench.cache import EmbeddingCache
    from clear_bench.components import build_component, build_encoder
    from clear_bench.extraction import extract, resolve_device, slice_plan_for

    registry = load_registry(args.plugin)
    encoder_spec = registry.encoder(args.encoder)
    source_spec = registry.source(args.source)
    encoder_options = parse_assignments(args.option, encoder_spec.options, flag="--option",
                                        owner=f"encoder '{args.encoder}'")
    source_options = parse_assignments(args.source_option, source_spec.options, flag="--source-option",
                                       owner=f"source '{args.source}'")
    source = build_component(registry, "sources", args.source, source_options)
    scan_ids = _select(source.scan_ids(), args.scan, f"source '{args.source}'")
    settings = resolve_options(SECTIONS["extraction"], given_flags(args, SECTIONS["extraction"]))
    prep = resolve_options(_PLAN_FLAGS, _tuple_windows(given_flags(args, _PLAN_FLAGS)))
    cache = EmbeddingCache(Path(args.cache_dir).expanduser() if args.cache_dir
                           else default_cache_dir() / "embeddings", storage_dtype=args.storage_dtype)
    encoder = build_encoder(encoder_spec, encoder_options)
    plan = slice_plan_for(encoder, **prep)
    report = extract(encoder, source, scan_ids, plan, cache, batch_size=settings["batch_size"],
                     num_workers=settings["num_workers"], precision=settings["precision"],
                     device=str(resolve_device(args.device or "auto")), progress=not args.no_progress,
                     force=args.force)
    print(f"[{args.source}] {report.summary()}")
    if args.export_clear:
        _export(cache, report, Path(args.export_clear) / safe_filename(args.encoder),
                reference=encoder_spec.reference)
    print(f"cache: {cache.root}")
    return [(args.encoder, args.source, report)]


def _export(cache: EmbeddingCache, report: ExtractionReport, folder: Path, *, reference: bool) -> None:
    from clear_bench.cache import export_clear
    from clear_bench.extraction import rank_and_world

    rank, world = rank_and_world()
    entries = {}
    for scan_id, key in report.keys.items():
        entry = cache.get(key)
        if entry is not None:
            entries[scan_id] = entry
    index = "index.csv" if world == 1 else f"index-rank{rank}.csv"
    written = export_clear(entries, folder, index_name=index, reference=reference)
    print(f"exported {len(written)} scan(s) in the CLEAR layout to {folder}")


def _tuple_windows(values: dict[str, Any]) -> dict[str, Any]:
    if "windows" in values:
        values["windows"] = tuple(values["windows"])
    return values


def _select(scan_ids: Sequence[str], wanted: Sequence[str], where: str) -> list[str]:
    if not wanted:
        return list(scan_ids)
    unknown = [scan_id for scan_id in wanted if scan_id not in set(scan_ids)]
    if unknown:
        raise ConfigError(f"--scan: {where} has no scan(s) {', '.join(unknown)}")
    return [scan_id for scan_id in scan_ids if scan_id in set(wanted)]
