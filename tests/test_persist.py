"""fit.save / lmmfast.load: a data-only format with an exact round trip and a version check."""

import json
import zipfile

import numpy as np
import pandas as pd
import pytest
from conftest import load_reference_data

import lmmfast

CASES = [
    ("Reaction ~ Days + (Days | Subject)", "sleepstudy", {}),
    ("angle ~ recipe * temp + factor(replicate) + (1 | recipe:replicate)", "cake", {}),
    ("diameter ~ 1 + (1 | plate) + (1 | sample)", "penicillin", {}),
    ("strength ~ 1 + (1 | batch/cask)", "pastes", {"REML": False}),
]


@pytest.mark.parametrize("formula,data,kw", CASES)
def test_round_trip_is_exact(tmp_path, formula, data, kw):
    df = load_reference_data(data)
    fit = lmmfast.lmer(formula, df, **kw)
    path = tmp_path / "fit.npz"
    fit.save(path)
    back = lmmfast.load(path)
    assert str(back.summary()) == str(fit.summary())
    for name in ("theta", "beta", "fitted_values", "response", "fitted_marginal"):
        np.testing.assert_array_equal(getattr(back, name), getattr(fit, name))
    for name in ("formula", "reml", "sigma", "objective", "nobs", "ngroups", "theta_names",
                 "xnames", "is_singular", "loglik", "aic", "bic", "factorization"):  # fmt: skip
        assert getattr(back, name) == getattr(fit, name), name
    pd.testing.assert_frame_equal(back.vcov, fit.vcov)
    pd.testing.assert_frame_equal(back.varcorr, fit.varcorr)
    pd.testing.assert_frame_equal(back.ranef_table(), fit.ranef_table())
    for g in fit.ranef:
        pd.testing.assert_frame_equal(back.ranef[g], fit.ranef[g])
    pd.testing.assert_series_equal(back.residuals(), fit.residuals())
    np.testing.assert_array_equal(back.predict(df), fit.predict(df))
    np.testing.assert_array_equal(back.predict(df, re_form="~0"), fit.predict(df, re_form="~0"))
    assert back.optsummary.feval == fit.optsummary.feval


def test_the_file_holds_no_pickles(tmp_path):
    fit = lmmfast.lmer("Reaction ~ Days + (1 | Subject)", load_reference_data("sleepstudy"))
    path = tmp_path / "fit.npz"
    fit.save(path)
    with np.load(path, allow_pickle=False) as z:  # would raise on an object array
        assert "meta" in z.files
        assert all(z[k].dtype != object for k in z.files)


def test_version_and_format_are_checked(tmp_path):
    fit = lmmfast.lmer("Reaction ~ Days + (1 | Subject)", load_reference_data("sleepstudy"))
    path = tmp_path / "fit.npz"
    fit.save(path)
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(arrays["meta"].tobytes())
    meta["version"] = 99
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(tmp_path / "future.npz", **arrays)
    with pytest.raises(lmmfast.PersistenceError, match="format version 99"):
        lmmfast.load(tmp_path / "future.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a fit")
    with pytest.raises(lmmfast.PersistenceError, match="not an lmmfast fit"):
        lmmfast.load(tmp_path / "junk.npz")
    with zipfile.ZipFile(tmp_path / "other.npz", "w") as zf:
        zf.writestr("x.npy", b"")
    with pytest.raises(lmmfast.PersistenceError):
        lmmfast.load(tmp_path / "other.npz")


@pytest.mark.parametrize(
    "rhs", ["center(Days)", "scale(Days) + poly(Days, 2)", "factor(Days %% 3) + I(Days > 4)"]
)
def test_stateful_transforms_predict_new_data_after_loading(tmp_path, rhs):
    # the fitted state (means, poly() coefficients, levels) is stored as data
    ss = load_reference_data("sleepstudy")
    fit = lmmfast.lmer(f"Reaction ~ {rhs} + (1 | Subject)", ss)
    fit.save(tmp_path / "fit.npz")
    back = lmmfast.load(tmp_path / "fit.npz")
    np.testing.assert_array_equal(back.predict(), fit.predict())
    new = ss.iloc[::7].assign(Days=ss.Days.iloc[::7] % 5)  # other rows, a different mean
    np.testing.assert_allclose(back.predict(new), fit.predict(new), rtol=1e-13)
    np.testing.assert_allclose(back.predict(ss), fit.fitted(), rtol=1e-10)
