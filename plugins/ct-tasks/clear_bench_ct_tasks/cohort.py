"""``clear-bench data cohort``: label prevalence of this plugin's tasks on a source, pre-generation, export.

    clear-bench data cohort [--source NAME] [-o patients=20 ...] [--generate] [--export DIR]

``--export DIR`` writes ``<id>.nii.gz`` volumes and one ``<task>.csv`` per task the source carries labels
for, the layout the ``folder`` source and the ``csv`` tasks read back; the CSVs carry a ``patient_id``
column (the source's pseudonymous patients) when the source knows every scan's patient. This module is
imported when the registry is loaded: only the standard library and the core's specs at module level.
"""

from __future__ import annotations

import argparse
import csv
import io
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clear_bench.specs import CommandSpec

if TYPE_CHECKING:
    import numpy as np

    from clear_bench.data.scan import Scan
    from clear_bench.specs import ScanSource


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Label prevalence of every task on a source (the synthetic cohort by default); "
                          "--generate renders every scan into the cache; --export writes NIfTI volumes and "
                          "label CSVs (for the folder source and the csv tasks).")
    parser.add_argument("--source", default="synthetic", help="registered scan source (default: synthetic)")
    parser.add_argument("--option", "-o", action="append", default=[], metavar="KEY=VALUE",
                        help="source option (YAML value), repeatable, e.g. -o patients=20 -o preset=hard")
    parser.add_argument("--generate", action="store_true", help="render (and cache) every scan, timed")
    parser.add_argument("--export", metavar="DIR", help="write <id>.nii.gz and <task>.csv files to DIR")


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from clear_bench.components import build_component
    from clear_bench.registry import load_registry
    from clear_bench.schema import parse_assignments
    from clear_bench.specs import LabelledSource, PatientSource
    from clear_bench_ct_tasks.tasks import TASK_SPECS

    registry = load_registry(getattr(args, "plugin", None) or ())
    spec = registry.source(args.source)
    options = parse_assignments(args.option, spec.options, flag="--option", owner=f"source '{args.source}'")
    source: ScanSource = build_component(registry, "sources", args.source, options)
    ids = source.scan_ids()
    print(f"source '{args.source}': {len(ids)} scans")
    tables: dict[str, tuple[list[str], dict[str, np.ndarray], str]] = {}
    for task in TASK_SPECS if isinstance(source, LabelledSource) else ():
        try:
            names, labels = source.task_labels(task.name)
        except KeyError:  # no labels of this task in the source
            continue
        tables[task.name] = (names, labels, task.label_type)
        print(f"\n{task.name} ({task.label_type}, {len(labels)} labelled)")
        if task.label_type == "multiclass":
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
                write_nifti(export / f"{scan_id}.nii.gz", scan)
        elapsed = time.perf_counter() - start
        print(f"\n{'exported' if export else 'generated'} {len(ids)} scans in {elapsed:.1f} s "
              f"({elapsed / max(len(ids), 1):.2f} s per scan)")
        if export is not None:
            patients = ({s: source.patient_id(s) for s in ids} if isinstance(source, PatientSource)
                        else {})
            for task_name, (names, labels, kind) in tables.items():
                write_labels(export / f"{task_name}.csv", names, labels, kind, patients)
            print(f"volumes and label CSVs in {export}")
    return 0


def write_nifti(path: Path, scan: Scan) -> None:
    """The scan's HU volume as int16 NIfTI with its spacing and direction, written atomically."""
    import numpy as np
    import SimpleITK as sitk

    from clear_bench.atomic import atomic_path

    image = sitk.GetImageFromArray(np.rint(scan.volume).astype(np.int16))
    image.SetSpacing(tuple(float(s) for s in reversed(scan.spacing)))
    image.SetDirection(tuple(float(v) for v in scan.direction))
    with atomic_path(path, keep_extension=True) as tmp:  # SimpleITK picks the format by the name
        sitk.WriteImage(image, str(tmp), True)


def write_labels(path: Path, names: Sequence[str], labels: Mapping[str, Any], kind: str,
                 patients: Mapping[str, str | None] | None = None) -> None:
    """One label CSV: ``image`` and a 0/1 column per label, or ``image`` and the class name (``stage`` for
    the staging task), as the csv tasks and ``labels_csv`` read it. With ``patients`` (pseudonymous, as a
    :class:`~clear_bench.specs.PatientSource` gives them) naming every labelled scan, a ``patient_id``
    column follows ``image``."""
    from clear_bench.atomic import atomic_write_text

    patients = patients or {}
    with_patients = bool(labels) and all(patients.get(scan_id) for scan_id in labels)
    lead = ["image", "patient_id"] if with_patients else ["image"]

    def first(scan_id: str) -> list[str]:
        return [scan_id, str(patients[scan_id])] if with_patients else [scan_id]

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if kind == "multiclass":
        writer.writerow([*lead, "stage" if path.stem == "staging" else "label"])
        for scan_id, value in labels.items():
            writer.writerow([*first(scan_id), names[int(value[0])]])
    else:
        writer.writerow([*lead, *names])
        for scan_id, value in labels.items():
            writer.writerow([*first(scan_id), *(int(v) for v in value)])
    atomic_write_text(path, buffer.getvalue())


COHORT_COMMAND = CommandSpec(
    name="cohort", parent="data", add_arguments=add_arguments, run=run,
    help="summarise, pre-generate or export a synthetic cohort",
)
