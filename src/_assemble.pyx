"""The passes over the rows: the blocks of A = [Z X y]' W [Z X y] before the fit, the
fitted values after it.  Nothing else in lmmfast reads every row.

Z is never formed.  Random-effects term t has a grouping factor (row i is at level
codes[i, t]) and q_t model columns z_ti (e.g. [1, Days]); its block of Z is the
Khatri-Rao product of the level indicators with those columns, so

    Z_t' W Z_t   = blockdiag over levels j of  sum_{i: codes[i,t]=j} w_i z_ti z_ti'
    Z_t' W Z_u   = sparse; the block (j, k) sums w_i z_ti z_ui' over rows at level
                   pair (j, k); pair_idx[i, r] numbers the distinct pairs of term pair r
    Z_t' W [X y] = per level j:  sum_i w_i z_ti [x_i y_i]'
    [X y]'W[X y] = sum_i w_i [x_i y_i][x_i y_i]'

(tabmat's categorical "sandwich" X'DX is the q_t = 1 case of the first line.)

Each level's blocks of one term are stored together, as one record of q*q + q*p1
doubles ([Z_j'WZ_j | Z_j'W[X y]], row-major): a row then touches one or two cache lines
of the per-level accumulators instead of two scattered ones (the random access into
them, not the reading of the rows, is what this pass waits for).

The columns are read where they are: `cols` is a list of contiguous float64 arrays (the
caller's own columns, no copies); z_ti and [x_i y_i] name them by index, -1 meaning the
constant 1 (an intercept needs no array).  Rows are split into `nchunks` fixed ranges,
each accumulated into its own outputs (chunk 0 into the first set), so that threads
share nothing and the caller's fixed-order sum is deterministic.
"""

from cython.parallel cimport prange
from libc.stdint cimport int32_t, int64_t
from libc.stdlib cimport free, malloc

ctypedef fused index_t:
    int32_t
    int64_t


def assemble(
    const index_t[:, ::1] codes,
    const index_t[:, ::1] pair_idx,
    const int64_t[:, ::1] pair_terms,
    const int64_t[::1] zoff,
    const int64_t[::1] qs,
    list cols,
    const int64_t[::1] zcol,
    const int64_t[::1] xcol,
    const double[::1] w,
    double[:, ::1] R,
    const int64_t[::1] roff,
    double[:, ::1] O,
    const int64_t[::1] ooff,
    double[:, :, ::1] XtXy,
    bint weighted,
    int nthreads,
):
    """Row i contributes to the chunk's row of R, O (flat per chunk) and XtXy[chunk].

    zcol: (Qtot,) column of each z value; xcol: (p + 1,) columns of x then y.  The record
    of term t at level j starts at R[c, roff[t] + j*(q_t*q_t + q_t*p1)]; the block of term
    pair r at pair k at O[c, ooff[r] + k*q_t*q_u]; XtXy[c] gets its lower half.  Outputs
    are caller-allocated and zeroed; c is the chunk (R.shape[0] of them).
    """
    cdef Py_ssize_t n = codes.shape[0], nchunks = R.shape[0]
    cdef Py_ssize_t c
    cdef const double** ptr = _pointers(cols, n)
    try:
        for c in prange(nchunks, nogil=True, num_threads=nthreads, schedule="static", chunksize=1):
            _rows(c * n // nchunks, (c + 1) * n // nchunks, c, codes, pair_idx, pair_terms,
                  zoff, qs, ptr, zcol, xcol, w, weighted, R, roff, O, ooff, XtXy)
    finally:
        free(ptr)


cdef const double** _pointers(list cols, Py_ssize_t n) except NULL:
    """The data pointers of contiguous float64 columns of length n (caller frees)."""
    cdef Py_ssize_t k, ncol = len(cols)
    cdef const double[::1] col
    cdef const double** ptr = <const double**> malloc((ncol + 1) * sizeof(double*))
    if ptr == NULL:
        raise MemoryError()
    for k in range(ncol):
        col = cols[k]
        if col.shape[0] != n:
            free(ptr)
            raise ValueError("every column must have one value per row")
        ptr[k] = &col[0] if n > 0 else NULL
    return ptr


def fitted(
    const index_t[:, ::1] codes,
    list cols,
    const int64_t[::1] xcol,
    const double[::1] beta,
    const int64_t[::1] zcol,
    const int64_t[::1] zoff,
    const int64_t[::1] qs,
    const double[::1] b,
    const int64_t[::1] boff,
    double[::1] out,
    int nthreads,
):
    """out[i] += x_i'beta + sum_t z_ti' b_t[codes[i, t]]   (b_t: (l_t, q_t) row-major at boff[t]).

    Columns as in assemble(); chunks of rows write disjoint parts of out.
    """
    cdef Py_ssize_t n = codes.shape[0], nchunks = 2 if nthreads > 1 else 1
    cdef Py_ssize_t c
    cdef const double** ptr = _pointers(cols, n)
    try:
        for c in prange(nchunks, nogil=True, num_threads=nthreads, schedule="static", chunksize=1):
            _fitted_rows(c * n // nchunks, (c + 1) * n // nchunks, codes, ptr, xcol, beta,
                         zcol, zoff, qs, b, boff, out)
    finally:
        free(ptr)


cdef void _fitted_rows(
    Py_ssize_t lo, Py_ssize_t hi, const index_t[:, ::1] codes, const double** ptr,
    const int64_t[::1] xcol, const double[::1] beta, const int64_t[::1] zcol,
    const int64_t[::1] zoff, const int64_t[::1] qs, const double[::1] b,
    const int64_t[::1] boff, double[::1] out,
) noexcept nogil:
    cdef Py_ssize_t K = codes.shape[1], p = xcol.shape[0]
    cdef Py_ssize_t i, t, a, q
    cdef double acc
    cdef const double* bt
    for i in range(lo, hi):
        acc = 0.0
        for a in range(p):
            acc = acc + (beta[a] if xcol[a] < 0 else ptr[xcol[a]][i] * beta[a])
        for t in range(K):
            q = qs[t]
            bt = &b[boff[t] + codes[i, t] * q]
            for a in range(q):
                if zcol[zoff[t] + a] < 0:
                    acc = acc + bt[a]
                else:
                    acc = acc + ptr[zcol[zoff[t] + a]][i] * bt[a]
        out[i] = out[i] + acc


cdef void _rows(
    Py_ssize_t lo, Py_ssize_t hi, Py_ssize_t c,
    const index_t[:, ::1] codes, const index_t[:, ::1] pair_idx,
    const int64_t[:, ::1] pair_terms, const int64_t[::1] zoff, const int64_t[::1] qs,
    const double** ptr, const int64_t[::1] zcol, const int64_t[::1] xcol,
    const double[::1] w, bint weighted,
    double[:, ::1] R, const int64_t[::1] roff, double[:, ::1] O, const int64_t[::1] ooff,
    double[:, :, ::1] XtXy,
) noexcept nogil:
    """Accumulate rows lo..hi-1 into chunk c's outputs."""
    cdef Py_ssize_t K = codes.shape[1], npairs = pair_terms.shape[0]
    cdef Py_ssize_t Qtot = zcol.shape[0], p1 = xcol.shape[0]
    cdef Py_ssize_t i, t, r, a, b, q, qu
    cdef double wi, za
    cdef double* d
    cdef double* zx
    cdef const double* zt
    cdef const double* zu
    # the chunk's outputs as raw pointers; z and x hold row i's values
    cdef double* Rc = &R[c, 0] if R.shape[1] else NULL
    cdef double* Oc = &O[c, 0] if O.shape[1] else NULL
    cdef double* XX = &XtXy[c, 0, 0]
    cdef double* z = <double*> malloc((Qtot + p1 + 1) * sizeof(double))
    cdef double* x = z + Qtot
    if z == NULL:
        return
    for a in range(Qtot):  # constant columns are set once
        z[a] = 1.0
    for a in range(p1):
        x[a] = 1.0
    for i in range(lo, hi):
        wi = w[i] if weighted else 1.0
        for a in range(Qtot):
            if zcol[a] >= 0:
                z[a] = ptr[zcol[a]][i]
        for a in range(p1):
            if xcol[a] >= 0:
                x[a] = ptr[xcol[a]][i]
        for t in range(K):
            q = qs[t]
            zt = z + zoff[t]
            d = Rc + roff[t] + codes[i, t] * (q * q + q * p1)
            zx = d + q * q
            for a in range(q):
                za = wi * zt[a]
                for b in range(q):
                    d[a * q + b] += za * zt[b]
                for b in range(p1):
                    zx[a * p1 + b] += za * x[b]
        for r in range(npairs):
            t = pair_terms[r, 0]
            q = qs[t]
            qu = qs[pair_terms[r, 1]]
            zt = z + zoff[t]
            zu = z + zoff[pair_terms[r, 1]]
            d = Oc + ooff[r] + pair_idx[i, r] * q * qu
            for a in range(q):
                za = wi * zt[a]
                for b in range(qu):
                    d[a * qu + b] += za * zu[b]
        for a in range(p1):
            za = wi * x[a]
            for b in range(a + 1):
                XX[a * p1 + b] += za * x[b]
    free(z)
