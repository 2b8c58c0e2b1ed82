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

fit_range() runs whole fits, one response after another, without the GIL (lmer_many's
threads each hold a kernel): from theta = 1, quasi-Newton over all of R^K (the objective
depends on theta_k^2 only, so it is even and smooth through 0 and needs no bound; the
Hessian by central differences of the gradient at the start, BFGS updates after), |theta|,
then _polish.newton_polish's projected Newton steps and snap to 0, and
_optimize._leave_boundary's probes of a theta at 0 (1e-3, 0.05) with a restart from a
lower one.  A fit whose Newton decrement exceeds DECREMENT_TOL, or whose factorization
fails, is reported (status != 0) for the caller's Python path.
"""

from libc.math cimport INFINITY, M_PI, fabs, fmax, isfinite, log, sqrt
from libc.stdint cimport int64_t

import numpy as np

# the per-response fit (fit_range): _polish.py's constants, and lmer's restarts
cdef enum:
    KMAX = 8  # terms at most (fixed-size work arrays)
cdef int MAXIT = 200, MAXHALF = 30, STEPS = 3, RESTARTS = 4
cdef double ROUNDING = 1e-13, STEP_TOL = 1e-12, SNAP = 1e-6, DESCEND_STEP = 1e-9
cdef double DECREMENT_TOL = 1e-3


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
    # fit_range(): this thread's copy of one response's blocks, and the objective's constants
    cdef double[:, ::1] z1b, z2b, xyb
    cdef bint reml
    cdef double nobs, nmp, ldW
    cdef int nevals

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
        self.z1b, self.z2b = np.zeros((self.l1, p1)), np.zeros((self.m, p1))
        self.xyb = np.zeros((p1, p1))

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
            # (even in theta_k: also right for theta_k < 0, which fit_range's descent uses)
            g[k] = 2.0 / theta[k] * (self.nlev[k] - g[k]) if theta[k] != 0 else 0.0
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

    # ----- the whole fit of one response, without the GIL (lmer_many) ------------------------
    def fit_range(self, Py_ssize_t lo, Py_ssize_t hi, const unsigned char[::1] todo,
                  const double[:, ::1] ZX1, const double[:, ::1] ZY1,
                  const double[:, ::1] ZX2, const double[:, ::1] ZY2,
                  const double[:, ::1] XtX, const double[:, ::1] XY, const double[::1] yy,
                  bint reml, double nobs, double ldW, int64_t[::1] status,
                  int64_t[::1] nevals, double[:, ::1] theta, double[::1] fmin,
                  double[:, ::1] grad, double[:, :, ::1] hess, double[::1] decrement,
                  double[:, ::1] beta, double[:, ::1] se, double[::1] sigma):
        """Fit responses lo..hi-1 with todo[g] (their blocks: column g of ZY1, ZY2, XY and
        yy[g]; the design's: ZX1 = Z_1'WX, ZX2 = Z_rest'WX, XtX) in one loop without the
        GIL.  status[g] 0: converged, the results are filled in; else the caller refits it
        the Python way.  beta and se have max(p, 1) columns."""
        cdef Py_ssize_t g, p = self.p1 - 1
        if self.K > KMAX:
            raise ValueError(f"at most {KMAX} terms")
        self.reml, self.nobs, self.ldW = reml, nobs, ldW
        self.nmp = nobs - p if reml else nobs
        self.Z1, self.Z2, self.XtXy = self.z1b, self.z2b, self.xyb
        with nogil:
            for g in range(lo, hi):
                if not todo[g]:
                    continue
                self._load(g, ZX1, ZY1, ZX2, ZY2, XtX, XY, yy)
                self.nevals = 0
                status[g] = self._fit(&theta[g, 0], &fmin[g], &grad[g, 0], &hess[g, 0, 0],
                                      &decrement[g])
                if status[g] == 0:
                    status[g] = self._estimates(&theta[g, 0], &fmin[g], &beta[g, 0],
                                                &se[g, 0], &sigma[g])
                nevals[g] = self.nevals

    cdef void _load(self, Py_ssize_t g, const double[:, ::1] ZX1, const double[:, ::1] ZY1,
                    const double[:, ::1] ZX2, const double[:, ::1] ZY2,
                    const double[:, ::1] XtX, const double[:, ::1] XY,
                    const double[::1] yy) noexcept nogil:
        """Response g's [Z X y]'W[Z X y] blocks into this kernel's own buffers."""
        cdef Py_ssize_t j, c, p = self.p1 - 1
        for j in range(self.l1):
            for c in range(p):
                self.z1b[j, c] = ZX1[j, c]
            self.z1b[j, p] = ZY1[j, g]
        for j in range(self.m):
            for c in range(p):
                self.z2b[j, c] = ZX2[j, c]
            self.z2b[j, p] = ZY2[j, g]
        for j in range(p):
            for c in range(p):
                self.xyb[j, c] = XtX[j, c]
            self.xyb[j, p] = XY[j, g]
            self.xyb[p, j] = XY[j, g]
        self.xyb[p, p] = yy[g]

    cdef double _objective(self) noexcept nogil:
        """ProfiledDeviance.objective of the last factorization."""
        if self.reml:
            return (self.ldL2 + self.ldRX2 + self.nmp * (1.0 + log(2.0 * M_PI * self.pwrss
                                                                   / self.nmp)) - self.ldW)
        return self.ldL2 + self.nobs * (1.0 + log(2.0 * M_PI * self.pwrss / self.nobs)) - self.ldW

    cdef int _fg(self, const double* x, double* f, double* g, bint want_grad) noexcept nogil:
        """f (and the gradient g) at theta = x; 0, or the kernel's status (3: not finite)."""
        cdef Py_ssize_t k
        cdef int st
        for k in range(self.K):
            self.thv[k] = x[k]
        self.nevals += 1
        st = self._factor(self.thv)
        if st == 0 and want_grad:
            st = self._gradient(self.thv, self.gv, self.reml, self.nmp)
        if st != 0:
            return st
        f[0] = self._objective()
        if not isfinite(f[0]):
            return 3
        if want_grad:
            for k in range(self.K):
                g[k] = self.gv[k]
        return 0

    cdef int _hessian(self, const double* x, const double* g, double* H,
                      bint bounded) noexcept nogil:
        """H (K x K, row-major): central differences of the gradient (bounded: forward
        where the central step would cross 0), symmetrized: _polish.py's Hessian, for every
        entry."""
        cdef Py_ssize_t i, r, K = self.K
        cdef double h, fx, a
        cdef double y[KMAX]
        cdef double gp[KMAX]
        cdef double gm[KMAX]
        cdef int st
        for i in range(K):
            y[i] = x[i]
        for i in range(K):
            h = 1e-5 * fmax(fabs(x[i]), 0.1)
            y[i] = x[i] + h
            st = self._fg(y, &fx, gp, True)
            if st != 0:
                return st
            if not bounded or x[i] - h >= 0.0:
                y[i] = x[i] - h
                st = self._fg(y, &fx, gm, True)
                if st != 0:
                    return st
                for r in range(K):
                    H[r * K + i] = (gp[r] - gm[r]) / (2.0 * h)
            else:
                for r in range(K):
                    H[r * K + i] = (gp[r] - g[r]) / h
            y[i] = x[i]
        for i in range(K):
            for r in range(i):
                a = 0.5 * (H[i * K + r] + H[r * K + i])
                H[i * K + r] = a
                H[r * K + i] = a
        return 0

    cdef int _descend(self, double* x, double* f, double* g, double* H) noexcept nogil:
        """Quasi-Newton from x over all of R^K: the objective is even in each scalar theta
        (it depends on theta_k^2), so no bound is needed and theta_k = 0 is reached (or
        crossed) like any other point; the caller takes |x|.  The Hessian by differences
        of the gradient at the start, BFGS updates after, anew where they fail;
        backtracking.  0 when the step (or the predicted decrease) is at rounding level,
        else the kernel's status or 4 (no progress)."""
        cdef Py_ssize_t i, j, _it, _ls, K = self.K
        cdef int st, fresh
        cdef int free[KMAX]
        cdef double d[KMAX]
        cdef double xt[KMAX]
        cdef double gt[KMAX]
        cdef double s[KMAX]
        cdef double yv[KMAX]
        cdef double Hs[KMAX]
        cdef double ft, t, slope, sy, sHs, big, dmax
        for i in range(K):
            free[i] = 1
        st = self._fg(x, f, g, True)
        if st != 0:
            return st
        st = self._hessian(x, g, H, 0)
        if st != 0:
            return st
        fresh = 1
        for _it in range(MAXIT):
            if _solve_free(H, g, free, K, d) != 0:
                if not fresh:
                    st = self._hessian(x, g, H, 0)
                    if st != 0:
                        return st
                    fresh = 1
                    continue
                for i in range(K):  # not convex here: steepest descent
                    d[i] = g[i]
            slope = 0.0
            for i in range(K):
                slope += g[i] * d[i]
            if 0.5 * slope <= ROUNDING * fabs(f[0]):
                return 0  # the predicted decrease is rounding: optimum (the polish follows)
            t = 1.0
            st = 1
            for _ls in range(MAXHALF):
                for i in range(K):
                    xt[i] = x[i] - t * d[i]
                st = self._fg(xt, &ft, gt, True)
                if st == 0 and ft <= f[0] - 1e-4 * t * slope:
                    break
                st = 1
                t *= 0.5
            if st != 0:
                if fresh:
                    return 0  # no descent at this precision: the polish decides
                st = self._hessian(x, g, H, 0)
                if st != 0:
                    return st
                fresh = 1
                continue
            big = 1.0
            dmax = 0.0
            sy = 0.0
            for i in range(K):
                s[i] = xt[i] - x[i]
                yv[i] = gt[i] - g[i]
                sy += s[i] * yv[i]
                dmax = fmax(dmax, fabs(s[i]))
                big = fmax(big, fabs(xt[i]))
            sHs = 0.0
            for i in range(K):
                Hs[i] = 0.0
                for j in range(K):
                    Hs[i] += H[i * K + j] * s[j]
                sHs += s[i] * Hs[i]
            if sy > 0.0 and sHs > 0.0:  # BFGS: H + y y'/s'y - H s s'H / s'H s
                for i in range(K):
                    for j in range(K):
                        H[i * K + j] += yv[i] * yv[j] / sy - Hs[i] * Hs[j] / sHs
            fresh = 0
            for i in range(K):
                x[i], g[i] = xt[i], gt[i]
            f[0] = ft
            if dmax <= DESCEND_STEP * big:
                return 0
        return 4

    cdef int _polish(self, double* x, double* f, double* g, double* H,
                     double* decrement) noexcept nogil:
        """As _polish.newton_polish from x >= 0: STEPS projected Newton steps on the Hessian
        by differences of the gradient at x (reused by the later steps; H is the descent's
        until then); a theta within SNAP of 0 put on 0 if that costs rounding;
        then the Newton decrement over the free parameters (inf where their Hessian is not
        positive definite).  0, or the kernel's status."""
        cdef Py_ssize_t i, _step, K = self.K
        cdef int st, fresh = 0, nnear
        cdef int free[KMAX]
        cdef double d[KMAX]
        cdef double xn[KMAX]
        cdef double gn[KMAX]
        cdef double fn, dmax, big
        for _step in range(STEPS):
            if _free(x, g, free, K) == 0:
                break
            if not fresh:  # the descent's BFGS matrix can be 1e-8 off in a flat direction
                st = self._hessian(x, g, H, 1)
                if st != 0:
                    return st
                fresh = 1
            if _solve_free(H, g, free, K, d) != 0:
                break
            dmax = 0.0
            big = 1.0
            for i in range(K):
                xn[i] = fmax(x[i] - d[i], 0.0)
                dmax = fmax(dmax, fabs(d[i]))
            st = self._fg(xn, &fn, gn, True)
            if st != 0 or fn > f[0] + ROUNDING * fabs(f[0]):
                break
            for i in range(K):
                x[i], g[i] = xn[i], gn[i]
                big = fmax(big, fabs(x[i]))
            f[0] = fn
            if dmax <= STEP_TOL * big:
                break
        nnear = 0
        for i in range(K):
            xn[i] = x[i]
            if 0.0 < x[i] < SNAP:
                xn[i] = 0.0
                nnear += 1
        if nnear:
            st = self._fg(xn, &fn, gn, True)
            if st == 0 and fn <= f[0] + ROUNDING * fabs(f[0]):
                for i in range(K):
                    x[i], g[i] = xn[i], gn[i]
                f[0] = fn
        decrement[0] = 0.0
        if _free(x, g, free, K) == 0:
            return 0
        if _solve_free(H, g, free, K, d) != 0:
            decrement[0] = INFINITY
            return 0
        for i in range(K):
            decrement[0] += 0.5 * g[i] * d[i]
        return 0

    cdef int _fit(self, double* x, double* f, double* g, double* H,
                  double* decrement) noexcept nogil:
        """theta from lmer's start (1 per term): descend (unbounded), reflect to theta >= 0,
        polish, and where a theta ended at 0, probe it at 1e-3 and 0.05 (the objective is
        even in it, so its slope there is 0; _optimize._leave_boundary) and start again
        from a lower probe.  0: converged with a
        Newton decrement within DECREMENT_TOL; else not (the caller's Python path)."""
        cdef Py_ssize_t i, j, k, _restart, K = self.K
        cdef int st, moved
        cdef double fp
        cdef double y[KMAX]
        cdef double gp[KMAX]
        cdef double probes[2]
        probes[0], probes[1] = 1e-3, 0.05
        for i in range(K):
            x[i] = 1.0
        for _restart in range(RESTARTS):
            st = self._descend(x, f, g, H)
            if st == 0:
                for i in range(K):  # to theta >= 0: g is odd and H's row i flips with theta_i
                    if x[i] < 0.0:
                        x[i], g[i] = -x[i], -g[i]
                        for j in range(K):
                            if j != i:
                                H[i * K + j], H[j * K + i] = -H[i * K + j], -H[j * K + i]
                st = self._polish(x, f, g, H, decrement)
            if st != 0:
                return st
            moved = 0
            for i in range(K):
                if x[i] > 0.0 or moved:
                    continue
                for j in range(2):
                    for k in range(K):
                        y[k] = x[k]
                    y[i] = probes[j]
                    if self._fg(y, &fp, gp, False) == 0 and fp < f[0]:
                        for k in range(K):
                            x[k] = y[k]
                        moved = 1
                        break
            if not moved:
                return 0 if decrement[0] <= DECREMENT_TOL else 5
        return 6

    cdef int _estimates(self, const double* x, double* f, double* beta, double* se,
                        double* sigma) noexcept nogil:
        """At theta = x: the objective, sigma, beta and its standard errors (as lmer_many's
        Python path: sigma^2 (R_X'R_X)^{-1})."""
        cdef Py_ssize_t a, c, p = self.p1 - 1
        cdef double acc
        cdef double ignored[KMAX]
        cdef int st = self._fg(x, f, ignored, False)
        if st != 0:
            return st
        sigma[0] = sqrt(self.pwrss / self.nmp)
        for a in range(p - 1, -1, -1):
            acc = self.Rv[a, p]
            for c in range(a + 1, p):
                acc -= self.Rv[a, c] * beta[c]
            beta[a] = acc / self.Rv[a, a]
        if p > 0:
            _upper_inverse_gram(self.Rv, p, self.P)
        for a in range(p):
            se[a] = sigma[0] * sqrt(self.P[a, a])
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


cdef int _free(const double* x, const double* g, int* free, Py_ssize_t K) noexcept nogil:
    """free[i]: theta_i is not held at 0 by a slope pushing outwards; returns how many."""
    cdef Py_ssize_t i
    cdef int n = 0
    for i in range(K):
        free[i] = not (x[i] <= 0.0 and g[i] >= 0.0)
        n += free[i]
    return n


cdef int _solve_free(const double* H, const double* g, const int* free, Py_ssize_t K,
                     double* d) noexcept nogil:
    """d = H_ff^{-1} g_f on the free entries (0 elsewhere), by Cholesky; 1 if H_ff is not
    positive definite."""
    cdef Py_ssize_t i, j, k, n = 0
    cdef Py_ssize_t idx[KMAX]
    cdef double L[KMAX * KMAX]
    cdef double b[KMAX]
    cdef double acc
    for i in range(K):
        d[i] = 0.0
        if free[i]:
            idx[n] = i
            n += 1
    for i in range(n):
        b[i] = g[idx[i]]
        for j in range(i + 1):
            acc = H[idx[i] * K + idx[j]]
            for k in range(j):
                acc -= L[i * KMAX + k] * L[j * KMAX + k]
            if i == j:
                if not acc > 0.0:
                    return 1
                L[i * KMAX + i] = sqrt(acc)
            else:
                L[i * KMAX + j] = acc / L[j * KMAX + j]
    for i in range(n):
        for k in range(i):
            b[i] -= L[i * KMAX + k] * b[k]
        b[i] /= L[i * KMAX + i]
    for i in range(n - 1, -1, -1):
        for k in range(i + 1, n):
            b[i] -= L[k * KMAX + i] * b[k]
        b[i] /= L[i * KMAX + i]
    for i in range(n):
        d[idx[i]] = b[i]
    return 0
