"""docs/performance.md: the renderer puts every ratio of the scripts' figures in its tables and shows a
script that failed or ran out of time as such; report.py runs real perf scripts end to end."""

from __future__ import annotations

import copy
import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = Path(__file__).with_name("performance_figures.json")


def _load_report():
    spec = importlib.util.spec_from_file_location("perf_report", ROOT / "benchmarks" / "perf" / "report.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


report = _load_report()


@pytest.fixture
def figures() -> dict:
    return json.loads(FIXTURE.read_text())


def _row(markdown: str, label: str) -> str:
    """The one table row whose first cell starts with ``label``."""
    rows = [line for line in markdown.splitlines() if line.startswith(f"| {label}")]
    assert len(rows) == 1, (label, rows)
    return rows[0]


def _section(markdown: str, title: str) -> str:
    return markdown.split(f"## {title}", 1)[1].split("\n## ", 1)[0]


def test_tables_hold_the_ratios_of_the_figures(figures):
    md = report.render(figures)
    extract = figures["runs"]["extract"]["figures"]
    assert f"{extract['harness_to_raw']:.2f}×" in _row(md, "harness / raw forward (end to end")
    assert f"{extract['harness_to_seed']:.2f}×" in _row(md, "harness / seed pattern")
    assert f"{extract['rerun']['speedup']:.2f}×" in _row(md, "cached rerun")
    assert f"{extract['memory_ratio']:.2f}×" in md
    (first,) = extract["rounds"]
    assert f"{first['harness'] / first['raw']:.2f}×" in _row(md, f"1 | {first['raw']:.1f} |")

    data = figures["runs"]["data_speed"]["figures"]
    assert f"{data['cache_speedup']:.2f}×" in _row(md, "read it back from the cache")

    cv = figures["runs"]["crossval"]["figures"]
    assert f"{cv['ceiling']['harness_vs_ceiling']:.2f}×" in _row(md, "harness (`run_crossval`)")
    assert f"{cv['ceiling']['public_vs_harness']:.2f}×" in md
    (board,) = cv["board"]
    board_row = _row(md, f"{board['dim']} |")
    for key in ("fixed_vs_ceiling", "row_vs_plain", "stacked_vs_one_by_one"):
        assert f"{board[key]:.2f}×" in board_row
    assert f"{cv['parallel']['speedup']:.2f}×" in _row(md, f"{cv['parallel']['serial_s']:.1f} |")

    ddp = figures["runs"]["pretrain_ddp"]["figures"]
    assert f"DDP / {ddp['arms'][0]['name']}: {ddp['ddp_vs_single']:.2f}×" in md
    assert f"{ddp['ddp_vs_single_1thread']:.2f}×" in md
    for arm in ddp["arms"]:
        assert f"{arm['images_per_s']:.1f}" in _row(md, arm["name"] + " |")


def test_document_says_how_it_was_made_and_where(figures):
    md = report.render(figures)
    assert md.startswith("# Performance\n")
    assert "`uv run python benchmarks/perf/report.py --quick`" in md.split("\n## ", 1)[0]
    assert "mode **quick**" in md
    assert "AMD EPYC 7B13" in _row(md, "CPU")
    assert "74a499d233aa" in _row(md, "commit")
    assert "All scripts together: 6.9 min." in md
    ddp = figures["runs"]["pretrain_ddp"]
    runs_row = _row(md, "`python benchmarks/perf/pretrain_ddp.py --config tiny.yaml --steps 3")
    assert f"| {ddp['load_before']:.1f} | {ddp['load_after']:.1f} |" in runs_row


def test_a_failed_or_timed_out_script_shows_as_such(figures):
    md = report.render(figures)
    assert "| failed |" in _row(md, "`python benchmarks/perf/pretrain_data.py")
    assert "| timeout |" in _row(md, "`python benchmarks/perf/selective_scan.py")
    failed = _section(md, "Pretraining data")
    assert "**Failed**" in failed and "killed by signal" in failed and "items/s" not in failed
    timed_out = _section(md, "Selective scan")
    assert "**Timed out**" in timed_out and "ran past its limit of 60 s" in timed_out
    assert "chunked PyTorch scan" not in timed_out
    assert "| ok |" in _row(md, "`python benchmarks/perf/extract.py")


def test_skipped_script_and_missing_arm(figures):
    changed = copy.deepcopy(figures)
    changed["runs"]["pretrain_ddp"].update(status="skipped", figures=None, error="needs two GPUs")
    changed["runs"]["crossval"]["figures"]["board"] = None
    md = report.render(changed)
    assert "**Skipped**: needs two GPUs." in _section(md, "Pretraining: one process")
    assert "The script wrote no figures for this arm." in _section(md, "Cross-validation")


def test_cuda_mode_is_refused_without_a_gpu(capsys):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(SystemExit) as exit_info:
        report.main(["--cuda", "--out", "unused.md"])
    assert exit_info.value.code == 2
    assert "torch sees no CUDA device" in capsys.readouterr().err


@pytest.mark.slow
def test_report_runs_scripts_and_records_a_failure(tmp_path, monkeypatch):
    job = report.Job
    monkeypatch.setitem(report.MODES, "quick", (job("data_speed", ("--patients", "4"), 120),
                                                job("selective_scan", ("--repeats", "many"), 120)))
    out = tmp_path / "performance.md"
    assert report.main(["--quick", "--out", str(out)]) == 1  # one script failed
    md = out.read_text()
    assert "| ok |" in _row(md, "`python benchmarks/perf/data_speed.py --patients 4`")
    assert "× |" in _row(md, "read it back from the cache")
    assert "| failed |" in _row(md, "`python benchmarks/perf/selective_scan.py --repeats many`")
    assert "invalid int value: 'many'" in _section(md, "Selective scan")
    assert not list(tmp_path.glob(".*tmp*"))


@pytest.mark.slow
def test_a_script_past_its_limit_is_stopped(tmp_path):
    record = report.run_job(report.Job("data_speed", ("--patients", "200"), 3), tmp_path)
    assert record["status"] == "timeout" and record["figures"] is None
    assert 3 <= record["seconds"] < 30
