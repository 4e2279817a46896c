"""The core's own components, registered through the same hooks as any plugin."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from clear_bench import hookimpl
from clear_bench.encoders.hu_reference import reference_encoder_spec
from clear_bench.encoders.image_probe import probe_encoder_spec
from clear_bench.specs import AggregatorSpec, EncoderSpec, MetricSpec, Option

if TYPE_CHECKING:
    from torch import nn


def _build_abmil(in_dim: int, n_outputs: int, options: Mapping[str, Any]) -> nn.Module:
    from clear_bench.aggregators.abmil import ABMIL

    return ABMIL(in_dim, n_outputs, **options)


def _build_pma(in_dim: int, n_outputs: int, options: Mapping[str, Any]) -> nn.Module:
    from clear_bench.aggregators.pma import PMA

    return PMA(in_dim, n_outputs, **options)


def _build_mean_pool(in_dim: int, n_outputs: int, options: Mapping[str, Any]) -> nn.Module:
    from clear_bench.aggregators.meanpool import MeanPool

    return MeanPool(in_dim, n_outputs, **options)


def _linear_probe(options: Mapping[str, Any], seed: int) -> Any:
    from clear_bench.evaluation.probes import build_probe

    return build_probe("linear", options, seed)


def _knn_probe(options: Mapping[str, Any], seed: int) -> Any:
    from clear_bench.evaluation.probes import build_probe

    return build_probe("knn", options, seed)


def _fitted_only(in_dim: int, n_outputs: int, options: Mapping[str, Any]) -> nn.Module:
    raise TypeError("a probe is fitted in closed form (AggregatorSpec.fit); it builds no module")


_HIDDEN = Option(int, 128, "width of the instance projection")
_DROPOUT = Option(float, 0.25, "dropout after the instance projection")
_POOLED_NORM = Option(bool, True, "LayerNorm on the pooled bag embedding before the classifier")


@hookimpl
def clear_bench_aggregators() -> list[AggregatorSpec]:
    return [
        AggregatorSpec(
            "abmil", _build_abmil, "attention-based MIL (Ilse et al. 2018), gated by default",
            options={"hidden_dim": _HIDDEN, "attention_dim": Option(int, 64, "attention branch width"),
                     "dropout": _DROPOUT, "gated": Option(bool, True, "gated attention branch"),
                     "pooled_norm": _POOLED_NORM},
            ensemble=True, input_layer="project.0",
        ),
        AggregatorSpec(
            "pma", _build_pma, "pooling by multi-head attention with learned seeds (Set Transformer)",
            options={"hidden_dim": _HIDDEN, "num_heads": Option(int, 4, "attention heads"),
                     "num_seeds": Option(int, 1, "learned seed vectors"), "dropout": _DROPOUT},
            ensemble=True, input_layer="project.0",
        ),
        AggregatorSpec(
            "mean-pool", _build_mean_pool, "mean of projected instances + linear (baseline)",
            options={"hidden_dim": _HIDDEN, "dropout": _DROPOUT, "pooled_norm": _POOLED_NORM},
            ensemble=True, input_layer="project.0",
        ),
        AggregatorSpec(
            "linear-probe", _fitted_only,
            "L2 logistic regression on the per-window mean embedding, strength by inner CV on training rows",
            options={"grid": Option(list, [1e-3, 1e-2, 1e-1, 1.0], "inverse L2 strengths (C) searched"),
                     "inner_folds": Option(int, 3, "inner folds choosing the strength"),
                     "max_pool": Option(bool, False, "also the per-window max of the instances")},
            fit=_linear_probe,
        ),
        AggregatorSpec(
            "knn-probe", _fitted_only, "k nearest training scans by cosine similarity of the mean embedding",
            options={"k": Option(int, 10, "neighbours that vote"),
                     "max_pool": Option(bool, False, "also the per-window max of the instances")},
            fit=_knn_probe,
        ),
    ]


@hookimpl
def clear_bench_encoders() -> list[EncoderSpec]:
    return [reference_encoder_spec(), probe_encoder_spec()]


@hookimpl
def clear_bench_metrics() -> list[MetricSpec]:
    from clear_bench.evaluation.calibration import CALIBRATION_METRICS  # numpy only
    from clear_bench.evaluation.metrics import BUILTIN_METRICS

    return [*BUILTIN_METRICS, *CALIBRATION_METRICS]
