"""Training many heads of one (bags, aggregator) at once: the folds, repeats and label permutations of a row.

Every member is what :func:`clear_bench.evaluation.training.train_fold` would train: a fresh head built
under ``torch.manual_seed(member.seed)``, standardised with its training rows' statistics, a
class-balanced loss from its own targets, AdamW, its own data order, early stopping on its own
validation loss and its own best state. The members run as one stacked module
(:mod:`~clear_bench.evaluation.ensemble`): each step gathers every member's minibatch into
``x [E, b, N, D]``, and one forward and backward pass trains them all. A member that stops early leaves the
stack. Each member's randomness (data order, instance subsets, dropout) comes from its own generator,
seeded like its fold, and batches span the task's full bag width, so a member gives the same result
trained alone or among others (float tolerance; see ``tests/evaluation/test_batched.py``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from clear_bench.evaluation.bags import PaddedBags
from clear_bench.evaluation.ensemble import (
    MemberAdamW,
    MemberLinear,
    MemberStreams,
    member_state,
    select_members,
    stack_heads,
)
from clear_bench.evaluation.settings import TrainConfig
from clear_bench.evaluation.training import (
    Standardized,
    TrainedFold,
    class_weights,
    instance_moments,
    parameter_digest,
)

STACK_BYTES = {"cpu": 32 << 20, "cuda": 1 << 30}
"""Members per stack are chosen so that one training batch of all of them (inputs and activations) stays
under this many bytes. On a CPU a head's step on default-board bags is already compute-bound, and a
stack whose activations leave the caches is slower per member than a small one
(``benchmarks/perf/crossval.py``); on a GPU a small head's step is launch-bound and wide stacks pay."""


@dataclass(frozen=True)
class Member:
    """One head to train: its rows of the padded bags, its targets (one row per bag) and its seed;
    ``lr`` and ``weight_decay`` override the config's for this member (a tuning candidate)."""

    train_rows: torch.Tensor
    val_rows: torch.Tensor
    targets: torch.Tensor
    seed: int
    lr: float | None = None
    weight_decay: float | None = None


def members_per_stack(bags: PaddedBags, config: TrainConfig, hidden: int = 512,
                      budget: int | None = None) -> int:
    """How many members one stack holds: a batch's inputs and activations (about ``hidden`` floats per
    instance) of every member within ``budget`` bytes (default: :data:`STACK_BYTES` of the device)."""
    if budget is None:
        budget = STACK_BYTES.get(torch.device(config.device).type, STACK_BYTES["cpu"])
    width = bags.x.shape[1] if config.max_instances is None else min(bags.x.shape[1], config.max_instances)
    per_member = config.batch_size * width * (bags.dim + hidden) * 4
    return max(1, budget // max(per_member, 1))


def train_members(build: Callable[[], nn.Module], members: Sequence[Member], bags: PaddedBags,
                  label_type: str, n_outputs: int, config: TrainConfig,
                  stack_size: int | None = None, input_layer: str | None = None) -> list[TrainedFold]:
    """Train every member (in stacks of ``stack_size``, default :func:`members_per_stack`); one
    :class:`TrainedFold` per member, in order, each holding a single head with its best state.
    ``input_layer`` (see :attr:`~clear_bench.specs.AggregatorSpec.input_layer`) names the layer that the
    input standardisation is folded into; without it every minibatch is standardised."""
    size = stack_size or members_per_stack(bags, config)
    trained: list[TrainedFold] = []
    for start in range(0, len(members), size):
        trained += _train_stack(build, list(members[start:start + size]), bags, label_type, n_outputs, config,
                                input_layer)
    return trained


def _train_stack(build: Callable[[], nn.Module], members: list[Member], bags: PaddedBags, label_type: str,
                 n_outputs: int, config: TrainConfig, input_layer: str | None) -> list[TrainedFold]:
    device = torch.device(config.device)
    for member in members:
        if len(member.train_rows) == 0 or len(member.val_rows) == 0:
            raise ValueError(f"a fold needs training and validation bags, got {len(member.train_rows)} and "
                             f"{len(member.val_rows)}")
    started = time.perf_counter()
    heads, digests = [], []
    for member in members:
        with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
            torch.manual_seed(member.seed)
            heads.append(build().to(device))
        digests.append(parameter_digest(heads[-1]))
    streams = MemberStreams([torch.Generator(device="cpu").manual_seed(m.seed) for m in members])
    stacked = stack_heads(heads, streams).to(device)
    moments = _moments(bags, members, config)
    folded = config.standardize and input_layer is not None
    if folded:
        _fold_standardization(stacked, input_layer, moments, bags.centred()[1], device)
    inputs = StandardizedInputs(bags, members, moments if config.standardize and not folded else None,
                                centred=folded)
    targets = torch.stack([m.targets for m in members]).to(device)
    weights = torch.stack([class_weights(label_type, m.targets[m.train_rows], n_outputs)
                           for m in members]).to(device)
    optimizer = MemberAdamW(
        list(stacked.parameters()), len(members), [config.lr if m.lr is None else m.lr for m in members],
        [config.weight_decay if m.weight_decay is None else m.weight_decay for m in members])

    alive = list(range(len(members)))  # positions in ``members`` of the stack's current members
    best_loss = [math.inf] * len(members)
    best_epoch = [0] * len(members)
    best_state: list[dict[str, torch.Tensor] | None] = [None] * len(members)
    curves: list[list[dict[str, float]]] = [[] for _ in members]
    final_state: list[dict[str, torch.Tensor] | None] = [None] * len(members)
    subsample = config.max_instances is not None and bags.x.shape[1] > config.max_instances
    for epoch in range(1, config.epochs + 1):
        stacked.train()
        orders = [members[i].train_rows[torch.randperm(len(members[i].train_rows), generator=g)]
                  for i, g in zip(alive, streams.generators, strict=True)]
        steps = max(math.ceil(len(o) / config.batch_size) for o in orders)
        totals = torch.zeros(len(alive), dtype=torch.float64)
        for step in range(steps):
            chunks = [o[step * config.batch_size:(step + 1) * config.batch_size] for o in orders]
            x, mask, rows, counts = inputs.batch(chunks, streams.generators if subsample else None,
                                                 config.max_instances)
            streams.rows = counts
            logits = stacked(x, mask).logits
            losses = _member_losses(label_type, logits, _rows_of(targets, rows), weights,
                                    torch.as_tensor(counts, device=device))
            optimizer.zero_grad()
            losses.sum().backward()
            active = torch.as_tensor(counts) > 0
            optimizer.step(active)
            totals += losses.detach().double().cpu() * torch.as_tensor(counts, dtype=torch.float64)
        val = _validation_losses(stacked, inputs, members, alive, targets, weights, label_type,
                                 config.batch_size * 2, streams)
        stopped = []
        state = stacked.state_dict()  # views: each improving member copies out its own slice
        for position, index in enumerate(alive):
            seen = max(len(members[index].train_rows), 1)
            curves[index].append({"epoch": epoch, "train_loss": float(totals[position]) / seen,
                                  "val_loss": val[position]})
            if val[position] < best_loss[index]:
                best_loss[index], best_epoch[index] = val[position], epoch
                best_state[index] = member_state(state, position)
            elif epoch - best_epoch[index] >= config.patience:
                stopped.append(position)
        if epoch == config.epochs:
            stopped = list(range(len(alive)))
        for position in stopped:
            if best_state[alive[position]] is None:
                final_state[alive[position]] = member_state(state, position)
        if stopped:
            keep = [p for p in range(len(alive)) if p not in set(stopped)]
            if not keep:
                break
            alive = [alive[p] for p in keep]
            select_members(stacked, keep)
            optimizer.select(keep, list(stacked.parameters()))
            streams.select(keep)
            inputs.select(keep)
            index = torch.as_tensor(keep, device=device)
            targets, weights = targets[index], weights[index]
    seconds = (time.perf_counter() - started) / len(members)
    results = []
    for index, head in enumerate(heads):
        state = best_state[index] if best_state[index] is not None else final_state[index]
        head.load_state_dict(state)
        mean_i, std_i = moments[index]
        model = Standardized(head, mean_i.to(device), std_i.to(device)) if config.standardize else head
        model.eval()
        results.append(TrainedFold(model, curves[index], best_epoch[index], digests[index], seconds))
    return results


def _fold_standardization(stacked: nn.Module, input_layer: str,
                          moments: Sequence[tuple[torch.Tensor, torch.Tensor]], centre: torch.Tensor,
                          device: torch.device) -> None:
    """Members' z-scores as weights of ``input_layer``, applied to the centred bags."""
    layer = stacked.get_submodule(input_layer)
    if not isinstance(layer, MemberLinear):
        raise TypeError(f"input_layer {input_layer!r} is a {type(layer).__name__}, not an nn.Linear")
    layer.fold_input(torch.stack([mean - centre for mean, _ in moments]).to(device),
                     torch.stack([1.0 / std for _, std in moments]).to(device))  # 1 / inf = 0


def _moments(bags: PaddedBags, members: list[Member],
             config: TrainConfig) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Each member's standardisation (mean, std), computed once per distinct set of training rows; the
    identity (0, 1) without standardisation."""
    if not config.standardize:
        identity = (torch.zeros(bags.dim), torch.ones(bags.dim))
        return [identity for _ in members]
    cache: dict[bytes, tuple[torch.Tensor, torch.Tensor]] = {}
    out = []
    for member in members:
        key = member.train_rows.numpy().tobytes()
        if key not in cache:
            mean, std = instance_moments(bags, member.train_rows)
            cache[key] = (mean.cpu(), std.cpu())
        out.append(cache[key])
    return out


class StandardizedInputs:
    """The members' standardised minibatches, ``x [E, b, N, D]`` with ``mask``; without ``moments`` the
    bags as they are, or ``centred`` (:meth:`PaddedBags.centred`). Padding is left as it comes out of the
    standardisation (stackable heads mask it themselves, as every head must).

    Members with the same training rows share their statistics (a fold's label permutations, say).
    When one standardised copy of the bags per distinct training set fits in
    :data:`STANDARDIZED_BYTES`, the copies are made once and a minibatch is a single gather; otherwise
    each minibatch is standardised after gathering it.
    """

    def __init__(self, bags: PaddedBags, members: Sequence[Member],
                 moments: Sequence[tuple[torch.Tensor, torch.Tensor]] | None, centred: bool = False) -> None:
        if centred and moments is not None:
            raise ValueError("centred bags are for heads that standardise in their weights")
        self.bags = bags
        device = bags.x.device
        self.raw = moments is None
        self.source = bags.centred()[0] if centred else bags.x
        if moments is None:
            moments = [(torch.zeros(0), torch.ones(0))] * len(members)
        groups: dict[int, int] = {}
        for mean, _ in moments:
            groups.setdefault(id(mean), len(groups))
        self.group = torch.as_tensor([groups[id(mean)] for mean, _ in moments], dtype=torch.int64)
        distinct = {groups[id(m)]: (m, s) for m, s in moments}
        self.mean = torch.stack([distinct[g][0] for g in range(len(groups))]).to(device)
        self.scale = torch.stack([1.0 / distinct[g][1] for g in range(len(groups))]).to(device)  # 1/inf = 0
        self.copies: torch.Tensor | None = None
        if not self.raw and len(groups) * bags.x.numel() * bags.x.element_size() <= STANDARDIZED_BYTES:
            self.copies = torch.empty((len(groups), *bags.x.shape), dtype=bags.x.dtype, device=device)
            for g, copy in enumerate(self.copies):
                torch.addcmul(-self.mean[g] * self.scale[g], bags.x, self.scale[g], out=copy)

    def select(self, keep: Sequence[int]) -> None:
        """Keep the members ``keep`` only (in that order)."""
        self.group = self.group[torch.as_tensor(list(keep), dtype=torch.int64)]

    def batch(self, chunks: list[torch.Tensor], generators: list[torch.Generator] | None,
              max_instances: int | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[int]]:
        """Member ``e``'s rows ``chunks[e]`` as one batch, and the row indices ``[E, b]`` and counts; rows
        past a member's count repeat row 0 with an all-False mask. With ``generators``, each member keeps
        a random subset of ``max_instances`` instances per bag, drawn from its own generator."""
        bags, device = self.bags, self.bags.x.device
        counts = [len(c) for c in chunks]
        width = max(max(counts), 1)
        rows = torch.zeros(len(chunks), width, dtype=torch.int64)
        for member, chunk in enumerate(chunks):
            rows[member, :len(chunk)] = chunk
        real = (torch.arange(width).unsqueeze(0) < torch.as_tensor(counts).unsqueeze(1)).to(device)
        group = self.group.to(device)
        if generators is None:
            index, instances, group_index = rows.to(device), slice(None), group[:, None]
        else:
            chosen = torch.zeros(len(chunks), width, max_instances, dtype=torch.int64)
            for member, (chunk, generator) in enumerate(zip(chunks, generators, strict=True)):
                keys = torch.rand((len(chunk), bags.x.shape[1]), generator=generator)
                keys = keys.masked_fill(~bags.mask[chunk.to(device)].cpu(), math.inf)
                picked = keys.topk(max_instances, dim=1, largest=False).indices
                chosen[member, :len(chunk)] = picked.sort(dim=1).values
            index, instances = rows.unsqueeze(-1).to(device), chosen.to(device)
            group_index = group[:, None, None]
        mask = bags.mask[index, instances] & real.unsqueeze(-1)
        if self.copies is not None:
            return self.copies[group_index, index, instances], mask, rows, counts
        if self.raw:
            return self.source[index, instances], mask, rows, counts
        x = bags.x[index, instances]
        # (x - mean) / std as one fused pass: x * (1 / std) - mean / std
        scale, mean = self.scale[group][:, None, None, :], self.mean[group][:, None, None, :]
        x = torch.addcmul(-mean * scale, x, scale)
        return x, mask, rows, counts


STANDARDIZED_BYTES = 2 << 30
"""Standardised copies of the bags (one per distinct training set of a stack) are kept up to this size."""


def _rows_of(targets: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Each member's target rows ``rows [E, b]`` out of ``targets [E, B, ...]``."""
    index = rows.to(targets.device)
    return targets[torch.arange(len(index), device=targets.device).unsqueeze(1), index]


def _member_losses(label_type: str, logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor,
                   counts: torch.Tensor) -> torch.Tensor:
    """Each member's mean loss over its real rows ``[E]``: weighted BCE with logits (``pos_weight``) or
    class-weighted cross-entropy, the reductions of ``BCEWithLogitsLoss`` / ``CrossEntropyLoss``."""
    real = (torch.arange(logits.shape[1], device=logits.device).unsqueeze(0) < counts.unsqueeze(1)).float()
    if label_type == "multiclass":
        classes = targets.long()
        nll = -torch.log_softmax(logits, dim=-1).gather(-1, classes.unsqueeze(-1)).squeeze(-1)
        weight = weights.gather(1, classes) * real
        return (weight * nll).sum(1) / weight.sum(1).clamp(min=torch.finfo(weight.dtype).tiny)
    losses = F.binary_cross_entropy_with_logits(logits, targets.float(), pos_weight=weights.unsqueeze(1),
                                                reduction="none")
    return (losses.sum(-1) * real).sum(1) / (counts.clamp(min=1) * logits.shape[-1])


@torch.no_grad()
def _validation_losses(stacked: nn.Module, inputs: StandardizedInputs, members: list[Member],
                       alive: list[int], targets: torch.Tensor, weights: torch.Tensor, label_type: str,
                       batch_size: int, streams: MemberStreams) -> list[float]:
    """Mean validation loss of every alive member on its whole (deterministic) validation bags."""
    stacked.eval()
    val_rows = [members[i].val_rows for i in alive]
    totals = torch.zeros(len(alive), dtype=torch.float64)
    for start in range(0, max(len(r) for r in val_rows), batch_size):
        chunks = [r[start:start + batch_size] for r in val_rows]
        x, mask, rows, counts = inputs.batch(chunks, None, None)
        streams.rows = counts
        counted = torch.as_tensor(counts, device=x.device)
        logits = stacked(x, mask).logits
        losses = _member_losses(label_type, logits, _rows_of(targets, rows), weights, counted)
        totals += losses.double().cpu() * torch.as_tensor(counts, dtype=torch.float64)
    return [float(t) / max(len(r), 1) for t, r in zip(totals, val_rows, strict=True)]
