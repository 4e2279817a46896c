"""Markdown leaderboards: one per task, and an overall board across tasks.

Each row is one (encoder, aggregator) pair. A board only ever holds rows evaluated on the same splits: it
refuses rows whose split fingerprints differ.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from clear_bench.evaluation.bootstrap import Summary
from clear_bench.evaluation.compare import PairedComparison
from clear_bench.evaluation.metrics import MACRO
from clear_bench.evaluation.splits import require_same_splits


@dataclass
class Row:
    """One (encoder, aggregator) result on one task."""

    encoder: str
    """Row label of the encoder; random-init encoders carry '(random init)'."""
    aggregator: str
    summary: Summary
    weights: str = ""
    shuffled_auroc: float | None = None
    """Mean macro AUROC of label-shuffle controls, when they ran."""

    @property
    def name(self) -> str:
        return f"{self.encoder} + {self.aggregator}"


@dataclass
class TaskBoard:
    """Everything one task's leaderboard shows."""

    task: str
    label_type: str
    label_names: list[str]
    n_scans: int
    n_folds: int
    rows: list[Row]
    comparisons: list[PairedComparison] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)
    """Scans left out of this task (failed for some encoder), as 'id: reason'."""
    metric: str = "auroc"
    """The primary metric: it ranks the rows and is the one the comparisons test."""
    extra_metrics: list[tuple[str, str]] = field(default_factory=list)
    """(name, title) of registered metrics beyond the fixed columns: each gets a column of its own."""

    def split_fingerprint(self) -> str:
        return require_same_splits({row.name: row.summary.split_fingerprint for row in self.rows})


def _value(summary: Summary, metric: str, label: str = MACRO) -> float:
    try:
        return summary.get(metric, label).mean
    except KeyError:
        return math.nan


def _cell(summary: Summary, metric: str, label: str = MACRO, *, ci: bool = True) -> str:
    try:
        row = summary.get(metric, label)
    except KeyError:
        return "–"
    text = f"{row.mean:.3f}"
    if not math.isnan(row.std):
        text += f" ± {row.std:.3f}"
    if ci:
        text += f" [{row.ci_low:.3f}, {row.ci_high:.3f}]"
    return text


def _p(value: float) -> str:
    if math.isnan(value):
        return "–"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def ranked(rows: Sequence[Row], metric: str = "auroc") -> list[Row]:
    """Rows by the mean macro ``metric``, best first (undefined values last)."""
    return sorted(rows, key=lambda r: (math.isnan(_value(r.summary, metric)), -_value(r.summary, metric)))


def render_task_board(board: TaskBoard, *, benchmark: str, version: str) -> str:
    """The markdown of one task's leaderboard."""
    fingerprint = board.split_fingerprint()
    rows = ranked(board.rows, board.metric)
    comparisons = {c.row: c for c in board.comparisons}
    extra_titles = "".join(f" {title} |" for _, title in board.extra_metrics)
    extra_rule = "---|" * len(board.extra_metrics)
    compared = "AUROC" if board.metric == "auroc" else board.metric
    level = rows[0].summary.level if rows else 0.95
    n_boot = rows[0].summary.n_boot if rows else 0
    secondary = "f1_macro" if board.label_type == "multiclass" else "auprc"
    lines = [
        f"# {board.task}",
        "",
        f"Benchmark `{benchmark}`, clear-bench {version}. {board.label_type} task over "
        f"{len(board.label_names)} {'classes' if board.label_type == 'multiclass' else 'labels'}; "
        f"{board.n_scans} scans, {board.n_folds}-fold patient-level cross-validation "
        f"(split fingerprint `{fingerprint}`).",
        "",
        f"Values are mean ± std over folds [{level:.0%} patient-level bootstrap CI, {n_boot} resamples]. "
        "Δ is the best row minus this row on the same resamples; p is the paired bootstrap p-value, "
        "Holm-corrected across rows.",
        "",
        f"| rank | encoder | aggregator | macro AUROC | {secondary} | balanced acc. |{extra_titles} "
        f"Δ {compared} | p (Holm) | shuffled-label AUROC |",
        f"|---:|---|---|---|---|---|{extra_rule}---|---|---|",
    ]
    for rank, row in enumerate(rows, start=1):
        comparison = comparisons.get(row.name)
        delta = f"{comparison.difference:+.3f}" if comparison else "best"
        p_holm = _p(comparison.p_holm) if comparison else "–"
        shuffled = f"{row.shuffled_auroc:.3f}" if row.shuffled_auroc is not None else "–"
        lines.append(
            f"| {rank} | {row.encoder} | {row.aggregator} | {_cell(row.summary, 'auroc')} | "
            f"{_cell(row.summary, secondary, ci=False)} | "
            f"{_cell(row.summary, 'balanced_accuracy', ci=False)} |"
            + "".join(f" {_cell(row.summary, name, ci=False)} |" for name, _ in board.extra_metrics)
            + f" {delta} | {p_holm} | {shuffled} |"
        )
    lines += ["", "## AUROC per label", "",
              "| encoder | aggregator | " + " | ".join(board.label_names) + " |",
              "|---|---|" + "---|" * len(board.label_names)]
    for row in rows:
        cells = [_cell(row.summary, "auroc", label, ci=False) for label in board.label_names]
        lines.append(f"| {row.encoder} | {row.aggregator} | " + " | ".join(cells) + " |")
    notes = sorted({note for row in rows for note in row.summary.notes})
    weights = [f"- `{row.encoder}`: {row.weights}" for row in rows if row.weights]
    if weights:
        lines += ["", "## Encoder weights", "", *sorted(set(weights))]
    if notes:
        lines += ["", "## Notes", "", *[f"- {note}" for note in notes]]
    if board.excluded:
        lines += ["", "## Scans left out", "",
                  "These scans failed for at least one encoder, so every row leaves them out:", "",
                  *[f"- {item}" for item in board.excluded]]
    return "\n".join(lines) + "\n"


def render_overall_board(boards: Sequence[TaskBoard], *, benchmark: str, version: str,
                         left_out: Sequence[str] = ()) -> str:
    """Mean macro AUROC and mean rank of every (encoder, aggregator) across tasks."""
    per_row: dict[str, dict[str, float]] = {}
    ranks: dict[str, list[int]] = {}
    names: dict[str, tuple[str, str]] = {}
    for board in boards:
        for rank, row in enumerate(ranked(board.rows, board.metric), start=1):
            per_row.setdefault(row.name, {})[board.task] = _value(row.summary, "auroc")
            ranks.setdefault(row.name, []).append(rank)
            names[row.name] = (row.encoder, row.aggregator)
    tasks = [board.task for board in boards]

    def mean_auroc(name: str) -> float:
        values = [v for v in per_row[name].values() if not math.isnan(v)]
        return sum(values) / len(values) if values else math.nan

    order = sorted(per_row, key=lambda n: (sum(ranks[n]) / len(ranks[n]), -mean_auroc(n)))
    lines = [
        "# Overall",
        "",
        f"Benchmark `{benchmark}`, clear-bench {version}. Macro AUROC per task (mean over folds) and the "
        "mean rank across tasks; each task's own board has the confidence intervals and paired tests.",
        "",
        "| encoder | aggregator | mean rank | mean macro AUROC | " + " | ".join(tasks) + " |",
        "|---|---|---:|---|" + "---|" * len(tasks),
    ]
    for name in order:
        encoder, aggregator = names[name]
        cells = [f"{per_row[name][t]:.3f}" if t in per_row[name] else "–" for t in tasks]
        mean_rank = sum(ranks[name]) / len(ranks[name])
        lines.append(f"| {encoder} | {aggregator} | {mean_rank:.2f} | {mean_auroc(name):.3f} | "
                     + " | ".join(cells) + " |")
    if left_out:
        lines += ["", "## Encoders left out", "", *[f"- {item}" for item in left_out]]
    return "\n".join(lines) + "\n"
