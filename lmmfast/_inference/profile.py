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

Each limit is searched on its own, outward from the optimum: steps grow geometrically
until zeta passes the target, and Brent's method then solves on that bracket, whose two
ends were both evaluated and lie on both sides of the target.  At each x the others are
re-optimized twice, from the optimum and from the solution at the nearest x already
profiled on the same side (a continuation), and the lower minimum is kept; so one search
cannot send the other to a wrong branch (which gave Orthodont's sd_age upper limit at the
estimate).  sigma > 0 is an open bound (the deviance grows without bound as sigma -> 0);
a correlation may reach +-1, where the correlation matrix is only semidefinite.
"""

from __future__ import annotations

import nlopt
import numpy as np
import pandas as pd
from scipy import optimize, stats

from .._optimize import OptSummary, with_restarts
from .._pls import ProfiledDeviance
from .._sources.crossprod import CrossProducts
from .intervals import _check_level, parameters


def confint_profile(fit, level: float = 0.95) -> pd.DataFrame:
    _check_level(level)
    ml = fit.refit_ml()
    dev = ml._dev
    z = stats.norm.ppf(0.5 + level / 2)
    est = parameters(ml)
    names = list(est.index)
    # a correlation of an sd at 0 is not identified (NaN): every value fits equally well
    v0 = np.nan_to_num(est.to_numpy(), nan=0.0)
    nv = len(names) - len(ml.beta)  # sd/cor parameters and sigma
    lower = _lower_bounds(ml)
    upper = _upper_bounds(ml)
    base = _varpar_deviance(dev, ml, v0[:nv])
    rows = []
    for w in range(len(names)):
        x0, se = v0[w], _scale(ml, w, nv, v0[w])
        limits = []
        for sign in (-1.0, 1.0):  # each limit on its own, from the optimum
            if w < nv:
                zeta = _VarianceProfile(dev, ml, v0[:nv], w, lower, upper, base)
                bound, is_open = (lower[w], w == nv - 1) if sign < 0 else (upper[w], False)
            else:
                zeta = _FixedProfile(dev, ml, w - nv, base)
                bound, is_open = sign * np.inf, False
            limits.append(_limit(zeta, x0, sign * se, sign * z, bound, is_open))
        rows.append(tuple(limits))
    cols = [f"{100 * (0.5 - level / 2):.3g} %", f"{100 * (0.5 + level / 2):.3g} %"]
    return pd.DataFrame(rows, index=names, columns=cols)


def _limit(zeta, x0, step, target, bound, is_open=False, tries=60):
    """The x beyond x0 (in the direction of step) with zeta(x) = target, or the bound.

    Steps from x0 grow geometrically; once zeta(x) passes the target, [prev, x] is a
    bracket (zeta(prev) short of the target, zeta(x) past it, both evaluated) and Brent's
    method solves on it.  A closed bound that zeta does not pass is the limit; an open one
    (sigma > 0) is approached by halving the distance to it."""
    side = np.sign(step)

    def past(fx):
        return (fx - target) * side >= 0

    prev, fprev, x = x0, 0.0, x0 + step
    for _ in range(tries):
        if (x - bound) * side >= 0:  # at or past the bound
            x = 0.5 * (prev + bound) if is_open else bound
        fx = zeta(x)
        if past(fx):
            if (fprev - target) * (fx - target) > 0:  # not a bracket: say so, do not guess
                return np.nan
            return optimize.brentq(lambda t: zeta(t) - target, prev, x, xtol=1e-10)
        if x == bound:
            return bound
        prev, fprev = x, fx
        x = x0 + 2 * (x - x0)
    return bound if is_open else np.nan


def _scale(fit, w, nv, x0):
    """The first step of a search: the SE for a fixed effect, a quarter of the estimate (at
    least 5% of sigma) for an sd or sigma, 0.1 for a correlation."""
    if w >= nv:
        return float(fit.se.iloc[w - nv])
    if _lower_bounds(fit)[w] < 0:
        return 0.1
    return max(0.25 * abs(x0), 0.05 * fit.sigma)


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


def _theta(fit, v: np.ndarray) -> np.ndarray | None:
    """sd/cor per term and sigma (v[-1]) -> theta (lme4's Sv_to_Cv); None where the
    correlations do not form a positive semidefinite matrix."""
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
        C = _semidefinite_cholesky(R)
        if C is None:
            return None
        T = sd[:, None] * C / sigma  # Sigma = D R D = (D C)(D C)': valid with an sd of 0
        out += [T[i, j] for j in range(t.q) for i in range(j, t.q)]
        k += m
    return np.array(out)


def _semidefinite_cholesky(R: np.ndarray, tol: float = 1e-12) -> np.ndarray | None:
    """Lower-triangular C with C C' = R for a positive semidefinite R (a correlation at +-1
    gives a zero pivot; its column is then 0), or None if R is not semidefinite."""
    q = len(R)
    C = np.zeros((q, q))
    for j in range(q):
        d = R[j, j] - C[j, :j] @ C[j, :j]
        if d < -tol:
            return None
        C[j, j] = np.sqrt(max(d, 0.0))
        for i in range(j + 1, q):
            r = R[i, j] - C[i, :j] @ C[j, :j]
            if C[j, j] > tol:
                C[i, j] = r / C[j, j]
            elif abs(r) > 1e-9:  # a zero pivot with a non-zero remainder: not semidefinite
                return None
    return C


def _varpar_deviance(dev, fit, v: np.ndarray) -> float:
    if not v[-1] > 0:
        return np.inf
    theta = _theta(fit, v)
    if theta is None or not np.all(np.isfinite(theta)):
        return np.inf
    dec = dev.decompose(theta)
    s2 = v[-1] ** 2
    return dec.ldL2 - dev.ldW + dec.pwrss / s2 + dev.n * np.log(2 * np.pi * s2)


FLIP_COR = 0.9  # |correlation| from which a variance's profile also starts from -correlation


class _Continuation:
    """zeta(x) = sign(x - x0) sqrt(min over the others of D - D_min), the others
    re-optimized from the optimum and from the solution at the nearest x already profiled
    on the same side; the lowest minimum is kept.  An optimum with a variance at its
    bound 0, where the deviance is flat (even in theta), gets a third start with that
    variance moved inside, and one with a correlation near +-1 a start with its sign
    reversed (`away`)."""

    def __init__(self, x0: float, start: np.ndarray, base: float, away=()):
        self.x0, self.base = x0, base
        self.start = np.asarray(start, dtype=float)
        self.away = [np.asarray(a, dtype=float) for a in away]
        self.done: dict[float, np.ndarray] = {}

    def minimize(self, x: float, start: np.ndarray) -> tuple[float, np.ndarray]:
        raise NotImplementedError

    def __call__(self, x: float) -> float:
        starts = [self.start, *self.away]
        near = [y for y in self.done if (y - self.x0) * (x - self.x0) > 0]
        if near:
            starts.append(self.done[min(near, key=lambda y: abs(y - x))])
        best, arg = np.inf, self.start
        for s0 in starts:
            val, sol = self.minimize(x, s0)
            if val < best:
                best, arg = val, sol
        self.done[x] = arg
        d = max(best - self.base, 0.0) if np.isfinite(best) else np.inf
        return float(np.sign(x - self.x0) * np.sqrt(d))


class _VarianceProfile(_Continuation):
    """zeta for variance parameter w: minimize D over the other sd/cor and sigma."""

    def __init__(self, dev, fit, opt, w, lower, upper, base):
        others, lo = np.delete(opt, w), np.delete(lower[: len(opt)], w)
        hi = np.delete(upper[: len(opt)], w)
        zero = (lo == 0) & (others == 0) & ~np.isfinite(hi)
        zero[-1] = False  # sigma
        away = [np.where(zero, 0.3 * opt[-1], others)] if zero.any() else []
        # a correlation at or near +-1: the deviance with one variance held may have its
        # minimum in the other sign's basin, which a local search from here does not reach
        cor = np.isfinite(hi) & (np.abs(others) >= FLIP_COR)
        away += [np.where(cor, -others, others)] if cor.any() else []
        super().__init__(opt[w], others, base, away)
        self.dev, self.fit, self.w = dev, fit, w
        self.lo, self.hi = lo, hi
        if w != len(opt) - 1:
            self.lo[-1] = 1e-8 * opt[-1]  # sigma > 0
        self.scale = np.maximum(np.abs(self.start), 0.05 * opt[-1])
        self.scale[np.isfinite(self.hi)] = 0.1  # correlations

    def minimize(self, x: float, start: np.ndarray) -> tuple[float, np.ndarray]:
        def f(others, grad=None):
            return _varpar_deviance(self.dev, self.fit, np.insert(others, self.w, x))

        if not len(start):
            return f(start), start
        o = nlopt.opt(nlopt.LN_BOBYQA, len(start))
        hi = np.where(np.isfinite(self.hi), self.hi, 1e300)
        o.set_lower_bounds(self.lo)
        o.set_upper_bounds(hi)
        o.set_min_objective(f)
        o.set_xtol_rel(1e-10)
        o.set_maxeval(5000)
        x_start = np.clip(start, self.lo, hi)
        step = np.minimum(0.1 * self.scale, np.where(np.isfinite(self.hi), 0.25, np.inf))
        o.set_initial_step(step)
        try:
            sol = o.optimize(x_start)
            return o.last_optimum_value(), sol
        except (nlopt.RoundoffLimited, RuntimeError, ValueError):
            return f(x_start), x_start


class _FixedProfile(_Continuation):
    """zeta for fixed effect j: the ML deviance with beta_j fixed (x_j beta_j an offset)."""

    def __init__(self, dev, fit, j, base):
        lower = np.concatenate([t.theta_lower() for t in dev.terms])
        zero = (lower == 0) & (fit.theta == 0)
        away = [np.where(zero, 0.3, fit.theta)] if zero.any() else []
        super().__init__(float(fit.beta[j]), fit.theta.copy(), base, away)
        self.dev, self.fit, self.j = dev, fit, j
        self.lower = lower
        self.qs = [t.q for t in dev.terms]

    def minimize(self, b: float, start: np.ndarray) -> tuple[float, np.ndarray]:
        cp = _fix_column(self.dev.cp, self.j, b)
        stored = self.fit._objective
        if stored is not None:  # the same kind of factorization, without the rows
            dev_b = stored.deviance(False, cp=cp, like=self.dev.factor)
        else:
            dev_b = ProfiledDeviance(cp, self.dev.terms, self.dev.n, False, self.dev.ldW,
                                     like=self.dev.factor)  # fmt: skip

        def run(x_start):
            o = nlopt.opt(nlopt.LN_BOBYQA, len(x_start))
            o.set_lower_bounds(self.lower)
            o.set_min_objective(lambda th, grad: dev_b(th))
            o.set_xtol_abs(1e-10)
            o.set_maxeval(5000)
            o.set_initial_step(np.maximum(0.1 * np.abs(x_start), 0.05))
            x_start = np.maximum(x_start, self.lower)
            try:
                th = o.optimize(x_start)
                val = o.last_optimum_value()
            except (nlopt.RoundoffLimited, RuntimeError, ValueError):
                th, val = x_start, dev_b(x_start)
            return OptSummary("LN_BOBYQA", x_start, self.lower, theta=th, fmin=val,
                              converged=True)  # fmt: skip

        # with beta_j fixed the optimum can lie in another basin than the fit's: at a
        # singular fit (a correlation of +-1) the sign-flipped one, or past a false
        # boundary optimum of the Cholesky factor; the fit's restarts reach both (a
        # singular x + (x | g) fit's upper limit for the intercept was 0.3 too close)
        opt = with_restarts(run, start, self.qs)
        return opt.fmin, opt.theta


def _fix_column(cp: CrossProducts, j: int, b: float) -> CrossProducts:
    """Cross-products of [Z X_{-j} y - b x_j] from those of [Z X y]."""
    p = cp.XtXy.shape[0] - 1
    keep = [c for c in range(p) if c != j]
    M = np.eye(p + 1)[:, keep + [p]]  # columns: the kept x's, then y - b x_j
    M[j, -1] = -b
    XtXy = M.T @ cp.XtXy @ M
    ZXY = [z @ M for z in cp.ZXY]
    return CrossProducts(cp.D, cp.pairs, ZXY, XtXy)
