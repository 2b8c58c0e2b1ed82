"""The profiled objective and its gradient for scalar random-effects terms ((1 | a) + (1 | b)
+ ...), one evaluation a single call with no Python in between: the per-response
inner loop of lmer_many, where the factorization objects' Python overhead (tens of
microseconds per evaluation) would dominate for small designs.

Same algebra as lmmfast/_factor/crossed.py (CrossedFactor), scalar case.  Term 1 has l1
levels, the others m effects together (rows r of the "rest"), theta_k the term's scale:

    L1_j   = sqrt(theta_1^2 d1_j + 1)                    d1 = diag(Z_1'WZ_1)
    W_e    = theta_1 theta_k(e) o_e / L1_j(e)            o_e: Z_1'WZ_k entries (level j, row r)
    S      = theta theta' * B22 + I - sum_j w_j w_j'     B22 = Z_rest'W Z_rest (m x m)
    c1_j   = theta_1 Z_1j'W[X y] / L1_j
    c2     = L22^{-1} (theta Z_rest'W[X y] - sum_j w_j c1_j'),   L22 L22' = S
    R'R    = [X y]'W[X y] - sum_j c1_j c1_j' - c2'c2    R upper: R_X, and sqrt(pwrss) last
    ldL2   = sum_j log L1_j^2 + log|L22|^2

The gradient is CrossedFactor.gradient's (log-determinant traces, pwrss by the envelope
theorem, REML's log|X'V^{-1}X|).  Arrays are row-major; the dense parts are small (m is
at most a few hundred here), so the triangular algebra is plain loops.
"""

from libc.math cimport log, sqrt
from libc.stdint cimport int64_t

import numpy as np


cdef class ScalarCrossed:
    """The shared design of scalar terms; set_response() then evaluate() per theta."""

    cdef Py_ssize_t l1, m, p1, K
    cdef const double[::1] d1, o
    cdef const int64_t[::1] ptr, row, kterm, kr, nlev
    cdef const double[:, ::1] B22
    cdef const double[:, ::1] Z1, Z2, XtXy
    cdef double[::1] L1, W, u, b, s, work
    cdef double[:, ::1] c1, S, c2, Sinv, V, H, Gv, P
    cdef public object R  # (p1, p1) numpy: R of the last evaluation
    cdef public object theta, grad  # (K,) numpy: evaluate() reads theta, writes grad
    cdef double[:, ::1] Rv
    cdef double[::1] thv, gv
    cdef public double ldL2, ldRX2, pwrss

    def __init__(self, const double[::1] d1, const int64_t[::1] ptr, const int64_t[::1] row,
                 const int64_t[::1] kterm, const double[::1] o, const double[:, ::1] B22,
                 const int64_t[::1] kr, const int64_t[::1] nlev, Py_ssize_t p1):
        self.l1, self.m, self.p1, self.K = d1.shape[0], B22.shape[0], p1, nlev.shape[0]
        self.d1, self.ptr, self.row, self.kterm, self.o = d1, ptr, row, kterm, o
        self.B22, self.kr, self.nlev = B22, kr, nlev
        q = self.l1 + self.m
        self.L1, self.W = np.zeros(self.l1), np.zeros(o.shape[0])
        self.u, self.b, self.s = np.zeros(q), np.zeros(q), np.zeros(q)
        self.work = np.zeros(max(q, p1))
        self.c1, self.c2 = np.zeros((self.l1, p1)), np.zeros((self.m, p1))
        self.S, self.Sinv = np.zeros((self.m, self.m)), np.zeros((self.m, self.m))
        self.V, self.H, self.Gv = (np.zeros((q, p1)) for _ in range(3))
        self.P = np.zeros((p1, p1))
        self.R = np.zeros((p1, p1))
        self.Rv = self.R
        self.theta, self.grad = np.zeros(self.K), np.zeros(self.K)
        self.thv, self.gv = self.theta, self.grad

    def set_response(self, const double[:, ::1] Z1, const double[:, ::1] Z2,
                     const double[:, ::1] XtXy):
        """Z_1'W[X y] (l1, p1), Z_rest'W[X y] (m, p1), [X y]'W[X y] (p1, p1)."""
        self.Z1, self.Z2, self.XtXy = Z1, Z2, XtXy

    def evaluate(self, bint want_grad, bint reml, double nmp):
        """Factor at self.theta (sets ldL2, ldRX2, pwrss, R); with want_grad also self.grad.
        Returns 0, or 1 if S and 2 if the Schur complement of [X y] is not positive definite.
        (No array arguments: converting them costs more than a small evaluation.)"""
        cdef int status
        with nogil:
            status = self._factor(self.thv)
            if status == 0 and want_grad:
                status = self._gradient(self.thv, self.gv, reml, nmp)
        return status

    cdef int _factor(self, const double[::1] theta) noexcept nogil:
        cdef Py_ssize_t j, e, f, a, c, k, l1 = self.l1, m = self.m, p1 = self.p1
        cdef double t1 = theta[0], Lj, acc
        cdef double ld = 0.0
        for j in range(l1):
            Lj = sqrt(t1 * t1 * self.d1[j] + 1.0)
            self.L1[j] = Lj
            ld += 2.0 * log(Lj)
            for c in range(p1):
                self.c1[j, c] = t1 * self.Z1[j, c] / Lj
            for e in range(self.ptr[j], self.ptr[j + 1]):
                self.W[e] = t1 * theta[self.kterm[e]] * self.o[e] / Lj
        # S = theta theta' * B22 + I - sum_j w_j w_j' (lower), rhs = theta Z2 - sum_j w_j c1_j'
        for a in range(m):
            for c in range(a + 1):
                self.S[a, c] = theta[self.kr[a]] * theta[self.kr[c]] * self.B22[a, c]
            self.S[a, a] += 1.0
            for c in range(p1):
                self.c2[a, c] = theta[self.kr[a]] * self.Z2[a, c]
        for j in range(l1):
            for e in range(self.ptr[j], self.ptr[j + 1]):
                a = self.row[e]
                for f in range(self.ptr[j], self.ptr[j + 1]):
                    if self.row[f] <= a:
                        self.S[a, self.row[f]] -= self.W[e] * self.W[f]
                for c in range(p1):
                    self.c2[a, c] -= self.W[e] * self.c1[j, c]
        if _cholesky(self.S, m) != 0:
            return 1
        for a in range(m):
            ld += 2.0 * log(self.S[a, a])
        _forward(self.S, m, self.c2, p1)  # c2 = L22^{-1} rhs
        self.ldL2 = ld
        # R'R = XtXy - c1'c1 - c2'c2, R upper (lower factor of the same, transposed)
        for a in range(p1):
            for c in range(a + 1):
                acc = self.XtXy[a, c]
                for j in range(l1):
                    acc -= self.c1[j, a] * self.c1[j, c]
                for k in range(m):
                    acc -= self.c2[k, a] * self.c2[k, c]
                self.Rv[a, c] = acc
        if _cholesky(self.Rv, p1) != 0:
            return 2
        for a in range(p1):  # transpose into the upper triangle
            for c in range(a):
                self.Rv[c, a] = self.Rv[a, c]
                self.Rv[a, c] = 0.0
        self.ldRX2 = 0.0
        for a in range(p1 - 1):
            self.ldRX2 += 2.0 * log(self.Rv[a, a])
        self.pwrss = self.Rv[p1 - 1, p1 - 1] * self.Rv[p1 - 1, p1 - 1]
        return 0

    cdef void _back(self, Py_ssize_t ncol, Py_ssize_t col0) noexcept nogil:
        """V[:, :ncol] = L^{-T} [c1; c2][:, col0:col0+ncol], by levels (u or v)."""
        cdef Py_ssize_t j, e, a, c, l1 = self.l1, m = self.m
        for a in range(m):
            for c in range(ncol):
                self.V[l1 + a, c] = self.c2[a, col0 + c]
        _backward(self.S, m, self.V, l1, ncol)
        for j in range(l1):
            for c in range(ncol):
                self.V[j, c] = self.c1[j, col0 + c]
            for e in range(self.ptr[j], self.ptr[j + 1]):
                for c in range(ncol):
                    self.V[j, c] -= self.W[e] * self.V[l1 + self.row[e], c]
            for c in range(ncol):
                self.V[j, c] /= self.L1[j]

    cdef void _G_times(self, const double[::1] theta, Py_ssize_t ncol) noexcept nogil:
        """Gv = Z'WZ (theta * V) for the first ncol columns."""
        cdef Py_ssize_t j, e, a, c, r, l1 = self.l1, m = self.m
        cdef double t1 = theta[0]
        for j in range(l1):
            for c in range(ncol):
                self.Gv[j, c] = self.d1[j] * t1 * self.V[j, c]
        for a in range(m):
            for c in range(ncol):
                self.Gv[l1 + a, c] = 0.0
            for r in range(m):
                for c in range(ncol):
                    self.Gv[l1 + a, c] += (self.B22[a, r] * theta[self.kr[r]]
                                           * self.V[l1 + r, c])
        for j in range(l1):
            for e in range(self.ptr[j], self.ptr[j + 1]):
                r = self.row[e]
                for c in range(ncol):
                    self.Gv[j, c] += self.o[e] * theta[self.kr[r]] * self.V[l1 + r, c]
                    self.Gv[l1 + r, c] += self.o[e] * t1 * self.V[j, c]

    cdef int _gradient(self, const double[::1] theta, double[::1] g, bint reml,
                       double nmp) noexcept nogil:
        cdef Py_ssize_t j, e, f, a, c, k, r, l1 = self.l1, m = self.m, p1 = self.p1
        cdef Py_ssize_t p = p1 - 1, K = self.K
        cdef double acc, tr1, scale
        cdef double* beta = &self.work[0]
        # S^{-1} from L22 (lower): Sinv = L22^{-T} L22^{-1}
        for a in range(m):
            for c in range(m):
                self.Sinv[a, c] = 1.0 if a == c else 0.0
        _forward(self.S, m, self.Sinv, m)
        _backward(self.S, m, self.Sinv, 0, m)
        for k in range(K):
            g[k] = 0.0
        tr1 = 0.0
        for j in range(l1):  # (A^{-1})_jj = (1 + w_j' S^{-1} w_j) / L1_j^2
            acc = 1.0
            for e in range(self.ptr[j], self.ptr[j + 1]):
                for f in range(self.ptr[j], self.ptr[j + 1]):
                    acc += self.W[e] * self.Sinv[self.row[e], self.row[f]] * self.W[f]
            tr1 += acc / (self.L1[j] * self.L1[j])
        g[0] = tr1
        for a in range(m):
            g[self.kr[a]] += self.Sinv[a, a]
        for k in range(K):
            g[k] = 2.0 / theta[k] * (self.nlev[k] - g[k]) if theta[k] > 0 else 0.0
        # beta = R_X^{-1} R[:p, p]
        for a in range(p - 1, -1, -1):
            acc = self.Rv[a, p]
            for c in range(a + 1, p):
                acc -= self.Rv[a, c] * beta[c]
            beta[a] = acc / self.Rv[a, a]
        # u = L^{-T}(c_y - c_X beta): put c_y - c_X beta in column p of c1, c2 (then restore)
        for j in range(l1):
            acc = self.c1[j, p]
            for c in range(p):
                acc -= self.c1[j, c] * beta[c]
            self.u[j] = acc
        for a in range(m):
            acc = self.c2[a, p]
            for c in range(p):
                acc -= self.c2[a, c] * beta[c]
            self.u[l1 + a] = acc
        for j in range(l1):
            self.c1[j, p], self.u[j] = self.u[j], self.c1[j, p]
        for a in range(m):
            self.c2[a, p], self.u[l1 + a] = self.u[l1 + a], self.c2[a, p]
        self._back(1, p)
        for j in range(l1):
            self.c1[j, p] = self.u[j]
        for a in range(m):
            self.c2[a, p] = self.u[l1 + a]
        for r in range(l1 + m):
            self.u[r] = self.V[r, 0]
        # s = Z'W(y - X beta) - Z'WZ Lambda u;  g_k -= 2 scale sum_{r in k} s_r u_r
        self._G_times(theta, 1)
        scale = nmp / self.pwrss
        for r in range(l1 + m):
            acc = self.Z1[r, p] if r < l1 else self.Z2[r - l1, p]
            for c in range(p):
                acc -= (self.Z1[r, c] if r < l1 else self.Z2[r - l1, c]) * beta[c]
            acc -= self.Gv[r, 0]
            k = 0 if r < l1 else self.kr[r - l1]
            g[k] -= 2.0 * scale * acc * self.u[r]
        if reml and p > 0:
            # P = (R_X'R_X)^{-1}; H = Z'WX - Z'WZ Lambda L^{-T} c_X; g_k -= 2 theta_k tr(H_k P H_k')
            _upper_inverse_gram(self.Rv, p, self.P)
            self._back(p, 0)
            self._G_times(theta, p)
            for r in range(l1 + m):
                for c in range(p):
                    self.H[r, c] = ((self.Z1[r, c] if r < l1 else self.Z2[r - l1, c])
                                    - self.Gv[r, c])
                acc = 0.0
                for a in range(p):
                    for c in range(p):
                        acc += self.H[r, a] * self.P[a, c] * self.H[r, c]
                k = 0 if r < l1 else self.kr[r - l1]
                g[k] -= 2.0 * theta[k] * acc
        return 0


cdef int _cholesky(double[:, ::1] A, Py_ssize_t n) noexcept nogil:
    """A := L (lower, in place; the strict upper triangle is not read)."""
    cdef Py_ssize_t i, j, k
    cdef double acc
    for j in range(n):
        acc = A[j, j]
        for k in range(j):
            acc -= A[j, k] * A[j, k]
        if not acc > 0.0:
            return 1
        A[j, j] = sqrt(acc)
        for i in range(j + 1, n):
            acc = A[i, j]
            for k in range(j):
                acc -= A[i, k] * A[j, k]
            A[i, j] = acc / A[j, j]
    return 0


cdef void _forward(const double[:, ::1] L, Py_ssize_t n, double[:, ::1] B,
                   Py_ssize_t ncol) noexcept nogil:
    """B[:n, :ncol] := L^{-1} B (L lower)."""
    cdef Py_ssize_t i, k, c
    for i in range(n):
        for k in range(i):
            for c in range(ncol):
                B[i, c] -= L[i, k] * B[k, c]
        for c in range(ncol):
            B[i, c] /= L[i, i]


cdef void _backward(const double[:, ::1] L, Py_ssize_t n, double[:, ::1] B, Py_ssize_t r0,
                    Py_ssize_t ncol) noexcept nogil:
    """B[r0:r0+n, :ncol] := L^{-T} B (L lower)."""
    cdef Py_ssize_t i, k, c
    for i in range(n - 1, -1, -1):
        for k in range(i + 1, n):
            for c in range(ncol):
                B[r0 + i, c] -= L[k, i] * B[r0 + k, c]
        for c in range(ncol):
            B[r0 + i, c] /= L[i, i]


cdef void _upper_inverse_gram(const double[:, ::1] R, Py_ssize_t p,
                              double[:, ::1] P) noexcept nogil:
    """P = (R'R)^{-1} = R^{-1} R^{-T} for the leading p x p upper block of R."""
    cdef Py_ssize_t i, j, k
    cdef double acc
    for j in range(p):  # P := R^{-1} (upper), column by column
        for i in range(p):
            P[i, j] = 0.0
        P[j, j] = 1.0 / R[j, j]
        for i in range(j - 1, -1, -1):
            acc = 0.0
            for k in range(i + 1, j + 1):
                acc += R[i, k] * P[k, j]
            P[i, j] = -acc / R[i, i]
    for i in range(p):  # P := P P' (in place from the top-left: row i needs rows >= i)
        for j in range(i, p):
            acc = 0.0
            for k in range(j, p):
                acc += P[i, k] * P[j, k]
            P[i, j] = acc
    for i in range(p):
        for j in range(i):
            P[i, j] = P[j, i]
