"""Benchmark YAML validation: every problem on one line with file, line, key path and expectation."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from clear_bench.cli import main
from clear_bench.config import load_benchmark
from clear_bench.errors import ConfigError
from clear_bench.registry import load_registry

PLUGIN = """
from pathlib import Path

from clear_bench import hookimpl
from clear_bench.specs import EncoderSpec, Option, SourceSpec, TaskSpec

@hookimpl
def clear_bench_encoders():
    return [EncoderSpec(name="toy-encoder", build=lambda options: None,
                        options={"checkpoint": Option(Path, None, "weights file"),
                                 "width": Option(int, 8, "hidden width")})]

@hookimpl
def clear_bench_tasks():
    return [TaskSpec(name="toy-task", label_type="binary", load=lambda options: None,
                     options={"source": Option((str, dict), "toy-source", "scans", component="sources")})]

@hookimpl
def clear_bench_sources():
    return [SourceSpec(name="toy-source", build=lambda options: None,
                       options={"root": Option(Path, None, "scan folder"),
                                "cache": Option(Path, None, "output folder", must_exist=False)})]
"""


@pytest.fixture
def bench(tmp_path: Path):
    (tmp_path / "toy_plugin.py").write_text(PLUGIN)
    (tmp_path / "weights.pt").write_bytes(b"not really weights")

    def write(body: str) -> Path:
        path = tmp_path / "bench.yaml"
        path.write_text(textwrap.dedent(body))
        return path

    return write


def problems_of(path: Path) -> list[str]:
    registry = load_registry([path.parent / "toy_plugin.py"])
    with pytest.raises(ConfigError) as info:
        load_benchmark(path, registry)
    return info.value.lines


def test_valid_config_resolves_paths_and_defaults(bench) -> None:
    path = bench("""
        plugins: [toy_plugin.py]
        encoders:
          - name: toy-encoder
            options: {checkpoint: weights.pt, width: 16}
        tasks: [toy-task]
        crossval: {folds: 3}
    """)
    config = load_benchmark(path, load_registry([path.parent / "toy_plugin.py"]))
    assert config.name == "bench"
    assert config.encoders[0].options["checkpoint"] == str((path.parent / "weights.pt").resolve())
    assert config.crossval.folds == 3 and config.crossval.epochs == 40
    assert [a.name for a in config.aggregators] == ["abmil"]
    assert config.tasks[0].id == "toy-task"
    assert config.plugins == ((path.parent / "toy_plugin.py").resolve(),)


def test_unknown_key_is_named_with_line_and_suggestion(bench) -> None:
    path = bench("""
        encoders: [toy-encoder]
        tasks: [toy-task]
        crossvall: {folds: 3}
    """)
    [line] = problems_of(path)
    assert line.startswith(f"{path}:4: crossvall: unknown key (did you mean 'crossval'?)")


def test_wrong_type_names_key_path_and_expected_type(bench) -> None:
    path = bench("""
        encoders:
          - name: toy-encoder
            options: {width: wide}
        tasks: [toy-task]
        crossval:
          folds: five
    """)
    lines = problems_of(path)
    assert f"{path}:4: encoders[0].options.width: expected int, got str 'wide'" in lines
    assert f"{path}:7: crossval.folds: expected int, got str 'five'" in lines


def test_unknown_encoder_and_option_list_what_is_known(bench) -> None:
    path = bench("""
        encoders:
          - name: toy-encodr
          - name: toy-encoder
            options: {widht: 3}
        tasks: [toy-task]
    """)
    lines = problems_of(path)
    assert any(line.startswith(f"{path}:3: encoders[0].name: unknown encoder 'toy-encodr' "
                               "(did you mean 'toy-encoder'?) (known: ") for line in lines)
    assert any(line.startswith(f"{path}:5: encoders[1].options.widht: unknown option for encoder "
                               "'toy-encoder' (did you mean 'width'?)") for line in lines)


def test_missing_files_are_reported(bench, tmp_path: Path) -> None:
    path = bench("""
        plugins: [absent_plugin.py]
        encoders:
          - name: toy-encoder
            options: {checkpoint: missing.pt}
        tasks: [toy-task]
    """)
    lines = problems_of(path)
    assert f"{path}:2: plugins[0]: plugin file or folder not found: {tmp_path / 'absent_plugin.py'}" in lines
    assert f"{path}:5: encoders[0].options.checkpoint: file not found: {tmp_path / 'missing.pt'}" in lines


def test_missing_required_sections_and_bad_windows(bench) -> None:
    path = bench("""
        tasks: []
        preprocessing:
          windows: [lung, brain, W350L50]
    """)
    lines = problems_of(path)
    assert any(line.endswith("encoders: required key is missing (encoders to compare)") for line in lines)
    assert f"{path}:2: tasks: expected at least one task" in lines
    bad_window = f"{path}:4: preprocessing.windows[1]: unknown window 'brain'; expected one of"
    assert any(line.startswith(bad_window) for line in lines)
    assert not any("windows[2]" in line for line in lines)


def test_cli_prints_each_problem_and_exits_2_without_traceback(bench, capsys) -> None:
    path = bench("""
        encoders: [nope]
        tasks: [toy-task]
        device: 3
    """)
    code = main(["--plugin", str(path.parent / "toy_plugin.py"), "run", str(path), "--check"])
    err = capsys.readouterr().err
    assert code == 2
    assert "Traceback" not in err
    assert f"error: {path}:2: encoders[0].name: unknown encoder 'nope'" in err
    assert f"error: {path}:4: device: expected str, got int 3" in err


def test_not_yaml_and_missing_file(tmp_path: Path, capsys) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("encoders: [a\ntasks: b\n")
    assert main(["run", str(broken), "--check"]) == 2
    assert f"error: {broken}:" in capsys.readouterr().err
    assert main(["run", str(tmp_path / "nowhere.yaml"), "--check"]) == 2
    assert "nowhere.yaml: no such file" in capsys.readouterr().err


def test_nested_source_options_are_checked_and_paths_resolved(bench, tmp_path: Path) -> None:
    (tmp_path / "scans").mkdir()
    good = bench("""
        encoders: [toy-encoder]
        tasks:
          - name: toy-task
            options: {source: {name: toy-source, root: scans, cache: not-yet/there}}
    """)
    config = load_benchmark(good, load_registry([tmp_path / "toy_plugin.py"]))
    assert config.tasks[0].options["source"] == {
        "name": "toy-source", "root": str(tmp_path / "scans"), "cache": str(tmp_path / "not-yet" / "there")}

    bad = bench("""
        encoders: [toy-encoder]
        tasks:
          - name: toy-task
            options:
              source: {name: toy-source, rooot: scans}
          - name: toy-task
            id: second
            options: {source: toy-sauce}
    """)
    lines = problems_of(bad)
    assert any(line.startswith(f"{bad}:6: tasks[0].options.source.rooot: unknown option for source "
                               "'toy-source' (did you mean 'root'?)") for line in lines)
    assert any(line.startswith(f"{bad}:9: tasks[1].options.source: unknown source 'toy-sauce' "
                               "(did you mean 'toy-source'?)") for line in lines)


def test_every_command_taking_a_yaml_reports_all_problems_at_once(bench, capsys) -> None:
    path = bench("""
        encoders: [nope]
        tasks: [toy-task]
        device: 3
    """)
    for command in ("run", "extract", "evaluate"):
        code = main(["--plugin", str(path.parent / "toy_plugin.py"), command, str(path)])
        err = capsys.readouterr().err
        assert code == 2, command
        assert f"error: {path}:2: encoders[0].name: unknown encoder 'nope'" in err, command
        assert f"error: {path}:4: device: expected str, got int 3" in err, command


def test_pretrain_entry_paths_are_taken_from_the_yaml_folder_and_options_checked(
        bench, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "tiny.yaml").write_text("experiment: tiny\n")
    path = bench("""
        plugins: [toy_plugin.py]
        encoders:
          - name: toy-encoder
            pretrain: {name: lecl, config: recipes/tiny.yaml, options: {epochs: 2}}
        tasks: [toy-task]
    """)
    monkeypatch.chdir(tmp_path.parent)  # another working folder: the YAML's folder still anchors paths
    config = load_benchmark(path, load_registry([path.parent / "toy_plugin.py"]))
    [encoder] = config.encoders
    assert encoder.pretrain.config == (tmp_path / "recipes" / "tiny.yaml").resolve()
    assert encoder.pretrain.options == {"epochs": 2}
    path.write_text(path.read_text().replace("epochs: 2", "epochs: two"))
    assert any("encoders[0].pretrain.options.epochs: expected int, got str 'two'" in line
               for line in problems_of(path))
    path.write_text(path.read_text().replace("tiny.yaml", "none.yaml"))
    assert any("encoders[0].pretrain.config: file not found:" in line and "none.yaml" in line
               for line in problems_of(path))


BENCHMARKS = Path(__file__).parents[2] / "benchmarks"
DATA_RECIPES = {"nsclc-radiomics.yaml": BENCHMARKS.parent / "data" / "NSCLC-Radiomics"}
"""Recipes over a downloaded data set (docs/datasets.md): --check verifies its files, so they validate here
only where the data is; plugins/ct-tasks/tests/test_dicom_export.py checks each on the documented layout."""


@pytest.mark.parametrize("name", sorted(p.name for p in BENCHMARKS.glob("*.yaml")))
def test_every_shipped_benchmark_validates(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = BENCHMARKS / name
    if name in DATA_RECIPES and not DATA_RECIPES[name].is_dir():
        pytest.skip(f"{name} reads {DATA_RECIPES[name]}, which is not on this machine")
    assert main(["run", str(path), "--check"]) == 0
    assert "OK" in capsys.readouterr().out


def test_twin_of_must_name_an_encoder_entry(bench) -> None:
    path = bench("""
        plugins: [toy_plugin.py]
        encoders:
          - {name: toy-encoder, id: trained}
          - {name: toy-encoder, id: random, twin_of: traned}
        tasks: [toy-task]
    """)
    assert any("encoders[1].twin_of: no encoder entry has the id 'traned' (did you mean 'trained'?)" in line
               for line in problems_of(path))


def test_training_fractions_are_checked(bench) -> None:
    path = bench("""
        plugins: [toy_plugin.py]
        encoders: [toy-encoder]
        tasks: [toy-task]
        crossval:
          train_fractions: [0.1, 0, 1.5, 0.1, yes]
          fraction_draws: 0
    """)
    lines = [line.split(": ", 1)[1] for line in problems_of(path)]
    assert "crossval.train_fractions[1]: expected a fraction in (0, 1], got 0" in lines
    assert "crossval.train_fractions[2]: expected a fraction in (0, 1], got 1.5" in lines
    assert "crossval.train_fractions[4]: expected a fraction in (0, 1], got True" in lines
    assert "crossval.train_fractions: a fraction is listed twice" in lines
    assert "crossval.fraction_draws: expected at least 1 draw, got 0" in lines


def test_tuning_grid_and_transfer_pairs_are_checked(bench) -> None:
    path = bench("""
        plugins: [toy_plugin.py]
        encoders: [toy-encoder]
        tasks: [toy-task, {name: toy-task, id: other}]
        crossval:
          tuning: {grid: {lr: [0.001, 0, 0.001], weight_decay: [-1], hidden_dim: []}, inner_folds: 1,
                   heads: [7], seed: 3}
        transfer:
          - {train: toy-task, test: othr}
          - {train: other, test: other}
          - {train: toy-task, test: other}
          - {train: toy-task, test: other}
          - toy-task
    """)
    lines = [line.split(": ", 1)[1] for line in problems_of(path)]
    assert "crossval.tuning.grid.lr[1]: expected a learning rate > 0, got 0" in lines
    assert "crossval.tuning.grid.lr: a candidate value is listed twice" in lines
    assert "crossval.tuning.grid.weight_decay[0]: expected a weight decay >= 0, got -1" in lines
    assert any(line.startswith("crossval.tuning.grid.hidden_dim: expected a non-empty list")
               for line in lines)
    assert "crossval.tuning.inner_folds: expected at least 2 inner folds, got 1" in lines
    assert "crossval.tuning.heads[0]: expected a head id (str), got int 7" in lines
    assert any(line.startswith("crossval.tuning.seed: unknown key") for line in lines)
    assert "transfer[0].test: no task entry has the id 'othr' (did you mean 'other'?)" in lines
    assert "transfer[1]: train and test are both 'other'; name two different tasks" in lines
    assert "transfer[3]: the pair toy-task -> other is listed twice" in lines
    assert any(line.startswith("transfer[4]: expected a mapping") for line in lines)


def test_a_valid_tuning_grid_and_transfer_pair_load(bench) -> None:
    path = bench("""
        plugins: [toy_plugin.py]
        encoders: [toy-encoder]
        tasks: [toy-task, {name: toy-task, id: other}]
        crossval:
          tuning: {grid: {lr: [0.001, 0.0001], hidden_dim: [64, 128]}, heads: [abmil]}
        transfer: [{train: toy-task, test: other}]
    """)
    config = load_benchmark(path, load_registry([path.parent / "toy_plugin.py"]))
    assert config.crossval.tuning == {"grid": {"lr": [0.001, 0.0001], "hidden_dim": [64, 128]},
                                      "inner_folds": 3, "heads": ["abmil"]}
    assert [(t.train, t.test, t.heads, t.name) for t in config.transfer] == \
        [("toy-task", "other", None, "toy-task-to-other")]
    assert load_benchmark(BENCHMARKS / "all.yaml").crossval.tuning is None


def test_tuned_heads_must_be_trained_heads_declaring_the_grid_keys(bench) -> None:
    path = bench("""
        plugins: [toy_plugin.py]
        encoders: [toy-encoder]
        tasks: [toy-task]
        aggregators: [abmil, linear-probe]
        crossval:
          tuning: {grid: {lr: [0.001], hidden_dims: [8]}, heads: [abmil, linear-probe, abmill]}
    """)
    lines = [line.split(": ", 1)[1] for line in problems_of(path)]
    assert "crossval.tuning.heads[1]: 'linear-probe' is a closed-form probe (it chooses its regularisation " \
           "by its own inner CV)" in lines
    assert "crossval.tuning.heads[2]: no aggregator entry has the id 'abmill' (did you mean 'abmil'?)" \
        in lines
    assert "crossval.tuning.grid.hidden_dims: not a training setting (lr, weight_decay) nor an option of " \
           "head abmil" in lines
