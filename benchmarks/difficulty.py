"""Measure how hard each synthetic-cohort preset is for the two non-learned references.

For every preset the cohort is rendered once and every slice embedded, through the slice plans the
harness uses, by

* ``hu``: the HU-histogram reference (``hu-reference``: per-slice HU histogram and first-order statistics),
* ``image``: the image-space filter probe (``image-probe``: blob and edge filters of each windowed slice,
  pooled on a coarse grid), which sees structure at the encoders' input size and has no weights either.

The slices of a patient are pooled (mean, max and standard deviation of each feature, per window for the
probe) and a logistic regression is fitted in patient-level stratified K-fold cross-validation, once per
label. AUROC is computed per fold on that fold's test patients and averaged over folds, then over labels
(macro). Lesion location is repeated with the label rows shuffled across patients, which must land near
0.5. The table also gives each reference's weakest location label and the label prevalence range.

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
from clear_bench.encoders.image_probe import build_probe

WINDOWS = ("soft-tissue", "lung", "bone")


def _pool(feats: np.ndarray) -> np.ndarray:
    return np.concatenate([feats.mean(0), feats.max(0), feats.std(0)])


def patient_features(
    source: SyntheticSource, image_size: int, probe_size: int
) -> tuple[list[str], dict[str, np.ndarray]]:
    """Per reference, ``[patients, F]``: mean, max and std over slices of its per-slice features (per
    window for the image probe, whose windows are concatenated)."""
    hu = build_reference({"image_size": image_size})
    hu_plan = SlicePlan(input="hu", channels=1, image_size=hu.preprocessing.image_size)
    probe = build_probe({"image_size": probe_size})
    probe_plan = SlicePlan(
        windows=WINDOWS, window_mode="per-window", channels=1, image_size=probe.preprocessing.image_size
    )
    ids, rows = source.scan_ids(), {"hu": [], "image": []}
    with torch.inference_mode():
        for scan_id in ids:
            scan = source.load(scan_id)
            feats = hu.model(torch.from_numpy(slice_instances(scan, hu_plan).images)).numpy()
            rows["hu"].append(_pool(feats))
            inst = slice_instances(scan, probe_plan)
            feats = probe.model(torch.from_numpy(inst.images)).numpy()
            rows["image"].append(
                np.concatenate([_pool(feats[inst.window_id == w]) for w in range(len(WINDOWS))])
            )
    return ids, {name: np.stack(values) for name, values in rows.items()}


def cv_auroc(x: np.ndarray, y: np.ndarray, folds: int, seed: int, c: float) -> float:
    """Mean over folds of the test-fold AUROC of a logistic regression (binary ``y``)."""
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    scores = []
    for train, test in splitter.split(x, y):
        model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))
        model.fit(x[train], y[train])
        scores.append(roc_auc_score(y[test], model.predict_proba(x[test])[:, 1]))
    return float(np.mean(scores))


def cv_auroc_multiclass(x: np.ndarray, y: np.ndarray, folds: int, seed: int, c: float) -> float:
    """Mean over folds of the one-vs-rest macro AUROC of a multinomial logistic regression."""
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    scores = []
    for train, test in splitter.split(x, y):
        model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))
        model.fit(x[train], y[train])
        proba = model.predict_proba(x[test])
        scores.append(roc_auc_score(y[test], proba, multi_class="ovr", average="macro"))
    return float(np.mean(scores))


def macro(x: np.ndarray, labels: np.ndarray, folds: int, seed: int, c: float) -> tuple[float, list[float]]:
    """Macro AUROC over the label columns, and the per-label figures."""
    per_label = [cv_auroc(x, labels[:, j].astype(int), folds, seed, c) for j in range(labels.shape[1])]
    return float(np.mean(per_label)), per_label


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, default=100)
    parser.add_argument("--presets", nargs="+", default=["easy", "default", "hard"])
    parser.add_argument("--seed", type=int, default=0, help="cohort seed")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--shuffles", type=int, default=5, help="label-shuffle repeats")
    parser.add_argument("--image-size", type=int, default=128, help="HU reference input size")
    parser.add_argument("--probe-size", type=int, default=112, help="image probe input size")
    parser.add_argument("--C", type=float, default=0.05, help="inverse L2 strength of the regression")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=ConvergenceWarning)

    print(
        f"references: hu = HU histogram + first-order statistics per slice ({args.image_size} px); image = "
        f"blob/edge filter probe of the windowed slices ({', '.join(WINDOWS)}; {args.probe_size} px, 4x4 "
        f"grid). Patient pooling mean/max/std, logistic regression C={args.C}, {args.folds}-fold "
        f"patient-level CV, {args.patients} patients, cohort seed {args.seed}, shuffled x{args.shuffles}\n"
    )
    header = (
        "| preset | reference | lesion-location macro AUROC | shuffled labels | weakest label | "
        "lung-disease macro | staging (ovr macro) | label prevalence | render+embed s |"
    )
    lines = [header, "|" + "---|" * 9]
    details = []
    for preset in args.presets:
        start = time.perf_counter()
        source = SyntheticSource(CohortConfig(patients=args.patients, seed=args.seed, preset=preset))
        ids, features = patient_features(source, args.image_size, args.probe_size)
        elapsed = time.perf_counter() - start
        names, loc = source.task_labels("lesion-location")
        y_loc = np.stack([loc[i] for i in ids])
        _, lung = source.task_labels("lung-disease")
        y_lung = np.stack([lung[i] for i in ids])
        _, stage = source.task_labels("staging")
        y_stage = np.array([stage[i][0] for i in ids])
        prevalence = y_loc.mean(0)
        for ref, x in features.items():
            loc_macro, loc_per = macro(x, y_loc, args.folds, 0, args.C)
            rng = np.random.default_rng(12345)
            shuffled = [
                macro(x, y_loc[rng.permutation(len(ids))], args.folds, s + 1, args.C)[0]
                for s in range(args.shuffles)
            ]
            lung_macro, _ = macro(x, y_lung, args.folds, 0, args.C)
            stage_auc = cv_auroc_multiclass(x, y_stage, args.folds, 0, args.C)
            weakest = int(np.argmin(loc_per))
            lines.append(
                f"| {preset} | {ref} | {loc_macro:.3f} | {np.mean(shuffled):.3f} +- {np.std(shuffled):.3f} | "
                f"{names[weakest]} {loc_per[weakest]:.2f} | {lung_macro:.3f} | {stage_auc:.3f} | "
                f"{prevalence.min():.2f}-{prevalence.max():.2f} | {elapsed:.0f} |"
            )
            details.append(
                f"{preset} {ref}: " + ", ".join(f"{n} {a:.2f}" for n, a in zip(names, loc_per, strict=True))
            )
            print(lines[-1], file=sys.stderr, flush=True)
    print("\n".join(lines))
    print("\nper-label lesion-location AUROC:")
    print("\n".join(details))
    return 0


if __name__ == "__main__":
    sys.exit(main())
