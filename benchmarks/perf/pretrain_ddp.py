"""LeCL pretraining throughput: one process vs two DDP processes under torchrun, side by side in one run.

Both arms run the same recipe (default: benchmarks/pretrain/cpu-vit-tiny.yaml, a ViT-Tiny at 112 px, global
batch 64, bf16) for ``--steps`` optimizer steps through the real command line, then read the images/s of
each step from the loss log (the first ``--skip`` steps are warm-up and left out):

* ``1 proc x T threads``: ``clear-bench pretrain lecl`` (``python -m clear_bench``), T = ``--threads``;
* ``1 proc x 1 thread``: the same with one thread (what each DDP rank gets);
* ``2 proc x 1 thread``: ``torchrun --nproc-per-node 2 -m clear_bench pretrain lecl`` (gloo).

It also prints the recipe's time per epoch for each arm (steps per epoch x batch / median images/s) and
the load average: other work on the machine changes every figure, and two threads per process suffer most.

    uv run python benchmarks/perf/pretrain_ddp.py                    # about 3-5 minutes on two idle cores
    uv run python benchmarks/perf/pretrain_ddp.py --config benchmarks/pretrain/cpu-mambaout-femto.yaml
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run(launcher: list[str], config: str, out: Path, steps: int, threads: int) -> tuple[list[float], str]:
    command = [*launcher, "pretrain", "lecl", "--config", config, "--output-dir", str(out),
               "--max-steps", str(steps), "--threads", str(threads)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    tic = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        sys.exit(f"failed: {' '.join(command)}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}")
    (log,) = out.glob("*-loss.csv")
    with log.open() as handle:
        rates = [float(row["images_per_s"]) for row in csv.DictReader(handle)]
    print(f"  {' '.join(command[:6])} ... : {time.perf_counter() - tic:.0f}s wall", flush=True)
    return rates, result.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(ROOT / "benchmarks/pretrain/cpu-vit-tiny.yaml"))
    parser.add_argument("--steps", type=int, default=8, help="optimizer steps per arm")
    parser.add_argument("--skip", type=int, default=2, help="warm-up steps left out of the figures")
    parser.add_argument("--threads", type=int, default=2, help="threads of the single process")
    args = parser.parse_args()
    single = [sys.executable, "-m", "clear_bench"]
    ddp = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr",
           "127.0.0.1", "--master-port", str(_free_port()), "-m", "clear_bench"]
    print(f"recipe {args.config}; load average before: {os.getloadavg()[0]:.1f}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        rates_1, stdout = _run(single, args.config, Path(tmp) / "one", args.steps, args.threads)
        rates_11, _ = _run(single, args.config, Path(tmp) / "one-thread", args.steps, 1)
        rates_2, _ = _run(ddp, args.config, Path(tmp) / "two", args.steps, 1)
    one = statistics.median(rates_1[args.skip:])
    one_thread = statistics.median(rates_11[args.skip:])
    two = statistics.median(rates_2[args.skip:])
    print(f"\n{'arm':<24}{'median img/s':>14}{'steps':>7}")
    print(f"{f'1 proc x {args.threads} threads':<24}{one:>14.1f}{len(rates_1) - args.skip:>7}")
    print(f"{'1 proc x 1 thread':<24}{one_thread:>14.1f}{len(rates_11) - args.skip:>7}")
    print(f"{'2 proc x 1 thread (DDP)':<24}{two:>14.1f}{len(rates_2) - args.skip:>7}")
    print(f"DDP / single ({args.threads} threads): {two / one:.2f}; "
          f"DDP / single (1 thread): {two / one_thread:.2f}")
    match = re.search(r"global batch (\d+), (\d+) steps/epoch x (\d+) epochs", stdout)
    if match:
        batch, per_epoch, epochs = (int(g) for g in match.groups())
        print(f"time per epoch ({per_epoch} steps of {batch}; recipe: {epochs} epochs):")
        for arm, rate in ((f"1 proc x {args.threads} threads", one), ("1 proc x 1 thread", one_thread),
                          ("2 proc x 1 thread (DDP)", two)):
            epoch_s = per_epoch * batch / rate
            print(f"  {arm:<24}{epoch_s:>7.0f}s per epoch, {epochs * epoch_s / 60:.1f} min per recipe")
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
