"""Markdown leaderboards: one per task, and an overall board across tasks.

Each row is one (encoder, aggregator) pair. A board only ever holds rows evaluated on the same splits: it
refuses rows whose split fingerprints differ. Its comparisons are the family declared by the benchmark's
design (every row against the non-learned floor, trained encoders against their random-init twins, named
baselines), Holm-corrected over that family; every row carries its permutation null. Every board also
states what its rows cost (:class:`EncoderCompute`, head parameters, cross-validation wall time), and
:func:`task_tables` / :func:`overall_tables` give each of its tables as records for CSV and JSON.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from clear_bench.evaluation.bootstrap import Summary
from clear_bench.evaluation.compare import PairedComparison
from clear_bench.evaluation.fractions import efficiency_area as curve_area
from clear_bench.evaluation.metrics import MACRO
from clear_bench.evaluation.splits import require_same_splits
from clear_bench.evaluation.transfer import TransferBoard


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
class EfficiencyPoint:
    """A row's macro AUROC when its folds train on a fraction of their labelled patients."""

    fraction: float
    patients: float
    """Labelled patients a fold trains on (training and validation), mean over folds."""
    mean: float
    ci_low: float
    ci_high: float
    draws: int
    """Nested random draws of the training patients whose folds the value pools (1 at the full data)."""


@dataclass
class SiteHeldOut:
    """A row's macro AUROC on acquisition sites its heads never trained on (leave-one-site-out)."""

    mean: float
    """Mean over the held-out sites (one fold each)."""
    ci_low: float
    ci_high: float
    per_site: dict[str, float] = field(default_factory=dict)
    """Macro AUROC on each held-out site."""


def efficiency_area(points: Sequence[EfficiencyPoint]) -> float:
    """The row's label-efficiency score: :func:`~clear_bench.evaluation.fractions.efficiency_area` of its
    curve."""
    return curve_area([p.fraction for p in points], [p.mean for p in points])


@dataclass
class EncoderCompute:
    """What an encoder costs: its output size, parameters, forward FLOPs on one input and the measured
    throughput of the extraction that made its embeddings."""

    embed_dim: int | None = None
    parameters: int | None = None
    gflops: float | None = None
    """GFLOPs of one forward pass on one input (matrix products and convolutions, torch's FlopCounterMode)."""
    per: str = "slice"
    """What one input is: ``slice`` (one windowed slice image) or ``volume``."""
    throughput: float | None = None
    """Inputs per second through the model during extraction (forward passes only)."""
    device: str = ""
    """Where ``throughput`` was measured."""
    measured: str = "extraction"
    """``extraction``: during the extraction that made the embeddings; ``probe``: timed forward passes on
    blank inputs, for embeddings extracted before throughput was recorded."""
    windows: list[str] = field(default_factory=list)
    """The window names, in the order of the window ids of the encoder's instances."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EncoderCompute:
        return cls(**{k: (list(v) if k == "windows" else v) for k, v in data.items()})


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
    reference: bool = False
    """The encoder is a declared non-learned reference (the floor)."""
    compute: EncoderCompute | None = None
    head_parameters: int | None = None
    cv_seconds: float = math.nan
    """Training and prediction time of the row's cross-validation (every fold of every repeat; the
    permutation null and the label-efficiency draws come on top)."""
    efficiency: list[EfficiencyPoint] = field(default_factory=list)
    """The label-efficiency curve, smallest fraction first, ending at the full data (empty: not run)."""
    site_held_out: SiteHeldOut | None = None
    site_shortcut: float = math.nan
    """Macro AUROC of a linear probe predicting the scan's site from the encoder's embeddings (K-fold)."""
    tuned: dict[str, int] = field(default_factory=dict)
    """Settings an inner-CV search chose -> the number of folds (every repeat) that chose them (empty:
    the row's head was not tuned)."""

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
    figures: dict[str, str] = field(default_factory=dict)
    """Plots written beside the board and shown in it: title -> relative path of the PNG."""
    left_out_encoders: list[str] = field(default_factory=list)
    """Encoders that could not take part in the run, as '`id`: reason'."""
    fraction_draws: int = 0
    """Nested draws per training fraction of the label-efficiency curves (0: no curves)."""
    sites: list[str] = field(default_factory=list)
    """The acquisition sites of the leave-one-site-out evaluation (empty: not run)."""
    tuning: dict[str, Any] = field(default_factory=dict)
    """The tuning protocol of the tuned heads: ``heads``, ``protocol`` (one line), ``grid``, ``inner_folds``
    (empty: every head trained with the fixed settings)."""
    scan_notes: dict[str, list[str]] = field(default_factory=dict)
    """What reading the board's scans noted, by scan id (the scans are scored; the notes say how)."""

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
    lines += ["", "## Compute", "", COMPUTE_NOTE, "", *compute_table(rows)]
    lines += tuning_section(board)
    lines += efficiency_section(board)
    lines += site_section(board)
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
    if board.figures:
        lines += ["", "## Plots", ""]
        for title, path in board.figures.items():
            lines += [f"### {title}", "", f"![{title}]({path})", ""]
        lines.pop()
    notes = sorted({note for row in rows for note in row.summary.notes})
    weights = [f"- `{row.encoder}`: {row.weights}" for row in rows if row.weights]
    if weights:
        lines += ["", "## Encoder weights", "", *sorted(set(weights))]
    if board.level != "patient-level":
        notes.insert(0, "Some scans name no patient: their folds are scan-level, and scans of one patient "
                        "may fall into different folds (set crossval.require_patients to refuse this).")
    if notes:
        lines += ["", "## Notes", "", *[f"- {note}" for note in notes]]
    if board.scan_notes:
        lines += ["", "## Scan notes", "",
                  f"{_count(len(board.scan_notes), 'scan')} on this board came with notes from reading "
                  "(they are scored as read):", "",
                  *[f"- {scan_id}: {_escape(note)}" for scan_id, notes in sorted(board.scan_notes.items())
                    for note in notes]]
    if board.excluded:
        groups = excluded_by_reason(board.excluded)
        lines += ["", "## Scans left out", "",
                  f"{_count(len(board.excluded), 'scan')} failed for at least one encoder, so every row "
                  f"leaves them out; by reason:", "", "| scans | reason |", "|---:|---|",
                  *[f"| {len(ids)} | {_escape(reason)} |" for reason, ids in groups], "",
                  *[f"- {item}" for item in sorted(board.excluded)]]
    if board.left_out_encoders:
        lines += ["", "## Encoders left out", "", *[f"- {item}" for item in board.left_out_encoders]]
    return "\n".join(lines) + "\n"


COMPUTE_NOTE = (
    "Embedding dim and parameters of the frozen encoder; GFLOPs of one forward pass on one input (matrix "
    "products and convolutions, counted by torch's FlopCounterMode); throughput: inputs per second through "
    "the model during the extraction that made the embeddings, and where; the head's trainable parameters; "
    "CV time: training and prediction of every fold of the row (the permutation null comes on top).")


def tuned_text(row: Row) -> str:
    """``lr=0.001, hidden_dim=64 (4 folds); ...``: what the row's folds chose, most often chosen first."""
    chosen = sorted(row.tuned.items(), key=lambda item: (-item[1], item[0]))
    return "; ".join(f"{settings} ({_count(n, 'fold')})" for settings, n in chosen)


def tuning_section(board: TaskBoard) -> list[str]:
    """The settings each tuned row's folds chose, and the tuning protocol; nothing when no head is tuned."""
    if not board.tuning:
        return []
    heads = ", ".join(f"`{head}`" for head in board.tuning["heads"])
    lines = ["", "## Tuning", "",
             f"Rows of {heads} are tuned identically for every encoder: {board.tuning['protocol']} (every "
             "cross-validation of the row, the permutation null's included). Other rows train with the "
             "fixed settings of the protocol.", "",
             "| encoder | aggregator | chosen settings (folds) |", "|---|---|---|"]
    for row in ranked(board.rows, board.metric):
        if row.tuned:
            lines.append(f"| {row.encoder} | {row.aggregator} | {tuned_text(row)} |")
    return lines


def efficiency_section(board: TaskBoard) -> list[str]:
    """The board's label-efficiency table (rows with a curve, best area first); nothing without curves."""
    curves = sorted((row for row in board.rows if row.efficiency),
                    key=lambda row: (-_finite_or(efficiency_area(row.efficiency)), row.name))
    if not curves:
        return []
    points = curves[0].efficiency
    header = [f"{p.fraction:.0%} ({p.patients:.0f} patients)" for p in points]
    lines = ["", "## Label efficiency", "",
             f"Macro AUROC when each fold trains on a fraction of its labelled patients (nested, stratified "
             f"draws that never touch the test folds; {board.fraction_draws} draws per fraction, pooled as "
             "repeats, with their patient-bootstrap CI). Area: the mean AUROC over the curve on a log scale "
             "of the fraction, which ranks data efficiency.", "",
             "| encoder | aggregator | " + " | ".join(header) + " | area |",
             "|---|---|" + "---|" * (len(header) + 1)]
    for row in curves:
        cells = [f"{p.mean:.3f} [{p.ci_low:.3f}, {p.ci_high:.3f}]" for p in row.efficiency]
        lines.append(f"| {row.encoder} | {row.aggregator} | " + " | ".join(cells)
                     + f" | {_num(efficiency_area(row.efficiency))} |")
    return lines


def site_section(board: TaskBoard) -> list[str]:
    """The board's site-held-out table (rows evaluated leave-one-site-out, in board order)."""
    held = [row for row in ranked(board.rows, board.metric) if row.site_held_out is not None]
    if not held:
        return []
    lines = ["", "## Site held out", "",
             f"Each row retrained leave-one-site-out over {_count(len(board.sites), 'site')} "
             f"({', '.join(board.sites)}): every fold tests one site on heads that never saw it; the value "
             "is the mean over the held-out sites [patient-bootstrap CI], beside the K-fold macro AUROC "
             "where sites are pooled. A large drop means the K-fold value leans on the site. Site from "
             "embeddings: macro AUROC of a linear probe predicting each scan's site from the encoder's "
             "embeddings (K-fold); near 1, the embeddings carry the scanner, a shortcut a head can exploit "
             "where labels differ between sites.", "",
             "| encoder | aggregator | K-fold (sites pooled) | held-out site [95% CI] | Δ | "
             + " | ".join(board.sites) + " | site from embeddings |",
             "|---|---|---|---|---|" + "---|" * (len(board.sites) + 1)]
    for row in held:
        h = row.site_held_out
        assert h is not None
        pooled = _value(row.summary, "auroc")
        per_site = [_num(h.per_site.get(site, math.nan)) for site in board.sites]
        lines.append(f"| {row.encoder} | {row.aggregator} | {_num(pooled)} | {h.mean:.3f} [{h.ci_low:.3f}, "
                     f"{h.ci_high:.3f}] | {h.mean - pooled:+.3f} | " + " | ".join(per_site)
                     + f" | {_num(row.site_shortcut)} |")
    return lines


def _finite_or(value: float, default: float = -math.inf) -> float:
    return value if math.isfinite(value) else default


def _escape(text: str) -> str:
    """Text for a markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def excluded_by_reason(excluded: Sequence[str]) -> list[tuple[str, list[str]]]:
    """Left-out scans (``'id: reason'``) grouped by reason, largest group first."""
    groups: dict[str, list[str]] = {}
    for item in excluded:
        scan_id, _, reason = item.partition(": ")
        groups.setdefault(reason or "no reason given", []).append(scan_id)
    return sorted(((reason, sorted(ids)) for reason, ids in groups.items()), key=lambda g: (-len(g[1]), g[0]))


def _int(value: int | None) -> str:
    return "–" if value is None else str(value)


def _parameters(value: int | None) -> str:
    if value is None:
        return "–"
    if value >= 1_000_000:
        return f"{value / 1e6:.2f} M"
    if value >= 1_000:
        return f"{value / 1e3:.1f} k"
    return str(value)


def _gflops(compute: EncoderCompute | None) -> str:
    if compute is None or compute.gflops is None:
        return "–"
    value = compute.gflops
    text = "0" if value == 0 else f"{value:.3g}"
    return f"{text} / {compute.per}"


def _throughput(compute: EncoderCompute | None) -> str:
    if compute is None or compute.throughput is None:
        return "–"
    unit = "slices" if compute.per == "slice" else "volumes"
    rate = f"{compute.throughput:.3g}" if compute.throughput < 100 else f"{compute.throughput:.0f}"
    probe = ", probe" if compute.measured == "probe" else ""
    return f"{rate} {unit}/s ({compute.device or '?'}{probe})"


def _seconds(value: float) -> str:
    if value is None or math.isnan(value):
        return "–"
    return f"{value:.2f}" if value < 10 else f"{value:.0f}"


MEASURED_COLUMNS = ("throughput", "CV time (s)")
"""Compute columns that are measured, not computed: they differ between two independent runs."""


def mask_measured(board: str) -> str:
    """``board``'s markdown with the cells of :data:`MEASURED_COLUMNS` blanked: what two independent runs
    of the same benchmark must agree on byte for byte."""
    lines, masked = board.split("\n"), []
    columns: list[int] = []
    for line in lines:
        if not line.startswith("|"):
            columns = []
        else:
            cells = line.split("|")
            if not columns and any(c.strip() in MEASURED_COLUMNS for c in cells):
                columns = [i for i, c in enumerate(cells) if c.strip() in MEASURED_COLUMNS]
            elif columns and not set(line) <= set("|-: "):
                cells = [" ~ " if i in columns else c for i, c in enumerate(cells)]
                line = "|".join(cells)
        masked.append(line)
    return "\n".join(masked)


COMPUTE_HEADER = ["encoder", "aggregator", "embedding dim", "encoder params", "GFLOPs", "throughput",
                  "head params", "CV time (s)"]


def compute_table(rows: Sequence[Row]) -> list[str]:
    """The markdown lines of the compute table of ``rows`` (in that order)."""
    lines = ["| " + " | ".join(COMPUTE_HEADER) + " |", "|---|---|" + "---:|" * (len(COMPUTE_HEADER) - 2)]
    for row in rows:
        lines.append("| " + " | ".join([row.encoder, row.aggregator, *_compute_cells(row)]) + " |")
    return lines


def _compute_cells(row: Row) -> list[str]:
    c = row.compute
    return [_int(c.embed_dim if c else None), _parameters(c.parameters if c else None), _gflops(c),
            _throughput(c), _parameters(row.head_parameters), _seconds(row.cv_seconds)]


def _compute_record(row: Row) -> dict[str, Any]:
    c = row.compute or EncoderCompute()
    return {"embed_dim": c.embed_dim, "encoder_parameters": c.parameters, "gflops": c.gflops,
            "gflops_per": c.per if c.gflops is not None else None, "throughput": c.throughput,
            "throughput_device": c.device or None,
            "throughput_measured": c.measured if c.throughput is not None else None,
            "head_parameters": row.head_parameters,
            "cv_seconds": _nan_none(row.cv_seconds)}


def _nan_none(value: float | None) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def _metric_record(summary: Summary, metric: str, label: str = MACRO, prefix: str = "") -> dict[str, Any]:
    name = prefix or metric
    try:
        m = summary.get(metric, label)
    except KeyError:
        return {name: None, f"{name}_std": None, f"{name}_ci_low": None, f"{name}_ci_high": None}
    return {name: _nan_none(m.mean), f"{name}_std": _nan_none(m.std), f"{name}_ci_low": _nan_none(m.ci_low),
            f"{name}_ci_high": _nan_none(m.ci_high)}


def task_tables(board: TaskBoard) -> dict[str, list[dict[str, Any]]]:
    """Every table of a task board as records (numbers unrounded, undefined values ``None``), in the
    board's order: ``leaderboard``, ``compute``, ``comparisons``, ``auroc_per_label``, ``scans_left_out``;
    then, where the board has them, ``scan_notes``, ``label_efficiency``, ``site_held_out``."""
    rows = ranked(board.rows, board.metric)
    metrics = ["auroc", "auprc", "f1_macro", "balanced_accuracy",
               *(name for name, _, _ in board.extra_metrics)]
    leaderboard = []
    for rank, row in enumerate(rows, start=1):
        record: dict[str, Any] = {"rank": rank, "encoder": row.encoder, "aggregator": row.aggregator,
                                  "reference": row.reference}
        for metric in dict.fromkeys(metrics):
            record |= _metric_record(row.summary, metric)
        record["auroc_repeat_std"] = _nan_none(_repeat_std(row.summary))
        n = row.null
        record |= {"null_mean": _nan_none(n.mean) if n else None, "null_low": _nan_none(n.low) if n else None,
                   "null_high": _nan_none(n.high) if n else None,
                   "permutation_p": _nan_none(n.p_value) if n else None}
        if board.tuning:
            record["tuned_settings"] = tuned_text(row) or None
        leaderboard.append(record)
    compute = [{"encoder": row.encoder, "aggregator": row.aggregator, **_compute_record(row)} for row in rows]
    comparisons = [{"row": c.row, "reference": c.reference, "kind": c.kind, "metric": c.metric,
                    "label": c.label, "difference": _nan_none(c.difference), "ci_low": _nan_none(c.ci_low),
                    "ci_high": _nan_none(c.ci_high), "p": _nan_none(c.p_value), "p_holm": _nan_none(c.p_holm),
                    "p_floor": _nan_none(c.p_floor)}
                   for c in sorted(board.comparisons, key=lambda c: (c.kind, c.row))]
    per_label = [{"encoder": row.encoder, "aggregator": row.aggregator, "label": label,
                  **_metric_record(row.summary, "auroc", label)}
                 for row in rows for label in board.label_names]
    left_out = [{"scan_id": scan_id, "reason": reason}
                for reason, ids in excluded_by_reason(board.excluded) for scan_id in ids]
    tables = {"leaderboard": leaderboard, "compute": compute, "comparisons": comparisons,
              "auroc_per_label": per_label, "scans_left_out": left_out}
    if board.scan_notes:
        tables["scan_notes"] = [{"scan_id": scan_id, "note": note}
                                for scan_id, notes in sorted(board.scan_notes.items()) for note in notes]
    efficiency = [{"encoder": row.encoder, "aggregator": row.aggregator, "fraction": p.fraction,
                   "patients": p.patients, "auroc": _nan_none(p.mean), "auroc_ci_low": _nan_none(p.ci_low),
                   "auroc_ci_high": _nan_none(p.ci_high), "draws": p.draws,
                   "area": _nan_none(efficiency_area(row.efficiency))}
                  for row in rows for p in row.efficiency]
    if efficiency:
        tables["label_efficiency"] = efficiency
    held = [{"encoder": row.encoder, "aggregator": row.aggregator,
             "kfold_auroc": _nan_none(_value(row.summary, "auroc")), "held_out_auroc": _nan_none(h.mean),
             "held_out_ci_low": _nan_none(h.ci_low), "held_out_ci_high": _nan_none(h.ci_high),
             **{f"site_{site}": _nan_none(h.per_site.get(site, math.nan)) for site in board.sites},
             "site_from_embeddings_auroc": _nan_none(row.site_shortcut)}
            for row in rows if (h := row.site_held_out) is not None]
    if held:
        tables["site_held_out"] = held
    return tables


def render_transfer_board(board: TransferBoard, *, benchmark: str, version: str, provenance: str = "") -> str:
    """The markdown of one ``<train>-to-<test>`` transfer board, best macro AUROC on the test task first."""
    rows = sorted(board.rows, key=lambda r: (math.isnan(r.auroc), -_finite_or(r.auroc, 0.0)))
    shared = (f" Left out of training: {_count(board.shared_patients, 'patient')} of `{board.train}` that "
              f"`{board.test}` also has." if board.shared_patients else "")
    lines = [f"# {board.train} → {board.test}", "",
             f"Benchmark `{benchmark}`, clear-bench {version}. Transfer: every (encoder, head) is trained on "
             f"the patients of `{board.train}` ({board.train_patients} to train on, "
             f"{board.val_patients} held out for early stopping and thresholds) and tested on all "
             f"{board.test_patients} patients "
             f"({board.test_scans} scans) of `{board.test}`, with the benchmark's heads, settings and "
             f"tuning.{shared} Values: macro AUROC on `{board.test}` [95% patient-level bootstrap CI, "
             f"{board.n_boot} resamples]; in-task: the row's K-fold macro AUROC on `{board.train}`'s own "
             "board.", *([provenance] if provenance else []), "",
             "| rank | encoder | aggregator | macro AUROC on test task [95% CI] | in-task K-fold | Δ | "
             + " | ".join(board.label_names) + " |",
             "|---:|---|---|---|---|---|" + "---|" * len(board.label_names)]
    for rank, row in enumerate(rows, start=1):
        labels = [_num(row.per_label.get(label, math.nan)) for label in board.label_names]
        lines.append(f"| {rank} | {row.encoder} | {row.aggregator} | {row.auroc:.3f} [{row.ci_low:.3f}, "
                     f"{row.ci_high:.3f}] | {_num(row.in_task)} | {_num(row.auroc - row.in_task)} | "
                     + " | ".join(labels) + " |")
    return "\n".join(lines) + "\n"


def transfer_table(board: TransferBoard) -> list[dict[str, Any]]:
    """The transfer board's rows as records (CSV and JSON), best first."""
    rows = sorted(board.rows, key=lambda r: (math.isnan(r.auroc), -_finite_or(r.auroc, 0.0)))
    return [{"rank": rank, "train_task": board.train, "test_task": board.test, "encoder": row.encoder,
             "aggregator": row.aggregator, "auroc": _nan_none(row.auroc),
             "auroc_ci_low": _nan_none(row.ci_low),
             "auroc_ci_high": _nan_none(row.ci_high), "in_task_auroc": _nan_none(row.in_task),
             **{f"auroc:{label}": _nan_none(row.per_label.get(label, math.nan))
                for label in board.label_names},
             "train_patients": board.train_patients, "val_patients": board.val_patients,
             "test_patients": board.test_patients, "shared_patients_left_out": board.shared_patients}
            for rank, row in enumerate(rows, start=1)]


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


@dataclass
class OverallStanding:
    """Every (encoder, aggregator) across tasks: macro AUROC and rank per task, in board order."""

    tasks: list[str]
    order: list[str]
    """Row names, best mean rank first (ties: higher mean macro AUROC)."""
    names: dict[str, tuple[str, str]]
    auroc: dict[str, dict[str, float]]
    rank: dict[str, dict[str, int]]
    rows: dict[str, list[Row]]
    """The row of each task, in task order."""

    def mean_rank(self, name: str) -> float:
        return sum(self.rank[name].values()) / len(self.rank[name])

    def mean_auroc(self, name: str) -> float:
        values = [v for v in self.auroc[name].values() if not math.isnan(v)]
        return sum(values) / len(values) if values else math.nan


def overall_standing(boards: Sequence[TaskBoard]) -> OverallStanding:
    """Rank every row within each task board and combine the ranks across tasks."""
    auroc: dict[str, dict[str, float]] = {}
    rank: dict[str, dict[str, int]] = {}
    names: dict[str, tuple[str, str]] = {}
    rows: dict[str, list[Row]] = {}
    for board in boards:
        for position, row in enumerate(ranked(board.rows, board.metric), start=1):
            auroc.setdefault(row.name, {})[board.task] = _value(row.summary, "auroc")
            rank.setdefault(row.name, {})[board.task] = position
            names[row.name] = (row.encoder, row.aggregator)
            rows.setdefault(row.name, []).append(row)
    standing = OverallStanding([board.task for board in boards], [], names, auroc, rank, rows)
    standing.order = sorted(auroc, key=lambda n: (standing.mean_rank(n), -standing.mean_auroc(n)))
    return standing


def _overall_compute(standing: OverallStanding, name: str) -> Row:
    """One row standing for ``name`` across tasks: its encoder's compute, the head parameters when every
    task agrees, and the CV time summed over tasks."""
    rows = standing.rows[name]
    heads = {row.head_parameters for row in rows}
    seconds = [row.cv_seconds for row in rows]
    first = rows[0]
    return Row(first.encoder, first.aggregator, first.summary, compute=first.compute,
               head_parameters=heads.pop() if len(heads) == 1 else None,
               cv_seconds=math.nan if any(math.isnan(v) for v in seconds) else sum(seconds))


def render_overall_board(boards: Sequence[TaskBoard], *, benchmark: str, version: str,
                         left_out: Sequence[str] = (), provenance: str = "",
                         figures: Mapping[str, str] | None = None) -> str:
    """Mean macro AUROC and mean rank of every (encoder, aggregator) across tasks, and what each costs."""
    standing = overall_standing(boards)
    tasks = standing.tasks
    lines = [
        "# Overall",
        "",
        f"Benchmark `{benchmark}`, clear-bench {version}. Macro AUROC per task (mean over folds) and the "
        "mean rank across tasks; each task's own board has the confidence intervals and paired tests.",
        *([provenance] if provenance else []),
        "",
        COMPUTE_NOTE + " Here the head parameters are shown when every task agrees (they depend on the "
        "number of labels), and the CV time is summed over tasks.",
        "",
        "| encoder | aggregator | mean rank | mean macro AUROC | " + " | ".join(tasks) + " | "
        + " | ".join(COMPUTE_HEADER[2:]) + " |",
        "|---|---|---:|---|" + "---|" * len(tasks) + "---:|" * len(COMPUTE_HEADER[2:]),
    ]
    for name in standing.order:
        encoder, aggregator = standing.names[name]
        cells = [f"{standing.auroc[name][t]:.3f}" if t in standing.auroc[name] else "–" for t in tasks]
        cells += _compute_cells(_overall_compute(standing, name))
        lines.append(f"| {encoder} | {aggregator} | {standing.mean_rank(name):.2f} | "
                     f"{standing.mean_auroc(name):.3f} | " + " | ".join(cells) + " |")
    for title, path in (figures or {}).items():
        lines += ["", f"## {title}", "", f"![{title}]({path})"]
    if left_out:
        lines += ["", "## Encoders left out", "", *[f"- {item}" for item in left_out]]
    return "\n".join(lines) + "\n"


def overall_tables(boards: Sequence[TaskBoard], left_out: Sequence[str] = ()
                   ) -> dict[str, list[dict[str, Any]]]:
    """The overall board's tables as records: ``overall`` (AUROC and rank per task), ``compute`` and
    ``encoders_left_out``."""
    standing = overall_standing(boards)
    overall, compute = [], []
    for name in standing.order:
        encoder, aggregator = standing.names[name]
        record: dict[str, Any] = {"encoder": encoder, "aggregator": aggregator,
                                  "mean_rank": standing.mean_rank(name),
                                  "mean_auroc": _nan_none(standing.mean_auroc(name))}
        for task in standing.tasks:
            record[f"auroc:{task}"] = _nan_none(standing.auroc[name].get(task))
            record[f"rank:{task}"] = standing.rank[name].get(task)
        overall.append(record)
        compute.append({"encoder": encoder, "aggregator": aggregator,
                        **_compute_record(_overall_compute(standing, name))})
    return {"overall": overall, "compute": compute,
            "encoders_left_out": [{"encoder": item} for item in left_out]}
