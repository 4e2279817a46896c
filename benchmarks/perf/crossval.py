"""Wall time of K-fold ABMIL cross-validation: the harness against its compute ceiling and the public
CLEAR data pattern, measured side by side in one run on one synthetic feature set.

- ceiling: the same forward/backward passes (same model, batches, epochs, validation and test passes)
  on minibatch tensors prepared in memory before the clock starts: no indexing, no I/O.
- harness: ``run_crossval`` on bags padded once into tensors (minibatches by indexing). The padding
  (done once per encoder and task) is timed separately.
- public pattern: each bag in its own ``{id}.h5`` (dataset ``feats``), read per item and per epoch by a
  ``Dataset`` through a ``DataLoader`` with worker processes, as the public CLEAR training code does.

Early stopping is off (patience > epochs) so that all three do the same number of passes.

    uv run python benchmarks/perf/crossval.py                      # 500 x 256 x 768, 5 folds
    uv run python benchmarks/perf/crossval.py --patients 200 --dim 384 --epochs 2   # quicker
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from clear_bench.aggregators.abmil import ABMIL
from clear_bench.builtin import clear_bench_aggregators
from clear_bench.evaluation.bags import Bag, pad_bags
from clear_bench.evaluation.crossval import run_crossval
from clear_bench.evaluation.splits import make_splits
from clear_bench.evaluation.training import TrainConfig, fold_seed, make_loss


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, default=500)
    parser.add_argument("--instances", type=int, default=256)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=4, help="DataLoader workers of the public pattern")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the training process")
    parser.add_argument("--repeats", type=int, default=1, help="rounds of all three; the minimum is kept")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message=".*worker processes in total.*")
    # The first optimizer of a process pays torch's lazy imports: pay them before any clock starts.
    warm = build(8, 16)
    torch.optim.AdamW(warm.parameters()).step()

    bags, labels = synthetic(args.patients, args.instances, args.dim, seed=0)
    splits = make_splits(labels, "binary", k=args.folds, seed=0)
    config = TrainConfig(epochs=args.epochs, patience=args.epochs + 1, batch_size=args.batch_size,
                         max_instances=None, lr=1e-4)
    size_mb = args.patients * args.instances * args.dim * 4 / 2**20
    print(f"{args.patients} patients x {args.instances} instances x {args.dim} dims ({size_mb:.0f} MiB), "
          f"{args.folds} folds x {args.epochs} epochs, batch {args.batch_size}, ABMIL hidden {args.hidden}, "
          f"{args.threads} torch thread(s), {args.workers} loader workers")
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


if __name__ == "__main__":
    main()
