"""``clear-bench run BENCHMARK.yaml``: every encoder x task x aggregator, ending in leaderboards."""

from __future__ import annotations

import argparse
import sys

from clear_bench.config import load_benchmark_with_plugins


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("run", help="run a benchmark YAML end to end",
                                   description="Extract embeddings, cross-validate every head, write "
                                               "leaderboards. Resumable: finished work is reused.")
    parser.add_argument("config", help="benchmark YAML, e.g. benchmarks/all.yaml")
    parser.add_argument("--check", action="store_true", help="validate the YAML and the plugins, then stop")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (logs only)")
    return parser


def run(args: argparse.Namespace) -> int:
    from clear_bench import api  # torch-heavy: only when really running

    config, registry = load_benchmark_with_plugins(args.config, args.plugin)
    if args.check:
        print(f"{args.config}: OK ({len(config.encoders)} encoders x {len(config.tasks)} tasks x "
              f"{len(config.aggregators)} aggregators)")
        return 0
    result = api.run(config, registry=registry, progress=not args.no_progress)
    print_left_out(result)
    return 0


def print_left_out(result) -> None:
    """What a run could not include: encoders left out, then the scans left out of each task because their
    extraction failed for some encoder (the boards list both)."""
    for item in result.left_out:
        print(f"left out: {item}", file=sys.stderr)
    scans = {task.board.task: len(task.board.excluded) for task in result.tasks if task.board.excluded}
    if scans or result.failures:
        where = ", ".join(f"{n} of {task}" for task, n in scans.items()) or "none evaluated"
        print(f"{sum(scans.values())} scan(s) left out of their task ({where}): {len(result.failures)} scan "
              f"extraction(s) failed (see {result.run_dir / 'run.json'}):", file=sys.stderr)
        for failure in result.failures[:20]:
            print(f"  - {failure}", file=sys.stderr)
        if len(result.failures) > 20:
            print(f"  ... and {len(result.failures) - 20} more", file=sys.stderr)
