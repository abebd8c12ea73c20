"""The process's BLAS / OpenMP thread count, set once from ``--threads`` (default 1).

Bounds and branch-and-bound are many small matrix products: on a 2-core machine
numpy's default of one BLAS thread per core made the verifier about 10x slower, and
its node counts changed from run to run (floating-point sums in a thread-dependent
order). One thread gives the documented times and the same nodes on every run.
"""
from __future__ import annotations

import os

DEFAULT_THREADS = 1
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")


def limit_threads(n: int = DEFAULT_THREADS) -> int:
    """Limit the BLAS and OpenMP pools of this process (and of the processes it starts) to ``n``; return ``n``.

    Libraries already loaded are limited through threadpoolctl; those loaded later (and child
    processes) read the environment variables set here.
    """
    n = max(1, int(n))
    for name in THREAD_VARIABLES:
        os.environ[name] = str(n)
    from threadpoolctl import threadpool_limits
    threadpool_limits(limits=n)
    return n


def blas_threads() -> int:
    """Return the largest thread count of the BLAS / OpenMP pools loaded in this process (0 if none)."""
    from threadpoolctl import threadpool_info
    return max((pool["num_threads"] for pool in threadpool_info()), default=0)
