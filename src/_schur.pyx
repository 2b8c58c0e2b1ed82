"""The Schur complement of the first term's blocks, for crossed random effects.

Order the effects as [1 | rest]: term 1 (the factor with the most levels) first, every
other term after it.  With A = Lambda'Z'WZ Lambda + I partitioned the same way,

    L11 = blockdiag_j chol(T1' D_j T1 + I)                  (per level, _blockdiag)
    L21 = A21 L11^{-T},  block (e, j):  W_e = T_u' O_e' T1 L11_j^{-T}
    S   = A22 - L21 L21' = A22 - sum_j sum_{e, f at j} W_e W_f'
    rhs = Lambda_2' Z_2'W[X y] - L21 c1                     (c1 = L11^{-1} T1' Z_1'W[X y])

where e runs over the coupling blocks O_e = Z_1j' W Z_uk of level j of term 1 with level k
of a later term u (q1 x q_u, row-major), listed level by level (ptr).  The rest's rows
of block e start at row[e]; its T_u starts at Tflat[toff[e]] (q_u x q_u row-major).
S (dense, lower half; for scalar terms its upper half, C order) is then factored by LAPACK.
"""

import numpy as np
from libc.stdint cimport int64_t


def schur(
    const int64_t[::1] ptr,
    const int64_t[::1] row,
    const int64_t[::1] qe,
    const int64_t[::1] toff,
    const int64_t[::1] ooff,
    const double[::1] O,
    const double[::1] Tflat,
    const double[:, ::1] T1,
    const double[:, :, ::1] L11,
    const double[:, :, ::1] c1,
    double[::1] W,
    double[:, ::1] S,
    double[:, ::1] rhs,
):
    """W_e := T_u' O_e' T1 L11_j^{-T} (stored at W[ooff[e]], q_u x q1 row-major);
    S -= L21 L21' (lower half); rhs -= L21 c1."""
    cdef Py_ssize_t nlev = L11.shape[0], q1 = L11.shape[1], p1 = c1.shape[2]
    cdef Py_ssize_t j, e, f, a, b, c, d, qu, qf, w0, wf
    cdef double acc
    with nogil:
        for j in range(nlev):
            for e in range(ptr[j], ptr[j + 1]):
                qu = qe[e]
                w0 = ooff[e]
                for a in range(qu):
                    for b in range(q1):
                        # (T_u' O_e' T1)[a, b]
                        #   = sum_{d >= a} T_u[d, a] sum_{c >= b} O_e[c, d] T1[c, b]
                        acc = 0.0
                        for d in range(a, qu):
                            for c in range(b, q1):
                                acc = acc + (Tflat[toff[e] + d * qu + a]
                                             * O[w0 + c * qu + d] * T1[c, b])
                        W[w0 + a * q1 + b] = acc
                    # row a of W_e := row a of W_e L11_j^{-T}, i.e. solve L11_j x = W_e[a, :]'
                    for b in range(q1):
                        acc = W[w0 + a * q1 + b]
                        for c in range(b):
                            acc = acc - L11[j, b, c] * W[w0 + a * q1 + c]
                        W[w0 + a * q1 + b] = acc / L11[j, b, b]
                    for c in range(p1):
                        acc = 0.0
                        for b in range(q1):
                            acc = acc + W[w0 + a * q1 + b] * c1[j, b, c]
                        rhs[row[e] + a, c] = rhs[row[e] + a, c] - acc
            # S -= sum over pairs of blocks of level j (lower half of S only)
            for e in range(ptr[j], ptr[j + 1]):
                w0 = ooff[e]
                for f in range(ptr[j], ptr[j + 1]):
                    if row[f] > row[e]:
                        continue
                    qf = qe[f]
                    wf = ooff[f]
                    for a in range(qe[e]):
                        for b in range(qf):
                            if row[f] + b > row[e] + a:
                                continue
                            acc = 0.0
                            for c in range(q1):
                                acc = acc + W[w0 + a * q1 + c] * W[wf + b * q1 + c]
                            S[row[e] + a, row[f] + b] = S[row[e] + a, row[f] + b] - acc


def scalar_schur(
    const int64_t[::1] ptr,
    const int64_t[::1] row,
    const int64_t[::1] toff,
    const double[::1] Oe,
    const double[::1] Tflat,
    double t1,
    const double[:, :, ::1] L11,
    const double[:, :, ::1] c1,
    double[::1] We,
    int64_t[::1] cur,
    double[:, ::1] S,
    double[:, ::1] rhs,
    Py_ssize_t width,
):
    """schur() when every term is a scalar random effect (intercepts): We[e] = W_e =
    theta_u O_e theta_1 / L11_j, with O and W in entry order (Oe[e] = O[ooff[e]]: reading
    them through ooff, which need not follow the entries, is a cache miss per entry on
    large designs), rhs -= L21 c1, and
    S -= L21 L21' in S's UPPER half (C order; the lower one of S.T, Fortran) in row panels
    of S `width` high: each panel is one pass over the levels, whose entries f with row[f]
    in the panel (a level's entries are sorted by row; cur[j], nlev scratch, is where level
    j's entries of the panel start) subtract W_f W_e from S[row[f], row[e]] for the entries
    e >= f of their level: one row of S (contiguous, in cache) per entry f, the panel's
    rows in cache, and every S entry receives its terms in level order, as in a single
    loop over the levels."""
    cdef Py_ssize_t nlev = L11.shape[0], p1 = c1.shape[2]
    cdef Py_ssize_t j, e, c
    cdef double we, scale
    with nogil:
        for j in range(nlev):
            scale = t1 / L11[j, 0, 0]
            for e in range(ptr[j], ptr[j + 1]):
                we = Tflat[toff[e]] * Oe[e] * scale
                We[e] = we
                for c in range(p1):
                    rhs[row[e], c] = rhs[row[e], c] - we * c1[j, 0, c]
    cdef double[:, :, ::1] unused = np.zeros((0, 1, 1))
    with nogil:
        panels(ptr, row, We, cur, S, unused, width, True)


def scalar_condvar(
    const int64_t[::1] ptr,
    const int64_t[::1] row,
    const double[::1] We,
    int64_t[::1] cur,
    double[:, ::1] Sinv,
    double[:, :, ::1] out,
    Py_ssize_t width,
):
    """out[j] += w_j' Sinv w_j for scalar terms, w_j the entries of level j (We, from
    scalar_schur): with out[j] = 1 on entry, 1 + L21_j' S^{-1} L21_j, so that
    (A^{-1})_jj = out[j] / L11_j^2.  Reads only the upper triangle of Sinv (C order), in
    row panels as scalar_schur: out[j] += W_f (W_f Sinv[rf, rf] + 2 sum_{e > f} W_e
    Sinv[rf, re]) for the entries f of level j in the panel (cur: nlev scratch); Sinv is
    not written."""
    with nogil:
        panels(ptr, row, We, cur, Sinv, out, width, False)


cdef void panels(
    const int64_t[::1] ptr,
    const int64_t[::1] row,
    const double[::1] We,
    int64_t[::1] cur,
    double[:, ::1] S,
    double[:, :, ::1] out,
    Py_ssize_t width,
    bint subtract,
) noexcept nogil:
    """The panel passes of scalar_schur (subtract: S[rf, re] -= W_f W_e for e >= f) and
    scalar_condvar (else: out[j] += W_f (W_f S[rf, rf] + 2 sum_{e > f} W_e S[rf, re]))."""
    cdef Py_ssize_t nlev = ptr.shape[0] - 1, m = S.shape[0]
    cdef Py_ssize_t j, e, f, c0 = 0, c1, end, rf
    cdef double acc, wf
    for j in range(nlev):
        cur[j] = ptr[j]
    while c0 < m:
        c1 = min(c0 + width, m)
        c0 = c1
        for j in range(nlev):
            end = ptr[j + 1]
            f = cur[j]
            while f < end and row[f] < c1:
                wf = We[f]
                rf = row[f]
                if subtract:
                    for e in range(f, end):
                        S[rf, row[e]] = S[rf, row[e]] - wf * We[e]
                else:
                    acc = 0.0
                    for e in range(f + 1, end):
                        acc = acc + We[e] * S[rf, row[e]]
                    out[j, 0, 0] = out[j, 0, 0] + wf * (wf * S[rf, rf] + 2.0 * acc)
                f = f + 1
            cur[j] = f


def scalar_lt_times_first(
    const int64_t[::1] ptr,
    const int64_t[::1] row,
    const double[::1] We,
    const double[:, ::1] x2,
    double[:, :, ::1] r1,
):
    """lt_times_first for scalar terms with W in entry order (We, from scalar_schur):
    r1[j, 0, c] -= sum_e We[e] x2[row[e], c] over the entries e of level j."""
    cdef Py_ssize_t nlev = r1.shape[0], k = r1.shape[2]
    cdef Py_ssize_t j, e, c
    cdef double w
    with nogil:
        for j in range(nlev):
            for e in range(ptr[j], ptr[j + 1]):
                w = We[e]
                for c in range(k):
                    r1[j, 0, c] -= w * x2[row[e], c]


def lt_times_first(
    const int64_t[::1] ptr,
    const int64_t[::1] row,
    const int64_t[::1] qe,
    const int64_t[::1] ooff,
    const double[::1] W,
    const double[:, ::1] x2,
    double[:, :, ::1] r1,
):
    """r1[j] -= L21_j' x2, i.e. r1[j, b, c] -= sum_e sum_a W_e[a, b] x2[row[e] + a, c]."""
    cdef Py_ssize_t nlev = r1.shape[0], q1 = r1.shape[1], k = r1.shape[2]
    cdef Py_ssize_t j, e, a, b, c
    with nogil:
        for j in range(nlev):
            for e in range(ptr[j], ptr[j + 1]):
                for a in range(qe[e]):
                    for b in range(q1):
                        for c in range(k):
                            r1[j, b, c] -= W[ooff[e] + a * q1 + b] * x2[row[e] + a, c]


def selinv_first(
    const int64_t[::1] ptr,
    const int64_t[::1] row,
    const int64_t[::1] qe,
    const int64_t[::1] ooff,
    const double[::1] W,
    const double[:, ::1] Z22,
    const double[:, :, ::1] L11inv,
    double[::1] Z21,
    double[:, :, ::1] M,
):
    """The selected inverse (Takahashi) below term 1, on the pattern of L21.

    Z21_e := -(sum_f Z22[rows e, rows f] W_f) L11_j^{-1} for the blocks e, f of level j
    (q_u x q1 row-major at ooff[e], as W); M[j] := sum_e Z21_e' W_e (q1 x q1), so that the
    diagonal block of A^{-1} is L11_j^{-T} L11_j^{-1} - M[j] L11_j^{-1}.  Z22 = S^{-1}, both
    triangles filled.
    """
    cdef Py_ssize_t nlev = M.shape[0], q1 = M.shape[1]
    cdef Py_ssize_t j, e, f, a, b, c, d
    cdef double acc
    with nogil:
        for j in range(nlev):
            for e in range(ptr[j], ptr[j + 1]):
                for a in range(qe[e]):
                    for b in range(q1):  # (Z22 L21)[row e + a, b] over the blocks of level j
                        acc = 0.0
                        for f in range(ptr[j], ptr[j + 1]):
                            for d in range(qe[f]):
                                acc = acc + Z22[row[e] + a, row[f] + d] * W[ooff[f] + d * q1 + b]
                        Z21[ooff[e] + a * q1 + b] = acc
                    for b in range(q1):  # times -L11_j^{-1}, in place (row a of block e)
                        acc = 0.0
                        for c in range(b, q1):
                            acc = acc + Z21[ooff[e] + a * q1 + c] * L11inv[j, c, b]
                        Z21[ooff[e] + a * q1 + b] = -acc
            for a in range(q1):
                for b in range(q1):
                    acc = 0.0
                    for e in range(ptr[j], ptr[j + 1]):
                        for c in range(qe[e]):
                            acc = acc + Z21[ooff[e] + c * q1 + a] * W[ooff[e] + c * q1 + b]
                    M[j, a, b] = acc


def first_factors(
    const double[:, ::1] T1,
    const double[:, :, ::1] L11,
    double[:, :, ::1] L11inv,
    double[:, :, ::1] R,
):
    """Per level j of term 1: L11inv[j] := L11_j^{-1} (lower) and R[j] := T1 L11_j^{-T}."""
    cdef Py_ssize_t nlev = L11.shape[0], q = L11.shape[1]
    cdef Py_ssize_t j, a, b, c
    cdef double acc
    with nogil:
        for j in range(nlev):
            for b in range(q):  # column b of the inverse: forward substitution on e_b
                for a in range(q):
                    if a < b:
                        L11inv[j, a, b] = 0.0
                        continue
                    acc = 1.0 if a == b else 0.0
                    for c in range(b, a):
                        acc = acc - L11[j, a, c] * L11inv[j, c, b]
                    L11inv[j, a, b] = acc / L11[j, a, a]
            for a in range(q):  # R[a, b] = sum_c T1[a, c] L11inv[b, c], c <= min(a, b)
                for b in range(q):
                    acc = 0.0
                    for c in range(min(a, b) + 1):
                        acc = acc + T1[a, c] * L11inv[j, b, c]
                    R[j, a, b] = acc
