"""lmer_many, one grouping factor with a q-column term (x + (1 + x | g)): the profiled
objective's pieces and its gradient at theta in one call, without the GIL.

Per level j (B_j = Z_j'WZ_j, T lower triangular from theta, column-major):
    L_j L_j' = T'B_j T + I,   c_j = L_j^{-1} T'Z_j'W[X y],   C = sum_j c_j'c_j
    R'R = [X y]'W[X y] - C  (R upper),  ldL2 = 2 sum log diag L_j,  ldRX2, pwrss = R[p, p]^2
and the gradient as src/_blockdiag.pyx's (sum_j 2 M_j^{-1}T'B_j - 2 scale u_j s_j'
- 2 [reml] T'H_j P H_j', P = (R_X'R_X)^{-1}), the theta at T[a, b] reading F[b, a].
"""

cimport cython
from libc.math cimport log, sqrt

import numpy as np


@cython.final
cdef class BlockedKernel:
    """One thread's work arrays; set_response, then evaluate at self.theta."""

    cdef public object theta, grad, R
    cdef public double ldL2, ldRX2, pwrss
    cdef double[:, :, ::1] B, ZXY, L, cu
    cdef double[:, ::1] XtXy, T, F, work, P, Ri, Rv
    cdef double[::1] th, g, beta
    cdef Py_ssize_t nlev, Q, p1

    def __init__(self, B, Py_ssize_t p1):
        self.B = np.ascontiguousarray(B, dtype=np.float64)
        self.nlev, self.Q, self.p1 = self.B.shape[0], self.B.shape[1], p1
        Q = self.Q
        self.theta = np.zeros(Q * (Q + 1) // 2)
        self.grad = np.zeros(Q * (Q + 1) // 2)
        self.R = np.zeros((p1, p1))
        self.th, self.g, self.Rv = self.theta, self.grad, self.R
        self.L = np.zeros((self.nlev, Q, Q))
        self.cu = np.zeros((self.nlev, Q, p1))
        self.T = np.zeros((Q, Q))
        self.F = np.zeros((Q, Q))
        self.work = np.zeros((max(3 + 2 * p1, Q), Q))
        self.P = np.zeros((p1, p1))
        self.Ri = np.zeros((p1, p1))
        self.beta = np.zeros(p1)

    def set_response(self, ZXY, XtXy):
        """Z'W[X y] by level (nlev, Q, p + 1) and [X y]'W[X y] (p + 1, p + 1)."""
        self.ZXY, self.XtXy = ZXY, XtXy

    def evaluate(self, bint want_grad, bint reml, double nmp):
        """0: done; 1: a block not positive definite; 2: [X y]'s Schur complement not."""
        cdef int status
        with nogil:
            status = self._evaluate(want_grad, reml, nmp)
        return status

    cdef int _evaluate(self, bint want_grad, bint reml, double nmp) noexcept nogil:
        cdef Py_ssize_t Q = self.Q, p1 = self.p1, p = p1 - 1
        cdef Py_ssize_t j, a, b, c, k
        cdef double acc, ld = 0.0
        k = 0
        for b in range(Q):
            for a in range(Q):
                self.T[a, b] = 0.0
        for b in range(Q):
            for a in range(b, Q):
                self.T[a, b] = self.th[k]
                k += 1
        for a in range(p1):
            for b in range(p1):
                self.Rv[a, b] = self.XtXy[a, b]
        for j in range(self.nlev):
            if not self._level(j, &ld):
                return 1
        self.ldL2 = ld
        # R'R = XtXy - C (lower Cholesky in Rv's lower half, then transposed)
        for a in range(p1):
            for b in range(a + 1):
                acc = self.Rv[a, b]
                for c in range(b):
                    acc = acc - self.Rv[a, c] * self.Rv[b, c]
                if a == b:
                    if not acc > 0.0:
                        return 2
                    self.Rv[a, a] = sqrt(acc)
                else:
                    self.Rv[a, b] = acc / self.Rv[b, b]
        for a in range(p1):
            for b in range(a + 1, p1):
                self.Rv[a, b] = self.Rv[b, a]
                self.Rv[b, a] = 0.0
        self.ldRX2 = 0.0
        for a in range(p):
            self.ldRX2 += 2.0 * log(self.Rv[a, a])
        self.pwrss = self.Rv[p, p] * self.Rv[p, p]
        if want_grad:
            self._gradient(reml, nmp / self.pwrss)
        return 0

    cdef bint _level(self, Py_ssize_t j, double* ld) noexcept nogil:
        """L_j, c_j; C's lower half subtracted from Rv."""
        cdef Py_ssize_t Q = self.Q, p1 = self.p1
        cdef Py_ssize_t a, b, c, d
        cdef double acc
        # work[0..Q) rows: B_j T
        for a in range(Q):
            for b in range(Q):
                acc = 0.0
                for c in range(b, Q):
                    acc = acc + self.B[j, a, c] * self.T[c, b]
                self.work[a, b] = acc
        for a in range(Q):  # M = T'(B T) + I, lower half, factored in place
            for b in range(a + 1):
                acc = 1.0 if a == b else 0.0
                for c in range(a, Q):
                    acc = acc + self.T[c, a] * self.work[c, b]
                for d in range(b):
                    acc = acc - self.L[j, a, d] * self.L[j, b, d]
                if a == b:
                    if not acc > 0.0:
                        return False
                    self.L[j, a, a] = sqrt(acc)
                    ld[0] += 2.0 * log(self.L[j, a, a])
                else:
                    self.L[j, a, b] = acc / self.L[j, b, b]
        for c in range(p1):  # c_j = L_j^{-1} T' ZXY_j
            for a in range(Q):
                acc = 0.0
                for d in range(a, Q):
                    acc = acc + self.T[d, a] * self.ZXY[j, d, c]
                for d in range(a):
                    acc = acc - self.L[j, a, d] * self.cu[j, d, c]
                self.cu[j, a, c] = acc / self.L[j, a, a]
        for a in range(p1):
            for b in range(a + 1):
                acc = 0.0
                for c in range(Q):
                    acc = acc + self.cu[j, c, a] * self.cu[j, c, b]
                self.Rv[a, b] = self.Rv[a, b] - acc
        return True

    cdef void _gradient(self, bint reml, double scale) noexcept nogil:
        cdef Py_ssize_t Q = self.Q, p = self.p1 - 1
        cdef Py_ssize_t j, a, b, c, k
        cdef double acc
        # beta = R_X^{-1} r;  P = R_X^{-1} R_X^{-T}
        for a in range(p - 1, -1, -1):
            acc = self.Rv[a, p]
            for b in range(a + 1, p):
                acc = acc - self.Rv[a, b] * self.beta[b]
            self.beta[a] = acc / self.Rv[a, a]
        if reml:
            for c in range(p):  # column c of R_X^{-1} (upper) into Ri[:, c]
                for a in range(p - 1, -1, -1):
                    acc = 1.0 if a == c else 0.0
                    for b in range(a + 1, c + 1):
                        acc = acc - self.Rv[a, b] * self.Ri[b, c]
                    self.Ri[a, c] = acc / self.Rv[a, a] if a <= c else 0.0
            for a in range(p):  # P = Ri Ri'
                for b in range(p):
                    acc = 0.0
                    for c in range(max(a, b), p):
                        acc = acc + self.Ri[a, c] * self.Ri[b, c]
                    self.P[a, b] = acc
        for a in range(Q):
            for b in range(Q):
                self.F[a, b] = 0.0
        for j in range(self.nlev):
            self._gradient_level(j, reml, scale)
        k = 0
        for b in range(Q):
            for a in range(b, Q):
                self.g[k] = self.F[b, a]
                k += 1

    cdef void _gradient_level(self, Py_ssize_t j, bint reml, double scale) noexcept nogil:
        """Level j's share of F (as src/_blockdiag.pyx, _gradient_levels)."""
        cdef Py_ssize_t Q = self.Q, p = self.p1 - 1
        cdef Py_ssize_t a, b, c, d
        cdef double acc
        for a in range(Q):  # work[0] := u_j = L_j'^{-1}(c_y - c_X beta)
            acc = self.cu[j, a, p]
            for c in range(p):
                acc = acc - self.cu[j, a, c] * self.beta[c]
            self.work[0, a] = acc
        self._lt_solve(j, 0)
        self._T_times(0, 1)
        for a in range(Q):  # work[2] := s_j = ZXy - ZX beta - B_j T u_j
            acc = self.ZXY[j, a, p]
            for c in range(p):
                acc = acc - self.ZXY[j, a, c] * self.beta[c]
            for b in range(Q):
                acc = acc - self.B[j, a, b] * self.work[1, b]
            self.work[2, a] = acc
        for a in range(Q):
            for b in range(Q):
                self.F[a, b] = self.F[a, b] - 2.0 * scale * self.work[0, a] * self.work[2, b]
        for b in range(Q):  # F += 2 M_j^{-1} T'B_j by columns
            for a in range(Q):
                acc = 0.0
                for c in range(a, Q):
                    acc = acc + self.T[c, a] * self.B[j, c, b]
                self.work[1, a] = acc
            for a in range(Q):  # L_j^{-1}
                acc = self.work[1, a]
                for c in range(a):
                    acc = acc - self.L[j, a, c] * self.work[1, c]
                self.work[1, a] = acc / self.L[j, a, a]
            self._lt_solve(j, 1)
            for a in range(Q):
                self.F[a, b] = self.F[a, b] + 2.0 * self.work[1, a]
        if reml and p > 0:
            for c in range(p):  # H[:, c] = ZX[:, c] - B_j T L_j'^{-1} c_X[:, c] in work[3 + c]
                for a in range(Q):
                    self.work[1, a] = self.cu[j, a, c]
                self._lt_solve(j, 1)
                self._T_times(1, 2)
                for a in range(Q):
                    acc = self.ZXY[j, a, c]
                    for b in range(Q):
                        acc = acc - self.B[j, a, b] * self.work[2, b]
                    self.work[3 + c, a] = acc
            for d in range(p):  # K = (T'H) P in work[3 + p + d]
                for a in range(Q):
                    acc = 0.0
                    for c in range(p):
                        acc = acc + self._TtH(a, c) * self.P[c, d]
                    self.work[3 + p + d, a] = acc
            for a in range(Q):  # F -= 2 K H'
                for b in range(Q):
                    acc = 0.0
                    for d in range(p):
                        acc = acc + self.work[3 + p + d, a] * self.work[3 + d, b]
                    self.F[a, b] = self.F[a, b] - 2.0 * acc

    cdef inline double _TtH(self, Py_ssize_t a, Py_ssize_t c) noexcept nogil:
        cdef double acc = 0.0
        cdef Py_ssize_t d
        for d in range(a, self.Q):
            acc = acc + self.T[d, a] * self.work[3 + c, d]
        return acc

    cdef inline void _lt_solve(self, Py_ssize_t j, Py_ssize_t r) noexcept nogil:
        """work[r] := L_j'^{-1} work[r]."""
        cdef Py_ssize_t a, b
        cdef double acc
        for a in range(self.Q - 1, -1, -1):
            acc = self.work[r, a]
            for b in range(a + 1, self.Q):
                acc = acc - self.L[j, b, a] * self.work[r, b]
            self.work[r, a] = acc / self.L[j, a, a]

    cdef inline void _T_times(self, Py_ssize_t src, Py_ssize_t dst) noexcept nogil:
        """work[dst] := T work[src]."""
        cdef Py_ssize_t a, b
        cdef double acc
        for a in range(self.Q):
            acc = 0.0
            for b in range(a + 1):
                acc = acc + self.T[a, b] * self.work[src, b]
            self.work[dst, a] = acc
