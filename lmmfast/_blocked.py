"""Per-cluster factorization: every term on one grouping factor (src/_blockdiag.pyx).

Then Lambda'Z'WZ Lambda + I is block-diagonal, one Q x Q block per level (Q = the
terms' columns together), and the blocks are factored directly, with no sparse
machinery: the common case (students in schools, patients over time) and the fast one.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import block_diag

from . import _blockdiag
from ._crossprod import CrossProducts
from ._terms import ReTerm


def is_block_diagonal(terms: list[ReTerm]) -> bool:
    """True when all terms share one grouping factor (one level partition of the rows)."""
    first = terms[0]
    return all(t.codes is first.codes or np.array_equal(t.codes, first.codes) for t in terms[1:])


class BlockedFactor:
    """L_j L_j' = T' B_j T + I for each level j, T = blockdiag(T_1, ..., T_K)."""

    def __init__(self, cp: CrossProducts, terms: list[ReTerm]):
        self.terms = terms
        self.qoff = np.concatenate([[0], np.cumsum([t.q for t in terms])])
        Q, nlev, p1 = int(self.qoff[-1]), terms[0].nlevels, cp.XtXy.shape[0]
        B = np.zeros((nlev, Q, Q))
        for k, D in enumerate(cp.D):
            s = self._cols(k)
            B[:, s, s] = D
        for pr in cp.pairs:  # terms on the same factor: level j pairs with level j
            st, su = self._cols(pr.t), self._cols(pr.u)
            B[pr.levels[:, 0], st, su] = pr.O
            B[pr.levels[:, 0], su, st] = pr.O.transpose(0, 2, 1)
        self.B = B
        self.ZXY = np.ascontiguousarray(np.concatenate(cp.ZXY, axis=1))
        self.L = np.zeros((nlev, Q, Q))
        self.cu = np.empty((nlev, Q, p1))
        self._C = np.empty((p1, p1))

    def _cols(self, k: int) -> slice:
        return slice(int(self.qoff[k]), int(self.qoff[k + 1]))

    def update(self, Ts: list[np.ndarray]) -> tuple[float, np.ndarray]:
        """Refactor for the terms' T; return log|L|^2 and M'(Lambda'Z'WZ Lambda + I)^{-1}M."""
        T = np.ascontiguousarray(block_diag(*Ts))
        ldL2 = _blockdiag.update(T, self.B, self.ZXY, self.L, self.cu, self._C)
        if ldL2 == -1.0:
            raise FloatingPointError("a block of Lambda'Z'WZ Lambda + I is not positive definite")
        C = np.tril(self._C) + np.tril(self._C, -1).T
        return ldL2, C

    def spherical_modes(self, beta: np.ndarray) -> list[np.ndarray]:
        """u = L^{-T}(c_y - R_ZX beta) for the last update, per term as (l, q)."""
        rhs = self.cu[:, :, -1] - self.cu[:, :, :-1] @ beta
        Lt = np.triu(self.L.transpose(0, 2, 1))  # the kernel writes only the lower triangles
        u = np.linalg.solve(Lt, rhs[:, :, None])[:, :, 0]
        return [u[:, self._cols(k)] for k in range(len(self.terms))]
