"""PNG montages of windowed CT slices with lesion boxes (matplotlib, Agg backend, no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from clear_bench.data.scan import Scan
from clear_bench.data.windowing import Window, parse_window
from clear_bench.figures import save_png


def pick_slices(scan: Scan, count: int = 12) -> list[int]:
    """Up to ``count`` evenly spread slices, always including the slices that carry lesion boxes."""
    n = scan.num_slices
    lesion = sorted(scan.lesion_slices())
    if n <= count:
        return list(range(n))
    spread = np.linspace(0, n - 1, num=max(count - len(lesion), 2)).round().astype(int).tolist()
    return sorted(set(spread) | set(lesion[:count]))


def write_montage(
    scan: Scan,
    out: str | Path,
    windows: Sequence[str | Window] = ("soft-tissue", "lung"),
    slices: Sequence[int] | None = None,
    *,
    columns: int = 6,
    boxes: bool = True,
    tile_inches: float = 2.0,
) -> Path:
    """Write a grid of ``slices`` (rows grouped per window) with lesion boxes to ``out`` (PNG, atomic)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    chosen = list(slices) if slices is not None else pick_slices(scan)
    chosen = [i for i in chosen if 0 <= i < scan.num_slices]
    resolved = [parse_window(w) for w in windows] if not scan.prewindowed else [None]
    columns = max(1, min(columns, len(chosen)))
    rows_per_window = -(-len(chosen) // columns)
    n_rows = rows_per_window * len(resolved)
    aspect = scan.spacing[1] / scan.spacing[2] if scan.spacing[2] else 1.0
    fig, axes = plt.subplots(n_rows, columns, figsize=(columns * tile_inches, n_rows * tile_inches * aspect),
                             squeeze=False, facecolor="black")
    for ax in axes.ravel():
        ax.set_axis_off()
    by_slice: dict[int, list] = {}
    for box in scan.lesions:
        by_slice.setdefault(box.slice_index, []).append(box)
    for w_index, window in enumerate(resolved):
        for k, slice_index in enumerate(chosen):
            ax = axes[w_index * rows_per_window + k // columns, k % columns]
            image = scan.volume[slice_index]
            shown = window.apply(image) if window is not None else np.clip(image, 0, 1)
            ax.imshow(shown, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest", aspect=aspect)
            name = window.name if window is not None else "pre-windowed"
            ax.set_title(f"z{slice_index} {name}", color="white", fontsize=7, pad=2)
            if boxes:
                for box in by_slice.get(slice_index, []):
                    # box edges are pixel edges; imshow puts pixel centres on integers
                    ax.add_patch(Rectangle((box.x0 - 0.5, box.y0 - 0.5), box.x1 - box.x0, box.y1 - box.y0,
                                           fill=False, edgecolor="#ffd400", linewidth=1.0))
                    if box.label:
                        ax.text(box.x0 - 0.5, box.y0 - 1.5, box.label, color="#ffd400", fontsize=5)
    fig.suptitle(f"{scan.scan_id}  {scan.volume.shape[0]} slices  spacing "
                 + " x ".join(f"{s:.2f}" for s in scan.spacing) + " mm", color="white", fontsize=8)
    fig.tight_layout()
    return save_png(fig, out, dpi=110, facecolor="black")
