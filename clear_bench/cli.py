"""The ``clear-bench`` command line: a thin dispatcher over :mod:`clear_bench.commands`."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from clear_bench import __version__, commands
from clear_bench.errors import UserError

COMMANDS = ("run", "extract", "evaluate", "leaderboard", "pretrain", "plugins", "data", "check_encoder")


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
    _add_plugin_commands(subparsers)
    return parser


def _add_plugin_commands(subparsers: argparse._SubParsersAction) -> None:
    """Top-level commands from plugins (``clear_bench_commands`` hook with no ``parent``)."""

    for name, entry in sorted(commands.early_registry().commands.items()):
        spec = entry.spec
        if spec.parent is not None or name in COMMANDS:
            continue
        sub = subparsers.add_parser(name, help=spec.help, description=spec.help)
        spec.add_arguments(sub)
        sub.set_defaults(handler=spec.run)


class _StdoutHandler(logging.Handler):
    """Progress messages on the current ``sys.stdout`` (looked up per message, so redirection works)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            print(self.format(record), file=sys.stderr if record.levelno >= logging.WARNING else sys.stdout)
        except Exception:
            self.handleError(record)


def _from_plugin(record: logging.LogRecord) -> bool:
    """Records of plugin packages (``clear_bench_*``), whose loggers sit outside the ``clear_bench`` tree."""
    return record.name.startswith("clear_bench_")


def configure_logging() -> None:
    """The command line shows the library's INFO messages, and the plugins' warnings, as plain lines."""
    logger = logging.getLogger("clear_bench")
    if not any(isinstance(h, _StdoutHandler) for h in logger.handlers):
        handler = _StdoutHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    root = logging.getLogger()
    if not any(isinstance(h, _StdoutHandler) for h in root.handlers):
        plugins = _StdoutHandler(logging.WARNING)
        plugins.setFormatter(logging.Formatter("%(message)s"))
        plugins.addFilter(_from_plugin)
        root.addHandler(plugins)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    configure_logging()
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
