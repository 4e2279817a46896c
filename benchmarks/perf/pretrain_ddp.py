"""LeCL pretraining throughput: one process vs two DDP processes under torchrun, side by side in one run.

Both arms run the same recipe (default: benchmarks/pretrain/cpu-vit-tiny.yaml, a ViT-Tiny at 112 px, global
batch 64, bf16) for ``--steps`` optimizer steps through the real command line, then read the images/s of
each step from the loss log (the first ``--skip`` steps are warm-up and left out). On the CPU
(``--device cpu``, the default):

* ``1 proc x T threads``: ``clear-bench pretrain lecl`` (``python -m clear_bench``), T = ``--threads``;
* ``1 proc x 1 thread``: the same with one thread (what each DDP rank gets);
* ``2 proc x 1 thread``: ``torchrun --nproc-per-node 2 -m clear_bench pretrain lecl`` (gloo).

With ``--device cuda`` (two GPUs, one per rank): ``1 proc x 1 GPU`` against ``2 proc x 1 GPU`` (NCCL).

It also prints the recipe's time per epoch for each arm (steps per epoch x batch / median images/s) and
the load average: other work on the machine changes every figure, and two threads per process suffer most.

    uv run python benchmarks/perf/pretrain_ddp.py                    # about 3-5 minutes on two idle cores
    uv run python benchmarks/perf/pretrain_ddp.py --config benchmarks/pretrain/cpu-mambaout-femto.yaml
    uv run python benchmarks/perf/pretrain_ddp.py --device cuda      # NCCL, needs two GPUs

``--json PATH`` also writes every figure as JSON.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from clear_bench.atomic import atomic_write_text

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run(launcher: list[str], config: str, out: Path, steps: int, threads: int,
         device: str) -> tuple[list[float], str, float]:
    command = [*launcher, "pretrain", "lecl", "--config", config, "--output-dir", str(out),
               "--max-steps", str(steps), "--threads", str(threads), "--device", device]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    tic = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        sys.exit(f"failed: {' '.join(command)}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}")
    (log,) = out.glob("*-loss.csv")
    with log.open() as handle:
        rates = [float(row["images_per_s"]) for row in csv.DictReader(handle)]
    wall = time.perf_counter() - tic
    print(f"  {' '.join(command[:6])} ... : {wall:.0f}s wall", flush=True)
    return rates, result.stdout, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(ROOT / "benchmarks/pretrain/cpu-vit-tiny.yaml"))
    parser.add_argument("--steps", type=int, default=8, help="optimizer steps per arm")
    parser.add_argument("--skip", type=int, default=2, help="warm-up steps left out of the figures")
    parser.add_argument("--threads", type=int, default=2, help="threads of the single process")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                        help="cpu: gloo ranks of one thread; cuda: NCCL ranks of one GPU each")
    parser.add_argument("--json", metavar="PATH", help="also write the figures to this JSON file")
    args = parser.parse_args()
    if args.steps <= args.skip:
        parser.error(f"--steps ({args.steps}) must be larger than --skip ({args.skip})")
    if args.device == "cuda":
        import torch

        if torch.cuda.device_count() < 2:
            parser.exit(2, f"pretrain_ddp.py: --device cuda runs two NCCL ranks on one GPU each, but torch "
                           f"sees {torch.cuda.device_count()} CUDA device(s) on this machine\n")
    single = [sys.executable, "-m", "clear_bench"]
    ddp = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr",
           "127.0.0.1", "--master-port", str(_free_port()), "-m", "clear_bench"]
    if args.device == "cuda":
        arms = [("1 proc x 1 GPU", single, args.threads, 1), ("2 proc x 1 GPU (DDP, NCCL)", ddp, 1, 2)]
    else:
        arms = [(f"1 proc x {args.threads} threads", single, args.threads, 1),
                ("1 proc x 1 thread", single, 1, 1), ("2 proc x 1 thread (DDP)", ddp, 1, 2)]
    load_before = os.getloadavg()[0]
    print(f"recipe {args.config} on {args.device}; load average before: {load_before:.1f}", flush=True)
    measured, stdouts = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for index, (name, launcher, threads, processes) in enumerate(arms):
            rates, stdout, wall = _run(launcher, args.config, Path(tmp) / f"arm-{index}", args.steps, threads,
                                       args.device)
            measured.append({"name": name, "processes": processes, "threads": threads,
                             "images_per_s": statistics.median(rates[args.skip:]),
                             "steps": len(rates) - args.skip, "wall_s": wall})
            stdouts.append(stdout)
    print(f"\n{'arm':<28}{'median img/s':>14}{'steps':>7}")
    for arm in measured:
        print(f"{arm['name']:<28}{arm['images_per_s']:>14.1f}{arm['steps']:>7}")
    two = measured[-1]["images_per_s"]
    ratios = {"ddp_vs_single": two / measured[0]["images_per_s"]}
    if args.device == "cpu":
        ratios["ddp_vs_single_1thread"] = two / measured[1]["images_per_s"]
        print(f"DDP / single ({args.threads} threads): {ratios['ddp_vs_single']:.2f}; "
              f"DDP / single (1 thread): {ratios['ddp_vs_single_1thread']:.2f}")
    else:
        print(f"DDP (2 GPUs) / single (1 GPU): {ratios['ddp_vs_single']:.2f}")
    epoch = None
    match = re.search(r"global batch (\d+), (\d+) steps/epoch x (\d+) epochs", stdouts[0])
    if match:
        batch, per_epoch, epochs = (int(g) for g in match.groups())
        epoch = {"batch": batch, "steps_per_epoch": per_epoch, "epochs": epochs, "seconds": {}}
        print(f"time per epoch ({per_epoch} steps of {batch}; recipe: {epochs} epochs):")
        for arm in measured:
            epoch_s = per_epoch * batch / arm["images_per_s"]
            epoch["seconds"][arm["name"]] = epoch_s
            print(f"  {arm['name']:<28}{epoch_s:>7.0f}s per epoch, "
                  f"{epochs * epoch_s / 60:.1f} min per recipe")
    load_after = os.getloadavg()[0]
    print(f"load average after: {load_after:.1f}")
    if args.json:
        figures = {"config": os.path.relpath(Path(args.config).resolve(), ROOT),
                   "device": args.device, "backend": "nccl" if args.device == "cuda" else "gloo",
                   "steps": args.steps, "skip": args.skip, "threads": args.threads, "arms": measured,
                   **ratios, "epoch": epoch, "load_before": load_before, "load_after": load_after}
        atomic_write_text(args.json, json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
