r"""Many fixed effects with a diagonal Gram block (the indicators of a many-level factor):
eliminate them first, once per fit, instead of a dense p x p Cholesky per evaluation.

Order the columns of the full system [Z Lambda, X, y] as (X_E, Z, X_K, y), X_E the columns
whose X_E'WX_E = D is diagonal (found in X'WX).  Eliminating X_E is a diagonal solve, and
what remains is, for every theta,

    S(theta) = diag(Lambda', I) (Abar) diag(Lambda, I) + diag(I, 0),
    Abar     = [Z X_K y]'W[Z X_K y] - [Z X_K y]'W X_E D^{-1} X_E'W [Z X_K y]

with Abar formed once (q_Z + p_K + 1 square).  One Cholesky of S per evaluation then gives
pwrss (its last diagonal element), log|R_X|^2 = sum log D + log|S without y| - log|L|^2
(the determinant of the full system in either order) and beta (u and beta_K from S,
beta_E by the diagonal solve).  The REML gradient's sum_j H_j (R_X'R_X)^{-1} H_j' solves
with the same pieces.  Used for one grouping factor (the blocked factorization, whose
q_Z = levels x columns is small) and a wide X; R_X itself is formed only when asked for.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import block_diag, cho_solve, solve_triangular

from ._factor.blocked import BlockedFactor

MAX_QZ = 2000  # the eliminated system S is dense, (q_Z + p_K + 1) square
MIN_GAIN = 4  # eliminate only when X_E has this many times more columns than S's order


def diagonal_columns(XtX: np.ndarray) -> np.ndarray:
    """Columns (in order) with positive diagonal and zero cross-products with each other:
    chosen greedily, the sparsest rows first (a factor's indicators are disjoint)."""
    nz = XtX != 0
    np.fill_diagonal(nz, False)
    pos = np.diag(XtX) > 0
    taken = ~pos
    chosen = []
    for j in np.argsort(nz.sum(axis=1), kind="stable"):
        if not taken[j]:
            chosen.append(j)
            taken |= nz[j]
            taken[j] = True
    return np.sort(np.array(chosen, dtype=np.int64))


def plan(cp, factor) -> Elimination | None:
    """The elimination for this fit, or None where it does not pay (or does not apply)."""
    if not isinstance(factor, BlockedFactor) or not factor.wide:
        return None
    nlev, Q = factor.B.shape[:2]
    p = cp.XtXy.shape[0] - 1
    if nlev * Q > MAX_QZ:
        return None
    E = diagonal_columns(cp.XtXy[:p, :p])
    if len(E) < MIN_GAIN * (nlev * Q + p - len(E) + 1):
        return None
    return Elimination(cp, factor, E)


class Elimination:
    """The once-per-fit pieces of the elimination of X_E (see the module's docstring)."""

    def __init__(self, cp, factor: BlockedFactor, E: np.ndarray):
        nlev, Q, p1 = factor.ZXY.shape
        self.nlev, self.Q, self.p = nlev, Q, p1 - 1
        self.E = E
        self.K = np.setdiff1d(np.arange(p1), E)  # kept columns; y (the last) among them
        self.K1 = self.K[:-1]
        qZ = nlev * Q
        XtXy, ZXY = cp.XtXy, factor.ZXY
        d = np.diag(XtXy)[E]
        self.Dinv = 1.0 / d
        self.logdetD = float(np.sum(np.log(d)))
        self.ZE = np.ascontiguousarray(ZXY[:, :, E].reshape(qZ, len(E)))  # Z'W X_E
        self.KE = np.ascontiguousarray(XtXy[np.ix_(self.K, E)])  # [X_K y]'W X_E
        ZEd = self.ZE * self.Dinv
        A = block_diag(*factor.B) - ZEd @ self.ZE.T
        self.A4 = A.reshape(nlev, Q, nlev, Q)
        ZK = ZXY[:, :, self.K].reshape(qZ, len(self.K)) - ZEd @ self.KE.T
        self.ZK3 = ZK.reshape(nlev, Q, len(self.K))
        self.KK = XtXy[np.ix_(self.K, self.K)] - (self.KE * self.Dinv) @ self.KE.T
        self._eye = np.eye(qZ)

    def _lam(self, T: np.ndarray, M: np.ndarray) -> np.ndarray:
        """Lambda' M for M with q_Z rows (Lambda = blockdiag of T, one block per level)."""
        M3 = M.reshape(self.nlev, self.Q, -1)
        return np.einsum("ai,jak->jik", T, M3).reshape(M.shape)

    def decompose(self, T: np.ndarray, ldL2: float, dense_R) -> EliminatedDecomposition:
        """The objective's pieces at T; dense_R() gives the (p+1)-square R when asked for."""
        nlev, Q = self.nlev, self.Q
        qZ = nlev * Q
        if Q == 1:
            SZZ = (T[0, 0] ** 2) * self.A4.reshape(qZ, qZ) + self._eye
        else:
            AT = self.A4 @ T  # A_jm T for every level pair
            SZZ = np.einsum("ai,jaml->jiml", T, AT).reshape(qZ, qZ) + self._eye
        SZK = np.einsum("ai,jak->jik", T, self.ZK3).reshape(qZ, -1)
        S = np.block([[SZZ, SZK], [SZK.T, self.KK]])
        Lc = np.linalg.cholesky(S)  # lower; R = Lc'
        d = np.diag(Lc)
        pwrss = d[-1] ** 2
        ldRX2 = self.logdetD + 2.0 * np.sum(np.log(d[:-1])) - ldL2
        R_A = Lc[:-1, :-1].T
        x = solve_triangular(R_A, Lc[-1, :-1], check_finite=False)  # [u; beta_K]
        u, bK = x[:qZ], x[qZ:]
        Lu = (u.reshape(nlev, Q) @ T.T).ravel()  # Lambda u
        bE = self.Dinv * (self.KE[-1] - self.ZE.T @ Lu - self.KE[:-1].T @ bK)
        beta = np.empty(self.p)
        beta[self.E], beta[self.K1] = bE, bK
        return EliminatedDecomposition(ldL2, ldRX2, pwrss, beta, Lc, T, dense_R)

    def reml_hph(self, dec: EliminatedDecomposition, H: np.ndarray) -> np.ndarray:
        """sum_j H_j P H_j', P = (R_X'R_X)^{-1}, H (l, Q, p): W = P H' from the block
        system [[Lambda'Z'WZ Lambda + I, Lambda'Z'WX], [X'WZ Lambda, X'WX]] [U; W] = [0; H']
        with X_E eliminated first."""
        nlev, Q = self.nlev, self.Q
        qZ = nlev * Q
        Hp = H.reshape(qZ, self.p)
        HE = Hp[:, self.E].T * self.Dinv[:, None]  # D^{-1} H_E', (p_E, q_Z)
        KE1 = self.KE[:-1]
        rhs = np.vstack([-self._lam(dec.T, self.ZE @ HE), Hp[:, self.K1].T - KE1 @ HE])
        x = cho_solve((dec.Lc[:-1, :-1], True), rhs, check_finite=False)
        U, W1 = x[:qZ], x[qZ:]
        LU = (dec.T @ U.reshape(nlev, Q, qZ)).reshape(qZ, qZ)  # Lambda U
        WE = HE - self.Dinv[:, None] * (self.ZE.T @ LU + KE1.T @ W1)
        Hl = Hp.reshape(nlev, Q, self.p)
        out = np.einsum("jac,cjb->ab", Hl[:, :, self.E], WE.reshape(-1, nlev, Q))
        out += np.einsum("jac,cjb->ab", Hl[:, :, self.K1], W1.reshape(-1, nlev, Q))
        return out


class EliminatedDecomposition:
    """Decomposition's fields (_pls.py), with R (and R_X) formed only when read."""

    def __init__(self, ldL2, ldRX2, pwrss, beta, Lc, T, dense_R):
        self.ldL2, self.ldRX2, self.pwrss, self.beta = ldL2, ldRX2, pwrss, beta
        self.Lc, self.T, self._dense_R, self._R = Lc, T, dense_R, None

    @property
    def R(self) -> np.ndarray:
        if self._R is None:
            self._R = self._dense_R()
        return self._R

    @property
    def RX(self) -> np.ndarray:
        return self.R[:-1, :-1]
