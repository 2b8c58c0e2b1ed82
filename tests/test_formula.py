"""lme4 formulas mean what they mean in R."""

import numpy as np
import pandas as pd
import pytest

import lmmfast
from lmmfast._sources.formula import RandomTerm, parse_formula


def test_random_terms_and_fixed_part_are_separated():
    p = parse_formula("Richness ~ NAP + (1 | Beach)")
    assert p.response == "Richness"
    assert p.fixed == "NAP"
    assert p.random == (RandomTerm("1", ("Beach",), "Beach"),)


def test_double_bar_expands_to_uncorrelated_terms():
    p = parse_formula("y ~ x + (1 + x + z || g)")
    assert [t.expr for t in p.random] == ["1", "0 + x", "0 + z"]
    assert {t.label for t in p.random} == {"g"}
    assert [t.expr for t in parse_formula("y ~ (0 + x || g)").random] == ["0 + x"]


def test_slash_nests_finest_first_with_lme4_labels():
    p = parse_formula("y ~ 1 + (1 | batch/cask)")
    assert [(t.factors, t.label) for t in p.random] == [
        (("cask", "batch"), "cask:batch"),
        (("batch",), "batch"),
    ]
    p3 = parse_formula("y ~ (1 | a/b/c)")
    assert [t.label for t in p3.random] == ["c:(b:a)", "b:a", "a"]  # lme4's expandSlash
    assert p3.random[0].factors == ("c", "b", "a")


def test_interaction_grouping_and_crossed_terms():
    p = parse_formula("y ~ x + (1 | a:b) + (x | u) + (1 | v)")
    assert [t.label for t in p.random] == ["a:b", "u", "v"]
    assert p.random[0].factors == ("a", "b")


def test_only_random_terms_gives_intercept_only_fixed_part():
    assert parse_formula("y ~ (1 | g)").fixed == "1"
    assert parse_formula("y ~ 0 + (1 | g)").fixed == "0"


def test_fixed_part_stays_in_r_syntax():
    # R's own terms() and model.matrix read it (rterms.py, design.py): nothing is translated
    assert parse_formula("y ~ I(x^2) + (1|g)").fixed == "I(x^2)"
    assert parse_formula("y ~ (a + b)^2 + (1|g)").fixed == "(a + b)^2"


def test_offset_terms_are_taken_out():
    p = parse_formula("y ~ x + offset(log(t)) + (1 | g)")
    assert p.fixed == "x"
    assert p.offsets == ("log(t)",)


def test_coefficient_names_are_lme4s():
    cake = lmmfast.datasets.load("cake")
    fit = lmmfast.lmer("angle ~ recipe * temp + (1 | recipe:replicate)", cake)
    assert list(fit.fixef.index) == [
        "(Intercept)",
        "recipeB",
        "recipeC",
        "temp",
        "recipeB:temp",
        "recipeC:temp",
    ]
    assert fit.ngroups == {"recipe:replicate": 45}


def test_I_power_and_factor_are_evaluated_as_in_r():
    cake = lmmfast.datasets.load("cake")
    a = lmmfast.lmer("angle ~ I(temp^2) + factor(replicate) + (1 | recipe)", cake)
    b = lmmfast.lmer(
        "angle ~ tsq + C(replicate) + (1 | recipe)", cake.assign(tsq=cake.temp.astype(float) ** 2)
    )
    assert "I(temp^2)" in a.fixef.index
    assert "factor(replicate)2" in a.fixef.index
    np.testing.assert_allclose(a.fixef.to_numpy(), b.fixef.to_numpy(), rtol=1e-9)
    assert a.objective == pytest.approx(b.objective, rel=1e-12)


def test_random_slope_on_a_factor_gets_indicator_columns():
    cake = lmmfast.datasets.load("cake")
    fit = lmmfast.lmer("angle ~ recipe + (0 + recipe | replicate)", cake)
    assert fit.varcorr["var1"].dropna().unique()[:3].tolist() == ["recipeA", "recipeB", "recipeC"]


@pytest.mark.parametrize("kind", ["str", "int", "category", "category_unused"])
def test_grouping_variable_types_give_the_same_fit(kind):
    ss = lmmfast.datasets.load("sleepstudy")
    base = lmmfast.lmer("Reaction ~ Days + (Days | Subject)", ss)
    g = ss.Subject
    if kind == "int":
        g = g.astype(int)
    elif kind == "category":
        g = g.astype("category")
    elif kind == "category_unused":
        g = pd.Categorical(g, categories=sorted(g.unique()) + ["999"])
    fit = lmmfast.lmer("Reaction ~ Days + (Days | Subject)", ss.assign(Subject=g))
    assert fit.objective == pytest.approx(base.objective, rel=1e-12)
    assert fit.ngroups == {"Subject": 18}  # unused categories are dropped, as factor() in R
    assert fit.ranef["Subject"].index.tolist() == base.ranef["Subject"].index.tolist()


def test_integer_levels_sort_numerically():
    df = pd.DataFrame({"y": np.arange(40.0) % 7, "g": np.repeat([10, 9, 100, 2], 10)})
    fit = lmmfast.lmer("y ~ (1 | g)", df)
    assert fit.ranef["g"].index.tolist() == ["2", "9", "10", "100"]
