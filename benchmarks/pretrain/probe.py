"""Linear probe of a LeCL encoder: lesion vs no-lesion slice, on scans held out from pretraining.

For the scans ``--scan-range`` of the pretraining config's source (keep it disjoint from the config's own
``data.scan_range``), every slice is windowed as in pretraining and embedded by

* ``initial``: the backbone exactly as pretraining initialised it (same seed, same architecture),
* ``trained``: the encoder checkpoint (``--encoder``, loaded strictly),
* ``histogram``: a non-learned reference, the 32-bin intensity histogram of the windowed slice,

then two logistic-regression probes (standardised features) are cross-validated with patient-level folds:

* per slice and window: lesion vs no-lesion slice (AUROC mean and std over folds);
* per scan, where the source carries labels of ``--task`` (the synthetic cohort does): the scan's mean
  embedding per window, concatenated, against the task's labels (macro AUROC of the out-of-fold
  predictions, the default board's linear probe in miniature), with the paired patient-bootstrap
  difference trained minus initial.

``--patients`` sets the source's cohort size, so that more held-out scans than the recipe's cohort holds
can be probed (a synthetic patient does not depend on the cohort size). Usage::

    uv run python benchmarks/pretrain/probe.py --config benchmarks/pretrain/cpu-vit-tiny.yaml \\
        --encoder runs/pretrain/cpu-vit-tiny/vit_tiny_patch16-lecl-cpu-vit-tiny-encoder.pt \\
        --scan-range 70 200 --patients 200
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from clear_bench_lecl.checkpoint import load_encoder_checkpoint
from clear_bench_lecl.pretrain.config import load_config
from clear_bench_lecl.pretrain.data import SliceTable, build_slice_table
from clear_bench_lecl.pretrain.train import build_model, build_source, slice_plan
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GroupKFold, KFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


@torch.no_grad()
def embed(model: torch.nn.Module, table: SliceTable, mean: list[float], std: list[float], channels: int,
          batch: int = 128) -> np.ndarray:
    """Features of every stored slice (grey repeated to ``channels``, normalised as in pretraining)."""
    model.eval()
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    out = []
    for start in range(0, len(table), batch):
        x = torch.from_numpy(table.images[start:start + batch]).float() / 255.0
        x = x.expand(-1, channels, -1, -1) if x.shape[1] != channels else x
        out.append(model((x - m) / s).float().numpy())
    return np.concatenate(out)


def histogram(table: SliceTable, bins: int = 32) -> np.ndarray:
    flat = table.images.reshape(len(table), -1)
    return np.stack([np.bincount(row >> (8 - int(np.log2(bins))), minlength=bins) / row.size for row in flat])


def probe(features: np.ndarray, labels: np.ndarray, groups: np.ndarray, folds: int, seed: int) -> list[float]:
    """Out-of-fold AUROC per patient-level fold."""
    scores = []
    for train, test in GroupKFold(n_splits=folds).split(features, labels, groups):
        if len(set(labels[test])) < 2:
            continue
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=3000, random_state=seed))
        clf.fit(features[train], labels[train])
        scores.append(roc_auc_score(labels[test], clf.predict_proba(features[test])[:, 1]))
    return scores


def scan_features(values: np.ndarray, table: SliceTable) -> np.ndarray:
    """Per scan: the mean feature over its slices in each window, windows concatenated."""
    scans, windows = len(table.scan_ids), len(table.windows)
    out = np.zeros((scans, windows, values.shape[1]))
    counts = np.zeros((scans, windows, 1))
    np.add.at(out, (table.scan_of, table.window_of), values)
    np.add.at(counts, (table.scan_of, table.window_of), 1)
    return (out / np.maximum(counts, 1)).reshape(scans, -1)


def scan_probe(features: np.ndarray, labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Out-of-fold probabilities of each label (one scan per patient: folds over scans)."""
    out = np.zeros(labels.shape, dtype=float)
    for train, test in KFold(n_splits=folds, shuffle=True, random_state=seed).split(features):
        for j in range(labels.shape[1]):
            if len(set(labels[train, j])) < 2:
                out[test, j] = labels[train, j].mean()
                continue
            clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=3000, random_state=seed))
            clf.fit(features[train], labels[train, j])
            out[test, j] = clf.predict_proba(features[test])[:, 1]
    return out


def macro_auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    kept = [j for j in range(labels.shape[1]) if 0 < labels[:, j].sum() < len(labels)]
    return float(np.mean([roc_auc_score(labels[:, j], scores[:, j]) for j in kept]))


def paired_bootstrap(labels: np.ndarray, a: np.ndarray, b: np.ndarray, resamples: int,
                     seed: int) -> tuple[float, float, float, float]:
    """Macro AUROC of ``a`` minus ``b`` on the same patient resamples: delta, 95% CI and two-sided p."""
    rng = np.random.default_rng(seed)
    deltas = []
    for _ in range(resamples):
        idx = rng.integers(len(labels), size=len(labels))
        if any(labels[idx, j].min() == labels[idx, j].max() for j in range(labels.shape[1])
               if 0 < labels[:, j].sum() < len(labels)):
            continue
        deltas.append(macro_auroc(labels[idx], a[idx]) - macro_auroc(labels[idx], b[idx]))
    d = np.asarray(deltas)
    p = min(1.0, 2 * min((d <= 0).mean(), (d >= 0).mean()) + 1 / len(d))
    return macro_auroc(labels, a) - macro_auroc(labels, b), *np.percentile(d, [2.5, 97.5]), p


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="the pretraining YAML")
    parser.add_argument("--encoder", required=True, help="the encoder checkpoint it produced")
    parser.add_argument("--scan-range", nargs=2, type=int, required=True, metavar=("START", "STOP"),
                        help="held-out scans of the config's source")
    parser.add_argument("--patients", type=int, help="cohort size of the source (data.options.patients)")
    parser.add_argument("--task", default="lesion-location", help="scan-level labels of the source to probe")
    parser.add_argument("--resamples", type=int, default=2000, help="patient-bootstrap resamples")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--scans-only", action="store_true", help="skip the per-slice probe (faster)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", help="write the figures as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    config = load_config(args.config)
    seen = config.data.scan_range
    if seen and max(seen[0], args.scan_range[0]) < min(seen[1], args.scan_range[1]):
        raise SystemExit(f"--scan-range {args.scan_range} overlaps the pretraining scans {seen}")
    if args.patients:
        config = replace(config, data=replace(config.data, options={**config.data.options,
                                                                    "patients": args.patients}))
    source = build_source(config)
    ids = source.scan_ids()[args.scan_range[0]:args.scan_range[1]]
    plan = slice_plan(config)
    plan = replace(plan, slice_step=1)  # every slice of the held-out scans
    table = build_slice_table(source, ids, plan)
    labels = table.is_lesion.astype(int)
    m = config.model
    initial = build_model(config).backbone
    trained, meta = load_encoder_checkpoint(args.encoder)
    print(f"probe: {len(table)} slice images from {len(table.scan_ids)} held-out scans "
          f"({labels.mean():.1%} with lesions), windows {', '.join(table.windows)}; encoder {args.encoder} "
          f"({meta['config'].get('steps')} steps)")
    features = {}
    for name, model in (("initial", initial), ("trained", trained)):
        tic = time.perf_counter()
        features[name] = embed(model, table, m.mean, m.std, m.channels)
        print(f"  embedded with {name} weights in {time.perf_counter() - tic:.1f}s")
    features["histogram"] = histogram(table)
    results: dict[str, dict[str, list[float]]] = {}
    print(f"\n{'window':<14}{'features':<12}{'AUROC mean':>11}{'std':>8}   folds")
    for window_id, window in enumerate(() if args.scans_only else table.windows):
        rows = table.window_of == window_id
        for name, values in features.items():
            scores = probe(values[rows], labels[rows], table.scan_of[rows], args.folds, config.seed)
            results.setdefault(window, {})[name] = scores
            print(f"{window:<14}{name:<12}{np.mean(scores):>11.3f}{np.std(scores):>8.3f}   "
                  + " ".join(f"{s:.3f}" for s in scores))
    scan_results = {}
    if hasattr(source, "task_labels"):
        names, by_scan = source.task_labels(args.task)
        y = np.stack([np.asarray(by_scan[s]) for s in table.scan_ids]).astype(int)
        if y.ndim == 1:  # one class index per scan: one-vs-rest columns
            y = np.eye(int(y.max()) + 1, dtype=int)[y]
        oof = {name: scan_probe(scan_features(values, table), y, args.folds, config.seed)
               for name, values in features.items()}
        print(f"\n{args.task}, per scan ({len(y)} scans, {len(names)} labels): macro AUROC of out-of-fold "
              f"predictions")
        for name, scores in oof.items():
            scan_results[name] = macro_auroc(y, scores)
            print(f"  {name:<12}{scan_results[name]:.3f}")
        delta, lo, hi, p = paired_bootstrap(y, oof["trained"], oof["initial"], args.resamples, config.seed)
        scan_results["trained_minus_initial"] = {"delta": delta, "ci": [lo, hi], "p": p}
        print(f"  trained - initial: {delta:+.3f} [{lo:+.3f}, {hi:+.3f}], paired bootstrap p {p:.4f}")
    if args.output:
        Path(args.output).write_text(json.dumps({"encoder": args.encoder, "scan_range": args.scan_range,
                                                 "slices": len(table), "results": results,
                                                 "scans": scan_results}, indent=2))


if __name__ == "__main__":
    main()
