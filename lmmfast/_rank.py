"""Rank-deficient fixed effects: which columns of X to drop, as lme4 does.

lme4 keeps the columns of a pivoted QR of X that LINPACK's dqrdc2 does not move to
the end (tolerance 1e-7): a column is dropped when its part orthogonal to the
columns kept before it is below 1e-7 of its own norm.  The same test runs here on
X'WX (already built in the one pass) as a column-ordered Cholesky, so no second pass
over X is needed; positive weights do not change which columns are dependent.
"""

from __future__ import annotations

import numpy as np

TOL = 1e-7


def independent_columns(XtX: np.ndarray, tol: float = TOL) -> np.ndarray:
    """Indices of the columns kept, in order."""
    p = XtX.shape[0]
    kept: list[int] = []
    L = np.zeros((p, p))  # Cholesky factor of the kept columns' Gram matrix
    for j in range(p):
        if XtX[j, j] <= 0:
            continue
        k = len(kept)
        if k:
            lj = np.linalg.solve(L[:k, :k], XtX[kept, j])
            resid = XtX[j, j] - lj @ lj
        else:
            lj, resid = np.zeros(0), XtX[j, j]
        if resid <= (tol**2) * XtX[j, j]:
            continue
        L[k, :k] = lj
        L[k, k] = np.sqrt(resid)
        kept.append(j)
    return np.array(kept, dtype=np.int64)
