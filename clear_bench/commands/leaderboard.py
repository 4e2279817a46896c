"""``clear-bench leaderboard RUN_DIR``: every board, table and plot again, from a run folder's stored results.

Nothing is trained or extracted: the boards come from ``run.json`` and ``tasks/*/results`` (and the fold
files they name), exactly as the run rendered them, so the files are identical to the run's.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "leaderboard", help="regenerate a run folder's boards and plots from its stored results",
        description="Render every board, table (CSV, JSON) and plot (PNG) of a finished run folder from its "
                    "stored results alone, into RUN_DIR/leaderboards or --out.")
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="run folder, e.g. runs/all")
    parser.add_argument("--out", type=Path, action="append", default=None, metavar="DIR",
                        help="write the boards here instead of RUN_DIR/leaderboards (repeatable)")
    return parser


def run(args: argparse.Namespace) -> int:
    from clear_bench.pipeline.report import render_boards

    folders = args.out or [args.run_dir / "leaderboards"]
    for path in render_boards(args.run_dir, folders):
        print(f"leaderboard: {path}")
    return 0
