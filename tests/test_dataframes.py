"""Any data frame in (issue 9, item 3): polars, pyarrow, pandas with Arrow dtypes."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import lmmfast
from lmmfast._sources.frame import _as_frame

pl = pytest.importorskip("polars")

FORMULA = "y ~ x + f + (1 | g)"


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    n = 400
    g = rng.choice([f"s{j}" for j in range(12)], n)
    x = rng.normal(size=n)
    f = rng.choice(["a", "b", "c"], n)
    y = x + (f == "b") + rng.normal(size=12)[np.searchsorted(np.unique(g), g)]
    y = y + rng.normal(size=n)
    df = pd.DataFrame({"y": y, "x": x, "f": f, "g": g, "k": rng.integers(0, 5, n)})
    df.loc[[3, 9], "y"] = np.nan
    df.loc[17, "f"] = None
    return df


def _kinds(df):
    table = pa.Table.from_pandas(df, preserve_index=False)
    return {
        "pyarrow.Table": table,
        "pyarrow.RecordBatch": table.combine_chunks().to_batches()[0],
        "polars.DataFrame": pl.from_arrow(table),
        "polars.LazyFrame": pl.from_arrow(table).lazy(),
        "pandas[pyarrow]": df.convert_dtypes(dtype_backend="pyarrow"),
        "pandas string[pyarrow]": df.astype({"f": "string[pyarrow]", "g": "string"}),
        "pandas dictionary": df.astype({"g": "category"}),
    }


KINDS = ["pyarrow.Table", "pyarrow.RecordBatch", "polars.DataFrame", "polars.LazyFrame",
         "pandas[pyarrow]", "pandas string[pyarrow]", "pandas dictionary"]  # fmt: skip


@pytest.mark.parametrize("kind", KINDS)
def test_every_frame_fits_and_predicts_as_pandas(data, kind):
    ref = lmmfast.lmer(FORMULA, data)
    frame = _kinds(data)[kind]
    got = lmmfast.lmer(FORMULA, frame)
    assert got.objective == pytest.approx(ref.objective, rel=1e-12)
    np.testing.assert_allclose(got.theta, ref.theta, rtol=1e-9)
    assert got.xnames == ref.xnames and (got.nobs, got.n_dropped_rows) == (ref.nobs, 3)
    pd.testing.assert_index_equal(got.ranef["g"].index, ref.ranef["g"].index)
    np.testing.assert_allclose(got.predict(frame), ref.predict(data), rtol=1e-10)
    np.testing.assert_allclose(ref.predict(frame), ref.predict(data), rtol=1e-12)


def test_numeric_columns_are_not_copied(data):
    clean = data.dropna()
    table = pa.Table.from_pandas(clean, preserve_index=False).combine_chunks()
    buf = table.column("x").chunk(0).to_numpy()
    for frame in (table, pl.from_arrow(table), clean.convert_dtypes(dtype_backend="pyarrow")):
        out = _as_frame(frame)
        src = buf if frame is table else None
        if isinstance(frame, pd.DataFrame):
            src = frame["x"].array._pa_array.chunk(0).to_numpy()
        elif frame is not table:
            src = frame["x"].to_numpy()
        assert np.shares_memory(out["x"].to_numpy(), src), type(frame)
        assert not out["x"].to_numpy().flags.writeable  # a view of the source's buffer
    # and the caller's frame is unchanged by a fit
    before = pl.from_arrow(table)
    lmmfast.lmer(FORMULA, before)
    assert before.equals(pl.from_arrow(table))


def test_missing_values_in_arrow_columns_are_dropped(data):
    table = pa.Table.from_pandas(data, preserve_index=False)
    # integers with nulls: float with NaN, as pandas reads them
    k = pa.array([None if i % 50 == 0 else int(v) for i, v in enumerate(data["k"])])
    got = lmmfast.lmer("y ~ x + k + (1 | g)", table.set_column(4, "k", k))
    ref = lmmfast.lmer("y ~ x + k + (1 | g)", data.assign(k=k.to_pandas()))
    assert got.n_dropped_rows == ref.n_dropped_rows > 3
    assert got.objective == pytest.approx(ref.objective, rel=1e-12)


def test_unsupported_data_name_their_type_and_the_conversion():
    class Frame:  # a frame library lmmfast does not know
        pass

    with pytest.raises(lmmfast.DataError, match=r"test_dataframes\..*Frame.*to_pandas\(\)"):
        lmmfast.lmer(FORMULA, Frame())
    with pytest.raises(lmmfast.DataError, match="builtins.list"):
        lmmfast.lmer(FORMULA, [[1, 2]])
    fit = lmmfast.lmer("Reaction ~ Days + (1 | Subject)", lmmfast.datasets.load("sleepstudy"))
    with pytest.raises(lmmfast.DataError, match="numpy.ndarray"):
        fit.predict(np.zeros((3, 2)))


def test_arrow_c_stream_objects_are_read(data):
    class Stream:  # any object exporting the Arrow PyCapsule stream interface
        def __init__(self, table):
            self.table = table

        def __arrow_c_stream__(self, requested_schema=None):
            return self.table.__arrow_c_stream__(requested_schema)

    table = pa.Table.from_pandas(data, preserve_index=False)
    got = lmmfast.lmer(FORMULA, Stream(table))
    assert got.objective == pytest.approx(lmmfast.lmer(FORMULA, data).objective, rel=1e-12)
