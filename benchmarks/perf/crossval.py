"""Wall time of K-fold ABMIL cross-validation: the harness against its compute ceiling and the public
CLEAR data pattern, many heads trained as one stack against one by one, and rows in parallel against
serial, each measured side by side in one run on synthetic feature sets.

- ceiling: the same forward/backward passes (same model, batches, epochs, validation and test passes)
  on minibatch tensors prepared in memory before the clock starts: no indexing, no I/O.
- harness: ``run_crossval`` on bags padded once into tensors (minibatches by indexing). The padding
  (done once per encoder and task) is timed separately.
- public pattern: each bag in its own ``{id}.h5`` (dataset ``feats``), read per item and per epoch by a
  ``Dataset`` through a ``DataLoader`` with worker processes, as the public CLEAR training code does.

Early stopping is off (patience > epochs) so that all three do the same number of passes.

At the default board's size (``--board-dims``: 200 bags of 80 instances, 8 labels, 5 folds, the default
board's epochs and patience, early stopping on):

- a row's 115 trainings (3 repeats of 5 folds + a 20-permutation null) as stacks, against its plain
  5-fold CV; and stacked against one at a time on the row's first ``--sequential`` members.
- parallel vs serial: the rows of 2 encoders x 3 heads (5-fold CV each) in forked workers (one thread
  each) against one after the other in this process.

    uv run python benchmarks/perf/crossval.py                      # everything, about 10 min on 2 cores
    uv run python benchmarks/perf/crossval.py --arms ceiling --patients 200 --dim 384   # quicker

``--json PATH`` also writes every figure as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import warnings
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from clear_bench.aggregators.abmil import ABMIL
from clear_bench.atomic import atomic_write_text
from clear_bench.builtin import clear_bench_aggregators
from clear_bench.evaluation.bags import Bag, PaddedBags, pad_bags
from clear_bench.evaluation.batched import Member, train_members
from clear_bench.evaluation.crossval import CrossValRun, permute_labels, run_crossval, run_crossvals
from clear_bench.evaluation.parallel import run_in_workers
from clear_bench.evaluation.splits import make_splits
from clear_bench.evaluation.synthetic import planted_bags
from clear_bench.evaluation.training import TrainConfig, fold_seed, make_loss

SPECS = {spec.name: spec for spec in clear_bench_aggregators()}


def synthetic(n: int, instances: int, dim: int, seed: int) -> tuple[dict[str, Bag], dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    direction = rng.normal(size=dim).astype(np.float32)
    direction /= np.linalg.norm(direction)
    bags, labels = {}, {}
    for i in range(n):
        y = np.array([float(rng.random() < 0.4)], dtype=np.float32)
        x = rng.standard_normal((instances, dim), dtype=np.float32)
        if y[0]:
            x[rng.choice(instances, 4, replace=False)] += 3.0 * direction
        bags[f"scan-{i:04d}"] = Bag(x, np.arange(instances), np.zeros(instances))
        labels[f"scan-{i:04d}"] = y
    return bags, labels


def build(dim: int, hidden: int) -> torch.nn.Module:
    return ABMIL(dim, 1, hidden_dim=hidden, attention_dim=hidden // 2, dropout=0.25)


def passes(model: torch.nn.Module, loss_fn: torch.nn.Module, optimizer: torch.optim.Optimizer,
           epochs: int, train_batches: list, val_batches: list, test_batches: list) -> None:
    """The forward/backward work of one fold, on batches that already exist."""
    for _ in range(epochs):
        model.train()
        for x, mask, y in train_batches:
            loss = loss_fn(model(x, mask).logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            for x, mask, y in val_batches:
                float(loss_fn(model(x, mask).logits, y))
    with torch.no_grad():
        for x, mask, _ in test_batches:
            torch.sigmoid(model(x, mask).logits)


def batches_of(bags, labels, ids, size, rng=None):
    ids = list(ids) if rng is None else [ids[i] for i in rng.permutation(len(ids))]
    out = []
    for start in range(0, len(ids), size):
        chunk = ids[start:start + size]
        x = torch.from_numpy(np.stack([bags[i].embeddings for i in chunk]))
        y = torch.from_numpy(np.stack([labels[i] for i in chunk]))
        out.append((x, torch.ones(x.shape[:2], dtype=torch.bool), y))
    return out


def ceiling(bags, labels, splits, config: TrainConfig, hidden: int) -> float:
    rng = np.random.default_rng(0)
    prepared = []
    for fold in splits.folds:  # built before the clock starts
        prepared.append((batches_of(bags, labels, fold.train, config.batch_size, rng),
                         batches_of(bags, labels, fold.val, config.batch_size * 2),
                         batches_of(bags, labels, fold.test, config.batch_size * 2)))
    start = time.perf_counter()
    for index, (train, val, test) in enumerate(prepared):
        torch.manual_seed(fold_seed(config.seed, index))
        model = build(next(iter(bags.values())).dim, hidden)
        targets = torch.cat([y for _, _, y in train])
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        passes(model, make_loss("binary", targets, 1), optimizer, config.epochs, train, val, test)
    return time.perf_counter() - start


def harness(bags, labels, splits, config: TrainConfig, hidden: int) -> tuple[float, float]:
    spec = next(s for s in clear_bench_aggregators() if s.name == "abmil")
    start = time.perf_counter()
    padded = pad_bags(bags, splits.scan_ids)
    padding = time.perf_counter() - start
    start = time.perf_counter()
    run_crossval(padded, labels, "binary", ["y"], splits, spec,
                 {"hidden_dim": hidden, "attention_dim": hidden // 2, "dropout": 0.25}, config,
                 bagset_fingerprint="perf")
    return time.perf_counter() - start, padding


class H5Bags(Dataset):
    """The public pattern: one HDF5 read per item, every epoch."""

    def __init__(self, folder: Path, ids: list[str], labels: dict[str, np.ndarray]) -> None:
        self.folder, self.ids, self.labels = folder, ids, labels

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int):
        scan_id = self.ids[index]
        with h5py.File(self.folder / f"{scan_id}.h5", "r") as h5:
            feats = torch.from_numpy(np.asarray(h5["feats"][:]))
        return feats, torch.from_numpy(self.labels[scan_id])


def public_pattern(folder: Path, labels, splits, config: TrainConfig, hidden: int, workers: int,
                   dim: int) -> float:
    start = time.perf_counter()
    for index, fold in enumerate(splits.folds):
        torch.manual_seed(fold_seed(config.seed, index))
        model = build(dim, hidden)
        targets = torch.from_numpy(np.stack([labels[i] for i in fold.train]))
        loss_fn = make_loss("binary", targets, 1)
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)

        def loader(ids, size, shuffle):
            return DataLoader(H5Bags(folder, list(ids), labels), batch_size=size, shuffle=shuffle,
                              num_workers=workers)

        train = loader(fold.train, config.batch_size, True)
        val = loader(fold.val, config.batch_size * 2, False)
        test = loader(fold.test, config.batch_size * 2, False)
        for _ in range(config.epochs):
            model.train()
            for x, y in train:
                mask = torch.ones(x.shape[:2], dtype=torch.bool)
                loss = loss_fn(model(x, mask).logits, y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            model.eval()
            with torch.no_grad():
                for x, y in val:
                    float(loss_fn(model(x, torch.ones(x.shape[:2], dtype=torch.bool)).logits, y))
        with torch.no_grad():
            for x, _ in test:
                torch.sigmoid(model(x, torch.ones(x.shape[:2], dtype=torch.bool)).logits)
    return time.perf_counter() - start


def ceiling_arm(args) -> dict:
    """Plain 5-fold CV: harness vs ceiling vs the public pattern, at the ``--patients`` size."""
    bags, labels = synthetic(args.patients, args.instances, args.dim, seed=0)
    splits = make_splits(labels, "binary", k=args.folds, seed=0)
    config = TrainConfig(epochs=args.epochs, patience=args.epochs + 1, batch_size=args.batch_size,
                         max_instances=None, lr=1e-4)
    size_mb = args.patients * args.instances * args.dim * 4 / 2**20
    print(f"\n## Plain {args.folds}-fold CV: {args.patients} patients x {args.instances} instances x "
          f"{args.dim} dims ({size_mb:.0f} MiB), {args.epochs} epochs, batch {args.batch_size}, ABMIL hidden "
          f"{args.hidden}, {args.threads} torch thread(s), {args.workers} loader workers")
    with tempfile.TemporaryDirectory(prefix="clear-bench-perf-") as tmp:
        folder = Path(tmp)
        for scan_id, bag in bags.items():
            with h5py.File(folder / f"{scan_id}.h5", "w") as h5:
                h5.create_dataset("feats", data=bag.embeddings)
        times: dict[str, list[float]] = {"ceiling": [], "harness": [], "pad": [], "public": []}
        for _ in range(args.repeats):
            times["ceiling"].append(ceiling(bags, labels, splits, config, args.hidden))
            t_harness, t_pad = harness(bags, labels, splits, config, args.hidden)
            times["harness"].append(t_harness)
            times["pad"].append(t_pad)
            times["public"].append(public_pattern(folder, labels, splits, config, args.hidden, args.workers,
                                                  args.dim))
    t_ceiling, t_harness, t_pad, t_public = (min(times[k]) for k in ("ceiling", "harness", "pad", "public"))
    print(f"{'':<28}{'seconds':>10}{'x ceiling':>12}")
    rows = [("ceiling (tensors in memory)", t_ceiling), ("harness (run_crossval)", t_harness),
            ("harness incl. padding once", t_harness + t_pad), ("public pattern (HDF5+loader)", t_public)]
    for name, seconds in rows:
        print(f"{name:<28}{seconds:>10.1f}{seconds / t_ceiling:>12.2f}")
    print(f"harness / ceiling = {t_harness / t_ceiling:.2f} (target <= 1.2); "
          f"public / harness = {t_public / t_harness:.2f} (target > 1)")
    sequential = batched_vs_sequential(pad_bags(bags, splits.scan_ids), labels, "binary",
                                       [CrossValRun(labels, splits)], config, args.hidden)
    print(f"batched {args.folds} folds as one stack vs one by one: {sequential:.2f}x faster")
    return {"patients": args.patients, "instances": args.instances, "dim": args.dim, "epochs": args.epochs,
            "ceiling_s": t_ceiling, "harness_s": t_harness, "padding_s": t_pad, "public_s": t_public,
            "harness_vs_ceiling": t_harness / t_ceiling, "public_vs_harness": t_public / t_harness,
            "stacked_vs_one_by_one": sequential}


def board_data(dim: int, patients: int = 200, instances: int = 80):
    bags, labels = planted_bags(patients, instances, dim, n_labels=8, n_signal=4, amplitude=1.5, seed=0,
                                n_windows=3)
    return bags, labels, make_splits(labels, "multilabel", k=5, seed=0)


def board_config() -> TrainConfig:
    """The default board's head training (benchmarks/all.yaml)."""
    return TrainConfig(epochs=60, patience=10, lr=1e-3, batch_size=32)


def row_runs(labels, splits, repeats: int = 3, permutations: int = 20) -> list[CrossValRun]:
    runs = [CrossValRun(labels, splits)]
    runs += [CrossValRun(labels, make_splits(labels, "multilabel", k=5, seed=r)) for r in range(1, repeats)]
    runs += [CrossValRun(permute_labels(labels, None, seed=1000 + p), splits, f"permutation-{p}")
             for p in range(permutations)]
    return runs


def members(padded: PaddedBags, runs: list[CrossValRun]) -> list[Member]:
    out = []
    for run in runs:
        rows = [np.asarray(run.labels[i], dtype=np.float32).reshape(-1) for i in padded.ids]
        targets = torch.from_numpy(np.stack(rows))
        out += [Member(padded.rows(f.train), padded.rows(f.val), targets, fold_seed(0, k))
                for k, f in enumerate(run.splits.folds)]
    return out


def batched_vs_sequential(padded, labels, label_type, runs, config, hidden,
                          limit: int | None = None) -> float:
    """Seconds of the members one at a time over seconds of them as stacks (both the same results), on
    the first ``limit`` members of ``runs``."""
    width = len(next(iter(labels.values())))
    group = members(padded, runs)[:limit]

    def build():
        return SPECS["abmil"].build(padded.dim, width, {"hidden_dim": hidden, "attention_dim": hidden // 2})

    start = time.perf_counter()
    train_members(build, group, padded, label_type, width, config)
    batched = time.perf_counter() - start
    start = time.perf_counter()
    for member in group:
        train_members(build, [member], padded, label_type, width, config)
    return (time.perf_counter() - start) / batched


def board_arm(args) -> list[dict]:
    """Batched vs sequential heads and a row's 115 trainings vs its plain CV, at the default board's size."""
    config = board_config()
    print(f"\n## Default board size: 200 bags x 80 instances, 8 labels, 5 folds, epochs {config.epochs}, "
          f"patience {config.patience}, ABMIL hidden {args.hidden}, {args.threads} torch thread(s)")
    print(f"{'dims':>6}{'5-fold s':>10}{'x ceiling':>11}{'115 batched s':>15}{'x 5-fold':>10}"
          f"{f'stacked vs 1 by 1 ({args.sequential})':>26}")
    figures = []
    for dim in args.board_dims:
        bags, labels, splits = board_data(dim)
        padded = pad_bags(bags, splits.scan_ids)
        fixed = TrainConfig(epochs=config.epochs, patience=config.epochs + 1, lr=config.lr,
                            batch_size=config.batch_size)
        t_ceiling = ceiling_multilabel(bags, labels, splits, fixed, args.hidden)
        spec = SPECS["abmil"]
        options = {"hidden_dim": args.hidden, "attention_dim": args.hidden // 2}
        start = time.perf_counter()
        run_crossval(padded, labels, "multilabel", [str(i) for i in range(8)], splits, spec, options, fixed,
                     bagset_fingerprint="perf")
        t_fixed = time.perf_counter() - start
        start = time.perf_counter()
        run_crossval(padded, labels, "multilabel", [str(i) for i in range(8)], splits, spec, options, config,
                     bagset_fingerprint="perf")
        t_plain = time.perf_counter() - start
        runs = row_runs(labels, splits)
        start = time.perf_counter()
        run_crossvals(padded, runs, "multilabel", [str(i) for i in range(8)], spec, options, config,
                      bagset_fingerprint="perf")
        t_row = time.perf_counter() - start
        speedup = batched_vs_sequential(padded, labels, "multilabel", runs, config, args.hidden,
                                        args.sequential)
        print(f"{dim:>6}{t_plain:>10.1f}{t_fixed / t_ceiling:>11.2f}{t_row:>15.1f}{t_row / t_plain:>10.2f}"
              f"{speedup:>18.2f}x")
        figures.append({"dim": dim, "plain_s": t_plain, "fixed_epochs_s": t_fixed, "ceiling_s": t_ceiling,
                        "fixed_vs_ceiling": t_fixed / t_ceiling, "row_115_s": t_row,
                        "row_vs_plain": t_row / t_plain, "stacked_vs_one_by_one": speedup,
                        "one_by_one_members": args.sequential})
    print("x ceiling: plain 5-fold CV without early stopping against its ceiling (target <= 1.2); "
          "x 5-fold: a row's 115 trainings against its plain 5-fold CV, both early-stopping (target <= 3)")
    return figures


def ceiling_multilabel(bags, labels, splits, config: TrainConfig, hidden: int) -> float:
    """The ceiling at the board's size: the same passes (8-label head) on prepared batches."""
    rng = np.random.default_rng(0)
    prepared = [(batches_of(bags, labels, f.train, config.batch_size, rng),
                 batches_of(bags, labels, f.val, config.batch_size * 2),
                 batches_of(bags, labels, f.test, config.batch_size * 2)) for f in splits.folds]
    dim = next(iter(bags.values())).dim
    start = time.perf_counter()
    for index, (train, val, test) in enumerate(prepared):
        torch.manual_seed(fold_seed(config.seed, index))
        model = ABMIL(dim, 8, hidden_dim=hidden, attention_dim=hidden // 2, dropout=0.25)
        targets = torch.cat([y for _, _, y in train])
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        passes(model, make_loss("multilabel", targets, 8), optimizer, config.epochs, train, val, test)
    return time.perf_counter() - start


def parallel_arm(args) -> dict:
    """Rows (2 encoders x 3 heads, 5-fold CV each) in 2 forked workers vs serially."""
    config = board_config()
    encoders = {dim: board_data(dim) for dim in (192, 384)}
    rows = []
    for dim, (bags, labels, splits) in encoders.items():
        padded = pad_bags(bags, splits.scan_ids)
        for head in ("abmil", "pma", "mean-pool"):
            rows.append((padded, labels, splits, head, dim))

    def job(row, results_dir):
        padded, labels, splits, head, dim = row
        return lambda: run_crossval(padded, labels, "multilabel", [str(i) for i in range(8)], splits,
                                    SPECS[head], {"hidden_dim": args.hidden}, config,
                                    bagset_fingerprint=f"perf-{dim}", results_dir=results_dir)

    with tempfile.TemporaryDirectory(prefix="clear-bench-perf-") as tmp:
        start = time.perf_counter()
        for row in rows:
            job(row, Path(tmp) / "serial")()
        serial = time.perf_counter() - start
        largest_first = sorted(rows, key=lambda row: -row[0].x.numel())
        start = time.perf_counter()
        run_in_workers([job(row, Path(tmp) / "parallel") for row in largest_first], args.processes)
        parallel = time.perf_counter() - start
    print("\n## Rows in parallel: 2 encoders (192, 384 dims) x 3 heads, 5-fold CV each, default board size")
    print(f"serial (1 process, {torch.get_num_threads()} thread) {serial:.1f} s; {args.processes} forked "
          f"workers x 1 thread {parallel:.1f} s; parallel speed-up {serial / parallel:.2f}x "
          "(target >= 1.7 on 2 cores)")
    return {"serial_s": serial, "parallel_s": parallel, "processes": args.processes,
            "speedup": serial / parallel}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arms", nargs="+", default=["ceiling", "board", "parallel"],
                        choices=["ceiling", "board", "parallel"])
    parser.add_argument("--patients", type=int, default=500)
    parser.add_argument("--instances", type=int, default=256)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=4, help="DataLoader workers of the public pattern")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the training process")
    parser.add_argument("--processes", type=int, default=2, help="worker processes of the parallel arm")
    parser.add_argument("--board-dims", type=int, nargs="+", default=[44, 192],
                        help="embedding widths of the default-board arm")
    parser.add_argument("--sequential", type=int, default=25,
                        help="members of the row trained both ways for the stacked-vs-one-by-one ratio")
    parser.add_argument("--repeats", type=int, default=1,
                        help="rounds of the ceiling arm; the minimum is kept")
    parser.add_argument("--json", metavar="PATH", help="also write the figures to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message=".*worker processes in total.*")
    # The first optimizer of a process pays torch's lazy imports: pay them before any clock starts.
    warm = build(8, 16)
    torch.optim.AdamW(warm.parameters()).step()
    figures: dict = {"threads": args.threads, "cpus": os.cpu_count(), "load_before": os.getloadavg()[0]}
    if "ceiling" in args.arms:
        figures["ceiling"] = ceiling_arm(args)
    if "board" in args.arms:
        figures["board"] = board_arm(args)
    if "parallel" in args.arms:
        figures["parallel"] = parallel_arm(args)
    figures["load_after"] = os.getloadavg()[0]
    if args.json:
        atomic_write_text(Path(args.json), json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
