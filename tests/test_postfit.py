"""After the fit: fitted values, residuals, conditional SDs, ICC, Wald intervals, LRT.

Source of the expected numbers: tests/reference/refs_lme4.json (lme4 1.1-31; fields
fitted, resid, fitted_marginal, ranef condval/condsd, confint_wald), made by
tests/reference/refs_lme4.R; the RIKZ ICC (0.48) and the LRT (Chisq 7.173, Df 2,
p 0.02769) from the issue's lme4 output.  Tolerance for these deterministic quantities:
1e-4 relative.
"""

import pickle
import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import REFS, load_reference_data

import lmmfast

REL = 1e-4
MODELS = sorted(REFS)


def _fit(key, **kw):
    m = REFS[key]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return lmmfast.lmer(m["formula"], load_reference_data(m["data"]), REML=m["REML"], **kw)


@pytest.mark.parametrize("key", MODELS)
def test_fitted_residuals_and_marginal_fitted(key):
    fit, m = _fit(key), REFS[key]
    scale = np.abs(m["fitted"]).max()
    np.testing.assert_allclose(fit.fitted().to_numpy(), m["fitted"], rtol=REL, atol=REL * scale)
    np.testing.assert_allclose(fit.residuals().to_numpy(), m["resid"], rtol=0, atol=REL * scale)
    np.testing.assert_allclose(fit.fitted_marginal, m["fitted_marginal"], rtol=REL)
    marginal = fit.residuals(marginal=True).to_numpy()
    np.testing.assert_allclose(
        marginal, fit.response - np.array(m["fitted_marginal"]), atol=REL * scale
    )
    np.testing.assert_allclose(
        fit.residuals("pearson", scaled=True).to_numpy(), np.array(m["resid"]) / m["sigma"],
        rtol=0, atol=REL * scale / m["sigma"],
    )  # fmt: skip


@pytest.mark.parametrize("key", MODELS)
def test_ranef_table_with_conditional_sds(key):
    fit, ref = _fit(key), pd.DataFrame(REFS[key]["ranef"])
    got = fit.ranef_table()
    assert list(got.columns) == ["grpvar", "term", "grp", "condval", "condsd"]
    assert (
        got[["grpvar", "term", "grp"]].values.tolist()
        == ref[["grpvar", "term", "grp"]].values.tolist()
    )
    scale = max(ref.condval.abs().max(), 1e-8)
    np.testing.assert_allclose(got.condval, ref.condval, rtol=REL, atol=REL * scale)
    np.testing.assert_allclose(got.condsd, ref.condsd, rtol=REL, atol=1e-10)


@pytest.mark.parametrize("key", ["penicillin_crossed_reml", "pastes_nested_reml"])
def test_conditional_sds_by_cholmod_agree(key, monkeypatch):
    from lmmfast._factor import blocked as _blocked
    from lmmfast._factor import crossed as _crossed

    monkeypatch.setattr(_blocked, "MAX_CLUSTER", 0)
    monkeypatch.setattr(_crossed, "MAX_DENSE", 0)
    fit, ref = _fit(key), pd.DataFrame(REFS[key]["ranef"])
    assert fit.factorization == "cholmod"
    np.testing.assert_allclose(fit.ranef_table().condsd, ref.condsd, rtol=REL, atol=1e-10)


@pytest.mark.parametrize("key", MODELS)
def test_wald_intervals(key):
    fit, m = _fit(key), REFS[key]
    ci = fit.confint("wald")
    assert list(ci.columns) == ["2.5 %", "97.5 %"]
    np.testing.assert_allclose(ci.to_numpy(), np.atleast_2d(m["confint_wald"]), rtol=REL)


def test_icc_of_the_lecture_notes():
    fit = _fit("rikz_int_reml")
    assert fit.icc()["Beach"] == pytest.approx(8.6675183 / (8.6675183 + 9.3621916), rel=1e-5)
    assert round(fit.icc()["Beach"], 2) == 0.48


def test_coef_adds_random_to_fixed_effects():
    fit = _fit("sleep_slope_reml")
    coef = fit.coef()["Subject"]
    np.testing.assert_allclose(coef["Days"], fit.fixef["Days"] + fit.ranef["Subject"]["Days"])
    assert list(coef.columns) == ["(Intercept)", "Days"]


def test_likelihood_ratio_test_of_the_issue():
    f0, f1 = _fit("rikz_int_ml"), _fit("rikz_slope_ml")
    table = lmmfast.anova(f1, f0)  # any order: sorted by number of parameters
    row = table.iloc[1]
    assert row["Chisq"] == pytest.approx(7.173, abs=5e-4)
    assert row["Df"] == 2
    assert row["Pr(>Chisq)"] == pytest.approx(0.02769, abs=5e-6)
    assert list(table.columns) == [
        "npar",
        "AIC",
        "BIC",
        "logLik",
        "deviance",
        "Chisq",
        "Df",
        "Pr(>Chisq)",
    ]


def test_anova_refits_reml_fits_with_ml():
    with pytest.warns(lmmfast.RefitWarning, match="refitting model"):
        table = lmmfast.anova(_fit("rikz_int_reml"), _fit("rikz_slope_reml"))
    assert table.iloc[1]["Chisq"] == pytest.approx(7.173, abs=5e-4)


def test_lazy_fields_survive_pickling():
    fit = _fit("penicillin_crossed_reml")
    back = pickle.loads(pickle.dumps(fit))
    pd.testing.assert_frame_equal(back.ranef_table(), fit.ranef_table())
    np.testing.assert_array_equal(back.fitted_marginal, fit.fitted_marginal)
    ml, back_ml = fit.refit_ml(), back.refit_ml()  # from the stored cross-products
    np.testing.assert_array_equal(back_ml.theta, ml.theta)
    assert back_ml.objective == ml.objective


def test_refit_to_the_same_response_reproduces_the_fit():
    for key in ("sleep_slope_reml", "penicillin_crossed_reml", "pastes_nested_reml"):
        fit = _fit(key)
        again = fit.refit(fit.response)
        assert again.objective == pytest.approx(fit.objective, rel=1e-12)
        np.testing.assert_allclose(again.theta, fit.theta, atol=1e-6)


def test_refit_reuses_cholmods_analysis(monkeypatch):
    from lmmfast._factor import blocked as _blocked
    from lmmfast._factor import crossed as _crossed

    monkeypatch.setattr(_blocked, "MAX_CLUSTER", 0)
    monkeypatch.setattr(_crossed, "MAX_DENSE", 0)
    fit = _fit("penicillin_crossed_reml")
    again = fit.refit(fit.response + 1.0)
    assert again._factor.chol is fit._factor.chol
    assert again.fixef.iloc[0] == pytest.approx(fit.fixef.iloc[0] + 1.0, rel=1e-8)


def test_simulate_is_reproducible_and_has_the_model_variance():
    fit = _fit("sleep_int_reml")
    a, b = fit.simulate(400, seed=1), fit.simulate(400, seed=1)
    pd.testing.assert_frame_equal(a, b)
    assert list(a.columns[:2]) == ["sim_1", "sim_2"] and a.shape == (fit.nobs, 400)
    # the variance of a simulated response around X beta: tau^2 + sigma^2
    tau2 = fit.varcorr.vcov.iloc[0]
    resid = a.to_numpy() - fit.fitted_marginal[:, None]
    assert resid.var() == pytest.approx(tau2 + fit.sigma**2, rel=0.1)


def test_bootstrap_intervals_cover_the_estimates_and_have_lme4s_names():
    fit = _fit("sleep_slope_reml")
    ci = fit.confint("boot", nsim=40, seed=3)
    assert list(ci.index) == [
        "sd_(Intercept)|Subject",
        "cor_Days.(Intercept)|Subject",
        "sd_Days|Subject",
        "sigma",
        "(Intercept)",
        "Days",
    ]  # as refs_lme4.json's confint_profile names
    est = lmmfast._inference.intervals.parameters(fit)
    assert ((ci.iloc[:, 0] <= est) & (est <= ci.iloc[:, 1])).all()
    again = fit.confint("boot", nsim=40, seed=3)
    pd.testing.assert_frame_equal(ci, again)


def test_refit_checks_the_response():
    fit = _fit("dyestuff_reml")
    with pytest.raises(lmmfast.DataError, match="needs 30 responses"):
        fit.refit(np.ones(3))


SATT = [k for k in MODELS if "satterthwaite" in REFS[k]]


@pytest.mark.parametrize("key", SATT)
def test_satterthwaite_df_and_p_values_match_lmertest(key):
    # refs_lme4.json "satterthwaite": lmerTest 3.1-3, summary(fit, ddf = "Satterthwaite")
    fit, m = _fit(key), REFS[key]
    table = fit.coef_table("satterthwaite")
    assert list(table.columns) == ["Estimate", "Std. Error", "df", "t value", "Pr(>|t|)"]
    np.testing.assert_allclose(table["df"], np.atleast_1d(m["satterthwaite"]["df"]), rtol=REL)
    np.testing.assert_allclose(table["Pr(>|t|)"], np.atleast_1d(m["satterthwaite"]["p"]), rtol=REL)


def test_satterthwaite_cost_does_not_depend_on_rows():
    # the derivatives read the cross-products only: 4x the rows, the same evaluations
    import time

    rng = np.random.default_rng(0)

    def data(n):
        g = rng.integers(0, 50, n)
        return {"y": rng.normal(size=n) + rng.normal(size=50)[g], "x": rng.normal(size=n), "g": g}

    times = []
    for n in (50_000, 200_000):
        fit = lmmfast.lmer("y ~ x + (1 | g)", data(n))
        t0 = time.perf_counter()
        fit.coef_table("satterthwaite")
        times.append(time.perf_counter() - t0)
    assert times[1] < 3 * times[0] + 0.05  # generous: no O(n) work inside


KR = [k for k in MODELS if "kenward_roger" in REFS[k]]


@pytest.mark.parametrize("key", KR)
def test_kenward_roger_df_and_p_values_match_pbkrtest(key):
    # refs_lme4.json "kenward_roger": lmerTest 3.1-3 with pbkrtest 0.5.2, ddf = "Kenward-Roger"
    fit, m = _fit(key), REFS[key]
    table = fit.coef_table("kenward-roger")
    np.testing.assert_allclose(table["df"], np.atleast_1d(m["kenward_roger"]["df"]), rtol=REL)
    np.testing.assert_allclose(table["Pr(>|t|)"], np.atleast_1d(m["kenward_roger"]["p"]), rtol=REL)
    assert "Kenward-Roger's method" in str(fit.summary(ddf="kenward-roger"))


def test_kenward_roger_refuses_large_data_with_advice(monkeypatch):
    from lmmfast._inference import kenward_roger as _kenward_roger

    monkeypatch.setattr(_kenward_roger, "MAX_ROWS", 100)
    with pytest.raises(ValueError, match="limited to 100 rows. Use ddf='satterthwaite'"):
        _fit("sleep_slope_reml").coef_table("kenward-roger")


def test_unknown_ddf():
    with pytest.raises(ValueError, match="ddf must be None, 'satterthwaite' or 'kenward-roger'"):
        _fit("dyestuff_reml").coef_table("containment")


def test_singular_fit_is_flagged_with_one_line():
    m = REFS["dyestuff2_singular_reml"]
    with pytest.warns(lmmfast.SingularFitWarning, match=r"^boundary \(singular\) fit"):
        fit = lmmfast.lmer(m["formula"], load_reference_data(m["data"]))
    assert fit.is_singular


@pytest.mark.parametrize("key", MODELS)
def test_no_false_convergence_alarms_on_the_reference_models(key):
    m = REFS[key]
    with warnings.catch_warnings():
        warnings.simplefilter("error", lmmfast.ConvergenceWarning)
        fit = lmmfast.lmer(m["formula"], load_reference_data(m["data"]), REML=m["REML"])
    opt = fit.optsummary
    assert opt.gradient.shape == opt.theta.shape and opt.hessian.shape == (len(opt.theta),) * 2
    assert opt.newton_decrement < 1e-3


def test_no_false_convergence_alarm_at_scale():
    # lme4's absolute-gradient test grows with n and cries wolf on large data; the Newton
    # decrement (deviance units) does not
    rng = np.random.default_rng(4)
    n, g = 400_000, 2_000
    grp = rng.integers(0, g, n)
    x = rng.normal(size=n)
    y = 2 + x + rng.normal(size=g)[grp] + 0.4 * rng.normal(size=g)[grp] * x + rng.normal(size=n)
    with warnings.catch_warnings():
        warnings.simplefilter("error", lmmfast.ConvergenceWarning)
        fit = lmmfast.lmer("y ~ x + (x | g)", {"y": y, "x": x, "g": grp})
    assert fit.optsummary.newton_decrement < 1e-3


def test_a_stalled_gradient_fit_is_polished_to_the_optimum():
    # badly scaled fixed effects (temp^2 ~ 4e4): L-BFGS-B stopped 0.065 above the optimum
    cake = lmmfast.datasets.load("cake")
    formula = "angle ~ I(temp^2) + factor(replicate) + (1 | recipe)"
    auto = lmmfast.lmer(formula, cake)
    ref = lmmfast.lmer(formula, cake, optimizer="bobyqa")
    assert auto.objective <= ref.objective + 1e-9
    assert auto.optsummary.newton_decrement < 1e-3


PROFILED = [k for k in MODELS if "confint_profile" in REFS[k]]


@pytest.mark.parametrize("key", PROFILED)
def test_profile_intervals_match_lme4(key):
    # refs_lme4.json "confint_profile": lme4's confint(fit, method = "profile",
    # oldNames = FALSE); tolerance 2e-3 relative (lme4 interpolates the profile by splines)
    fit, ref = _fit(key), REFS[key]["confint_profile"]
    ci = fit.confint("profile")
    assert list(ci.index) == ref["names"]
    np.testing.assert_allclose(ci.iloc[:, 0], np.array(ref["lower"], float), rtol=2e-3, atol=1e-6)
    np.testing.assert_allclose(ci.iloc[:, 1], np.array(ref["upper"], float), rtol=2e-3, atol=1e-6)


def test_profile_intervals_of_the_lecture_notes():
    ci = _fit("rikz_int_reml").confint("profile")
    expected = {"sd_(Intercept)|Beach": (1.484204, 5.100814), "sigma": (2.435429, 3.877572),
                "(Intercept)": (4.324560, 8.824909), "NAP": (-3.566901, -1.599779)}  # fmt: skip
    for name, (lo, hi) in expected.items():
        assert ci.loc[name].tolist() == pytest.approx([lo, hi], rel=2e-3)


def test_profile_interval_of_a_zero_variance_starts_at_zero():
    ci = _fit("dyestuff2_singular_reml").confint("profile")
    assert ci.loc["sd_(Intercept)|Batch"].iloc[0] == 0.0
    assert ci.loc["sd_(Intercept)|Batch"].iloc[1] > 0
