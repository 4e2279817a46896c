"""``clear-bench plugins``: every registered component with its provider."""

from __future__ import annotations

import argparse

from clear_bench.errors import ConfigError
from clear_bench.registry import KINDS, Registered, load_registry
from clear_bench.schema import suggest
from clear_bench.specs import EncoderSpec


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("plugins",
                                   help="list every encoder, task, source, head, metric, pretrainer, command",
                                   description="List every registered component and where it comes from.")
    parser.add_argument("--kind", choices=KINDS, help="only this kind")
    parser.add_argument("--measure", action="store_true",
                        help="build each encoder's default architecture with random weights and measure its "
                             "embedding dim (seconds per encoder; no weights are loaded)")
    parser.add_argument("names", nargs="*", metavar="NAME", help="only these components (default: all)")
    return parser


def run(args: argparse.Namespace) -> int:
    registry = load_registry(args.plugin)
    kinds = (args.kind,) if args.kind else KINDS
    known = {name for kind in kinds for name in registry.of_kind(kind)}
    unknown = [name for name in args.names if name not in known]
    if unknown:
        raise ConfigError(f"plugins: no component named {', '.join(map(repr, unknown))}"
                          f"{suggest(unknown[0], known)}")
    for kind in kinds:
        table = {name: entry for name, entry in registry.of_kind(kind).items()
                 if not args.names or name in args.names}
        if args.names and not table:
            continue
        print(f"\n{kind} ({len(table)})")
        rows = [_row(kind, name, entry, measure=args.measure) for name, entry in sorted(table.items())]
        headers = ["name", "provider", "version", *(_EXTRA.get(kind, ())), "description"]
        print(format_table(headers, rows))
    if registry.failures:
        print("\nplugins that failed to load:")
        for failure in registry.failures:
            print(f"  - {failure}")
    return 0


_EXTRA = {"encoders": ("input", "embed dim", "weights"), "tasks": ("labels", "metric"),
          "metrics": ("applies to", "better"), "commands": ("command",)}


def _row(kind: str, name: str, entry: Registered, *, measure: bool = False) -> list[str]:
    spec, provider = entry.spec, entry.provider
    extra: list[str] = []
    if kind == "encoders":
        dim = str(spec.embed_dim) if spec.embed_dim else (_measured_dim(spec) if measure else "from model")
        extra = [spec.input_kind, dim, spec.weights_source or "-"]
    elif kind == "tasks":
        extra = [spec.label_type, spec.metric]
    elif kind == "metrics":
        extra = [", ".join(spec.label_types), "higher" if spec.higher_is_better else "lower"]
    elif kind == "commands":
        extra = [f"clear-bench {spec.parent + ' ' if spec.parent else ''}{spec.name}"]
        return [name, provider.distribution, provider.version, *extra, spec.help]
    return [name, provider.distribution, provider.version, *extra, spec.description]


def format_table(headers: list[str], rows: list[list[str]]) -> str:
    """A plain aligned text table."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=False)]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
             for row in [headers, ["-" * w for w in widths], *rows]]
    return "\n".join("  " + line for line in lines)


def _measured_dim(spec: EncoderSpec) -> str:
    """The embedding dim of the default architecture, measured on a random-init build (never a table)."""
    from clear_bench.components import build_encoder

    options = {"weights": "random"} if "weights" in spec.options else {}
    try:
        return f"{build_encoder(spec, options).embed_dim} (default arch)"
    except Exception as error:  # a plugin that cannot build without weights still gets listed
        return f"? ({type(error).__name__})"
