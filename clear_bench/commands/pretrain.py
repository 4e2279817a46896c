"""``clear-bench pretrain NAME``: train an encoder with a registered pretrainer (works under torchrun)."""

from __future__ import annotations

import argparse

from clear_bench import commands
from clear_bench.registry import load_registry


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "pretrain", help="train an encoder (e.g. LeCL); run under torchrun for DDP",
        description="Train an encoder with a pretraining plugin. Each pretrainer has its own flags: "
                    "clear-bench pretrain NAME --help.")
    pretrainers = parser.add_subparsers(dest="pretrainer", metavar="NAME", required=True)
    registry = load_registry(commands.early_plugin_paths)
    for name, entry in sorted(registry.pretrainers.items()):
        sub = pretrainers.add_parser(name, help=entry.spec.description, description=entry.spec.description)
        entry.spec.add_arguments(sub)
        sub.set_defaults(pretrainer_run=entry.spec.run)
    return parser


def run(args: argparse.Namespace) -> int:
    checkpoint = args.pretrainer_run(args)
    if checkpoint is not None:
        print(f"encoder checkpoint: {checkpoint}")
    return 0

