"""Markdown leaderboards: one per task, and an overall board across tasks.

Each row is one (encoder, aggregator) pair. A board only ever holds rows evaluated on the same splits: it
refuses rows whose split fingerprints differ. Its comparisons are the family declared by the benchmark's
design (every row against the non-learned floor, trained encoders against their random-init twins, named
baselines), Holm-corrected over that family; every row carries its permutation null.
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
class NullSummary:
    """A row's primary metric under patient-level label permutations through the same folds."""

    permutations: int
    mean: float
    low: float
    high: float
    """The central 95% range of the null values."""
    p_value: float
    """``(1 + #{null >= observed}) / (permutations + 1)``."""
    values: list[float] = field(default_factory=list)


@dataclass
class Row:
    """One (encoder, aggregator) result on one task."""

    encoder: str
    """Row label of the encoder; random-init encoders carry '(random init)'."""
    aggregator: str
    summary: Summary
    weights: str = ""
    null: NullSummary | None = None
    """The permutation null of the primary metric, when it ran."""

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
    extra_metrics: list[tuple[str, str, bool]] = field(default_factory=list)
    """(name, title, show interval) of registered metrics beyond the fixed columns: each gets a column."""
    level: str = "patient-level"
    """``patient-level`` when every scan names its patient, else ``scan-level``."""
    repeats: int = 1
    permutations: int = 0
    null_heads: list[str] = field(default_factory=list)
    """The heads whose rows carry the permutation null, when not every head's do."""
    pairs: list[PairedComparison] = field(default_factory=list)
    """The all-pairs matrix (exploratory, Holm over the matrix), written beside the board."""
    files: dict[str, str] = field(default_factory=dict)
    """Files written beside the board, linked from it: what -> relative path."""

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


def _p_adjusted(comparison: PairedComparison) -> str:
    """The Holm-adjusted p; when the raw p is at the resampling floor the true value may be smaller."""
    if math.isnan(comparison.p_holm):
        return "–"
    at_floor = not math.isnan(comparison.p_floor) and comparison.p_value <= comparison.p_floor * (1 + 1e-9)
    text = f"{comparison.p_holm:.2g}" if comparison.p_holm < 0.001 else f"{comparison.p_holm:.3f}"
    return f"≤{text}" if at_floor else text


def _delta(comparisons: Sequence[PairedComparison]) -> str:
    if not comparisons:
        return "–"
    return "; ".join(f"{c.difference:+.3f} (p {_p_adjusted(c)})" for c in comparisons)


def ranked(rows: Sequence[Row], metric: str = "auroc") -> list[Row]:
    """Rows by the mean macro ``metric``, best first (undefined values last)."""
    return sorted(rows, key=lambda r: (math.isnan(_value(r.summary, metric)), -_value(r.summary, metric)))


def render_task_board(board: TaskBoard, *, benchmark: str, version: str, provenance: str = "") -> str:
    """The markdown of one task's leaderboard (``provenance``: a sentence naming commit and packages)."""
    fingerprint = board.split_fingerprint()
    rows = ranked(board.rows, board.metric)
    by_kind: dict[tuple[str, str], list[PairedComparison]] = {}
    for c in board.comparisons:
        by_kind.setdefault((c.row, c.kind), []).append(c)
    kinds = [k for k in ("floor", "twin", "baseline") if any(c.kind == k for c in board.comparisons)]
    titles = {"floor": "vs floor", "twin": "vs random-init twin", "baseline": "vs baseline"}
    compared = "AUROC" if board.metric == "auroc" else board.metric
    level = rows[0].summary.level if rows else 0.95
    n_boot = rows[0].summary.n_boot if rows else 0
    secondary = "f1_macro" if board.label_type == "multiclass" else "auprc"
    resamples = board.comparisons[0].p_floor if board.comparisons else math.nan
    repeats = f" x {board.repeats} repeats" if board.repeats > 1 else ""
    spread = board.repeats > 1
    unit = "patient" if board.level == "patient-level" else "scan"
    lines = [
        f"# {board.task}",
        "",
        f"Benchmark `{benchmark}`, clear-bench {version}. {board.label_type} task over "
        f"{_count(len(board.label_names), 'class' if board.label_type == 'multiclass' else 'label')}; "
        f"{board.n_scans} scans, {board.n_folds}-fold{repeats} {board.level} cross-validation "
        f"(split fingerprint `{fingerprint}`).",
        *([provenance] if provenance else []),
        "",
        f"Values are mean ± std over folds [{level:.0%} {unit}-level bootstrap CI, {n_boot} resamples]"
        + (", and the standard deviation of the repeats' means" if board.repeats > 1 else "") + ". "
        f"Δ {compared} is this row minus the declared reference, on the same patient resamples; p is the "
        "paired bootstrap p-value, Holm-corrected over every comparison this board declares"
        + (f" (≤: at the resolution of {2 / resamples - 1:.0f} resamples)"
           if not math.isnan(resamples) else "")
        + "."
        + (f" The permutation null retrains {_null_rows(board)} on {board.permutations} {unit}-level "
           "label permutations through the same folds." if board.permutations else ""),
        "",
    ]
    header = ["rank", "encoder", "aggregator", "macro AUROC", *(["repeat sd"] if spread else []), secondary,
              "balanced acc.", *(title for _, title, _ in board.extra_metrics),
              *(f"Δ {compared} {titles[k]}" for k in kinds),
              *(["null AUROC [95%]", "perm. p"] if board.permutations else [])]
    lines += ["| " + " | ".join(header) + " |", "|---:|" + "---|" * (len(header) - 1)]
    for rank, row in enumerate(rows, start=1):
        cells = [str(rank), row.encoder, row.aggregator, _cell(row.summary, "auroc")]
        if spread:
            cells.append(_num(_repeat_std(row.summary)))
        cells += [_cell(row.summary, secondary, ci=False), _cell(row.summary, "balanced_accuracy", ci=False)]
        cells += [_cell(row.summary, name, ci=interval) for name, _, interval in board.extra_metrics]
        cells += [_delta(by_kind.get((row.name, kind), [])) for kind in kinds]
        if board.permutations:
            n = row.null
            cells += [f"{n.mean:.3f} [{n.low:.3f}, {n.high:.3f}]" if n else "–", _p(n.p_value) if n else "–"]
        lines.append("| " + " | ".join(cells) + " |")
    if board.comparisons:
        lines += ["", "## Declared comparisons", "",
                  "Fixed by the benchmark's design before any result: each row against the non-learned "
                  "floor (same head), each trained encoder against its random-init twin, each row against "
                  "a named baseline. Family-wise error is controlled over this table (Holm).", "",
                  f"| row | reference | kind | Δ {compared} [95% CI] | p | p (Holm) | DeLong p per label "
                  "(folds combined) |",
                  "|---|---|---|---|---|---|---|"]
        for c in sorted(board.comparisons, key=lambda c: (c.kind, c.row)):
            combined = [t.p_value for t in c.delong if t.fold == -1]
            delong = ", ".join(_p(p) for p in combined) if combined else "–"
            lines.append(f"| {c.row} | {c.reference} | {c.kind} | {c.difference:+.3f} "
                         f"[{c.ci_low:+.3f}, {c.ci_high:+.3f}] | {_p(c.p_value)} | {_p_adjusted(c)} | "
                         f"{delong} |")
    if board.files:
        links = ", ".join(f"[{what}]({path})" for what, path in board.files.items())
        lines += ["", f"Beside this board: {links}."]
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
    if board.level != "patient-level":
        notes.insert(0, "Some scans name no patient: their folds are scan-level, and scans of one patient "
                        "may fall into different folds (set crossval.require_patients to refuse this).")
    if notes:
        lines += ["", "## Notes", "", *[f"- {note}" for note in notes]]
    if board.excluded:
        lines += ["", "## Scans left out", "",
                  "These scans failed for at least one encoder, so every row leaves them out:", "",
                  *[f"- {item}" for item in board.excluded]]
    return "\n".join(lines) + "\n"


def _null_rows(board: TaskBoard) -> str:
    if not board.null_heads:
        return "every row"
    return "the rows of " + ", ".join(f"`{head}`" for head in board.null_heads)


def _count(n: int, noun: str) -> str:
    plural = "classes" if noun == "class" else f"{noun}s"
    return f"{n} {noun if n == 1 else plural}"


def _repeat_std(summary: Summary) -> float:
    try:
        return summary.get("auroc").repeat_std
    except KeyError:
        return math.nan


def _num(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:.3f}"


def render_overall_board(boards: Sequence[TaskBoard], *, benchmark: str, version: str,
                         left_out: Sequence[str] = (), provenance: str = "") -> str:
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
        *([provenance] if provenance else []),
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
