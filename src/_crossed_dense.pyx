"""Kernels of the crossed factor's dense path (lmmfast/_factor/crossed.py, CrossedFactor
with a dense L21), where the Schur complement is formed from H = P'P,

    P = L11^{-1} Lambda_1' G12          (N1 x m, per level of term 1)
    S = A22 + I - Lambda_2' H Lambda_2  (H = G21 Lambda_1 A11^{-1} Lambda_1' G12)

and the gradient of log|A| needs only small blocks and contractions (no m x N1 product
by S^{-1}).  The effects of the later terms are split into blocks, one per level:
block k has rows bstart[k]:bstart[k + 1] of S, and its term's T (q x q, row-major)
starts at Tflat[btoff[k]].  S, H and S^{-1} are symmetric; only their lower triangles
(C order) are read or written.
"""

from libc.stdint cimport int64_t
from scipy.linalg.cython_blas cimport ddot, dgemm


def congruence_subtract(
    const double[:, ::1] H,
    const double[:, ::1] Y,
    const int64_t[::1] bstart,
    const int64_t[::1] btoff,
    const double[::1] Tflat,
    const double[::1] Dflat,
    bint assign,
    double[:, ::1] work,
    double[:, ::1] S,
):
    """S -= Lambda' H Lambda on the lower triangle: S_kl -= T_k' H_kl T_l for blocks
    k >= l, from Y = H Lambda (its blocks below the diagonal; H read on the diagonal
    blocks, lower half).  assign: S := A22 + I - Lambda' H Lambda instead, for an A22
    without blocks off the diagonal (S_kl := -T_k' H_kl T_l, S_kk := T_k'(D_k - H_kk)T_k
    + I with D_k = Dflat[...], the block of G on level k, row-major).  work: (1, >=
    qmax^2) scratch.

    Per block row k (rows rk:rk + q_k): S[rk:, :rk] -= T_k' Y[rk:, :rk] (one BLAS dgemm)."""
    cdef Py_ssize_t nb = bstart.shape[0] - 1
    cdef Py_ssize_t k, a, c, d, e, rk, qk, tk, x = 0
    cdef int w, qki, ldy = <int> Y.shape[1], lds = <int> S.shape[1]
    cdef double minus = -1.0, beta = 0.0 if assign else 1.0
    cdef double h, acc
    with nogil:
        for k in range(nb):
            rk = bstart[k]
            qk = bstart[k + 1] - rk
            qki = <int> qk
            tk = btoff[k]
            w = <int> rk
            if w > 0:  # C order: S_blk (qk x w) -= T_k' Y_blk; Fortran: S_blk' -= Y_blk' T_k
                dgemm("N", "T", &w, &qki, &qki, &minus, <double *> &Y[rk, 0], &ldy,
                      <double *> &Tflat[tk], &qki, &beta, &S[rk, 0], &lds)
            # the diagonal block: work = (D_k - H_kk) T_k (or -H_kk T_k), H_kk from below
            for a in range(qk):
                for d in range(qk):
                    acc = 0.0
                    for c in range(qk):
                        h = H[rk + a, rk + c] if a >= c else H[rk + c, rk + a]
                        if assign:
                            h = Dflat[x + a * qk + c] - h
                        else:
                            h = -h
                        acc = acc + h * Tflat[tk + c * qk + d]
                    work[0, a * qk + d] = acc
            x += qk * qk
            for e in range(qk):  # S_kk (or I) += T_k' work, lower half
                for d in range(e + 1):
                    acc = 0.0
                    for a in range(qk):
                        acc = acc + Tflat[tk + a * qk + e] * work[0, a * qk + d]
                    if assign:
                        S[rk + e, rk + d] = acc + (1.0 if e == d else 0.0)
                    else:
                        S[rk + e, rk + d] += acc


def level_grams(const double[:, ::1] W, double[:, :, ::1] K):
    """K[j] := W_j W_j' for the row blocks W_j = W[j q : (j + 1) q] (q = K.shape[1])."""
    cdef Py_ssize_t nlev = K.shape[0], q = K.shape[1]
    cdef int n = <int> W.shape[1], one = 1
    cdef Py_ssize_t j, a, b
    with nogil:
        for j in range(nlev):
            for a in range(q):
                for b in range(a + 1):
                    K[j, a, b] = ddot(&n, <double *> &W[j * q + a, 0], &one,
                                      <double *> &W[j * q + b, 0], &one)
                    K[j, b, a] = K[j, a, b]


def first_term_gradient(
    const double[:, :, ::1] L11inv,
    const double[:, ::1] T1,
    const double[:, :, ::1] D1,
    const double[:, :, ::1] K,
    double[:, ::1] work,
    double[:, ::1] out,
):
    """out := sum_j E_j D_j + E_j K_j (T1 E_j D_j - I), E_j = A11_j^{-1} T1' with
    A11_j^{-1} = L11inv_j' L11inv_j (L11inv_j lower): half of term 1's d log|A| / d T1.
    work: (4, >= q^2) scratch."""
    cdef Py_ssize_t nlev = L11inv.shape[0], q = L11inv.shape[1]
    cdef Py_ssize_t j, a, b, c
    cdef double acc
    for a in range(q):
        for b in range(q):
            out[a, b] = 0.0
    with nogil:
        for j in range(nlev):
            for a in range(q):  # work[0] = A11_j^{-1} = L11inv_j' L11inv_j
                for b in range(q):
                    acc = 0.0
                    for c in range(a if a > b else b, q):
                        acc = acc + L11inv[j, c, a] * L11inv[j, c, b]
                    work[0, a * q + b] = acc
            for a in range(q):  # work[1] = E = A11_j^{-1} T1'
                for b in range(q):
                    acc = 0.0
                    for c in range(q):
                        acc = acc + work[0, a * q + c] * T1[b, c]
                    work[1, a * q + b] = acc
            for a in range(q):  # work[2] = E D_j;  out += E D_j
                for b in range(q):
                    acc = 0.0
                    for c in range(q):
                        acc = acc + work[1, a * q + c] * D1[j, c, b]
                    work[2, a * q + b] = acc
                    out[a, b] += acc
            for a in range(q):  # work[0] = T1 E D_j - I
                for b in range(q):
                    acc = -1.0 if a == b else 0.0
                    for c in range(q):
                        acc = acc + T1[a, c] * work[2, c * q + b]
                    work[0, a * q + b] = acc
            for a in range(q):  # work[3] = E K_j
                for b in range(q):
                    acc = 0.0
                    for c in range(q):
                        acc = acc + work[1, a * q + c] * K[j, c, b]
                    work[3, a * q + b] = acc
            for a in range(q):  # out += E K_j (T1 E D_j - I)
                for b in range(q):
                    acc = 0.0
                    for c in range(q):
                        acc = acc + work[3, a * q + c] * work[0, c * q + b]
                    out[a, b] += acc


def rest_gradient(
    const double[:, ::1] Sinv,
    const double[:, ::1] H,
    const int64_t[::1] bstart,
    const int64_t[::1] btoff,
    const int64_t[::1] bterm,
    const int64_t[::1] tstart,
    const int64_t[::1] tq,
    const int64_t[::1] ttoff,
    const double[::1] Tflat,
    const double[::1] Dflat,
    double[::1] zbuf,
    double[::1] hbuf,
    double[:, ::1] M,
    double[:, ::1] work,
    double[:, :, ::1] out,
):
    """out[t] := sum_{k in t} Z_kk T_t'(D_k - H_kk) - sum_{k in t, l != k} Z_kl T_l' H_lk
    (Z = Sinv = S^{-1}; D_k = Dflat[...], the block of G on level k, row-major): half of
    the later terms' d log|A| / d T but their pairs' G blocks.  tstart, tq, ttoff: each
    term's first row, q and T offset; zbuf, hbuf: (>= qmax m) scratch; M: (nterm^2,
    >= qmax^4) scratch; work (1, >= qmax^2).

    For k > l (terms t_k, t_l), M_(t_k, t_l)[a, c, b, d] = sum Z[k a, l c] H[k b, l d]
    (per block row k and term t_l one dgemm on copies of the rows), then
        out[t_k][a, b] -= sum_cd T_l[d, c] M[a, c, b, d]    (Z_kl T_l' H_lk)
        out[t_l][c, d] -= sum_ae T_k[e, a] M[a, c, e, d]    (Z_lk T_k' H_kl)."""
    cdef Py_ssize_t nb = bstart.shape[0] - 1, nt = tq.shape[0]
    cdef Py_ssize_t k, j, a, b, c, d, e, rk, qk, ql, tk, tl, p, x, c0, c1, i
    cdef int Q, nl
    cdef double s, acc, one = 1.0
    with nogil:
        for p in range(M.shape[0]):
            for x in range(M.shape[1]):
                M[p, x] = 0.0
        for tk in range(nt):
            for a in range(tq[tk]):
                for b in range(tq[tk]):
                    out[tk, a, b] = 0.0
        x = 0
        for k in range(nb):
            rk = bstart[k]
            qk = bstart[k + 1] - rk
            tk = bterm[k]
            for tl in range(nt):
                c0 = tstart[tl]
                c1 = tstart[tl + 1] if tstart[tl + 1] < rk else rk
                if c1 <= c0:
                    break
                ql = tq[tl]
                Q = <int> (qk * ql)
                nl = <int> ((c1 - c0) // ql)
                for a in range(qk):  # zbuf[j, a, c] = Z[rk + a, c0 + j ql + c], hbuf from H
                    for j in range(nl):
                        for c in range(ql):
                            i = j * Q + a * ql + c
                            zbuf[i] = Sinv[rk + a, c0 + j * ql + c]
                            hbuf[i] = H[rk + a, c0 + j * ql + c]
                p = tk * nt + tl
                dgemm("N", "T", &Q, &Q, &nl, &one, &hbuf[0], &Q, &zbuf[0], &Q, &one,
                      &M[p, 0], &Q)
            # the diagonal block: out[t_k] += Z_kk T_k'(D_k - H_kk), both halves from below
            for d in range(qk):  # work = T_k'(D_k - H_kk)
                for b in range(qk):
                    acc = 0.0
                    for c in range(qk):
                        s = H[rk + c, rk + b] if c >= b else H[rk + b, rk + c]
                        acc = acc + Tflat[btoff[k] + c * qk + d] * (Dflat[x + c * qk + b] - s)
                    work[0, d * qk + b] = acc
            x += qk * qk
            for a in range(qk):
                for b in range(qk):
                    acc = 0.0
                    for d in range(qk):
                        s = Sinv[rk + a, rk + d] if a >= d else Sinv[rk + d, rk + a]
                        acc = acc + s * work[0, d * qk + b]
                    out[tk, a, b] += acc
        for tk in range(nt):
            for tl in range(nt):
                p = tk * nt + tl
                qk = tq[tk]
                ql = tq[tl]
                for a in range(qk):
                    for b in range(qk):
                        acc = 0.0
                        for c in range(ql):
                            for d in range(ql):
                                acc = acc + Tflat[ttoff[tl] + d * ql + c] * M[
                                    p, ((a * ql + c) * qk + b) * ql + d
                                ]
                        out[tk, a, b] -= acc
                for c in range(ql):
                    for d in range(ql):
                        acc = 0.0
                        for a in range(qk):
                            for e in range(qk):
                                acc = acc + Tflat[ttoff[tk] + e * qk + a] * M[
                                    p, ((a * ql + c) * qk + e) * ql + d
                                ]
                        out[tl, c, d] -= acc
