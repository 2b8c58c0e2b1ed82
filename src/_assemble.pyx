"""One pass over the rows: the blocks of A = [Z X y]' W [Z X y].

Z is never formed.  Random-effects term t has a grouping factor (row i is at level
codes[i, t]) and q_t model columns Zt[i, :] (e.g. [1, Days]); its block of Z is
the Khatri-Rao product of the level indicators with those columns, so

    Z_t' W Z_t   = blockdiag over levels j of  sum_{i: codes[i,t]=j} w_i z_ti z_ti'
    Z_t' W Z_u   = sparse; the block (j, k) sums w_i z_ti z_ui' over rows at level
                   pair (j, k); pair_idx[i, r] numbers the distinct pairs of term pair r
    Z_t' W [X y] = per level j:  sum_i w_i z_ti [x_i y_i]'
    [X y]'W[X y] = sum_i w_i [x_i y_i][x_i y_i]'

(tabmat's categorical "sandwich" X'DX is the q_t = 1 case of the first line.)
"""

from libc.stdint cimport int32_t, int64_t

ctypedef fused index_t:
    int32_t
    int64_t


def assemble(
    const index_t[:, ::1] codes,
    const index_t[:, ::1] pair_idx,
    const int64_t[:, ::1] pair_terms,
    const int64_t[::1] zoff,
    const int64_t[::1] qs,
    const double[:, ::1] Z,
    const double[:, ::1] XY,
    const double[::1] w,
    double[::1] D,
    const int64_t[::1] doff,
    double[::1] O,
    const int64_t[::1] ooff,
    double[::1] ZXY,
    const int64_t[::1] zxoff,
    double[:, ::1] XtXy,
):
    """D, O, ZXY, XtXy += the blocks above, accumulated over all rows (lower half of XtXy).

    Outputs are caller-allocated and zeroed; the block of term t at level j starts at
    D[doff[t] + j*q_t*q_t] (row-major q_t x q_t), of term pair r at pair k at
    O[ooff[r] + k*q_t*q_u], and Z_t'W[X y] at ZXY[zxoff[t] + j*q_t*p1] (row-major q_t x p1).
    """
    cdef Py_ssize_t n = XY.shape[0], p1 = XY.shape[1], K = codes.shape[1]
    cdef Py_ssize_t npairs = pair_terms.shape[0]
    cdef Py_ssize_t i, t, u, r, a, b, c, q, qu, zo, zu
    cdef int64_t lev, base
    cdef double wi, za
    with nogil:
        for i in range(n):
            wi = w[i]
            for t in range(K):
                lev = codes[i, t]
                q = qs[t]
                zo = zoff[t]
                for a in range(q):
                    za = wi * Z[i, zo + a]
                    base = doff[t] + (lev * q + a) * q
                    for b in range(q):
                        D[base + b] += za * Z[i, zo + b]
                    base = zxoff[t] + (lev * q + a) * p1
                    for c in range(p1):
                        ZXY[base + c] += za * XY[i, c]
            for r in range(npairs):
                t = pair_terms[r, 0]
                u = pair_terms[r, 1]
                q = qs[t]
                qu = qs[u]
                zo = zoff[t]
                zu = zoff[u]
                for a in range(q):
                    za = wi * Z[i, zo + a]
                    base = ooff[r] + (pair_idx[i, r] * q + a) * qu
                    for b in range(qu):
                        O[base + b] += za * Z[i, zu + b]
            for a in range(p1):
                za = wi * XY[i, a]
                for b in range(a + 1):
                    XtXy[a, b] += za * XY[i, b]
