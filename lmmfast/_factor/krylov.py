r"""Crossed scalar random effects at any size: the Schur complement is applied, never formed.

For ``y ~ X + (1 | g1) + (1 | g2) [+ (1 | g3) ...]`` with g1 the factor with the most
levels, A = Lambda'Z'WZ Lambda + I is partitioned into term 1 (A11, diagonal) and the rest
(m effects).  The exact method (crossed.py) forms the dense m x m Schur complement
S = A22 - A21 A11^{-1} A12: 8 m^2 bytes and m^3/3 flops per evaluation.  Here S is only
applied, by one fused sweep over the sparse level-pair counts (src/_krylov.pyx), and

- the Schur part for [X y] comes from Jacobi-preconditioned conjugate gradients on the
  p+1 right-hand sides, to a relative residual of CG_TOL.  Since A >= I, S >= I, and with
  the residual R the computed quadratic form is certified: 0 <= true - computed <= R'MR
  (M the Jacobi diagonal); the bound on the penalized RSS is in the report.  X and y
  are first orthogonalized (y becomes the OLS residual, X centred), a unit upper
  triangular change of basis that leaves log|R_X| and the penalized RSS unchanged but
  keeps the right-hand sides small (an uncentred response cancels terms ~13 n);
- log|S| = sum log M + log|S~| (S~ = M^{-1/2} S M^{-1/2}, unit diagonal) by stochastic
  Lanczos quadrature with fixed seeded Rademacher probes (common random numbers: the
  objective is a deterministic function of theta).  The few outlying eigen-directions U
  of S~ (below the cluster near 1: each later term's mean direction, plus up to
  DEFLATE_MAX more if the first evaluation's Ritz values show them) are deflated:
  log|S~| = tr(U' log(S~) U) (Lanczos from each u, converged) + E[(Pz)' log(S~) (Pz)],
  P = I - UU'.  Unbiased for any orthonormal U; U only lowers the variance.  Each
  probe's Lanczos tridiagonal comes from the coefficients of CG on S~ x = Pz (to
  PROBE_TOL, in one block CG with the [X y] right-hand sides, one sweep per step), whose
  solutions the gradient needs too;
- the gradient: 2/theta_i (l_i - tr_i(A^{-1})) for the log-determinant, with the traces of
  S^{-1} against each term's block by the same probes (the deflated part exactly; the
  identity part of S~^{-1} as a control variate), and the penalized RSS and REML parts from
  the CG solutions, as in crossed.py.

The sweep reads N with its columns in decreasing order of count (_by_count), or runs on
Dask workers over persisted blocks of N (krylov_dask.py, a fit from a Dask DataFrame).
theta: L-BFGS-B from moment estimates, stopped early (LBFGS_OPTIONS), then Newton steps with
the optimum check's Hessian (check_optimum).

The optimizer runs with FIT_PROBES (8) probes; at the optimum, `report` re-evaluates with
NPROBES (16) fresh ones: the objective with its Monte Carlo standard error, the uncertainty
of theta-hat that the fit's probe noise implies (1e-8 relative of theta at MovieLens 1/10
size, against a statistical SE of 1e-3: 8 probes are plenty for theta, 16 for the reported
objective), and per probe certified Gauss-Radau brackets on its quadratic form.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import ArpackError, ArpackNoConvergence, LinearOperator, eigsh

from .. import _krylov
from .._errors import ArgumentError, DataError
from .._memory import HEADROOM, available_bytes
from .._optimize import DECREMENT_TOL
from .._sources.crossprod import CrossProducts
from .._terms import ReTerm

NPROBES = 16  # probes of the final re-evaluation (report): the objective's MC SE
FIT_PROBES = 8  # probes during the optimization (common random numbers, see report)
SEED = 20261201
CG_TOL = 1e-10  # relative residual of each right-hand side
CG_MAXITER = 1000
PROBE_TOL = 1e-6  # the same for the deflation vectors and probes (quadrature and gradient;
# 1e-8 changed theta-hat by < 1e-8 relative at MovieLens 1/10 size, for 12% more sweeps)
DEFLATE_MAX = 4
DEFLATE_BELOW = 0.5  # deflate further Ritz values below this fraction of their median
# the automatic choice: the exact dense Schur complement would need more memory than is
# available, or more than EXACT_BUDGET_S seconds at EXACT_FLOPS for EXACT_EVALS evaluations
EXACT_FLOPS = 2e10
EXACT_EVALS = 40
EXACT_BUDGET_S = 120.0
# L-BFGS-B: the probes' gradient is not exactly the derivative of their objective, so near
# the optimum (theta within ~1e-6 relative) line searches fail; stop them early (scaled
# gradient 1e-4: theta within ~1e-2 relative), then Newton steps in check_optimum
LBFGS_OPTIONS = {"ftol": 1e-9, "gtol": 1e-4, "maxls": 6}
NEWTON_STEPS = 6  # then at most this many Newton steps (check_optimum)
NEWTON_TOL = 1e-6  # deviance units: no Newton step below this decrement (theta ~1e-6
# relative at MovieLens size, 1e-3 of its statistical SE)
NEWTON_SLACK = 1e-4  # a Newton step may raise the objective by this much (deviance units)
PARALLEL_NNZ = 200_000  # below this many level pairs, one thread
VALUE_CACHE = 8  # recent evaluations whose values are kept (the report's point again)


def supports(terms: list[ReTerm]) -> bool:
    """Two or more terms, every one a scalar (intercept-like) term."""
    return len(terms) >= 2 and all(t.q == 1 for t in terms)


def exact_too_costly(terms: list[ReTerm]) -> bool:
    """Whether the exact method's dense m x m Schur complement would not fit in memory
    or would exceed the time budget (m^3/3 flops per evaluation)."""
    m = sum(t.nlevels * t.q for t in terms[1:])
    memory = 4 * 8 * float(m) ** 2 > HEADROOM * available_bytes()
    seconds = EXACT_EVALS * float(m) ** 3 / 3 / EXACT_FLOPS
    return memory or seconds > EXACT_BUDGET_S


@dataclass
class KrylovReport:
    """The approximation's own error estimates at theta-hat (fit.optsummary.krylov)."""

    objective: float  # re-evaluated with fresh probes
    objective_se: float  # its Monte Carlo standard error
    objective_fit: float  # with the probes the optimizer used
    theta_se_approx: np.ndarray  # uncertainty of theta-hat implied by the probe noise
    theta_se_stat: np.ndarray  # statistical SE of theta-hat (2 H^{-1}, H the Hessian)
    pwrss_bound: float  # certified: 0 <= computed - exact penalized RSS <= this
    probes: int
    seed: int
    deflated: int
    evaluations: int
    cg_iterations: float  # per evaluation, for the p+1 right-hand sides
    lanczos_steps: float  # per evaluation, the longest probe
    tolerance: dict
    fit_probes: int = FIT_PROBES  # probes of the optimization (theta_se_approx is for them)
    probe_lower: np.ndarray | None = None  # Gauss-Radau bounds on each fresh probe's
    probe_upper: np.ndarray | None = None  # quadratic form (Pz)' log(S~) (Pz)
    logdet_bracket: tuple | None = None  # the same for the estimate of log|S~| (see
    # KrylovFactor.radau_brackets): bounds on the quadrature error, not the MC error

    def to_json(self) -> dict:
        """Plain JSON values (lmmfast.save)."""
        out = {}
        for k, v in self.__dict__.items():
            out[k] = (
                v.tolist()
                if isinstance(v, np.ndarray)
                else (list(v) if isinstance(v, tuple) else v)
            )
        return out

    @classmethod
    def from_json(cls, d: dict) -> KrylovReport:
        """The inverse of to_json (lmmfast.load)."""
        d = dict(d)
        for k in ("theta_se_approx", "theta_se_stat", "probe_lower", "probe_upper"):
            if d.get(k) is not None:
                d[k] = np.asarray(d[k], dtype=np.float64)
        if d.get("logdet_bracket") is not None:
            d["logdet_bracket"] = tuple(d["logdet_bracket"])
        return cls(**d)

    def line(self) -> str:
        """One line for summary()."""
        rel = np.max(self.theta_se_approx / np.maximum(np.abs(self.theta_se_stat), 1e-300))
        return (
            f"Krylov approximation: objective {self.objective:.4f} +/- {self.objective_se:.2g} "
            f"(MC SE, {self.probes} fresh probes); theta uncertainty from it "
            f"{np.max(self.theta_se_approx):.2g} ({rel:.2g} of its statistical SE)"
        )


class KrylovFactor:
    """The objective's pieces for crossed scalar terms by CG and stochastic Lanczos."""

    kind = "krylov"
    has_gradient = True

    def __init__(self, cp: CrossProducts, terms: list[ReTerm], nprobes: int = FIT_PROBES,
                 seed: int = SEED):  # fmt: skip
        if not supports(terms):
            raise ArgumentError(
                "method='krylov' supports crossed scalar terms only, e.g. "
                "(1 | user) + (1 | item); this model has "
                + ", ".join(f"({' + '.join(t.cnames)} | {t.group})" for t in terms)
                + ". Use method='exact'."
            )
        self.terms = terms
        self.n1 = terms[0].nlevels
        sizes = [t.nlevels for t in terms[1:]]
        self.off = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.m = int(self.off[-1])
        self.col_term = np.repeat(np.arange(1, len(terms)), sizes)
        self.d1 = cp.D[0][:, 0, 0].copy()
        self.d2 = np.concatenate([D[:, 0, 0] for D in cp.D[1:]])
        self.g1 = cp.ZXY[0][:, 0, :].copy()  # Z_1'W[X y], (n1, p+1)
        self.g2 = np.concatenate([z[:, 0, :] for z in cp.ZXY[1:]])  # (m, p+1)
        self.N, self.Off = _coupling(cp, self.off, self.n1, self.m)
        self.unit = bool(np.all(self.N.data == 1.0))
        self.perm, self.indptr, self.indices, self.data = _by_count(self.N)
        self.nthreads = min(2 if self.N.nnz >= PARALLEL_NNZ else 1, os.cpu_count() or 1)
        self.Ucen = _orthogonalizer(cp.XtXy)  # [X y] K has orthogonal columns, K = Ucen^{-1}
        self.nprobes, self.seed = nprobes, seed
        self.Z = _rademacher(self.m, nprobes, seed)
        self.extra = None  # outliers beyond the mean directions: found at the first update
        self._last = None
        self._values = {}  # (theta, probes) -> (ld, C) of recent evaluations
        self.sweep = None  # or the sweeps' runner on Dask workers (krylov_dask.attach)
        self.stats = {"evaluations": 0, "cg": 0, "lanczos": 0, "eig": 0}
        self._work = {}

    # ----- the operator -------------------------------------------------------------------
    def _apply(self, V: np.ndarray, s: np.ndarray, c: np.ndarray, diag: np.ndarray, off=True):
        V = np.ascontiguousarray(V)
        squeeze = V.ndim == 1
        if squeeze:
            V = V[:, None]
        k = V.shape[1]
        if self.sweep is not None:  # on the workers (krylov_dask.py)
            out = diag[:, None] * V - c[:, None] * self.sweep.apply(c[:, None] * V, s)
        else:
            if k not in self._work:
                self._work = {k: np.empty((self.nthreads, self.m + 1, k))}
            p = self.perm  # the kernel's column order (most frequent first)
            Vp, outp = np.ascontiguousarray(V[p]), np.empty_like(V)
            _krylov.schur_apply(self.indptr, self.indices, self.data, self.unit, s, c[p],
                                diag[p], Vp, outp, self._work[k], self.nthreads)  # fmt: skip
            out = np.empty_like(V)
            out[p] = outp
        if off and self.Off is not None:
            out += c[:, None] * (self.Off @ (c[:, None] * V))
        return out[:, 0] if squeeze else out

    def _diag(self, s: np.ndarray) -> np.ndarray:
        """diag(N' diag(s) N), from the sweep's copy of N."""
        accp = np.empty(self.m)
        _krylov.schur_diag(self.indptr, self.indices, self.data, self.unit, s, accp)
        out = np.empty(self.m)
        out[self.perm] = accp
        return out

    def _S(self, V: np.ndarray) -> np.ndarray:
        """S~ V (Jacobi-scaled Schur complement)."""
        return self._apply(V, self._s, self._ct, self._dt)

    # ----- update -------------------------------------------------------------------------
    def update(self, Ts: list[np.ndarray]) -> tuple[float, np.ndarray]:
        th = np.array([T[0, 0] for T in Ts])
        key = (self.seed, self.nprobes)
        if self._last is not None and self._last[0] == th.tobytes():  # the same point again:
            if key in self._last[1]:  # the state (solves, modes) is that point's
                return self._last[1][key]
            if (th.tobytes(), key) in self._values:  # evaluated there before with these
                # probes: the value; the state (solves, modes) is this point's already
                self._last[1][key] = self._values[(th.tobytes(), key)]
                return self._last[1][key]
        self.stats["evaluations"] += 1
        self.theta = th
        t1 = th[0]
        c = th[self.col_term]
        self.a1 = t1 * t1 * self.d1 + 1.0
        self._s = t1 * t1 / self.a1
        a2 = c * c * self.d2 + 1.0
        M = a2 - c * c * self._diag(self._s)
        if not np.all(M > 0):
            raise DataError("the random-effects system is not positive definite")
        self.M = M
        self.r = 1.0 / np.sqrt(M)
        self._ct = c * self.r
        self._dt = a2 / M
        self._c = c
        # right-hand sides: h = g2 - A21 A11^{-1} g1, scaled and orthogonalized
        g1 = t1 * self.g1
        g2 = c[:, None] * self.g2
        w1 = g1 / self.a1[:, None]
        h = g2 - c[:, None] * (self.N.T @ (t1 * w1))
        hK = _solve_upper_right(h, self.Ucen) * self.r[:, None]
        # one block CG: the p+1 right-hand sides, the deflation vectors U and the projected
        # probes; CG's coefficients give each column's Lanczos tridiagonal (quadrature)
        U = self._deflation()
        Zp = self.Z - U @ (U.T @ self.Z)
        p1, nd = hK.shape[1], U.shape[1]
        tol = np.r_[np.full(p1, CG_TOL), np.full(nd + self.nprobes, PROBE_TOL)]
        X, T, its, Rcg = self._cg(np.hstack([hK, U, Zp]), tol)
        R = Rcg[:, :p1]  # CG's recursive residual (the certified bound: the true one)
        if self.extra is None:
            self.extra = self._outliers(T[p1 + nd :])
            if self.extra:  # deflate them too, from this evaluation on
                self.stats["evaluations"] -= 1
                return self.update(Ts)
        self.stats["cg"] += int(its[:p1].max())
        self.stats["lanczos"] += int(its[p1:].max(initial=0))
        XK = X[:, :p1]
        C2K = XK.T @ hK + R.T @ XK
        C2K = 0.5 * (C2K + C2K.T)
        C = g1.T @ w1 + self.Ucen.T @ C2K @ self.Ucen
        self._hK, self._XK = hK, X[:, :p1]  # the true residual hK - S~ XK on demand
        self.U, self.Zp = U, Zp
        self.XU, self.XZ = X[:, p1 : p1 + nd], X[:, p1 + nd :]
        self.V2 = self.r[:, None] * (XK @ self.Ucen)  # S^{-1} h in the original basis
        self.V1 = (g1 - t1 * (self.N @ (c[:, None] * self.V2))) / self.a1[:, None]
        quad = np.array([_gauss_log(t[0], t[1]) for t in T[p1:]]) * np.sum(
            np.hstack([U, Zp]) ** 2, 0
        )
        self.deflated_part = float(np.sum(quad[:nd]))
        self.probe_values = quad[nd:]
        ldS = self.deflated_part + float(np.mean(self.probe_values))
        ld = np.sum(np.log(self.a1)) + np.sum(np.log(M)) + ldS
        self._state_seed = key  # the probes behind probe_values, XU, XZ
        self._T = T[p1:]  # deflation vectors' and probes' tridiagonals (Gauss-Radau)
        self._norms = np.sum(np.hstack([U, Zp]) ** 2, 0)
        if self._last is None or self._last[0] != th.tobytes():
            self._last = (th.tobytes(), {})
        self._last[1][key] = (float(ld), C)
        self._values[(th.tobytes(), key)] = (float(ld), C)
        while len(self._values) > VALUE_CACHE:
            self._values.pop(next(iter(self._values)))
        return float(ld), C

    def _cg(self, B: np.ndarray, tol: np.ndarray):
        """Solve S~ X = B by CG, each column to its relative residual tol (only the columns
        not yet converged are swept).  Returns X, each column's Lanczos tridiagonal
        (diagonal, off-diagonal) from the CG coefficients, its iteration count, and the
        recursive residuals B - S~ X (equal to the true ones to rounding)."""
        k = B.shape[1]
        X = np.zeros_like(B)
        R = B.copy()
        P = R.copy()
        rr = np.einsum("ij,ij->j", R, R)
        stop = tol**2 * rr
        alphas = [[] for _ in range(k)]
        betas = [[] for _ in range(k)]
        active = np.flatnonzero(rr > 0)
        its = np.zeros(k, dtype=int)
        while len(active) and its.max() < CG_MAXITER:
            Pa = P[:, active]
            Q = self._S(Pa)
            pq = np.einsum("ij,ij->j", Pa, Q)
            alpha = rr[active] / pq
            X[:, active] += alpha * Pa
            R[:, active] -= alpha * Q
            rr_new = np.einsum("ij,ij->j", R[:, active], R[:, active])
            beta = rr_new / rr[active]
            P[:, active] = R[:, active] + beta * Pa
            for col, a_, b_ in zip(active, alpha, beta):
                alphas[col].append(a_)
                betas[col].append(b_)
            rr[active] = rr_new
            its[active] += 1
            active = active[rr_new > stop[active]]
        T = [_cg_tridiagonal(np.array(a_), np.array(b_)) for a_, b_ in zip(alphas, betas)]
        return X, T, its, R

    # ----- log-determinant ----------------------------------------------------------------
    def _deflation(self) -> np.ndarray:
        """U (orthonormal): the mean direction of each later term (the scaled constant vector
        on its levels, i.e. "term 1 up, term k down": the outlier of crossed designs, found
        within 0.1% of its eigenvector on the MovieLens-shaped data), and, where the first
        evaluation's Ritz values showed further outliers (self.extra of them), the smallest
        eigenvectors of the rest by ARPACK from a fixed start.  Deterministic in theta."""
        sq = np.sqrt(self.M)
        cols = []
        for k in range(len(self.terms) - 1):
            v = np.zeros(self.m)
            v[self.off[k] : self.off[k + 1]] = sq[self.off[k] : self.off[k + 1]]
            cols.append(v)
        U0 = np.linalg.qr(np.column_stack(cols))[0]
        k = min(self.extra or 0, self.m - U0.shape[1] - 2)
        if k <= 0:
            return U0
        count = [0]

        def mv(v):  # S~ on the complement of U0, the identity on U0
            count[0] += 1
            w = v - U0 @ (U0.T @ v)
            Sw = self._S(w)
            return Sw - U0 @ (U0.T @ Sw) + (v - w)

        op = LinearOperator((self.m, self.m), matvec=mv, dtype=np.float64)
        v0 = _rademacher(self.m, 1, self.seed + 7)[:, 0]
        try:
            _, Ue = eigsh(op, k=k, which="SA", v0=v0, ncv=min(self.m - 1, max(2 * k + 1, 12)),
                          tol=1e-6, maxiter=200)  # fmt: skip
        except (ArpackNoConvergence, ArpackError):
            Ue = np.zeros((self.m, 0))
        self.stats["eig"] += count[0]
        return np.linalg.qr(np.hstack([U0, Ue]))[0]

    def _outliers(self, T: list) -> int:
        """How many Ritz values of the probes' Lanczos tridiagonals lie below DEFLATE_BELOW
        x their median with a quadrature weight above 0.01/m (an eigen-direction the probe
        really sees, weight ~1/m, not the remnant of a deflated one), the most in any one
        probe, at most DEFLATE_MAX."""
        from scipy.linalg import eigh_tridiagonal

        ritz, weight = [], []
        for d, e, _ in T:
            w, V = eigh_tridiagonal(d, e) if len(d) > 1 else (d, np.ones((1, 1)))
            ritz.append(w)
            weight.append(V[0] ** 2)
        med = np.median(np.concatenate(ritz))
        return min(DEFLATE_MAX, max(
            int(np.sum((r < DEFLATE_BELOW * med) & (w > 0.01 / self.m)))
            for r, w in zip(ritz, weight)))  # fmt: skip

    def radau_brackets(self) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
        """Certified lower and upper bounds on each quadratic form (Pz)' log(S~) (Pz) of the
        last update's probes, by Gauss-Radau with nodes at bounds of the spectrum of S~:
        lambda_min >= 1 / max(M) (S >= I) and lambda_max <= the largest absolute row sum
        of S~ (Gershgorin; S~ has a unit diagonal and off-diagonal entries
        -ct_j ct_l (N' s N)_jl <= 0, plus ct_j ct_l Off_jl >= 0), one sweep.  Also the
        bracket of log|S~|'s estimate: the deflated part's bounds plus the probes' mean.
        The bounds hold for the exact Lanczos coefficients; CG's are used."""
        lo_node = 1.0 / float(np.max(self.M))
        ones = np.ones(self.m)
        g = -self._apply(ones, self._s, self._ct, np.zeros(self.m), off=False)
        rows = 1.0 + g - (self._dt - 1.0)
        if self.Off is not None:
            rows = rows + self._ct * (self.Off @ self._ct)
        hi_node = float(np.max(rows))
        lo = np.array([_radau_log(*t, lo_node) for t in self._T]) * self._norms
        hi = np.array([_radau_log(*t, hi_node) for t in self._T]) * self._norms
        nd = len(self._T) - len(self.probe_values)
        total = (
            float(np.sum(lo[:nd]) + np.mean(lo[nd:])),
            float(np.sum(hi[:nd]) + np.mean(hi[nd:])),
        )
        return lo[nd:], hi[nd:], total

    # ----- gradient -----------------------------------------------------------------------
    def gradient(self, Ts, beta, P, scale: float, reml: bool) -> np.ndarray:
        """d objective / d theta (scalar terms), at the last update; see the module notes."""
        if self._state_seed != (self.seed, self.nprobes):  # cached, last with other probes
            self._last = None
            self.update(Ts)
        th = self.theta
        U, Zp, XU, XZ = self.U, self.Zp, self.XU, self.XZ
        K = self.nprobes
        r2 = self.r**2
        # traces of S^{-1} E_k = tr(S~^{-1} r^2 E_k), rest terms k >= 1, and term 1's
        # tr(S^{-1} A21 A11^{-2} A12) = tr(S~^{-1} B~), B~ = ct N' diag(s / a1) N ct
        s1 = self._s / self.a1
        zeros = np.zeros(self.m)
        BUZ = -self._apply(np.hstack([U, Zp]), s1, self._ct, zeros, off=False)  # one sweep
        BU, BZ = BUZ[:, : U.shape[1]], BUZ[:, U.shape[1] :]
        bdiag = self._diag(s1)
        trB = float(np.sum(self._ct**2 * bdiag))
        nt = len(self.terms)
        per = np.zeros((K, nt))  # per-probe estimates of the traces (control variate applied)
        exact = np.zeros(nt)
        trPBP = trB - float(np.sum(U * BU))
        exact[0] = np.sum(1.0 / self.a1) + float(np.sum(XU * BU)) + trPBP
        per[:, 0] = np.einsum("ij,ij->j", XZ - Zp, BZ)
        for k in range(1, nt):
            sel = slice(int(self.off[k - 1]), int(self.off[k]))
            D = r2[sel, None]
            trPDP = float(np.sum(r2[sel])) - float(np.sum(U[sel] ** 2 * D))
            exact[k] = float(np.sum(XU[sel] * D * U[sel])) + trPDP
            per[:, k] = np.einsum("ij,ij->j", (XZ[sel] - Zp[sel]) * D, Zp[sel])
        traces = exact + per.mean(axis=0)
        sizes = np.array([t.nlevels for t in self.terms])
        safe = np.where(th > 0, th, 1.0)
        g = np.where(th > 0, 2.0 / safe * (sizes - traces), 0.0)
        self.grad_probes = np.where(th > 0, -2.0 / safe, 0.0) * per  # (K, nt)
        # penalized RSS: -2 s'Lambda_i u, s = Z'W(y - X beta) - Z'WZ Lambda u
        u = self._modes(self.V1, self.V2, beta)
        Gb = self._G_times([t * x[:, None] for t, x in zip(th, u)])
        ZX = [self.g1] + [self.g2[self.off[k] : self.off[k + 1]] for k in range(nt - 1)]
        s = [zx[:, -1] - zx[:, :-1] @ beta - gb[:, 0] for zx, gb in zip(ZX, Gb)]
        g += scale * np.array([-2 * np.sum(st * ut) for st, ut in zip(s, u)])
        if reml and len(beta):
            v = self._split(self.V1[:, :-1], self.V2[:, :-1])
            Gv = self._G_times([t * vt for t, vt in zip(th, v)])
            H = [zx[:, :-1] - gv for zx, gv in zip(ZX, Gv)]
            g += np.array([-2 * t * np.sum((h @ P) * h) for t, h in zip(th, H)])
        return g

    def _split(self, x1: np.ndarray, x2: np.ndarray) -> list[np.ndarray]:
        return [x1] + [x2[self.off[k] : self.off[k + 1]] for k in range(len(self.terms) - 1)]

    def _modes(self, V1, V2, beta) -> list[np.ndarray]:
        u1 = V1[:, -1] - V1[:, :-1] @ beta
        u2 = V2[:, -1] - V2[:, :-1] @ beta
        return [x[:, 0] for x in self._split(u1[:, None], u2[:, None])]

    def _G_times(self, v: list[np.ndarray]) -> list[np.ndarray]:
        """Z'WZ v for scalar terms, v per term as (l, k)."""
        v1, v2 = v[0], np.vstack(v[1:])
        o1 = self.d1[:, None] * v1 + self.N @ v2
        o2 = self.d2[:, None] * v2 + self.N.T @ v1
        if self.Off is not None:
            o2 = o2 + self.Off @ v2
        return self._split(o1, o2)

    def spherical_modes(self, beta: np.ndarray) -> list[np.ndarray]:
        """u = A^{-1} Lambda'Z'W(y - X beta) per term, (l, 1), at the last update."""
        return [x[:, None] for x in self._modes(self.V1, self.V2, beta)]

    def pwrss_bound(self, beta: np.ndarray) -> float:
        """Certified bound on the penalized RSS's error (S >= I): ||M^{1/2} R v||^2."""
        v = self.Ucen @ np.append(-beta, 1.0)
        rv = (self._hK - self._S(self._XK)) @ v  # the true residual, one sweep
        return float(np.sum(self.M * rv * rv))

    def inverse_blocks(self) -> list[np.ndarray]:
        """diag(A^{-1}) per term as (l, 1, 1) (conditional variances / sigma^2 theta^2), by
        probing with the last update's probes (after the fit: the report's 16 fresh ones),
        with the deflated part exact and the identity as a control variate:

        - later terms: diag(S^{-1}) = r^2 diag(S~^{-1}), diag(S~^{-1}) = rowsum(XU * U)
          + diag(P) + mean_k (S~^{-1} Pz_k - Pz_k) * Pz_k  (P = I - UU', E[Pz (Pz)'] = P);
        - term 1: 1/a1 + b_i' S^{-1} b_i / a1^2, b_i' the i-th row of B = t1 N diag(c r)
          acting on S~: rowsum(BXU * BU) + diag(B P B') + mean_k (B(XZ_k - Pz_k)) * (B Pz_k).

        Unbiased; self.inverse_se holds each entry's Monte Carlo SE (std over the probes /
        sqrt(K)).  The error is that of the off-diagonal mass of S~^{-1} - I seen by one
        entry: at MovieLens-like designs S~^{-1} is close to I off the deflated direction,
        and term 1's entries are dominated by the exact 1/a1."""
        K = self.XZ.shape[1]
        U, XU, Zp, XZ = self.U, self.XU, self.Zp, self.XZ
        r2 = self.r**2
        per2 = (XZ - Zp) * Zp  # (m, K)
        d2 = np.sum(XU * U, 1) + (1.0 - np.sum(U * U, 1)) + per2.mean(1)
        se2 = per2.std(1, ddof=1) / np.sqrt(K) * r2
        t1, w = self.theta[0], self._c * self.r
        BU, BXU = (t1 * (self.N @ (w[:, None] * M)) for M in (U, XU))
        BZ, BE = (t1 * (self.N @ (w[:, None] * M)) for M in (Zp, XZ - Zp))
        diagBB = t1 * t1 * (self.N.multiply(self.N) @ (w * w))
        per1 = BE * BZ
        quad = np.sum(BXU * BU, 1) + diagBB - np.sum(BU * BU, 1) + per1.mean(1)
        d1 = 1.0 / self.a1 + quad / self.a1**2
        se1 = per1.std(1, ddof=1) / np.sqrt(K) / self.a1**2
        parts, ses = [d1], [se1]
        for k in range(len(self.terms) - 1):
            sel = slice(int(self.off[k]), int(self.off[k + 1]))
            parts.append(r2[sel] * d2[sel])
            ses.append(se2[sel])
        self.inverse_se = ses
        return [p[:, None, None] for p in parts]

    # ----- start and report ---------------------------------------------------------------
    def set_probes(self, seed: int, nprobes: int | None = None) -> None:
        """Use nprobes (default: as now) fresh Rademacher probes from seed."""
        self.seed = seed
        self.nprobes = self.nprobes if nprobes is None else nprobes
        self.Z = _rademacher(self.m, self.nprobes, seed)


def _coupling(cp: CrossProducts, off: np.ndarray, n1: int, m: int):
    """N: term 1's levels x the rest's effects (CSR, int32 indices); Off: the rest's pairs
    among themselves (symmetric CSR) or None."""
    rows, cols, vals, orows, ocols, ovals = [], [], [], [], [], []
    for pr in cp.pairs:
        o = pr.O[:, 0, 0]
        if pr.t == 0:
            rows.append(pr.levels[:, 0].astype(np.int32))
            cols.append((off[pr.u - 1] + pr.levels[:, 1]).astype(np.int32))
            vals.append(o)
        else:
            a = (off[pr.t - 1] + pr.levels[:, 0]).astype(np.int32)
            b = (off[pr.u - 1] + pr.levels[:, 1]).astype(np.int32)
            orows += [a, b]
            ocols += [b, a]
            ovals += [o, o]
    N = sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n1, m)
    )
    N.sum_duplicates()
    Off = None
    if orows:
        Off = sp.csr_matrix(
            (np.concatenate(ovals), (np.concatenate(orows), np.concatenate(ocols))), shape=(m, m)
        )
    return N, Off


def _by_count(N: sp.csr_matrix):
    """The sweep's copy of N with its columns in decreasing order of count (the frequent
    levels' rows of V share cache lines and pages: at MovieLens-32M size 1.3-1.4x faster
    sweeps): perm (kernel column j is column perm[j]), int64 indptr, int32 indices (in
    N's order within each row: any order gives the same sums up to rounding) and N's
    counts."""
    counts = np.bincount(N.indices, minlength=N.shape[1])
    perm = np.argsort(-counts, kind="stable")
    rank = np.empty(N.shape[1], dtype=np.int32)
    rank[perm] = np.arange(N.shape[1], dtype=np.int32)
    return perm, N.indptr.astype(np.int64), rank[N.indices], N.data


def _orthogonalizer(XtXy: np.ndarray) -> np.ndarray:
    """Unit upper triangular U with [X y] U^{-1} orthogonal columns (identity if singular)."""
    try:
        R = np.linalg.cholesky(XtXy).T
    except np.linalg.LinAlgError:
        return np.eye(len(XtXy))
    return R / np.diag(R)[:, None]


def _solve_upper_right(H: np.ndarray, U: np.ndarray) -> np.ndarray:
    """H U^{-1}."""
    from scipy.linalg import solve_triangular

    return solve_triangular(U, H.T, trans="T", lower=False).T


def _rademacher(m: int, k: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 2, size=(m, k), dtype=np.int8).astype(np.float64) * 2.0 - 1.0


def _cg_tridiagonal(alpha: np.ndarray, beta: np.ndarray):
    """The Lanczos tridiagonal of CG's Krylov space from its step lengths alpha and
    beta_j = |r_{j+1}|^2 / |r_j|^2 (Saad, Iterative Methods, section 6.7.3), and the
    off-diagonal entry that the next step would add (for Gauss-Radau)."""
    if not len(alpha):
        return np.ones(1), np.zeros(0), 0.0
    d = 1.0 / alpha
    d[1:] += beta[:-1] / alpha[:-1]
    return d, np.sqrt(beta[:-1]) / alpha[:-1], float(np.sqrt(beta[-1]) / alpha[-1])


def _gauss_log(alpha: np.ndarray, beta: np.ndarray) -> float:
    """e1' log(T) e1 for the Lanczos tridiagonal T (Gauss quadrature)."""
    from scipy.linalg import eigh_tridiagonal

    if len(alpha) == 1:
        return float(np.log(max(alpha[0], 1e-300)))
    w, V = eigh_tridiagonal(alpha, beta)
    return float(np.sum(V[0] ** 2 * np.log(np.maximum(w, 1e-300))))


def _radau_log(alpha: np.ndarray, beta: np.ndarray, beta_next: float, node: float) -> float:
    """e1' log(T~) e1 for the Gauss-Radau extension T~ of the Lanczos tridiagonal T that has
    `node` as an eigenvalue (Golub and Meurant, Matrices, Moments and Quadrature, ch. 6):
    T~ = [[T, b e_k], [b e_k', node + delta_k]], (T - node I) delta = b^2 e_k.  Since the
    odd derivatives of log are positive, a node at or below the spectrum gives a lower
    bound on the quadratic form, one at or above it an upper bound."""
    from scipy.linalg import solve_banded

    k = len(alpha)
    if beta_next <= 0.0:  # the Krylov space is invariant: Gauss is exact
        return _gauss_log(alpha, beta)
    ab = np.zeros((3, k))
    ab[0, 1:], ab[1], ab[2, :-1] = beta, alpha - node, beta
    rhs = np.zeros(k)
    rhs[-1] = beta_next**2
    delta = solve_banded((1, 1), ab, rhs)
    return _gauss_log(np.r_[alpha, node + delta[-1]], np.r_[beta, beta_next])


def check_optimum(fg, s) -> bool:
    """check_optimum (lmmfast._optimize) from the gradient, then Newton steps: g at the
    optimum and H by forward differences of the gradient (common probes: the objective is
    smooth), k + 1 evaluations instead of ~k^2/2 + 2k; then Newton steps -H^{-1} g while
    the decrement exceeds NEWTON_TOL and the objective does not rise (NEWTON_SLACK), at
    most NEWTON_STEPS, H
    recomputed (at most twice) where a step did not shrink the decrement 100-fold.
    L-BFGS-B stops early (LBFGS_OPTIONS): from where it stops, the Newton steps converge
    faster than its last iterations.  Sets s.theta, s.fmin, s.gradient, s.hessian and
    s.newton_decrement at the end point; True if the optimum is doubtful."""
    x = s.theta
    f, g = fg(x)
    s.feval += 1
    H = _hessian(fg, x, g, s)
    dec, step = _newton(x, g, H, s.lower)
    refresh = 2
    for _ in range(NEWTON_STEPS):
        if not dec > NEWTON_TOL:
            break
        xn = np.maximum(x + step, s.lower)
        fn, gn = fg(xn)
        s.feval += 1
        if not fn < f + NEWTON_SLACK:  # a bad H: keep the point (the probes' gradient is
            break  # not exactly their objective's: at its root f may rise by ~1e-6)
        x, f, g = xn, fn, gn
        old, (dec, step) = dec, _newton(x, g, H, s.lower)
        if dec > 1e-2 * old and dec > NEWTON_TOL and refresh:  # slow: H far from here
            refresh -= 1
            H = _hessian(fg, x, g, s)
            dec, step = _newton(x, g, H, s.lower)
    s.theta, s.fmin = x, f
    s.gradient, s.hessian, s.newton_decrement = g, H, dec
    return s.newton_decrement > DECREMENT_TOL


def _hessian(fg, x, g, s) -> np.ndarray:
    """H by forward differences of the gradient (k evaluations), symmetrized."""
    k = len(x)
    h = 1e-4 * np.maximum(np.abs(x), 0.1)
    H = np.zeros((k, k))
    for i in range(k):
        _, gi = fg(x + h[i] * np.eye(k)[i])
        H[:, i] = (gi - g) / h[i]
    s.feval += k
    return 0.5 * (H + H.T)


def _newton(x, g, H, lower):
    """The Newton decrement g'H^{-1}g / 2 and step on the entries not held at their lower
    bound (inf and no step where that part of H is not positive definite)."""
    free = ~((x <= lower) & (g >= 0))
    step = np.zeros(len(x))
    if not free.any():
        return 0.0, step
    gf, Hf = g[free], H[np.ix_(free, free)]
    if not np.all(np.linalg.eigvalsh(Hf) > 0):
        return np.inf, step
    step[free] = -np.linalg.solve(Hf, gf)
    return float(-0.5 * gf @ step[free]), step


def report(dev, opt, fresh_seed: int | None = None) -> KrylovReport:
    """Re-evaluate the objective and gradient at opt.theta with fresh probes: the objective's
    Monte Carlo SE, and theta-hat's uncertainty H^{-1} Cov(g) H^{-1} from the probe noise of
    the gradient (H: opt.hessian, from check_optimum), beside the statistical SE
    sqrt(diag(2 H^{-1}))."""
    f = dev.factor
    stats = dict(f.stats)
    fit_seed, fit_k = f.seed, f.nprobes
    f.set_probes(SEED + 1 + fit_seed if fresh_seed is None else fresh_seed, NPROBES)
    try:
        dec = dev.decompose(opt.theta)
        value = dev.objective(dec)
        nmp = dev.n - dev.p if dev.reml else dev.n
        RX = dec.RX
        P = np.linalg.inv(RX.T @ RX) if len(RX) else np.zeros((0, 0))
        f.gradient(dev.Ts(opt.theta), dec.beta, P, nmp / dec.pwrss, dev.reml)
        K = f.nprobes
        obj_se = float(np.std(f.probe_values, ddof=1) / np.sqrt(K))
        G = f.grad_probes
        # the probe noise of the optimizer's gradient: per-probe covariance / its probe count
        covg = np.cov(G, rowvar=False, ddof=1).reshape(G.shape[1], G.shape[1]) / fit_k
        bound = f.pwrss_bound(dec.beta)
        lower, upper, bracket = f.radau_brackets()
    finally:
        f.set_probes(fit_seed, fit_k)
    ntheta = len(opt.theta)
    se_approx = se_stat = np.full(ntheta, np.nan)
    H = opt.hessian
    if H is not None and np.all(np.isfinite(H)):
        try:
            Hinv = np.linalg.inv(H)
            if np.all(np.linalg.eigvalsh(H) > 0):
                se_approx = np.sqrt(np.maximum(np.diag(Hinv @ covg @ Hinv), 0.0))
                se_stat = np.sqrt(np.maximum(np.diag(2.0 * Hinv), 0.0))
        except np.linalg.LinAlgError:
            pass
    ev = max(stats["evaluations"], 1)
    return KrylovReport(
        objective=float(value), objective_se=obj_se, objective_fit=float(opt.fmin),
        theta_se_approx=se_approx, theta_se_stat=se_stat, pwrss_bound=bound, probes=K,
        seed=fit_seed, deflated=int(f.U.shape[1]), evaluations=stats["evaluations"],
        cg_iterations=stats["cg"] / ev, lanczos_steps=stats["lanczos"] / ev,
        tolerance={"cg_relative_residual": CG_TOL, "probe_relative_residual": PROBE_TOL},
        fit_probes=fit_k, probe_lower=lower, probe_upper=upper, logdet_bracket=bracket,
    )  # fmt: skip
