"""The fit against lme4 1.1-31 on every model of tests/reference/refs_lme4.json.

Source of every expected number: tests/reference/refs_lme4.json, made by
tests/reference/refs_lme4.R (lme4::lmer with optimizer "bobyqa", maxfun 1e5).
Tolerances are those of the core-engine issue, named beside each assertion.
"""

import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import REFS, load_reference_data

import lmmfast

OBJ_REL = 1e-6  # objective: no worse than lme4's by more than 1e-6 relative
BETA_SE = 1e-3  # beta: within 1e-3 of its standard error
SE_REL = 1e-3  # standard errors and sigma: 1e-3 relative
THETA_ABS = 5e-3  # theta: within 5e-3
RANEF_REL = 1e-3  # conditional modes: 1e-3 relative (of the largest |mode| of the term)


def _vec(x):
    return np.atleast_1d(np.array(list(x.values()) if isinstance(x, dict) else x, dtype=float))


def _names(x):
    return list(x) if isinstance(x, dict) else ["(Intercept)"]


_FITS = {}


def fit_of(key):
    if key not in _FITS:
        m = REFS[key]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _FITS[key] = lmmfast.lmer(m["formula"], load_reference_data(m["data"]), REML=m["REML"])
    return _FITS[key]


MODELS = sorted(REFS)


@pytest.mark.parametrize("key", MODELS)
def test_objective_no_worse_than_lme4(key):
    fit, m = fit_of(key), REFS[key]
    assert fit.objective <= m["objective"] * (1 + OBJ_REL)
    assert fit.objective == pytest.approx(m["objective"], rel=OBJ_REL)


@pytest.mark.parametrize("key", MODELS)
def test_theta(key):
    fit, m = fit_of(key), REFS[key]
    assert fit.theta_names == list(m["theta_names"])
    np.testing.assert_allclose(fit.theta, _vec(m["theta"]), atol=THETA_ABS, rtol=0)


@pytest.mark.parametrize("key", MODELS)
def test_fixed_effects(key):
    fit, m = fit_of(key), REFS[key]
    beta, se = _vec(m["beta"]), _vec(m["se"])
    assert list(fit.fixef.index) == _names(m["beta"])
    assert np.all(np.abs(fit.fixef.to_numpy() - beta) <= BETA_SE * se)
    np.testing.assert_allclose(fit.se.to_numpy(), se, rtol=SE_REL)
    np.testing.assert_allclose(fit.sigma, m["sigma"], rtol=SE_REL)
    vcov = np.atleast_2d(np.array(m["vcov"], dtype=float))
    np.testing.assert_allclose(fit.vcov.to_numpy(), vcov, rtol=2 * SE_REL, atol=1e-12)


@pytest.mark.parametrize("key", MODELS)
def test_likelihood_and_counts(key):
    fit, m = fit_of(key), REFS[key]
    assert fit.nobs == m["nobs"]
    assert fit.ngroups == m["ngrps"]
    assert fit.npar == m["df"]
    for field in ("loglik", "aic", "bic"):
        assert getattr(fit, field) == pytest.approx(m[field], rel=OBJ_REL), field
    assert fit.is_singular == m["singular"]


@pytest.mark.parametrize("key", MODELS)
def test_varcorr(key):
    fit, m = fit_of(key), REFS[key]
    ref = pd.DataFrame(m["varcorr"]).reindex(columns=["grp", "var1", "var2", "vcov", "sdcor"])
    got = fit.varcorr
    assert got["grp"].tolist() == ref["grp"].tolist()
    for col in ("var1", "var2"):
        assert (
            got[col].astype(object).fillna("").tolist()
            == ref[col].astype(object).fillna("").tolist()
        )
    scale = ref["vcov"].abs().max()
    np.testing.assert_allclose(got["vcov"], ref["vcov"], rtol=5e-3, atol=1e-3 * scale)
    # correlations of a singular fit are +-1 or undefined; compare where lme4 has a value
    ok = ref["sdcor"].notna() & got["sdcor"].notna()
    np.testing.assert_allclose(got["sdcor"][ok], ref["sdcor"][ok], rtol=5e-3, atol=1e-3)


@pytest.mark.parametrize("key", MODELS)
def test_ranef(key):
    fit, m = fit_of(key), REFS[key]
    ref = pd.DataFrame(m["ranef"])
    for (grpvar, term), block in ref.groupby(["grpvar", "term"], sort=False):
        got = fit.ranef[grpvar][term]
        assert got.index.tolist() == block["grp"].tolist()  # R's level order
        scale = max(block["condval"].abs().max(), 1e-8)
        np.testing.assert_allclose(
            got.to_numpy(), block["condval"].to_numpy(), rtol=0, atol=RANEF_REL * scale
        )


@pytest.mark.parametrize("key", MODELS)
def test_scaled_residual_quantiles(key):
    fit, m = fit_of(key), REFS[key]
    q = np.quantile(fit.scaled_residuals, [0, 0.25, 0.5, 0.75, 1])
    np.testing.assert_allclose(q, m["scaled_resid_quantiles"], rtol=1e-3, atol=1e-4)


def test_backends_are_the_ones_designed():
    # one grouping factor: per-level blocks; nested: per-cluster blocks; crossed: blocked with
    # a dense Schur complement (CHOLMOD only for large crossed designs)
    assert fit_of("sleep_slope_reml").factorization == "blocked"
    assert fit_of("sleep_uncorr_reml").factorization == "blocked"
    assert fit_of("pastes_nested_reml").factorization == "nested"
    assert fit_of("penicillin_crossed_reml").factorization == "crossed"


def test_optimizer_record():
    opt = fit_of("sleep_slope_reml").optsummary
    assert opt.converged
    assert opt.optimizer == "L-BFGS-B"  # one grouping factor: the analytic gradient
    assert 5 < opt.feval < 60
    np.testing.assert_array_equal(opt.theta0, [1.0, 0.0, 1.0])
    assert opt.fmin == pytest.approx(fit_of("sleep_slope_reml").objective, rel=1e-12)
    assert fit_of("penicillin_crossed_reml").optsummary.optimizer == "L-BFGS-B"  # scalar terms
    assert fit_of("pastes_nested_reml").optsummary.optimizer == "L-BFGS-B"  # every factor has one


@pytest.mark.parametrize("key", ["sleep_slope_reml", "rikz_slope_ml", "dyestuff2_singular_reml"])
def test_both_optimizers_reach_lme4s_optimum(key):
    m = REFS[key]
    df = load_reference_data(m["data"])
    for name in ("lbfgs", "bobyqa"):
        fit = lmmfast.lmer(m["formula"], df, REML=m["REML"], optimizer=name)
        assert fit.optsummary.optimizer == {"lbfgs": "L-BFGS-B", "bobyqa": "LN_BOBYQA"}[name]
        assert fit.objective <= m["objective"] * (1 + 1e-10)


# ----- weights, offsets, categorical interactions --------------------------------------
# Source: tests/reference/refs_extra.json, made by tests/reference/refs_extra.R (lme4 1.1-31).
def _extra():
    import json

    from conftest import REFERENCE

    with open(REFERENCE / "refs_extra.json") as fh:
        return json.load(fh)


EXTRA = _extra()
EXTRA_CALLS = {
    "cake_interaction_reml": ("angle ~ recipe * temp + (1 | recipe:replicate)", "cake", {}),
    "sleep_weights_reml": ("Reaction ~ Days + (Days | Subject)", "sleepstudy", {"weights": "w"}),
    "sleep_weights_ml": (
        "Reaction ~ Days + (1 | Subject)",
        "sleepstudy",
        {"weights": "w", "REML": False},
    ),
    "sleep_offset_reml": ("Reaction ~ Days + (Days | Subject)", "sleepstudy", {"offset": "o"}),
}


@pytest.mark.parametrize("key", sorted(EXTRA_CALLS))
def test_weights_offsets_and_interactions_match_lme4(key):
    formula, data, kw = EXTRA_CALLS[key]
    df = load_reference_data(data)
    i = np.arange(1, len(df) + 1)
    df["w"], df["o"] = 0.5 + (i % 4) / 2, (i % 5) - 2  # as refs_extra.R
    fit, m = lmmfast.lmer(formula, df, **kw), EXTRA[key]
    assert fit.reml == m["REML"]
    assert fit.objective <= m["objective"] * (1 + OBJ_REL)
    assert fit.objective == pytest.approx(m["objective"], rel=OBJ_REL)
    np.testing.assert_allclose(fit.theta, _vec(m["theta"]), atol=THETA_ABS)
    assert list(fit.fixef.index) == _names(m["beta"])
    se = _vec(m["se"])
    assert np.all(np.abs(fit.fixef.to_numpy() - _vec(m["beta"])) <= BETA_SE * se)
    np.testing.assert_allclose(fit.se.to_numpy(), se, rtol=SE_REL)
    np.testing.assert_allclose(fit.sigma, m["sigma"], rtol=SE_REL)
    np.testing.assert_allclose(fit.fitted_values, m["fitted"], rtol=1e-5)
