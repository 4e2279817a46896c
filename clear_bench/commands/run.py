"""``clear-bench run BENCHMARK.yaml``: every encoder x task x aggregator, ending in leaderboards."""

from __future__ import annotations

import argparse
import sys

from clear_bench.config import load_benchmark, plugin_paths_of
from clear_bench.registry import load_registry


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("run", help="run a benchmark YAML end to end",
                                   description="Extract embeddings, cross-validate every head, write "
                                               "leaderboards. Resumable: finished work is reused.")
    parser.add_argument("config", help="benchmark YAML, e.g. benchmarks/all.yaml")
    parser.add_argument("--check", action="store_true", help="validate the YAML and the plugins, then stop")
    return parser


def run(args: argparse.Namespace) -> int:
    registry = load_registry([*plugin_paths_of(args.config), *args.plugin])
    config = load_benchmark(args.config, registry=registry)
    if args.check:
        print(f"{args.config}: OK ({len(config.encoders)} encoders x {len(config.tasks)} tasks x "
              f"{len(config.aggregators)} aggregators)")
        return 0
    print("clear-bench run: the end-to-end pipeline is not implemented yet; "
          "`--check` validates the benchmark.", file=sys.stderr)
    return 1
