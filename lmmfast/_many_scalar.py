"""The compiled objective of lmer_many for scalar random-effects terms (src/_scalar_crossed.pyx).

For ``~ x + (1 | a) + (1 | b)`` the factorization objects spend most of an evaluation in
Python (tens of microseconds) on a few hundred flops.  Here one call evaluates the
objective and its gradient.  It is the same function (to rounding) and the optimizer is
driven exactly as lmer() drives it (the same L-BFGS-B or BOBYQA choice, since
`has_gradient` is taken from the factorization lmer() would use), so each response
ends at lmer()'s optimum.
"""

from __future__ import annotations

import numpy as np

from . import _scalar_crossed
from ._errors import DataError
from ._pls import Decomposition, ProfiledDeviance
from ._sources.crossprod import CrossProducts

MAX_REST = 400  # effects in the terms after the first: above this, the factorization objects


def applies(terms) -> bool:
    """Scalar terms only, and few effects outside the first term (dense loops)."""
    return all(t.q == 1 for t in terms) and sum(t.nlevels for t in terms[1:]) <= MAX_REST


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
