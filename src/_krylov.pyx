"""The Schur complement of the first term in the others, applied without forming it.

For crossed scalar random-effects terms, with N the sparse level-pair counts of term 1
(rows, n1 levels) against the other terms' levels (columns, m), held as int32 CSR:

    out = diag * V - c * (N' (s * (N (c * V))))          (* elementwise, by row of V)

V and out are (m, k): k vectors side by side, so one sweep of N serves all of them.
With diag = theta_k^2 D_k + 1, s = theta_1^2 / (theta_1^2 D_1 + 1) and c = theta_k this is
S = A22 - A21 A11^{-1} A12 (lmmfast/_factor/krylov.py folds the Jacobi scaling into
diag and c).  Rows of N are split into `nthreads` fixed ranges of about equal nonzeros;
each thread adds into its own slice of `work` (nthreads, m + 1, k; the last row holds the
per-row temporaries), and the slices are summed in thread order: the result does not
depend on scheduling.  unit: every count is 1 (distinct pairs, no weights); data unread.
"""

from cython.parallel cimport prange
from libc.stdint cimport int32_t, int64_t

cdef enum:
    KB = 8  # columns per block of the multi-vector sweep


def schur_apply(
    const int64_t[::1] indptr,
    const int32_t[::1] indices,
    const double[::1] data,
    bint unit,
    const double[::1] s,
    const double[::1] c,
    const double[::1] diag,
    const double[:, ::1] V,
    double[:, ::1] out,
    double[:, :, ::1] work,
    int nthreads,
):
    """out := diag * V - c * N'(s * N(c * V)); work: (nthreads, m + 1, k) scratch.
    out first holds c * V, which the sweeps read (out must not alias V)."""
    cdef Py_ssize_t m = V.shape[0], k = V.shape[1], n1 = indptr.shape[0] - 1
    cdef Py_ssize_t t, j, a
    cdef int64_t[3] bounds
    cdef double acc
    _split(indptr, nthreads, bounds)
    with nogil:
        for j in range(m):
            for a in range(k):
                out[j, a] = c[j] * V[j, a]
        for t in prange(nthreads, num_threads=nthreads, schedule="static", chunksize=1):
            _sweep(indptr, indices, data, unit, s, out, work[t], bounds[t], bounds[t + 1])
        for j in range(m):
            for a in range(k):
                acc = work[0, j, a]
                for t in range(1, nthreads):
                    acc = acc + work[t, j, a]
                out[j, a] = diag[j] * V[j, a] - c[j] * acc
    return n1


def schur_diag(
    const int64_t[::1] indptr,
    const int32_t[::1] indices,
    const double[::1] data,
    bint unit,
    const double[::1] s,
    double[::1] out,
):
    """out[j] := sum_i N_ij^2 s_i (the diagonal of N' diag(s) N)."""
    cdef Py_ssize_t n1 = indptr.shape[0] - 1, i, e
    cdef double w
    with nogil:
        out[:] = 0.0
        for i in range(n1):
            for e in range(indptr[i], indptr[i + 1]):
                w = 1.0 if unit else data[e] * data[e]
                out[indices[e]] += w * s[i]


cdef void _split(const int64_t[::1] indptr, int nthreads, int64_t* bounds) noexcept:
    """Row ranges [bounds[t], bounds[t+1]) with about equal nonzeros (1 or 2 threads)."""
    cdef Py_ssize_t n1 = indptr.shape[0] - 1, lo = 0, hi = n1, mid
    cdef int64_t half = indptr[n1] // 2
    bounds[0] = 0
    if nthreads == 1:
        bounds[1] = n1
        return
    while lo < hi:  # first row whose start is at or past half the nonzeros
        mid = (lo + hi) // 2
        if indptr[mid] < half:
            lo = mid + 1
        else:
            hi = mid
    bounds[1] = lo
    bounds[2] = n1


cdef void _sweep(
    const int64_t[::1] indptr,
    const int32_t[::1] indices,
    const double[::1] data,
    bint unit,
    const double[::1] s,
    const double[:, ::1] W,
    double[:, ::1] acc,
    Py_ssize_t r0,
    Py_ssize_t r1,
) noexcept nogil:
    """acc := sum over rows i in [r0, r1) of N_i' s_i N_i W (W = c * V; rows m and up
    unused).  Columns go KB at a time, their row sums in registers (a fixed-length inner
    loop for full blocks, which the compiler unrolls), all blocks of one row of N in turn
    (its indices stay in cache)."""
    cdef Py_ssize_t m = W.shape[0], k = W.shape[1], i, j
    cdef Py_ssize_t b, kb
    cdef double* A = &acc[0, 0]
    cdef const double* Wp = &W[0, 0]
    cdef int64_t e
    cdef double t
    for j in range((m + 1) * k):
        A[j] = 0.0
    if k == 1:  # one vector: the row's sum in a register
        for i in range(r0, r1):
            t = 0.0
            for e in range(indptr[i], indptr[i + 1]):
                t = t + (Wp[indices[e]] if unit else data[e] * Wp[indices[e]])
            t = t * s[i]
            for e in range(indptr[i], indptr[i + 1]):
                A[indices[e]] += t if unit else data[e] * t
        return
    for i in range(r0, r1):
        b = 0
        while b < k:
            kb = k - b if k - b < KB else KB
            if kb == KB and unit:
                _row_full(indptr[i], indptr[i + 1], indices, s[i], &W[0, 0], A, k, b)
            else:
                _row_part(indptr[i], indptr[i + 1], indices, data, unit, s[i], &W[0, 0],
                          A, k, b, kb)
            b += KB


cdef inline void _row_full(
    int64_t e0, int64_t e1, const int32_t[::1] indices, double si, const double* W,
    double* A, Py_ssize_t k, Py_ssize_t b,
) noexcept nogil:
    """One row of N (unit counts), columns b .. b + KB - 1: t = s_i N_i W, A += N_i' t."""
    cdef double[KB] t
    cdef const double* Wj
    cdef double* Aj
    cdef int64_t e
    cdef int a
    for a in range(KB):
        t[a] = 0.0
    for e in range(e0, e1):
        Wj = W + <Py_ssize_t>indices[e] * k + b
        for a in range(KB):
            t[a] += Wj[a]
    for a in range(KB):
        t[a] *= si
    for e in range(e0, e1):
        Aj = A + <Py_ssize_t>indices[e] * k + b
        for a in range(KB):
            Aj[a] += t[a]


cdef inline void _row_part(
    int64_t e0, int64_t e1, const int32_t[::1] indices, const double[::1] data, bint unit,
    double si, const double* W, double* A, Py_ssize_t k, Py_ssize_t b, Py_ssize_t kb,
) noexcept nogil:
    """As _row_full for kb <= KB columns, any counts (weights, repeated pairs)."""
    cdef double[KB] t
    cdef const double* Wj
    cdef double* Aj
    cdef double w
    cdef int64_t e
    cdef Py_ssize_t a
    for a in range(kb):
        t[a] = 0.0
    for e in range(e0, e1):
        w = 1.0 if unit else data[e]
        Wj = W + <Py_ssize_t>indices[e] * k + b
        for a in range(kb):
            t[a] += w * Wj[a]
    for a in range(kb):
        t[a] *= si
    for e in range(e0, e1):
        w = 1.0 if unit else data[e]
        Aj = A + <Py_ssize_t>indices[e] * k + b
        for a in range(kb):
            Aj[a] += w * t[a]
