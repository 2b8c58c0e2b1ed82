"""tidy(), glance(), augment() against the numbers broom.mixed reports for lme4 fits.

Reference: tests/reference/refs_present.json ("broom"), made by tests/reference/refs_present.R
with the lme4/lmerTest functions broom.mixed 0.2.9 calls (broom.mixed itself is not
installed here): coef(summary()), as.data.frame(VarCorr(), order = "lower.tri"),
as.data.frame(ranef(condVar = TRUE)), coef(), logLik(), AIC(), BIC(), REMLcrit()/deviance(),
df.residual(), fitted(), residuals(), predict(re.form = NA), hatvalues(), cooks.distance().
Compared at lme4's theta (tests/attheta.py) to 1e-6 relative (absolute 1e-6 of the
column's scale for values that cross zero: residuals, modes, correlations).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from attheta import at_theta

import lmmfast
from lmmfast._errors import ArgumentError

REF = json.loads((Path(__file__).parent / "reference" / "refs_present.json").read_text())["broom"]
TOL = 1e-6


def _sleep():
    s = lmmfast.datasets.load("sleepstudy")
    s["w"] = 0.5 + (np.arange(1, len(s) + 1) % 4) / 2  # refs_present.R's weights
    return s


MODELS = {
    "sleep_slope": lambda: lmmfast.lmer("Reaction ~ Days + (Days | Subject)", _sleep()),
    "sleep_slope_ml": lambda: lmmfast.lmer(
        "Reaction ~ Days + (Days | Subject)", _sleep(), REML=False
    ),
    "sleep_weights": lambda: lmmfast.lmer(
        "Reaction ~ Days + (Days | Subject)", _sleep(), weights="w"
    ),
    "penicillin_crossed": lambda: lmmfast.lmer(
        "diameter ~ 1 + (1 | plate) + (1 | sample)", lmmfast.datasets.load("penicillin")
    ),
    "pastes_nested": lambda: lmmfast.lmer(
        "strength ~ 1 + (1 | batch/cask)", lmmfast.datasets.load("pastes")
    ),
    "cake_numeric": lambda: lmmfast.lmer(
        "angle ~ recipe * temp + (1 | recipe:replicate)", lmmfast.datasets.load("cake")
    ),
}


def _fit(name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return at_theta(MODELS[name](), REF[name]["theta"])


def _close(x, y, what):
    x = np.asarray(x, dtype=float)
    y = np.asarray([np.nan if v is None else v for v in np.atleast_1d(y)], dtype=float)
    assert x.shape == y.shape, what
    scale = np.nanmax(np.abs(y)) if np.any(np.isfinite(y)) else 1.0
    ok = np.abs(x - y) <= TOL * np.maximum(np.abs(y), scale * 1e-3) + 1e-300
    assert np.all(ok | (np.isnan(x) & np.isnan(y))), (what, x[~ok][:5], y[~ok][:5])


@pytest.mark.parametrize("name", sorted(MODELS))
def test_tidy_fixed_and_ran_pars_match_broom_mixed(name):
    fit, ref = _fit(name), REF[name]
    t = fit.tidy()
    assert list(t.columns) == ["effect", "group", "term", "estimate", "std.error", "statistic"]
    fx = t[t["effect"] == "fixed"]
    assert list(fx["term"]) == ref["fixed"]["rownames"] if isinstance(
        ref["fixed"]["rownames"], list) else [ref["fixed"]["rownames"]]  # fmt: skip
    assert fx["group"].isna().all()
    _close(fx["estimate"], ref["fixed"]["Estimate"], "estimate")
    _close(fx["std.error"], ref["fixed"]["Std. Error"], "std.error")
    _close(fx["statistic"], ref["fixed"]["t value"], "statistic")
    rp = t[t["effect"] == "ran_pars"]
    vc = ref["ran_pars"]
    names = [
        "sd__Observation" if g == "Residual" else (f"sd__{a}" if b is None else f"cor__{a}.{b}")
        for g, a, b in zip(vc["grp"], vc["var1"], vc["var2"])
    ]
    assert list(rp["term"]) == names
    assert list(rp["group"]) == vc["grp"]
    _close(rp["estimate"], vc["sdcor"], "ran_pars")
    assert rp["std.error"].isna().all()


@pytest.mark.parametrize("name", ["sleep_slope", "sleep_weights", "cake_numeric"])
def test_tidy_with_ddf_adds_lmertest_df_and_p_values(name):
    fit, ref = _fit(name), REF[name]
    methods = [("satterthwaite", "fixed_satterthwaite"), ("kenward-roger", "fixed_kr")]
    if name == "sleep_weights":  # pbkrtest drops prior weights from its Sigma: KR with
        # weights is tested against a dense oracle in test_kenward_roger_oracle.py
        methods = methods[:1]
    for ddf, key in methods:
        t = fit.tidy(effects="fixed", ddf=ddf)
        assert list(t.columns) == ["effect", "group", "term", "estimate", "std.error",
                                   "statistic", "df", "p.value"]  # fmt: skip
        _close(t["df"], ref[key]["df"], (ddf, "df"))
        _close(t["p.value"], ref[key]["Pr(>|t|)"], (ddf, "p"))
        _close(t["std.error"], ref[key]["Std. Error"], (ddf, "se"))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_tidy_ran_vals_and_ran_coefs_match_lme4(name):
    fit, ref = _fit(name), REF[name]
    rv = fit.tidy(effects="ran_vals")
    assert list(rv.columns) == ["effect", "group", "level", "term", "estimate", "std.error"]
    r = pd.DataFrame(ref["ran_vals"]).set_index(["group", "term", "level"])
    mine = rv.set_index(["group", "term", "level"]).loc[r.index]
    assert len(rv) == len(r)
    _close(mine["estimate"], r["estimate"], "modes")
    _close(mine["std.error"], r["std.error"], "cond SD")
    rc = fit.tidy(effects="ran_coefs")
    r = pd.DataFrame(ref["ran_coefs"]).set_index(["group", "term", "level"])
    assert len(rc) == len(r)
    _close(rc.set_index(["group", "term", "level"]).loc[r.index, "estimate"], r["estimate"],
           "coef")  # fmt: skip


def test_tidy_intervals():
    fit = _fit("sleep_slope")
    t = fit.tidy(conf_int=True)  # Wald: fixed only, NA for ran_pars (lme4's NA)
    w = REF["sleep_slope"]["confint_wald"]
    fx = t[t["effect"] == "fixed"]
    _close(fx["conf.low"], w["2.5 %"], "low")
    _close(fx["conf.high"], w["97.5 %"], "high")
    assert t.loc[t["effect"] == "ran_pars", "conf.low"].isna().all()
    rv = fit.tidy(effects="ran_vals", conf_int=True, conf_level=0.9)
    z = 1.6448536269514722
    assert np.allclose(rv["conf.high"] - rv["estimate"], z * rv["std.error"], rtol=1e-12)
    with pytest.raises(ArgumentError, match="Wald"):
        fit.tidy(effects="ran_vals", conf_int=True, conf_method="profile")
    with pytest.raises(ArgumentError, match="effects"):
        fit.tidy(effects="random")
    with pytest.raises(ArgumentError, match="conf_method"):
        fit.tidy(conf_int=True, conf_method="exact")


def test_tidy_profile_intervals_are_confints_rows():
    fit = lmmfast.lmer("Yield ~ 1 + (1 | Batch)", lmmfast.datasets.load("dyestuff"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = fit.tidy(conf_int=True, conf_method="profile")
        ci = fit.confint("profile")
    assert np.allclose(t["conf.low"].to_numpy(), np.r_[ci.iloc[-1, 0], ci.iloc[:-1, 0]])
    assert np.allclose(t["conf.high"].to_numpy(), np.r_[ci.iloc[-1, 1], ci.iloc[:-1, 1]])


@pytest.mark.parametrize("name", sorted(MODELS))
def test_glance_matches_broom_mixed(name):
    fit, ref = _fit(name), REF[name]["glance"]
    g = fit.glance()
    crit = "REMLcrit" if fit.reml else "deviance"
    assert list(g.columns) == ["nobs", "sigma", "logLik", "AIC", "BIC", crit, "df.residual"]
    assert len(g) == 1
    for col in ref:
        _close(g[crit if col == "deviance" else col], ref[col], col)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_augment_matches_lme4_hatvalues_and_cooks_distance(name):
    fit, ref = _fit(name), REF[name]["augment"]
    a = fit.augment()
    assert len(a) == fit.nobs
    for col in [".fitted", ".resid", ".hat", ".cooksd", ".fixed"]:
        _close(a[col], ref[col], col)
    # the hat matrix's trace is the effective number of parameters: between p and p + q
    assert len(fit.beta) < a[".hat"].sum() < len(fit.beta) + sum(
        len(t.levels) * t.q for t in fit.terms)  # fmt: skip


def test_augment_keeps_the_callers_columns_and_predicts_new_data():
    s = _sleep()
    fit = lmmfast.lmer("Reaction ~ Days + (Days | Subject)", s)
    before = s.copy()
    a = fit.augment(data=s)
    assert list(a.columns[: s.shape[1]]) == list(s.columns)
    pd.testing.assert_frame_equal(s, before)  # not modified
    new = s.iloc[:5].copy()
    b = fit.augment(newdata=new)
    assert np.allclose(b[".fitted"], fit.fitted_values[:5])
    assert np.allclose(b[".fixed"], fit.fitted_marginal[:5])
    assert ".hat" not in b
