"""Profile-likelihood intervals: lme4's numbers where lme4 is right, a brute-force dense
profile (every other parameter re-optimized at the fixed value, from a dense n x n
likelihood) where it is not (prior weights: lme4 issue #192; spline interpolation near a
bound) and on random small designs (boundary, weighted, correlation-at-+-1 cases)."""

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import REFERENCE
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from scipy import optimize, stats

import lmmfast
from lmmfast._inference.intervals import parameters

with open(REFERENCE / "profile_refs.json") as fh:
    PROFILE_REFS = json.load(fh)  # made by tests/reference/profile_refs.R (lme4 1.1-31)


def _data(name):
    return pd.read_csv(REFERENCE / "data" / f"{name}.csv")


def test_orthodont_limits_are_lme4s_not_the_estimate():
    # the warm start from the lower search used to put sd_age's upper limit at the estimate
    # (0.154), sd_(Intercept)'s at 2.318 and the correlation's lower one at -0.914.
    # tolerance 2e-3 relative (lme4 interpolates the profile by splines); 1e-4 absolute for
    # sd_(Intercept)'s lower limit 0.00127, next to the bound, where lme4's spline is coarse
    fit = lmmfast.lmer("distance ~ age * Sex + (age | Subject)", _data("Orthodont"), REML=False)
    ci = fit.confint(method="profile")
    ref = PROFILE_REFS["orthodont"]
    assert list(ci.index) == ref["names"]
    np.testing.assert_allclose(ci.iloc[:, 0], ref["lower"], rtol=2e-3, atol=1e-4)
    np.testing.assert_allclose(ci.iloc[:, 1], ref["upper"], rtol=2e-3, atol=1e-4)
    assert ci.loc["sd_age|Subject"].iloc[1] == pytest.approx(0.3386, abs=1e-4)
    assert ci.loc["sd_(Intercept)|Subject"].iloc[1] == pytest.approx(4.148, abs=1e-3)
    assert ci.loc["cor_age.(Intercept)|Subject"].iloc[0] == -1.0


def test_beets_profile_reaches_small_sigma_without_a_warning():
    fit = lmmfast.lmer("sugpct ~ block + sow + harvest + (1|block:harvest)", _data("beets"),
                       REML=False)  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the divide-by-zero RuntimeWarning used to escape
        ci = fit.confint()  # method="profile" is the default, as lme4's
    ref = PROFILE_REFS["beets"]
    assert list(ci.index) == ref["names"]
    np.testing.assert_allclose(ci.iloc[:, 0], ref["lower"], rtol=2e-3, atol=1e-6)
    np.testing.assert_allclose(ci.iloc[:, 1], ref["upper"], rtol=2e-3, atol=1e-6)


# ----- the brute-force oracle ------------------------------------------------------------
class DenseML:
    """-2 log L of y ~ N(X beta, Z (I (x) Sigma) Z' + sigma^2 W^-1) for one grouping factor
    with q = 1 or 2 columns, beta profiled out by GLS (dense n x n).  Re-optimized in its
    own, unconstrained coordinates: Sigma = L L' with L = [[a, 0], [c, d]] (lmmfast
    profiles on the sd/cor scale), so a correlation can pass from -1 to +1 smoothly."""

    def __init__(self, y, X, Zq, g, w):
        self.y, self.X, self.w = y, X, w
        n, q = Zq.shape
        levels = np.unique(g)
        self.Z = np.zeros((n, len(levels) * q))
        for k, lv in enumerate(levels):
            self.Z[g == lv, k * q : (k + 1) * q] = Zq[g == lv]
        self.q, self.nl = q, len(levels)

    def nvar(self):
        return 2 if self.q == 1 else 4

    def deviance(self, S, sigma, beta_fixed=None):
        """beta_fixed = (j, b) holds beta_j = b."""
        if not (sigma > 0 and np.all(np.isfinite(S))):
            return np.inf
        V = self.Z @ np.kron(np.eye(self.nl), S) @ self.Z.T + np.diag(sigma**2 / self.w)
        try:
            L = np.linalg.cholesky(V)
        except np.linalg.LinAlgError:
            return np.inf
        Xs, ys = np.linalg.solve(L, self.X), np.linalg.solve(L, self.y)
        if beta_fixed is not None:
            j, b = beta_fixed
            ys = ys - b * Xs[:, j]
            Xs = np.delete(Xs, j, axis=1)
        beta = np.linalg.lstsq(Xs, ys, rcond=None)[0]
        r = ys - Xs @ beta
        return len(self.y) * np.log(2 * np.pi) + 2 * np.sum(np.log(np.diag(L))) + r @ r

    def _model(self, fixed):
        """(u -> (Sigma, sigma), start map v -> u) with parameter w held at x if fixed."""
        w, x = fixed if fixed is not None else (None, None)
        if self.q == 1:
            if w == 0:
                return (lambda u: (np.array([[x * x]]), abs(u[0]))), (lambda v: [v[1]])
            if w == 1:
                return (lambda u: (np.array([[u[0] ** 2]]), x)), (lambda v: [v[0]])
            return (lambda u: (np.array([[u[0] ** 2]]), abs(u[1]))), (lambda v: list(v))

        def chol(a, c, d):
            L = np.array([[a, 0.0], [c, d]])
            return L @ L.T

        def acd(v):  # sd/cor -> L's entries
            r = np.clip(v[1], -1, 1)
            return v[0], r * v[2], np.sqrt(1 - r * r) * v[2]

        if w == 0:
            return (lambda u: (chol(x, u[0], u[1]), abs(u[2]))), (lambda v: [*acd(v)[1:], v[3]])
        if w == 1:
            rho = x

            def cor_model(u):
                s1, s2 = abs(u[0]), abs(u[1])
                return np.array([[s1 * s1, rho * s1 * s2], [rho * s1 * s2, s2 * s2]]), abs(u[2])

            return cor_model, (lambda v: [v[0], v[2], v[3]])
        if w == 2:
            return ((lambda u: (chol(u[0], x * np.cos(u[1]), x * np.sin(u[1])), abs(u[2]))),
                    (lambda v: [v[0], np.arccos(np.clip(v[1], -1, 1)), v[3]]))  # fmt: skip
        if w == 3:
            return (lambda u: (chol(*u), x)), (lambda v: list(acd(v)))
        return (lambda u: (chol(u[0], u[1], u[2]), abs(u[3]))), (lambda v: [*acd(v), v[3]])

    def minimum(self, starts, fixed=None, beta_fixed=None):
        """min over the variance parameters (the w-th held at x if fixed = (w, x)), from
        each start (sd/cor vectors) and its mirror images (correlation of either sign)."""
        model, to_u = self._model(fixed)

        def f(u):
            S, sigma = model(u)
            return self.deviance(S, sigma, beta_fixed)

        best = np.inf
        for s0 in starts:
            for r in (1.0, -1.0):
                v = np.array(s0, dtype=float)
                if self.q == 2:
                    v[1] = r * (v[1] if abs(v[1]) > 0.2 else 0.5)
                u0 = np.array(to_u(v), dtype=float)
                res = optimize.minimize(f, u0, method="BFGS", options={"gtol": 1e-7})
                res = optimize.minimize(
                    f,
                    res.x,
                    method="Nelder-Mead",
                    options={"xatol": 1e-9, "fatol": 1e-11, "maxfev": 4000},
                )
                best = min(best, res.fun)
        return best


def _design(seed, q, sd, cor, weighted, ngroups):
    rng = np.random.default_rng(seed)
    m = 4
    g = np.repeat(np.arange(ngroups), m)
    x = rng.normal(size=g.size)
    S = np.array([[sd**2, cor * sd * 0.8 * sd], [cor * sd * 0.8 * sd, (0.8 * sd) ** 2]])
    b = rng.multivariate_normal(np.zeros(2), S, size=ngroups, method="eigh")
    w = rng.uniform(0.5, 2.0, size=g.size) if weighted else np.ones(g.size)
    y = (
        1.0
        + 0.5 * x
        + b[g, 0]
        + (b[g, 1] * x if q == 2 else 0)
        + rng.normal(size=g.size) / np.sqrt(w)
    )
    return pd.DataFrame({"y": y, "x": x, "g": [f"g{k}" for k in g], "w": w})


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@example(seed=0, q=2, sd=0.0, cor=-1.0, weighted=False, ngroups=6)  # singular: sd 0, cor free
@example(seed=296, q=2, sd=1.5, cor=0.0, weighted=True, ngroups=6)  # cor -1 at the optimum,
# +1 at the lower limit of x's coefficient
@example(seed=455, q=2, sd=0.0, cor=-1.0, weighted=False, ngroups=7)  # cor +1 at the
# optimum; at the intercept's upper limit the optimum is in the sign-flipped basin
@example(seed=257, q=2, sd=0.0, cor=-1.0, weighted=False, ngroups=5)  # the intercept sd's
# upper limit: with it held, the minimum over the others has the correlation's other sign
@given(
    seed=st.integers(0, 10_000),
    q=st.sampled_from([1, 2]),
    sd=st.sampled_from([0.0, 0.3, 1.5]),
    cor=st.sampled_from([-1.0, 0.0, 1.0]),
    weighted=st.booleans(),
    ngroups=st.integers(5, 8),
)
def test_limits_are_roots_of_the_brute_force_profile(seed, q, sd, cor, weighted, ngroups):
    check_against_brute_force(seed, q, sd, cor, weighted, ngroups)


def check_against_brute_force(seed, q, sd, cor, weighted, ngroups):
    df = _design(seed, q, sd, cor, weighted, ngroups)
    formula = "y ~ x + (1 | g)" if q == 1 else "y ~ x + (x | g)"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", lmmfast.SingularFitWarning)
        warnings.simplefilter("ignore", lmmfast.ConvergenceWarning)
        fit = lmmfast.lmer(formula, df, REML=False, weights="w" if weighted else None)
        ci = fit.confint("profile")
    X = np.column_stack([np.ones(len(df)), df["x"]])
    Zq = X[:, :q]
    oracle = DenseML(df["y"].to_numpy(), X, Zq, df["g"].to_numpy(), df["w"].to_numpy())
    est = np.nan_to_num(parameters(fit).to_numpy())  # cor of sd 0
    nv = oracle.nvar()
    sig = est[nv - 1]
    grid = [est[:nv], np.array([sig, 0.5, sig, sig][-nv:] if nv == 4 else [sig, sig])]
    dmin = oracle.minimum(grid)
    assert fit.objective <= dmin + 1e-5  # the dense optimum, to the optimizer tolerance
    z2 = stats.norm.ppf(0.975) ** 2
    lower = [0.0, -1.0, 0.0, 0.0] if q == 2 else [0.0, 0.0]
    upper = [np.inf, 1.0, np.inf, np.inf] if q == 2 else [np.inf, np.inf]

    def excess(w, x):
        """brute-force D(x) - D_min for parameter w held at x"""
        if w < nv:
            return oracle.minimum(grid, fixed=(w, x)) - dmin
        return oracle.minimum(grid, beta_fixed=(w - nv, x)) - dmin

    for w, name in enumerate(ci.index):
        for side, limit in ((0, ci.iloc[w, 0]), (1, ci.iloc[w, 1])):
            assert np.isfinite(limit), (name, side)
            bound = (lower if side == 0 else upper)[w] if w < nv else None
            if bound is not None and limit == bound:
                assert excess(w, limit) <= z2 + 2e-3, (name, side, "bound")
                continue
            assert excess(w, limit) == pytest.approx(z2, abs=2e-3), (name, side, limit)
            # the first crossing from the estimate: still inside on the way there
            inside = est[w] + 0.9 * (limit - est[w])
            assert excess(w, inside) < z2, (name, side, "first crossing")
