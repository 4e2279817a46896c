"""``clear-bench data``: fetch the public sample CTs, look at a scan; plugins add further actions.

    clear-bench data samples [--dest DIR]
    clear-bench data show SCAN --out FILE.png [--window lung ...] [--mask MASK]
    clear-bench data show syn0-00003 --source synthetic -o patients=20 --out FILE.png

Every registered command whose ``parent`` is ``"data"`` becomes one more action (the CT tasks plugin adds
``clear-bench data cohort``); its ``run(args)`` gets the parsed flags.
"""

from __future__ import annotations

import argparse

import numpy as np

from clear_bench import commands
from clear_bench.errors import DataError, PluginError
from clear_bench.registry import load_registry
from clear_bench.specs import ScanSource

_CORE_ACTIONS = ("samples", "show")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("data", help="sample CTs, scan montages, plugin data actions",
                                   description="Fetch public sample CTs, draw scans; plugins add actions "
                                               "(e.g. cohort).")
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    samples = sub.add_parser("samples", help="download and verify the public sample CTs",
                             description="Download the pinned sdists of totalsegmentator 2.18.0 and "
                                         "pyradiomics-bhklab 3.1.4, extract their CT files, check sha256.")
    samples.add_argument("--dest", help="cache folder (default: <user cache>/samples)")
    samples.add_argument("--names", nargs="+", help="only these samples")

    show = sub.add_parser("show", help="PNG montage of a scan with its lesion boxes",
                          description="Write a montage of windowed slices of SCAN (a NIfTI/NRRD/MHA file, a "
                                      "DICOM or PNG folder, or a scan id of --source) with lesion boxes.")
    show.add_argument("scan", help="file or folder, or a scan id with --source")
    show.add_argument("--out", required=True, help="PNG file to write")
    show.add_argument("--window", dest="windows", nargs="+", default=["soft-tissue", "lung"],
                      help="windows: preset names or W<width>L<level> (default: soft-tissue lung)")
    show.add_argument("--slices", nargs="+", type=int, help="slice indices (default: spread + lesion slices)")
    show.add_argument("--count", type=int, default=12, help="number of slices when --slices is not given")
    show.add_argument("--columns", type=int, default=6)
    show.add_argument("--mask", help="segmentation mask file: its connected components become boxes")
    show.add_argument("--source", help="registered scan source that serves SCAN as a scan id")
    show.add_argument("--option", "-o", action="append", default=[], metavar="KEY=VALUE",
                      help="source option (YAML value), repeatable, e.g. -o patients=20 -o preset=hard")

    registry = commands.early_registry()
    for name, entry in sorted(registry.commands.items()):
        spec = entry.spec
        if spec.parent != "data":
            continue
        if name in _CORE_ACTIONS:
            raise PluginError(f"command 'data {name}' of plugin '{entry.provider.plugin}' "
                              f"({entry.provider.distribution}) clashes with the core's 'data {name}'")
        action = sub.add_parser(name, help=spec.help, description=spec.help)
        spec.add_arguments(action)
        action.set_defaults(data_spec=spec)
    return parser


def run(args: argparse.Namespace) -> int:
    if args.data_command == "samples":
        return _samples(args)
    if args.data_command == "show":
        return _show(args)
    return int(args.data_spec.run(args) or 0)


def _samples(args: argparse.Namespace) -> int:
    from clear_bench.data.readers import read_scan
    from clear_bench.data.samples import fetch_samples

    paths = fetch_samples(args.dest, args.names)
    print(f"\n{'sample':<18} {'shape [z,y,x]':<17} {'spacing mm':<20} {'HU p1..p99':<14} file")
    for name, entry in paths.items():
        scan = read_scan(entry.image, name)
        lo, hi = np.percentile(scan.volume, [1, 99])
        spacing = "x".join(f"{s:.2f}" for s in scan.spacing)
        shape = "x".join(str(n) for n in scan.volume.shape)
        print(f"{name:<18} {shape:<17} {spacing:<20} {f'{lo:.0f}..{hi:.0f}':<14} {entry.image}")
    return 0


def _build_source(args: argparse.Namespace) -> ScanSource:
    """The ``--source`` named on the command line, its ``-o KEY=VALUE`` options checked by the schema."""
    from clear_bench.components import build_component
    from clear_bench.schema import parse_assignments

    registry = load_registry(args.plugin)
    spec = registry.source(args.source)
    options = parse_assignments(args.option, spec.options, flag="--option", owner=f"source '{args.source}'")
    return build_component(registry, "sources", args.source, options)


def _show(args: argparse.Namespace) -> int:
    from clear_bench.data.annotations import boxes_from_mask
    from clear_bench.data.montage import write_montage
    from clear_bench.data.readers import read_scan

    scan = _build_source(args).load(args.scan) if args.source else read_scan(args.scan)
    if args.mask:
        mask = read_scan(args.mask).volume
        if mask.shape != scan.volume.shape:
            raise DataError(f"{args.mask}: mask shape {mask.shape} differs from the scan's "
                            f"{scan.volume.shape}")
        scan.lesions = boxes_from_mask(mask > 0.5)
    slices = args.slices
    if slices is None:
        from clear_bench.data.montage import pick_slices

        slices = pick_slices(scan, args.count)
    out = write_montage(scan, args.out, windows=args.windows, slices=slices, columns=args.columns)
    print(f"{scan.scan_id}: {scan.volume.shape[0]} slices, spacing "
          + " x ".join(f"{s:.2f}" for s in scan.spacing) + f" mm, {len(scan.lesions)} lesion boxes -> {out}")
    return 0
