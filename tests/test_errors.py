"""Bad input: a typed error that names the problem and the fix, never a crash."""

import numpy as np
import pandas as pd
import pytest

import lmmfast


@pytest.fixture
def ss():
    return lmmfast.datasets.load("sleepstudy")


def test_unknown_column_suggests_close_names(ss):
    with pytest.raises(
        lmmfast.MissingColumnError, match="'Dayz' is not in the data. Did you mean 'Days'"
    ):
        lmmfast.lmer("Reaction ~ Dayz + (1 | Subject)", ss)
    with pytest.raises(KeyError):  # also a KeyError, as pandas would raise
        lmmfast.lmer("Reaction ~ Days + (1 | Subjct)", ss)


def test_formula_without_random_terms(ss):
    with pytest.raises(
        lmmfast.NotMixedModelError, match="not a mixed model; .*ordinary regression"
    ):
        lmmfast.lmer("Reaction ~ Days", ss)


@pytest.mark.parametrize(
    "formula,where",
    [
        ("Reaction ~ Days + (1 | Subject", 18),
        ("Reaction Days + (1|Subject)", None),
        ("Reaction ~ Days + + (1|Subject)", None),
        ("Reaction ~ Days * (1|Subject)", None),
        ("Reaction ~ Days + (1|)", None),
        ("Reaction ~ (|Subject)", None),
    ],
)
def test_malformed_formula_points_at_the_position(ss, formula, where):
    with pytest.raises(lmmfast.FormulaError) as e:
        lmmfast.lmer(formula, ss)
    assert "^" in str(e.value)
    if where is not None:
        assert e.value.position == where


def test_grouping_factor_with_one_level(ss):
    with pytest.raises(lmmfast.GroupingError, match="has 1 level; .*at least 2"):
        lmmfast.lmer("Reaction ~ Days + (1 | one)", ss.assign(one="a"))


def test_grouping_factor_with_a_level_per_observation(ss):
    with pytest.raises(lmmfast.GroupingError, match="180 levels for 180 observations"):
        lmmfast.lmer("Reaction ~ Days + (1 | row)", ss.assign(row=np.arange(len(ss))))


def test_non_numeric_response(ss):
    with pytest.raises(lmmfast.DataError, match="not numeric"):
        lmmfast.lmer("Subject ~ Days + (1 | Subject)", ss)
    with pytest.raises(lmmfast.DataError, match="boolean"):
        lmmfast.lmer("b ~ Days + (1 | Subject)", ss.assign(b=ss.Days > 4))


def test_empty_after_dropping_missing_rows(ss):
    with pytest.raises(lmmfast.DataError, match="no rows left"):
        lmmfast.lmer("Reaction ~ Days + (1 | Subject)", ss.assign(Reaction=np.nan))


def test_infinite_values_are_an_error_not_dropped(ss):
    r = ss.Reaction.copy()
    r.iloc[3] = np.inf
    with pytest.raises(lmmfast.DataError, match="infinite"):
        lmmfast.lmer("Reaction ~ Days + (1 | Subject)", ss.assign(Reaction=r))


def test_constant_response(ss):
    with pytest.raises(lmmfast.DataError, match="constant"):
        lmmfast.lmer("Reaction ~ Days + (1 | Subject)", ss.assign(Reaction=1.0))


def test_too_many_random_effects_for_the_data():
    df = pd.DataFrame({"y": np.arange(8.0) ** 1.5, "x": np.arange(8.0), "g": list("aabbccdd")})
    with pytest.raises(lmmfast.DataError, match="cannot be identified"):
        lmmfast.lmer("y ~ x + (x | g)", df)


@pytest.mark.parametrize("w", [-1.0, 0.0, np.inf])
def test_bad_weights(ss, w):
    weights = np.ones(len(ss))
    weights[4] = w
    with pytest.raises(lmmfast.DataError, match="weights must be finite and positive"):
        lmmfast.lmer("Reaction ~ Days + (1 | Subject)", ss, weights=weights)


def test_weights_or_offset_of_the_wrong_length(ss):
    with pytest.raises(lmmfast.DataError, match="one value per row"):
        lmmfast.lmer("Reaction ~ Days + (1 | Subject)", ss, weights=np.ones(10))
    with pytest.raises(lmmfast.DataError, match="one value per row"):
        lmmfast.lmer("Reaction ~ Days + (1 | Subject)", ss, offset=np.ones(10))


def test_data_of_the_wrong_type():
    with pytest.raises(lmmfast.DataError, match="DataFrame"):
        lmmfast.lmer("y ~ (1 | g)", [[1, 2]])


def test_formula_of_the_wrong_type(ss):
    with pytest.raises(lmmfast.FormulaError, match="must be a string"):
        lmmfast.lmer(42, ss)


def test_duplicate_column_names(ss):
    df = pd.concat([ss, ss[["Days"]]], axis=1)
    with pytest.raises(lmmfast.DataError, match="duplicate column names"):
        lmmfast.lmer("Reaction ~ Days + (1 | Subject)", df)


def test_all_errors_share_one_base_class():
    for cls in (
        lmmfast.FormulaError,
        lmmfast.NotMixedModelError,
        lmmfast.MissingColumnError,
        lmmfast.DataError,
        lmmfast.GroupingError,
        lmmfast.NewLevelsError,
    ):
        assert issubclass(cls, lmmfast.LMMError)
