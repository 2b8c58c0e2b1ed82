"""Leverages and Cook's distances, as lme4's hatvalues() and cooks.distance().

With U = Z Lambda (one row per observation), W the prior weights and the penalized
least-squares system M = [U X]'W[U X] + diag(I, 0), the hat matrix of the fitted values
is W^(1/2)[U X] M^{-1} [U X]'W^(1/2); its diagonal, by the block inverse of M with
A = U'WU + I, B = U'WX and S = X'WX - B'A^{-1}B (= R_X'R_X), is

    h_i = w_i (u_i' A^{-1} u_i + v_i' S^{-1} v_i),   v_i = x_i - B'A^{-1} u_i,

the colSums(CL^2) + colSums(CR^2) of lme4's hatvalues.merMod.  Cook's distance is lme4's
(r_i / (1 - h_i))^2 h_i / (sigma^2 p), r the Pearson residuals and p = rank(X).  A is
factored once (SuperLU) and the rows are processed in chunks: O(n) memory in chunks of
q effects, one sparse solve per row.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse
from scipy.sparse import linalg as splinalg

from .._errors import NeedsDataError

CHUNK_ENTRIES = 2_000_000  # dense q x rows block per chunk


def hat_values(fit) -> np.ndarray:
    """Diagonal of the hat matrix (lme4's hatvalues(fit)), one value per row used."""
    if fit._frame is None:
        raise NeedsDataError(
            "hat values need the rows, which a loaded fit does not keep: pass data=<the data>"
        )
    frame = fit._frame
    n = frame.n
    U = _u_matrix(fit)
    X = np.column_stack([np.broadcast_to(frame.Xcols[j], (n,)) for j in fit._keep])
    w = np.ones(n) if frame.weights is None else frame.weights
    Uw = sparse.diags(w) @ U
    A = (U.T @ Uw + sparse.identity(U.shape[1])).tocsc()
    lu = splinalg.splu(A)
    B = np.asarray(Uw.T @ X)
    AinvB = lu.solve(B) if B.size else B
    S = X.T @ (w[:, None] * X) - B.T @ AinvB
    Sinv = np.linalg.inv(S) if len(S) else S
    h = np.empty(n)
    step = max(1, CHUNK_ENTRIES // max(U.shape[1], 1))
    for lo in range(0, n, step):
        hi = min(n, lo + step)
        Uc = U[lo:hi]
        sol = lu.solve(Uc.T.toarray())  # A^{-1} u_i for each row of the chunk
        h1 = np.asarray(Uc.T.multiply(sol).sum(axis=0)).ravel()
        V = X[lo:hi] - Uc @ AinvB
        h2 = np.einsum("ij,jk,ik->i", V, Sinv, V)
        h[lo:hi] = w[lo:hi] * (h1 + h2)
    return h


def cooks_distance(fit, hat: np.ndarray | None = None) -> np.ndarray:
    """lme4's cooks.distance(fit): (r / (1 - h))^2 h / (sigma^2 p), r Pearson residuals."""
    h = hat_values(fit) if hat is None else hat
    r = fit.residuals("pearson").to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        out = (r / (1 - h)) ** 2 * h / (fit.sigma**2 * len(fit.beta))
    out[np.isinf(out)] = np.nan
    return out


def _u_matrix(fit) -> sparse.csr_matrix:
    """U = Z Lambda as a sparse (n, q) matrix, each term's effects level-major."""
    n = fit._frame.n
    blocks = []
    for t, T in zip(fit._frame.terms, fit._Ts()):
        q, nl = t.q, t.nlevels
        Z = np.column_stack([np.broadcast_to(z, (n,)) for z in t.Zcols])  # (n, q)
        vals = Z @ T  # row i: (T' z_i)'
        rows = np.repeat(np.arange(n), q)
        cols = (np.asarray(t.codes, dtype=np.int64)[:, None] * q + np.arange(q)).ravel()
        blocks.append(sparse.csr_matrix((vals.ravel(), (rows, cols)), shape=(n, nl * q)))
    return sparse.hstack(blocks).tocsr()
