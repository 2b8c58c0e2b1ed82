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

import itertools
import os
import threading
from contextlib import contextmanager

import numpy as np
from threadpoolctl import ThreadpoolController

BLAS_PARALLEL_ORDER = 4000  # dense factorization order from which BLAS gets more threads
PARALLEL_ROWS = 200_000  # one pass over the rows (src/_assemble.pyx): two threads from here
PARALLEL_LEVELS = 20_000  # per-level factorization (src/_blockdiag.pyx): two threads from here

_controller: ThreadpoolController | None = None
_split: tuple | None = None  # (threadpoolctl's part, OpenBLAS pthreads (get, set) pairs)


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
    with limit(blas_threads(dense_order(terms, p))):
        yield


@contextmanager
def limit(n: int, user_api: str | None = None):
    """BLAS (user_api="blas") or BLAS and OpenMP at n threads in this block.

    OpenMP's count, MKL's and BLIS's are set through threadpoolctl.  OpenBLAS with its own
    pthreads pool has one count for the whole process, and threadpoolctl lets only the
    first thread that set it change it: with fits in several Python threads, the first
    fit's end restored the caller's count (one per CPU) under the fits still running,
    which then ran their BLAS calls multi-threaded (against the rule above, and with
    different rounding on some CPUs).  So lmmfast holds OpenBLAS itself (_OpenBLASHold):
    one count while any of its blocks runs in any thread."""
    rest, pools = _libraries()
    # the others as threadpoolctl's limit() sets and restores them, without its scan of
    # every library's info on entry (most of a small fit's 10 us per block)
    libs = [lib for lib in rest.lib_controllers if user_api in (None, lib.user_api)]
    with _HOLD.held(n, pools):
        saved = [lib.get_num_threads() for lib in libs]
        for lib in libs:
            lib.set_num_threads(n)
        try:
            yield
        finally:
            for lib, k in zip(libs, saved):
                lib.set_num_threads(k)


class _OpenBLASHold:
    """A process-wide OpenBLAS thread count held while any thread is inside held().

    The first thread in saves the counts it finds and sets n; threads that come in while
    it is held run at the held count; the last one out restores the saved counts.  A
    nested block of the only thread inside sets its own n for its extent (the optimizer's
    one thread inside a large fit's rule); with other threads inside, the count stays."""

    def __init__(self):
        self._lock = threading.Lock()
        self._local = threading.local()
        self.inside = 0  # threads inside held()
        self.count: int | None = None
        self._saved: list[int] = []

    @contextmanager
    def held(self, n: int, pools):
        depth = getattr(self._local, "depth", 0)
        restore = None
        with self._lock:
            if self.inside == 0:
                self._saved = [get() for get, _ in pools]
                self._set(n, pools)
            elif depth > 0 and self.inside == 1 and n != self.count:
                restore = self.count
                self._set(n, pools)
            self.inside += depth == 0
            self._local.depth = depth + 1
        try:
            yield
        finally:
            with self._lock:
                self._local.depth = depth
                self.inside -= depth == 0
                if self.inside == 0:
                    for (_, put), k in zip(pools, self._saved):
                        put(k)
                    self.count = None
                elif restore is not None and self.inside == 1:
                    self._set(restore, pools)

    def _set(self, n: int, pools) -> None:
        for _, put in pools:
            put(n)
        self.count = n


_HOLD = _OpenBLASHold()


def _libraries():
    """threadpoolctl's controller without the OpenBLAS pthreads pools, and those pools'
    (get, set) functions; found once per process."""
    global _split
    if _split is None:
        ctl = get_controller()
        rest = ctl.select(
            internal_api=["mkl", "blis", "flexiblas"], user_api="openmp", threading_layer="openmp"
        )
        pools = []
        for lib in ctl.lib_controllers:
            if lib.internal_api != "openblas" or lib in rest.lib_controllers:
                continue
            for pre, suf in itertools.product(("", "scipy_"), ("", "64_", "_64")):
                get = getattr(lib.dynlib, f"{pre}openblas_get_num_threads{suf}", None)
                put = getattr(lib.dynlib, f"{pre}openblas_set_num_threads{suf}", None)
                if get is not None and put is not None:
                    pools.append((get, put))
                    break
            else:
                rest.lib_controllers.append(lib)  # an unknown build: threadpoolctl's way
        _split = (rest, pools)
    return _split


def get_controller() -> ThreadpoolController:
    """Found once (it scans the loaded libraries: about 8 ms), after lmmfast's imports have
    loaded numpy's, scipy's and CHOLMOD's BLAS."""
    global _controller
    if _controller is None:
        _controller = ThreadpoolController()
    return _controller
