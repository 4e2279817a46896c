"""Linear probe of a LeCL encoder: lesion vs no-lesion slice, on scans held out from pretraining.

For the scans ``--scan-range`` of the pretraining config's source (keep it disjoint from the config's own
``data.scan_range``), every slice is windowed as in pretraining and embedded by

* ``initial``: the backbone exactly as pretraining initialised it (same seed, same architecture),
* ``trained``: the encoder checkpoint (``--encoder``, loaded strictly),
* ``histogram``: a non-learned reference, the 32-bin intensity histogram of the windowed slice,

then a logistic regression (standardised features) is cross-validated with a patient-level GroupKFold.
Reported per window: AUROC mean and std over folds. Usage::

    uv run python benchmarks/pretrain/probe.py --config benchmarks/pretrain/cpu-vit-tiny.yaml \\
        --encoder runs/pretrain/cpu-vit-tiny/vit_tiny_patch16-lecl-cpu-vit-tiny-encoder.pt --scan-range 70 100
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
from sklearn.model_selection import GroupKFold
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="the pretraining YAML")
    parser.add_argument("--encoder", required=True, help="the encoder checkpoint it produced")
    parser.add_argument("--scan-range", nargs=2, type=int, required=True, metavar=("START", "STOP"),
                        help="held-out scans of the config's source")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", help="write the figures as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    config = load_config(args.config)
    seen = config.data.scan_range
    if seen and max(seen[0], args.scan_range[0]) < min(seen[1], args.scan_range[1]):
        raise SystemExit(f"--scan-range {args.scan_range} overlaps the pretraining scans {seen}")
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
    for window_id, window in enumerate(table.windows):
        rows = table.window_of == window_id
        for name, values in features.items():
            scores = probe(values[rows], labels[rows], table.scan_of[rows], args.folds, config.seed)
            results.setdefault(window, {})[name] = scores
            print(f"{window:<14}{name:<12}{np.mean(scores):>11.3f}{np.std(scores):>8.3f}   "
                  + " ".join(f"{s:.3f}" for s in scores))
    if args.output:
        Path(args.output).write_text(json.dumps({"encoder": args.encoder, "scan_range": args.scan_range,
                                                 "slices": len(table), "results": results}, indent=2))


if __name__ == "__main__":
    main()
