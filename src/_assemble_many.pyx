"""The response blocks of A = [Z X Y]'W[Z X Y] for many responses on one design, in one
pass over the rows: Z_t'W Y by level, X'W Y and the diagonal of Y'W Y (never the G x G
Y'W Y).  The blocks that do not involve Y (Z'WZ, Z'WX, X'WX) come from _assemble once.

For response g each product is formed with _assemble's arithmetic, in its row order:

    ZY[zrow[t] + j*q_t + a, g] = sum_{i: codes[i,t]=j} (w_i z_tia) y_ig
    XY[b, g]                   = sum_i (w_i y_ig) x_ib
    yy[g]                      = sum_i (w_i y_ig) y_ig

so one response's blocks equal, bit for bit, those of a fit of that response alone.
Responses are split into `nthreads` fixed ranges; each range is a disjoint set of output
columns, so the result does not depend on the number of threads.
"""

from cython.parallel cimport prange
from libc.stdint cimport int32_t, int64_t
from libc.stdlib cimport free, malloc

ctypedef fused index_t:
    int32_t
    int64_t


def assemble_responses(
    const index_t[:, ::1] codes,
    const int64_t[::1] zoff,
    const int64_t[::1] qs,
    const int64_t[::1] zrow,
    list cols,
    const int64_t[::1] zcol,
    const int64_t[::1] xcol,
    const double[::1] w,
    bint weighted,
    const double[:, ::1] Y,
    double[:, ::1] ZY,
    double[:, ::1] XY,
    double[::1] yy,
    int nthreads,
):
    """ZY += Z'W Y (rows zrow[t] + level*q_t + a), XY += X'W Y, yy += diag(Y'W Y).

    Columns as in _assemble.assemble (zcol, xcol index `cols`, -1 the constant 1); xcol
    holds the p fixed-effects columns only.  Outputs are caller-allocated and zeroed.
    """
    cdef Py_ssize_t n = codes.shape[0], G = Y.shape[1], c
    cdef Py_ssize_t nchunks = nthreads if nthreads > 1 and G > 1 else 1
    cdef const double** ptr = <const double**> malloc((len(cols) + 1) * sizeof(double*))
    cdef Py_ssize_t k
    cdef const double[::1] col
    if ptr == NULL:
        raise MemoryError()
    try:
        for k in range(len(cols)):
            col = cols[k]
            if col.shape[0] != n:
                raise ValueError("every column must have one value per row")
            ptr[k] = &col[0] if n > 0 else NULL
        if Y.shape[0] != n or ZY.shape[1] != G or XY.shape[1] != G or yy.shape[0] != G:
            raise ValueError("Y, ZY, XY and yy must agree in rows and responses")
        for c in prange(nchunks, nogil=True, num_threads=nchunks, schedule="static", chunksize=1):
            _rows(c * G // nchunks, (c + 1) * G // nchunks, codes, zoff, qs, zrow, ptr, zcol,
                  xcol, w, weighted, Y, ZY, XY, yy)
    finally:
        free(ptr)


cdef void _rows(
    Py_ssize_t g0, Py_ssize_t g1, const index_t[:, ::1] codes, const int64_t[::1] zoff,
    const int64_t[::1] qs, const int64_t[::1] zrow, const double** ptr,
    const int64_t[::1] zcol, const int64_t[::1] xcol, const double[::1] w, bint weighted,
    const double[:, ::1] Y, double[:, ::1] ZY, double[:, ::1] XY, double[::1] yy,
) noexcept nogil:
    """All rows into the output columns g0..g1-1."""
    cdef Py_ssize_t n = codes.shape[0], K = codes.shape[1], p = xcol.shape[0]
    cdef Py_ssize_t i, t, a, b, g, q
    cdef double wi, za, xb, wy
    cdef const double* yi
    cdef double* out
    for i in range(n):
        wi = w[i] if weighted else 1.0
        yi = &Y[i, 0]
        for t in range(K):
            q = qs[t]
            for a in range(q):
                za = wi if zcol[zoff[t] + a] < 0 else wi * ptr[zcol[zoff[t] + a]][i]
                out = &ZY[zrow[t] + codes[i, t] * q + a, 0]
                for g in range(g0, g1):
                    out[g] += za * yi[g]
        for b in range(p):
            xb = 1.0 if xcol[b] < 0 else ptr[xcol[b]][i]
            out = &XY[b, 0]
            for g in range(g0, g1):
                out[g] += (wi * yi[g]) * xb
        for g in range(g0, g1):
            wy = wi * yi[g]
            yy[g] += wy * yi[g]
