"""Independent trainings on the CPU cores: forked worker processes that fill the fold-result cache.

Every (head, labels, split) cross-validation of one encoder is independent and content-addressed, so the
workers only compute and save fold results (one torch and one BLAS thread each); the caller then runs the
same calls in order and reads every fold back. Results are identical to a serial run: each fold seeds its
own RNG from the protocol's seed and its index, whatever process trains it.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor

_JOBS: Sequence[Callable[[], object]] = ()


def worker_count(requested: int, jobs: int) -> int:
    """``requested`` workers (0: one per CPU core this process may use), never more than ``jobs``."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(requested or cores, jobs))


def run_in_workers(jobs: Sequence[Callable[[], object]], workers: int) -> None:
    """Run ``jobs`` (closures whose results land on disk) in ``workers`` forked processes; with one
    worker, or where fork is unavailable, nothing is done and the caller computes them itself."""
    global _JOBS
    if workers <= 1 or len(jobs) <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        return
    _JOBS = jobs  # inherited by the forked workers: nothing is pickled but an index
    try:
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_one_thread) as pool:
            for future in [pool.submit(_run, index) for index in range(len(jobs))]:
                future.result()  # a failing job raises here, naming its error
    finally:
        _JOBS = ()


def _one_thread() -> None:
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    threadpool_limits(1)  # BLAS under numpy and scikit-learn (the probes): workers x threads <= cores


def _run(index: int) -> None:
    _JOBS[index]()
