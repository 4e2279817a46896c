"""Training of one MIL head on one fold: AdamW, class-balanced loss, early stopping on validation loss.

:func:`train_fold` builds a fresh model from the factory inside a private RNG scope seeded by
``fold_seed(config.seed, fold)``: the initial weights depend on the seed and the fold only (never on an
earlier fold), and the caller's global RNG state is left untouched. Minibatches are rows indexed out of
the :class:`~clear_bench.evaluation.bags.PaddedBags` tensors; instances are subsampled at random only
for training (``max_instances``); validation and test bags are used whole. The best state (lowest
validation loss) is a deep copy and is what the returned model holds.
"""

from __future__ import annotations

import copy
import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from clear_bench.evaluation.bags import PaddedBags, subsample_instances
from clear_bench.evaluation.settings import TrainConfig
from clear_bench.specs import stable_hash


@dataclass
class TrainedFold:
    """A trained model (best state loaded) with its training curve."""

    model: nn.Module
    curve: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    init_digest: str = ""
    seconds: float = 0.0


def fold_seed(seed: int, fold: int) -> int:
    """The seed of fold ``fold``: different per fold, identical for every encoder and aggregator."""
    return int(stable_hash(["fold-seed", int(seed), int(fold)]), 16) % (2**31 - 1)


def parameter_digest(model: nn.Module) -> str:
    """A hash of every parameter and buffer value (identifies a set of weights)."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def class_weights(label_type: str, train_targets: torch.Tensor, n_outputs: int) -> torch.Tensor:
    """The training fold's class balance: ``pos_weight = n_negative / n_positive`` per label for binary /
    multi-label (1 where a label has no positive or no negative), inverse-frequency weights
    ``n / (C * n_c)`` per class for multi-class (rare classes weigh more; classes absent from the
    training fold get weight 1, they have no sample to weigh)."""
    if label_type == "multiclass":
        counts = torch.bincount(train_targets.long(), minlength=n_outputs).float()
        balanced = counts.sum() / (n_outputs * counts.clamp(min=1))
        return torch.where(counts > 0, balanced, torch.ones_like(counts))
    positives = train_targets.float().sum(dim=0)
    negatives = train_targets.shape[0] - positives
    return torch.where((positives > 0) & (negatives > 0), negatives / positives.clamp(min=1),
                       torch.ones_like(positives))


def make_loss(label_type: str, train_targets: torch.Tensor, n_outputs: int) -> nn.Module:
    """The training-fold-balanced loss (:func:`class_weights`): ``BCEWithLogitsLoss`` with
    ``pos_weight`` for binary / multi-label, weighted ``CrossEntropyLoss`` for multi-class."""
    weights = class_weights(label_type, train_targets, n_outputs)
    if label_type == "multiclass":
        return nn.CrossEntropyLoss(weight=weights)
    return nn.BCEWithLogitsLoss(pos_weight=weights)


def probabilities(label_type: str, logits: torch.Tensor) -> torch.Tensor:
    """Softmax for multi-class, sigmoid per label otherwise."""
    return torch.softmax(logits, dim=1) if label_type == "multiclass" else torch.sigmoid(logits)


def train_fold(build: Callable[[], nn.Module], bags: PaddedBags, targets: torch.Tensor, label_type: str,
               n_outputs: int, train_rows: torch.Tensor, val_rows: torch.Tensor, config: TrainConfig,
               seed: int) -> TrainedFold:
    """Train a fresh model on ``train_rows``, early-stopping on the loss of ``val_rows``.

    ``targets`` holds one row per bag: float 0/1 ``[B, L]`` or int64 class indices ``[B]`` (multi-class);
    ``n_outputs`` is the width of the head's logits.
    ``bags`` and ``targets`` are expected on ``config.device`` already.
    """
    device = torch.device(config.device)
    fork_devices = [device.index or 0] if device.type == "cuda" else []
    if len(train_rows) == 0 or len(val_rows) == 0:
        raise ValueError(f"a fold needs training and validation bags, got {len(train_rows)} and "
                         f"{len(val_rows)}")
    started = time.perf_counter()
    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(seed)
        model = build().to(device)
        init_digest = parameter_digest(model)
        if config.standardize:
            model = Standardized(model, *instance_moments(bags, train_rows))
        loss_fn = make_loss(label_type, targets[train_rows.to(targets.device)], n_outputs).to(device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        generator = torch.Generator(device="cpu").manual_seed(seed)
        best_loss, best_epoch, best_state, curve = math.inf, 0, None, []
        for epoch in range(1, config.epochs + 1):
            model.train()
            order = train_rows[torch.randperm(len(train_rows), generator=generator)]
            total, seen = 0.0, 0
            for start in range(0, len(order), config.batch_size):
                rows = order[start:start + config.batch_size]
                x, mask = bags.batch(rows.to(bags.x.device))
                x, mask = subsample_instances(x, mask, config.max_instances, generator)
                loss = loss_fn(model(x, mask).logits, targets[rows.to(targets.device)])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * len(rows)
                seen += len(rows)
            val_loss = evaluate_loss(model, bags, targets, val_rows, loss_fn, config.batch_size * 2)
            curve.append({"epoch": epoch, "train_loss": total / max(seen, 1), "val_loss": val_loss})
            if val_loss < best_loss:
                best_loss, best_epoch = val_loss, epoch
                best_state = copy.deepcopy(model.state_dict())
            elif epoch - best_epoch >= config.patience:
                break
        if best_state is not None:
            model.load_state_dict(best_state)
    model.eval()
    return TrainedFold(model, curve, best_epoch, init_digest, time.perf_counter() - started)


class Standardized(nn.Module):
    """A MIL head behind a fixed per-dimension z-score of its instances (padding stays zero)."""

    def __init__(self, head: nn.Module, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.head = head
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, x: torch.Tensor, mask: torch.Tensor):  # -> AggregatorOutput
        # x / std - mean / std in one fused pass; masked_fill, not a product: padding may hold anything,
        # and inf * 0 is NaN.
        scale = 1.0 / self.std
        standardized = torch.addcmul(-self.mean * scale, x, scale).masked_fill_(~mask.unsqueeze(-1), 0.0)
        return self.head(standardized, mask)


@torch.no_grad()
def instance_moments(bags: PaddedBags, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation of every dimension over the real instances of ``rows`` (from the bags'
    per-bag sums, see :meth:`PaddedBags.instance_sums`); a dimension constant in training gets an
    infinite std (it is standardised to 0)."""
    sums, squares, shift = bags.instance_sums()
    index = rows.to(sums.device)
    count = max(int(bags.lengths[rows.cpu()].sum()), 1)
    centred = sums[index].sum(0) / count
    std = (squares[index].sum(0) / count - centred * centred).clamp(min=0).sqrt()
    mean = centred + shift.double()
    # A dimension constant over the training instances carries nothing the head can learn; scaling it by
    # a clamped tiny std would blow test-time deviations up to ~1e4. An infinite std maps it to 0 instead.
    std = torch.where(std > 1e-6 * (1.0 + mean.abs()), std, torch.full_like(std, math.inf))
    return mean.float(), std.float()


@torch.no_grad()
def evaluate_loss(model: nn.Module, bags: PaddedBags, targets: torch.Tensor, rows: torch.Tensor,
                  loss_fn: nn.Module, batch_size: int) -> float:
    """Mean loss of whole (deterministic) bags ``rows``."""
    model.eval()
    total = 0.0
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        x, mask = bags.batch(chunk.to(bags.x.device))
        total += float(loss_fn(model(x, mask).logits, targets[chunk.to(targets.device)])) * len(chunk)
    return total / max(len(rows), 1)


@torch.no_grad()
def predict(model: nn.Module, bags: PaddedBags, rows: torch.Tensor, label_type: str,
            batch_size: int = 64) -> tuple[np.ndarray, list[np.ndarray]]:
    """Probabilities ``[n, n_outputs]`` and per-bag attention (one array per real instance) of ``rows``."""
    model.eval()
    probs, attention = [], []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        x, mask = bags.batch(chunk.to(bags.x.device))
        out = model(x, mask)
        probs.append(probabilities(label_type, out.logits).float().cpu().numpy())
        weights = out.attention.float().cpu().numpy()
        lengths = bags.lengths[chunk.to(bags.lengths.device)].cpu().numpy()
        attention.extend(weights[i, :lengths[i]].copy() for i in range(len(chunk)))
    return np.concatenate(probs, axis=0) if probs else np.zeros((0, 0)), attention
