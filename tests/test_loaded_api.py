"""Every public method on a fit read back by lmmfast.load and by pickle.loads gives the
original fit's result: the objective is rebuilt from the stored cross-products A, and the
few methods that read the rows take data= (NeedsDataError names it when it is missing)."""

import inspect
import json
import pickle
import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import load_reference_data

import lmmfast

MODELS = {
    "blocked": ("Reaction ~ Days + (Days | Subject)", "sleepstudy", {}),
    "crossed": ("diameter ~ 1 + (1 | plate) + (1 | sample)", "penicillin", {}),
    "nested": ("strength ~ 1 + (1 | batch/cask)", "pastes", {"REML": False}),
    "weighted": ("Richness ~ NAP + (1 | Beach)", "rikz", {"weights": "w"}),
}


def _data(name):
    df = load_reference_data(name)
    if name == "rikz":
        df["w"] = np.linspace(0.5, 2.0, len(df))
    return df


_FITS: dict = {}


def _fits(model, how, tmp_path_factory):
    """(original, loaded-or-unpickled, data), cached per model."""
    if model not in _FITS:
        formula, name, kw = MODELS[model]
        df = _data(name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", lmmfast.SingularFitWarning)
            _FITS[model] = (lmmfast.lmer(formula, df, **kw), df)
    fit, df = _FITS[model]
    if how == "pickle":
        back = pickle.loads(pickle.dumps(fit))
    else:
        path = tmp_path_factory.mktemp("fit") / "fit.npz"
        fit.save(path)
        back = lmmfast.load(path)
    return fit, back, df


# each public name of LmerFit (and lmmfast.anova) -> how to call it, given the data
CALLS = {
    "fixef": lambda f, d: f.fixef,
    "se": lambda f, d: f.se,
    "vcov": lambda f, d: f.vcov,
    "corr_fixef": lambda f, d: f.corr_fixef,
    "npar": lambda f, d: f.npar,
    "loglik": lambda f, d: f.loglik,
    "aic": lambda f, d: f.aic,
    "bic": lambda f, d: f.bic,
    "df_resid": lambda f, d: f.df_resid,
    "ngroups": lambda f, d: f.ngroups,
    "varcorr": lambda f, d: f.varcorr,
    "ranef": lambda f, d: f.ranef,
    "is_singular": lambda f, d: f.is_singular,
    "cond_var": lambda f, d: f.cond_var,
    "fitted_marginal": lambda f, d: f.fitted_marginal,
    "scaled_residuals": lambda f, d: f.scaled_residuals,
    "fitted": lambda f, d: f.fitted(),
    "residuals": lambda f, d: f.residuals("pearson", scaled=True),
    "predict": lambda f, d: f.predict(d),
    "predict_re_form": lambda f, d: f.predict(d, re_form="~0"),
    "predict_fitted_rows_re_form": lambda f, d: f.predict(re_form="~0"),
    "ranef_table": lambda f, d: f.ranef_table(),
    "coef": lambda f, d: f.coef(),
    "icc": lambda f, d: f.icc(),
    "summary": lambda f, d: str(f.summary()),
    "summary_satterthwaite": lambda f, d: str(f.summary(ddf="satterthwaite")),
    "summary_kenward_roger": lambda f, d: str(f.summary(ddf="kenward-roger", data=d)),
    "coef_table": lambda f, d: f.coef_table(),
    "coef_table_satterthwaite": lambda f, d: f.coef_table(ddf="satterthwaite"),
    "coef_table_kenward_roger": lambda f, d: f.coef_table(ddf="kenward-roger", data=d),
    "confint_wald": lambda f, d: f.confint("wald"),
    "confint_profile": lambda f, d: f.confint("profile"),
    "confint_boot": lambda f, d: f.confint("boot", nsim=4, seed=7, data=d),
    "refit_ml": lambda f, d: f.refit_ml(),
    "refit_ml_data": lambda f, d: f.refit_ml(data=d),
    "refit": lambda f, d: f.refit(f.response[::-1].copy(), data=d),
    "simulate": lambda f, d: f.simulate(3, seed=11, data=d),
    "anova": lambda f, d: lmmfast.anova(f, f.refit_ml()),
    "save": lambda f, d: _saved_again(f),
    "tidy": lambda f, d: f.tidy(
        ("fixed", "ran_pars", "ran_vals", "ran_coefs"), ddf="satterthwaite"
    ),
    "glance": lambda f, d: f.glance(),
    "augment": lambda f, d: f.augment(data=d),
    "contest": lambda f, d: f.contest(np.eye(len(f.beta))[:1], ddf="satterthwaite"),
    "anova_type3": lambda f, d: lmmfast.anova(f, type=3),
    "ranova": lambda f, d: lmmfast.ranova(f, data=d),
    "refit_many": lambda f, d: _many(
        f.refit_many(np.column_stack([f.response, f.response[::-1]]), data=d)
    ),
    "plot": lambda f, d: _drawn(f.plot.qq("resid")),
    "fields": lambda f, d: _fields(f),
}


def _fields(fit):
    """Every public dataclass field, arrays and plain values (terms and optsummary unpacked)."""
    from dataclasses import fields

    out = {}
    for fld in fields(fit):
        v = getattr(fit, fld.name)
        if fld.name.startswith("_"):
            continue
        if fld.name == "terms":
            for k, t in enumerate(v):
                out.update({f"term{k}_{a}": np.asarray(getattr(t, a))
                            for a in ("levels", "b", "theta_lower", "order")})  # fmt: skip
                out[f"term{k}_names"] = (t.group, list(t.cnames), tuple(t.factors))
        elif fld.name == "optsummary":
            keys = ("optimizer", "fmin", "feval", "converged", "message", "theta", "theta0")
            out.update({f"opt_{a}": getattr(v, a) for a in (*keys, "newton_decrement")})
        elif fld.name == "row_index":
            out[fld.name] = np.asarray(v)
        else:
            out[fld.name] = v
    return out


SLOW = {
    "confint_profile",
    "confint_boot",
    "ranova",
    "refit_many",
    "plot",
}  # on the blocked and weighted models only


def _many(mf):
    """A ManyFits as plain tables."""
    return {"fixef": mf.fixef, "theta": np.asarray(mf.theta), "objective": np.asarray(mf.objective)}


def _drawn(fig):
    """The data a matplotlib figure draws: every line's and every collection's points."""
    import matplotlib.pyplot as plt

    out = {}
    for i, ax in enumerate(fig.axes):
        for j, line in enumerate(ax.lines):
            out[f"ax{i}_line{j}"] = np.asarray(line.get_xydata())
        for j, c in enumerate(ax.collections):
            out[f"ax{i}_coll{j}"] = np.asarray(c.get_offsets())
    plt.close(fig)
    return out


def _saved_again(fit):
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        fit.save(Path(tmp) / "again.npz")
        return lmmfast.load(Path(tmp) / "again.npz")


def _same(a, b, what):
    if isinstance(a, lmmfast.LmerFit):
        for name in ("theta", "beta", "RX"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=what)
        assert (a.objective, a.sigma, a.reml) == (b.objective, b.sigma, b.reml), what
        if b.fitted_values is not None:  # an ML refit from A has none (NeedsDataError)
            np.testing.assert_array_equal(a.fitted_values, b.fitted_values, err_msg=what)
        pd.testing.assert_frame_equal(a.varcorr, b.varcorr)
        _same(a.cond_var, b.cond_var, what)
    elif isinstance(a, pd.DataFrame):
        pd.testing.assert_frame_equal(a, b, check_exact=True)
    elif isinstance(a, pd.Series):
        pd.testing.assert_series_equal(a, b, check_exact=True)
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), what
        for k in a:
            _same(a[k], b[k], f"{what}[{k}]")
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b, err_msg=what)
    else:
        assert a == b, what


def test_every_public_name_is_covered():
    public = {n for n, _ in inspect.getmembers(lmmfast.LmerFit) if not n.startswith("_")}
    from dataclasses import fields

    public -= {f.name for f in fields(lmmfast.LmerFit)}  # compared by "fields"
    covered = {k.split("_satterthwaite")[0].split("_kenward")[0] for k in CALLS}
    covered |= {"confint", "predict", "refit_ml", "coef_table", "summary"}
    assert public <= covered, public - covered


CASES = [(c, m) for c in CALLS for m in MODELS if c not in SLOW or m in ("blocked", "weighted")]


@pytest.mark.parametrize("how", ["load", "pickle"])
@pytest.mark.parametrize("call,model", CASES)
def test_a_loaded_fit_gives_the_original_results(call, model, how, tmp_path_factory):
    fit, back, df = _fits(model, how, tmp_path_factory)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", lmmfast.SingularFitWarning)
        warnings.simplefilter("ignore", lmmfast.RefitWarning)
        want = CALLS[call](fit, df)
        got = CALLS[call](back, df)
    _same(want, got, call)


@pytest.mark.parametrize("how", ["load", "pickle"])
def test_methods_that_read_the_rows_ask_for_data(how, tmp_path_factory):
    fit, back, df = _fits("blocked", how, tmp_path_factory)
    for call in (
        lambda: back.refit(fit.response),
        lambda: back.simulate(2),
        lambda: back.confint("boot", nsim=3),
        lambda: back.coef_table(ddf="kenward-roger"),
        lambda: back.refit_ml().fitted(),  # a REML fit's ML refit from A has no rows
    ):
        with pytest.raises(lmmfast.NeedsDataError, match="data"):
            call()
    crossed, back_crossed, _ = _fits("crossed", how, tmp_path_factory)
    with pytest.raises(lmmfast.NeedsDataError, match="newdata"):
        back_crossed.predict(re_form="~(1 | plate)")  # some terms: a pass over the rows
    with pytest.raises(lmmfast.DataError, match="not the data this fit was made from"):
        back.simulate(2, data=df.iloc[:-3])
    other = df.assign(Reaction=df["Reaction"] + 1.0)
    with pytest.raises(lmmfast.DataError, match="not the data"):
        back.refit(fit.response, data=other)


def test_the_file_is_versioned_and_holds_the_cross_products(tmp_path):
    fit = lmmfast.lmer(MODELS["crossed"][0], _data("penicillin"))
    fit.save(tmp_path / "fit.npz")
    with np.load(tmp_path / "fit.npz", allow_pickle=False) as z:
        assert {"obj_XtXy", "obj_D0", "obj_D1", "obj_pair0_O"} <= set(z.files)
        meta = json.loads(z["meta"].tobytes())
    assert meta["version"] == 2 and meta["objective_record"]["kind"] == "crossed"
