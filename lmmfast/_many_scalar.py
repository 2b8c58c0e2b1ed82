"""The compiled objective of lmer_many for scalar random-effects terms (src/_scalar_crossed.pyx).

For ``~ x + (1 | a) + (1 | b)`` the factorization objects spend most of an evaluation in
Python (tens of microseconds) on a few hundred flops.  Here one call evaluates the
objective and its gradient, and fit_compiled runs each response's whole optimization in
C as well (ScalarCrossed.fit_range: projected Newton on the analytic Hessian in
phi = theta^2, then lmer()'s snap to 0 and boundary probes; see lmer_many's docstring),
without the GIL, one fixed range of responses per thread.  A response it does not
converge on goes the Python way: ScalarDeviance, the same function (to rounding) driven
exactly as lmer() drives it (the same L-BFGS-B or BOBYQA choice, since `has_gradient` is
taken from the factorization lmer() would use).  Either way each response ends at lmer()'s optimum.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from . import _scalar_crossed
from ._errors import DataError
from ._lmer import _theta_scale
from ._optimize import OptSummary
from ._pls import Decomposition, ProfiledDeviance
from ._result import SINGULAR_TOL
from ._sources.crossprod import CrossProducts

MAX_REST = 400  # effects in the terms after the first: above this, the factorization objects


KMAX = 8  # terms at most for the compiled fit (src/_scalar_crossed.pyx's work arrays)


def applies(terms) -> bool:
    """Scalar terms only, and few effects outside the first term (dense loops)."""
    return all(t.q == 1 for t in terms) and sum(t.nlevels for t in terms[1:]) <= MAX_REST


def compiled_fit_applies(terms, cp: CrossProducts, n: int) -> bool:
    """The whole fit in C (fit_compiled) where lmer() optimizes theta itself, unscaled:
    at most KMAX terms and no column of extreme scale (_lmer._theta_scale)."""
    return len(terms) <= KMAX and bool(np.all(_theta_scale(terms, cp, n) == 1.0))


def fit_compiled(ctx, todo: np.ndarray, bounds, cols, out) -> np.ndarray:
    """Fit the responses with `todo` of a _many._Context by ScalarCrossed.fit_range, one
    range of `bounds` per thread (each response's fit depends on its data alone), and
    store the converged ones in `out` at index cols[g].  Returns the mask of those that
    did not converge (the caller fits them the Python way)."""
    G, K, p = len(todo), len(ctx.frame.terms), len(ctx.keep)
    Z1 = np.ascontiguousarray(ctx.ZX[0][:, 0, :])
    ZY1 = np.ascontiguousarray(ctx.ZY[0][:, 0, :])
    rest = len(ctx.ZX) > 1
    Z2 = np.ascontiguousarray(np.concatenate([z[:, 0, :] for z in ctx.ZX[1:]])
                              if rest else np.zeros((0, p)))  # fmt: skip
    ZY2 = np.ascontiguousarray(np.concatenate([z[:, 0, :] for z in ctx.ZY[1:]])
                               if rest else np.zeros((0, G)))  # fmt: skip
    XtX, XY = np.ascontiguousarray(ctx.XtX), np.ascontiguousarray(ctx.XY)
    yy = np.ascontiguousarray(ctx.yy)
    status, nevals = np.full(G, -1, dtype=np.int64), np.zeros(G, dtype=np.int64)
    theta, grad = np.zeros((G, K)), np.zeros((G, K))
    hess, fmin, decrement = np.zeros((G, K, K)), np.zeros(G), np.zeros(G)
    beta, se, sigma = np.zeros((G, max(p, 1))), np.zeros((G, max(p, 1))), np.zeros(G)
    mask = np.ascontiguousarray(todo, dtype=np.uint8)

    def work(lo_hi):
        kernel = ctx.scalar.kernel(p + 1)  # its own work arrays
        kernel.fit_range(*lo_hi, mask, Z1, ZY1, Z2, ZY2, XtX, XY, yy, ctx.reml,
                         float(ctx.frame.n), ctx.ldW, status, nevals, theta, fmin, grad, hess,
                         decrement, beta, se, sigma)  # fmt: skip

    if len(bounds) == 1:
        work(bounds[0])
    else:
        with ThreadPoolExecutor(len(bounds)) as pool:
            list(pool.map(work, bounds))
    ok = todo & (status == 0)
    at = np.asarray(cols)
    for g in np.flatnonzero(ok):
        a = at[g]
        out.theta[a], out.beta[a], out.se[a] = theta[g], beta[g, :p], se[g, :p]
        out.opt[a] = OptSummary(
            "newton (compiled)", np.ones(K), np.zeros(K), theta=theta[g], fmin=fmin[g],
            feval=int(nevals[g]), converged=True, message="converged", gradient=grad[g],
            hessian=hess[g], newton_decrement=float(decrement[g]),
        )  # fmt: skip
    out.sigma[at[ok]] = sigma[ok]
    out.objective[at[ok]] = fmin[ok]
    out.converged[at[ok]] = out.compiled[at[ok]] = True
    out.singular[at[ok]] = np.any(theta[ok] < SINGULAR_TOL, axis=1)
    return todo & ~ok


class ScalarDesign:
    """The response-free part of the compiled objective, shared by the threads."""

    def __init__(self, cp: CrossProducts, terms):
        self.terms = terms
        sizes = [t.nlevels for t in terms[1:]]
        off = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        m = int(off[-1])
        self.d1 = np.ascontiguousarray(cp.D[0][:, 0, 0])
        B22 = np.zeros((m, m))
        kr = np.zeros(m, dtype=np.int64)
        for k in range(1, len(terms)):
            r = off[k - 1] + np.arange(terms[k].nlevels)
            B22[r, r] = cp.D[k][:, 0, 0]
            kr[r] = k
        js, rows, kterm, vals = [], [], [], []
        for pr in cp.pairs:
            o = pr.O[:, 0, 0]
            ru = off[pr.u - 1] + pr.levels[:, 1]
            if pr.t == 0:
                js.append(pr.levels[:, 0])
                rows.append(ru)
                kterm.append(np.full(len(o), pr.u))
                vals.append(o)
            else:
                rt = off[pr.t - 1] + pr.levels[:, 0]
                B22[ru, rt] = o
                B22[rt, ru] = o
        cat = [np.concatenate(a) if a else np.zeros(0) for a in (js, rows, kterm, vals)]
        order = np.lexsort((cat[1], cat[0]))
        j = cat[0][order].astype(np.int64)
        self.row = cat[1][order].astype(np.int64)
        self.kterm = cat[2][order].astype(np.int64)
        self.o = np.ascontiguousarray(cat[3][order], dtype=np.float64)
        self.ptr = np.zeros(terms[0].nlevels + 1, dtype=np.int64)
        np.cumsum(np.bincount(j, minlength=terms[0].nlevels), out=self.ptr[1:])
        self.B22, self.kr, self.m = B22, kr, m
        self.nlev = np.array([t.nlevels for t in terms], dtype=np.int64)

    def kernel(self, p1: int):
        """A kernel object with its own work arrays (one per thread)."""
        return _scalar_crossed.ScalarCrossed(
            self.d1, self.ptr, self.row, self.kterm, self.o, self.B22, self.kr, self.nlev, p1
        )


class ScalarDeviance(ProfiledDeviance):
    """ProfiledDeviance's interface (objective, decompose, value_and_gradient) on the kernel."""

    def __init__(self, kernel, cp: CrossProducts, terms, n, reml, ldW, has_gradient: bool):
        self.terms, self.n, self.reml, self.ldW, self.cp = terms, n, reml, ldW, cp
        self.p = cp.XtXy.shape[0] - 1
        self.kernel, self._has_gradient, self.nevals = kernel, has_gradient, 0
        Z1 = np.ascontiguousarray(cp.ZXY[0][:, 0, :])
        Z2 = np.ascontiguousarray(np.concatenate([z[:, 0, :] for z in cp.ZXY[1:]])
                                  if len(cp.ZXY) > 1 else np.zeros((0, self.p + 1)))  # fmt: skip
        self._inputs = (Z1, Z2, np.ascontiguousarray(cp.XtXy))
        kernel.set_response(*self._inputs)  # the thread's kernel serves one response at a time
        self._nmp = float(n - self.p if reml else n)

    @property
    def has_gradient(self) -> bool:
        return self._has_gradient

    @property
    def factorization(self) -> str:
        return "scalar"

    def _run(self, theta, want_grad: bool) -> Decomposition:
        self.kernel.theta[:] = theta
        status = self.kernel.evaluate(want_grad, self.reml, self._nmp)
        if status == 1:
            raise DataError("the random-effects system is not positive definite")
        if status == 2:
            raise DataError(
                "the fixed effects fit the response exactly (zero residual sum of squares); "
                "a mixed model needs residual variation"
            )
        k = self.kernel
        return Decomposition(k.ldL2, k.ldRX2, k.pwrss, k.R.copy())

    def decompose(self, theta) -> Decomposition:
        return self._run(theta, False)

    def __call__(self, theta) -> float:
        self.nevals += 1
        return self.objective(self._run(theta, False))

    def value_and_gradient(self, theta):
        self.nevals += 1
        dec = self._run(theta, True)
        return self.objective(dec), self.kernel.grad.copy()
