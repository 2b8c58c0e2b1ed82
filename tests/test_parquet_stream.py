"""Parquet files and pyarrow datasets, streamed batch by batch (issue 11, item 2)."""

import tracemalloc
import warnings

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
from batched_cases import MODELS, PARAM_RTOL, assert_same_cross_products, assert_same_fit, make_data

import lmmfast
from lmmfast._sources import parquet
from lmmfast._sources.formula import parse_formula
from lmmfast._sources.sources import batched_source, stream_frame

warnings.filterwarnings("ignore", category=lmmfast.SingularFitWarning)


@pytest.fixture
def small_batches(monkeypatch):
    monkeypatch.setattr(parquet, "BATCH_ROWS", 150)  # 8 or more batches of the test data
    monkeypatch.setattr(parquet, "LEVELS_PER_BATCH", 0)


@pytest.fixture(scope="module")
def data():
    return make_data()


@pytest.fixture
def folder(tmp_path, data):
    """Three files with small row groups: batches cross file and row-group boundaries."""
    table = pa.Table.from_pandas(data, preserve_index=False)
    folder = tmp_path / "data"
    folder.mkdir()
    for j, (a, b) in enumerate([(0, 500), (500, 700), (700, len(data))]):
        pq.write_table(table.slice(a, b - a), folder / f"part{j}.parquet", row_group_size=90)
    return folder


@pytest.mark.parametrize("formula,kw", MODELS)
def test_streamed_fit_equals_in_memory(small_batches, folder, data, formula, kw):
    ref = lmmfast.lmer(formula, data, **kw)
    got = lmmfast.lmer(formula, folder, **kw)
    assert_same_fit(got, ref)


@pytest.mark.parametrize("formula,kw", MODELS)
def test_streamed_cross_products_equal_in_memory(small_batches, folder, data, formula, kw):
    frame = stream_frame(parse_formula(formula), batched_source(folder), **kw)
    assert_same_cross_products(frame, data, formula, kw)


def test_in_memory_fit_does_not_move_when_rows_are_reversed(data):
    """The same rows in another order (the same A up to rounding) give the same optimum to
    PARAM_RTOL: lmer ends with Newton steps on the analytic gradient, so its end point does
    not depend on the last bits of the objective (before that, theta moved by ~4e-7)."""
    a = lmmfast.lmer("y ~ x + f + (x | g)", data, weights="w", offset="o")
    b = lmmfast.lmer("y ~ x + f + (x | g)", data.iloc[::-1], weights="w", offset="o")
    np.testing.assert_allclose(a.objective, b.objective, rtol=1e-13)
    shift = np.max(np.abs(a.theta - b.theta) / np.abs(a.theta))
    assert shift < PARAM_RTOL


def test_dataset_file_and_path_give_one_fit(small_batches, folder, data):
    ref = lmmfast.lmer("y ~ x + (x | g)", data)
    for src in (pads.dataset(str(folder), format="parquet"), str(folder)):
        assert_same_fit(lmmfast.lmer("y ~ x + (x | g)", src), ref)
    one = folder.parent / "one.parquet"
    pq.write_table(pa.Table.from_pandas(data, preserve_index=False), one, row_group_size=100)
    assert_same_fit(lmmfast.lmer("y ~ x + (x | g)", one), ref)


def test_fitted_residuals_streamed_and_written(small_batches, folder, data, tmp_path):
    kw = {"weights": "w", "offset": "o"}
    ref = lmmfast.lmer("y ~ x + f + (x | g)", data, **kw)
    got = lmmfast.lmer("y ~ x + f + (x | g)", folder, **kw)
    np.testing.assert_array_equal(got.fitted().index, ref.fitted().index)  # row numbers
    np.testing.assert_allclose(got.fitted(), ref.fitted(), rtol=1e-5, atol=1e-6)
    for args in ({}, {"type": "pearson", "scaled": True}, {"marginal": True}):
        np.testing.assert_allclose(got.residuals(**args), ref.residuals(**args), rtol=1e-5,
                                   atol=1e-6)  # fmt: skip
    np.testing.assert_allclose(got.predict(re_form="~0"), ref.predict(re_form="~0"), rtol=1e-5)
    # the post-fit pass itself is exact: the in-memory fit's own values on the same rows
    np.testing.assert_allclose(got.fitted(), _fitted_of(got, data), rtol=1e-12)
    out = got.fitted(out=tmp_path / "fitted.parquet")
    back = pd.read_parquet(out)
    np.testing.assert_array_equal(back["row"], ref.fitted().index)
    np.testing.assert_allclose(back["fitted"], got.fitted(), rtol=1e-15)
    res = pd.read_parquet(got.residuals(out=tmp_path / "res.parquet"))
    np.testing.assert_allclose(res["residuals"], got.residuals(), rtol=1e-15)
    # predict(newdata) on Parquet data: batch by batch
    np.testing.assert_allclose(
        ref.predict(folder).loc[ref.fitted().index], ref.fitted(), rtol=1e-12
    )
    assert got.summary() is not None


def _fitted_of(fit, data):
    """fit's fitted values computed by the in-memory predict (same beta, b) on the rows."""
    kept = data.loc[fit.fitted().index]
    return fit.predict(kept)


def test_only_the_used_columns_are_read(small_batches, folder, monkeypatch):
    seen = []
    original = parquet.ParquetSource.batches

    def spy(self, columns):
        seen.append(None if columns is None else set(columns))
        return original(self, columns)

    monkeypatch.setattr(parquet.ParquetSource, "batches", spy)
    lmmfast.lmer("y ~ x + (1 | g)", folder)
    # the levels pass reads g and the columns that have missing values (y: by the files'
    # statistics x has none); the cross-product pass reads the three used columns
    assert seen == [{"y", "g"}, {"y", "x", "g"}]


def test_peak_memory_is_one_batch_not_the_rows(tmp_path, monkeypatch):
    """600k rows (14 MB as float64, float64, int64) in batches of 30k: the fit's peak
    allocation (tracemalloc sees NumPy's buffers) stays a small fraction of the data."""
    monkeypatch.setattr(parquet, "BATCH_ROWS", 30_000)
    rng = np.random.default_rng(3)
    n = 600_000
    g = rng.integers(0, 500, n)
    x = rng.normal(size=n)
    y = x + rng.normal(size=500)[g] + rng.normal(size=n)
    pq.write_table(pa.table({"y": y, "x": x, "g": g}), tmp_path / "big.parquet",
                   row_group_size=20_000)  # fmt: skip
    data_bytes = n * 24
    del y, x, g
    tracemalloc.start()
    try:
        fit = lmmfast.lmer("y ~ x + (1 | g)", tmp_path / "big.parquet")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert fit.nobs == n
    assert peak < 0.25 * data_bytes, (peak, data_bytes)


def test_streamed_bad_values_raise_as_in_memory(small_batches, folder, data, tmp_path):
    bad = data.copy()
    bad.loc[1000, "x"] = np.inf
    pq.write_table(pa.Table.from_pandas(bad, preserve_index=False), tmp_path / "bad.parquet",
                   row_group_size=100)  # fmt: skip
    with pytest.raises(lmmfast.DataError, match="infinite values in 'x'") as mem:
        lmmfast.lmer("y ~ x + (1 | g)", bad)
    with pytest.raises(lmmfast.DataError, match="infinite values in 'x'") as got:
        lmmfast.lmer("y ~ x + (1 | g)", tmp_path / "bad.parquet")
    assert str(got.value) == str(mem.value)


def test_streamed_refusals_are_typed(small_batches, folder, data):
    with pytest.raises(lmmfast.DataError, match="not a file or folder"):
        lmmfast.lmer("y ~ x + (1 | g)", folder / "missing.parquet")
    with pytest.raises(lmmfast.DataError, match="column name"):
        lmmfast.lmer("y ~ x + (1 | g)", folder, weights=np.ones(len(data)))
    with pytest.raises(lmmfast.DataError, match="depends on all rows"):
        lmmfast.lmer("y ~ center(x) + (1 | g)", folder)
    with pytest.raises(lmmfast.MissingColumnError):
        lmmfast.lmer("y ~ xx + (1 | g)", folder)


def test_inference_from_cross_products_works_and_row_methods_refuse(small_batches, folder, data):
    """Satterthwaite df, profiles and ML refits need only A (no pass over the rows);
    refit(y), simulate() and Kenward-Roger need the rows in memory: a typed error."""
    ref = lmmfast.lmer("y ~ x + (1 | g)", data)
    got = lmmfast.lmer("y ~ x + (1 | g)", folder)
    np.testing.assert_allclose(got.refit_ml().objective, ref.refit_ml().objective, rtol=1e-10)
    a, b = got.coef_table("satterthwaite"), ref.coef_table("satterthwaite")
    np.testing.assert_allclose(a["df"], b["df"], rtol=1e-4)
    calls = (lambda: got.refit(np.ones(got.nobs)), got.simulate,
             lambda: got.coef_table("kenward-roger"), lambda: got.save("never.npz"))  # fmt: skip
    for call in calls:
        with pytest.raises(lmmfast.DataError, match="needs the rows in memory"):
            call()
    import pickle

    with pytest.raises(lmmfast.NeedsDataError, match="streams its rows"):
        pickle.loads(pickle.dumps(got)).fitted()
