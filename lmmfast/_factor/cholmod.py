"""Every call into scikit-sparse (CHOLMOD) lives here, so that one module adapts to its API.

scikit-sparse 0.4.x (the version that builds against Debian bookworm's SuiteSparse 5.12)
is served: ``analyze`` for the symbolic analysis, ``Factor.cholesky_inplace(A, beta)``
for the numeric refactorization of A + beta*I on the same pattern.  CHOLMOD reads the
lower triangle of A.  scikit-sparse 0.5 renamed this API (``cho_factor``,
``CholeskyFactor.factorize``); supporting it means changing only this module.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

try:
    from sksparse import cholmod
except ImportError as e:  # only designs that need CHOLMOD get here (see sparse.py)
    raise ImportError(
        "this design needs CHOLMOD (crossed factors with many levels, or large clusters): "
        "install scikit-sparse ('scikit-sparse>=0.4.12,<0.5', which builds against the system "
        "package libsuitesparse-dev)"
    ) from e


class SymbolicCholesky:
    """CHOLMOD's fill-reducing analysis of a fixed pattern, refactored numerically per call."""

    def __init__(self, A: sp.csc_matrix):
        self._factor = cholmod.analyze(A, mode="auto", ordering_method="default")

    def refactor(self, A: sp.csc_matrix, beta: float = 1.0) -> None:
        """L L' = P (A + beta I) P', A with the analysed pattern (lower triangle read)."""
        self._factor.cholesky_inplace(A, beta=beta)

    def logdet(self) -> float:
        """log |A + beta I| = log |L|^2."""
        return float(self._factor.logdet())

    def solve(self, B: np.ndarray) -> np.ndarray:
        """(A + beta I)^{-1} B for dense B."""
        return self._factor.solve_A(B)

    def solve_L(self, B: np.ndarray) -> np.ndarray:
        """L^{-1} P B (the permuted forward solve), for dense B."""
        return self._factor.solve_L(self._factor.apply_P(B), use_LDLt_decomposition=False)

    def factor(self) -> tuple[sp.csc_matrix, np.ndarray]:
        """The simplicial factor L (CSC, sorted rows, diagonal first; a copy) and the
        permutation p with L L' = (A + beta I)[p][:, p]."""
        return self._factor.L(), self._factor.P()
