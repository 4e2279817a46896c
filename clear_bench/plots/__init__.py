"""The plots beside the boards (matplotlib, Agg backend, no display needed), drawn from stored results.

- :func:`forest_figure`: macro AUROC with its bootstrap CI per row, references marked;
- :func:`roc_figure`: fold-wise ROC curves per row, one colour per label (class), with their mean;
- :func:`attention_figure`: MIL attention along the slice axis for a few test scans per row;
- :func:`rank_heatmap`: the overall board as ranks across tasks.

Every function returns a figure; :func:`clear_bench.figures.png_bytes` turns it into reproducible PNG bytes.
"""

from clear_bench.plots.attention import AttentionTrace, attention_figure
from clear_bench.plots.data import RowFolds
from clear_bench.plots.forest import ForestRow, forest_figure
from clear_bench.plots.ranks import rank_heatmap
from clear_bench.plots.roc import fold_roc_curves, roc_figure

__all__ = ["AttentionTrace", "ForestRow", "RowFolds", "attention_figure", "fold_roc_curves", "forest_figure",
           "rank_heatmap", "roc_figure"]
