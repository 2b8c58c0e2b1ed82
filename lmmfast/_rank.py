"""Rank-deficient fixed effects: which columns of X to drop, as lme4 does.

lme4 keeps the columns of a pivoted QR of X that LINPACK's dqrdc2 does not move to
the end (tolerance 1e-7): a column is dropped when its part orthogonal to the
columns kept before it is below 1e-7 of its own norm.  The same test runs here on
X'WX (already built in the one pass) as a column-ordered Cholesky, so no second pass
over X is needed; positive weights do not change which columns are dependent.

The Cholesky is one factorization, left-looking in blocks of BLOCK columns: the
columns of a block are first reduced by the kept columns before it with one
triangular solve (BLAS), then factored one by one inside the block, dropping a column
whose residual is below the tolerance.  That is p^3/3 flops in all, against one
dense solve per column before (p^4/3, 17 s for a 500-level factor on a busy machine).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.linalg import solve_triangular

TOL = 1e-7
BLOCK = 64


def independent_columns(XtX: np.ndarray, tol: float = TOL) -> np.ndarray:
    """Indices of the columns kept, in order."""
    XtX = np.asarray(XtX, dtype=np.float64)
    p = XtX.shape[0]
    if p <= SMALL:
        return np.array(_small(XtX.tolist(), tol), dtype=np.int64)
    # unit diagonal first: the residuals are then relative to each column's own norm, and
    # columns of very different scales (a 0/1 indicator next to the intercept) round alike
    d = np.sqrt(np.diag(XtX).clip(min=0.0))
    inv = np.divide(1.0, d, out=np.zeros(p), where=d > 0)
    XtX = XtX * inv[:, None] * inv[None, :]
    if p <= BLOCK:  # one block, nothing kept before it: the block's own factorization
        return _factor_block(XtX, (d > 0).astype(np.float64), tol)
    kept = np.zeros(0, dtype=np.int64)
    # row i of L: the factor row of kept column kept[i] (lower triangular, len(kept) square)
    L = np.zeros((p, p))
    for start in range(0, p, BLOCK):
        block = np.arange(start, min(start + BLOCK, p))
        k = len(kept)
        # W[:, b] = L_kk^{-1} XtX[kept, block[b]]: the block's coordinates on the kept columns
        W = solve_triangular(L[:k, :k], XtX[np.ix_(kept, block)], lower=True, check_finite=False)
        S = XtX[np.ix_(block, block)] - W.T @ W  # the block's Gram matrix, reduced
        new = _factor_block(S, (d[block] > 0).astype(np.float64), tol)
        if len(new):
            L[k : k + len(new), :k] = W[:, new].T
            L[k : k + len(new), k : k + len(new)] = np.linalg.cholesky(S[np.ix_(new, new)])
            kept = np.concatenate([kept, block[new]])
    return kept


def _small(A: list[list[float]], tol: float) -> list[int]:
    """independent_columns for a few columns, in Python floats: the same operations in the
    same order as the arrays' (so the same decisions), without numpy's per-call cost."""
    p = len(A)
    d = [math.sqrt(max(A[i][i], 0.0)) for i in range(p)]
    inv = [1.0 / v if v > 0 else 0.0 for v in d]
    S = [[A[i][j] * inv[i] * inv[j] for j in range(p)] for i in range(p)]
    out = []
    for i in range(p):
        resid = S[i][i]
        if not d[i] > 0 or resid <= tol**2:  # the unit diagonal's test below, diag[i] = 1
            continue
        r = math.sqrt(resid)
        li = [S[a][i] / r for a in range(i, p)]
        for a in range(i, p):
            for b in range(i, p):
                S[a][b] -= li[a - i] * li[b - i]
        out.append(i)
    return out


SMALL = 4  # up to this many columns: _small


def _factor_block(S: np.ndarray, diag: np.ndarray, tol: float) -> np.ndarray:
    """Positions kept inside one block: column-ordered Cholesky of S with dropping."""
    S = S.copy()
    out = []
    for i in range(len(S)):
        resid = S[i, i]
        if diag[i] <= 0 or resid <= (tol**2) * diag[i]:
            continue
        li = S[i:, i] / np.sqrt(resid)
        S[i:, i:] -= np.outer(li, li)
        out.append(i)
    return np.array(out, dtype=np.int64)
