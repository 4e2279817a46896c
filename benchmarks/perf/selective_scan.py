"""Speed of the pure-PyTorch selective scan against the step-by-step recurrence, measured side by side.

    uv run python benchmarks/perf/selective_scan.py [--batch 2 --channels 96 --side 32 --state 1]

The default input is one SS2D layer of vmamba_tiny's first stage on a 128 px slice: 4 scan directions x 96
channels, a 32 x 32 feature map (sequence length 1024), state size 1, with VMamba's initialisation ranges
(step sizes 0.001-0.1, A = -1..-state). Each timing is the best of ``--repeats`` runs (the machine may be
shared); the max difference between the two implementations is printed too.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable

import torch
from clear_bench_lecl.backbones.selective_scan import selective_scan_reference, selective_scan_torch


def _best(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
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
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
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
    with torch.inference_mode():
        fast = selective_scan_torch(**inputs, delta_softplus=True, chunk_size=args.chunk)
        slow = selective_scan_reference(**inputs, delta_softplus=True)
        t_fast = _best(lambda: selective_scan_torch(**inputs, delta_softplus=True, chunk_size=args.chunk),
                       args.repeats)
        t_slow = _best(lambda: selective_scan_reference(**inputs, delta_softplus=True), args.repeats)
    print(f"input: batch {b}, dim {d} (4 x {args.channels}), length {length}, state {n}; "
          f"{args.threads} threads, best of {args.repeats}")
    print(f"naive step-by-step recurrence  : {t_slow * 1e3:8.1f} ms")
    print(f"chunked parallel scan (T = {args.chunk:<3d}): {t_fast * 1e3:8.1f} ms")
    print(f"speed-up                       : {t_slow / t_fast:8.1f} x")
    print(f"max |difference|               : {(fast - slow).abs().max().item():.2e}")


if __name__ == "__main__":
    main()
