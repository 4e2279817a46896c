"""Plugin discovery: installed entry points, local files, failures and name conflicts."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from clear_bench.errors import PluginError
from clear_bench.registry import load_registry

ENCODER_PLUGIN = """
from clear_bench import hookimpl
from clear_bench.specs import EncoderSpec

def _build(options):
    raise NotImplementedError

@hookimpl
def clear_bench_encoders():
    return [EncoderSpec(name="{name}", build=_build, description="test encoder")]
"""


def write_plugin(folder: Path, filename: str, body: str) -> Path:
    path = folder / filename
    path.write_text(textwrap.dedent(body))
    return path


def test_installed_distributions_register_their_components() -> None:
    registry = load_registry()
    assert {"abmil", "pma", "mean-pool"} <= set(registry.aggregators)
    providers = {entry.provider.distribution for kind in ("encoders", "tasks", "sources", "aggregators",
                                                          "pretrainers")
                 for entry in registry.of_kind(kind).values()}
    assert {"clear-bench", "clear-bench-lecl", "clear-bench-foundation", "clear-bench-ct-tasks"} <= providers
    assert registry.aggregators["abmil"].provider.version not in ("", "?")


def test_local_plugin_file_is_loaded_and_attributed(tmp_path: Path) -> None:
    path = write_plugin(tmp_path, "extra.py", ENCODER_PLUGIN.format(name="extra-encoder"))
    registry = load_registry([path])
    entry = registry.encoders["extra-encoder"]
    assert entry.provider.distribution == f"local: {path.resolve()}"
    assert registry.encoder("extra-encoder").description == "test encoder"


def test_local_plugin_folder_loads_each_module(tmp_path: Path) -> None:
    folder = tmp_path / "several"
    folder.mkdir()
    write_plugin(folder, "one.py", ENCODER_PLUGIN.format(name="enc-one"))
    write_plugin(folder, "two.py", ENCODER_PLUGIN.format(name="enc-two"))
    registry = load_registry([folder])
    assert {"enc-one", "enc-two"} <= set(registry.encoders)


def test_plugin_that_raises_on_import_is_reported_and_others_still_load(tmp_path: Path) -> None:
    broken = write_plugin(tmp_path, "broken.py", "raise RuntimeError('weights server unreachable')\n")
    good = write_plugin(tmp_path, "good.py", ENCODER_PLUGIN.format(name="good-encoder"))
    registry = load_registry([broken, good])
    assert "good-encoder" in registry.encoders
    assert "abmil" in registry.aggregators
    [failure] = [f for f in registry.failures if f.plugin == "broken"]
    assert "RuntimeError: weights server unreachable" in failure.error
    assert str(broken) in failure.origin
    with pytest.raises(PluginError, match=r"unknown encoder 'nope'.*broken"):
        registry.encoder("nope")


def test_two_providers_of_one_name_is_an_error_naming_both(tmp_path: Path) -> None:
    first = write_plugin(tmp_path, "first.py", ENCODER_PLUGIN.format(name="twin"))
    second = write_plugin(tmp_path, "second.py", ENCODER_PLUGIN.format(name="twin"))
    with pytest.raises(PluginError) as info:
        load_registry([first, second])
    message = str(info.value)
    assert "encoder 'twin'" in message
    assert "first.py" in message and "second.py" in message


def test_local_plugin_cannot_shadow_a_builtin(tmp_path: Path) -> None:
    body = """
    from clear_bench import hookimpl
    from clear_bench.specs import AggregatorSpec

    @hookimpl
    def clear_bench_aggregators():
        return [AggregatorSpec(name="abmil", build=lambda d, n, o: None)]
    """
    path = write_plugin(tmp_path, "shadow.py", body)
    with pytest.raises(PluginError, match=r"aggregator 'abmil' is provided by both plugin 'core' "
                                          r"\(clear-bench .*\) and plugin 'shadow'"):
        load_registry([path])


def test_misspelt_hook_and_wrong_return_type_are_reported(tmp_path: Path) -> None:
    typo = write_plugin(tmp_path, "typo.py", """
    from clear_bench import hookimpl

    @hookimpl
    def clear_bench_encoder():
        return []
    """)
    wrong = write_plugin(tmp_path, "wrong.py", """
    from clear_bench import hookimpl

    @hookimpl
    def clear_bench_tasks():
        return ["lesion-location"]
    """)
    registry = load_registry([typo, wrong])
    messages = {f.plugin: f.error for f in registry.failures}
    assert "unknown hook(s): clear_bench_encoder" in messages["typo"]
    assert "returned str, expected TaskSpec" in messages["wrong"]


def test_missing_local_plugin_path_is_reported(tmp_path: Path) -> None:
    registry = load_registry([tmp_path / "absent.py"])
    assert any("no such plugin file or folder" in f.error for f in registry.failures)
