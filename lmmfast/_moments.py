"""A start for the optimizer from moment estimates of the random-effects covariances.

For each term, the excess variance of the level sums of the OLS residuals over what the
residual variance alone would give (B - l T) / (n - l), with B = sum_j e_j^2 / d_j over
its l levels (e_j: level j's sum of weighted OLS residuals, d_j its weighted count);
theta = sqrt(variance / residual variance), clipped to [0.05, 20].  The estimates ignore
the other terms (crossed or nested), so they are only a start: the optimizer ends where
it would from lme4's theta = 1, in fewer evaluations when a variance is far from
sigma^2 (InstEval's departments: theta 0.07).  Models with vector-valued terms and at
least MOMENT_START_MIN_THETA theta start from moment_start's covariance estimates.
"""

from __future__ import annotations

import numpy as np

from ._sources.crossprod import CrossProducts

# the start's OLS is a dense solve in X'X: past this many fixed effects (a many-level fixed
# factor) it costs more than the evaluations it saves (fixed_2000, p = 2,001: 4 s), and lmer
# starts from lme4's theta = 1 instead
MOMENT_START_MAX_P = 64
# vector-valued terms: the moment start from this many theta on.  On the crossed-slopes
# references (6-20 theta) it took L-BFGS-B's evaluations from 2,775 to 2,445 (kb07 300 x
# 200: 76 -> 37), with the same optima; at 3 theta (sleepstudy, RIKZ, one (x|g) term) the
# evaluations were the same on average (141 both ways) and sleepstudy's 25 became 35
MOMENT_START_MIN_THETA = 6


def scalar_moment_start(cp: CrossProducts) -> np.ndarray:
    """theta0 for a model whose random terms are all scalar (q = 1), from its cross-products
    (meant for intercepts: d_j sums to the number of observations, or the weights' sum)."""
    n = float(cp.D[0][:, 0, 0].sum())
    b, T = _ols(cp, n)
    out = []
    for D, ZXY in zip(cp.D, cp.ZXY):
        d, g = D[:, 0, 0], ZXY[:, 0, :]
        e = g[:, -1] - g[:, :-1] @ b
        B = float(np.sum(e * e / np.maximum(d, 1e-300)))
        lk = len(d)
        out.append(max((B - lk * T) / max(n - lk, 1.0), 0.0))
    se2 = max(T - sum(out), 0.1 * T)
    return np.clip(np.sqrt(np.array(out) / se2), 0.05, 20.0)


def moment_start(cp: CrossProducts, qs: list[int], n: int) -> np.ndarray | None:
    """theta0 from moment estimates for terms of any width q (lme4's order per term), or
    None where they are not finite.

    With b the OLS fit and g_j = Z_j'W(y - Xb) per level j of a term, E g_j g_j' is about
    D_j Sigma D_j + sigma^2 D_j (D_j = Z_j'WZ_j; the other terms and the estimation of b
    ignored), so Sigma solves the q^2 x q^2 system  sum_j (D_j kron D_j) vec(Sigma) =
    vec(sum_j g_j g_j' - sigma^2 sum_j D_j), first with sigma^2 the OLS residual variance T,
    then with T less the terms' share.  Each Sigma / sigma^2 is projected on eigenvalues
    in [0.05^2, 20^2] (as scalar_moment_start's clip) and its Cholesky factor is the start.
    A start only: from 30% off the optimum, L-BFGS-B takes about 20 evaluations on kb07's
    20 theta where it takes 60 from T = I."""
    if not all(np.all(np.isfinite(a)) for a in (cp.XtXy, *cp.D, *cp.ZXY)):
        return None
    try:
        return _moment_factors(cp, qs, n)
    except np.linalg.LinAlgError:
        return None


def _ols(cp: CrossProducts, n: float) -> tuple[np.ndarray, float]:
    """The (weighted) OLS coefficients of y on X and the residual variance RSS / n."""
    XtX, Xty = cp.XtXy[:-1, :-1], cp.XtXy[:-1, -1]
    b = np.linalg.lstsq(XtX, Xty, rcond=None)[0] if len(XtX) else np.zeros(0)
    return b, max(float(cp.XtXy[-1, -1] - Xty @ b) / n, 1e-300)


def _moment_factors(cp: CrossProducts, qs: list[int], n: int) -> np.ndarray | None:
    b, T = _ols(cp, max(n, 1))
    grams = []
    for D, ZXY in zip(cp.D, cp.ZXY):
        g = ZXY[:, :, -1] - ZXY[:, :, :-1] @ b  # (l, q)
        q = D.shape[1]
        K = np.einsum("jab,jcd->acbd", D, D).reshape(q * q, q * q)  # sum_j D_j kron D_j
        grams.append((K, np.einsum("ja,jb->ab", g, g), D.sum(axis=0)))
    se2 = T
    for _ in range(2):
        sigmas = [
            np.linalg.lstsq(K, (G - se2 * Dsum).ravel(), rcond=None)[0].reshape(Dsum.shape)
            for K, G, Dsum in grams
        ]
        share = sum(float(np.sum(S * Dsum)) for S, (_, _, Dsum) in zip(sigmas, grams)) / max(n, 1)
        se2 = max(T - share, 0.1 * T)
    out = []
    for S, q in zip(sigmas, qs):
        w, V = np.linalg.eigh(0.5 * (S + S.T) / se2)
        if not (np.all(np.isfinite(w)) and np.all(np.isfinite(V))):
            return None
        C = np.linalg.cholesky((V * np.clip(w, 0.05**2, 20.0**2)) @ V.T)
        out.append(C.T[np.triu_indices(q)])  # C's lower triangle, column-major
    return np.concatenate(out)
