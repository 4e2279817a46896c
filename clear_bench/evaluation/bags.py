"""Bags of instance embeddings and their padding into dense tensors.

A :class:`Bag` is what the embedding cache serves per scan: one row per (slice, window) instance. The
cross-validation pads every bag of a task once into ``x [B, N, D]`` with ``mask [B, N]`` (True = real
instance) and indexes minibatches out of those tensors. Random instance subsampling happens only while
training (:func:`subsample_mask`); evaluation bags are deterministic (:func:`evaluation_indices`).
No instance is ever chosen because of a label or a lesion annotation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass(eq=False)
class Bag:
    """One scan's instances: ``embeddings`` float32 ``[N, D]``, ``slice_index``, ``window_id`` int64 ``[N]``.

    Row ``i`` is the embedding of axial slice ``slice_index[i]`` under HU window ``window_id[i]``.
    """

    embeddings: np.ndarray
    slice_index: np.ndarray
    window_id: np.ndarray

    def __post_init__(self) -> None:
        self.embeddings = np.asarray(self.embeddings, dtype=np.float32)
        self.slice_index = np.asarray(self.slice_index, dtype=np.int64)
        self.window_id = np.asarray(self.window_id, dtype=np.int64)
        n = self.embeddings.shape[0]
        if self.embeddings.ndim != 2 or self.slice_index.shape != (n,) or self.window_id.shape != (n,):
            raise ValueError(
                f"Bag needs embeddings [N, D], slice_index [N], window_id [N]; got "
                f"{self.embeddings.shape}, {self.slice_index.shape}, {self.window_id.shape}"
            )

    def __len__(self) -> int:
        return int(self.embeddings.shape[0])

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])


@dataclass(eq=False)
class PaddedBags:
    """Every bag of a task padded once into dense tensors, rows in the order of ``ids``.

    ``x [B, N, D]`` float32 (zeros on padding), ``mask [B, N]`` bool (True = real instance),
    ``slice_index`` / ``window_id`` ``[B, N]`` int64 (-1 on padding), ``lengths [B]`` int64.
    """

    ids: list[str]
    x: torch.Tensor
    mask: torch.Tensor
    slice_index: torch.Tensor
    window_id: torch.Tensor
    lengths: torch.Tensor
    # Caches of values derived from ``x`` (not init fields: ``dataclasses.replace`` starts them afresh).
    _sums: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = field(default=None, init=False,
                                                                          repr=False)
    _centred: tuple[torch.Tensor, torch.Tensor] | None = field(default=None, init=False, repr=False)

    def __len__(self) -> int:
        return len(self.ids)

    @torch.no_grad()
    def instance_sums(self, chunk: int = 64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per bag, the sum and sum of squares of its real instances minus ``shift`` (``[B, D]`` each,
        float64), and ``shift [D]``; computed once, so the statistics of any set of bags are sums of rows.
        The shift (the first bag's mean) keeps float32 sums of squares free of cancellation; padding
        holding anything (even NaN) does not count."""
        if self._sums is None:
            sums = torch.zeros(len(self), self.dim, dtype=torch.float64, device=self.x.device)
            squares = torch.zeros_like(sums)
            first = self.x[0, :max(int(self.lengths[0]), 1)]
            shift = torch.where(torch.isfinite(first), first, 0.0).mean(0)
            for start in range(0, len(self), chunk):
                mask = self.mask[start:start + chunk].unsqueeze(-1)
                x = torch.where(mask, self.x[start:start + chunk] - shift, 0.0)
                sums[start:start + chunk] = x.sum(1).double()
                squares[start:start + chunk] = (x * x).sum(1).double()
            self._sums = (sums, squares, shift)
        return self._sums

    @torch.no_grad()
    def centred(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` minus the mean of every real instance (``[B, N, D]``, zeros on padding) and that mean
        ``[D]``; made once. Heads that fold a fold's standardisation into their weights read these, so the
        folded shift is a fold's small deviation from the overall mean, not the raw offset of the features
        (which float32 would cancel badly)."""
        if self._centred is None:
            sums, _, shift = self.instance_sums()
            centre = (sums.sum(0) / max(int(self.lengths.sum()), 1) + shift.double()).float()
            x = torch.empty_like(self.x)
            for start in range(0, len(self), 64):
                mask = self.mask[start:start + 64].unsqueeze(-1)
                x[start:start + 64] = torch.where(mask, self.x[start:start + 64] - centre, 0.0)
            self._centred = (x, centre)
        return self._centred

    @property
    def dim(self) -> int:
        return int(self.x.shape[2])

    def rows(self, ids: Sequence[str]) -> torch.Tensor:
        """Row indices of ``ids`` (int64), in the order given."""
        position = {scan_id: i for i, scan_id in enumerate(self.ids)}
        missing = [scan_id for scan_id in ids if scan_id not in position]
        if missing:
            raise KeyError(f"{len(missing)} scan ids have no bag, e.g. {missing[:3]}")
        return torch.tensor([position[scan_id] for scan_id in ids], dtype=torch.int64)

    def batch(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, mask)`` of ``rows``, trimmed to the longest bag among them (no copy beyond the index)."""
        longest = int(self.lengths[rows.cpu()].max()) if len(rows) else 0
        return self.x[rows, :longest], self.mask[rows, :longest]


def evaluation_indices(length: int, cap: int | None) -> np.ndarray:
    """Instances an evaluation bag keeps: all of them, or ``cap`` evenly spaced ones (first and last kept).

    Deterministic and blind to labels and lesion annotations.
    """
    if cap is None or length <= cap:
        return np.arange(length, dtype=np.int64)
    if cap < 1:
        raise ValueError(f"instance cap must be positive, got {cap}")
    return np.unique(np.round(np.linspace(0, length - 1, cap)).astype(np.int64))


def pad_bags(bags: Mapping[str, Bag], ids: Sequence[str], cap: int | None = None) -> PaddedBags:
    """Pad the bags of ``ids`` into one :class:`PaddedBags`, keeping at most ``cap`` instances per bag
    (evenly spaced, see :func:`evaluation_indices`). Raises ``KeyError`` for an id without a bag and
    ``ValueError`` for an empty bag or inconsistent embedding widths."""
    ids = list(ids)
    missing = [scan_id for scan_id in ids if scan_id not in bags]
    if missing:
        raise KeyError(f"{len(missing)} of {len(ids)} scans have no bag, e.g. {missing[:3]}")
    if not ids:
        raise ValueError("no bags to pad")
    dims = {bags[scan_id].dim for scan_id in ids}
    if len(dims) != 1:
        raise ValueError(f"bags have different embedding widths {sorted(dims)}")
    keep = {scan_id: evaluation_indices(len(bags[scan_id]), cap) for scan_id in ids}
    empty = [scan_id for scan_id in ids if len(keep[scan_id]) == 0]
    if empty:
        raise ValueError(f"{len(empty)} bags have no instance, e.g. {empty[:3]}")
    n_max = max(len(k) for k in keep.values())
    dim = dims.pop()
    x = torch.zeros(len(ids), n_max, dim, dtype=torch.float32)
    mask = torch.zeros(len(ids), n_max, dtype=torch.bool)
    slice_index = torch.full((len(ids), n_max), -1, dtype=torch.int64)
    window_id = torch.full((len(ids), n_max), -1, dtype=torch.int64)
    lengths = torch.zeros(len(ids), dtype=torch.int64)
    for row, scan_id in enumerate(ids):
        bag, k = bags[scan_id], keep[scan_id]
        n = len(k)
        x[row, :n] = torch.from_numpy(bag.embeddings[k])
        mask[row, :n] = True
        slice_index[row, :n] = torch.from_numpy(bag.slice_index[k])
        window_id[row, :n] = torch.from_numpy(bag.window_id[k])
        lengths[row] = n
    return PaddedBags(ids, x, mask, slice_index, window_id, lengths)


def subsample_instances(x: torch.Tensor, mask: torch.Tensor, max_instances: int | None,
                        generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Training-time augmentation: keep at most ``max_instances`` real instances per bag, drawn uniformly
    at random (kept in their original order). Bags that are short enough pass through unchanged."""
    if max_instances is None or x.shape[1] <= max_instances:
        return x, mask
    # Random keys for real instances, +inf for padding: the smallest keys are a uniform random subset.
    keys = torch.rand(mask.shape, generator=generator).to(mask.device).masked_fill(~mask, float("inf"))
    chosen = keys.topk(max_instances, dim=1, largest=False).indices.sort(dim=1).values
    x_sub = torch.gather(x, 1, chosen.unsqueeze(-1).expand(-1, -1, x.shape[2]))
    return x_sub, torch.gather(mask, 1, chosen)
