"""A benchmark's pretrained encoders are reused only for the same pretrainer code, recipe and options."""

from __future__ import annotations

import json
from pathlib import Path

from clear_bench.config import ComponentRef, PretrainRef
from clear_bench.pipeline.plan import resolve_pretrained
from clear_bench.registry import load_registry

PLUGIN = '''
import os
from pathlib import Path

from clear_bench import hookimpl
from clear_bench.specs import PretrainerSpec


def _train(config, output_dir, *, resume=False, options=None):
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / "encoder.pt"
    path.write_text(os.environ["TOY_PRETRAINER_VERSION"])
    return path


@hookimpl
def clear_bench_pretrainers():
    return [PretrainerSpec("toy", _train, code_version=os.environ["TOY_PRETRAINER_VERSION"])]
'''


def _checkpoint(tmp_path: Path, monkeypatch, version: str) -> Path:
    monkeypatch.setenv("TOY_PRETRAINER_VERSION", version)
    plugin = tmp_path / f"toy_pretrainer_{version}.py"
    plugin.write_text(PLUGIN)
    registry = load_registry([plugin], installed=False)
    ref = ComponentRef("some-encoder", "mine", {}, pretrain=PretrainRef("toy", tmp_path / "recipe.yaml", {}))
    return Path(resolve_pretrained(ref, registry, tmp_path / "checkpoints").options["checkpoint"])


def test_a_new_pretrainer_version_trains_again(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "recipe.yaml").write_text("epochs: 1\n")
    first = _checkpoint(tmp_path, monkeypatch, "1")
    assert _checkpoint(tmp_path, monkeypatch, "1") == first  # same code, recipe and options: reused
    second = _checkpoint(tmp_path, monkeypatch, "2")
    assert second != first and second.read_text() == "2" and first.read_text() == "1"


RECORDING_PLUGIN = '''
import json

from clear_bench import hookimpl
from clear_bench.specs import Option, PretrainerSpec


def _train(config, output_dir, *, resume=False, options=None):
    output_dir.mkdir(parents=True, exist_ok=True)
    with open(output_dir.parent / "calls.jsonl", "a") as log:
        log.write(json.dumps(dict(options or {})) + "\\n")
    path = output_dir / f"encoder-{len((output_dir.parent / 'calls.jsonl').read_text().splitlines())}.pt"
    path.write_text("weights")
    return path


@hookimpl
def clear_bench_pretrainers():
    return [PretrainerSpec("recording", _train, options={"progress": Option(bool, True, "bar")})]
'''


def test_no_progress_reaches_the_pretrainer_without_changing_its_checkpoint_key(tmp_path: Path) -> None:
    """``run --no-progress`` hides the pretrainer's bar (its ``progress`` option) and a shown bar reuses
    the checkpoint trained without one: how training is shown is not what it trains."""
    (tmp_path / "recipe.yaml").write_text("epochs: 1\n")
    plugin = tmp_path / "recording_pretrainer.py"
    plugin.write_text(RECORDING_PLUGIN)
    registry = load_registry([plugin], installed=False)
    recipe = PretrainRef("recording", tmp_path / "recipe.yaml", {})
    ref = ComponentRef("some-encoder", "mine", {}, pretrain=recipe)
    checkpoints = tmp_path / "checkpoints"
    quiet = resolve_pretrained(ref, registry, checkpoints, progress=False).options["checkpoint"]
    shown = resolve_pretrained(ref, registry, checkpoints, progress=True).options["checkpoint"]
    calls = [json.loads(line) for line in (checkpoints / "calls.jsonl").read_text().splitlines()]
    assert calls == [{"progress": False}] and shown == quiet
