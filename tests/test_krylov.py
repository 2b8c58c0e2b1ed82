"""method="krylov" (lmmfast/_factor/krylov.py, src/_krylov.pyx) against dense oracles and
against the exact crossed factorization on designs where both run.

Tolerances: theta, sigma, beta within 1e-3 relative of the exact fit (issue 12; measured
here ~1e-5); the objective within 3 of its reported Monte Carlo standard errors (fresh
probes); the [X y] Schur part (CG to 1e-10) within 1e-8 relative; over 20 probe seeds the
95% intervals cover the exact objective at least 16 times (P(<= 15 | 95%) = 0.016).
"""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from dense import central_gradient

import lmmfast
from lmmfast import _krylov
from lmmfast._errors import ArgumentError
from lmmfast._factor import krylov as kr
from lmmfast._factor.crossed import CrossedFactor
from lmmfast._pls import ProfiledDeviance
from lmmfast._sources.crossprod import RowData
from lmmfast._sources.formula import parse_formula
from lmmfast._sources.frame import build_frame


def crossed(n, nu, nm, seed=0, distinct=False, three=False):
    rng = np.random.default_rng(seed)
    if distinct:  # distinct user-movie pairs: every count is 1 (the kernel's unit path)
        key = rng.choice(nu * nm, size=n, replace=False)
        u, m = key // nm, key % nm
    else:
        u, m = rng.integers(0, nu, n), rng.integers(0, nm, n)
    y = 3.5 + 0.5 * rng.standard_normal(nu)[u] + 0.3 * rng.standard_normal(nm)[m]
    df = pd.DataFrame({"u": u.astype(str), "m": m.astype(str), "x": rng.standard_normal(n)})
    if three:
        g = rng.integers(0, 30, n)
        y = y + 0.4 * rng.standard_normal(30)[g]
        df["g"] = g.astype(str)
    df["y"] = y + 0.2 * df["x"] + rng.standard_normal(n)
    return df


# ----- the kernel against a dense oracle -----------------------------------------------------
@pytest.mark.parametrize("unit", [True, False])
@pytest.mark.parametrize("k", [1, 3, 11])
@pytest.mark.parametrize("threads", [1, 2])
def test_schur_apply_matches_dense(unit, k, threads):
    rng = np.random.default_rng(k)
    N = sp.random(300, 60, density=0.1, format="csr", random_state=k)
    N.data[:] = 1.0 if unit else rng.integers(1, 4, N.nnz)
    s, c, d = rng.random(300), rng.random(60), rng.random(60) + 5
    V = rng.standard_normal((60, k))
    out = np.empty_like(V)
    work = np.empty((threads, 61, k))
    ip, ix = N.indptr.astype(np.int64), N.indices.astype(np.int32)
    _krylov.schur_apply(ip, ix, N.data, unit, s, c, d, V, out, work, threads)
    Nd = N.toarray()
    S = np.diag(d) - np.diag(c) @ Nd.T @ np.diag(s) @ Nd @ np.diag(c)
    np.testing.assert_allclose(out, S @ V, rtol=1e-12, atol=1e-12)
    again = np.empty_like(V)
    _krylov.schur_apply(ip, ix, N.data, unit, s, c, d, V, again, work, threads)
    assert np.array_equal(out, again)  # deterministic
    diag = np.empty(60)
    _krylov.schur_diag(ip, ix, N.data, unit, s, diag)
    np.testing.assert_allclose(diag, (Nd**2).T @ s, rtol=1e-12)


# ----- one evaluation against the exact factor ----------------------------------------------
def _objects(df, formula="y ~ x + (1 | u) + (1 | m)", reml=False):
    frame = build_frame(parse_formula(formula), df, None, None)
    cp = RowData(frame.terms, frame.Xcols, frame.xnames, frame.y).cross_products(None)
    return frame, cp


def test_update_and_gradient_match_exact():
    df = crossed(20_000, 2_000, 200, seed=3)
    frame, cp = _objects(df)
    Ts = [np.array([[0.6]]), np.array([[0.35]])]
    kf = kr.KrylovFactor(cp, frame.terms)
    ex = CrossedFactor(cp, frame.terms)
    ld_k, C_k = kf.update(Ts)
    ld_e, C_e = ex.update(Ts)
    np.testing.assert_allclose(C_k, C_e, rtol=1e-8)
    se = np.std(kf.probe_values, ddof=1) / np.sqrt(kf.nprobes)
    assert abs(ld_k - ld_e) < 3 * se, (ld_k, ld_e, se)
    assert se < 0.5
    # the gradient: within its probe noise of the exact one (itself checked by finite
    # differences in test_gradient.py), and of a finite difference of the exact objective
    dev = ProfiledDeviance(cp, frame.terms, frame.n, False, 0.0, method="exact")
    theta = np.array([0.6, 0.35])
    _, g_exact = dev.value_and_gradient(theta)
    devk = ProfiledDeviance(cp, frame.terms, frame.n, False, 0.0, method="krylov")
    assert devk.factorization == "krylov"
    _, g_k = devk.value_and_gradient(theta)
    g_se = np.std(devk.factor.grad_probes, axis=0, ddof=1) / np.sqrt(kf.nprobes)
    assert np.all(np.abs(g_k - g_exact) < 3 * g_se + 1e-6 * np.abs(g_exact)), (g_k, g_exact)
    h = 1e-5
    fd = central_gradient(dev, theta, h)
    assert np.all(np.abs(g_k - fd) < 3 * g_se + 1e-4 * np.abs(fd))
    # the conditional modes
    beta = np.array([3.5, 0.2])
    for a, b in zip(kf.spherical_modes(beta), ex.spherical_modes(beta)):
        np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-9)


def test_pwrss_bound_is_certified():
    df = crossed(20_000, 2_000, 200, seed=4)
    frame, cp = _objects(df)
    kf = kr.KrylovFactor(cp, frame.terms)
    Ts = [np.array([[1.0]]), np.array([[1.0]])]
    kf.update(Ts)
    bound = kf.pwrss_bound(np.array([3.5, 0.2]))
    assert 0 <= bound < 1e-8
    # a loose CG: the bound still holds against the exact value
    saved = kr.CG_TOL
    try:
        kr.CG_TOL = 1e-2
        loose = kr.KrylovFactor(cp, frame.terms)
        _, C_loose = loose.update(Ts)
        b = np.array([3.5, 0.2])
        v = np.append(-b, 1.0)
        _, C = CrossedFactor(cp, frame.terms).update(Ts)
        err = v @ (C - C_loose) @ v  # exact quadratic form minus the computed one
        assert -1e-9 <= err <= loose.pwrss_bound(b) * (1 + 1e-9)
        assert loose.pwrss_bound(b) > 0
    finally:
        kr.CG_TOL = saved


# ----- whole fits against the exact method --------------------------------------------------
CASES = {
    "20k_2kx200": dict(n=20_000, nu=2_000, nm=200, seed=1),
    "100k_5kx500": dict(n=100_000, nu=5_000, nm=500, seed=2, distinct=True),
}


@pytest.fixture(scope="module", params=[(c, r) for c in CASES for r in (False, True)],
                ids=lambda p: f"{p[0]}-{'REML' if p[1] else 'ML'}")  # fmt: skip
def pair(request):
    name, reml = request.param
    df = crossed(**CASES[name])
    f = "y ~ x + (1 | u) + (1 | m)"
    return (lmmfast.lmer(f, df, REML=reml, method="exact"),
            lmmfast.lmer(f, df, REML=reml, method="krylov"))  # fmt: skip


def test_fit_matches_exact(pair):
    exact, fit = pair
    assert exact.factorization == "crossed" and fit.factorization == "krylov"
    rep = fit.optsummary.krylov
    np.testing.assert_allclose(fit.theta, exact.theta, rtol=1e-3)
    np.testing.assert_allclose(fit.sigma, exact.sigma, rtol=1e-3)
    np.testing.assert_allclose(fit.beta, exact.beta, rtol=1e-3)
    assert abs(rep.objective - exact.objective) < 3 * rep.objective_se
    assert rep.pwrss_bound < 1e-6
    assert rep.deflated >= 1 and rep.evaluations > 0 and rep.cg_iterations > 0
    assert rep.probes == kr.NPROBES and rep.fit_probes == kr.FIT_PROBES  # fresh, fit's
    # the implied uncertainty of theta-hat covers the actual difference from the exact fit
    assert np.all(np.abs(fit.theta - exact.theta) < 5 * rep.theta_se_approx + 1e-6)
    assert np.all(rep.theta_se_approx < 1e-2 * rep.theta_se_stat)
    for g in ("u", "m"):
        np.testing.assert_allclose(
            fit.ranef[g].to_numpy(),
            exact.ranef[g].to_numpy(),
            rtol=1e-3,
            atol=1e-3 * np.abs(exact.ranef[g]).max().max(),
        )


def test_summary_has_one_krylov_line(pair):
    _, fit = pair
    lines = [ln for ln in str(fit.summary()).splitlines() if ln.startswith("Krylov")]
    assert len(lines) == 1 and "+/-" in lines[0]


def test_coverage_over_probe_seeds():
    """At the exact optimum, the estimate +/- 1.96 SE from 20 probe seeds covers the exact
    objective about 95% of the time."""
    df = crossed(20_000, 2_000, 200, seed=5)
    frame, cp = _objects(df)
    exact = lmmfast.lmer("y ~ x + (1 | u) + (1 | m)", df, REML=False, method="exact")
    dev = ProfiledDeviance(cp, frame.terms, frame.n, False, 0.0, method="krylov")
    covered, zs = 0, []
    for seed in range(20):
        dev.factor.set_probes(1000 + seed, kr.NPROBES)  # as the report's re-evaluation
        value = dev(exact.theta)
        se = np.std(dev.factor.probe_values, ddof=1) / np.sqrt(dev.factor.nprobes)
        zs.append((value - exact.objective) / se)
        covered += abs(value - exact.objective) <= 1.96 * se
    assert covered >= 16, zs
    assert abs(np.mean(zs)) < 3 / np.sqrt(20) * 1.5  # no bias beyond the noise


def test_three_crossed_terms_and_weights():
    df = crossed(30_000, 1_500, 300, seed=6, three=True)
    w = np.random.default_rng(0).uniform(0.5, 2.0, len(df))
    f = "y ~ x + (1 | u) + (1 | m) + (1 | g)"
    exact = lmmfast.lmer(f, df, REML=True, weights=w, method="exact")
    fit = lmmfast.lmer(f, df, REML=True, weights=w, method="krylov")
    assert fit.factorization == "krylov"
    np.testing.assert_allclose(fit.theta, exact.theta, rtol=1e-3)
    np.testing.assert_allclose(fit.beta, exact.beta, rtol=1e-3)
    np.testing.assert_allclose(fit.sigma, exact.sigma, rtol=1e-3)
    rep = fit.optsummary.krylov
    assert abs(rep.objective - exact.objective) < 3 * rep.objective_se


# ----- the choice and bad input ---------------------------------------------------------------
def test_method_choice(monkeypatch):
    df = crossed(5_000, 500, 100, seed=7)
    f = "y ~ x + (1 | u) + (1 | m)"
    assert lmmfast.lmer(f, df).factorization == "crossed"
    monkeypatch.setattr(kr, "EXACT_BUDGET_S", 1e-12)  # any exact factor is "too slow"
    fit = lmmfast.lmer(f, df)
    assert fit.factorization == "krylov"
    assert lmmfast.lmer(f, df, method="exact").factorization == "crossed"
    with pytest.raises(ArgumentError, match="method must be one of"):
        lmmfast.lmer(f, df, method="iterative")
    with pytest.raises(ArgumentError, match="crossed scalar terms"):
        lmmfast.lmer("y ~ x + (x | u) + (1 | m)", df, method="krylov")


def test_objective_is_deterministic():
    df = crossed(5_000, 500, 100, seed=8)
    frame, cp = _objects(df)
    a = ProfiledDeviance(cp, frame.terms, frame.n, True, 0.0, method="krylov")
    b = ProfiledDeviance(cp, frame.terms, frame.n, True, 0.0, method="krylov")
    theta = np.array([0.7, 0.4])
    assert a(theta) == b(theta)


def test_extra_deflation_keeps_the_estimate_unbiased():
    """Deflating further eigen-directions (ARPACK) beside the mean direction: the same
    log-determinant within the probe error, and the Ritz-value count finds no spurious ones."""
    df = crossed(20_000, 2_000, 200, seed=9)
    frame, cp = _objects(df)
    Ts = [np.array([[0.6]]), np.array([[0.35]])]
    ld_e, _ = CrossedFactor(cp, frame.terms).update(Ts)
    plain = kr.KrylovFactor(cp, frame.terms)
    plain.update(Ts)
    assert plain.extra == 0 and plain.U.shape[1] == 1
    kf = kr.KrylovFactor(cp, frame.terms)
    kf.extra = 2
    ld_k, _ = kf.update(Ts)
    assert kf.U.shape[1] == 3 and kf.stats["eig"] > 0
    np.testing.assert_allclose(kf.U.T @ kf.U, np.eye(3), atol=1e-10)
    se = np.std(kf.probe_values, ddof=1) / np.sqrt(kf.nprobes)
    assert abs(ld_k - ld_e) < 3 * se


def test_gauss_radau_brackets_contain_each_probe():
    """Each fresh probe's quadratic form (Pz)' log(S~) (Pz), from a dense eigendecomposition
    of S~, lies within its Gauss-Radau bounds; the bounds are ordered and, with CG run to
    1e-8, tight; the lower node 1/max(M) and the Gershgorin upper node enclose the spectrum."""
    df = crossed(20_000, 2_000, 200, seed=10)
    frame, cp = _objects(df)
    kf = kr.KrylovFactor(cp, frame.terms)
    kf.update([np.array([[0.6]]), np.array([[0.35]])])
    lo, hi, (tlo, thi) = kf.radau_brackets()
    S = kf._S(np.eye(kf.m))
    w, V = np.linalg.eigh(0.5 * (S + S.T))
    assert w[0] >= 1 / kf.M.max() - 1e-12
    exact = np.einsum("ij,ij->j", V.T @ kf.Zp, np.log(w)[:, None] * (V.T @ kf.Zp))
    assert len(lo) == kf.nprobes
    assert np.all(lo <= exact + 1e-9 * np.abs(exact)) and np.all(exact <= hi + 1e-9 * np.abs(exact))
    assert np.all(lo <= kf.probe_values + 1e-9) and np.all(hi - lo < 1e-3 * np.abs(exact) + 1e-6)
    assert tlo <= kf.deflated_part + np.mean(kf.probe_values) <= thi + 1e-9
    # a loose tolerance: few Lanczos steps, wide but still valid brackets
    saved = kr.PROBE_TOL
    try:
        kr.PROBE_TOL = 1e-1
        loose = kr.KrylovFactor(cp, frame.terms)
        loose.update([np.array([[0.6]]), np.array([[0.35]])])
        lo2, hi2, _ = loose.radau_brackets()
        assert np.all(lo2 <= exact + 1e-9 * np.abs(exact)) and np.all(
            exact <= hi2 + 1e-9 * np.abs(exact)
        )
        assert np.max(hi2 - lo2) > np.max(hi - lo)
    finally:
        kr.PROBE_TOL = saved
