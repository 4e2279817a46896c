"""The ``clear-bench`` command line: a thin dispatcher over :mod:`clear_bench.commands`."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from clear_bench import __version__, commands
from clear_bench.errors import UserError

COMMANDS = ("run", "extract", "evaluate", "pretrain", "plugins", "data")


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The full parser; ``argv`` lets commands whose flags come from plugins see ``--plugin`` early."""
    early = argparse.ArgumentParser(add_help=False)
    early.add_argument("--plugin", action="append", default=[])
    commands.early_plugin_paths = early.parse_known_args(list(argv))[0].plugin
    parser = argparse.ArgumentParser(
        prog="clear-bench",
        description="Benchmark CT slice-embedding encoders on clinical endpoints (CLEAR / LeCL).",
    )
    parser.add_argument("--version", action="version", version=f"clear-bench {__version__}")
    parser.add_argument("--plugin", action="append", default=[], metavar="PATH",
                        help="load a local plugin file or folder (repeatable)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"clear_bench.commands.{name}")
        sub = module.add_parser(subparsers)
        sub.set_defaults(handler=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        parser = build_parser(argv)
        args = parser.parse_args(argv)
        if not getattr(args, "handler", None):
            parser.print_help()
            return 2
        return int(args.handler(args) or 0)
    except UserError as exc:
        for line in exc.lines:
            print(f"error: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
