"""Pretraining data: LeCL / MoCo v3 views of the stored slices, the batch plan.

* The slices come from :mod:`.store` (:class:`SliceTable`: windowed uint8 slices at their native
  resolution, in RAM or memory-mapped from a disk store, with their lesion boxes).
* :class:`PretrainDataset` turns one slice into two augmented views, each cut from the stored slice and
  then resized to the training size. With ``sampling == "lesion"`` a lesion slice gives a crop centred on
  one of its lesions (side drawn in ``[sqrt(crop_min) S, S]`` for a stored side ``S``, zero-padded where
  it leaves the slice) and a view of the whole slice; every other slice (and every
  slice under ``sampling == "none"``, plain MoCo v3) gives two random resized crops. Then MoCo v3's
  asymmetric augmentations: Gaussian blur (p 1.0 / 0.1), solarisation (p 0 / 0.2), flips; brightness and
  contrast jitter only when asked for (colour jitter has no meaning on CT).
* :class:`BatchPlan` decides, per epoch, which slices form each global batch and which part of it each
  rank takes. The randomness of an item comes from ``(seed, epoch, position)`` alone, so a batch is the
  same whatever the world size, the number of loader workers or an interruption in between.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from scipy.ndimage import gaussian_filter
from torch.utils.data import Dataset, Sampler

from clear_bench.specs import ScanSource
from clear_bench_lecl.pretrain.store import SliceTable, build_slice_table

__all__ = ["Augment", "BatchPlan", "EpochBatches", "PretrainDataset", "SliceTable", "build_slice_table",
           "collate", "select_scan_ids"]


def select_scan_ids(source: ScanSource, scan_range: Sequence[int] | None) -> list[str]:
    """The source's ids, sliced by ``scan_range = [start, stop]`` of its stable order (all when ``None``)."""
    ids = list(source.scan_ids())
    if scan_range is None:
        return ids
    start, stop = scan_range
    return ids[start:stop]


# --- views ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Augment:
    """MoCo v3's two asymmetric augmentation pipelines, as probabilities per view (view 1, view 2)."""

    crop_min: float = 0.08
    blur: tuple[float, float] = (1.0, 0.1)
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    solarize: tuple[float, float] = (0.0, 0.2)
    hflip: float = 0.5
    vflip: float = 0.0
    jitter: float = 0.0
    jitter_p: float = 0.8


class PretrainDataset(Dataset):
    """``dataset[(index, seed)]`` -> ``(view1, view2, is_lesion)``, views ``[C, image_size, image_size]``
    normalised with ``(x - mean) / std``; all randomness drawn from ``seed``."""

    def __init__(
        self,
        table: SliceTable,
        image_size: int,
        channels: int,
        mean: Sequence[float],
        std: Sequence[float],
        sampling: str = "lesion",
        augment: Augment | None = None,
    ) -> None:
        if sampling not in ("lesion", "none"):
            raise ValueError(f"sampling must be 'lesion' or 'none', got {sampling!r}")
        self.table = table
        self.image_size = image_size
        self.channels = channels
        self.sampling = sampling
        self.augment = augment or Augment()
        self.mean = np.asarray(mean, dtype=np.float32).reshape(-1, 1, 1)
        self.std = np.asarray(std, dtype=np.float32).reshape(-1, 1, 1)
        self.is_lesion = table.is_lesion
        stored = set(np.unique(np.asarray(table.items["channels"])).tolist())
        if not stored <= {1, channels}:
            raise ValueError(f"stored slices have {sorted(stored)} channels; the encoder takes {channels}")

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, bool]:
        index, seed = key
        rng = np.random.default_rng(seed)
        image = self.table.image(index)  # uint8 [c, h, w] as stored: cut first, convert only the cut
        boxes = self.table.boxes[index]
        lesion = bool(len(boxes))
        if self.sampling == "lesion" and lesion:
            view1 = self._whole(image)
            view2 = self._lesion_crop(image, boxes[rng.integers(len(boxes))], rng)
        else:
            view1 = self._random_resized_crop(image, rng)
            view2 = self._random_resized_crop(image, rng)
        view1 = self._finish(self._photometric(view1, 0, rng))
        view2 = self._finish(self._photometric(view2, 1, rng))
        return view1, view2, lesion

    def _whole(self, image: np.ndarray) -> np.ndarray:
        _, h, w = image.shape
        side = max(h, w)
        top, left = (h - side) // 2, (w - side) // 2  # centre-padded to square (stored slices already are)
        return _resize(_unit(_crop_padded(image, top, left, side, side)), self.image_size)

    def _lesion_crop(self, image: np.ndarray, box: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        size = max(image.shape[-2:])
        cx, cy = (box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0
        side = max(round(rng.uniform(math.sqrt(self.augment.crop_min) * size, size)), 1)
        top, left = round(cy - side / 2.0), round(cx - side / 2.0)
        return _resize(_unit(_crop_padded(image, top, left, side, side)), self.image_size)

    def _random_resized_crop(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """torchvision's RandomResizedCrop: area in [crop_min, 1], log-uniform aspect in [3/4, 4/3]."""
        height, width = image.shape[-2:]
        area = height * width
        log_ratio = (math.log(3 / 4), math.log(4 / 3))
        for _ in range(10):
            target = area * rng.uniform(self.augment.crop_min, 1.0)
            ratio = math.exp(rng.uniform(*log_ratio))
            w = round(math.sqrt(target * ratio))
            h = round(math.sqrt(target / ratio))
            if 0 < w <= width and 0 < h <= height:
                top = int(rng.integers(0, height - h + 1))
                left = int(rng.integers(0, width - w + 1))
                return _resize(_unit(image[:, top:top + h, left:left + w]), self.image_size)
        return _resize(_unit(image), self.image_size)

    def _photometric(self, view: np.ndarray, which: int, rng: np.random.Generator) -> np.ndarray:
        aug = self.augment
        # Draw every decision in a fixed order, so one option does not shift another's random numbers.
        jitter = rng.random() < aug.jitter_p and aug.jitter > 0
        brightness, contrast = rng.uniform(1 - aug.jitter, 1 + aug.jitter, size=2)
        blur = rng.random() < aug.blur[which]
        sigma = rng.uniform(*aug.blur_sigma) * self.image_size / 224.0
        solarize = rng.random() < aug.solarize[which]
        hflip = rng.random() < aug.hflip
        vflip = rng.random() < aug.vflip
        if jitter:
            mean = view.mean()
            view = np.clip(((view - mean) * contrast + mean) * brightness, 0.0, 1.0)
        if blur:
            view = gaussian_filter(view, sigma=(0.0, sigma, sigma), mode="reflect", truncate=3.0)
        if solarize:
            view = np.where(view < 0.5, view, 1.0 - view)
        if hflip:
            view = view[:, :, ::-1]
        if vflip:
            view = view[:, ::-1, :]
        return view

    def _finish(self, view: np.ndarray) -> torch.Tensor:
        """Repeat grey to the encoder's channels and normalise (numpy: see the note on threads below)."""
        return torch.from_numpy(((view - self.mean) / self.std).astype(np.float32))


# Views are made with numpy, scipy and Pillow, all single-threaded: per-item torch ops on small images pay
# intra-op thread synchronisation that costs more than the work (and steals the training threads' cores).


def _unit(image: np.ndarray) -> np.ndarray:
    """uint8 -> float32 in [0, 1]."""
    return image.astype(np.float32) / 255.0


def _crop_padded(image: np.ndarray, top: int, left: int, height: int, width: int) -> np.ndarray:
    """The window ``[top, top+height) x [left, left+width)``, zero where it leaves the image."""
    _, h, w = image.shape
    pad_top, pad_left = max(0, -top), max(0, -left)
    pad_bottom, pad_right = max(0, top + height - h), max(0, left + width - w)
    if pad_top or pad_left or pad_bottom or pad_right:
        image = np.pad(image, ((0, 0), (pad_top, pad_bottom), (pad_left, pad_right)))
        top, left = top + pad_top, left + pad_left
    return image[:, top:top + height, left:left + width]


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of ``[c, h, w]`` to ``[c, size, size]`` (Pillow: antialiased when shrinking)."""
    if image.shape[-2:] == (size, size):
        return image.copy()
    planes = [np.asarray(Image.fromarray(np.ascontiguousarray(plane), mode="F")
                         .resize((size, size), Image.Resampling.BILINEAR)) for plane in image]
    return np.clip(np.stack(planes), 0.0, 1.0)


# --- batches ----------------------------------------------------------------------------------------


class BatchPlan:
    """Which items form each global batch, and which part of it each rank takes.

    An epoch is one pass over the items in a seeded order (lesion slices repeated ``oversample`` times on
    average, fractional parts drawn per epoch), cut into global batches of ``global_batch`` items, the
    tail dropped. A global batch is ``accum`` micro-batches of ``world * per_rank`` items; rank ``r``
    takes items ``[r * per_rank, (r + 1) * per_rank)`` of each micro-batch, so concatenating the ranks'
    micro-batches in rank order gives the single-process micro-batch. Unlike ``DistributedSampler``,
    ranks get contiguous parts, so keys gathered in rank order line up with the single-process batch.
    """

    def __init__(
        self,
        is_lesion: np.ndarray,
        global_batch: int,
        world: int = 1,
        rank: int = 0,
        accum: int = 1,
        oversample: float = 1.0,
        seed: int = 0,
        shuffle: bool = True,
    ) -> None:
        if global_batch % (world * accum):
            raise ValueError(
                f"batch size {global_batch} is not divisible by world size x accumulation "
                f"steps ({world} x {accum})"
            )
        if oversample < 1.0:
            raise ValueError(f"lesion oversampling must be >= 1, got {oversample}")
        self.is_lesion = np.asarray(is_lesion, dtype=bool)
        self.global_batch = global_batch
        self.world, self.rank, self.accum = world, rank, accum
        self.per_rank = global_batch // (world * accum)
        self.oversample = oversample
        self.seed = seed
        self.shuffle = shuffle
        if self.steps_per_epoch < 1:
            raise ValueError(
                f"batch size {global_batch} is larger than one epoch of {len(self.epoch_order(0))} items"
            )

    @property
    def epoch_length(self) -> int:
        n_lesion = int(self.is_lesion.sum())
        extra = (math.floor(self.oversample) - 1) * n_lesion
        extra += round((self.oversample - math.floor(self.oversample)) * n_lesion)
        return len(self.is_lesion) + extra

    @property
    def steps_per_epoch(self) -> int:
        return self.epoch_length // self.global_batch

    def epoch_order(self, epoch: int) -> np.ndarray:
        """Item indices of one epoch, in order (lesion repeats included)."""
        rng = np.random.default_rng([self.seed, epoch, 0x5EED])
        items = np.arange(len(self.is_lesion))
        lesion = items[self.is_lesion]
        whole = math.floor(self.oversample)
        parts = [items] + [lesion] * (whole - 1)
        fraction = round((self.oversample - whole) * len(lesion))
        if fraction:
            parts.append(rng.choice(lesion, size=fraction, replace=False))
        order = np.concatenate(parts)
        return rng.permutation(order) if self.shuffle else order

    def item_seed(self, epoch: int, position: int) -> int:
        """The seed of the item at ``position`` of ``epoch``: the same on every rank and every run."""
        return int(np.random.SeedSequence([self.seed, epoch, position]).generate_state(1, np.uint64)[0])

    def micro_batches(self, epoch: int, start_step: int = 0) -> Iterator[list[tuple[int, int]]]:
        """This rank's micro-batches of ``epoch`` from global step ``start_step`` of that epoch on."""
        order = self.epoch_order(epoch)
        micro = self.world * self.per_rank
        for step in range(start_step, self.steps_per_epoch):
            for a in range(self.accum):
                base = step * self.global_batch + a * micro + self.rank * self.per_rank
                yield [(int(order[p]), self.item_seed(epoch, p)) for p in range(base, base + self.per_rank)]


class EpochBatches(Sampler[list[tuple[int, int]]]):
    """A ``batch_sampler`` for :class:`torch.utils.data.DataLoader` over one epoch of a :class:`BatchPlan`."""

    def __init__(self, plan: BatchPlan, epoch: int, start_step: int = 0) -> None:
        self.plan, self.epoch, self.start_step = plan, epoch, start_step

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        return self.plan.micro_batches(self.epoch, self.start_step)

    def __len__(self) -> int:
        return (self.plan.steps_per_epoch - self.start_step) * self.plan.accum


def collate(batch: list[tuple[torch.Tensor, torch.Tensor, bool]]) -> tuple[torch.Tensor, ...]:
    """Stack views and lesion flags."""
    view1 = torch.stack([b[0] for b in batch])
    view2 = torch.stack([b[1] for b in batch])
    lesion = torch.tensor([b[2] for b in batch], dtype=torch.bool)
    return view1, view2, lesion
