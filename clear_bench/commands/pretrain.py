"""``clear-bench pretrain NAME``: train an encoder with a registered pretrainer (works under torchrun).

Every pretrainer gets ``--config FILE`` (required unless the pretrainer says it can do without, e.g. from
flags alone), ``--output-dir DIR`` and ``--resume [STATE]``; its declared options become further flags
(``--epochs 3``), checked by the one option schema and passed to its ``run``. A boolean flag given alone
means true (``--moco-m-cos``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from clear_bench import commands
from clear_bench.schema import add_flags, given_flags

_CORE_FLAGS = ("config", "output_dir", "resume")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "pretrain", help="train an encoder (e.g. LeCL); run under torchrun for DDP",
        description="Train an encoder with a pretraining plugin. Each pretrainer has its own flags: "
                    "clear-bench pretrain NAME --help.")
    pretrainers = parser.add_subparsers(dest="pretrainer", metavar="NAME", required=True)
    registry = commands.early_registry()
    for name, entry in sorted(registry.pretrainers.items()):
        spec = entry.spec
        sub = pretrainers.add_parser(name, help=spec.description, description=spec.description)
        sub.add_argument("--config", type=Path, metavar="FILE", required=spec.config_required,
                         help="the pretraining recipe (YAML)" if spec.config_required else
                         "the pretraining recipe (YAML); optional: see this pretrainer's flags")
        sub.add_argument("--output-dir", type=Path, metavar="DIR",
                         help="run folder (default: the recipe's)")
        sub.add_argument("--resume", nargs="?", const=True, default=False, metavar="STATE",
                         help="continue from a training-state checkpoint (default: the newest in the "
                              "output folder)")
        add_flags(sub, spec.options, exclude=_CORE_FLAGS)
        _bare_switches(sub, [key for key, option in spec.options.items() if option.types() == (bool,)])
        sub.set_defaults(pretrainer_spec=spec)
    return parser


def _bare_switches(parser: argparse.ArgumentParser, dests: list[str]) -> None:
    """Let the boolean flags of ``dests`` stand alone as switches (``--flag`` = ``--flag true``)."""
    for action in parser._actions:
        if action.dest in dests and action.option_strings:
            action.nargs, action.const = "?", True


def run(args: argparse.Namespace) -> int:
    spec = args.pretrainer_spec
    declared = {k: v for k, v in spec.options.items() if k not in _CORE_FLAGS}
    resume = Path(args.resume) if isinstance(args.resume, str) else bool(args.resume)
    checkpoint = spec.run(args.config, args.output_dir, resume=resume, options=given_flags(args, declared))
    if checkpoint is not None:
        print(f"encoder checkpoint: {checkpoint}")
    return 0
