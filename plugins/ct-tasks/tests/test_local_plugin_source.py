"""A scan source from a local ``--plugin`` file serves this plugin's tasks: the core builds the task's
``source`` from the registry that loaded that file (the plugin used to look its sources up in a registry
of its own, where a ``--plugin`` source did not exist)."""

import textwrap
from pathlib import Path

import clear_bench_ct_tasks.plugin
import numpy as np
import pytest

from clear_bench.cli import main
from clear_bench.components import load_task
from clear_bench.errors import ConfigError
from clear_bench.registry import load_registry

PLUGIN = '''
import numpy as np

from clear_bench import hookimpl
from clear_bench.data.scan import Scan
from clear_bench.specs import Option, SourceSpec


class TinySource:
    name = "tiny"

    def __init__(self, count):
        self.count = count

    def scan_ids(self):
        return [f"tiny-{i}" for i in range(self.count)]

    def load(self, scan_id):
        index = self.scan_ids().index(scan_id)
        return Scan(scan_id, np.full((3, 16, 16), float(index), np.float32), (2.0, 1.0, 1.0))

    def fingerprint(self, scan_id):
        return f"tiny:{scan_id}"


@hookimpl
def clear_bench_sources():
    return [SourceSpec("tiny", lambda options: TinySource(options["count"]), "a few constant volumes",
                       options={"count": Option(int, 3, "number of scans")})]
'''


@pytest.fixture
def plugin_file(tmp_path) -> Path:
    path = tmp_path / "tiny_source.py"
    path.write_text(textwrap.dedent(PLUGIN))
    return path


def test_a_local_plugin_source_serves_the_csv_task(tmp_path, plugin_file):
    registry = load_registry([plugin_file, Path(clear_bench_ct_tasks.plugin.__file__)], installed=False)
    assert not registry.failures
    assert registry.sources["tiny"].provider.distribution == f"local: {plugin_file}"
    table = tmp_path / "clinical.csv"
    table.write_text("image,response\ntiny-0,1\ntiny-1,0\ntiny-3,1\n")
    data = load_task(registry, registry.task("csv"), {"source": {"name": "tiny", "count": 4},
                                                      "csv": str(table)})
    assert data.source.name == "tiny" and data.source.scan_ids() == [f"tiny-{i}" for i in range(4)]
    assert data.label_names == ["response"]
    assert {k: v.tolist() for k, v in data.labels.items()} == {"tiny-0": [1], "tiny-1": [0], "tiny-3": [1]}
    assert float(data.source.load("tiny-3").volume[0, 0, 0]) == 3.0
    # not a LabelledSource: the task says which source lacks labels
    with pytest.raises(ConfigError, match="task 'staging': source 'tiny' carries no stage labels"):
        load_task(registry, registry.task("staging"), {"source": "tiny"})


def test_data_commands_see_a_plugin_source(tmp_path, plugin_file, capsys):
    assert main(["--plugin", str(plugin_file), "data", "cohort", "--source", "tiny", "-o", "count=2",
                 "--export", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert "source 'tiny': 2 scans" in printed and "exported 2 scans" in printed
    assert "labelled" not in printed  # the tiny source carries no labels: no table, no CSV
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["tiny-0.nii.gz", "tiny-1.nii.gz"]
    assert main(["--plugin", str(plugin_file), "data", "show", "tiny-1", "--source", "tiny",
                 "--out", str(tmp_path / "tiny.png"), "--count", "2"]) == 0
    assert "tiny-1: 3 slices" in capsys.readouterr().out
    reread = load_registry([Path(clear_bench_ct_tasks.plugin.__file__)], installed=False)
    volume = reread.source("folder").build({"root": str(tmp_path / "out")}).load("tiny-1").volume
    np.testing.assert_array_equal(volume, np.ones((3, 16, 16)))
