"""``clear-bench data``: fetch the public sample CTs, look at a scan, inspect or export a synthetic cohort.

    clear-bench data samples [--dest DIR]
    clear-bench data show SCAN --out FILE.png [--window lung ...] [--mask MASK]
    clear-bench data show syn0-00003 --source synthetic --out FILE.png
    clear-bench data cohort [--option patients=20 ...] [--generate] [--export DIR]
"""

from __future__ import annotations

import argparse
import csv
import io
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from clear_bench.errors import ConfigError, DataError


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("data", help="sample CTs, scan montages, synthetic cohort",
                                   description="Fetch public sample CTs, draw scans, inspect or export "
                                               "cohorts.")
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
    _source_arguments(show, default=None)

    cohort = sub.add_parser("cohort", help="summarise, pre-generate or export a synthetic cohort",
                            description="Label prevalence of every task on a source (the synthetic cohort "
                                        "by default); --generate renders every scan into the cache; "
                                        "--export writes NIfTI volumes and label CSVs (for the folder "
                                        "source and the csv tasks).")
    _source_arguments(cohort, default="synthetic")
    cohort.add_argument("--generate", action="store_true", help="render (and cache) every scan, timed")
    cohort.add_argument("--export", metavar="DIR", help="write <id>.nii.gz and <task>.csv files to DIR")
    return parser


def _source_arguments(parser: argparse.ArgumentParser, default: str | None) -> None:
    parser.add_argument("--source", default=default, help="registered scan source" +
                        (f" (default: {default})" if default else ""))
    parser.add_argument("--option", "-o", action="append", default=[], metavar="KEY=VALUE",
                        help="source option (YAML value), repeatable, e.g. -o patients=20 -o preset=hard")


def run(args: argparse.Namespace) -> int:
    handler = {"samples": _samples, "show": _show, "cohort": _cohort}[args.data_command]
    return handler(args)


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


def _build_source(args: argparse.Namespace):
    from clear_bench.registry import load_registry

    options: dict[str, Any] = {}
    for item in args.option:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--option '{item}': expected KEY=VALUE")
        options[key.strip()] = yaml.safe_load(value)
    registry = load_registry(args.plugin)
    spec = registry.source(args.source)
    unknown = sorted(set(options) - set(spec.options))
    if unknown and spec.options:
        raise ConfigError(f"source '{args.source}': unknown option(s) {', '.join(unknown)} "
                          f"(known: {', '.join(spec.options)})")
    return registry, spec.build(options)


def _show(args: argparse.Namespace) -> int:
    from clear_bench.data.annotations import boxes_from_mask
    from clear_bench.data.montage import write_montage
    from clear_bench.data.readers import read_scan

    if args.source:
        _, source = _build_source(args)
        scan = source.load(args.scan)
    else:
        scan = read_scan(args.scan)
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


_TASKS = ("lesion-location", "lung-disease", "staging")


def _cohort(args: argparse.Namespace) -> int:
    registry, source = _build_source(args)
    ids = source.scan_ids()
    print(f"source '{args.source}': {len(ids)} scans")
    tables: dict[str, tuple[list[str], dict[str, np.ndarray], str]] = {}
    provider = getattr(source, "task_labels", None)
    for task in _TASKS:
        if not callable(provider) or task not in registry.tasks:
            continue
        try:
            names, labels = provider(task)
        except KeyError:
            continue
        kind = registry.task(task).label_type
        tables[task] = (names, labels, kind)
        print(f"\n{task} ({kind}, {len(labels)} labelled)")
        if kind == "multiclass":
            counts = np.bincount([int(v[0]) for v in labels.values()], minlength=len(names))
            print("  " + "  ".join(f"{n}: {c}" for n, c in zip(names, counts, strict=True)))
        else:
            rates = np.stack(list(labels.values())).mean(0) if labels else np.zeros(len(names))
            print("  " + "  ".join(f"{n}: {r:.0%}" for n, r in zip(names, rates, strict=True)))
    if args.generate or args.export:
        start = time.perf_counter()
        export = Path(args.export) if args.export else None
        for scan_id in ids:
            scan = source.load(scan_id)
            if export is not None:
                _write_nifti(export / f"{scan_id}.nii.gz", scan)
        elapsed = time.perf_counter() - start
        print(f"\n{'exported' if export else 'generated'} {len(ids)} scans in {elapsed:.1f} s "
              f"({elapsed / max(len(ids), 1):.2f} s per scan)")
        if export is not None:
            for task, (names, labels, kind) in tables.items():
                _write_labels(export / f"{task}.csv", names, labels, kind)
            print(f"volumes and label CSVs in {export}")
    return 0


def _write_nifti(path: Path, scan) -> None:
    import SimpleITK as sitk

    from clear_bench.atomic import atomic_write

    image = sitk.GetImageFromArray(np.rint(scan.volume).astype(np.int16))
    image.SetSpacing(tuple(float(s) for s in reversed(scan.spacing)))
    image.SetDirection(tuple(float(v) for v in scan.direction))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.nii.gz")
    sitk.WriteImage(image, str(tmp), True)
    atomic_write(path, lambda handle: handle.write(tmp.read_bytes()))
    tmp.unlink()


def _write_labels(path: Path, names: Sequence[str], labels: dict[str, np.ndarray], kind: str) -> None:
    from clear_bench.atomic import atomic_write

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if kind == "multiclass":
        writer.writerow(["image", "stage" if path.stem == "staging" else "label"])
        for scan_id, value in labels.items():
            writer.writerow([scan_id, names[int(value[0])]])
    else:
        writer.writerow(["image", *names])
        for scan_id, value in labels.items():
            writer.writerow([scan_id, *(int(v) for v in value)])
    atomic_write(path, lambda handle: handle.write(buffer.getvalue().encode()))
