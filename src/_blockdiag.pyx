"""Per-cluster factorization when the random effects are block-diagonal.

With one grouping factor, Lambda' Z'WZ Lambda + I is block-diagonal with one Q x Q
block per level j, and Lambda acts on every block by the same lower-triangular T:

    L_j L_j' = T' B_j T + I                       (B_j = Z_j'W Z_j)
    c_j      = L_j^{-1} T' Z_j'W [X y]            (the rows of R_ZX and c_u)
    ldL2     = sum_j 2 sum_a log L_j[a, a]
    C        = sum_j c_j' c_j                      (subtracted from [X y]'W[X y] to
                                                    give the Schur complement R'R)
"""

from libc.math cimport NAN, log, sqrt


def update(
    const double[:, ::1] T,
    const double[:, :, ::1] B,
    const double[:, :, ::1] ZXY,
    double[:, :, ::1] L,
    double[:, :, ::1] cu,
    double[:, ::1] C,
):
    """Fill L[j] (lower), cu[j] and C (lower half, zeroed first); return ldL2.

    Returns -1.0 if a block is not positive definite (it cannot be: + I keeps it so).
    """
    cdef Py_ssize_t nlev = B.shape[0], p1 = ZXY.shape[2]
    cdef Py_ssize_t j, a, b
    cdef double ld, ldL2 = 0.0
    for a in range(p1):
        for b in range(p1):
            C[a, b] = 0.0
    with nogil:
        for j in range(nlev):
            ld = _level(T, B, ZXY, L, cu, C, j)
            if ld != ld:  # NaN: not positive definite
                break
            ldL2 = ldL2 + ld
    return -1.0 if ld != ld else ldL2


cdef double _level(
    const double[:, ::1] T,
    const double[:, :, ::1] B,
    const double[:, :, ::1] ZXY,
    double[:, :, ::1] L,
    double[:, :, ::1] cu,
    double[:, ::1] C,
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
    # C += cu[j]' cu[j]   (lower half)
    for a in range(p1):
        for b in range(a + 1):
            s = 0.0
            for c in range(Q):
                s = s + cu[j, c, a] * cu[j, c, b]
            C[a, b] = C[a, b] + s
    return ld


cdef inline double _BT(const double[:, :, ::1] B, const double[:, ::1] T,
                       Py_ssize_t j, Py_ssize_t c, Py_ssize_t b, Py_ssize_t Q) noexcept nogil:
    """(B_j T)[c, b] = sum_{d >= b} B_j[c, d] T[d, b]."""
    cdef double s = 0.0
    cdef Py_ssize_t d
    for d in range(b, Q):
        s = s + B[j, c, d] * T[d, b]
    return s
