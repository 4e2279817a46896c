"""Measure how hard each synthetic-cohort preset is for the non-learned HU-histogram reference.

For every preset: render the cohort, embed each slice with the reference encoder (per-slice HU histogram
and first-order statistics, through the same slice plan the harness uses), pool the slices of a patient
(mean, max and standard deviation of each feature), and fit a logistic regression in patient-level
stratified K-fold cross-validation, once per label. AUROC is computed per fold on that fold's test
patients and averaged over folds, then over labels (macro). The same is repeated with the label rows
shuffled across patients, which must land near 0.5.

    uv run python benchmarks/difficulty.py                      # 100 patients, easy/default/hard
    uv run python benchmarks/difficulty.py --patients 60 --presets default
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

import numpy as np
import torch
from clear_bench_ct_tasks.synthetic.config import CohortConfig
from clear_bench_ct_tasks.synthetic.source import SyntheticSource
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from clear_bench.data.slices import SlicePlan, slice_instances
from clear_bench.encoders.hu_reference import build_reference


def patient_features(source: SyntheticSource, image_size: int) -> tuple[list[str], np.ndarray]:
    """``[patients, 3 * D]``: mean, max and std over slices of the reference's per-slice features."""
    encoder = build_reference({"image_size": image_size})
    plan = SlicePlan(input="hu", channels=1, image_size=encoder.preprocessing.image_size)
    ids, rows = source.scan_ids(), []
    with torch.inference_mode():
        for scan_id in ids:
            instances = slice_instances(source.load(scan_id), plan)
            feats = encoder.model(torch.from_numpy(instances.images)).numpy()
            rows.append(np.concatenate([feats.mean(0), feats.max(0), feats.std(0)]))
    return ids, np.stack(rows)


def cv_auroc(x: np.ndarray, y: np.ndarray, folds: int, seed: int, c: float) -> tuple[float, float]:
    """Mean and std over folds of the test-fold AUROC of a logistic regression (binary ``y``)."""
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    scores = []
    for train, test in splitter.split(x, y):
        model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))
        model.fit(x[train], y[train])
        scores.append(roc_auc_score(y[test], model.predict_proba(x[test])[:, 1]))
    return float(np.mean(scores)), float(np.std(scores))


def cv_auroc_multiclass(x: np.ndarray, y: np.ndarray, folds: int, seed: int, c: float) -> float:
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    scores = []
    for train, test in splitter.split(x, y):
        model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))
        model.fit(x[train], y[train])
        proba = model.predict_proba(x[test])
        scores.append(roc_auc_score(y[test], proba, multi_class="ovr", average="macro"))
    return float(np.mean(scores))


def macro(x: np.ndarray, labels: np.ndarray, folds: int, seed: int, c: float) -> tuple[float, list[float]]:
    per_label = [cv_auroc(x, labels[:, j].astype(int), folds, seed, c)[0] for j in range(labels.shape[1])]
    return float(np.mean(per_label)), per_label


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, default=100)
    parser.add_argument("--presets", nargs="+", default=["easy", "default", "hard"])
    parser.add_argument("--seed", type=int, default=0, help="cohort seed")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--shuffles", type=int, default=5, help="label-shuffle repeats")
    parser.add_argument("--image-size", type=int, default=128, help="reference encoder input size")
    parser.add_argument("--C", type=float, default=0.05, help="inverse L2 strength of the regression")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=ConvergenceWarning)

    print(f"reference: HU histogram + first-order statistics per slice (image {args.image_size}px), "
          f"patient pooling mean/max/std, logistic regression C={args.C}, {args.folds}-fold patient-level "
          f"CV, {args.patients} patients, cohort seed {args.seed}, shuffled x{args.shuffles}\n")
    header = ("| preset | lesion-location macro AUROC | shuffled labels | weakest label | lung-disease macro "
              "| staging (ovr macro) | label prevalence | render+embed s |")
    lines = [header, "|" + "---|" * 8]
    details = []
    for preset in args.presets:
        start = time.perf_counter()
        source = SyntheticSource(CohortConfig(patients=args.patients, seed=args.seed, preset=preset))
        ids, x = patient_features(source, args.image_size)
        elapsed = time.perf_counter() - start
        names, loc = source.task_labels("lesion-location")
        y_loc = np.stack([loc[i] for i in ids])
        loc_macro, loc_per = macro(x, y_loc, args.folds, 0, args.C)
        rng = np.random.default_rng(12345)
        shuffled = [macro(x, y_loc[rng.permutation(len(ids))], args.folds, s + 1, args.C)[0]
                    for s in range(args.shuffles)]
        _, lung = source.task_labels("lung-disease")
        lung_macro, _ = macro(x, np.stack([lung[i] for i in ids]), args.folds, 0, args.C)
        _, stage = source.task_labels("staging")
        stage_auc = cv_auroc_multiclass(x, np.array([stage[i][0] for i in ids]), args.folds, 0, args.C)
        prevalence = y_loc.mean(0)
        weakest = int(np.argmin(loc_per))
        lines.append(
            f"| {preset} | {loc_macro:.3f} | {np.mean(shuffled):.3f} +- {np.std(shuffled):.3f} | "
            f"{names[weakest]} {loc_per[weakest]:.2f} | {lung_macro:.3f} | {stage_auc:.3f} | "
            f"{prevalence.min():.2f}-{prevalence.max():.2f} | {elapsed:.0f} |"
        )
        details.append(f"{preset}: " + ", ".join(f"{n} {a:.2f}" for n, a in zip(names, loc_per, strict=True)))
        print(lines[-1], file=sys.stderr, flush=True)
    print("\n".join(lines))
    print("\nper-label lesion-location AUROC:")
    print("\n".join(details))
    return 0


if __name__ == "__main__":
    sys.exit(main())
