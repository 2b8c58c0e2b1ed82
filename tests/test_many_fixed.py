"""Many fixed effects (a fixed factor with many levels): the sparse X (SparseColumns) and the
wide blocked factorization give the numbers of the dense path, and the gradient is right."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from dense import central_gradient

import lmmfast
from lmmfast._factor import blocked
from lmmfast._pls import ProfiledDeviance
from lmmfast._sources import frame as frame_module
from lmmfast._sources.crossprod import RowData
from lmmfast._sources.formula import parse_formula
from lmmfast._sources.frame import build_frame
from lmmfast._sources.sparse_columns import SparseColumns


def _data(seed=1, n=1500, ng=90, nh=25):
    rng = np.random.default_rng(seed)
    g, h = rng.integers(0, ng, n), rng.integers(0, nh, n)
    x = rng.standard_normal(n)
    y = 1 + x + 0.5 * rng.standard_normal(ng)[g] + rng.standard_normal(nh)[h] * (1 + 0.3 * x)
    return pd.DataFrame(
        {"y": y + rng.standard_normal(n), "x": x, "g": [f"g{k:03d}" for k in g],
         "h": [f"h{k:02d}" for k in h], "w": rng.uniform(0.5, 2.0, n)}
    )  # fmt: skip


def _deviance(formula, reml, weights=None):
    frame = build_frame(parse_formula(formula), _data(), weights=weights)
    y = frame.y
    cp = RowData(frame.terms, frame.Xcols, frame.xnames, y).cross_products(frame.weights)
    ldW = 0.0 if weights is None else float(np.sum(np.log(frame.weights)))
    return ProfiledDeviance(cp, frame.terms, frame.n, reml, ldW), frame


def test_a_many_level_factor_is_kept_sparse():
    frame = build_frame(parse_formula("y ~ x + g + (1 | h)"), _data())
    assert isinstance(frame.Xcols, SparseColumns) and len(frame.Xcols) == 91
    np.testing.assert_array_equal(frame.Xcols[5], frame.X[:, 5])


@pytest.mark.parametrize("weights", [None, "w"])
@pytest.mark.parametrize("formula", ["y ~ x + g + (1 | h)", "y ~ x + g + (x | h)"])
def test_sparse_and_wide_paths_give_the_dense_numbers(formula, weights, monkeypatch):
    """Same objective, beta, fitted values as with X dense and the kernel's narrow path."""
    df = _data()
    fit = lmmfast.lmer(formula, df, weights=weights)
    assert fit._dev.factor.wide
    monkeypatch.setattr(frame_module, "SPARSE_COLUMNS", 10**9)
    monkeypatch.setattr(blocked, "WIDE_X", 10**9)
    ref = lmmfast.lmer(formula, df, weights=weights)
    assert not ref._dev.factor.wide and isinstance(ref._frame.Xcols, list)
    for theta in (ref.theta, ref.theta * 0.5 + 0.1):
        a, b = fit._dev(theta), ref._dev(theta)
        assert abs(a - b) <= 1e-10 * abs(b)
    assert abs(fit.objective - ref.objective) <= 1e-8 * abs(ref.objective)
    np.testing.assert_allclose(fit.beta, ref.beta, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(fit.fitted_values, ref.fitted_values, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(fit.predict(df.iloc[:40]), ref.predict(df.iloc[:40]), atol=1e-8)


@pytest.mark.parametrize("reml", [True, False])
@pytest.mark.parametrize("formula", ["y ~ x + g + (1 | h)", "y ~ x + g + (x | h)"])
def test_wide_gradient_matches_finite_differences_and_the_kernel(formula, reml, monkeypatch):
    dev, _ = _deviance(formula, reml, weights="w")
    assert dev.factor.wide
    theta = np.array([0.8]) if "(1 |" in formula else np.array([0.9, 0.2, 0.6])
    _, grad = dev.value_and_gradient(theta)
    h = 1e-6
    fd = central_gradient(dev, theta, h)
    np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-5)
    monkeypatch.setattr(blocked, "WIDE_X", 10**9)
    narrow, _ = _deviance(formula, reml, weights="w")
    assert not narrow.factor.wide
    v2, grad2 = narrow.value_and_gradient(theta)
    np.testing.assert_allclose(grad, grad2, rtol=1e-9, atol=1e-9)
