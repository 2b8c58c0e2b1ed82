"""Wide fixed-effects designs (many-level factors) built sparse by design.py: the same
model matrix as the dense model.matrix columns (the oracle), the same fit and predictions."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pandas as pd
import pytest

import lmmfast
from lmmfast._sources import frame as frame_mod
from lmmfast._sources.design import build_design
from lmmfast._sources.rterms import r_terms
from lmmfast._sources.sparse_columns import RowSparse, SparseColumns

RNG = np.random.default_rng(8)
N = 400
DATA = pd.DataFrame({
    "x": RNG.normal(size=N), "z": RNG.uniform(0.5, 2.0, N),
    "f": RNG.choice(list("abcd"), N), "g": RNG.choice([f"g{i:02d}" for i in range(15)], N),
    "o": pd.Categorical(RNG.choice(list("pqrs"), N), categories=list("pqrs"), ordered=True),
    "b": RNG.random(N) < 0.4,
})  # fmt: skip
DATA.loc[::37, "x"] = 0.0  # exact zeros of a numeric variable: not stored in the sparse matrix

RHS = [
    "x + g",
    "f * g",
    "0 + f:g",
    "g:x",
    "0 + g + g:x",
    "poly(x, 2) * g",
    "f * g * x",
    "o * g",
    "C(f, sum) * g",
    "g + f:z - 1",
    "x + g:f + log(z)",
    "b * g",
    "g + f %in% g",
]
CONTRASTS = [None, {"g": "sum"}, {"g": "helmert"}, {"g": "poly"}, {"g": "SAS"},
             {"g": "contr.treatment", "f": "helmert"}]  # fmt: skip


def _dense(cols) -> np.ndarray:
    return np.column_stack([np.broadcast_to(c, c.shape) for c in cols])


@pytest.mark.parametrize("contrasts", CONTRASTS)
@pytest.mark.parametrize("rhs", RHS)
def test_sparse_design_is_the_dense_model_matrix(rhs, contrasts):
    labels = r_terms(rhs).labels
    contrasts = {k: v for k, v in (contrasts or {}).items() if k in labels}
    dense, names, design = build_design(rhs, DATA, "y ~ " + rhs, contrasts, sparse=False)
    cols, snames, sdesign = build_design(rhs, DATA, "y ~ " + rhs, contrasts, sparse=True)
    assert isinstance(cols, SparseColumns)
    assert snames == names and sdesign.names == names
    assert sdesign.kinds == design.kinds
    np.testing.assert_array_equal(cols.matrix.toarray(), _dense(dense))
    # only non-zeros are stored, as the dense-to-sparse conversion stores them
    assert np.all(cols.matrix.data != 0)
    assert cols.matrix.nnz == np.count_nonzero(_dense(dense))


def test_wide_design_is_built_sparse_by_default():
    rhs = "x + g:f"  # 1 + 1 + 60 = 62 columns: dense; "x * g * f": 120 columns: sparse
    assert isinstance(build_design(rhs, DATA, "y ~ " + rhs, sparse_from=64)[0], list)
    assert isinstance(build_design("x * g * f", DATA, "y ~ x * g * f")[0], list)  # never
    cols, names, _ = build_design("x * g * f", DATA, "y ~ x * g * f", sparse_from=64)
    assert isinstance(cols, SparseColumns) and len(cols) == len(names) == 120
    dense = build_design("x * g * f", DATA, "y ~ x * g * f", sparse=False)[0]
    old = frame_mod._sparse_columns(dense)  # the dense-then-converted matrix of before
    new = cols.matrix
    assert np.array_equal(old.matrix.indptr, new.indptr)
    assert np.array_equal(old.matrix.indices, new.indices)
    assert np.array_equal(old.matrix.data, new.data)


@pytest.mark.parametrize("rhs", ["x + g", "f * g * x", "poly(x, 2) * g", "g + g:log(z)"])
def test_new_data_with_missing_and_infinite_values(rhs):
    _, _, design = build_design(rhs, DATA, "y ~ " + rhs, {"g": "sum"})
    new = DATA.iloc[:40].copy()
    new.loc[new.index[3], "x"] = np.nan
    new.loc[new.index[7], "x"] = np.inf
    new.loc[new.index[11], "g"] = None
    new.loc[new.index[13], "z"] = 0.0  # log(0) = -inf
    new.loc[new.index[17], "f"] = None
    dense = design.columns(new, sparse=False)
    cols = design.columns(new, sparse=True)
    # 0 * NaN is NaN in the dense columns: rows with a missing value are NaN there too
    np.testing.assert_array_equal(cols.matrix.toarray(), _dense(dense))


def test_row_sparse_products_against_dense():
    codes = np.array([0, 2, 1, -1, 2, 0])
    C = np.array([[1.0, 0.0], [0.0, -2.0], [3.0, 4.0]])
    x = np.array([0.5, -1.0, 0.0, 2.0, 3.0, 1.5])
    f = RowSparse.coded(codes, C)
    Cn = np.vstack([C, np.full((1, 2), np.nan)])
    np.testing.assert_array_equal(f.matrix().toarray()[codes != -1], Cn[codes][codes != -1])
    assert np.all(np.isnan(f.matrix().toarray()[3]))
    k = RowSparse.dense([x, 2 * x], 6).kron(f)  # columns x, 2x fastest, then f's columns
    want = np.column_stack([Cn[codes, j] * c for j in range(2) for c in (x, 2 * x)])
    got = k.matrix().toarray()
    ok = codes != -1
    np.testing.assert_array_equal(got[ok], want[ok])


def test_sparse_build_has_no_dense_intermediate():
    n, k = 20000, 2000  # dense: 20000 x 2001 doubles = 320 MB
    rng = np.random.default_rng(1)
    data = pd.DataFrame({"x": rng.normal(size=n), "g": rng.integers(0, k, n).astype(str)})
    tracemalloc.start()
    try:
        cols, names, _ = build_design("x + g", data, "y ~ x + g", sparse_from=64)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert isinstance(cols, SparseColumns) and len(names) == k + 1
    assert peak < 40 * 2**20  # O(non-zeros): a few arrays of n entries, not n x p


def _data_for_fit():
    rng = np.random.default_rng(5)
    n = 900
    g = rng.integers(0, 40, n)
    h = rng.integers(0, 25, n)
    x = rng.normal(size=n)
    y = 1 + 0.5 * x + rng.normal(size=40)[g] + rng.normal(size=25)[h] + rng.normal(size=n)
    df = pd.DataFrame({"y": y + 0.3 * x * (g % 3), "x": x, "g": [f"L{v}" for v in g],
                       "h": [f"H{v}" for v in h], "w": rng.uniform(0.5, 2.0, n)})  # fmt: skip
    df.loc[[4, 50, 77], "x"] = np.nan  # rows dropped as lme4 drops them
    df.loc[[9, 60], "g"] = None
    return df


@pytest.mark.parametrize("formula", ["y ~ x + g + (1|h)", "y ~ x * g + (1|h)"])
@pytest.mark.parametrize("weighted", [False, True])
def test_fit_with_sparse_design_equals_dense(monkeypatch, formula, weighted):
    df = _data_for_fit()
    kw = {"weights": "w"} if weighted else {}
    monkeypatch.setattr(frame_mod, "SPARSE_COLUMNS", 10**9)  # dense X all the way
    dense = lmmfast.lmer(formula, df, REML=False, contrasts={"g": "sum"}, **kw)
    assert not isinstance(dense._frame.Xcols, SparseColumns)
    monkeypatch.setattr(frame_mod, "SPARSE_COLUMNS", 1)
    sparse = lmmfast.lmer(formula, df, REML=False, contrasts={"g": "sum"}, **kw)
    assert isinstance(sparse._frame.Xcols, SparseColumns)
    assert list(sparse.beta.index if hasattr(sparse.beta, "index") else []) == list(
        dense.beta.index if hasattr(dense.beta, "index") else []
    )
    assert abs(sparse.objective - dense.objective) <= 1e-10 * abs(dense.objective)
    np.testing.assert_allclose(np.asarray(sparse.beta), np.asarray(dense.beta), rtol=1e-6,
                               atol=1e-8)  # fmt: skip
    new = df.iloc[:60]
    np.testing.assert_allclose(
        sparse.predict(new).to_numpy(), dense.predict(new).to_numpy(), rtol=1e-6, atol=1e-8
    )


def test_predict_new_data_on_a_wide_fit():
    df = _data_for_fit()
    fit = lmmfast.lmer("y ~ x + g:x + g + (1|h)", df)
    assert isinstance(fit._frame.Xcols, SparseColumns)
    kept = df.dropna(subset=["x", "g"])
    np.testing.assert_allclose(fit.predict(kept).to_numpy(), fit.fitted().to_numpy(),
                               rtol=1e-10, atol=1e-10)  # fmt: skip
    pred = fit.predict(df.iloc[:100])
    missing = df.iloc[:100][["x", "g"]].isna().any(axis=1).to_numpy()
    assert np.all(np.isnan(pred.to_numpy()[missing]))
    assert np.all(np.isfinite(pred.to_numpy()[~missing]))
