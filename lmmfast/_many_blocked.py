"""lmer_many, one random-effects term on one grouping factor (x + (1 + x | g)): lmer()'s
profiled objective and gradient in one compiled call (src/_many_blocked.pyx) instead of
the blocked factorization's Python steps, so that L-BFGS-B's ~28 evaluations per
response cost little beyond the optimizer itself.  The optimizer path is lmer()'s
(_lmer._optimize); only the objective's evaluation is replaced."""

from __future__ import annotations

import numpy as np

from ._many_blocked_kernel import BlockedKernel
from ._many_scalar import ScalarDeviance
from ._pls import ProfiledDeviance
from ._sources.crossprod import CrossProducts


def applies(probe: ProfiledDeviance) -> bool:
    """One term, the per-level blocked factorization (no eliminated indicators, narrow X),
    with a gradient: where lmer() evaluates what this kernel evaluates."""
    f = probe.factor
    return (
        len(probe.terms) == 1
        and getattr(f, "kind", None) == "blocked"
        and not getattr(f, "wide", True)
        and probe.elim is None
        and probe.has_gradient
    )


def kernel(D: np.ndarray, p1: int) -> BlockedKernel:
    """A thread's kernel for a design with blocks B_j = Z_j'WZ_j (D, shared) and p1 = p + 1."""
    return BlockedKernel(D, p1)


class BlockedDeviance(ScalarDeviance):
    """ProfiledDeviance's interface on this kernel (the scalar kernel's: evaluate, then
    ldL2, ldRX2, pwrss, R and grad)."""

    def __init__(self, kern: BlockedKernel, cp: CrossProducts, terms, n, reml, ldW):
        self.terms, self.n, self.reml, self.ldW, self.cp = terms, n, reml, ldW, cp
        self.p = cp.XtXy.shape[0] - 1
        self.kernel, self._has_gradient, self.nevals = kern, True, 0
        self._inputs = (np.ascontiguousarray(cp.ZXY[0]), np.ascontiguousarray(cp.XtXy))
        kern.set_response(*self._inputs)  # the thread's kernel serves one response at a time
        self._nmp = float(n - self.p if reml else n)

    @property
    def factorization(self) -> str:
        return "blocked"
