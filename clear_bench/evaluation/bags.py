"""Bags of instance embeddings and their padding into dense tensors.

A :class:`Bag` is what the embedding cache serves per scan: one row per (slice, window) instance. The
cross-validation pads every bag of a task once into ``x [B, N, D]`` with ``mask [B, N]`` (True = real
instance) and indexes minibatches out of those tensors. Random instance subsampling happens only while
training (:func:`subsample_mask`); evaluation bags are deterministic (:func:`evaluation_indices`).
No instance is ever chosen because of a label or a lesion annotation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Bag:
    """One scan's instances: ``embeddings`` float32 ``[N, D]``, ``slice_index`` and ``window_id`` int64 ``[N]``.

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
