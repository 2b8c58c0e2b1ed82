"""The optimizer's start for random intercepts (moment estimates, lmmfast/_moments.py) and
its evaluation count: the start against a dense NumPy oracle, the optimum the same as from
lme4's theta = 1, each evaluation counted once."""

import numpy as np
import pandas as pd
import pytest

import lmmfast
from lmmfast._moments import (
    MOMENT_START_MAX_P,
    MOMENT_START_MIN_THETA,
    moment_start,
    scalar_moment_start,
)
from lmmfast._optimize import lbfgs, minimize_theta
from lmmfast._polish import gradient_hessian


def _crossed(seed=5, n=3000):
    rng = np.random.default_rng(seed)
    u, v, w = rng.integers(0, 60, n), rng.integers(0, 40, n), rng.integers(0, 8, n)
    x = rng.normal(size=n)
    y = (1 + 0.5 * x + rng.normal(0, 0.8, 60)[u] + rng.normal(0, 0.4, 40)[v]
         + rng.normal(0, 0.05, 8)[w] + rng.normal(size=n))  # fmt: skip
    wt = rng.uniform(0.5, 2.0, n)
    df = pd.DataFrame({"y": y, "x": x, "u": u.astype(str), "v": v.astype(str),
                       "w": w.astype(str), "wt": wt})  # fmt: skip
    return df, (u, v, w)


def _oracle(df, groups, weights):
    """The moment estimates from the rows: weighted OLS, level sums of the residuals."""
    X = np.column_stack([np.ones(len(df)), df["x"]])
    y = df["y"].to_numpy()
    sw = np.sqrt(weights)
    b = np.linalg.lstsq(X * sw[:, None], y * sw, rcond=None)[0]
    r = y - X @ b
    n = weights.sum()
    T = np.sum(weights * r * r) / n
    out = []
    for g in groups:
        e = np.bincount(g, weights * r)
        d = np.bincount(g, weights)
        out.append(max((np.sum(e * e / d) - len(d) * T) / (n - len(d)), 0.0))
    se2 = max(T - sum(out), 0.1 * T)
    return np.clip(np.sqrt(np.array(out) / se2), 0.05, 20.0)


@pytest.mark.filterwarnings("ignore::lmmfast.SingularFitWarning")
def test_moment_start_matches_a_dense_oracle():
    df, groups = _crossed()
    f = "y ~ x + (1|u) + (1|v) + (1|w)"
    for weights in (None, "wt"):
        fit = lmmfast.lmer(f, df, weights=weights)
        w = np.ones(len(df)) if weights is None else df["wt"].to_numpy()
        start = scalar_moment_start(fit._dev.cp)
        np.testing.assert_allclose(start, _oracle(df, groups, w), rtol=1e-10)
        np.testing.assert_allclose(fit.optsummary.theta0, start, rtol=1e-14)


def test_the_moment_start_ends_at_the_optimum_from_theta_one():
    df, _ = _crossed(seed=9)
    fit = lmmfast.lmer("y ~ x + (1|u) + (1|v) + (1|w)", df, REML=False)
    dev = fit._dev
    ones, _ = minimize_theta(dev, dev.value_and_gradient, np.ones(3), np.zeros(3), [1, 1, 1])
    assert fit.objective <= ones.fmin + 1e-10 * abs(ones.fmin)
    np.testing.assert_allclose(fit.theta, ones.theta, atol=1e-6)
    assert fit.optsummary.feval < ones.feval + 7  # + the optimum check and the polish


def test_lbfgs_counts_each_evaluation_once():
    calls = []
    A = np.array([[3.0, 1.0], [1.0, 2.0]])

    def fg(x):
        calls.append(x.copy())
        return float(0.5 * x @ A @ x - x.sum() + 10.0), A @ x - 1.0

    s = lbfgs(fg, np.array([2.0, -1.0]), np.full(2, -np.inf))
    assert s.feval == len(calls)
    assert not any(np.array_equal(a, b) for a, b in zip(calls, calls[1:]))  # no repeat
    np.testing.assert_allclose(s.theta, np.linalg.solve(A, np.ones(2)), atol=1e-6)


def test_forward_gradient_hessian_against_the_exact_hessian():
    """gradient_hessian's forward differences (the optimum check's) and central ones, of a
    non-quadratic function with a known Hessian; forward ones at a bound either way."""
    A = np.array([[4.0, 1.0, 0.5], [1.0, 3.0, -0.2], [0.5, -0.2, 2.0]])

    def fg(x):
        return float(0.5 * x @ A @ x + np.sum(x**4)), A @ x + 4 * x**3

    x = np.array([0.3, 0.0, 1.2])
    exact = A + np.diag(12 * x**2)
    g = fg(x)[1]
    lower = np.array([-np.inf, 0.0, -np.inf])
    Hf, kf = gradient_hessian(fg, x, g, lower, forward=True)
    Hc, kc = gradient_hessian(fg, x, g, lower)
    assert (kf, kc) == (3, 5)  # the bounded entry is forward in both
    np.testing.assert_allclose(Hf, exact, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(Hc, exact, rtol=1e-7, atol=1e-5)
    assert not np.allclose(Hf, Hc, rtol=1e-9, atol=0)  # forward really differs


def test_a_wide_fixed_part_starts_from_lme4s_theta():
    # the start's OLS is one dense solve in X'X: with a many-level fixed factor (p past
    # MOMENT_START_MAX_P) it cost more than the fit (fixed_2000: 4 of 5.5 s), so lmer
    # starts from theta = 1 there; below the limit from the moments
    rng = np.random.default_rng(3)
    n, levels = 4000, MOMENT_START_MAX_P + 10
    g, h = rng.integers(0, levels, n).astype(str), rng.integers(0, 30, n).astype(str)
    df = pd.DataFrame({"g": g, "h": h, "x": rng.normal(size=n)})
    df["y"] = df.x + rng.normal(size=30)[df.h.astype(int)] + rng.normal(size=n)
    wide = lmmfast.lmer("y ~ x + g + (1 | h)", df)
    narrow = lmmfast.lmer("y ~ x + (1 | h)", df)
    assert len(wide.fixef) > MOMENT_START_MAX_P
    np.testing.assert_array_equal(wide.optsummary.theta0, [1.0])
    assert narrow.optsummary.theta0[0] != 1.0


def _kb07(nsubj=40, nitem=24, seed=3):
    """The kb07 design (every subject sees every item, s, p effect-coded) with full-rank
    subject and item covariances."""
    rng = np.random.default_rng(seed)
    subj, item = np.divmod(np.arange(nsubj * nitem), nitem)
    s, p = (((subj + item) >> k & 1) - 0.5 for k in range(2))
    Z = np.column_stack([np.ones_like(s), s, p])
    y = 10 + 2 * s - p + rng.normal(size=len(s))
    for sd, lv, codes in (([2.0, 1.0, 0.5], nsubj, subj), ([1.0, 0.5, 0.8], nitem, item)):
        C = np.diag(sd) @ (0.6 * np.eye(3) + 0.4) @ np.diag(sd)
        y += np.einsum("ij,ij->i", Z, rng.multivariate_normal(np.zeros(3), C, lv)[codes])
    return pd.DataFrame(
        {"y": y, "s": s, "p": p, "subj": subj.astype(str), "item": item.astype(str)}
    )


def _vector_oracle(df, terms, n):
    """moment_start from the rows: OLS residuals, per level g_j = Z_j'r and D_j = Z_j'Z_j,
    Sigma from the q^2 x q^2 system by dense Kronecker products, twice, then the clipped
    eigenvalues and the Cholesky factor."""
    X = np.column_stack([np.ones(len(df)), df["s"], df["p"], df["s"] * df["p"]])
    y = df["y"].to_numpy()
    r = y - X @ np.linalg.lstsq(X, y, rcond=None)[0]
    T = r @ r / n
    parts = []
    for g in terms:
        codes = pd.factorize(df[g])[0]
        Z = np.column_stack([np.ones(len(df)), df["s"], df["p"]])
        K, G, Ds = np.zeros((9, 9)), np.zeros((3, 3)), np.zeros((3, 3))
        for j in range(codes.max() + 1):
            Zj, rj = Z[codes == j], r[codes == j]
            Dj, gj = Zj.T @ Zj, Zj.T @ rj
            K += np.kron(Dj, Dj)
            G += np.outer(gj, gj)
            Ds += Dj
        parts.append((K, G, Ds))
    se2 = T
    for _ in range(2):
        sig = [np.linalg.solve(K, (G - se2 * Ds).ravel()).reshape(3, 3) for K, G, Ds in parts]
        se2 = max(T - sum(np.sum(S * Ds) for S, (_, _, Ds) in zip(sig, parts)) / n, 0.1 * T)
    out = []
    for S in sig:
        w, V = np.linalg.eigh((S + S.T) / (2 * se2))
        L = np.linalg.cholesky(V @ np.diag(np.clip(w, 0.0025, 400.0)) @ V.T)
        out += [L[i, j] for j in range(3) for i in range(j, 3)]
    return np.array(out)


def test_the_vector_moment_start_matches_a_dense_oracle():
    df = _kb07()
    fit = lmmfast.lmer("y ~ s*p + (1+s+p|subj) + (1+s+p|item)", df, REML=False)
    start = moment_start(fit._dev.cp, [3, 3], len(df))
    np.testing.assert_allclose(start, _vector_oracle(df, ["subj", "item"], len(df)), rtol=1e-9)
    np.testing.assert_allclose(fit.optsummary.theta0, start, rtol=1e-14)
    assert len(start) >= MOMENT_START_MIN_THETA


def test_the_vector_moment_start_ends_at_the_optimum_of_the_identity_start_in_fewer_steps():
    df = _kb07(nsubj=60, nitem=40, seed=8)
    fit = lmmfast.lmer("y ~ s*p + (1+s+p|subj) + (1+s+p|item)", df, REML=False)
    dev = fit._dev
    lower = np.concatenate([t.theta_lower() for t in dev.terms])
    theta1 = np.concatenate([t.theta_init() for t in dev.terms])
    qs = [t.q for t in dev.terms]
    ident, _ = minimize_theta(dev, dev.value_and_gradient, theta1, lower, qs)
    moment, _ = minimize_theta(dev, dev.value_and_gradient, fit.optsummary.theta0, lower, qs)
    assert moment.fmin == pytest.approx(ident.fmin, rel=1e-12)
    np.testing.assert_allclose(moment.theta, ident.theta, atol=1e-5)
    assert moment.feval < ident.feval


def test_few_theta_keep_lme4s_start():
    ss = lmmfast.datasets.load("sleepstudy")
    fit = lmmfast.lmer("Reaction ~ Days + (Days | Subject)", ss)
    np.testing.assert_array_equal(fit.optsummary.theta0, [1.0, 0.0, 1.0])


def test_a_start_that_is_not_finite_is_none():
    df = _kb07()
    cp = lmmfast.lmer("y ~ s*p + (1+s+p|subj) + (1+s+p|item)", df, REML=False)._dev.cp
    bad = type(cp)(cp.D, cp.pairs, cp.ZXY, cp.XtXy * np.nan)
    assert moment_start(bad, [3, 3], len(df)) is None


def _random_crossed(seed):
    """A random subject x item design (some cells missing), 2-3 columns per term, the true
    covariances full rank or rank 1."""
    rng = np.random.default_rng(seed)
    ns, ni, q = int(rng.integers(8, 30)), int(rng.integers(6, 20)), int(rng.integers(2, 4))
    subj, item = np.divmod(np.arange(ns * ni), ni)
    keep = rng.random(len(subj)) < rng.uniform(0.6, 1.0)
    subj, item = subj[keep], item[keep]
    X = rng.standard_normal((len(subj), q - 1))
    y = X @ rng.standard_normal(q - 1) + rng.uniform(0.3, 2) * rng.standard_normal(len(subj))
    Z = np.column_stack([np.ones(len(subj)), X])
    for lv, codes in ((ns, subj), (ni, item)):
        A = rng.uniform(0.1, 2) * rng.standard_normal((q, q if rng.random() < 0.7 else 1))
        y += np.einsum("ij,ij->i", Z, (rng.standard_normal((lv, A.shape[1])) @ A.T)[codes])
    cols = {f"x{k}": X[:, k] for k in range(q - 1)}
    rhs = " + ".join(cols)
    df = pd.DataFrame({"y": y, **cols, "s": subj.astype(str), "i": item.astype(str)})
    return f"y ~ {rhs} + (1 + {rhs} | s) + (1 + {rhs} | i)", df, bool(rng.random() < 0.5)


@pytest.mark.filterwarnings("ignore::lmmfast.SingularFitWarning")
@pytest.mark.parametrize("seed", range(8))
def test_the_vector_moment_start_is_never_worse_than_the_identity_start(seed, monkeypatch):
    # 59 such designs checked when the start was added: never worse than 2.5e-14 relative
    import lmmfast._lmer as lmer_module

    formula, df, reml = _random_crossed(seed)
    moment = lmmfast.lmer(formula, df, REML=reml)
    assert len(moment.theta) >= MOMENT_START_MIN_THETA
    monkeypatch.setattr(lmer_module, "MOMENT_START_MIN_THETA", 10**9)
    ident = lmmfast.lmer(formula, df, REML=reml)
    np.testing.assert_array_equal(ident.optsummary.theta0[:2], [1.0, 0.0])
    assert moment.objective <= ident.objective + 1e-10 * abs(ident.objective)
