"""Satterthwaite's denominator degrees of freedom for the fixed effects, as lmerTest.

With the variance parameters varpar = (theta, sigma) and (lmerTest's devfun_vp)

    d(theta, sigma) = ldL2 + [REML: ldRX2] + n_eff log(2 pi sigma^2) + pwrss(theta) / sigma^2,
    V(theta, sigma) = sigma^2 (R_X' R_X)^{-1}                        (the covariance of beta)

the asymptotic covariance of varpar is A = 2 H^{-1} (H the Hessian of d at the optimum),
and for a contrast c with g_k = c' dV/dvarpar_k c,

    df = 2 (c' V c)^2 / (g' A g).

The derivatives are taken numerically (central differences with Richardson extrapolation,
as numDeriv does for lmerTest).  Each evaluation reads only the cross-products, so the
cost does not grow with the number of rows.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from .._errors import NeedsDataError


def varpar_deviance(dev, varpar: np.ndarray) -> float:
    theta, sigma = varpar[:-1], varpar[-1]
    dec = dev.decompose(theta)
    nmp = dev.n - dev.p if dev.reml else dev.n
    return (dec.ldL2 + (dec.ldRX2 if dev.reml else 0.0) + nmp * np.log(2 * np.pi * sigma**2)
            + dec.pwrss / sigma**2)  # fmt: skip


def covbeta(dev, varpar: np.ndarray) -> np.ndarray:
    dec = dev.decompose(varpar[:-1])
    Rinv = np.linalg.inv(dec.RX)
    return varpar[-1] ** 2 * Rinv @ Rinv.T


def satterthwaite_table(fit) -> pd.DataFrame:
    """Estimate, Std. Error, df, t value, Pr(>|t|) for each fixed effect (lmerTest)."""
    V, J, A = varpar_derivatives(fit)
    p = len(fit.beta)
    varpar = np.append(fit.theta, fit.sigma)
    rows = []
    for i in range(p):
        c = np.zeros(p)
        c[i] = 1.0
        var = c @ V @ c
        g = np.array([c @ J[:, k].reshape(p, p) @ c for k in range(len(varpar))])
        df = 2 * var**2 / (g @ A @ g)
        t = fit.beta[i] / np.sqrt(var)
        rows.append((fit.beta[i], np.sqrt(var), df, t, 2 * stats.t.sf(abs(t), df)))
    return pd.DataFrame(
        rows, index=fit.xnames, columns=["Estimate", "Std. Error", "df", "t value", "Pr(>|t|)"]
    )


def varpar_derivatives(fit):
    """(V, J, A): the covariance V of beta, its Jacobian J ((p*p, k), column k the derivative
    of V.ravel() in varpar_k) and the asymptotic covariance A = 2 H^{-1} of varpar = (theta,
    sigma): lmerTest's vcov_beta, Jac_list and vcov_varpar.  Computed once per fit."""
    cached = fit.__dict__.get("_varpar_derivatives")
    if cached is not None:
        return cached
    dev = fit._dev
    if dev is None:
        raise NeedsDataError(
            "Satterthwaite df need the fit's objective, which this fit does not hold"
        )
    varpar = np.append(fit.theta, fit.sigma)
    H = _hessian(lambda v: varpar_deviance(dev, v), varpar)
    A = 2 * np.linalg.pinv(H)
    J = _jacobian(lambda v: covbeta(dev, v).ravel(), varpar)  # (p*p, k)
    out = (covbeta(dev, varpar), J, A)
    fit.__dict__["_varpar_derivatives"] = out
    return out


ZERO_TOL = np.sqrt(np.finfo(float).eps / 7e-7)  # numDeriv's zero.tol


def _steps(x: np.ndarray, d: float) -> np.ndarray:
    """numDeriv's first step: d |x| + 1e-4 where |x| < zero.tol."""
    return np.abs(d * x) + 1e-4 * (np.abs(x) < ZERO_TOL)


def _jacobian(f, x: np.ndarray, r: int = 4) -> np.ndarray:
    """Central differences, Richardson-extrapolated over steps h, h/2, h/4, ... (numDeriv's
    jacobian: d = 1e-4)."""
    h = _steps(x, 1e-4)
    cols = []
    for k in range(len(x)):
        est = []
        for m in range(r):
            e = np.zeros_like(x)
            e[k] = h[k] / 2**m
            est.append((np.asarray(f(x + e)) - np.asarray(f(x - e))) / (2 * e[k]))
        cols.append(_richardson(est))
    return np.column_stack(cols)


def _hessian(f, x: np.ndarray, r: int = 4) -> np.ndarray:
    """numDeriv's genD: second differences from d = 0.1 (small steps drown in rounding
    error), the diagonal first, then each off-diagonal from the joint step with the
    diagonal terms removed; all Richardson-extrapolated."""
    k = len(x)
    h0 = _steps(x, 0.1)
    f0 = f(x)
    E = np.eye(k)
    diag = np.zeros(k)
    for i in range(k):
        est = []
        for m in range(r):
            h = h0[i] / 2**m
            est.append((f(x + h * E[i]) - 2 * f0 + f(x - h * E[i])) / h**2)
        diag[i] = _richardson(est)
    H = np.diag(diag)
    for i in range(k):
        for j in range(i):
            est = []
            for m in range(r):
                hi, hj = h0[i] / 2**m, h0[j] / 2**m
                step = hi * E[i] + hj * E[j]
                est.append(
                    (f(x + step) - 2 * f0 + f(x - step) - diag[i] * hi**2 - diag[j] * hj**2)
                    / (2 * hi * hj)
                )
            H[i, j] = H[j, i] = _richardson(est)
    return H


def _richardson(est: list) -> np.ndarray:
    """Eliminate the h^2, h^4, ... error terms of estimates at steps h, h/2, h/4, ..."""
    est = [np.asarray(e, dtype=float) for e in est]
    for m in range(1, len(est)):
        fac = 4.0**m
        est = [(fac * est[i + 1] - est[i]) / (fac - 1) for i in range(len(est) - 1)]
    return est[0]
