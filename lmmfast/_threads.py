"""How many threads each part of a fit may use: BLAS (through threadpoolctl) and the
Cython kernels' own parallel passes.  The rule depends on the problem's size only, never
on the caller's thread settings or on the machine's load, so a fit gives the same
numbers, bit for bit, however it is called.

Why: OpenBLAS starts one thread per CPU by default and uses them even for the small
dense blocks of a mixed model, where on a busy machine the threads wait for each other
(measured on a 2-CPU machine at load 4: Cholesky of order 512 took 12 ms with one
thread and 378 ms with two; order 2048: 0.30 s against 1.8 s).  So BLAS gets one
thread unless a dense factorization of the fit has order BLAS_PARALLEL_ORDER or more
(above 2e10 flops per factorization, where a second core pays for its start even on a
shared machine), and the kernels split their passes in two only above the row or level
counts below.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

import numpy as np
from threadpoolctl import ThreadpoolController

BLAS_PARALLEL_ORDER = 4000  # dense factorization order from which BLAS gets more threads
PARALLEL_ROWS = 200_000  # one pass over the rows (src/_assemble.pyx): two threads from here
PARALLEL_LEVELS = 20_000  # per-level factorization (src/_blockdiag.pyx): two threads from here

_controller: ThreadpoolController | None = None


def cores() -> int:
    """CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def kernel_threads(count: int, threshold: int) -> int:
    """Threads for a kernel pass over `count` rows or levels: 2 from `threshold` on."""
    return min(2 if count >= threshold else 1, cores())


def blas_threads(order: int) -> int:
    """BLAS threads for a fit whose largest dense factorization has this order."""
    if order < BLAS_PARALLEL_ORDER:
        return 1
    return min(cores(), order // (BLAS_PARALLEL_ORDER // 2))


def dense_order(terms, p: int) -> int:
    """The largest dense factorization a fit does, roughly: the (p+1)-square Schur complement
    of [X y], and with several grouping factors the dense part of the random effects (the
    effects of all but the first term, the crossed factorization's dense block)."""
    first = terms[0].codes if terms else None
    if all(t.codes is first or np.array_equal(t.codes, first) for t in terms[1:]):
        return p + 1
    return max(p + 1, sum(t.nlevels * t.q for t in terms[1:]))


@contextmanager
def fit_threads(terms, p: int):
    """Hold BLAS (and OpenMP's default) at blas_threads(dense_order(terms, p)) for a fit."""
    with get_controller().limit(limits=blas_threads(dense_order(terms, p))):
        yield


def get_controller() -> ThreadpoolController:
    """Found once (it scans the loaded libraries: about 8 ms), after lmmfast's imports have
    loaded numpy's, scipy's and CHOLMOD's BLAS."""
    global _controller
    if _controller is None:
        _controller = ThreadpoolController()
    return _controller
