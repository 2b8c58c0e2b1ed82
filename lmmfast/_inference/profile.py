"""Profile-likelihood confidence intervals, as lme4's confint(fit, method = "profile").

As lme4's profile.merMod: profiles are of the ML deviance (a REML fit is refitted by ML
first).  Variance parameters are on the sd/cor scale with sigma, and

    D(sd, cor, sigma) = ldL2(theta) - ldW + pwrss(theta) / sigma^2 + n log(2 pi sigma^2)

(beta profiled out, sigma not).  For one parameter x, zeta(x) = sign(x - x_hat)
sqrt(min D over the others with x fixed - D_min); a fixed effect beta_j is profiled by
moving x_j beta_j into the offset and minimizing the ML deviance over theta.  The
limits solve zeta(x) = -+ z_{(1+level)/2}; lme4 interpolates zeta with splines, here
the roots are found directly.  A limit beyond a bound (sd >= 0, |cor| <= 1) is the bound.
The fixed-effect refits are built from the cross-products (y' = y - b x_j), never the rows.
"""

from __future__ import annotations

import nlopt
import numpy as np
import pandas as pd
from scipy import optimize, stats

from .._pls import ProfiledDeviance
from .._sources.crossprod import CrossProducts
from .intervals import parameters


def confint_profile(fit, level: float = 0.95) -> pd.DataFrame:
    ml = fit.refit_ml()
    dev = ml._dev
    z = stats.norm.ppf(0.5 + level / 2)
    est = parameters(ml)
    names = list(est.index)
    nv = len(names) - len(ml.beta)  # sd/cor parameters and sigma
    lower = _lower_bounds(ml)
    upper = _upper_bounds(ml)
    base = _varpar_deviance(dev, ml, est.to_numpy()[:nv])
    rows = []
    for w in range(len(names)):
        if w < nv:
            zeta = _VarianceProfile(dev, ml, est.to_numpy()[:nv], w, lower, upper, base)
        else:
            zeta = _FixedProfile(dev, ml, w - nv, base)
        x0 = est.iloc[w]
        se = _scale(ml, w, nv, x0)
        lo = _limit(zeta, x0, -se, -z, lower[w] if w < nv else -np.inf)
        hi = _limit(zeta, x0, se, z, upper[w] if w < nv else np.inf)
        rows.append((lo, hi))
    cols = [f"{100 * (0.5 - level / 2):.3g} %", f"{100 * (0.5 + level / 2):.3g} %"]
    return pd.DataFrame(rows, index=names, columns=cols)


def _limit(zeta, x0, step, target, bound):
    """The x beyond x0 (in the direction of step) with zeta(x) = target, or the bound:
    widen the bracket geometrically, then solve by Brent's method."""

    def reached(x):
        fx = zeta(x)
        return fx <= target if target < 0 else fx >= target

    prev, x = x0, x0 + step
    for _ in range(60):
        if (x - bound) * np.sign(step) >= 0:  # at or past the bound
            if not reached(bound):
                return bound
            x = bound
        if reached(x):
            return optimize.brentq(lambda t: zeta(t) - target, prev, x, xtol=1e-10)
        prev, x = x, x + 2 * (x - x0)
    return np.nan


def _scale(fit, w, nv, x0):
    if w >= nv:
        return float(fit.se.iloc[w - nv])
    return max(0.25 * abs(x0), 0.05)


def _lower_bounds(fit) -> np.ndarray:
    out = []
    for t in fit.terms:
        for j in range(t.q):
            for i in range(j, t.q):
                out.append(0.0 if i == j else -1.0)
    return np.array([*out, 0.0] + [-np.inf] * len(fit.beta))


def _upper_bounds(fit) -> np.ndarray:
    out = []
    for t in fit.terms:
        for j in range(t.q):
            for i in range(j, t.q):
                out.append(np.inf if i == j else 1.0)
    return np.array([*out, np.inf] + [np.inf] * len(fit.beta))


def _theta(fit, v: np.ndarray) -> np.ndarray:
    """sd/cor per term and sigma (v[-1]) -> theta (lme4's Sv_to_Cv)."""
    sigma = v[-1]
    out, k = [], 0
    for t in fit.terms:
        m = t.q * (t.q + 1) // 2
        sd, R = np.zeros(t.q), np.eye(t.q)
        idx = 0
        for j in range(t.q):
            for i in range(j, t.q):
                if i == j:
                    sd[i] = v[k + idx]
                else:
                    R[i, j] = R[j, i] = v[k + idx]
                idx += 1
        try:  # Sigma = D R D = (D chol(R))(D chol(R))': valid with an sd of 0
            T = sd[:, None] * np.linalg.cholesky(R) / sigma
        except np.linalg.LinAlgError:
            return None
        out += [T[i, j] for j in range(t.q) for i in range(j, t.q)]
        k += m
    return np.array(out)


def _varpar_deviance(dev, fit, v: np.ndarray) -> float:
    theta = _theta(fit, v)
    if theta is None or v[-1] <= 0:
        return np.inf
    dec = dev.decompose(theta)
    s2 = v[-1] ** 2
    return dec.ldL2 - dev.ldW + dec.pwrss / s2 + dev.n * np.log(2 * np.pi * s2)


class _VarianceProfile:
    """zeta for variance parameter w: minimize D over the other sd/cor and sigma."""

    def __init__(self, dev, fit, opt, w, lower, upper, base):
        self.dev, self.fit, self.w, self.base = dev, fit, w, base
        self.x0 = opt[w]
        self.start = np.delete(opt, w)
        self.lo = np.delete(lower[: len(opt)], w)
        self.hi = np.delete(upper[: len(opt)], w)
        self.lo = np.where(self.lo == -1.0, -1.0 + 1e-10, self.lo)
        self.hi = np.where(self.hi == 1.0, 1.0 - 1e-10, self.hi)
        self.lo[-1] = 1e-10  # sigma > 0

    def __call__(self, x: float) -> float:
        def full(others):
            return np.insert(others, self.w, x)

        f = lambda others, grad: _varpar_deviance(self.dev, self.fit, full(others))  # noqa: E731
        if len(self.start):
            o = nlopt.opt(nlopt.LN_BOBYQA, len(self.start))
            o.set_lower_bounds(self.lo)
            o.set_upper_bounds(np.where(np.isfinite(self.hi), self.hi, 1e300))
            o.set_min_objective(f)
            o.set_xtol_rel(1e-10)
            o.set_maxeval(5000)
            start = np.clip(self.start, self.lo, np.where(np.isfinite(self.hi), self.hi, np.inf))
            step = np.maximum(0.1 * np.abs(start), 1e-3)
            step = np.minimum(step, np.where(np.isfinite(self.hi), (self.hi - self.lo) / 4, step))
            o.set_initial_step(step)
            try:
                x_opt = o.optimize(start)
                val = o.last_optimum_value()
            except (nlopt.RoundoffLimited, RuntimeError, ValueError):
                x_opt, val = start, f(start, None)
            self.start = x_opt
        else:
            val = f(self.start, None)
        d = max(val - self.base, 0.0)
        return float(np.sign(x - self.x0) * np.sqrt(d))


class _FixedProfile:
    """zeta for fixed effect j: the ML deviance with beta_j fixed (x_j beta_j an offset)."""

    def __init__(self, dev, fit, j, base):
        self.dev, self.fit, self.j, self.base = dev, fit, j, base
        self.x0 = float(fit.beta[j])
        self.theta = fit.theta.copy()

    def __call__(self, b: float) -> float:
        cp = _fix_column(self.dev.cp, self.j, b)
        dev_b = ProfiledDeviance(cp, self.dev.terms, self.dev.n, False, self.dev.ldW,
                                 like=self.dev.factor)  # fmt: skip
        lower = np.concatenate([t.theta_lower() for t in self.dev.terms])
        o = nlopt.opt(nlopt.LN_BOBYQA, len(self.theta))
        o.set_lower_bounds(lower)
        o.set_min_objective(lambda th, grad: dev_b(th))
        o.set_xtol_abs(1e-10)
        o.set_maxeval(5000)
        o.set_initial_step(np.maximum(0.05 * np.abs(self.theta), 1e-3))
        try:
            th = o.optimize(np.maximum(self.theta, lower))
            val = o.last_optimum_value()
        except (nlopt.RoundoffLimited, RuntimeError, ValueError):
            th, val = self.theta, dev_b(self.theta)
        self.theta = th
        d = max(val - self.base, 0.0)
        return float(np.sign(b - self.x0) * np.sqrt(d))


def _fix_column(cp: CrossProducts, j: int, b: float) -> CrossProducts:
    """Cross-products of [Z X_{-j} y - b x_j] from those of [Z X y]."""
    p = cp.XtXy.shape[0] - 1
    keep = [c for c in range(p) if c != j]
    M = np.eye(p + 1)[:, keep + [p]]  # columns: the kept x's, then y - b x_j
    M[j, -1] = -b
    XtXy = M.T @ cp.XtXy @ M
    ZXY = [z @ M for z in cp.ZXY]
    return CrossProducts(cp.D, cp.pairs, ZXY, XtXy)
