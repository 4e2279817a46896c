"""``clear-bench extract``: one encoder x one source from flags, or every encoder x task of a YAML."""

from __future__ import annotations

import argparse

import h5py
import pytest

from clear_bench.cache import EmbeddingCache
from clear_bench.cli import configure_logging
from clear_bench.commands import extract as extract_command
from clear_bench.errors import ConfigError


def _run(argv: list[str]) -> int:
    configure_logging()  # progress lines on stdout, as the console script shows them
    parser = argparse.ArgumentParser(prog="clear-bench")
    parser.add_argument("--plugin", action="append", default=[])
    extract_command.add_parser(parser.add_subparsers(dest="command"))
    return extract_command.run(parser.parse_args(argv))


def test_flags_extract_one_encoder_on_one_source_and_export_the_clear_layout(tmp_path, plugin_file,
                                                                             scan_writer, capsys):
    ids = scan_writer(tmp_path / "scans", 3, slices=4, size=32)
    cache_dir, export = tmp_path / "cache", tmp_path / "features"
    argv = ["--plugin", str(plugin_file), "extract", "--encoder", "tiny-cnn", "--option", "weights=random",
            "--option", "width=12", "--source", "nifti-folder",
            "--source-option", f"folder={tmp_path / 'scans'}",
            "--cache-dir", str(cache_dir), "--batch-size", "8", "--num-workers", "1", "--precision", "fp32",
            "--windows", "soft-tissue,W350L50", "--no-progress", "--export-clear", str(export)]
    assert _run(argv) == 0
    out = capsys.readouterr().out
    assert "3 extracted, 0 cached, 0 failed" in out and "tiny-cnn (random init)" in out
    assert len(list(EmbeddingCache(cache_dir).entry_keys())) == 3
    for index, scan_id in enumerate(ids):  # scans of 4, 5, 6 slices, two windows
        with h5py.File(export / "tiny-cnn" / f"{scan_id}.h5", "r") as h5:
            assert h5["feats"].shape == ((4 + index) * 2, 12)
            assert list(h5["window_id"][:4]) == [0, 1, 0, 1]
    assert _run(argv) == 0
    assert "0 extracted, 3 cached" in capsys.readouterr().out


def test_a_yaml_extracts_the_labelled_scans_of_every_task_for_every_encoder(tmp_path, plugin_file,
                                                                           scan_writer, capsys):
    ids = scan_writer(tmp_path / "scans", 4, slices=4, size=32)
    (tmp_path / "scans" / "labels.csv").write_text("image,label\n" + "\n".join(
        f"{scan_id},{i % 2}" for i, scan_id in enumerate(ids[:3])) + "\n")
    (tmp_path / "bench.yaml").write_text(f"""
name: tiny
cache_dir: cache
plugins: [{plugin_file}]
preprocessing: {{windows: [lung], slice_step: 2}}
extraction: {{batch_size: 4, num_workers: 0, precision: fp32}}
encoders:
  - {{name: tiny-cnn, id: cnn-a, options: {{seed: 1}}}}
  - {{name: tiny-cnn, id: cnn-b, options: {{seed: 2, width: 8}}}}
tasks:
  - {{name: folder-labels, options: {{folder: scans}}}}
""")
    assert _run(["extract", str(tmp_path / "bench.yaml"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert out.count("3 extracted, 0 cached, 0 failed") == 2  # the unlabelled scan is left out
    cache = EmbeddingCache(tmp_path / "cache")
    keys = list(cache.entry_keys())
    assert len(keys) == 6 and len({key.split("-")[0] for key in keys}) == 2
    shapes = sorted(cache.get(key).embeddings.shape for key in keys)
    # scans of 4, 5, 6 slices with slice_step 2 and one window: 2, 3, 3 instances
    assert shapes == [(2, 8), (2, 16), (3, 8), (3, 8), (3, 16), (3, 16)]


def test_a_failed_scan_gives_exit_code_1_after_extracting_the_others(tmp_path, plugin_file, scan_writer,
                                                                     capsys):
    ids = scan_writer(tmp_path / "scans", 3, slices=4, size=32)
    (tmp_path / "scans" / f"{ids[0]}.nii.gz").write_bytes(b"broken")
    argv = ["--plugin", str(plugin_file), "extract", "--encoder", "tiny-cnn", "--source", "nifti-folder",
            "--source-option", f"folder={tmp_path / 'scans'}", "--cache-dir", str(tmp_path / "cache"),
            "--num-workers", "0", "--no-progress"]
    assert _run(argv) == 1
    out = capsys.readouterr().out
    assert "2 extracted, 0 cached, 1 failed" in out and f"{ids[0]}.nii.gz" in out


def test_bad_flags_are_config_errors_naming_the_option(tmp_path, plugin_file):
    base = ["--plugin", str(plugin_file), "extract", "--source", "nifti-folder", "--source-option",
            f"folder={tmp_path}", "--cache-dir", str(tmp_path / "cache")]
    with pytest.raises(ConfigError, match="--option depth: unknown option of encoder 'tiny-cnn'"):
        _run([*base, "--encoder", "tiny-cnn", "--option", "depth=2"])
    with pytest.raises(ConfigError, match="--option width: expected int, got str 'wide'"):
        _run([*base, "--encoder", "tiny-cnn", "--option", "width=wide"])
    with pytest.raises(ConfigError, match="nothing to extract"):
        _run(["--plugin", str(plugin_file), "extract"])
