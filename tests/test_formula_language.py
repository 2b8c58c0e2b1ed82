"""R's formula language as lme4 users paste it: lme4's model and lme4's names.

Reference: tests/reference/refs_formula_language.json, made by refs_formula_language.R
(lme4 1.1-31) on the data in tests/reference/data/.  Tolerances: coefficient names exactly;
objective and coefficients 1e-6 relative (the objective also no worse than lme4's)."""

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import lmmfast
from lmmfast._sources.design import build_design
from lmmfast._sources.rexpr import deparse, parse
from lmmfast._sources.rterms import r_terms

REF = Path(__file__).parent / "reference"
with open(REF / "refs_formula_language.json") as fh:
    SPEC = json.load(fh)
REL = 1e-6


def load(name: str) -> pd.DataFrame:
    """A data set as the R script reads it back, its factors with R's levels."""
    df = pd.read_csv(REF / "data" / f"{name}.csv")
    for v, f in SPEC["factors"][name].items():
        df[v] = pd.Categorical(df[v].astype(str), categories=f["levels"], ordered=f["ordered"])
    return df


def fit_of(key: str):
    m = SPEC["models"][key]
    contrasts = {k: v for k, v in m["contrasts"].items()} or None
    return lmmfast.lmer(m["formula"], load(m["data"]), REML=m["REML"], contrasts=contrasts)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("key", list(SPEC["models"]))
def test_lme4_model_and_names(key):
    m = SPEC["models"][key]
    fit = fit_of(key)
    assert list(fit.fixef.index) == m["fixef_names"]
    assert list(fit.ngroups) == m["groups"]
    assert fit.objective <= m["objective"] + REL * abs(m["objective"])  # no worse than lme4
    assert fit.objective == pytest.approx(m["objective"], rel=REL)
    np.testing.assert_allclose(fit.fixef.to_numpy(), m["fixef"], rtol=REL, atol=0)
    assert fit.sigma == pytest.approx(m["sigma"], rel=1e-4)


@pytest.mark.parametrize("text", list(SPEC["deparse"]))
def test_variables_are_named_as_r_deparses_them(text):
    assert deparse(parse(text)) == SPEC["deparse"][text]


@pytest.mark.parametrize("rhs", list(SPEC["terms"]))
def test_terms_are_rs(rhs):
    t = r_terms(rhs)
    assert [t.term_label(term) for term in t.terms] == SPEC["terms"][rhs]["labels"]
    assert t.intercept == bool(SPEC["terms"][rhs]["intercept"])


@pytest.mark.parametrize(
    "rhs,fn",
    [
        ("bs(Days, 3)", "bs()"),
        ("ns(Days, df = 2)", "ns()"),
        ("cut(Days, 3)", "cut()"),
        ("interaction(Days, Subject)", "interaction()"),
        ("np.log(Days + 1)", "np.log()"),
        ("log(Days + 1) + splines::bs(Days)", "splines"),
        ("Days[Days > 2]", "'['"),
        ("I(Days$x)", "'$'"),
        (".", "'.'"),
        ("log(Days, bas = 2, foo = 1)", "foo"),
        ("Days + 2", "'2'"),
        ("poly(Days, 2) %o% Days", "%o%"),
    ],
)
def test_what_lmmfast_cannot_evaluate_is_a_formula_error_naming_it(rhs, fn):
    ss = lmmfast.datasets.load("sleepstudy")
    with pytest.raises(lmmfast.FormulaError, match=re.escape(fn)):
        lmmfast.lmer(f"Reaction ~ {rhs} + (1 | Subject)", ss)


def test_contrasts_argument_is_checked():
    cake = load("cake")
    with pytest.raises(lmmfast.ArgumentError, match="'recipe'.*'deviation'"):
        lmmfast.lmer("angle ~ recipe + (1 | replicate)", cake, contrasts={"recipe": "deviation"})
    with pytest.raises(lmmfast.ArgumentError, match="'temp'.*not a factor"):
        lmmfast.lmer("angle ~ recipe + temp + (1 | replicate)", cake, contrasts={"temp": "sum"})
    with pytest.raises(lmmfast.ArgumentError, match="dict"):
        lmmfast.lmer("angle ~ recipe + (1 | replicate)", cake, contrasts="sum")


def test_sum_contrast_columns_are_rs():
    # R: contr.sum(3) = [[1, 0], [0, 1], [-1, -1]]; recipe1 is A's deviation from the mean
    cake = load("cake")
    fit = lmmfast.lmer("angle ~ recipe + (1 | replicate)", cake, contrasts={"recipe": "sum"})
    means = cake.groupby("recipe", observed=True).angle.mean()
    assert fit.fixef["(Intercept)"] == pytest.approx(means.mean(), rel=1e-10)
    assert fit.fixef["recipe1"] == pytest.approx(means["A"] - means.mean(), rel=1e-8)


def test_ordered_pandas_categorical_gets_polynomial_contrasts():
    # the same model as cake_ordered, with temperature from integer to ordered categorical
    cake = load("cake")
    m = SPEC["models"]["cake_ordered"]
    fit = lmmfast.lmer(m["formula"], cake)
    assert [n for n in fit.fixef.index if n.startswith("temperature")] == [
        "temperature.L", "temperature.Q", "temperature.C", "temperature^4", "temperature^5"
    ]  # fmt: skip
    unordered = cake.assign(temperature=cake.temperature.cat.as_unordered())
    names = lmmfast.lmer(m["formula"], unordered).fixef.index
    assert "temperature185" in names  # treatment contrasts when not ordered


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("key", list(SPEC["models"]))
def test_every_spelling_predicts_and_survives_saving(key, tmp_path):
    m = SPEC["models"][key]
    fit = fit_of(key)
    data = load(m["data"])
    np.testing.assert_allclose(fit.predict(data), fit.fitted(), rtol=1e-10)
    fit.save(tmp_path / "fit.npz")
    back = lmmfast.load(tmp_path / "fit.npz")
    part = data.iloc[::3]
    np.testing.assert_allclose(back.predict(part), fit.predict(part), rtol=1e-13)
    np.testing.assert_allclose(
        back.predict(part, re_form="~0"), fit.predict(part, re_form="~0"), rtol=1e-13
    )


def test_string_levels_sort_as_r_sorts_them():
    c = SPEC["collation"]
    fit = lmmfast.lmer(
        "y ~ 0 + w + (1 | g)",
        pd.DataFrame(
            {
                "w": c["words"] * 3,
                "g": np.arange(3 * len(c["words"])) % 5,
                "y": np.sin(np.arange(3 * len(c["words"]))),
            }
        ),  # fmt: skip
    )
    assert list(fit.fixef.index) == ["w" + w for w in c["levels"]]


def test_pickled_fit_predicts_with_its_fitted_state():
    import pickle

    cake = load("cake")
    fit = lmmfast.lmer("angle ~ poly(temp, 2) * recipe + (1 | replicate)", cake)
    back = pickle.loads(pickle.dumps(fit))
    np.testing.assert_allclose(back.predict(cake.iloc[::5]), fit.fitted().iloc[::5], rtol=1e-10)
    with pytest.raises(lmmfast.NewLevelsError, match="'recipe'"):
        back.predict(cake.head(1).assign(recipe="Q"))


@pytest.mark.parametrize("rhs", list(SPEC["model_matrix"]))
def test_model_matrix_is_rs(rhs):
    # R's model.matrix(~ rhs, synthetic): names exactly, values to 1e-12 (data with 3 decimals)
    ref = SPEC["model_matrix"][rhs]
    data = load("synthetic")
    cols, names, design = build_design(rhs, data, "y ~ " + rhs)
    assert names == ref["names"]
    np.testing.assert_allclose(np.column_stack(cols), np.array(ref["values"]), atol=1e-12)
    # and the same columns again from the stored design, on the same rows
    np.testing.assert_allclose(np.column_stack(design.columns(data)), np.column_stack(cols))
