"""``clear-bench check-encoder NAME``: does an encoder conform? (see :mod:`clear_bench.conformance`).

Builds the encoder with its ``--option`` values, embeds real CT slices (the public sample CT, or ``--scan``)
and prints one PASS / FAIL line per property. Exit code 0 when every property holds, 1 otherwise.
"""

from __future__ import annotations

import argparse

from clear_bench.conformance import ATOL, DEFAULT_SAMPLE, DEFAULT_WINDOWS, PROPERTIES, RTOL


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "check-encoder", help="check that an encoder conforms (eval mode, frozen, dim, determinism...)",
        description="Build an encoder and check, on real CT slices, the properties every encoder must have: "
                    f"{', '.join(PROPERTIES)}. One line per property; exit code 1 when one fails.")
    parser.add_argument("name", metavar="NAME", help="registered encoder")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="encoder option; VALUE is read as YAML (repeatable), e.g. weights=random")
    parser.add_argument("--plugin", dest="command_plugins", action="append", default=[], metavar="PATH",
                        help="load a local plugin file or folder (repeatable; same as the global --plugin)")
    parser.add_argument("--scan", metavar="PATH",
                        help=f"CT file or folder to take the inputs from (default: {DEFAULT_SAMPLE})")
    parser.add_argument("--no-download", action="store_true",
                        help="fail instead of fetching the sample CT when it is not cached")
    parser.add_argument("--slices", type=int, default=3, metavar="N",
                        help="axial slices per check for slice encoders (x the windows; default 3)")
    parser.add_argument("--windows", nargs="+", default=list(DEFAULT_WINDOWS), metavar="WINDOW",
                        help="HU windows of the inputs (default: soft-tissue lung bone)")
    parser.add_argument("--device", default="cpu", help="cpu (default), auto, cuda or cuda:N")
    parser.add_argument("--rtol", type=float, default=RTOL, help=f"relative tolerance (default {RTOL:g})")
    parser.add_argument("--atol", type=float, default=ATOL,
                        help=f"absolute tolerance, times the largest |embedding| (default {ATOL:g})")
    return parser


def run(args: argparse.Namespace) -> int:
    from clear_bench.conformance import check_encoder, sample_scan
    from clear_bench.errors import ConfigError
    from clear_bench.registry import load_registry
    from clear_bench.schema import parse_assignments

    if args.slices < 1:
        raise ConfigError(f"--slices must be >= 1, got {args.slices}")
    registry = load_registry([*args.plugin, *args.command_plugins])
    spec = registry.encoder(args.name)
    options = parse_assignments(args.option, spec.options, flag="--option", owner=f"encoder '{args.name}'")
    scan = sample_scan(args.scan, download=not args.no_download)
    report = check_encoder(spec, options, scan=scan, slices=args.slices, windows=args.windows,
                           device=args.device, rtol=args.rtol, atol=args.atol)
    for line in report.lines():
        print(line)
    return 0 if report.passed else 1
