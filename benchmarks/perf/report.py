"""Run the perf scripts and write their figures to docs/performance.md, with the machine they ran on.

Each script of ``benchmarks/perf/`` runs in its own interpreter (``sys.executable``) with ``--json`` into a
temporary folder and a time limit; one that fails or runs out of time is recorded as such and the others
carry on. Every figure of the document is a ratio of measurements one script took side by side in one
run, beside the load average before and after that script.

    uv run python benchmarks/perf/report.py             # the scripts' own sizes, about 25 min on 2 cores
    uv run python benchmarks/perf/report.py --quick     # smaller sizes, under 8 min on 2 idle cores
    uv run python benchmarks/perf/report.py --cuda --out docs/performance-cuda.md   # on a CUDA machine

``--cuda`` times the selective-scan kernel against the PyTorch scan, GPU extraction against the raw
forward and the seed pattern, and NCCL DDP (two GPUs; skipped with fewer), under 8 min on one machine.
``--only NAME ...`` runs some of the scripts.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PERF = Path(__file__).resolve().parent
DEFAULT_OUT = ROOT / "docs" / "performance.md"


@dataclass(frozen=True)
class Job:
    """One script run: its name, its options (besides ``--json``) and its time limit in seconds."""

    name: str
    args: tuple[str, ...]
    timeout_s: int


MODES: dict[str, tuple[Job, ...]] = {
    "default": (
        Job("extract", (), 900),
        Job("data_speed", (), 600),
        Job("crossval", (), 1800),
        Job("pretrain_ddp", (), 900),
        Job("pretrain_data", (), 900),
        Job("selective_scan", (), 300),
    ),
    "quick": (
        Job("extract", ("--scans", "4", "--seed-scans", "2", "--memory-scans", "2", "--slices", "4",
                        "--matrix", "256", "--rounds", "2"), 180),
        Job("data_speed", ("--patients", "20"), 90),
        Job("crossval", ("--patients", "200", "--instances", "64", "--dim", "384", "--workers", "2",
                         "--board-dims", "44", "--sequential", "10"), 360),
        Job("pretrain_ddp", ("--steps", "4", "--skip", "1"), 240),
        # The default cohort and views, so that the in-RAM table is large enough to show in the peak memory.
        Job("pretrain_data", ("--steps", "10"), 240),
        Job("selective_scan", ("--repeats", "3"), 60),
    ),
    "cuda": (
        Job("selective_scan", ("--device", "cuda", "--batch", "32", "--repeats", "10"), 90),
        Job("extract", ("--device", "cuda", "--scans", "16", "--slices", "64", "--seed-scans", "4",
                        "--memory-scans", "4", "--num-workers", "4"), 240),
        Job("pretrain_ddp", ("--device", "cuda", "--steps", "20", "--skip", "5"), 150),
    ),
}


# ---- running ---------------------------------------------------------------------------------------------

def machine(cuda: bool) -> dict:
    """Where the figures come from: CPU model, cores, memory, GPU, versions, commit and date."""
    info: dict = {"cpu": _cpu_model(), "cores": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)),
                  "ram_gib": _ram_gib(), "python": platform.python_version(), "torch": _version("torch"),
                  "platform": platform.platform(), "commit": _git_commit(),
                  "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    if cuda:
        import torch

        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        info["cuda"] = torch.version.cuda
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _ram_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout

    try:
        commit = git("rev-parse", "--short=12", "HEAD").strip()
        dirty = bool(git("status", "--porcelain", "--untracked-files=no").strip())
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + (" (with uncommitted changes)" if dirty else "")


def run_job(job: Job, folder: Path) -> dict:
    """Run one script with ``--json`` into ``folder``; its status, time, load average and figures."""
    out = folder / f"{job.name}.json"
    command = [sys.executable, str(PERF / f"{job.name}.py"), *job.args, "--json", str(out)]
    record: dict = {"script": f"benchmarks/perf/{job.name}.py", "args": list(job.args),
                    "timeout_s": job.timeout_s, "load_before": os.getloadavg()[0], "figures": None,
                    "error": None}
    started = time.perf_counter()
    # A session of its own, so that a script out of time goes with all its processes (ranks, workers).
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=job.timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        record.update(status="timeout", error=f"ran past its limit of {job.timeout_s} s")
    record["seconds"] = time.perf_counter() - started
    record["load_after"] = os.getloadavg()[0]
    record["returncode"] = process.returncode
    record["stdout"] = stdout
    if record.get("status") == "timeout":
        return record
    if process.returncode != 0:
        tail = "\n".join((stderr or stdout).strip().splitlines()[-15:])
        record.update(status="failed", error=f"exit status {process.returncode}:\n{tail}")
    elif not out.is_file():
        record.update(status="failed", error="exited 0 but wrote no JSON")
    else:
        try:
            record.update(status="ok", figures=json.loads(out.read_text()))
        except json.JSONDecodeError as exc:
            record.update(status="failed", error=f"{out.name}: not JSON ({exc})")
    return record


def skip_reason(job: Job) -> str | None:
    """Why a job cannot run on this machine (checked before starting it), or None."""
    if job.name == "pretrain_ddp" and "cuda" in job.args:
        import torch

        if torch.cuda.device_count() < 2:
            return (f"NCCL DDP runs one rank per GPU and needs two GPUs; torch sees "
                    f"{torch.cuda.device_count()}")
    return None


# ---- rendering -------------------------------------------------------------------------------------------

def _f(value, digits: int = 2, suffix: str = "") -> str:
    if value is None:
        return "–"
    if isinstance(value, (int, float)):
        return f"{value:,.{digits}f}{suffix}"
    return str(value)


def _s(seconds) -> str:
    return _f(seconds, 2 if seconds is not None and seconds < 10 else 1)


def _x(value) -> str:
    return _f(value, 2, "×")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return [*lines, ""]


def _command(record: dict) -> str:
    return shlex.join(["python", record["script"], *record["args"]])


def _extract(f: dict) -> list[str]:
    lines = [f"{f['encoder']} ({f['embed_dim']}-d, {f['image_size']} px) on {f['device']}, {f['precision']}, "
             f"{f['threads']} torch threads; {f['scans']} scans of {f['slices']} slices at {f['matrix']}² "
             f"({', '.join(f['windows'])}: {f['instances_per_scan']} instances per scan), batch "
             f"{f['batch_size']}, {f['num_workers']} loader workers; the seed pattern on {f['seed_scans']} "
             "scans.", ""]
    rows = [[str(r["round"]), _f(r["raw"], 1), _f(r["harness"], 1), _f(r["seed"], 1),
             _x(r["harness"] / r["raw"]), _x(r["harness"] / r["seed"])] for r in f["rounds"]]
    lines += _table(["round", "raw forward img/s", "harness img/s", "seed pattern img/s", "harness / raw",
                     "harness / seed"], rows)
    rerun = f["rerun"]
    lines += _table(["ratio", "value"], [
        ["harness / raw forward (end to end, from disk)", _x(f["harness_to_raw"])],
        ["harness / raw forward after start-up", _x(f["harness_to_raw_steady"])],
        ["harness / seed pattern (1 scan per item, 1 slice per call, fp32)", _x(f["harness_to_seed"])],
        [f"cached rerun ({rerun['scans']} scans): extracting {_s(rerun['first_seconds'])} s / rerun "
         f"{_s(rerun['seconds'])} s", _x(rerun["speedup"])],
    ])
    lines += [f"Ratios: {f['chosen']}.", ""]
    mem = f["memory"]
    rows = [[_f(m["scans"], 0), _f(m["instances"], 0), _f(m["main_mb"], 0), _f(m["workers_mb"], 0)]
            for m in mem]
    lines += _table(["scans (fresh process)", "instances", "peak RSS main MiB", "largest worker MiB"], rows)
    lines += [f"Peak RSS of the main process, {mem[1]['scans']:.0f} scans / {mem[0]['scans']:.0f} scans: "
              f"{_x(f['memory_ratio'])} ({f['memory_growth_mb']:+.0f} MiB).", ""]
    return lines


def _data_speed(f: dict) -> list[str]:
    lines = [f"{f['patients']} synthetic patients, {f['slices']} slices of {f['matrix']}².", ""]
    rows = [["render and cache the cohort", _s(f["render_s"]), ""],
            ["read it back from the cache", _s(f["cached_s"]), _x(f["cache_speedup"])]]
    lines += _table(["step", "seconds", "render / cached"], rows)
    rows = [[name, _f(rate, 0)] for name, rate in f["instances_per_s"].items()]
    return lines + _table(["scans to encoder instances", "images/s"], rows)


def _crossval(f: dict) -> list[str]:
    lines = [f"{f['threads']} torch thread(s) on {f['cpus']} CPUs.", ""]
    if "ceiling" in f:
        c = f["ceiling"]
        lines += [f"**Plain 5-fold ABMIL CV**: {c['patients']} bags of {c['instances']} instances x "
                  f"{c['dim']} dims, {c['epochs']} epochs, no early stopping.", ""]
        rows = [["ceiling (batches prepared in memory)", _s(c["ceiling_s"]), _x(1.0)],
                ["harness (`run_crossval`)", _s(c["harness_s"]), _x(c["harness_vs_ceiling"])],
                ["harness incl. padding once", _s(c["harness_s"] + c["padding_s"]),
                 _x((c["harness_s"] + c["padding_s"]) / c["ceiling_s"])],
                ["seed pattern (HDF5 per bag per epoch, DataLoader)", _s(c["public_s"]),
                 _x(c["public_s"] / c["ceiling_s"])]]
        lines += _table(["arm", "seconds", "x ceiling"], rows)
        lines += [f"Seed pattern / harness: {_x(c['public_vs_harness'])}; the folds as one stack of heads "
                  f"against one by one: {_x(c['stacked_vs_one_by_one'])} faster.", ""]
    if "board" in f:
        lines += ["**At the default board's size** (200 bags x 80 instances, 8 labels, 5 folds, early "
                  "stopping as on the board):", ""]
        if not f["board"]:
            lines += ["The script wrote no figures for this arm.", ""]
        else:
            rows = [[str(b["dim"]), _s(b["plain_s"]), _x(b["fixed_vs_ceiling"]), _s(b["row_115_s"]),
                     _x(b["row_vs_plain"]), f"{_x(b['stacked_vs_one_by_one'])} ({b['one_by_one_members']})"]
                    for b in f["board"]]
            lines += _table(["dims", "5-fold CV s", "x ceiling (no early stop)", "115 trainings s",
                             "115 / plain 5-fold", "stacked vs one by one (members)"], rows)
    if "parallel" in f:
        p = f["parallel"]
        lines += ["**Rows in parallel**: 2 encoders x 3 heads, 5-fold CV each.", ""]
        lines += _table(["serial s", f"{p['processes']} workers s", "serial / parallel"],
                        [[_s(p["serial_s"]), _s(p["parallel_s"]), _x(p["speedup"])]])
    return lines


def _pretrain_ddp(f: dict) -> list[str]:
    lines = [f"Recipe `{f['config']}` on {f['device']} ({f['backend']}), {f['steps']} steps per arm, the "
             f"first {f['skip']} left out.", ""]
    epoch = f.get("epoch") or {}
    seconds = epoch.get("seconds", {})
    rows = [[a["name"], _f(a["images_per_s"], 1), str(a["steps"]), _f(seconds.get(a["name"]), 0)]
            for a in f["arms"]]
    lines += _table(["arm", "median img/s", "steps", "s per epoch"], rows)
    single = f["arms"][0]["name"]
    text = f"DDP / {single}: {_x(f['ddp_vs_single'])}"
    if f.get("ddp_vs_single_1thread") is not None:
        text += f"; DDP / 1 proc x 1 thread: {_x(f['ddp_vs_single_1thread'])}"
    return [*lines, text + ".", ""]


def _pretrain_data(f: dict) -> list[str]:
    lines = [f"Two ranks; {f['scans'][0]} / {f['scans'][1]} scans (1x / 4x) of {f['slices']} slices x "
             f"{len(f['windows'])} windows at {f['size']} px, views {f['image_size']} px, global batch "
             f"{f['batch']}, {f['steps']} steps, {f['workers']} workers per rank.", ""]
    rows = [[a["store"], f"{a['scale']}x", str(r["rank"]), str(r["slices"]), _f(r["table_mb"], 0),
             _f(r["open_s"], 1), _f(r["peak_mb"], 0), _f(r["anon_mb"], 0), _f(r["file_mb"], 0),
             _f(r["items_per_s"], 1)] for a in f["arms"] for r in a["ranks"]]
    lines += _table(["store", "scale", "rank", "slices", "table MiB", "open s", "peak RSS MiB", "RssAnon MiB",
                     "RssFile MiB", "items/s"], rows)
    rows = [[store, ", ".join(_x(g) for g in growth)] for store, growth in f["peak_growth_4x"].items()]
    lines += _table(["store", "peak RSS 4x / 1x per rank"], rows)
    rows = [[scale, _f(r["disk"], 1), _f(r["memory"], 1), _x(r["disk_vs_memory"])]
            for scale, r in f["items_per_s"].items()]
    return lines + _table(["scale", "disk items/s", "in-RAM items/s", "disk / in-RAM"], rows)


def _selective_scan(f: dict) -> list[str]:
    lines = [f"Batch {f['batch']}, {f['dim']} channels, length {f['length']}, state {f['state']} on "
             f"{f['device']} ({f['threads']} threads), best of {f['repeats']}.", ""]
    rows = [["step-by-step recurrence", _f(f["reference_s"] * 1e3, 2), _x(1.0), ""],
            [f"chunked PyTorch scan (chunk {f['chunk']})", _f(f["torch_s"] * 1e3, 2), _x(f["torch_speedup"]),
             f"{f['max_difference']:.1e}"]]
    if f.get("kernel_s") is not None:
        rows.append(["mamba-ssm CUDA kernel", _f(f["kernel_s"] * 1e3, 3),
                     f"{_x(f['reference_s'] / f['kernel_s'])} ({_x(f['kernel_speedup'])} the PyTorch scan)",
                     f"{f['kernel_max_difference']:.1e}"])
    lines += _table(["implementation", "ms", "speed-up", "max difference"], rows)
    if f.get("kernel_note"):
        lines += [f"Kernel not measured: {f['kernel_note']}.", ""]
    return lines


SECTIONS = {
    "extract": ("Extraction: harness vs raw forward vs the seed pattern, cached rerun, peak memory",
                _extract),
    "data_speed": ("Data stage", _data_speed),
    "crossval": ("Cross-validation: ceiling, seed pattern, stacked heads, 115 trainings, parallel rows",
                 _crossval),
    "pretrain_ddp": ("Pretraining: one process vs two DDP processes", _pretrain_ddp),
    "pretrain_data": ("Pretraining data: disk slice store vs in-RAM table", _pretrain_data),
    "selective_scan": ("Selective scan", _selective_scan),
}


def render(report: dict) -> str:
    """The markdown of docs/performance.md from the collected figures (pure: no clock, no I/O)."""
    m = report["machine"]
    lines = ["# Performance", "",
             f"Generated by `{report['command']}` (mode **{report['mode']}**"
             + {"default": ": the scripts' own sizes", "quick": ": smaller sizes than the scripts' own",
                "cuda": ": on a CUDA device"}.get(report["mode"], "") + "); run it again to regenerate "
             "this file. Each script ran alone in its own process; every ratio compares measurements that "
             "one script took side by side in one run. Other work on the machine moves the absolute "
             "figures (see the load average of each script), so read the ratios.", "",
             "## Machine", ""]
    rows = [["CPU", _f(m.get("cpu"))],
            ["cores", f"{m.get('cores')} ({m.get('usable_cores')} usable by this process)"],
            ["memory", _f(m.get("ram_gib"), 1, " GiB")]]
    if m.get("gpus") is not None:
        rows.append(["GPU", ", ".join(m["gpus"]) + f" (CUDA {m.get('cuda')})"])
    rows += [["Python", _f(m.get("python"))], ["torch", _f(m.get("torch"))], ["OS", _f(m.get("platform"))],
             ["commit", _f(m.get("commit"))], ["date", _f(m.get("date"))]]
    lines += _table(["", ""], rows)
    lines += ["## Runs", ""]
    rows = [[f"`{_command(r)}`", r["status"], _f(r.get("seconds"), 0), _f(r.get("load_before"), 1),
             _f(r.get("load_after"), 1)] for r in report["runs"].values()]
    lines += _table(["script and sizes", "status", "wall s", "load before", "load after"], rows)
    if report.get("seconds") is not None:
        lines += [f"All scripts together: {report['seconds'] / 60:.1f} min.", ""]
    for name, record in report["runs"].items():
        title, body = SECTIONS[name]
        lines += [f"## {title}", "", f"`{_command(record)}`", ""]
        if record["status"] == "ok":
            lines += body(record["figures"])
        elif record["status"] == "skipped":
            lines += [f"**Skipped**: {record['error']}.", ""]
        else:
            label = "Timed out" if record["status"] == "timeout" else "Failed"
            lines += [f"**{label}**: no figures from this script in this run.", "", "```text",
                      record["error"] or "", "```", ""]
    return "\n".join(lines).rstrip() + "\n"


# ---- command line ----------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="smaller sizes (under 8 min on 2 idle cores)")
    mode.add_argument("--cuda", action="store_true",
                      help="GPU figures: selective-scan kernel, GPU extraction, NCCL DDP (needs CUDA)")
    parser.add_argument("--only", nargs="+", metavar="NAME", choices=list(SECTIONS),
                        help=f"run only these scripts ({', '.join(SECTIONS)})")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="markdown file to write")
    args = parser.parse_args(argv)
    name = "cuda" if args.cuda else "quick" if args.quick else "default"
    if args.cuda:
        import torch

        if not torch.cuda.is_available():
            parser.exit(2, "report.py --cuda: torch sees no CUDA device on this machine; run it on one "
                           "with a GPU, or leave out --cuda for the CPU figures\n")
    jobs = [job for job in MODES[name] if not args.only or job.name in args.only]
    if not jobs:
        parser.error(f"--only {' '.join(args.only)}: none of these scripts runs in mode {name} "
                     f"({', '.join(job.name for job in MODES[name])})")
    command = ["uv", "run", "python", "benchmarks/perf/report.py"]
    command += ["--quick"] if args.quick else ["--cuda"] if args.cuda else []
    command += ["--only", *args.only] if args.only else []
    out = args.out.resolve()
    if out != DEFAULT_OUT:
        command += ["--out", os.path.relpath(out, ROOT)]
    report = {"mode": name, "command": shlex.join(command), "machine": machine(args.cuda), "runs": {}}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="clear-bench-perf-report-") as tmp:
        for job in jobs:
            print(f"== {job.name} {' '.join(job.args)} (limit {job.timeout_s} s)", flush=True)
            reason = skip_reason(job)
            if reason:
                report["runs"][job.name] = {"script": f"benchmarks/perf/{job.name}.py",
                                            "args": list(job.args), "status": "skipped", "error": reason,
                                            "figures": None}
                print(f"skipped: {reason}", flush=True)
                continue
            record = run_job(job, Path(tmp))
            print(record.pop("stdout"), end="", flush=True)
            if record["status"] != "ok":
                print(f"{record['status']}: {record['error']}", flush=True)
            report["runs"][job.name] = record
    report["seconds"] = time.perf_counter() - started
    from clear_bench.atomic import atomic_write_text

    atomic_write_text(out, render(report))
    failed = [n for n, r in report["runs"].items() if r["status"] not in ("ok", "skipped")]
    print(f"wrote {out}" + (f"; no figures from {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
