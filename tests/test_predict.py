"""predict() with lme4's semantics (re_form, allow_new_levels) on the fit's rows and new data."""

import warnings

import numpy as np
import pytest
from conftest import load_reference_data

import lmmfast

CASES = [
    ("Reaction ~ Days + (Days | Subject)", "sleepstudy"),
    ("angle ~ recipe * temp + (1 | recipe:replicate)", "cake"),
    ("diameter ~ 1 + (1 | plate) + (1 | sample)", "penicillin"),
    ("strength ~ 1 + (1 | batch/cask)", "pastes"),
    ("Reaction ~ I(Days) + (Days || Subject)", "sleepstudy"),
]


@pytest.mark.parametrize("formula,data", CASES)
def test_predicting_the_training_data_gives_the_fitted_values(formula, data):
    df = load_reference_data(data)
    fit = lmmfast.lmer(formula, df)
    np.testing.assert_allclose(fit.predict(df).to_numpy(), fit.fitted_values, rtol=1e-10)
    np.testing.assert_allclose(fit.predict(df, re_form="~0"), fit.fitted_marginal, rtol=1e-10)
    np.testing.assert_allclose(fit.predict(), fit.fitted_values, rtol=1e-12)
    np.testing.assert_allclose(fit.predict(re_form="NA"), fit.fitted_marginal, rtol=1e-12)


def test_re_form_selects_terms():
    ss = load_reference_data("sleepstudy")
    fit = lmmfast.lmer("Reaction ~ Days + (1 | Subject) + (0 + Days | Subject)", ss)
    only_int = fit.predict(ss, re_form="~(1 | Subject)").to_numpy()
    b0 = fit.ranef["Subject"]["(Intercept)"]
    expected = fit.fitted_marginal + b0.loc[ss.Subject].to_numpy()
    np.testing.assert_allclose(only_int, expected, rtol=1e-10)
    np.testing.assert_allclose(fit.predict(re_form="~(1 | Subject)"), expected, rtol=1e-10)
    with pytest.raises(lmmfast.FormulaError, match="not a random-effects term"):
        fit.predict(ss, re_form="~(1 | Days)")


def test_new_levels_are_refused_or_predicted_at_the_population_level():
    ss = load_reference_data("sleepstudy")
    fit = lmmfast.lmer("Reaction ~ Days + (Days | Subject)", ss)
    new = ss.head(3).assign(Subject=["999", "308", "abc"])
    with pytest.raises(lmmfast.NewLevelsError, match="2 level.*'999', 'abc'"):
        fit.predict(new)
    pred = fit.predict(new, allow_new_levels=True).to_numpy()
    marginal = fit.fixef["(Intercept)"] + fit.fixef["Days"] * new.Days.to_numpy()
    assert pred[0] == pytest.approx(marginal[0]) and pred[2] == pytest.approx(marginal[2])
    assert pred[1] == pytest.approx(fit.fitted_values[1])  # subject 308, day 1


def test_newdata_missing_a_column_and_missing_values():
    ss = load_reference_data("sleepstudy")
    fit = lmmfast.lmer("Reaction ~ Days + (Days | Subject)", ss)
    with pytest.raises(lmmfast.MissingColumnError, match="'Days'"):
        fit.predict(ss.drop(columns="Days"))
    new = ss.head(4).copy()
    new.loc[new.index[1], "Days"] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pred = fit.predict(new)
    assert np.isnan(pred.iloc[1]) and np.isfinite(pred.drop(pred.index[1])).all()


def test_predict_does_not_modify_newdata():
    ss = load_reference_data("cake")
    fit = lmmfast.lmer("angle ~ recipe * temp + (1 | recipe:replicate)", ss)
    before = ss.copy(deep=True)
    fit.predict(ss)
    assert ss.equals(before)
