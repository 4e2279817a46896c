"""The tasks and the synthetic source as the harness finds them: through the plugin registry."""

import importlib.metadata
import textwrap
from pathlib import Path

import clear_bench_ct_tasks.plugin
import numpy as np
import pytest

from clear_bench.components import build_source, load_task
from clear_bench.config import load_benchmark
from clear_bench.data.annotations import LESION_TYPES
from clear_bench.errors import ConfigError
from clear_bench.registry import load_registry
from clear_bench.specs import LabelledSource

SOURCE = {"name": "synthetic", "patients": 6, "slices": 10, "matrix": 48, "cache": False}


@pytest.fixture(scope="module")
def registry():
    # only this plugin (loading every installed plugin would import the deep-learning stacks)
    return load_registry([Path(clear_bench_ct_tasks.plugin.__file__)], installed=False)


def test_plugin_registers_sources_and_tasks(registry):
    points = importlib.metadata.entry_points(group="clear_bench")
    assert any(p.value == "clear_bench_ct_tasks.plugin" for p in points)
    assert not registry.failures
    assert {"lesion-location", "lung-disease", "staging", "csv", "csv-multiclass"} <= set(registry.tasks)
    assert {"synthetic", "folder", "seed-png", "deeplesion", "samples"} <= set(registry.sources)
    assert registry.task("staging").label_type == "multiclass"
    assert registry.commands["cohort"].spec.parent == "data"


def test_tasks_on_the_synthetic_source(registry):
    loc = load_task(registry, registry.task("lesion-location"), {"source": SOURCE})
    assert isinstance(loc.source, LabelledSource) and loc.source.name == "synthetic"
    assert loc.label_names == list(LESION_TYPES)
    assert set(loc.labels) == set(loc.source.scan_ids()) and len(loc.labels) == 6
    for scan_id, vector in loc.labels.items():
        scan = loc.source.load(scan_id)
        boxed = {box.label for box in scan.lesions}
        assert boxed == {LESION_TYPES[i] for i in np.flatnonzero(vector)}
    lung = load_task(registry, registry.task("lung-disease"), {"source": SOURCE})
    assert lung.label_names == ["emphysema", "nodule", "consolidation", "effusion"]
    stage = load_task(registry, registry.task("staging"), {"source": SOURCE})
    assert stage.label_names == ["I", "II", "III", "IV"]
    assert all(v.dtype == np.int64 and v.shape == (1,) and 0 <= v[0] < 4 for v in stage.labels.values())


def test_tasks_take_the_built_source(registry):
    built = build_source(registry, SOURCE)
    stage = registry.task("staging").load({"source": built})
    assert stage.source is built and len(stage.labels) == 6
    default = load_task(registry, registry.task("staging"), {})  # the declared default: synthetic
    assert default.source.name == "synthetic"
    with pytest.raises(ConfigError, match=r"'staging': option 'source' is dict .* not a built scan source"):
        registry.task("staging").load({"source": SOURCE})


def test_source_options_are_checked(registry, tmp_path):
    bench = tmp_path / "bench.yaml"
    bench.write_text(textwrap.dedent("""
        encoders: [hu-reference]
        tasks:
          - name: staging
            options: {source: {name: synthetic, patient: 3}}
    """))
    # the core checks a task's source options against the source's declared ones (every installed plugin)
    with pytest.raises(ConfigError, match=r"options\.source\.patient: unknown option for source 'synthetic'"):
        load_benchmark(bench, load_registry())
    with pytest.raises(ConfigError, match="preset"):
        registry.source("synthetic").build({"preset": "impossible"})
    (tmp_path / "x.csv").write_text("image,y\n")
    with pytest.raises(ConfigError, match="task 'csv': source: required option is missing"):
        load_task(registry, registry.task("csv"), {"csv": str(tmp_path / "x.csv")})
