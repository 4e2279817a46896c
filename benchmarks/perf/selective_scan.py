"""Speed of the pure-PyTorch selective scan against the step-by-step recurrence and, on CUDA with
mamba-ssm installed, against mamba-ssm's kernel, measured side by side.

    uv run python benchmarks/perf/selective_scan.py [--batch 2 --channels 96 --side 32 --state 1]
    uv run python benchmarks/perf/selective_scan.py --device cuda --batch 32

The default input is one SS2D layer of vmamba_tiny's first stage on a 128 px slice: 4 scan directions x 96
channels, a 32 x 32 feature map (sequence length 1024), state size 1, with VMamba's initialisation ranges
(step sizes 0.001-0.1, A = -1..-state). Each timing is the best of ``--repeats`` runs (the machine may be
shared); the max difference between the implementations is printed too. ``--json PATH`` also writes the
figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable

import torch
from clear_bench_lecl.backbones.selective_scan import (
    cuda_scan_available,
    selective_scan,
    selective_scan_reference,
    selective_scan_torch,
)

from clear_bench.atomic import atomic_write_text


def _best(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--channels", type=int, default=96, help="SS2D inner channels (x 4 directions)")
    parser.add_argument("--side", type=int, default=32, help="feature map side: sequence length side^2")
    parser.add_argument("--state", type=int, default=1)
    parser.add_argument("--chunk", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--json", metavar="PATH", help="also write the figures to this JSON file")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.exit(2, "selective_scan.py: --device cuda, but torch sees no CUDA device on this machine\n")
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    gen = torch.Generator().manual_seed(0)
    b, n, groups = args.batch, args.state, 4
    d, length = groups * args.channels, args.side**2
    dt = torch.exp(torch.rand(d, generator=gen) * (math.log(0.1) - math.log(0.001)) + math.log(0.001))
    inputs = dict(
        u=torch.randn(b, d, length, generator=gen), delta=0.1 * torch.randn(b, d, length, generator=gen),
        A=-torch.arange(1, n + 1, dtype=torch.float32).repeat(d, 1),
        B=torch.randn(b, groups, n, length, generator=gen),
        C=torch.randn(b, groups, n, length, generator=gen),
        D=torch.ones(d), delta_bias=dt + torch.log(-torch.expm1(-dt)),
    )
    inputs = {key: value.to(device) for key, value in inputs.items()}
    kernel_note = None
    if device.type != "cuda":
        kernel_note = "CPU run: the CUDA kernel needs a GPU"
    elif not cuda_scan_available():
        kernel_note = "mamba-ssm is not installed or does not import (the lecl plugin's `gpu` extra)"

    def fast():
        return selective_scan_torch(**inputs, delta_softplus=True, chunk_size=args.chunk)

    def slow():
        return selective_scan_reference(**inputs, delta_softplus=True)

    def kernel():
        return selective_scan(**inputs, delta_softplus=True, backend="cuda")

    with torch.inference_mode():
        y_fast, y_slow = fast(), slow()
        t_fast = _best(fast, args.repeats, device)
        t_slow = _best(slow, args.repeats, device)
        t_kernel = diff_kernel = None
        if kernel_note is None:
            diff_kernel = (kernel() - y_fast).abs().max().item()
            t_kernel = _best(kernel, args.repeats, device)
    diff = (y_fast - y_slow).abs().max().item()
    print(f"input: batch {b}, dim {d} (4 x {args.channels}), length {length}, state {n}; on {device}, "
          f"{args.threads} threads, best of {args.repeats}")
    print(f"naive step-by-step recurrence  : {t_slow * 1e3:8.1f} ms")
    print(f"chunked parallel scan (T = {args.chunk:<3d}): {t_fast * 1e3:8.1f} ms")
    print(f"speed-up                       : {t_slow / t_fast:8.1f} x")
    print(f"max |difference|               : {diff:.2e}")
    if t_kernel is not None:
        print(f"mamba-ssm CUDA kernel          : {t_kernel * 1e3:8.2f} ms ({t_fast / t_kernel:.1f} x the "
              f"chunked scan; max |difference| {diff_kernel:.2e})")
    elif device.type == "cuda":
        print(f"mamba-ssm CUDA kernel          : not measured ({kernel_note})")
    if args.json:
        result = {"device": str(device), "batch": b, "dim": d, "length": length, "state": n,
                  "chunk": args.chunk, "threads": args.threads, "repeats": args.repeats,
                  "reference_s": t_slow, "torch_s": t_fast, "torch_speedup": t_slow / t_fast,
                  "max_difference": diff, "kernel_s": t_kernel, "kernel_max_difference": diff_kernel,
                  "kernel_speedup": None if t_kernel is None else t_fast / t_kernel,
                  "kernel_note": kernel_note}
        atomic_write_text(args.json, json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
