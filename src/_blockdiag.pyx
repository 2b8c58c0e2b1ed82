"""Per-cluster factorization when the random effects are block-diagonal.

With one grouping factor, Lambda' Z'WZ Lambda + I is block-diagonal with one Q x Q
block per level j, and Lambda acts on every block by the same lower-triangular T:

    L_j L_j' = T' B_j T + I                       (B_j = Z_j'W Z_j)
    c_j      = L_j^{-1} T' Z_j'W [X y]            (the rows of R_ZX and c_u)
    ldL2     = sum_j 2 sum_a log L_j[a, a]
    C        = sum_j c_j' c_j                      (subtracted from [X y]'W[X y] to
                                                    give the Schur complement R'R)
"""

cimport cython
from cython.parallel cimport prange
from libc.math cimport NAN, log, sqrt
from libc.stdint cimport int64_t


def update(
    const double[:, ::1] T,
    const double[:, :, ::1] B,
    const double[:, :, ::1] ZXY,
    double[:, :, ::1] L,
    double[:, :, ::1] cu,
    double[:, :, ::1] C,
    double[::1] ld,
    int nthreads=1,
):
    """Fill L[j] (lower), cu[j]; chunk c of the levels adds its sum of cu_j'cu_j to C[c]
    (lower half, zeroed first) and its log-determinant to ld[c].  Returns False if a
    block is not positive definite (it cannot be: + I keeps it so).

    Levels are split into C.shape[0] fixed contiguous chunks (one per thread), so the
    caller's fixed-order sum over chunks is deterministic.
    """
    return _update(T, B, ZXY, L, cu, C, ld, nthreads)


cdef bint _update(
    const double[:, ::1] T, const double[:, :, ::1] B, const double[:, :, ::1] ZXY,
    double[:, :, ::1] L, double[:, :, ::1] cu, double[:, :, ::1] C, double[::1] ld,
    int nthreads,
) noexcept:
    cdef Py_ssize_t nlev = B.shape[0], nchunks = C.shape[0]
    cdef Py_ssize_t c
    C[:, :, :] = 0.0
    ld[:] = 0.0
    if nchunks == 1:  # chunk 0 is every level: no parallel region to start
        _levels(T, B, ZXY, L, cu, C, ld, 0, 0, nlev)
    else:
        for c in prange(nchunks, nogil=True, num_threads=nthreads, schedule="static",
                        chunksize=1):
            _levels(T, B, ZXY, L, cu, C, ld, c, c * nlev // nchunks, (c + 1) * nlev // nchunks)
    for c in range(nchunks):
        if ld[c] != ld[c]:
            return False
    return True


cdef void _levels(
    const double[:, ::1] T, const double[:, :, ::1] B, const double[:, :, ::1] ZXY,
    double[:, :, ::1] L, double[:, :, ::1] cu, double[:, :, ::1] C, double[::1] ld,
    Py_ssize_t c, Py_ssize_t lo, Py_ssize_t hi,
) noexcept nogil:
    cdef Py_ssize_t j
    cdef double d
    for j in range(lo, hi):
        d = _level(T, B, ZXY, L, cu, C, c, j)
        ld[c] = ld[c] + d
        if d != d:
            return


cdef double _level(
    const double[:, ::1] T,
    const double[:, :, ::1] B,
    const double[:, :, ::1] ZXY,
    double[:, :, ::1] L,
    double[:, :, ::1] cu,
    double[:, :, ::1] C,
    Py_ssize_t k,
    Py_ssize_t j,
) noexcept nogil:
    """Level j: factor T' B_j T + I into L[j], cu[j] := L_j^{-1} T' ZXY_j, C += cu[j]'cu[j].

    Returns 2 sum log diag(L_j), or NaN if the block is not positive definite.
    """
    cdef Py_ssize_t Q = B.shape[1], p1 = ZXY.shape[2]
    cdef Py_ssize_t a, b, c
    cdef double s, ld = 0.0
    # L[j] := T' B_j T + I (lower triangle); cu[j] := T' ZXY_j
    for a in range(Q):
        for b in range(a + 1):
            s = 0.0
            for c in range(a, Q):  # (T' (B T))[a, b]; T[c, a] = 0 for c < a
                s = s + T[c, a] * _BT(B, T, j, c, b, Q)
            L[j, a, b] = s + (1.0 if a == b else 0.0)
        for c in range(p1):
            s = 0.0
            for b in range(a, Q):
                s = s + T[b, a] * ZXY[j, b, c]
            cu[j, a, c] = s
    # in-place Cholesky of the block (lower, column by column)
    for a in range(Q):
        s = L[j, a, a]
        for c in range(a):
            s = s - L[j, a, c] * L[j, a, c]
        if s <= 0.0:
            return NAN
        s = sqrt(s)
        L[j, a, a] = s
        ld = ld + 2.0 * log(s)
        for b in range(a + 1, Q):
            for c in range(a):
                L[j, b, a] = L[j, b, a] - L[j, b, c] * L[j, a, c]
            L[j, b, a] = L[j, b, a] / s
    # cu[j] := L_j^{-1} cu[j]   (forward substitution)
    for c in range(p1):
        for a in range(Q):
            s = cu[j, a, c]
            for b in range(a):
                s = s - L[j, a, b] * cu[j, b, c]
            cu[j, a, c] = s / L[j, a, a]
    # C[k] += cu[j]' cu[j]   (lower half)
    for a in range(p1):
        for b in range(a + 1):
            s = 0.0
            for c in range(Q):
                s = s + cu[j, c, a] * cu[j, c, b]
            C[k, a, b] = C[k, a, b] + s
    return ld


cdef inline double _BT(const double[:, :, ::1] B, const double[:, ::1] T,
                       Py_ssize_t j, Py_ssize_t c, Py_ssize_t b, Py_ssize_t Q) noexcept nogil:
    """(B_j T)[c, b] = sum_{d >= b} B_j[c, d] T[d, b]."""
    cdef double s = 0.0
    cdef Py_ssize_t d
    for d in range(b, Q):
        s = s + B[j, c, d] * T[d, b]
    return s


# ---------------------------------------------------------------------------------------
# Clusters of varying size: nested factors.  When every term's factor is nested in the
# coarsest one, Z'WZ is block-diagonal by the coarsest factor's levels ("clusters"); a
# cluster holds the effects of its own level and of every finer level inside it, in
# segments of q_t rows (one per term level), and Lambda is T_t on each segment.
# Row g of the stacked clusters belongs to a term whose T starts at T[row_t[g]]
# (row-major q x q, q = row_q[g]), is column row_a[g] of that term, and its segment
# starts at cluster-local row row_seg[g].
# ---------------------------------------------------------------------------------------

def update_var(
    const double[::1] T,
    const int64_t[::1] row_t,
    const int64_t[::1] row_q,
    const int64_t[::1] row_a,
    const int64_t[::1] row_seg,
    const int64_t[::1] roff,
    const int64_t[::1] boff,
    const double[::1] B,
    const double[::1] ZXY,
    double[::1] L,
    double[::1] cu,
    double[:, ::1] C,
    double[::1] work,
):
    """Per cluster k: L_k L_k' = Lambda_k' B_k Lambda_k + I, cu_k = L_k^{-1} Lambda_k' ZXY_k,
    C += cu_k' cu_k (lower half, zeroed first); return ldL2 (-1.0 if not positive definite).

    B_k, L_k are s_k x s_k row-major at boff[k]; ZXY_k, cu_k are s_k x p1 at roff[k] * p1;
    work holds at least max s_k^2 doubles.
    """
    cdef Py_ssize_t ncl = roff.shape[0] - 1, p1 = C.shape[0]
    cdef Py_ssize_t k, a, b
    cdef double ld = 0.0, ldL2 = 0.0
    for a in range(p1):
        for b in range(p1):
            C[a, b] = 0.0
    with nogil:
        for k in range(ncl):
            ld = _cluster(T, row_t, row_q, row_a, row_seg, roff[k], roff[k + 1] - roff[k],
                          boff[k], B, ZXY, L, cu, C, work)
            if ld != ld:
                break
            ldL2 = ldL2 + ld
    return -1.0 if ld != ld else ldL2


cdef inline double _lam(const double[::1] T, const int64_t[::1] row_t, const int64_t[::1] row_q,
                        const int64_t[::1] row_a, Py_ssize_t gm, Py_ssize_t gi) noexcept nogil:
    """Lambda[m, i] for rows m, i of one segment: T[a_m, a_i]."""
    return T[row_t[gm] + row_a[gm] * row_q[gm] + row_a[gi]]


cdef double _cluster(
    const double[::1] T, const int64_t[::1] row_t, const int64_t[::1] row_q,
    const int64_t[::1] row_a, const int64_t[::1] row_seg,
    Py_ssize_t r0, Py_ssize_t s, Py_ssize_t b0,
    const double[::1] B, const double[::1] ZXY,
    double[::1] L, double[::1] cu, double[:, ::1] C, double[::1] W,
) noexcept nogil:
    cdef Py_ssize_t p1 = C.shape[0]
    cdef Py_ssize_t i, j, m, c, lo, hi
    cdef double acc, ld = 0.0
    # W := B_k Lambda_k   (column j of Lambda is non-zero on j's segment, rows with a_m >= a_j)
    for j in range(s):
        lo = row_seg[r0 + j] + row_a[r0 + j]
        hi = row_seg[r0 + j] + row_q[r0 + j]
        for i in range(s):
            acc = 0.0
            for m in range(lo, hi):
                acc = acc + B[b0 + i * s + m] * _lam(T, row_t, row_q, row_a, r0 + m, r0 + j)
            W[i * s + j] = acc
    # L_k := Lambda_k' W + I (lower triangle); cu_k := Lambda_k' ZXY_k
    for i in range(s):
        lo = row_seg[r0 + i] + row_a[r0 + i]
        hi = row_seg[r0 + i] + row_q[r0 + i]
        for j in range(i + 1):
            acc = 0.0
            for m in range(lo, hi):
                acc = acc + _lam(T, row_t, row_q, row_a, r0 + m, r0 + i) * W[m * s + j]
            L[b0 + i * s + j] = acc + (1.0 if i == j else 0.0)
        for c in range(p1):
            acc = 0.0
            for m in range(lo, hi):
                acc = acc + _lam(T, row_t, row_q, row_a, r0 + m, r0 + i) * ZXY[(r0 + m) * p1 + c]
            cu[(r0 + i) * p1 + c] = acc
    # Cholesky in place (lower, row-major)
    for j in range(s):
        acc = L[b0 + j * s + j]
        for c in range(j):
            acc = acc - L[b0 + j * s + c] * L[b0 + j * s + c]
        if acc <= 0.0:
            return NAN
        acc = sqrt(acc)
        L[b0 + j * s + j] = acc
        ld = ld + 2.0 * log(acc)
        for i in range(j + 1, s):
            for c in range(j):
                L[b0 + i * s + j] = L[b0 + i * s + j] - L[b0 + i * s + c] * L[b0 + j * s + c]
            L[b0 + i * s + j] = L[b0 + i * s + j] / acc
    # cu_k := L_k^{-1} cu_k; C += cu_k' cu_k
    for c in range(p1):
        for i in range(s):
            acc = cu[(r0 + i) * p1 + c]
            for j in range(i):
                acc = acc - L[b0 + i * s + j] * cu[(r0 + j) * p1 + c]
            cu[(r0 + i) * p1 + c] = acc / L[b0 + i * s + i]
    for i in range(p1):
        for j in range(i + 1):
            acc = 0.0
            for m in range(s):
                acc = acc + cu[(r0 + m) * p1 + i] * cu[(r0 + m) * p1 + j]
            C[i, j] = C[i, j] + acc
    return ld


def solve_upper_var(const double[::1] L, const int64_t[::1] roff, const int64_t[::1] boff,
                    double[::1] x):
    """x_k := L_k'^{-1} x_k for every cluster k (in place)."""
    cdef Py_ssize_t ncl = roff.shape[0] - 1
    cdef Py_ssize_t k, i, j, s, r0, b0
    cdef double acc
    with nogil:
        for k in range(ncl):
            r0 = roff[k]
            s = roff[k + 1] - r0
            b0 = boff[k]
            for i in range(s - 1, -1, -1):
                acc = x[r0 + i]
                for j in range(i + 1, s):
                    acc = acc - L[b0 + j * s + i] * x[r0 + j]
                x[r0 + i] = acc / L[b0 + i * s + i]


def gradient(
    const double[:, ::1] T,
    const double[:, :, ::1] B,
    const double[:, :, ::1] ZXY,
    const double[:, :, ::1] L,
    const double[:, :, ::1] cu,
    const double[::1] beta,
    const double[:, ::1] P,
    double scale,
    bint reml,
    double[:, :, ::1] F,
    double[:, :, ::1] work,
    int nthreads=1,
):
    """F := sum_j 2 M_j^{-1} T'B_j - 2 scale u_j s_j' - 2 [reml] T'H_j P H_j' (Q x Q).

    Call after update() at the same theta.

    The gradient of the profiled objective is F[b, a] for the theta at T[a, b].  Per level:
    u_j = L_j'^{-1}(c_yj - c_Xj beta), s_j = Z_j'W(y - X beta) - B_j T u_j,
    H_j = Z_j'WX - B_j T L_j'^{-1} c_Xj;  scale = (n or n - p) / pwrss, P = (R_X'R_X)^{-1}.
    Chunk c of the levels accumulates into F[c] with scratch work[c] ((3 + 2p) x Q); the
    caller sums the chunks in order.
    """
    _gradient(T, B, ZXY, L, cu, beta, P, scale, reml, F, work, nthreads)


cdef void _gradient(
    const double[:, ::1] T, const double[:, :, ::1] B, const double[:, :, ::1] ZXY,
    const double[:, :, ::1] L, const double[:, :, ::1] cu, const double[::1] beta,
    const double[:, ::1] P, double scale, bint reml, double[:, :, ::1] F,
    double[:, :, ::1] work, int nthreads,
) noexcept:
    cdef Py_ssize_t nlev = B.shape[0], nchunks = F.shape[0]
    cdef Py_ssize_t c
    F[:, :, :] = 0.0
    if nchunks == 1:  # chunk 0 is every level: no parallel region to start
        _gradient_levels(T, B, ZXY, L, cu, beta, P, scale, reml, F[0], work[0], 0, nlev)
        return
    for c in prange(nchunks, nogil=True, num_threads=nthreads, schedule="static", chunksize=1):
        _gradient_levels(T, B, ZXY, L, cu, beta, P, scale, reml, F[c], work[c],
                         c * nlev // nchunks, (c + 1) * nlev // nchunks)


@cython.final
cdef class Blocked:
    """update() and gradient() on one factor's arrays (B, ZXY, L, cu and the outputs C,
    ld, F, work), their views taken once: the ~2 us of argument checks per call that were
    most of a small fit's kernel time (sleepstudy: 18 levels of 2 x 2) are paid once."""

    cdef const double[:, :, ::1] B, ZXY
    cdef double[:, :, ::1] L, cu, C, F, work
    cdef double[::1] ld
    cdef int nthreads

    def __init__(self, B, ZXY, L, cu, C, ld, F, work, int nthreads=1):
        self.B, self.ZXY, self.L, self.cu, self.C, self.ld = B, ZXY, L, cu, C, ld
        self.F, self.work, self.nthreads = F, work, nthreads

    def update(self, const double[:, ::1] T):
        """update(T, B, ZXY, L, cu, C, ld, nthreads) on the arrays given at construction."""
        return _update(T, self.B, self.ZXY, self.L, self.cu, self.C, self.ld, self.nthreads)

    def gradient(self, const double[:, ::1] T, const double[::1] beta,
                 const double[:, ::1] P, double scale, bint reml):
        """gradient(T, B, ZXY, L, cu, beta, P, scale, reml, F, work, nthreads) likewise."""
        _gradient(T, self.B, self.ZXY, self.L, self.cu, beta, P, scale, reml, self.F,
                  self.work, self.nthreads)


cdef void _gradient_levels(
    const double[:, ::1] T, const double[:, :, ::1] B, const double[:, :, ::1] ZXY,
    const double[:, :, ::1] L, const double[:, :, ::1] cu, const double[::1] beta,
    const double[:, ::1] P, double scale, bint reml, double[:, ::1] F, double[:, ::1] work,
    Py_ssize_t lo, Py_ssize_t hi,
) noexcept nogil:
    cdef Py_ssize_t Q = B.shape[1], p = ZXY.shape[2] - 1
    cdef Py_ssize_t j, a, b, c, d
    cdef double acc
    for j in range(lo, hi):
        # work[0] := u_j = L_j'^{-1} (c_y - c_X beta)
        for a in range(Q):
            acc = cu[j, a, p]
            for c in range(p):
                acc = acc - cu[j, a, c] * beta[c]
            work[0, a] = acc
        _lt_solve(L, j, Q, work, 0)
        # work[1] := T u_j;  work[2] := s_j = ZXy - ZX beta - B_j T u_j
        _T_times(T, Q, work, 0, 1)
        for a in range(Q):
            acc = ZXY[j, a, p]
            for c in range(p):
                acc = acc - ZXY[j, a, c] * beta[c]
            for b in range(Q):
                acc = acc - B[j, a, b] * work[1, b]
            work[2, a] = acc
        # F -= 2 scale u s'
        for a in range(Q):
            for b in range(Q):
                F[a, b] = F[a, b] - 2.0 * scale * work[0, a] * work[2, b]
        # F += 2 M_j^{-1} T' B_j, column by column: x = L'^{-1} L^{-1} (T' B_j[:, b])
        for b in range(Q):
            for a in range(Q):
                acc = 0.0
                for c in range(a, Q):
                    acc = acc + T[c, a] * B[j, c, b]
                work[1, a] = acc
            _cholsolve(L, j, Q, work, 1)
            for a in range(Q):
                F[a, b] = F[a, b] + 2.0 * work[1, a]
        if reml and p > 0:
            # H_j (Q x p) in work[3 .. 3+p) by columns:
            #   H[:, c] = ZX[:, c] - B T L'^{-1} cX[:, c]
            for c in range(p):
                for a in range(Q):
                    work[1, a] = cu[j, a, c]
                _lt_solve(L, j, Q, work, 1)
                _T_times(T, Q, work, 1, 2)
                for a in range(Q):
                    acc = ZXY[j, a, c]
                    for b in range(Q):
                        acc = acc - B[j, a, b] * work[2, b]
                    work[3 + c, a] = acc
            # K := (T'H) P in work[3 + p .. 3 + 2p) (column d holds K[:, d])
            for d in range(p):
                for a in range(Q):
                    acc = 0.0
                    for c in range(p):
                        acc = acc + _TtH(T, work, a, c, Q) * P[c, d]
                    work[3 + p + d, a] = acc
            # F -= 2 K H'
            for a in range(Q):
                for b in range(Q):
                    acc = 0.0
                    for d in range(p):
                        acc = acc + work[3 + p + d, a] * work[3 + d, b]
                    F[a, b] = F[a, b] - 2.0 * acc


cdef inline double _TtH(const double[:, ::1] T, double[:, ::1] work, Py_ssize_t a,
                        Py_ssize_t c, Py_ssize_t Q) noexcept nogil:
    """(T' H)[a, c] with H's column c in work[3 + c]."""
    cdef double acc = 0.0
    cdef Py_ssize_t d
    for d in range(a, Q):
        acc = acc + T[d, a] * work[3 + c, d]
    return acc


cdef inline void _cholsolve(const double[:, :, ::1] L, Py_ssize_t j, Py_ssize_t Q,
                            double[:, ::1] work, Py_ssize_t r) noexcept nogil:
    """work[r] := L_j'^{-1} L_j^{-1} work[r]."""
    cdef Py_ssize_t a, b
    cdef double acc
    for a in range(Q):
        acc = work[r, a]
        for b in range(a):
            acc = acc - L[j, a, b] * work[r, b]
        work[r, a] = acc / L[j, a, a]
    _lt_solve(L, j, Q, work, r)


cdef inline void _lt_solve(const double[:, :, ::1] L, Py_ssize_t j, Py_ssize_t Q,
                           double[:, ::1] work, Py_ssize_t r) noexcept nogil:
    """work[r] := L_j'^{-1} work[r]   (back substitution)."""
    cdef Py_ssize_t a, b
    cdef double acc
    for a in range(Q - 1, -1, -1):
        acc = work[r, a]
        for b in range(a + 1, Q):
            acc = acc - L[j, b, a] * work[r, b]
        work[r, a] = acc / L[j, a, a]


cdef inline void _T_times(const double[:, ::1] T, Py_ssize_t Q, double[:, ::1] work,
                          Py_ssize_t src, Py_ssize_t dst) noexcept nogil:
    """work[dst] := T work[src]   (T lower triangular)."""
    cdef Py_ssize_t a, b
    cdef double acc
    for a in range(Q):
        acc = 0.0
        for b in range(a + 1):
            acc = acc + T[a, b] * work[src, b]
        work[dst, a] = acc
