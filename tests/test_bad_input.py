"""Bad or awkward inputs, each with its handling (README: "Bad input").  Cases already
tested elsewhere are named in the README table beside the test that covers them."""

import warnings

import numpy as np
import pandas as pd
import pytest

import lmmfast


@pytest.fixture
def ss():
    return lmmfast.datasets.load("sleepstudy")


def test_infinite_covariate_is_an_error(ss):
    d = ss.Days.astype(float).copy()
    d.iloc[7] = -np.inf
    with pytest.raises(lmmfast.DataError, match="infinite values in 'Days'"):
        lmmfast.lmer("Reaction ~ Days + (1 | Subject)", ss.assign(Days=d))


def test_empty_data(ss):
    with pytest.raises(lmmfast.DataError, match="no rows left"):
        lmmfast.lmer("Reaction ~ Days + (1 | Subject)", ss.iloc[:0])


def test_single_row(ss):
    with pytest.raises(lmmfast.GroupingError, match="has 1 level"):
        lmmfast.lmer("Reaction ~ Days + (1 | Subject)", ss.head(1))


def test_constant_covariate_is_dropped_with_a_message(ss):
    with pytest.warns(lmmfast.RankDeficiencyWarning, match="dropping 1 column: k"):
        fit = lmmfast.lmer("Reaction ~ Days + k + (1 | Subject)", ss.assign(k=3.0))
    assert list(fit.fixef.index) == ["(Intercept)", "Days"]


def test_unused_categories_of_a_fixed_factor_are_dropped(ss):
    # as lme4's model.frame(drop.unused.levels = TRUE): no column, so nothing to warn about
    grp = pd.Categorical(np.where(ss.Days < 5, "early", "late"), ["early", "late", "never"])
    with warnings.catch_warnings():
        warnings.simplefilter("error", lmmfast.RankDeficiencyWarning)
        fit = lmmfast.lmer("Reaction ~ 0 + phase + (1 | Subject)", ss.assign(phase=grp))
    assert list(fit.fixef.index) == ["phaseearly", "phaselate"]


def test_collinear_random_effect_columns(ss):
    with pytest.raises(lmmfast.DataError, match="collinear: 'D2'"):
        lmmfast.lmer("Reaction ~ Days + (Days + D2 | Subject)", ss.assign(D2=2.0 * ss.Days))


@pytest.mark.parametrize("sy,sx", [(1e12, 1), (1e-12, 1), (1, 1e12), (1, 1e-12), (1e12, 1e-12)])
def test_huge_and_tiny_scales_give_the_same_fit(ss, sy, sx):
    ref = lmmfast.lmer("Reaction ~ Days + (Days | Subject)", ss)
    fit = lmmfast.lmer(
        "Reaction ~ Days + (Days | Subject)",
        ss.assign(Reaction=ss.Reaction * sy, Days=ss.Days * sx),
    )
    np.testing.assert_allclose(
        fit.fixef.to_numpy(), ref.fixef.to_numpy() * [sy, sy / sx], rtol=1e-6
    )
    assert fit.sigma == pytest.approx(ref.sigma * sy, rel=1e-6)
    np.testing.assert_allclose(fit.theta, ref.theta * [1, 1 / sx, 1 / sx], rtol=1e-4)
    sd = fit.varcorr.sdcor.to_numpy()
    np.testing.assert_allclose(sd, ref.varcorr.sdcor.to_numpy() * [sy, sy / sx, 1, sy], rtol=1e-4)


def test_missing_weights_drop_their_rows(ss):
    w = np.ones(len(ss))
    w[[2, 9]] = np.nan
    fit = lmmfast.lmer("Reaction ~ Days + (1 | Subject)", ss, weights=w)
    assert (fit.nobs, fit.n_dropped_rows) == (178, 2)


def test_memory_beyond_the_machine_is_refused_with_the_estimate(ss, monkeypatch):
    from lmmfast import _memory

    monkeypatch.setattr(_memory, "available_bytes", lambda: 1_000)
    with pytest.raises(lmmfast.MemoryLimitError, match=r"needs about .* of memory, more than"):
        lmmfast.lmer("Reaction ~ factor(Days) + (1 | Subject)", ss)
    with pytest.raises(MemoryError):  # also the built-in type
        lmmfast.lmer("Reaction ~ factor(Days) + (1 | Subject)", ss)


def test_huge_fixed_factor_points_to_a_random_effect(monkeypatch):
    from lmmfast import _memory

    monkeypatch.setattr(_memory, "available_bytes", lambda: 2**20)
    df = pd.DataFrame({"y": np.arange(2000.0) % 7, "id": np.arange(2000).astype(str),
                       "g": np.arange(2000) % 10})  # fmt: skip
    with pytest.raises(
        lmmfast.MemoryLimitError, match=r"random-effects term, e.g. \(1 \| variable\)"
    ):
        lmmfast.lmer("y ~ id + (1 | g)", df)


def test_invalid_arguments_are_typed_errors(ss):
    fit = lmmfast.lmer("Reaction ~ Days + (1 | Subject)", ss)
    calls = [
        lambda: lmmfast.lmer("Reaction ~ Days + (1 | Subject)", ss, optimizer="newton"),
        lambda: fit.coef_table("containment"),
        lambda: fit.confint("bayes"),
        lambda: fit.confint("wald", level=1.5),
        lambda: fit.residuals("deviance"),
        lambda: lmmfast.anova(),  # anova(fit) alone is lmerTest's F table (issue 10)
        lambda: lmmfast.anova(fit, type=4),
    ]
    for call in calls:
        with pytest.raises(lmmfast.ArgumentError):
            call()
