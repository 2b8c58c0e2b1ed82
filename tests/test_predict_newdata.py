"""predict(newdata) for every transform that builds model columns (issue 9, item 1).

For each: prediction on the fitting data equals fitted(); an unseen level of a fixed-effect
factor raises NewLevelsError (a DataError) naming the variable and the level, as R's
predict.merMod stops; a missing value gives NaN for that row only."""

import numpy as np
import pandas as pd
import pytest

import lmmfast

CAKE = lmmfast.datasets.load("cake")
SS = lmmfast.datasets.load("sleepstudy")


def test_the_issues_example_unseen_recipe_raises_and_missing_gives_nan():
    fit = lmmfast.lmer("angle ~ recipe*temp + (1|replicate)", CAKE)
    new = pd.DataFrame(dict(recipe=["D", "A", None], temp=200, replicate="1"))
    with pytest.raises(lmmfast.NewLevelsError, match=r"'recipe'.*'D'") as e:
        fit.predict(new)
    assert isinstance(e.value, lmmfast.DataError)
    pred = fit.predict(new.iloc[1:])
    assert np.isfinite(pred.iloc[0]) and np.isnan(pred.iloc[1])
    a = fit.predict(pd.DataFrame(dict(recipe=["A", "B"], temp=200, replicate="1")))
    assert a.iloc[0] != a.iloc[1]  # B is not predicted at A's value


# (formula, data, a column to corrupt, an unseen value of it or None if it is numeric)
CASES = [
    ("angle ~ recipe * temp + (1 | replicate)", CAKE, "recipe", "D"),
    ("angle ~ C(recipe) + temp + (1 | replicate)", CAKE, "recipe", "D"),
    ("angle ~ C(recipe, sum) + temp + (1 | replicate)", CAKE, "recipe", "D"),
    ("angle ~ relevel(recipe, ref = 'B') + temp + (1 | replicate)", CAKE, "recipe", "Z"),
    ("angle ~ temp:recipe + (1 | replicate)", CAKE, "recipe", "D"),
    ("angle ~ factor(temp) + recipe + (1 | replicate)", CAKE, "temp", 300),
    ("angle ~ recipe + (0 + recipe | replicate)", CAKE, "recipe", "D"),
    ("Reaction ~ factor(Days) + (1 | Subject)", SS, "Days", 12),
    ("Reaction ~ factor(Days):I(Days > 4) + (1 | Subject)", SS, "Days", 12),
    ("Reaction ~ I(Days > 4) + (1 | Subject)", SS, "Days", None),
    ("Reaction ~ poly(Days, 2) + (Days | Subject)", SS, "Days", None),
    ("Reaction ~ poly(Days, 2, raw = TRUE) + (1 | Subject)", SS, "Days", None),
    ("Reaction ~ scale(Days) + (1 | Subject)", SS, "Days", None),
    ("Reaction ~ center(Days) + (center(Days) | Subject)", SS, "Days", None),
    ("Reaction ~ log1p(Days) * I(Days^2) + (1 | Subject)", SS, "Days", None),
    ("Reaction ~ ifelse(Days > 4, 'late', 'early') + (1 | Subject)", SS, "Days", None),
]


def _ids(case):
    return case[0].split(" ~ ")[1].split(" + (")[0]


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("formula,data,col,unseen", CASES, ids=[_ids(c) for c in CASES])
def test_prediction_on_the_fitting_data_is_fitted(formula, data, col, unseen):
    fit = lmmfast.lmer(formula, data)
    np.testing.assert_allclose(fit.predict(data), fit.fitted(), rtol=1e-10)
    # a subset, whose mean and levels differ: the fit's state (poly, scale, levels) is used
    part = data.iloc[::7]
    np.testing.assert_allclose(fit.predict(part), fit.fitted().iloc[::7], rtol=1e-10)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("formula,data,col,unseen", CASES, ids=[_ids(c) for c in CASES])
def test_missing_values_give_nan_for_that_row(formula, data, col, unseen):
    fit = lmmfast.lmer(formula, data)
    new = data.iloc[:6].copy()
    new[col] = new[col].astype(object)
    new.iloc[2, new.columns.get_loc(col)] = None
    pred = fit.predict(new)
    assert np.isnan(pred.iloc[2])
    keep = [0, 1, 3, 4, 5]
    np.testing.assert_allclose(pred.iloc[keep], fit.fitted().iloc[keep], rtol=1e-10)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize(
    "formula,data,col,unseen", [c for c in CASES if c[3] is not None],
    ids=[_ids(c) for c in CASES if c[3] is not None],
)  # fmt: skip
def test_unseen_levels_of_fixed_factors_raise(formula, data, col, unseen):
    fit = lmmfast.lmer(formula, data)
    new = data.iloc[:4].copy()
    new[col] = new[col].astype(object)
    new.iloc[1, new.columns.get_loc(col)] = unseen
    with pytest.raises(lmmfast.NewLevelsError, match=f"'{unseen}'"):
        fit.predict(new)
    with pytest.raises(lmmfast.NewLevelsError, match=f"'{unseen}'"):
        fit.predict(new, re_form="~0")


def test_new_level_message_names_the_variable():
    fit = lmmfast.lmer("Reaction ~ factor(Days) + (1 | Subject)", SS)
    with pytest.raises(lmmfast.NewLevelsError, match=r"'factor\(Days\)'.*'12'"):
        fit.predict(SS.head(3).assign(Days=[1, 12, 2]))


def test_levels_match_whatever_the_new_columns_type():
    # fitted on strings, predicted from a categorical (and ints against float values)
    fit = lmmfast.lmer("angle ~ recipe + factor(temp) + (1 | replicate)", CAKE)
    new = CAKE.assign(recipe=CAKE.recipe.astype("category"), temp=CAKE.temp.astype(float))
    np.testing.assert_allclose(fit.predict(new), fit.fitted(), rtol=1e-10)


def test_ordered_factor_and_contrasts_predict():
    cake = CAKE.assign(temperature=pd.Categorical(CAKE.temperature, ordered=True))
    fit = lmmfast.lmer(
        "angle ~ recipe + temperature + (1 | replicate)", cake, contrasts={"recipe": "helmert"}
    )
    np.testing.assert_allclose(fit.predict(cake), fit.fitted(), rtol=1e-10)
    with pytest.raises(lmmfast.NewLevelsError, match="'temperature'.*'999'"):
        fit.predict(cake.head(2).assign(temperature=[175, 999]))


def test_logical_data_column():
    ss = SS.assign(late=SS.Days > 4)
    fit = lmmfast.lmer("Reaction ~ late + (1 | Subject)", ss)
    assert list(fit.fixef.index) == ["(Intercept)", "lateTRUE"]
    np.testing.assert_allclose(fit.predict(ss), fit.fitted(), rtol=1e-10)
    new = ss.head(3).astype({"late": object})
    new.iloc[0, new.columns.get_loc("late")] = None
    assert np.isnan(fit.predict(new).iloc[0])


def test_missing_columns_in_new_data_are_named():
    fit = lmmfast.lmer("Reaction ~ poly(Days, 2) + (1 | Subject)", SS)
    with pytest.raises(lmmfast.MissingColumnError, match="Days"):
        fit.predict(SS.drop(columns="Days"))


@pytest.mark.parametrize("factors", [("a",), ("b",), ("c",), ("d",), ("a", "b"), ("c", "a", "d")])
def test_group_index_matches_labelling_every_row(factors):
    # oracle: each row's label "v1:v2" from str() of its values, looked up among the levels
    from lmmfast._predict import _group_index

    rng = np.random.default_rng(0)
    n = 500
    df = pd.DataFrame({
        "a": rng.integers(0, 5, n),
        "b": np.array(["x", "y", None], dtype=object)[rng.integers(0, 3, n)],
        "c": pd.Categorical(np.array(list("pq"))[rng.integers(0, 2, n)]),
        "d": rng.integers(0, 3, n).astype(float),
    })  # fmt: skip
    df.loc[::17, "d"] = np.nan
    missing = pd.isna(df[list(factors)]).any(axis=1).to_numpy()
    labels = np.array(
        [":".join(str(df[f].iloc[i]) for f in factors) for i in range(n)], dtype=object
    )
    levels = pd.unique(labels[~missing][::3])[:-1]  # some levels are new
    expected = pd.Index(levels).get_indexer(labels)
    idx, miss, lab = _group_index(df, factors, levels)
    np.testing.assert_array_equal(miss, missing)
    np.testing.assert_array_equal(idx[~miss], expected[~miss])
    assert (idx[miss] == -1).all()
    np.testing.assert_array_equal(lab(~miss), labels[~miss])


def test_pandas_nullable_dtypes_in_new_data():
    fit = lmmfast.lmer("angle ~ recipe + I(temp > 200) + (1 | replicate)", CAKE)
    new = CAKE.head(4).astype({"recipe": "string", "temp": "Int64"})
    new.loc[new.index[1], "recipe"] = pd.NA
    new.loc[new.index[2], "temp"] = pd.NA
    pred = fit.predict(new)
    assert np.isnan(pred.iloc[1]) and np.isnan(pred.iloc[2])
    np.testing.assert_allclose(pred.iloc[[0, 3]], fit.fitted().iloc[[0, 3]], rtol=1e-10)


def test_a_variable_that_is_nan_on_fitting_rows_is_a_data_error():
    with pytest.raises(lmmfast.DataError, match=r"'log\(Days - 5\)' evaluates to NaN on 90"):
        lmmfast.lmer("Reaction ~ log(Days - 5) + (1 | Subject)", SS)
