"""Kenward-Roger adjusted covariance and denominator df, as pbkrtest's vcovAdj and
lmerTest's summary(fit, ddf = "Kenward-Roger").

The covariance of y is Sigma = sum_r gamma_r G_r: one parameter per variance or
covariance of each term's q x q covariance matrix (G = Z_a Z_a', or Z_a Z_b' + Z_b Z_a'
for a covariance, Z_a the columns of coefficient a over the term's levels), and the
residual variance (G = W^{-1}).  With Phi = (X' Sigma^{-1} X)^{-1},

    P_r = -X' Sigma^{-1} G_r Sigma^{-1} X,   Q_rs = X' Sigma^{-1} G_r Sigma^{-1} G_s Sigma^{-1} X
    I_rs = tr(Sigma^{-1} G_r Sigma^{-1} G_s) - 2 tr(Phi Q_rs) + tr(Phi P_r Phi P_s)
    W = 2 I^{-1},   U = sum_rs W_rs (Q_rs - P_r Phi P_s),   Phi_A = Phi + 2 Phi U Phi

and the df of a single coefficient follow Kenward & Roger (1997) with q = 1.  It works
with dense n x n matrices (O(n^3)): fine for the small and moderate data where the
adjustment matters; large data have Satterthwaite's method, whose cost does not grow
with n.

Prior weights: the residual term is sigma^2 W^{-1} (lme4's residual variance sigma^2 / w_i),
so Sigma is the covariance lme4 fits.  pbkrtest (0.5.2, and lmerTest's ddf="Kenward-Roger",
which calls it) uses the identity for the residual G whatever the weights, with lme4's
weighted vcov as Phi: its df and SEs for weighted fits differ (sleepstudy with weights: df
19.25 and 18.10 there, 17.00 and 17.00 here).  A dense oracle written from Kenward & Roger's
definitions agrees with this module to ~1e-8 and reproduces pbkrtest's numbers only when the
weights are dropped from Sigma (tests/test_kenward_roger_oracle.py); without weights the two
agree.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import linalg, stats

from .._errors import ArgumentError, NeedsDataError

MAX_ROWS = 3000


def kenward_roger_table(fit) -> pd.DataFrame:
    """Estimate, adjusted Std. Error, df, t value, Pr(>|t|) per fixed effect."""
    Phi, P, W, PhiA = kr_matrices(fit)
    rows = []
    for i in range(len(fit.xnames)):
        L = np.zeros(len(fit.beta))
        L[i] = 1.0
        df = _ddf(L, Phi, P, W)
        se = np.sqrt(L @ PhiA @ L)
        t = fit.beta[i] / se
        rows.append((fit.beta[i], se, df, t, 2 * stats.t.sf(abs(t), df)))
    return pd.DataFrame(
        rows, index=fit.xnames, columns=["Estimate", "Std. Error", "df", "t value", "Pr(>|t|)"]
    )


def kr_matrices(fit):
    """(Phi, P, W, PhiA): the unadjusted covariance of beta, the P_r, W = 2 I^{-1} and the
    adjusted covariance (pbkrtest's vcovAdj and its attributes "P", "W").  Computed once."""
    cached = fit.__dict__.get("_kr_matrices")
    if cached is not None:
        return cached
    if fit.nobs > MAX_ROWS:
        raise ArgumentError(
            f"Kenward-Roger needs dense {fit.nobs} x {fit.nobs} matrices; it is limited to "
            f"{MAX_ROWS} rows. Use ddf='satterthwaite', whose cost does not grow with n."
        )
    if fit._frame is None:
        raise NeedsDataError(
            "Kenward-Roger df need the rows, which a loaded fit does not keep: pass data=<the data>"
        )
    X = np.column_stack([np.broadcast_to(c, c.shape) for c in fit._frame.Xcols])[:, fit._keep]
    from .._memory import check_allocation

    k = sum(t.q * (t.q + 1) // 2 for t in fit.terms) + 1
    check_allocation(8 * fit.nobs**2 * (2 * k + 4), "Kenward-Roger's dense n x n matrices",
                     "Use ddf='satterthwaite'.")  # fmt: skip
    G, gamma = _components(fit)
    Sigma = sum(g * Gr for g, Gr in zip(gamma, G))
    Sinv = linalg.cho_solve(linalg.cho_factor(Sigma), np.eye(len(Sigma)))
    SX = Sinv @ X
    Phi = np.linalg.inv(X.T @ SX)
    H = [Gr @ Sinv for Gr in G]  # G_r Sigma^{-1}
    O = [Hr @ X for Hr in H]  # G_r Sigma^{-1} X
    k = len(G)
    P = [-(Or.T @ SX) for Or in O]
    Q = [[O[r].T @ Sinv @ O[s] for s in range(k)] for r in range(k)]
    info = np.empty((k, k))
    for r in range(k):
        for s in range(r, k):
            info[r, s] = info[s, r] = (
                np.sum(H[r].T * H[s]) - 2 * np.sum(Phi * Q[r][s])
                + np.sum((Phi @ P[r]) * (P[s] @ Phi))
            )  # fmt: skip
    W = 2 * (np.linalg.inv(info) if np.min(np.abs(np.linalg.eigvalsh(info))) > 1e-10
             else np.linalg.pinv(info))  # fmt: skip
    U = np.zeros_like(Phi)
    for r in range(k):
        for s in range(k):
            U += W[r, s] * (Q[r][s] - P[r] @ Phi @ P[s])
    PhiA = Phi + 2 * Phi @ U @ Phi
    fit.__dict__["_kr_matrices"] = out = (Phi, P, W, PhiA)
    return out


def _components(fit):
    """The matrices G_r and parameter values gamma_r (variances and covariances, residual)."""
    frame = fit._frame
    n = frame.n
    G, gamma = [], []
    for t, T in zip(frame.terms, fit._Ts()):
        S = fit.sigma**2 * T @ T.T
        Zs = []
        for z in t.Zcols:
            Za = np.zeros((n, t.nlevels))
            Za[np.arange(n), t.codes] = z
            Zs.append(Za)
        for b in range(t.q):
            for a in range(b, t.q):
                Gr = Zs[a] @ Zs[b].T
                G.append(Gr if a == b else Gr + Gr.T)
                gamma.append(S[a, b])
    w = np.ones(n) if frame.weights is None else frame.weights
    G.append(np.diag(1.0 / w))
    gamma.append(fit.sigma**2)
    return G, gamma


def _ddf(L, Phi, P, W) -> float:
    """Kenward-Roger denominator df for one contrast (q = 1), as pbkrtest's Lb_ddf."""
    return kr_adjust(np.atleast_2d(L), Phi, P, W)[0]


def kr_adjust(L, Phi, P, W) -> tuple[float, float]:
    """(ddf, F.scaling) of the Kenward-Roger F test of the q x p contrast matrix L (full row
    rank), as pbkrtest's .KR_adjust."""
    q = L.shape[0]
    Theta = L.T @ np.linalg.solve(L @ Phi @ L.T, L)
    A1 = A2 = 0.0
    k = len(P)
    U = [Theta @ Phi @ P[i] @ Phi for i in range(k)]
    for i in range(k):
        for j in range(i, k):
            e = 1.0 if i == j else 2.0
            A1 += e * W[i, j] * np.trace(U[i]) * np.trace(U[j])
            A2 += e * W[i, j] * np.sum(U[i] * U[j].T)
    B = (A1 + 6 * A2) / (2 * q)
    g = ((q + 1) * A1 - (q + 4) * A2) / ((q + 2) * A2)
    c1 = g / (3 * q + 2 * (1 - g))
    c2 = (q - g) / (3 * q + 2 * (1 - g))
    c3 = (q + 2 - g) / (3 * q + 2 * (1 - g))
    V0 = 1 + c1 * B
    V0 = 0.0 if abs(V0) < 1e-10 else V0
    V1, V2 = 1 - c2 * B, 1 - c3 * B
    rho = (1 / q) * ((1 - A2 / q) / V1) ** 2 * V0 / V2
    df2 = 4 + (q + 2) / (q * rho - 1)
    scaling = 1.0 if abs(df2 - 2) < 0.01 else df2 * (1 - A2 / q) / (df2 - 2)
    return df2, scaling
