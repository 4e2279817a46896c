"""The things plugins provide: encoders, tasks, scan sources, aggregators (MIL heads), metrics, pretrainers
and commands.

A plugin returns these specs from its hooks (see :mod:`clear_bench.hookspecs`). A spec is cheap to create:
it describes a component and knows how to build it; nothing heavy happens until ``build`` is called.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:  # keep `clear-bench plugins` and config validation free of a torch import
    import numpy as np
    import torch

    from clear_bench.data.scan import Scan

from clear_bench.schema import Option, Options, resolve_options

InputKind = Literal["slice", "volume"]
LabelType = Literal["binary", "multiclass", "multilabel"]


@dataclass(frozen=True)
class Preprocessing:
    """How an encoder wants its 2D inputs: square size, channel count and intensity normalisation.

    The harness windows HU to [0, 1], resizes to ``image_size`` and applies ``(x - mean) / std``. An
    encoder with ``input == "hu"`` (the non-learned reference) receives resized Hounsfield units instead,
    one channel, no windowing and no normalisation.
    """

    image_size: int = 224
    input: Literal["windowed", "hu"] = "windowed"
    channels: int = 3
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.5, 0.5, 0.5)
    depth: int | None = None
    """For volume encoders: the number of slices a volume is resampled to along z (``None``: as read)."""

    def fingerprint(self) -> str:
        return stable_hash(asdict(self))


@dataclass
class Encoder:
    """A built, frozen encoder: ``model(x)`` maps a normalised batch to ``[batch, embed_dim]``.

    For ``input_kind == "slice"`` the batch is ``[B, C, H, W]``; for ``"volume"`` it is ``[B, C, D, H, W]``.
    ``weights_digest`` identifies the weights (sha256 of the file, or ``random-init:<seed>``), and enters
    every cache key, so new weights mean new embeddings.
    """

    name: str
    model: torch.nn.Module
    embed_dim: int
    preprocessing: Preprocessing
    weights_digest: str
    input_kind: InputKind = "slice"
    random_init: bool = False
    label: str = ""
    """Human-readable row label; random-init encoders are labelled so in every output."""
    options: dict[str, Any] = field(default_factory=dict)
    """The options it was built with (weights paths excluded: ``weights_digest`` covers them); they enter
    the embedding cache key, so an option that changes the outputs (pooling, image size...) re-extracts."""

    def __post_init__(self) -> None:
        if not self.label:
            self.label = f"{self.name} (random init)" if self.random_init else self.name


@dataclass(frozen=True)
class EncoderSpec:
    """An encoder a plugin offers.

    ``build(options)`` returns an :class:`Encoder`; ``embed_dim`` is the declared output size when it is
    known without building the model, else ``None`` (it is then measured from the built model).
    ``weights_source`` says where weights come from (a hub id, a local path option, ``random``...).
    """

    name: str
    build: Callable[[Mapping[str, Any]], Encoder]
    input_kind: InputKind = "slice"
    embed_dim: int | None = None
    weights_source: str = ""
    description: str = ""
    options: Options = field(default_factory=dict)
    reference: bool = False
    """A non-learned reference (the floor every encoder must beat): ``run`` adds every reference encoder
    to a benchmark that leaves it out, and boards label its rows non-learned."""


@dataclass
class LesionBox:
    """A lesion's bounding box on one axial slice, in pixel coordinates of that slice (x right, y down)."""

    slice_index: int
    x0: float
    y0: float
    x1: float
    y1: float
    label: str | None = None


@runtime_checkable
class ScanSource(Protocol):
    """A set of scans addressed by pseudonymous ids, read lazily one at a time."""

    name: str

    def scan_ids(self) -> list[str]:
        """Every scan id this source serves, in a stable order."""
        ...

    def load(self, scan_id: str) -> Scan:
        """Read one scan; raise :class:`clear_bench.errors.DataError` naming the file when it is bad."""
        ...

    def fingerprint(self, scan_id: str) -> str:
        """A content hash of the scan (file bytes, or generator parameters) that keys its cache entries."""
        ...


@runtime_checkable
class LocatedSource(Protocol):
    """Optional capability of a :class:`ScanSource`: it can say which file or folder a scan is read from,
    so a failure report names it."""

    def path(self, scan_id: str) -> Path | None:
        """The file or folder ``scan_id`` is read from (``None`` when it has none, e.g. generated)."""
        ...


@runtime_checkable
class LabelledSource(Protocol):
    """Optional capability of a :class:`ScanSource` that carries labels of its own (the synthetic cohort,
    DeepLesion's lesion types): tasks read them when no label CSV is given."""

    def task_labels(self, task: str) -> tuple[list[str], dict[str, np.ndarray]]:
        """``(label_names, labels)`` of ``task`` in the :class:`TaskData` convention; ``KeyError`` when
        this source has no labels for that task."""
        ...


@runtime_checkable
class PatientSource(Protocol):
    """Optional capability of a :class:`ScanSource` that knows which patient each scan belongs to, so
    folds keep a patient's scans together."""

    def patient_id(self, scan_id: str) -> str | None:
        """A pseudonymous patient id of ``scan_id`` (never a raw DICOM value: hash it with a salt), or
        ``None`` when unknown. A source with one scan per patient returns the scan id."""
        ...


@runtime_checkable
class SiteSource(Protocol):
    """Optional capability of a :class:`ScanSource` that knows where each scan was acquired (scanner or
    institution), so that a benchmark can test on sites it did not train on."""

    def site_id(self, scan_id: str) -> str | None:
        """A pseudonymous site of ``scan_id`` (never a raw DICOM value: hash it with a salt), or ``None``
        when unknown."""
        ...


@dataclass(frozen=True)
class SourceSpec:
    """A dataset source: ``build(options)`` returns a :class:`ScanSource`."""

    name: str
    build: Callable[[Mapping[str, Any]], ScanSource]
    description: str = ""
    options: Options = field(default_factory=dict)


@dataclass
class TaskData:
    """What a task yields: its scans and one label vector per scan.

    ``labels[scan_id]`` is a 0/1 vector of length ``len(label_names)`` for binary and multi-label tasks and
    a one-element class index for multi-class tasks. Scans without a label are left out of ``labels``.
    """

    label_names: list[str]
    labels: dict[str, np.ndarray]
    source: ScanSource
    patient_of: dict[str, str] | None = None
    """Pseudonymous patient of each labelled scan id (its scans share a fold). ``None`` when the task does
    not know patients; folds are then scan-level and the board says so. A task fills it from a label
    CSV's patient column, else from a :class:`PatientSource`."""
    site_of: dict[str, str] | None = None
    """Pseudonymous acquisition site of each labelled scan (``None``: taken from a :class:`SiteSource`,
    when the source is one)."""


@dataclass(frozen=True)
class TaskSpec:
    """A clinical endpoint: ``load(options)`` returns :class:`TaskData`."""

    name: str
    label_type: LabelType
    load: Callable[[Mapping[str, Any]], TaskData]
    metric: str = "auroc"
    """The primary metric (a registered metric's name): it ranks the board's rows and is the one the
    paired comparisons test."""
    description: str = ""
    options: Options = field(default_factory=dict)


@dataclass
class AggregatorOutput:
    """Logits ``[B, n_outputs]`` and per-instance attention ``[B, N]`` (zero on padding)."""

    logits: torch.Tensor
    attention: torch.Tensor


@dataclass(frozen=True)
class AggregatorSpec:
    """A MIL head: ``build(in_dim, n_outputs, options)`` returns a module whose
    ``forward(x [B, N, D], mask [B, N] (True = real instance))`` returns an :class:`AggregatorOutput`."""

    name: str
    build: Callable[[int, int, Mapping[str, Any]], torch.nn.Module]
    description: str = ""
    options: Options = field(default_factory=dict)
    ensemble: bool = False
    """The module's ``forward`` also takes leading member dimensions (``x [E, B, N, D]``,
    ``mask [E, B, N]``: index dimensions from the end), it masks padding itself (padded rows of ``x``
    may hold any value), and its weights live in ``nn.Linear`` / ``nn.LayerNorm`` layers or plain
    parameters: many copies then train as one stacked module (:mod:`clear_bench.evaluation.ensemble`).
    Otherwise each fold trains on its own."""
    input_layer: str | None = None
    """For an ``ensemble`` head: the name (as in ``named_modules``) of its ``nn.Linear`` that takes the
    instances first, with nothing before it but zeroing the padding (or an average over the real
    instances). The stacked trainer then folds the input standardisation into that layer's weights
    instead of standardising every minibatch: the same function of the same parameters, at the cost of
    the weights rather than of the inputs."""
    fit: Callable[[Mapping[str, Any], int], Any] | None = None
    """A probe fitted in closed form on pooled scan embeddings instead of a module trained by the loop:
    ``fit(options, seed)`` returns an object with ``max_pool`` (bool), ``fit(features, targets,
    label_type)`` and ``predict(features) -> probabilities`` (see :mod:`clear_bench.evaluation.probes`);
    ``build`` is then never called."""


RESUME_IF_PRESENT = "if-present"
"""``resume`` value of a benchmark run: continue from the newest training state when the output folder has
one, start afresh otherwise (a run killed before its first state must not block every later run)."""


class PretrainRun(Protocol):
    """How a pretrainer trains: returns the path of the final encoder checkpoint."""

    def __call__(self, config: Path | None, output_dir: Path | None, *, resume: bool | Path | str = False,
                 options: Mapping[str, Any] | None = None) -> Path | None:
        """Train from the recipe ``config`` into ``output_dir`` (``None``: the recipe's own choice);
        ``resume=True`` continues from the newest training state there (an error without one), a path
        from that state file, :data:`RESUME_IF_PRESENT` from the newest state if there is one;
        ``options`` are checked values of the spec's declared options, overriding the recipe. Returns
        the final encoder checkpoint, or ``None`` when the run stopped early on purpose (a step limit)
        and left a training state to resume from."""
        ...


@dataclass(frozen=True)
class PretrainerSpec:
    """A way to train an encoder: ``clear-bench pretrain NAME`` and a YAML encoder's ``pretrain:`` entry.

    ``options`` are the recipe overrides it accepts: the same declared options become the command's
    ``--flags`` and the keys of ``pretrain: {options: ...}`` in a benchmark YAML. A declared bool option
    ``progress`` is set to ``False`` by ``clear-bench run --no-progress``; it must change only what is
    shown, never what is trained (it is not part of a pretrained checkpoint's key).
    """

    name: str
    run: PretrainRun
    options: Options = field(default_factory=dict)
    description: str = ""
    config_required: bool = True
    """Whether ``run`` needs a recipe file (``--config``)."""
    code_version: str = ""
    """Bumped by the plugin whenever a change to its training would change the encoder a recipe yields:
    a benchmark's pretrained checkpoints are keyed by it, so they are trained again instead of reused."""


@dataclass(frozen=True)
class MetricSpec:
    """A metric computed from one fold's test probabilities.

    ``compute(label_type, y, probs, thresholds, weights)`` gets ``y`` (``[n, L]`` 0/1, or ``[n]`` class
    indices for multi-class), ``probs`` (``[n, L]`` sigmoid or ``[n, C]`` softmax), one
    validation-chosen threshold per label (empty for multi-class) and bootstrap ``weights`` ``[B, n]``
    (``None``: one unweighted evaluation), and returns ``[B, L + 1]``: one column per label (``nan``
    where it is undefined or not per-label) and the macro value last. :func:`per_label_metric` builds
    ``compute`` from a function of one label.
    """

    name: str
    compute: Callable[..., np.ndarray]
    label_types: tuple[LabelType, ...] = ("binary", "multilabel", "multiclass")
    higher_is_better: bool = True
    title: str = ""
    """Column title on boards (default: the name)."""
    description: str = ""
    interval: bool = True
    """Whether boards print its bootstrap interval: False for a metric whose resamples are biased (ECE
    adds up absolute gaps, so resampling noise pushes it up); the interval stays in the results."""


@dataclass(frozen=True)
class CommandSpec:
    """A subcommand a plugin adds: ``clear-bench NAME`` or, with ``parent``, ``clear-bench PARENT NAME``.

    ``add_arguments(parser)`` declares its flags; ``run(args)`` returns the exit code (``None``: 0).
    """

    name: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int | None]
    help: str = ""
    parent: str | None = None
    """``"data"`` attaches it under ``clear-bench data``; ``None`` makes it a top-level command."""


def per_label_metric(score: Callable[..., Any]) -> Callable[..., np.ndarray]:
    """A :attr:`MetricSpec.compute` from ``score(y, scores, weights) -> float | [B]`` of one label (0/1
    ``y``, scores of that label; one-vs-rest per class for multi-class); the macro value is the mean over
    the labels where it is defined."""

    def compute(label_type: str, y: np.ndarray, probs: np.ndarray, thresholds: Sequence[float],
                weights: np.ndarray | None) -> np.ndarray:
        import warnings

        import numpy as np

        probs = np.asarray(probs, dtype=np.float64)
        n_boot = 1 if weights is None else np.atleast_2d(weights).shape[0]
        if label_type == "multiclass":
            classes = np.asarray(y).reshape(-1).astype(np.int64)
            columns = [classes == c for c in range(probs.shape[1])]
        else:
            matrix = np.asarray(y).reshape(len(probs), -1).astype(bool)
            columns = [matrix[:, j] for j in range(probs.shape[1])]
        per = np.stack([np.broadcast_to(np.asarray(score(column, probs[:, j], weights), dtype=np.float64),
                                        (n_boot,)) for j, column in enumerate(columns)], axis=1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            macro = np.nanmean(per, axis=1)
        return np.concatenate([per, macro[:, None]], axis=1)

    return compute


def stable_hash(value: Any, length: int = 16) -> str:
    """A short sha256 of a JSON-serialisable value, independent of dict order."""
    blob = json.dumps(value, sort_keys=True, default=str, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


__all__ = [
    "AggregatorOutput",
    "AggregatorSpec",
    "CommandSpec",
    "Encoder",
    "EncoderSpec",
    "InputKind",
    "LabelType",
    "LabelledSource",
    "LesionBox",
    "LocatedSource",
    "MetricSpec",
    "Option",
    "Options",
    "Preprocessing",
    "PretrainRun",
    "PretrainerSpec",
    "ScanSource",
    "SourceSpec",
    "TaskData",
    "TaskSpec",
    "per_label_metric",
    "resolve_options",
    "stable_hash",
]
