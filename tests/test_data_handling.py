"""Rows, weights, offsets, missing values; the caller's data left as it was."""

import warnings

import numpy as np
import pandas as pd
import pytest

import lmmfast


@pytest.fixture
def ss():
    return lmmfast.datasets.load("sleepstudy")


def test_rows_with_missing_values_are_dropped_and_counted(ss):
    s2 = ss.copy()
    s2.loc[[3, 7], "Reaction"] = np.nan
    s2.loc[10, "Subject"] = None
    s2["unused"] = np.nan  # columns the formula does not use do not matter
    fit = lmmfast.lmer("Reaction ~ Days + (Days | Subject)", s2)
    ref = lmmfast.lmer("Reaction ~ Days + (Days | Subject)", ss.drop(index=[3, 7, 10]))
    assert (fit.nobs, fit.n_dropped_rows) == (177, 3)
    assert fit.objective == pytest.approx(ref.objective, rel=1e-12)


def test_caller_data_and_formula_are_not_modified(ss):
    df = ss.assign(w=np.linspace(0.5, 2, len(ss)), o=np.linspace(-1, 1, len(ss)))
    df.loc[5, "Reaction"] = np.nan
    before = df.copy(deep=True)
    formula = "Reaction ~ Days + (Days | Subject)"
    w = df["w"].to_numpy().copy()
    w_in = w.copy()
    fit = lmmfast.lmer(formula, df, weights=w_in, offset="o")
    fit.summary()
    _ = fit.ranef, fit.varcorr, fit.vcov
    pd.testing.assert_frame_equal(df, before)
    np.testing.assert_array_equal(w_in, w)
    assert formula == "Reaction ~ Days + (Days | Subject)"


def test_unit_weights_change_nothing(ss):
    a = lmmfast.lmer("Reaction ~ Days + (Days | Subject)", ss)
    b = lmmfast.lmer("Reaction ~ Days + (Days | Subject)", ss, weights=np.ones(len(ss)))
    assert a.objective == pytest.approx(b.objective, rel=1e-12)


def test_integer_weights_act_like_replicated_rows_for_beta(ss):
    # sigma^2 / w_i: duplicating a row and giving it weight 2 give the same GLS estimate at
    # the same theta; across the fit they differ only through n, so compare beta loosely
    w = np.where(np.arange(len(ss)) % 3 == 0, 2.0, 1.0)
    rep = pd.concat([ss, ss[w == 2]], ignore_index=True)
    a = lmmfast.lmer("Reaction ~ Days + (1 | Subject)", ss, weights=w, REML=False)
    b = lmmfast.lmer("Reaction ~ Days + (1 | Subject)", rep, REML=False)
    np.testing.assert_allclose(a.fixef, b.fixef, rtol=2e-2)


def test_offset_equals_shifting_the_response(ss):
    off = np.linspace(-5, 5, len(ss))
    a = lmmfast.lmer("Reaction ~ Days + (Days | Subject)", ss, offset=off)
    b = lmmfast.lmer("Reaction ~ Days + (Days | Subject)", ss.assign(Reaction=ss.Reaction - off))
    assert a.objective == pytest.approx(b.objective, rel=1e-10)
    np.testing.assert_allclose(a.fitted_values - off, b.fitted_values, rtol=1e-8)
    c = lmmfast.lmer("Reaction ~ Days + offset(o) + (Days | Subject)", ss.assign(o=off))
    assert c.objective == pytest.approx(a.objective, rel=1e-12)


def test_rank_deficient_columns_are_dropped_with_a_message(ss):
    with pytest.warns(lmmfast.RankDeficiencyWarning, match="dropping 1 column: D2"):
        fit = lmmfast.lmer("Reaction ~ Days + D2 + (1 | Subject)", ss.assign(D2=2 * ss.Days))
    ref = lmmfast.lmer("Reaction ~ Days + (1 | Subject)", ss)
    assert list(fit.fixef.index) == ["(Intercept)", "Days"]
    assert fit.dropped_columns == ["D2"]
    assert fit.objective == pytest.approx(ref.objective, rel=1e-12)


def test_fit_has_the_declared_fields(ss):
    fit = lmmfast.lmer("Reaction ~ Days + (Days | Subject)", ss, REML=False)
    assert fit.reml is False
    assert fit.formula == "Reaction ~ Days + (Days | Subject)"
    assert isinstance(fit.fixef, pd.Series) and isinstance(fit.vcov, pd.DataFrame)
    assert isinstance(fit.theta, np.ndarray) and fit.theta.shape == (3,)
    assert list(fit.varcorr.columns) == ["grp", "var1", "var2", "vcov", "sdcor"]
    assert list(fit.ranef) == ["Subject"]
    assert list(fit.ranef["Subject"].columns) == ["(Intercept)", "Days"]
    assert fit.loglik == pytest.approx(-fit.objective / 2)


def test_pickle_round_trip(ss):
    import pickle

    fit = lmmfast.lmer("Reaction ~ Days + (Days | Subject)", ss)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        back = pickle.loads(pickle.dumps(fit))
    assert str(back.summary()) == str(fit.summary())


def test_non_convergence_warns_and_the_fit_is_still_usable(ss, monkeypatch):
    from lmmfast import _optimize

    real = _optimize.OptSummary
    monkeypatch.setattr(_optimize, "OptSummary", lambda *a, **k: real(*a, **{**k, "maxeval": 5}))
    with pytest.warns(lmmfast.ConvergenceWarning, match="did not converge"):
        fit = lmmfast.lmer("Reaction ~ Days + (Days | Subject)", ss)
    assert not fit.optsummary.converged
    assert fit.optsummary.feval == 5
    assert "convergence code: 1" in str(fit.summary())


def test_plain_columns_give_the_same_fit_as_formulaic(ss):
    # "Days" is read straight from the data; "I(Days)" goes through formulaic
    a = lmmfast.lmer("Reaction ~ Days + (Days | Subject)", ss)
    b = lmmfast.lmer("Reaction ~ I(Days) + (I(Days) | Subject)", ss)
    assert a.objective == pytest.approx(b.objective, rel=1e-13)
    np.testing.assert_allclose(a.fitted_values, b.fitted_values, rtol=1e-12)


@pytest.mark.parametrize("kind", ["dense", "gaps", "int64"])
def test_integer_codes_are_used_without_hashing_and_give_the_same_fit(ss, kind):
    codes = ss.Subject.astype(int) - 308  # 0..64 with gaps: 18 subjects
    if kind == "dense":
        codes = pd.factorize(codes, sort=True)[0].astype(np.int32)
    elif kind == "int64":
        codes = codes.astype(np.int64)
    arrays = {"Reaction": ss.Reaction.to_numpy(), "Days": ss.Days.to_numpy(dtype=float),
              "Subject": np.asarray(codes)}  # fmt: skip
    fit = lmmfast.lmer("Reaction ~ Days + (Days | Subject)", arrays)
    ref = lmmfast.lmer("Reaction ~ Days + (Days | Subject)", ss)
    assert fit.objective == pytest.approx(ref.objective, rel=1e-12)
    assert fit.ngroups == {"Subject": 18}
    labels = fit.ranef["Subject"].index.astype(int).tolist()
    assert labels == sorted(labels)  # numeric order, as R's factor() of integers


def test_columns_are_read_in_place(ss):
    from lmmfast._sources.formula import parse_formula
    from lmmfast._sources.frame import build_frame

    arrays = {c: ss[c].to_numpy(dtype=float) for c in ("Reaction", "Days")}
    arrays["g"] = ss.Subject.astype(int).to_numpy(dtype=np.int32) - 308
    frame = build_frame(parse_formula("Reaction ~ Days + (Days | g)"), arrays)
    assert np.shares_memory(frame.y, arrays["Reaction"])
    assert np.shares_memory(frame.Xcols[1], arrays["Days"])
    assert frame.Xcols[0].strides == (0,)  # the intercept is not allocated
