"""A start for random intercepts from moment estimates of their variances.

For each term, the excess variance of the level sums of the OLS residuals over what the
residual variance alone would give (B - l T) / (n - l), with B = sum_j e_j^2 / d_j over
its l levels (e_j: level j's sum of weighted OLS residuals, d_j its weighted count);
theta = sqrt(variance / residual variance), clipped to [0.05, 20].  The estimates ignore
the other terms (crossed or nested), so they are only a start: the optimizer ends where
it would from lme4's theta = 1, in fewer evaluations when a variance is far from
sigma^2 (InstEval's departments: theta 0.07).
"""

from __future__ import annotations

import numpy as np

from ._sources.crossprod import CrossProducts

# the start's OLS is a dense solve in X'X: past this many fixed effects (a many-level fixed
# factor) it costs more than the evaluations it saves (fixed_2000, p = 2,001: 4 s), and lmer
# starts from lme4's theta = 1 instead
MOMENT_START_MAX_P = 64


def scalar_moment_start(cp: CrossProducts) -> np.ndarray:
    """theta0 for a model whose random terms are all scalar (q = 1), from its cross-products
    (meant for intercepts: d_j sums to the number of observations, or the weights' sum)."""
    XtX, Xty = cp.XtXy[:-1, :-1], cp.XtXy[:-1, -1]
    b = np.linalg.lstsq(XtX, Xty, rcond=None)[0] if len(XtX) else np.zeros(0)
    n = float(cp.D[0][:, 0, 0].sum())
    T = max(float(cp.XtXy[-1, -1] - Xty @ b) / n, 1e-300)
    out = []
    for D, ZXY in zip(cp.D, cp.ZXY):
        d, g = D[:, 0, 0], ZXY[:, 0, :]
        e = g[:, -1] - g[:, :-1] @ b
        B = float(np.sum(e * e / np.maximum(d, 1e-300)))
        lk = len(d)
        out.append(max((B - lk * T) / max(n - lk, 1.0), 0.0))
    se2 = max(T - sum(out), 0.1 * T)
    return np.clip(np.sqrt(np.array(out) / se2), 0.05, 20.0)
