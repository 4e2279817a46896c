"""``clear-bench evaluate``: the evaluation stages alone, on embeddings that already exist.

With a benchmark YAML, its encoders x tasks x heads are evaluated on the embedding cache (nothing is
extracted or pretrained). With ``--features [NAME=]DIR`` (repeatable) and ``--labels CSV``, folders in
the public CLEAR layout (``{id}.h5`` with dataset ``feats``) are evaluated on one task; the run folder
``--out`` then holds the same splits, folds, results and boards as a benchmark run's.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from clear_bench.config import SECTIONS
from clear_bench.errors import UserError
from clear_bench.schema import add_flags, given_flags

_PROTOCOL = SECTIONS["crossval"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "evaluate", help="cross-validate MIL heads on existing embeddings",
        description="Cross-validate MIL heads on embeddings that already exist: the cache of a benchmark "
                    "YAML, or folders of bags ({id}.h5 with dataset 'feats') and a label CSV.")
    parser.add_argument("config", nargs="?", type=Path,
                        help="benchmark YAML: evaluate its encoders x tasks x aggregators on the embedding "
                             "cache alone (nothing is extracted or pretrained); else use --features/--labels")
    parser.add_argument("--features", action="append", default=[], metavar="[NAME=]DIR",
                        help="folder of {id}.h5 files, one board row per folder (repeatable; NAME "
                             "defaults to the folder's name)")
    parser.add_argument("--baseline", action="append", default=[], metavar="NAME",
                        help="a --features NAME every other row is compared with (repeatable)")
    parser.add_argument("--labels", type=Path, metavar="CSV", help="CSV: image,label1,...")
    parser.add_argument("--out", type=Path, metavar="DIR", help="run folder to write")
    parser.add_argument("--task", help="task name on the board (default: the label CSV's stem)")
    parser.add_argument("--name", default="features", help="benchmark name on the board")
    parser.add_argument("--id-column", default="image", help="scan id column of the CSV (default: image)")
    parser.add_argument("--label-column", action="append", default=None, metavar="NAME",
                        help="label column (repeatable; default: every column but the id/patient ones)")
    parser.add_argument("--patient-column", default=None, help="column grouping scans of one patient")
    parser.add_argument("--label-type", default="auto",
                        choices=["auto", "binary", "multilabel", "multiclass"])
    parser.add_argument("--aggregator", action="append", default=None, metavar="NAME",
                        help="MIL head (repeatable; default: abmil)")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="aggregator option, applied to every aggregator that declares it")
    parser.add_argument("--device", default="cpu", help="device the heads train on (default: cpu)")
    add_flags(parser.add_argument_group("protocol (the crossval section of a benchmark YAML)"), _PROTOCOL,
              exclude=("tuning",))  # a nested grid: set it in a benchmark YAML
    return parser


def run(args: argparse.Namespace) -> int:
    from clear_bench import api

    if args.config is not None:
        result = api.evaluate(args.config, plugins=args.plugin)
    else:
        missing = [flag for flag in ("features", "labels", "out") if not getattr(args, flag)]
        if missing:
            raise UserError("evaluate needs a benchmark YAML, or all of --features, --labels and --out "
                            f"(missing: {', '.join('--' + m for m in missing)})")
        result = api.evaluate_features(
            dict(_named(item) for item in args.features), args.labels, args.out,
            aggregators=_aggregators(args), task=args.task, benchmark=args.name,
            crossval=given_flags(args, _PROTOCOL), device=args.device, id_column=args.id_column,
            label_columns=args.label_column, patient_column=args.patient_column, label_type=args.label_type,
            baselines=args.baseline, plugins=args.plugin)
        for path in result.boards:
            if path.name != "overall.md" and path.parent == args.out / "leaderboards":
                print(path.read_text())
    from clear_bench.commands.run import print_left_out

    print_left_out(result)
    return 0


def _named(item: str) -> tuple[str, Path]:
    name, sep, folder = item.partition("=")
    path = Path(folder if sep else name)
    return (name if sep else path.name), path


def _aggregators(args: argparse.Namespace) -> dict[str, dict]:
    """Each requested head with the ``--option`` pairs it declares; a pair no head declares is refused."""
    from clear_bench.registry import load_registry
    from clear_bench.schema import parse_assignments

    registry = load_registry(args.plugin)
    names = args.aggregator or ["abmil"]
    specs = {name: registry.aggregator(name) for name in names}
    keys = {item.split("=", 1)[0] for item in args.option}
    for key in sorted(keys):
        if not any(key in spec.options for spec in specs.values()):
            raise UserError(f"--option {key}: none of {', '.join(names)} has an option '{key}'")
    return {name: parse_assignments([i for i in args.option if i.split("=", 1)[0] in spec.options],
                                    spec.options, flag="--option", owner=f"aggregator '{name}'")
            for name, spec in specs.items()}
