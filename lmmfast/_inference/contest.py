"""Tests of linear hypotheses L beta = rhs, as lmerTest's contest(), contest1D() and
contestMD(): t tests of single contrasts and F tests of contrast matrices, with
Satterthwaite's or Kenward-Roger's denominator df.

Satterthwaite (contestMD): with V the covariance of beta and L V L' = P diag(d) P', the
q = rank rows P'L are independent contrasts with t_m^2 = (P'L beta)_m^2 / d_m and df
nu_m = 2 d_m^2 / (g_m' A g_m), g_m the gradient of (P'L)_m V (P'L)_m' in the variance
parameters and A their asymptotic covariance; F = sum t_m^2 / q, and the denominator df
combines the nu_m by E = sum nu_m / (nu_m - 2), ddf = 2E / (E - q) (2 if some nu_m <= 2).
Kenward-Roger (pbkrtest's KRmodcomp): F = scaling (L b)'(L Phi_A L')^{-1}(L b) / q with the
adjusted covariance Phi_A.  The table has lmerTest's columns, Sum Sq = q Mean Sq and
Mean Sq = F_unscaled sigma^2.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from .._errors import ArgumentError

F_COLUMNS = ["Sum Sq", "Mean Sq", "NumDF", "DenDF", "F value", "Pr(>F)"]
T_COLUMNS = ["Estimate", "Std. Error", "df", "t value", "lower", "upper", "Pr(>|t|)"]
EPS = np.sqrt(np.finfo(float).eps)


def ddf_method(ddf) -> str:
    """'satterthwaite' or 'kenward-roger' from the spellings lmerTest accepts."""
    key = str(ddf).lower().replace("_", "-").replace(" ", "-")
    if key.startswith("satt"):
        return "satterthwaite"
    if key in ("kenward-roger", "kr", "kenward"):
        return "kenward-roger"
    raise ArgumentError(f"ddf must be 'satterthwaite' or 'kenward-roger', not {ddf!r}")


def contrast_matrix(fit, L) -> np.ndarray:
    """L as a float (q, p) matrix with p = the number of fixed effects; a vector is one row."""
    if isinstance(L, pd.DataFrame):
        missing = [c for c in fit.xnames if c not in L.columns]
        if missing:
            raise ArgumentError(f"the contrast matrix lacks the columns {missing}")
        L = L[list(fit.xnames)].to_numpy()
    try:
        M = np.array(L, dtype=np.float64)
    except (TypeError, ValueError):
        raise ArgumentError("L must be a numeric vector or matrix") from None
    if M.ndim == 1:
        M = M[None, :]
    if M.ndim != 2 or M.shape[1] != len(fit.beta):
        raise ArgumentError(
            f"L must have {len(fit.beta)} columns (one per fixed effect: "
            f"{', '.join(fit.xnames)}), not shape {np.shape(L)}"
        )
    return M


def contest(fit, L, rhs=0.0, ddf="satterthwaite", joint: bool = True, level: float = 0.95):
    """The F test of L beta = rhs (joint=True, one row) or a t test per row of L."""
    method = ddf_method(ddf)
    L = contrast_matrix(fit, L)
    rhs = np.broadcast_to(np.asarray(rhs, dtype=float), (L.shape[0],)).copy()
    if not np.all(np.isfinite(L)) or not np.all(np.isfinite(rhs)):
        raise ArgumentError("L and rhs must be finite")
    if joint:
        return pd.DataFrame([f_test(fit, L, rhs, method)], columns=F_COLUMNS)
    rows = [t_test(fit, L[i], rhs[i], method, level) for i in range(L.shape[0])]
    return pd.DataFrame(rows, columns=T_COLUMNS)


def t_test(fit, c: np.ndarray, rhs: float, method: str, level: float = 0.95) -> tuple:
    """lmerTest's contest1D: estimate, SE, df, t, Wald limits with the t quantile, p."""
    est = float(c @ fit.beta)
    var, df = _var_df(fit, c, method)
    se = np.sqrt(var)
    t = (est - rhs) / se
    half = stats.t.ppf(0.5 + level / 2, df) * se
    return est, se, df, t, est - half, est + half, 2 * stats.t.sf(abs(t), df)


def _var_df(fit, c, method) -> tuple[float, float]:
    if method == "kenward-roger":
        from .kenward_roger import _ddf, kr_matrices

        _check_reml(fit)
        Phi, P, W, PhiA = kr_matrices(fit)
        return float(c @ PhiA @ c), float(_ddf(c, Phi, P, W))
    from .satterthwaite import varpar_derivatives

    V, J, A = varpar_derivatives(fit)
    p = len(c)
    var = float(c @ V @ c)
    g = np.array([c @ J[:, k].reshape(p, p) @ c for k in range(J.shape[1])])
    return var, float(2 * var**2 / (g @ A @ g))


def f_test(fit, L: np.ndarray, rhs: np.ndarray, method: str) -> tuple:
    """One row of lmerTest's contestMD table for the hypothesis L beta = rhs."""
    sigma = fit.sigma
    if L.shape[0] == 0:
        return (np.nan,) * 6
    if method == "kenward-roger":
        return _f_kenward_roger(fit, L, rhs)
    if L.shape[0] == 1:
        _, _, df, t, _, _, _ = t_test(fit, L[0], rhs[0], method)
        return _row(t**2, 1, df, sigma)
    from .satterthwaite import varpar_derivatives

    V, J, A = varpar_derivatives(fit)
    beta = fit.beta - (np.linalg.pinv(L) @ rhs if np.any(rhs != 0) else 0.0)
    d, P = np.linalg.eigh(L @ V @ L.T)
    d, P = d[::-1], P[:, ::-1]  # decreasing, as R's eigen()
    q = int(np.sum(d > max(EPS * d[0], 0.0)))
    if q <= 0:
        return (np.nan,) * 6
    PtL = (P.T @ L)[:q]
    if q == 1:
        _, _, df, t, _, _, _ = t_test(fit, PtL[0], rhs[0], method)
        return _row(t**2, 1, df, sigma)
    F = float(np.sum((PtL @ beta) ** 2 / d[:q]) / q)
    p = L.shape[1]
    nu = []
    for m in range(q):
        g = np.array([PtL[m] @ J[:, k].reshape(p, p) @ PtL[m] for k in range(J.shape[1])])
        nu.append(2 * d[m] ** 2 / (g @ A @ g))
    return _row(F, q, _combine_df(np.array(nu)), sigma)


def _combine_df(nu: np.ndarray, tol: float = 1e-8) -> float:
    """lmerTest's get_Fstat_ddf."""
    if len(nu) == 1:
        return float(nu[0])
    if np.all(np.abs(np.diff(nu)) < tol):
        return float(np.mean(nu))
    if np.any(nu <= 2):
        return 2.0
    E = np.sum(nu / (nu - 2))
    return float(2 * E / (E - len(nu)))


def _f_kenward_roger(fit, L, rhs) -> tuple:
    from .kenward_roger import kr_adjust, kr_matrices

    _check_reml(fit)
    Phi, P, W, PhiA = kr_matrices(fit)
    if np.linalg.matrix_rank(L) < L.shape[0]:
        raise ArgumentError(
            "Kenward-Roger's F test needs a contrast matrix of full row rank; drop the "
            "dependent rows or use ddf='satterthwaite'"
        )
    q = L.shape[0]
    ddf, scaling = kr_adjust(L, Phi, P, W)
    diff = L @ fit.beta - rhs
    FU = float(diff @ np.linalg.solve(L @ PhiA @ L.T, diff) / q)
    return _row(FU, q, ddf, fit.sigma, scaling)


def _check_reml(fit) -> None:
    if not fit.reml:
        raise ArgumentError(
            "Kenward-Roger's method is only available for REML fits (as in lmerTest); "
            "fit with REML=True or use ddf='satterthwaite'"
        )


def _row(F, ndf, ddf, sigma, scaling=1.0) -> tuple:
    """lmerTest's mk_Ftable."""
    ms = F * sigma**2
    F = F * scaling
    return ms * ndf, ms, ndf, ddf, F, stats.f.sf(F, ndf, ddf)
