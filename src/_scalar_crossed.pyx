"""The profiled objective, its gradient and its Hessian for scalar random-effects terms
((1 | a) + (1 | b) + ...), one evaluation a single call with no Python in between: the
per-response inner loop of lmer_many, where the factorization objects' Python overhead
(tens of microseconds per evaluation) would dominate for small designs.

The factorization is lmmfast/_factor/crossed.py's (CrossedFactor), scalar case.  Term 1 has
l1 levels, the others m effects together (rows r of the "rest"), theta_k the term's scale:

    L1_j   = sqrt(theta_1^2 d1_j + 1)                    d1 = diag(Z_1'WZ_1)
    W_e    = theta_1 theta_k(e) o_e / L1_j               o_e: Z_1'WZ_k entries (level j, row r)
    S      = theta theta' * B22 + I - sum_j w_j w_j'     B22 = Z_rest'W Z_rest (m x m)
    c1_j   = theta_1 Z_1j'W[X y] / L1_j
    c2     = L22^{-1} (theta Z_rest'W[X y] - sum_j w_j c1_j'),   L22 L22' = S
    R'R    = [X y]'W[X y] - sum_j c1_j c1_j' - c2'c2    R upper: R_X, and sqrt(pwrss) last
    ldL2   = sum_j log L1_j^2 + log|L22|^2

Derivatives (_derivatives), in phi_k = theta_k^2, on which V = W^{-1} + sum_k phi_k Z_kZ_k'
depends linearly (sigma^2 aside).  With T = Z'V^{-1}Z, P the REML projection
V^{-1} - V^{-1}X(X'V^{-1}X)^{-1}X'V^{-1}, T_P = Z'PZ = T - KK' (K = Z'V^{-1}X R_X^{-1}),
s = Z'P y = Z'V^{-1}(y - X beta), nu = n - p (REML) or n, and blocks by term:

    dF/dphi_k        = tr(T*_kk) - nu |s_k|^2 / pwrss            T* = T_P (REML), T (ML)
    d2F/dphi_k dphi_l = -|T*_kl|_F^2 + nu (2 s_k'T_P,kl s_l / pwrss - |s_k|^2 |s_l|^2 / pwrss^2)

(tr(P V_k) is the derivative of log|V| + log|X'V^{-1}X|, -y'P V_k P y that of pwrss), and in
theta: g_k = 2 theta_k F_k, H_kl = 4 theta_k theta_l F_kl + 2 delta_kl F_k; no division by
theta, so both are exact through theta = 0 (the objective is even in each theta_k).  T's
blocks in closed form, with D1 = diag(L1^2), O~ = D1^{-1} O (l1 x m, O's pattern),
Theta = diag(theta_r) on the rest and P1 = Theta S^{-1} Theta:

    T_11 = diag(d1 / D1) - O~ P1 O~'     T_1r = O~ N     T_rr = C N
    C = B22 - theta_1^2 O' D1^{-1} O,    N = I - P1 C

so the Frobenius norms need only m x m products (M0 = O~'O~: |O~ P1 O~'|^2 = tr((P1 M0)^2),
|T_1r E_l|^2 = sum over l's columns of diag(N'M0N)), and the quadratic forms in [K s] only
O~'[K s] and m x m products.  Arrays are row-major raw buffers; the dense parts are small
(m is at most a few hundred here), so the triangular algebra is plain loops.

fit_range() runs whole fits, one response after another, without the GIL (lmer_many's
threads each hold a kernel): from theta = 1 (lmer's start), projected Newton on the
analytic Hessian in phi = theta^2 >= 0 (_newton: in theta the objective is even, so
theta_k = 0 is a stationary point, a saddle where the variance should grow, while in phi
the slope there is F_k; where the Hessian is not positive definite its eigenvalues are
taken in absolute value, and a backtracking line search keeps each step a descent),
ending with Newton steps at the precision floor as _polish.newton_polish does (kept
unless the objective rises beyond rounding), then theta = sqrt(phi), _polish's snap of a
theta within 1e-6 of 0 onto 0, and _optimize._leave_boundary's probes of a theta at 0
(1e-3, 0.05) with a restart from a lower one.  A fit whose Newton decrement exceeds
DECREMENT_TOL, or whose factorization fails, is reported (status != 0) for the caller's
Python path.
"""

from libc.math cimport INFINITY, M_PI, fabs, fmax, isfinite, log, sqrt
from libc.stdint cimport int64_t

import numpy as np

# the per-response fit (fit_range): _polish.py's constants, and lmer's restarts
cdef enum:
    KMAX = 8  # terms at most (fixed-size work arrays)
cdef int MAXIT = 200, MAXHALF = 40, STEPS = 3, RESTARTS = 4
cdef double ROUNDING = 1e-13, STEP_TOL = 1e-12, SNAP = 1e-6, DECREMENT_TOL = 1e-3
cdef double POLISH = 1e-10  # predicted decrease (relative) below which full steps polish
cdef double MAXSTEP = 4.0  # a Newton step's length is at most this times max(1, |phi|)


cdef inline double* _buf(list keep, Py_ssize_t size):
    """A zeroed work buffer of `size` doubles, alive as long as `keep`."""
    a = np.zeros(max(size, 1))
    keep.append(a)
    cdef double[::1] v = a
    return &v[0]


cdef class ScalarCrossed:
    """The shared design of scalar terms; set_response() then evaluate() per theta."""

    cdef Py_ssize_t l1, m, p1, K
    # the design (pointers into arrays held by _keep)
    cdef const double* d1
    cdef const double* o
    cdef const double* B22
    cdef const int64_t* ptr
    cdef const int64_t* row
    cdef const int64_t* kterm
    cdef const int64_t* kr
    cdef const int64_t* nlev
    cdef list _keep
    # the response: Z_1'W[X y] (l1, p1), Z_rest'W[X y] (m, p1), [X y]'W[X y] (p1, p1)
    cdef const double* Z1
    cdef const double* Z2
    cdef const double* XtXy
    cdef object _response  # the arrays set_response() was given
    # the factorization
    cdef double* L1
    cdef double* W
    cdef double* c1
    cdef double* S
    cdef double* c2
    cdef double* Rp
    # derivative work
    cdef double* Sinv
    cdef double* P1
    cdef double* C
    cdef double* N
    cdef double* Trr
    cdef double* M0
    cdef double* Ma
    cdef double* Q
    cdef double* a1
    cdef double* ot
    cdef double* V
    cdef double* Gv
    cdef double* Y
    cdef double* U0
    cdef double* NY
    cdef double* TY
    cdef double* beta
    cdef double* P
    cdef double* Qk  # (K, p, p): K_k'K_k
    cdef double* ks  # (K, p): K_k's_k
    cdef public object R  # (p1, p1) numpy: R of the last evaluation
    cdef public object theta, grad, hess  # evaluate() reads theta, writes grad (and hess)
    cdef double* thv
    cdef double* gv
    cdef double* hv
    cdef public double ldL2, ldRX2, pwrss
    # fit_range(): this thread's copy of one response's blocks, and the objective's constants
    cdef double* z1b
    cdef double* z2b
    cdef double* xyb
    cdef bint reml
    cdef double nobs, nmp, ldW
    cdef int nevals
    cdef bint current  # the factorization is at thv

    def __init__(self, const double[::1] d1, const int64_t[::1] ptr, const int64_t[::1] row,
                 const int64_t[::1] kterm, const double[::1] o, const double[:, ::1] B22,
                 const int64_t[::1] kr, const int64_t[::1] nlev, Py_ssize_t p1):
        cdef Py_ssize_t l1 = d1.shape[0], m = B22.shape[0], nnz = o.shape[0], q
        cdef double[:, ::1] Rv
        self.l1, self.m, self.p1, self.K = l1, m, p1, nlev.shape[0]
        q = l1 + m
        self._keep = [d1, ptr, row, kterm, o, B22, kr, nlev]
        self.d1 = &d1[0] if l1 else NULL
        self.ptr, self.nlev = &ptr[0], &nlev[0]
        self.row = &row[0] if nnz else NULL
        self.kterm = &kterm[0] if nnz else NULL
        self.o = &o[0] if nnz else NULL
        self.B22 = &B22[0, 0] if m else NULL
        self.kr = &kr[0] if m else NULL
        keep = self._keep
        self.L1, self.W, self.c1 = _buf(keep, l1), _buf(keep, nnz), _buf(keep, l1 * p1)
        self.S, self.c2 = _buf(keep, m * m), _buf(keep, m * p1)
        self.Sinv, self.P1, self.C = _buf(keep, m * m), _buf(keep, m * m), _buf(keep, m * m)
        self.N, self.Trr, self.M0 = _buf(keep, m * m), _buf(keep, m * m), _buf(keep, m * m)
        self.Q, self.a1, self.ot = _buf(keep, m * m), _buf(keep, l1), _buf(keep, nnz)
        self.Ma = _buf(keep, m * m)
        self.V, self.Gv, self.Y = _buf(keep, q * p1), _buf(keep, q * p1), _buf(keep, q * p1)
        self.U0, self.NY, self.TY = _buf(keep, m * p1), _buf(keep, m * p1), _buf(keep, m * p1)
        self.beta, self.P = _buf(keep, p1), _buf(keep, p1 * p1)
        self.Qk, self.ks = _buf(keep, self.K * p1 * p1), _buf(keep, self.K * p1)
        self.z1b, self.z2b = _buf(keep, l1 * p1), _buf(keep, m * p1)
        self.xyb = _buf(keep, p1 * p1)
        self.R = np.zeros((p1, p1))
        Rv = self.R
        self.Rp = &Rv[0, 0]
        self.theta, self.grad = np.zeros(self.K), np.zeros(self.K)
        self.hess = np.zeros((self.K, self.K))
        self.thv, self.gv = _view(self.theta), _view(self.grad)
        self.hv = _view(self.hess.reshape(-1))

    def set_response(self, const double[:, ::1] Z1, const double[:, ::1] Z2,
                     const double[:, ::1] XtXy):
        """Z_1'W[X y] (l1, p1), Z_rest'W[X y] (m, p1), [X y]'W[X y] (p1, p1)."""
        if (Z1.shape[0] != self.l1 or Z2.shape[0] != self.m or XtXy.shape[0] != self.p1
                or Z1.shape[1] != self.p1 or Z2.shape[1] != self.p1
                or XtXy.shape[1] != self.p1):
            raise ValueError("the response blocks do not fit the design")
        self._response = (Z1, Z2, XtXy)
        self.Z1 = &Z1[0, 0] if self.l1 else NULL
        self.Z2 = &Z2[0, 0] if self.m else NULL
        self.XtXy = &XtXy[0, 0]

    def evaluate(self, bint want_grad, bint reml, double nmp, bint want_hess=False):
        """Factor at self.theta (sets ldL2, ldRX2, pwrss, R); with want_grad also self.grad,
        with want_hess also self.hess.  Returns 0, or 1 if S and 2 if the Schur complement
        of [X y] is not positive definite.  (No array arguments: converting them costs
        more than a small evaluation.)"""
        cdef int status
        cdef double F[KMAX]
        cdef double FH[KMAX * KMAX]
        if self.XtXy == NULL:
            raise ValueError("set_response() first")
        if self.K > KMAX:
            raise ValueError(f"at most {KMAX} terms")
        self.reml, self.nmp = reml, nmp
        with nogil:
            status = self._factor(self.thv)
            if status == 0 and (want_grad or want_hess):
                self._derivatives(self.thv, F, FH if want_hess else NULL)
                _to_theta(self.thv, F, FH if want_hess else NULL, self.K, self.gv, self.hv)
        return status

    cdef int _factor(self, const double* th) noexcept nogil:
        cdef Py_ssize_t j, e, f, a, c, k, l1 = self.l1, m = self.m, p1 = self.p1
        cdef double t1 = th[0], Lj, acc, we, ta
        cdef double ld = 0.0
        cdef const int64_t* ptr = self.ptr
        cdef const int64_t* row = self.row
        cdef double* S = self.S
        cdef double* C = self.C
        cdef double* c1 = self.c1
        cdef double* c2 = self.c2
        cdef double* W = self.W
        cdef double* Rp = self.Rp
        cdef double prod = 1.0, v
        self.current = False
        for j in range(l1):
            v = t1 * t1 * self.d1[j] + 1.0
            Lj = sqrt(v)
            self.L1[j] = Lj
            prod *= v  # log|L1|^2 = log of the product, in pieces that cannot overflow
            if prod > 1e100:
                ld += log(prod)
                prod = 1.0
            for c in range(p1):
                c1[j * p1 + c] = t1 * self.Z1[j * p1 + c] / Lj
            for e in range(ptr[j], ptr[j + 1]):
                W[e] = t1 * th[self.kterm[e]] * self.o[e] / Lj
        ld += log(prod)
        # C = B22 - theta_1^2 O'D1^{-1}O and S = I + Theta C Theta (lower; C is used by
        # _derivatives too), rhs = theta Z2 - sum_j w_j c1_j'
        for a in range(m):
            ta = th[self.kr[a]]
            for c in range(a + 1):
                C[a * m + c] = self.B22[a * m + c]
            for c in range(p1):
                c2[a * p1 + c] = ta * self.Z2[a * p1 + c]
        for j in range(l1):
            v = t1 * t1 / (self.L1[j] * self.L1[j])
            for e in range(ptr[j], ptr[j + 1]):
                a = row[e]
                acc = v * self.o[e]
                for f in range(ptr[j], e + 1):  # rows sorted within a level: row[f] <= a
                    C[a * m + row[f]] -= acc * self.o[f]
                we = W[e]
                for c in range(p1):
                    c2[a * p1 + c] -= we * c1[j * p1 + c]
        for a in range(m):
            ta = th[self.kr[a]]
            for c in range(a + 1):
                S[a * m + c] = ta * th[self.kr[c]] * C[a * m + c]
            S[a * m + a] += 1.0
        if _cholesky(S, m) != 0:
            return 1
        for a in range(m):
            ld += 2.0 * log(S[a * m + a])
        _forward(S, m, c2, p1, p1)  # c2 = L22^{-1} rhs
        self.ldL2 = ld
        # R'R = XtXy - c1'c1 - c2'c2, R upper (lower factor of the same, transposed)
        for a in range(p1):
            for c in range(a + 1):
                acc = self.XtXy[a * p1 + c]
                for j in range(l1):
                    acc -= c1[j * p1 + a] * c1[j * p1 + c]
                for k in range(m):
                    acc -= c2[k * p1 + a] * c2[k * p1 + c]
                Rp[a * p1 + c] = acc
        if _cholesky(Rp, p1) != 0:
            return 2
        for a in range(p1):  # transpose into the upper triangle
            for c in range(a):
                Rp[c * p1 + a] = Rp[a * p1 + c]
                Rp[a * p1 + c] = 0.0
        self.ldRX2 = 0.0
        for a in range(p1 - 1):
            self.ldRX2 += 2.0 * log(Rp[a * p1 + a])
        self.pwrss = Rp[(p1 - 1) * p1 + p1 - 1] ** 2
        self.current = True
        return 0

    cdef void _back(self) noexcept nogil:
        """V = L^{-T} [c1; c2] (all p1 columns), by levels."""
        cdef Py_ssize_t j, e, a, c, r, l1 = self.l1, m = self.m, p1 = self.p1
        cdef double* V = self.V
        cdef double we, Lj
        for a in range(m):
            for c in range(p1):
                V[(l1 + a) * p1 + c] = self.c2[a * p1 + c]
        _backward(self.S, m, V + l1 * p1, p1)
        for j in range(l1):
            for c in range(p1):
                V[j * p1 + c] = self.c1[j * p1 + c]
            for e in range(self.ptr[j], self.ptr[j + 1]):
                r = l1 + self.row[e]
                we = self.W[e]
                for c in range(p1):
                    V[j * p1 + c] -= we * V[r * p1 + c]
            Lj = self.L1[j]
            for c in range(p1):
                V[j * p1 + c] /= Lj

    cdef void _G_times(self, const double* th) noexcept nogil:
        """Gv = Z'WZ (theta * V) (all p1 columns)."""
        cdef Py_ssize_t j, e, a, c, r, l1 = self.l1, m = self.m, p1 = self.p1
        cdef double t1 = th[0], x, y
        cdef double* V = self.V
        cdef double* Gv = self.Gv
        for j in range(l1):
            x = self.d1[j] * t1
            for c in range(p1):
                Gv[j * p1 + c] = x * V[j * p1 + c]
        for a in range(m):
            for c in range(p1):
                Gv[(l1 + a) * p1 + c] = 0.0
            for r in range(m):
                x = self.B22[a * m + r] * th[self.kr[r]]
                for c in range(p1):
                    Gv[(l1 + a) * p1 + c] += x * V[(l1 + r) * p1 + c]
        for j in range(l1):
            for e in range(self.ptr[j], self.ptr[j + 1]):
                r = self.row[e]
                x = self.o[e] * th[self.kr[r]]
                y = self.o[e] * t1
                for c in range(p1):
                    Gv[j * p1 + c] += x * V[(l1 + r) * p1 + c]
                    Gv[(l1 + r) * p1 + c] += y * V[j * p1 + c]

    cdef void _derivatives(self, const double* th, double* gphi, double* Hphi) noexcept nogil:
        """The gradient in phi = theta^2 (and with Hphi != NULL the Hessian in phi, K x K
        row-major) at the last factorization (at th), by the formulas of the module
        docstring (_to_theta gives theta's)."""
        cdef Py_ssize_t j, e, f, a, b, c, k, u, r, l1 = self.l1, m = self.m, p1 = self.p1
        cdef Py_ssize_t p = p1 - 1, K = self.K, q = l1 + m
        cdef double D, aj, acc, x, pw = self.pwrss, nmp = self.nmp
        cdef double tr1 = 0.0, trq = 0.0, sa2 = 0.0, saq = 0.0, ld, sT
        cdef const int64_t* ptr = self.ptr
        cdef const int64_t* row = self.row
        cdef const int64_t* kr = self.kr
        cdef double* P1 = self.P1
        cdef double* C = self.C
        cdef double* N = self.N
        cdef double* Trr = self.Trr
        cdef double* M0 = self.M0
        cdef double* Ma = self.Ma
        cdef double* Y = self.Y
        cdef double* Rp = self.Rp
        cdef double* ot = self.ot
        cdef double F[KMAX]
        cdef double ss[KMAX]
        cdef double kk[KMAX]
        cdef double nT[KMAX * KMAX]
        cdef double trKK[KMAX * KMAX]
        cdef double sTs[KMAX * KMAX]
        cdef double* Qk = self.Qk
        cdef double* ks = self.ks
        cdef bint hess = Hphi != NULL, zero
        # P1 = Theta S^{-1} Theta; C (the factorization's) made full
        _lower_inverse_gram(self.S, m, self.Sinv)
        for a in range(m):
            for c in range(m):
                P1[a * m + c] = th[kr[a]] * self.Sinv[a * m + c] * th[kr[c]]
                M0[a * m + c] = 0.0
                Ma[a * m + c] = 0.0
            for c in range(a):
                C[c * m + a] = C[a * m + c]
        # per level of term 1: d1/D1 and O~; M0 = O~'O~, Ma = O~'diag(d1/D1)O~ (lower), so
        # that sum_j q_j = tr(P1 M0) and sum_j a_j q_j = tr(P1 Ma), q_j = o~_j'P1 o~_j
        for j in range(l1):
            D = self.L1[j] * self.L1[j]
            aj = self.d1[j] / D
            self.a1[j] = aj
            for e in range(ptr[j], ptr[j + 1]):
                ot[e] = self.o[e] / D
            for e in range(ptr[j], ptr[j + 1]):
                a = row[e]
                for f in range(ptr[j], e + 1):
                    x = ot[e] * ot[f]
                    M0[a * m + row[f]] += x
                    Ma[a * m + row[f]] += aj * x
            tr1 += aj
            sa2 += aj * aj
        for a in range(m):
            for c in range(a):
                M0[c * m + a] = M0[a * m + c]
                Ma[c * m + a] = Ma[a * m + c]
        for a in range(m):
            for c in range(m):
                trq += P1[a * m + c] * M0[a * m + c]
                saq += P1[a * m + c] * Ma[a * m + c]
        # N = I - P1 C, T_rr = C N
        for a in range(m):
            for c in range(m):
                acc = 1.0 if a == c else 0.0
                for b in range(m):
                    acc -= P1[a * m + b] * C[b * m + c]
                N[a * m + c] = acc
        for a in range(m):
            for c in range(m):
                acc = 0.0
                for b in range(m):
                    acc += C[a * m + b] * N[b * m + c]
                Trr[a * m + c] = acc
        # Z'V^{-1}[X y] (into Gv): Lambda Z'V^{-1} = A^{-1} Lambda Z'W, so row r is
        # (L^{-T}[c1; c2])_r / theta_k (every entry of the row carries theta_k: exact), and
        # where theta_k = 0, Z'W[X y] - G Lambda L^{-T}[c1; c2]
        self._back()
        zero = False
        for k in range(K):
            zero = zero or th[k] == 0.0
        if zero:
            self._G_times(th)
        for r in range(q):
            k = 0 if r < l1 else kr[r - l1]
            if th[k] != 0.0:
                for c in range(p1):
                    self.Gv[r * p1 + c] = self.V[r * p1 + c] / th[k]
            else:
                for c in range(p1):
                    x = self.Z1[r * p1 + c] if r < l1 else self.Z2[(r - l1) * p1 + c]
                    self.Gv[r * p1 + c] = x - self.Gv[r * p1 + c]
        # beta = R_X^{-1} R[:p, p]; Y = [K s]: K = Z'V^{-1}X R_X^{-1}, s = Z'V^{-1}(y - X beta)
        for a in range(p - 1, -1, -1):
            acc = Rp[a * p1 + p]
            for c in range(a + 1, p):
                acc -= Rp[a * p1 + c] * self.beta[c]
            self.beta[a] = acc / Rp[a * p1 + a]
        for k in range(K):
            ss[k] = 0.0
            kk[k] = 0.0
            for a in range(p):
                ks[k * p + a] = 0.0
            for a in range(p * p):
                Qk[k * p * p + a] = 0.0
        for r in range(q):
            k = 0 if r < l1 else kr[r - l1]
            acc = self.Gv[r * p1 + p]
            for c in range(p):
                acc -= self.Gv[r * p1 + c] * self.beta[c]
            Y[r * p1 + p] = acc
            ss[k] += acc * acc
            for c in range(p):
                x = self.Gv[r * p1 + c]
                for a in range(c):
                    x -= Y[r * p1 + a] * Rp[a * p1 + c]
                x /= Rp[c * p1 + c]
                Y[r * p1 + c] = x
                kk[k] += x * x
            if hess:
                for c in range(p):
                    ks[k * p + c] += Y[r * p1 + c] * acc
                    for a in range(p):
                        Qk[(k * p + c) * p + a] += Y[r * p1 + c] * Y[r * p1 + a]
        # the gradient
        for k in range(K):
            F[k] = 0.0
        F[0] = tr1 - trq
        for a in range(m):
            F[kr[a]] += Trr[a * m + a]
        for k in range(K):
            if self.reml:
                F[k] -= kk[k]
            F[k] -= nmp * ss[k] / pw
            gphi[k] = F[k]
        if not hess:
            return
        # |T_kl|_F^2: T_11 by diag(a) - O~ P1 O~', T_1l by diag(N'M0N), T_kl by T_rr
        for k in range(K * K):
            nT[k] = 0.0
            trKK[k] = 0.0
            sTs[k] = 0.0
        for a in range(m):  # Q = P1 M0
            for c in range(m):
                acc = 0.0
                for b in range(m):
                    acc += P1[a * m + b] * M0[b * m + c]
                self.Q[a * m + c] = acc
        acc = 0.0
        for a in range(m):
            for c in range(m):
                acc += self.Q[a * m + c] * self.Q[c * m + a]
        nT[0] = sa2 - 2.0 * saq + acc
        for c in range(m):  # diag(N'M0N)
            acc = 0.0
            for a in range(m):
                x = 0.0
                for b in range(m):
                    x += M0[a * m + b] * N[b * m + c]
                acc += N[a * m + c] * x
            nT[kr[c]] += acc
            for a in range(m):
                nT[kr[a] * K + kr[c]] += Trr[a * m + c] * Trr[a * m + c]
        for u in range(1, K):
            nT[u * K] = nT[u]
        # the diagonals of Y_k'T_kl Y_l: their trace over K's columns, and the s entry
        for a in range(m):  # U0 = O~'Y_1
            for c in range(p1):
                self.U0[a * p1 + c] = 0.0
        for j in range(l1):
            for e in range(ptr[j], ptr[j + 1]):
                for c in range(p1):
                    self.U0[row[e] * p1 + c] += ot[e] * Y[j * p1 + c]
        for c in range(p1):  # Pi_11 = Y_1'diag(a)Y_1 - U0'P1U0
            acc = 0.0
            for j in range(l1):
                acc += self.a1[j] * Y[j * p1 + c] * Y[j * p1 + c]
            for a in range(m):
                x = 0.0
                for b in range(m):
                    x += P1[a * m + b] * self.U0[b * p1 + c]
                acc -= self.U0[a * p1 + c] * x
            _add_diag(trKK, sTs, 0, acc, c, p)
        for u in range(1, K):
            # NY = N E_l Y_2, TY = T_rr E_l Y_2
            for a in range(m):
                for c in range(p1):
                    self.NY[a * p1 + c] = 0.0
                    self.TY[a * p1 + c] = 0.0
                for b in range(m):
                    if kr[b] != u:
                        continue
                    for c in range(p1):
                        x = Y[(l1 + b) * p1 + c]
                        self.NY[a * p1 + c] += N[a * m + b] * x
                        self.TY[a * p1 + c] += Trr[a * m + b] * x
            for c in range(p1):  # Pi_1l = U0'N E_l Y_2
                acc = 0.0
                for a in range(m):
                    acc += self.U0[a * p1 + c] * self.NY[a * p1 + c]
                _add_diag(trKK, sTs, u, acc, c, p)
            for a in range(m):  # Pi_ku = Y_2'E_k T_rr E_u Y_2, k <= u
                k = kr[a]
                if k > u:
                    continue
                for c in range(p1):
                    _add_diag(trKK, sTs, k * K + u,
                              Y[(l1 + a) * p1 + c] * self.TY[a * p1 + c], c, p)
        for k in range(K):
            for u in range(k, K):
                ld = -nT[k * K + u]
                sT = sTs[k * K + u]
                if p > 0:  # T_P = T - KK': |T_P,kl|^2 and s_k'T_P,kl s_l
                    acc = 0.0
                    for a in range(p * p):
                        acc += Qk[k * p * p + a] * Qk[u * p * p + a]
                    x = 0.0
                    for a in range(p):
                        x += ks[k * p + a] * ks[u * p + a]
                    if self.reml:
                        ld += 2.0 * trKK[k * K + u] - acc
                    sT -= x
                Hphi[k * K + u] = ld + nmp * (2.0 * sT / pw - ss[k] * ss[u] / (pw * pw))
                Hphi[u * K + k] = Hphi[k * K + u]

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
        cdef Py_ssize_t g
        if self.K > KMAX:
            raise ValueError(f"at most {KMAX} terms")
        self.reml, self.nobs, self.ldW = reml, nobs, ldW
        self.nmp = nobs - (self.p1 - 1) if reml else nobs
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
        cdef Py_ssize_t j, c, p1 = self.p1, p = p1 - 1
        for j in range(self.l1):
            for c in range(p):
                self.z1b[j * p1 + c] = ZX1[j, c]
            self.z1b[j * p1 + p] = ZY1[j, g]
        for j in range(self.m):
            for c in range(p):
                self.z2b[j * p1 + c] = ZX2[j, c]
            self.z2b[j * p1 + p] = ZY2[j, g]
        for j in range(p):
            for c in range(p):
                self.xyb[j * p1 + c] = XtX[j, c]
            self.xyb[j * p1 + p] = XY[j, g]
            self.xyb[p * p1 + j] = XY[j, g]
        self.xyb[p * p1 + p] = yy[g]

    cdef double _objective(self) noexcept nogil:
        """ProfiledDeviance.objective of the last factorization."""
        if self.reml:
            return (self.ldL2 + self.ldRX2 + self.nmp * (1.0 + log(2.0 * M_PI * self.pwrss
                                                                   / self.nmp)) - self.ldW)
        return self.ldL2 + self.nobs * (1.0 + log(2.0 * M_PI * self.pwrss / self.nobs)) - self.ldW

    cdef int _eval(self, const double* z, double* f, double* F, double* FH) noexcept nogil:
        """f at phi = z, theta = sqrt(z) (with F != NULL its gradient in phi, with FH != NULL
        its Hessian too); 0, or the kernel's status (3: not finite)."""
        cdef Py_ssize_t k
        cdef int st
        for k in range(self.K):
            self.thv[k] = sqrt(z[k])
        self.nevals += 1
        st = self._factor(self.thv)
        if st != 0:
            return st
        f[0] = self._objective()
        if not isfinite(f[0]):
            return 3
        if F != NULL:
            self._derivatives(self.thv, F, FH)
        return 0

    cdef int _newton(self, double* z, double* f, double* F, double* FH) noexcept nogil:
        """Projected Newton in phi = theta^2 >= 0 from z on the analytic Hessian (Bertsekas:
        a phi at 0 with the slope pushing outwards is held there, the others step by
        |H_ff|^{-1} F_f, _newton_direction; each step at most MAXSTEP * max(1, |z|) long,
        projected onto phi >= 0, backtracking until the objective falls (Armijo on the
        projected step; where a full step fell by more than 1.2 times the quadratic
        model's decrease, t = 2 and 4 are tried too, kept while lower: from below, the phi
        step undershoots where the curvature falls off)).  phi is where the objective is
        smooth and V linear: theta's even symmetry makes theta_k = 0 a stationary point, a
        saddle where the variance
        should grow, and lets steps jump between theta and -theta; in phi the slope there
        is F_k, a first-order signal.  Where the predicted decrease is below POLISH
        (relative), up to STEPS full steps, each kept unless the objective rises beyond
        rounding (as _polish.newton_polish).  Returns 0 when the step is at rounding level
        (or no descent is left at this precision: the caller's decrement decides), else
        the kernel's status or 4 (no convergence)."""
        cdef Py_ssize_t i, _it, _ls, K = self.K
        cdef int st, indefinite, nfree, polished = 0
        cdef int free[KMAX]
        cdef double d[KMAX]
        cdef double zt[KMAX]
        cdef double Ft[KMAX]
        cdef double FHt[KMAX * KMAX]
        cdef double ft, t, slope, big, dmax, dnorm, drop, tt, fx
        cdef double zx[KMAX]
        st = self._eval(z, f, F, FH)
        if st != 0:
            return st
        for _it in range(MAXIT):
            nfree = 0
            for i in range(K):
                free[i] = not (z[i] <= 0.0 and F[i] >= 0.0)
                nfree += free[i]
            if nfree == 0:
                return 0
            indefinite = _newton_direction(FH, F, free, K, d)
            dmax = 0.0
            dnorm = 0.0
            big = 1.0
            slope = 0.0
            for i in range(K):
                dmax = fmax(dmax, fabs(d[i]))
                dnorm += d[i] * d[i]
                big = fmax(big, fabs(z[i]))
                slope += F[i] * d[i]
            dnorm = sqrt(dnorm)
            if dmax <= STEP_TOL * big:
                return 0
            if not indefinite and 0.5 * slope <= POLISH * fabs(f[0]):
                if polished == STEPS:
                    return 0
                polished += 1
                for i in range(K):
                    zt[i] = fmax(z[i] - d[i], 0.0)
                st = self._eval(zt, &ft, Ft, FHt)
                if st != 0 or ft > f[0] + ROUNDING * fabs(f[0]):
                    return 0
            else:
                if dnorm > MAXSTEP * big:
                    for i in range(K):
                        d[i] *= MAXSTEP * big / dnorm
                t = 1.0
                st = 1
                for _ls in range(MAXHALF):
                    drop = 0.0
                    for i in range(K):
                        zt[i] = fmax(z[i] - t * d[i], 0.0)
                        drop += F[i] * (z[i] - zt[i])
                    st = self._eval(zt, &ft, NULL, NULL)
                    if st == 0 and ft < f[0] and ft <= f[0] - 1e-4 * drop:
                        break
                    st = 1
                    t *= 0.5
                if st != 0:
                    return 0  # no descent at this precision: the decrement decides
                if t == 1.0 and not indefinite and f[0] - ft > 1.2 * 0.5 * drop:
                    # the objective fell by more than the quadratic model says (the phi
                    # Newton step undershoots where the curvature falls off): go further
                    tt = 2.0
                    while tt <= 4.0:
                        for i in range(K):
                            zx[i] = fmax(z[i] - tt * d[i], 0.0)
                        if self._eval(zx, &fx, NULL, NULL) != 0 or not fx < ft:
                            break
                        for i in range(K):
                            zt[i] = zx[i]
                        ft = fx
                        tt *= 2.0
                    if not (self.current and _same(self.thv, zt, K)):
                        st = self._eval(zt, &ft, NULL, NULL)
                        if st != 0:
                            return st
                self._derivatives(self.thv, Ft, FHt)  # the factorization is at zt
            for i in range(K):
                z[i], F[i] = zt[i], Ft[i]
            for i in range(K * K):
                FH[i] = FHt[i]
            f[0] = ft
        return 4

    cdef int _fit(self, double* x, double* f, double* g, double* H,
                  double* decrement) noexcept nogil:
        """theta from lmer's start (1 per term): projected Newton in phi = theta^2, then
        theta = sqrt(phi), a theta within SNAP of 0 put on 0 if that costs rounding
        (_polish.newton_polish), and where a theta is at 0, probe it at 1e-3 and 0.05
        (_optimize._leave_boundary) and start again from a lower probe.  g and H are
        theta's.  0: converged with a Newton decrement (in theta, over the parameters not
        held at 0) within DECREMENT_TOL; else not (the caller's Python path)."""
        cdef Py_ssize_t i, j, k, _restart, K = self.K
        cdef int st, moved, nnear, nfree
        cdef int free[KMAX]
        cdef double fp
        cdef double z[KMAX]
        cdef double y[KMAX]
        cdef double F[KMAX]
        cdef double FH[KMAX * KMAX]
        cdef double d[KMAX]
        cdef double probes[2]
        probes[0], probes[1] = 1e-3, 0.05
        for i in range(K):
            z[i] = 1.0
        for _restart in range(RESTARTS):
            st = self._newton(z, f, F, FH)
            if st != 0:
                return st
            for i in range(K):
                x[i] = sqrt(z[i])
            nnear = 0
            for i in range(K):
                y[i] = z[i]
                if 0.0 < x[i] < SNAP:
                    y[i] = 0.0
                    nnear += 1
            if nnear:
                st = self._eval(y, &fp, d, H)
                if st == 0 and fp <= f[0] + ROUNDING * fabs(f[0]):
                    for i in range(K):
                        z[i], x[i], F[i] = 0.0 if y[i] == 0.0 else z[i], sqrt(y[i]), d[i]
                    for i in range(K * K):
                        FH[i] = H[i]
                    f[0] = fp
            _to_theta(x, F, FH, K, g, H)
            # the Newton decrement over the parameters not held at 0
            decrement[0] = 0.0
            nfree = 0
            for i in range(K):
                free[i] = not (x[i] <= 0.0 and g[i] >= 0.0)
                nfree += free[i]
            if nfree:
                if _solve_free(H, g, free, K, d) != 0:
                    decrement[0] = INFINITY
                else:
                    for i in range(K):
                        decrement[0] += 0.5 * g[i] * d[i]
            moved = 0
            for i in range(K):
                if x[i] > 0.0 or moved:
                    continue
                for j in range(2):
                    for k in range(K):
                        y[k] = z[k]
                    y[i] = probes[j] * probes[j]
                    if self._eval(y, &fp, NULL, NULL) == 0 and fp < f[0]:
                        for k in range(K):
                            z[k] = y[k]
                        moved = 1
                        break
            if not moved:
                return 0 if decrement[0] <= DECREMENT_TOL else 5
        return 6

    cdef int _estimates(self, const double* x, double* f, double* beta, double* se,
                        double* sigma) noexcept nogil:
        """At theta = x: the objective, sigma, beta and its standard errors (as lmer_many's
        Python path: sigma^2 (R_X'R_X)^{-1})."""
        cdef Py_ssize_t a, c, p1 = self.p1, p = p1 - 1
        cdef double acc
        cdef int st = 0
        cdef bint same = self.current
        cdef double* Rp = self.Rp
        cdef double z[KMAX]
        for a in range(self.K):
            same = same and self.thv[a] == x[a]
            z[a] = x[a] * x[a]
        if not same:
            st = self._eval(z, f, NULL, NULL)
        if st != 0:
            return st
        f[0] = self._objective()
        sigma[0] = sqrt(self.pwrss / self.nmp)
        for a in range(p - 1, -1, -1):
            acc = Rp[a * p1 + p]
            for c in range(a + 1, p):
                acc -= Rp[a * p1 + c] * beta[c]
            beta[a] = acc / Rp[a * p1 + a]
        if p > 0:
            _upper_inverse_gram(Rp, p, p1, self.P)
        for a in range(p):
            se[a] = sigma[0] * sqrt(self.P[a * p + a])
        return 0


cdef void _to_theta(const double* th, const double* F, const double* FH, Py_ssize_t K,
                    double* g, double* H) noexcept nogil:
    """theta's gradient and Hessian (FH != NULL) from phi's: g_k = 2 theta_k F_k,
    H_kl = 4 theta_k theta_l F_kl + 2 delta_kl F_k."""
    cdef Py_ssize_t k, u
    for k in range(K):
        g[k] = 2.0 * th[k] * F[k]
        if FH != NULL:
            for u in range(K):
                H[k * K + u] = 4.0 * th[k] * th[u] * FH[k * K + u] + (2.0 * F[k] if k == u else 0.0)


cdef inline bint _same(const double* th, const double* z, Py_ssize_t K) noexcept nogil:
    """theta = sqrt(z) exactly (the factorization is at z)."""
    cdef Py_ssize_t i
    for i in range(K):
        if th[i] != sqrt(z[i]):
            return False
    return True


cdef double* _view(object a):
    cdef double[::1] v = a
    return &v[0]


cdef inline void _add_diag(double* trKK, double* sTs, Py_ssize_t at, double v, Py_ssize_t c,
                           Py_ssize_t p) noexcept nogil:
    """Column c's diagonal entry of Y_k'T_kl Y_l: K's columns to the trace, s's apart."""
    if c < p:
        trKK[at] += v
    else:
        sTs[at] += v


cdef int _cholesky(double* A, Py_ssize_t n) noexcept nogil:
    """A := L (lower, row-major n x n, in place; the strict upper triangle is not read)."""
    cdef Py_ssize_t i, j, k
    cdef double acc
    for j in range(n):
        acc = A[j * n + j]
        for k in range(j):
            acc -= A[j * n + k] * A[j * n + k]
        if not acc > 0.0:
            return 1
        A[j * n + j] = sqrt(acc)
        for i in range(j + 1, n):
            acc = A[i * n + j]
            for k in range(j):
                acc -= A[i * n + k] * A[j * n + k]
            A[i * n + j] = acc / A[j * n + j]
    return 0


cdef void _forward(const double* L, Py_ssize_t n, double* B, Py_ssize_t ld,
                   Py_ssize_t ncol) noexcept nogil:
    """B[:n, :ncol] := L^{-1} B (L lower n x n; B row-major with row length ld)."""
    cdef Py_ssize_t i, k, c
    cdef double x
    for i in range(n):
        for k in range(i):
            x = L[i * n + k]
            for c in range(ncol):
                B[i * ld + c] -= x * B[k * ld + c]
        x = L[i * n + i]
        for c in range(ncol):
            B[i * ld + c] /= x


cdef void _backward(const double* L, Py_ssize_t n, double* B, Py_ssize_t ld) noexcept nogil:
    """B[:n, :ld] := L^{-T} B (L lower n x n; B row-major n x ld)."""
    cdef Py_ssize_t i, k, c
    cdef double x
    for i in range(n - 1, -1, -1):
        for k in range(i + 1, n):
            x = L[k * n + i]
            for c in range(ld):
                B[i * ld + c] -= x * B[k * ld + c]
        x = L[i * n + i]
        for c in range(ld):
            B[i * ld + c] /= x


cdef void _lower_inverse_gram(const double* L, Py_ssize_t n, double* out) noexcept nogil:
    """out = (L L')^{-1} = L^{-T} L^{-1} (n x n, full) for L lower."""
    cdef Py_ssize_t i, j, k
    cdef double acc
    for j in range(n):  # out's lower triangle := L^{-1}, column by column
        out[j * n + j] = 1.0 / L[j * n + j]
        for i in range(j + 1, n):
            acc = 0.0
            for k in range(j, i):
                acc += L[i * n + k] * out[k * n + j]
            out[i * n + j] = -acc / L[i * n + i]
    for i in range(n):  # (L^{-T} L^{-1})_ij = sum_{k >= max(i,j)} Li_ki Li_kj; i <= j first
        for j in range(i, n):
            acc = 0.0
            for k in range(j, n):
                acc += out[k * n + i] * out[k * n + j]
            out[i * n + j] = acc  # upper triangle: rows i, columns j >= i (read below: k >= j)
    for i in range(n):
        for j in range(i):
            out[i * n + j] = out[j * n + i]


cdef void _upper_inverse_gram(const double* R, Py_ssize_t p, Py_ssize_t ld,
                              double* P) noexcept nogil:
    """P = (R'R)^{-1} = R^{-1} R^{-T} (p x p) for the leading p x p upper block of R (row
    length ld)."""
    cdef Py_ssize_t i, j, k
    cdef double acc
    for j in range(p):  # P := R^{-1} (upper), column by column
        for i in range(p):
            P[i * p + j] = 0.0
        P[j * p + j] = 1.0 / R[j * ld + j]
        for i in range(j - 1, -1, -1):
            acc = 0.0
            for k in range(i + 1, j + 1):
                acc += R[i * ld + k] * P[k * p + j]
            P[i * p + j] = -acc / R[i * ld + i]
    for i in range(p):  # P := P P' (in place from the top-left: row i needs rows >= i)
        for j in range(i, p):
            acc = 0.0
            for k in range(j, p):
                acc += P[i * p + k] * P[j * p + k]
            P[i * p + j] = acc
    for i in range(p):
        for j in range(i):
            P[i * p + j] = P[j * p + i]


cdef int _newton_direction(const double* H, const double* g, const int* free, Py_ssize_t K,
                           double* d) noexcept nogil:
    """d = |H_ff|^{-1} g_f on the free entries (0 elsewhere), |H_ff| = V |Lambda| V' from the
    eigen-decomposition of H_ff (eigenvalues floored at 1e-10 of the largest): Newton's
    step where H_ff is positive definite, else a descent direction that moves away from a
    saddle or maximum.  Returns 0 if H_ff is positive definite, 1 if not."""
    cdef Py_ssize_t i, j, n = 0
    cdef Py_ssize_t idx[KMAX]
    cdef double lam[KMAX]
    cdef double Hf[KMAX * KMAX]
    cdef double V[KMAX * KMAX]
    cdef double c[KMAX]
    cdef double top = 0.0, floor
    cdef int pd = 1
    for i in range(K):
        d[i] = 0.0
        if free[i]:
            idx[n] = i
            n += 1
    for i in range(n):
        for j in range(n):
            Hf[i * n + j] = H[idx[i] * K + idx[j]]
    _eigh(Hf, n, lam, V)
    for i in range(n):
        top = fmax(top, fabs(lam[i]))
    floor = fmax(1e-10 * top, 1e-300)
    for i in range(n):
        pd = pd and lam[i] > floor
        c[i] = 0.0
        for j in range(n):
            c[i] += V[j * n + i] * g[idx[j]]
        c[i] /= fmax(fabs(lam[i]), floor)
    for j in range(n):
        for i in range(n):
            d[idx[j]] += V[j * n + i] * c[i]
    return 0 if pd else 1


cdef void _eigh(const double* H, Py_ssize_t K, double* lam, double* V) noexcept nogil:
    """Eigenvalues lam and eigenvectors (V's columns) of the symmetric K x K H by cyclic
    Jacobi rotations (K <= KMAX)."""
    cdef Py_ssize_t i, j, k, _sweep
    cdef double A[KMAX * KMAX]
    cdef double off, tot, theta, t, cs, sn, akp, akq, vkp, vkq, app, aqq, apq
    for i in range(K * K):
        A[i] = H[i]
        V[i] = 0.0
    for i in range(K):
        V[i * K + i] = 1.0
    for _sweep in range(50):
        off = 0.0
        tot = 0.0
        for i in range(K):
            for j in range(K):
                tot += A[i * K + j] * A[i * K + j]
                if i != j:
                    off += A[i * K + j] * A[i * K + j]
        if off <= 1e-30 * tot:
            break
        for i in range(K - 1):
            for j in range(i + 1, K):
                apq = A[i * K + j]
                if apq == 0.0:
                    continue
                app, aqq = A[i * K + i], A[j * K + j]
                theta = (aqq - app) / (2.0 * apq)
                t = (1.0 if theta >= 0 else -1.0) / (fabs(theta) + sqrt(theta * theta + 1.0))
                cs = 1.0 / sqrt(t * t + 1.0)
                sn = t * cs
                for k in range(K):  # A := A J (columns i, j)
                    akp, akq = A[k * K + i], A[k * K + j]
                    A[k * K + i] = cs * akp - sn * akq
                    A[k * K + j] = sn * akp + cs * akq
                for k in range(K):  # A := J'A (rows i, j)
                    akp, akq = A[i * K + k], A[j * K + k]
                    A[i * K + k] = cs * akp - sn * akq
                    A[j * K + k] = sn * akp + cs * akq
                for k in range(K):
                    vkp, vkq = V[k * K + i], V[k * K + j]
                    V[k * K + i] = cs * vkp - sn * vkq
                    V[k * K + j] = sn * vkp + cs * vkq
    for i in range(K):
        lam[i] = A[i * K + i]


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
