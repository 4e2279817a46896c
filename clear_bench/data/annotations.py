"""Lesion annotations as per-slice boxes: DeepLesion ``DL_info.csv``, segmentation masks, seed lesion CSV."""

from __future__ import annotations

LESION_TYPES: tuple[str, ...] = (
    "bone", "abdomen", "mediastinum", "liver", "lung", "kidney", "soft tissue", "pelvis",
)
"""DeepLesion's eight coarse lesion types, in the order of their codes 1..8 in ``Coarse_lesion_type``."""
