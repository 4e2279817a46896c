"""The tasks and the synthetic source as the harness finds them: through the plugin registry."""

import importlib.metadata
from pathlib import Path

import clear_bench_ct_tasks.plugin
import numpy as np
import pytest

from clear_bench.data.annotations import LESION_TYPES
from clear_bench.errors import ConfigError
from clear_bench.registry import load_registry

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
    assert "synthetic" in registry.sources
    assert registry.task("staging").label_type == "multiclass"


def test_tasks_on_the_synthetic_source(registry):
    loc = registry.task("lesion-location").load({"source": SOURCE})
    assert loc.label_names == list(LESION_TYPES)
    assert set(loc.labels) == set(loc.source.scan_ids()) and len(loc.labels) == 6
    for scan_id, vector in loc.labels.items():
        scan = loc.source.load(scan_id)
        boxed = {box.label for box in scan.lesions}
        assert boxed == {LESION_TYPES[i] for i in np.flatnonzero(vector)}
    lung = registry.task("lung-disease").load({"source": SOURCE})
    assert lung.label_names == ["emphysema", "nodule", "consolidation", "effusion"]
    stage = registry.task("staging").load({"source": SOURCE})
    assert stage.label_names == ["I", "II", "III", "IV"]
    assert all(v.dtype == np.int64 and v.shape == (1,) and 0 <= v[0] < 4 for v in stage.labels.values())


def test_source_options_are_checked(registry):
    with pytest.raises(ConfigError, match="unknown option"):
        registry.task("staging").load({"source": {"name": "synthetic", "patient": 3}})
    with pytest.raises(ConfigError, match="preset"):
        registry.source("synthetic").build({"preset": "impossible"})
    with pytest.raises(ConfigError, match="source"):
        registry.task("csv").load({"csv": "x.csv"})
