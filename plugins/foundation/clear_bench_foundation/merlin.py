"""Merlin's image encoder: an Inflated 3D ResNet-152 (I3D) with Merlin's module layout and parameter names.

Merlin (Stanford MIMI) inflates torchvision's 2D ResNet-152 to 3D: the 7x7 stem becomes 3x7x7 (stride
1x2x2), the 3x3 max-pool 3x3x3 (stride 2), every bottleneck's 3x3 conv 3x3x3 with the block's stride on all
three axes, 1x1 convs 1x1x1. Global average pooling of the last stage gives the 2048-d image embedding.
Merlin's training heads (a 1692-way phenotype classifier and a 512-d contrastive projection, both 1x1x1
convs) are built only to load Merlin's full checkpoint strictly; they are not used for embeddings.

Layouts. Merlin's own code takes ``[B, 1, X, Y, Z]`` in RAS orientation (x to the patient's right, y to
anterior, z to superior) and permutes it to ``[B, 1, Z, X, Y]``. This module takes clear-bench's volume layout
``[B, C, D, H, W]``: slices inferior to superior, rows anterior to posterior, columns patient right to left
(standard axial DICOM), and reorients it to Merlin's internal layout itself.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clear_bench_foundation.volumes import foreground_box

RESNET152_LAYERS = (3, 8, 36, 3)
PHENOTYPES = 1692
CONTRASTIVE_DIM = 512
VOLUME_SIZE = (160, 224, 224)  # (slices, rows, cols) of Merlin / ASTRA inputs
# intensity windows of the two published pipelines, in HU: Merlin (abdomen) and ASTRA's chest pipeline
HU_RANGE = {"merlin": (-1000.0, 1000.0), "chest": (-1000.0, 200.0)}
MERLIN_SPACING = (3.0, 1.5, 1.5)  # mm (slice, row, col) of Merlin's resampling


class Bottleneck3d(nn.Module):
    """ResNet v1.5 bottleneck inflated to 3D (stride on the 3x3x3 conv)."""

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = planes * self.expansion
        self.conv1 = nn.Conv3d(in_channels, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = nn.Conv3d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm3d(planes)
        self.conv3 = nn.Conv3d(planes, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm3d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            shortcut = nn.Conv3d(in_channels, out_channels, 1, stride=stride, bias=False)
            self.downsample = nn.Sequential(shortcut, nn.BatchNorm3d(out_channels))

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class InflatedResNet(nn.Module):
    """I3D ResNet with Merlin's parameter names; ``forward`` returns the pooled ``[B, 4 * 8 * width]``.

    ``layers=(3, 8, 36, 3), width=64`` is ResNet-152 (2048-d). ``heads=True`` adds Merlin's two training
    heads (``classifier``, ``contrastive_head``) so that Merlin's checkpoint loads strictly.
    ``reorient=False`` skips the clear-bench -> Merlin axis change (input already ``[B, C, Z, X, Y]``).
    """

    def __init__(self, layers: Sequence[int] = RESNET152_LAYERS, width: int = 64, heads: bool = False,
                 reorient: bool = True) -> None:
        super().__init__()
        self.reorient = reorient
        self.conv1 = nn.Conv3d(3, width, (3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3), bias=False)
        self.bn1 = nn.BatchNorm3d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool3d(3, stride=2, padding=1)
        channels = width
        for index, blocks in enumerate(layers):
            planes, stride = width * 2**index, 1 if index == 0 else 2
            stage = [Bottleneck3d(channels, planes, stride)]
            channels = planes * Bottleneck3d.expansion
            stage += [Bottleneck3d(channels, planes) for _ in range(1, blocks)]
            self.add_module(f"layer{index + 1}", nn.Sequential(*stage))
        self.num_features = channels
        if heads:
            self.classifier = nn.Conv3d(channels, PHENOTYPES, 1)
            self.contrastive_head = nn.Conv3d(channels, CONTRASTIVE_DIM, 1)

    def to_merlin_layout(self, x: Tensor) -> Tensor:
        """``[B, C, D, H, W]`` (clear-bench) -> ``[B, 3, Z, X, Y]`` (Merlin, RAS), channels repeated to 3."""
        if self.reorient:
            x = x.flip(-1).flip(-2).transpose(-1, -2)  # cols R->L become x (to R), rows A->P become y (to A)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1, -1)
        return x

    def forward_features(self, x: Tensor) -> Tensor:
        """Last-stage feature map ``[B, num_features, Z/16, X/32, Y/32]``."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(self.to_merlin_layout(x)))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_features(x).mean(dim=(2, 3, 4))


def to_ras(volume: Tensor) -> Tensor:
    """clear-bench ``[D, H, W]`` -> RAS ``[X, Y, Z]`` (exact: flips and a permutation)."""
    return volume.permute(2, 1, 0).flip(0).flip(1)


def from_ras(volume: Tensor) -> Tensor:
    """Inverse of :func:`to_ras`."""
    return volume.flip(0).flip(1).permute(2, 1, 0)


def prepare_volume(hu: Tensor, spacing: Sequence[float], mode: str = "chest") -> Tensor:
    """A CT volume in HU (clear-bench layout ``[D, H, W]``, spacing ``(z, y, x)`` mm) as a Merlin input.

    ``chest`` (ASTRA's chest CT pipeline): crop to the body (HU > -1000), area-resize to 224 x 224 x 160,
    scale -1000..200 HU to [0, 1]. ``merlin`` (Merlin's pipeline): resample linearly to 1.5 x 1.5 x 3 mm
    (grids anchored at the first RAS voxel), scale -1000..1000 HU to [0, 1], pad / centre-crop to
    224 x 224 x 160. Returns ``[1, 1, 160, 224, 224]`` float32 in clear-bench layout.
    """
    ras = to_ras(torch.as_tensor(hu, dtype=torch.float32))
    ras_spacing = (float(spacing[2]), float(spacing[1]), float(spacing[0]))
    target = (VOLUME_SIZE[1], VOLUME_SIZE[2], VOLUME_SIZE[0])  # X, Y, Z
    if mode not in HU_RANGE:
        raise ValueError(f"unknown volume preprocessing mode '{mode}' (expected 'chest' or 'merlin')")
    low, high = HU_RANGE[mode]
    if mode == "chest":
        ras = _crop_foreground(ras, -1000.0)
        ras = F.interpolate(ras[None, None], size=target, mode="area")[0, 0]
        ras = ((ras - low) / (high - low)).clamp(0.0, 1.0)
    elif mode == "merlin":
        new_spacing = (MERLIN_SPACING[2], MERLIN_SPACING[1], MERLIN_SPACING[0])
        for axis in range(3):
            ras = _resample_axis(ras, axis, ras_spacing[axis], new_spacing[axis])
        ras = ((ras - low) / (high - low)).clamp(0.0, 1.0)
        ras = _pad_crop(ras, target)
    return from_ras(ras).contiguous()[None, None]


def _crop_foreground(volume: Tensor, threshold: float) -> Tensor:
    box = foreground_box(volume > threshold)
    return volume if box is None else volume[box]


def _resample_axis(volume: Tensor, axis: int, spacing: float, new_spacing: float) -> Tensor:
    """Linear resampling of one axis; output voxel 0 sits on input voxel 0, edges repeat."""
    size = volume.shape[axis]
    n_out = round((size - 1) * spacing / new_spacing + 1.0)
    position = (torch.arange(n_out, dtype=torch.float64) * (new_spacing / spacing)).clamp(0, size - 1)
    lower = position.floor().long()
    upper = (lower + 1).clamp(max=size - 1)
    shape = [1, 1, 1]
    shape[axis] = n_out
    weight = (position - lower.double()).float().view(shape)
    return volume.index_select(axis, lower) * (1 - weight) + volume.index_select(axis, upper) * weight


def _pad_crop(volume: Tensor, target: Sequence[int]) -> Tensor:
    """Symmetric zero padding up to ``target``, then a centred crop to it."""
    pads: list[int] = []
    for axis in (2, 1, 0):
        extra = max(target[axis] - volume.shape[axis], 0)
        pads += [extra // 2, extra - extra // 2]
    if any(pads):
        volume = F.pad(volume, pads, value=0.0)
    starts = [volume.shape[axis] // 2 - target[axis] // 2 for axis in range(3)]
    return volume[tuple(slice(s, s + t) for s, t in zip(starts, target, strict=True))]
