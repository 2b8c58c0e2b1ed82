"""The elimination of a many-level fixed factor's indicators (lmmfast/_eliminate.py): every
piece of the objective, its gradient and R_X against the dense p x p factorization."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from dense import central_gradient

import lmmfast
from lmmfast._eliminate import diagonal_columns


def _data(seed: int = 2, n: int = 3000, ng: int = 300, nh: int = 20) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    g, h = rng.integers(0, ng, n), rng.integers(0, nh, n)
    x = rng.normal(size=n)
    y = 1 + 0.5 * x + rng.normal(size=ng)[g] + rng.normal(size=nh)[h] * (1 + 0.3 * x)
    return pd.DataFrame({"y": y + rng.normal(size=n), "x": x, "g": [f"L{v}" for v in g],
                         "h": [f"H{v}" for v in h], "w": rng.uniform(0.5, 2.0, n)})  # fmt: skip


def test_diagonal_columns_are_mutually_orthogonal():
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 6, 50)
    X = np.column_stack([np.ones(50), rng.normal(size=50), np.eye(6)[codes][:, 1:]])
    XtX = X.T @ X
    E = diagonal_columns(XtX)
    assert E.tolist() == [2, 3, 4, 5, 6]  # the indicators, not the intercept or x
    off = XtX[np.ix_(E, E)] - np.diag(np.diag(XtX)[E])
    assert np.all(off == 0)


def _dense_pieces(dev, theta):
    elim, dev.elim = dev.elim, None
    try:
        dec = dev.decompose(theta)
        out = (dev.objective(dec), dec.beta, dec.RX.copy(), dev.value_and_gradient(theta)[1])
    finally:
        dev.elim = elim
    return out


@pytest.mark.parametrize("formula", ["y ~ x + g + (1|h)", "y ~ x + g + (x|h)",
                                     "y ~ x + g + (1|h) + (0 + x|h)"])  # fmt: skip
@pytest.mark.parametrize("reml", [True, False])
@pytest.mark.parametrize("weighted", [False, True])
def test_eliminated_objective_equals_dense(formula, reml, weighted):
    kw = {"weights": "w"} if weighted else {}
    fit = lmmfast.lmer(formula, _data(), REML=reml, **kw)
    dev = fit._dev
    assert dev.elim is not None and len(dev.elim.E) == 299
    for scale in (0.5, 1.0, 1.7):
        theta = fit.theta * scale + 0.05  # off the boundary, all entries non-zero
        dec = dev.decompose(theta)
        f, g = dev.value_and_gradient(theta)
        f0, beta0, RX0, g0 = _dense_pieces(dev, theta)
        assert abs(dev.objective(dec) - f0) <= 1e-11 * abs(f0) and abs(f - f0) <= 1e-11 * abs(f0)
        np.testing.assert_allclose(dec.beta, beta0, rtol=1e-9, atol=1e-10)
        np.testing.assert_allclose(g, g0, rtol=1e-7, atol=1e-7)
        dec = dev.decompose(theta)
        np.testing.assert_allclose(dec.RX, RX0, rtol=1e-12, atol=1e-12)
        # the gradient by central differences of the eliminated objective itself
        h = 1e-6
        fd = central_gradient(dev, theta, h)
        np.testing.assert_allclose(g, fd, rtol=1e-5, atol=1e-4)


def test_fit_with_elimination_equals_dense_fit(monkeypatch):
    from lmmfast import _eliminate

    df = _data(seed=4)
    fit = lmmfast.lmer("y ~ x + g + (x|h)", df)
    monkeypatch.setattr(_eliminate, "MAX_QZ", 0)  # the dense p x p path
    dense = lmmfast.lmer("y ~ x + g + (x|h)", df)
    assert fit._dev.elim is not None and dense._dev.elim is None
    assert abs(fit.objective - dense.objective) <= 1e-10 * abs(dense.objective)
    np.testing.assert_allclose(fit.theta, dense.theta, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.asarray(fit.beta), np.asarray(dense.beta), rtol=1e-5,
                               atol=1e-7)  # fmt: skip
    np.testing.assert_allclose(fit.RX, dense.RX, rtol=1e-5, atol=1e-6)
