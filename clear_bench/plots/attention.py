"""MIL attention along the slice axis: for a few test scans, the weight each instance got, one series per
window, lesion slices shaded where the source has boxes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from clear_bench.plots.style import GRID, MARKERS, colour, pyplot


@dataclass
class AttentionTrace:
    """One scan's attention under one row's fold model."""

    scan_id: str
    slice_index: np.ndarray
    window_id: np.ndarray
    attention: np.ndarray
    windows: list[str] = field(default_factory=list)
    """Window names by window id (id -1: stacked windows or HU input)."""


def _window_name(windows: Sequence[str], wid: int) -> str:
    if wid < 0:
        return "all windows" if windows else "one image per slice"
    return windows[wid] if wid < len(windows) else f"window {wid}"


def attention_figure(traces: Mapping[str, Sequence[AttentionTrace | None]], scan_ids: Sequence[str],
                     lesion_slices: Mapping[str, Sequence[int]], *, title: str) -> Any:
    """A grid: one line per row (``traces[row]``: one trace per scan of ``scan_ids``, ``None`` when the
    row has none), one column per scan. Grey bands mark the slices with lesion boxes."""
    if not traces or not scan_ids:
        raise ValueError("no attention to draw")
    plt = pyplot()
    n_rows, n_cols = len(traces), len(scan_ids)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(3.4 * n_cols, 1.5 * n_rows + 1.4), squeeze=False,
                             layout="constrained")
    names: dict[str, int] = {}
    for r, (row, row_traces) in enumerate(traces.items()):
        for c, scan_id in enumerate(scan_ids):
            ax = axes[r][c]
            for s in lesion_slices.get(scan_id, ()):
                ax.axvspan(s - 0.5, s + 0.5, color="#bbbbbb", alpha=0.6, linewidth=0)
            trace = row_traces[c] if c < len(row_traces) else None
            if trace is not None:
                order = np.argsort(trace.slice_index, kind="stable")
                sl, wid, att = trace.slice_index[order], trace.window_id[order], trace.attention[order]
                for w in sorted(set(wid.tolist())):
                    name = _window_name(trace.windows, int(w))
                    k = names.setdefault(name, len(names))
                    keep = wid == w
                    ax.plot(sl[keep], att[keep], color=colour(k), marker=MARKERS[k % len(MARKERS)],
                            markersize=3, linewidth=1.0)
            ax.grid(True, color=GRID, linewidth=0.5)
            ax.tick_params(labelsize=6)
            ax.set_title(f"{row} · scan {scan_id}", fontsize=7)
            if c == 0:
                ax.set_ylabel("attention", fontsize=7)
            if r == n_rows - 1:
                ax.set_xlabel("slice index", fontsize=7)
    handles = [plt.Line2D([], [], color=colour(k), marker=MARKERS[k % len(MARKERS)], markersize=4,
                          label=name) for name, k in names.items()]
    if any(lesion_slices.get(s) for s in scan_ids):
        handles.append(plt.Rectangle((0, 0), 1, 1, color="#bbbbbb", alpha=0.6, label="lesion slice"))
    fig.suptitle(f"{title}\nattention weight of each instance (one series per window), each scan under the "
                 "fold model that had it in its test set;\nrows whose head weighs every instance alike (mean "
                 "pooling) are not drawn", fontsize=10)
    fig.legend(handles=handles, loc="outside lower center", ncol=min(5, max(1, len(handles))), fontsize=8,
               frameon=False)
    return fig
