"""``clear-bench evaluate``: the cross-validation stage alone, on embeddings that already exist.

Reads a folder of bags in the CLEAR export layout (``{id}.h5`` with dataset ``feats``) and a label CSV
(``image,label1,...``), cross-validates each requested aggregator on one fingerprinted split, and writes
under ``--out``: ``splits/``, ``folds/`` (content-addressed fold results: a rerun reuses them),
``<aggregator>.summary.json``, ``<aggregator>.predictions.csv``, ``comparison.json`` (several
aggregators) and ``evaluate.json`` (inputs, scans left out, settings). It prints a small table.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from pathlib import Path
from typing import Any

from clear_bench.errors import UserError
from clear_bench.evaluation.settings import TrainConfig

_TRAIN = TrainConfig()
_DEFAULTS = {
    "epochs": (_TRAIN.epochs, "maximum training epochs per fold"),
    "lr": (_TRAIN.lr, "AdamW learning rate"),
    "weight_decay": (_TRAIN.weight_decay, "AdamW weight decay"),
    "batch_size": (_TRAIN.batch_size, "bags per minibatch"),
    "patience": (_TRAIN.patience, "early stopping: epochs without a lower validation loss"),
    "max_instances": (_TRAIN.max_instances, "random instances per bag at each training step (0: all)"),
}


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "evaluate", help="cross-validate MIL heads on existing embeddings",
        description="Cross-validate MIL heads on a folder of bags ({id}.h5 with dataset 'feats') and a label "
                    "CSV, with patient-level stratified folds, bootstrap CIs and label-shuffle controls.")
    parser.add_argument("config", nargs="?", type=Path,
                        help="benchmark YAML: evaluate its encoders x tasks x aggregators on the embedding "
                             "cache alone (nothing is extracted or pretrained); else use --features/--labels")
    parser.add_argument("--features", type=Path, metavar="DIR", help="folder of {id}.h5 files")
    parser.add_argument("--labels", type=Path, metavar="CSV", help="CSV: image,label1,...")
    parser.add_argument("--out", type=Path, metavar="DIR", help="output folder")
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
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--val-fraction", type=float, default=0.2)
    for name, (value, text) in _DEFAULTS.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value,
                            help=f"{text} (default: {value})")
    parser.add_argument("--eval-max-instances", type=int, default=None,
                        help="cap evaluation bags by an evenly spaced subsample (default: all instances)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (small heads often run fastest on 1; default: torch's)")
    parser.add_argument("--bootstrap", type=int, default=1000, metavar="N", help="bootstrap resamples")
    parser.add_argument("--shuffle-controls", type=int, default=0, metavar="N",
                        help="also run N label-shuffle controls per aggregator (leakage check)")
    return parser


def run(args: argparse.Namespace) -> int:
    if args.config is not None:
        return _run_benchmark(args)
    missing = [flag for flag in ("features", "labels", "out") if getattr(args, flag) is None]
    if missing:
        raise UserError("evaluate needs a benchmark YAML, or all of --features, --labels and --out "
                        f"(missing: {', '.join('--' + m for m in missing)})")
    return _run_folder(args)


def _run_benchmark(args: argparse.Namespace) -> int:
    from clear_bench.config import load_benchmark_with_plugins
    from clear_bench.pipeline import run_benchmark

    config, registry = load_benchmark_with_plugins(args.config, args.plugin)
    outcome = run_benchmark(config, registry, extract_missing=False)
    for failure in outcome.failures:
        print(f"left out: {failure}", file=sys.stderr)
    return 0


def _run_folder(args: argparse.Namespace) -> int:
    from clear_bench.atomic import atomic_write_text
    from clear_bench.evaluation.bags import pad_bags
    from clear_bench.evaluation.bootstrap import summarize
    from clear_bench.evaluation.compare import compare_rows
    from clear_bench.evaluation.crossval import permute_labels, run_crossval
    from clear_bench.evaluation.inputs import read_feature_folder, read_label_csv
    from clear_bench.evaluation.splits import ensure_splits
    from clear_bench.registry import load_registry

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    registry = load_registry(getattr(args, "plugin", None) or [])
    names = args.aggregator or ["abmil"]
    specs = {name: registry.aggregator(name) for name in names}
    options = {name: _options(spec, args.option) for name, spec in specs.items()}
    for item in args.option:
        key = item.split("=", 1)[0]
        if not any(key in spec.options for spec in specs.values()):
            raise UserError(f"--option {item!r}: none of {', '.join(names)} has an option '{key}'")
    try:
        config = TrainConfig(epochs=args.epochs, lr=args.lr, weight_decay=args.weight_decay,
                             batch_size=args.batch_size, patience=args.patience,
                             max_instances=args.max_instances or None,
                             eval_max_instances=args.eval_max_instances,
                             val_fraction=args.val_fraction, seed=args.seed, device=args.device)
    except ValueError as error:
        raise UserError(f"bad training setting: {error}") from error

    table = read_label_csv(args.labels, args.id_column, args.label_type, args.label_column,
                           args.patient_column)
    folder = read_feature_folder(args.features, sorted(table.labels))
    for scan_id, why in sorted(folder.failures.items())[:10]:
        print(f"left out {scan_id}: {why}")
    if len(folder.failures) > 10:
        print(f"... and {len(folder.failures) - 10} more scans left out (see evaluate.json)")
    labels = {i: v for i, v in table.labels.items() if i in folder.bags}
    patient_of = {i: table.patient_of[i] for i in labels} if table.patient_of else None
    if len({(patient_of or {}).get(i, i) for i in labels}) < 2 * args.folds:
        raise UserError(f"{len(labels)} usable scans are too few for {args.folds} folds "
                        f"({len(folder.failures)} left out, {len(table.skipped)} without a complete label)")
    out: Path = args.out
    splits = ensure_splits(out / "splits", labels, table.label_type, k=args.folds, seed=args.seed,
                           val_fraction=args.val_fraction, patient_of=patient_of)
    padded = pad_bags(folder.bags, splits.scan_ids, cap=config.eval_max_instances)
    print(f"{len(labels)} scans, {len(table.label_names)} {table.label_type} "
          f"{'classes' if table.label_type == 'multiclass' else 'labels'}, bags of up to {padded.x.shape[1]} "
          f"x {padded.dim}; splits {splits.fingerprint}")

    common = {"label_type": table.label_type, "label_names": table.label_names, "splits": splits,
              "config": config, "bagset_fingerprint": folder.fingerprint, "results_dir": out / "folds"}
    results, summaries, controls = {}, {}, {}
    for name, spec in specs.items():
        print(f"cross-validating {name} {options[name] or ''}".rstrip())
        result = run_crossval(padded, labels, aggregator=spec, options=options[name], log=_log, **common)
        results[name] = result
        summaries[name] = summarize(result, n_boot=args.bootstrap, seed=args.seed)
        atomic_write_text(out / f"{name}.summary.json", json.dumps(summaries[name].to_dict(), indent=1))
        atomic_write_text(out / f"{name}.predictions.csv", _predictions_csv(result))
        shuffled = []
        for index in range(args.shuffle_controls):
            permuted = permute_labels(labels, patient_of, seed=args.seed + 1000 + index)
            control = run_crossval(padded, permuted, aggregator=spec, options=options[name],
                                   control=f"shuffle-{index}", **common)
            shuffled.append(summarize(control, n_boot=1).get("auroc").mean)
        controls[name] = shuffled
    comparisons = compare_rows(results, n_boot=args.bootstrap, seed=args.seed) if len(results) > 1 else []
    if comparisons:
        atomic_write_text(out / "comparison.json",
                          json.dumps([_jsonable(vars(c)) for c in comparisons], indent=1))
    atomic_write_text(out / "evaluate.json", json.dumps({
        "features": str(args.features), "labels": str(args.labels), "bags_fingerprint": folder.fingerprint,
        "split_fingerprint": splits.fingerprint, "label_type": table.label_type,
        "label_names": table.label_names, "scans": len(labels), "left_out": folder.failures,
        "without_label": table.skipped, "aggregators": {n: options[n] for n in names},
        "train": config.key(), "shuffle_controls": controls,
    }, indent=1, sort_keys=True))
    print()
    print(render_table(summaries, controls, comparisons))
    for name in names:
        for note in summaries[name].notes:
            print(f"note ({name}): {note}")
    return 0


def render_table(summaries: dict[str, Any], controls: dict[str, list[float]], comparisons: list[Any]) -> str:
    """Plain-text results: macro metrics (mean +- std over folds, bootstrap 95% CI) and per-label AUROC."""
    from clear_bench.commands.plugins import format_table

    first = next(iter(summaries.values()))
    metrics = ["auroc", "auprc", "balanced_accuracy"]
    if first.label_type == "multiclass":
        metrics.append("f1_macro")
    p_of = {c.row: c for c in comparisons}
    headers = ["aggregator", *metrics, "shuffled auroc", "vs best"]
    rows = []
    for name, summary in summaries.items():
        cells = [name]
        for metric in metrics:
            m = summary.get(metric)
            cells.append(f"{m.mean:.3f} ± {_num(m.std)} [{m.ci_low:.3f}, {m.ci_high:.3f}]")
        shuffled = controls.get(name) or []
        cells.append(f"{sum(shuffled) / len(shuffled):.3f} (n={len(shuffled)})" if shuffled else "-")
        c = p_of.get(name)
        cells.append(f"-{c.difference:.3f}, p={c.p_value:.3g}, Holm {c.p_holm:.3g}" if c else
                     ("best" if comparisons else "-"))
        rows.append(cells)
    lines = [format_table(headers, rows), "", "AUROC per label (mean over folds [95% CI]):"]
    label_rows = []
    for label in first.label_names:
        cells = [label]
        for summary in summaries.values():
            m = summary.rows.get(("auroc", label))
            text = f"{m.mean:.3f} [{m.ci_low:.3f}, {m.ci_high:.3f}] ({m.n_folds} folds)" if m else "n/a"
            cells.append(text)
        label_rows.append(cells)
    lines.append(format_table(["label", *summaries], label_rows))
    return "\n".join(lines)


def _options(spec: Any, given: list[str]) -> dict[str, Any]:
    """Parse ``KEY=VALUE`` options by the aggregator's declared option types (keys it does not declare
    are skipped; :func:`run` refuses a key that no requested aggregator declares)."""
    values: dict[str, Any] = {}
    for item in given:
        if "=" not in item:
            raise UserError(f"--option {item!r}: expected KEY=VALUE")
        key, raw = item.split("=", 1)
        declared = spec.options.get(key)
        if declared is None:
            continue
        types = declared.type if isinstance(declared.type, tuple) else (declared.type,)
        values[key] = _convert(key, raw, types)
    return values


def _convert(key: str, raw: str, types: tuple[type, ...]) -> Any:
    for kind in types:
        try:
            if kind is bool:
                if raw.lower() in ("true", "1", "yes"):
                    return True
                if raw.lower() in ("false", "0", "no"):
                    return False
                continue
            return kind(raw)
        except ValueError:
            continue
    raise UserError(f"--option {key}={raw}: expected {' or '.join(t.__name__ for t in types)}")


def _predictions_csv(result: Any) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["scan_id", "fold", *(f"p_{label}" for label in result.label_names)])
    for fold in sorted(result.folds, key=lambda f: f.fold):
        for scan_id, probs in zip(fold.test_ids, fold.test_probs, strict=True):
            writer.writerow([scan_id, fold.fold, *(f"{p:.6f}" for p in probs)])
    return buffer.getvalue()


def _jsonable(value: Any) -> Any:
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if hasattr(value, "__dict__"):
        return _jsonable(vars(value))
    return value


def _num(value: float) -> str:
    return "nan" if math.isnan(value) else f"{value:.3f}"


def _log(message: str) -> None:
    print(f"  {message}")
