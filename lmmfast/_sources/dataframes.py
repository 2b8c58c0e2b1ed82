"""Any data frame in: pandas, polars, pyarrow and whatever narwhals or the Arrow PyCapsule
interface can hand over, as a pandas DataFrame whose numeric columns are the source's own
buffers where the layout allows (one chunk, no missing values: a read-only NumPy view).

Arrow is the common currency: polars, narwhals-supported frames and any object exporting
``__arrow_c_stream__`` become a ``pyarrow.Table`` first (zero-copy for numeric columns),
and each column then becomes a pandas column:

* numeric or boolean, no missing values, one chunk: a view of the Arrow buffer (booleans
  are bit-packed in Arrow, so they are unpacked: a copy of 1 byte per row);
* numeric with missing values: float64 with NaN (as pandas reads them; a copy);
* anything else (strings, dictionaries = factors, dates): pyarrow's own ``to_pandas``.

pandas columns with Arrow dtypes (``double[pyarrow]``, ``ArrowDtype(pa.string())``) go the
same way; pandas' ``"string"`` dtypes with ``pd.NA`` (``"string[pyarrow]"``, what Dask makes
of text columns) become the default ``str`` dtype, which formulaic reads as categorical;
other pandas columns are left as they are.
"""

from __future__ import annotations

import pandas as pd

from .._errors import DataError

_HINT = (
    "pass a pandas, polars or pyarrow data frame, a dict of equal-length columns, a Dask "
    "DataFrame, a pyarrow.dataset.Dataset or the path of a Parquet file or folder; other frames "
    "convert with their .to_pandas() or .to_arrow() method"
)


def as_pandas(data) -> pd.DataFrame:
    """`data` as a pandas DataFrame, sharing the numeric buffers where it can."""
    if isinstance(data, pd.DataFrame):
        if not data.columns.is_unique:  # cached on the (immutable) Index
            dup = data.columns[data.columns.duplicated()].unique().tolist()
            raise DataError(f"the data have duplicate column names {dup}; rename them")
        dtypes = list(zip(data.columns, data.dtypes))  # one call, not one column per name
        arrow = [c for c, d in dtypes if isinstance(d, pd.ArrowDtype)]
        na_strings = [c for c, d in dtypes if _is_na_string(d)]
        if not arrow and not na_strings:
            return data
        out = {c: data[c] for c in data.columns}
        for c in arrow:
            out[c] = pd.Series(arrow_column(data[c].array._pa_array), index=data.index, copy=False)
        for c in na_strings:  # formulaic reads pandas' "string" (pd.NA) dtype as numbers
            out[c] = data[c].astype(object).where(data[c].notna(), None).astype("str")
        return pd.DataFrame(out, copy=False)
    if isinstance(data, dict):
        return pd.DataFrame(data, copy=False)  # the arrays themselves, not copies
    table = as_arrow(data)
    if table is None:
        raise DataError(f"data of type {_type_name(data)} is not supported; {_HINT}")
    return arrow_to_pandas(table)


def as_arrow(data):
    """A pyarrow.Table of `data` (pyarrow, polars, narwhals frames, the PyCapsule stream),
    or None when `data` is none of these."""
    import pyarrow as pa

    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    try:
        import narwhals as nw

        frame = nw.from_native(data, pass_through=False)
    except (TypeError, ImportError):
        frame = None
    if frame is not None:
        if isinstance(frame, nw.LazyFrame):
            frame = frame.collect()
        if isinstance(frame, nw.DataFrame):
            return frame.to_arrow()
    if hasattr(data, "__arrow_c_stream__"):
        return pa.table(data)
    return None


def arrow_to_pandas(table, index=None) -> pd.DataFrame:
    """A pyarrow Table (or RecordBatch) as pandas, column by column (see the module doc)."""
    names = list(table.column_names)
    if len(set(names)) < len(names):
        dup = sorted({c for c in names if names.count(c) > 1})
        raise DataError(f"the data have duplicate column names {dup}; rename them")
    cols = {name: arrow_column(table.column(k)) for k, name in enumerate(names)}
    if index is None:
        index = pd.RangeIndex(table.num_rows)
    return pd.DataFrame({k: pd.Series(v, index=index, copy=False) for k, v in cols.items()},
                        copy=False)  # fmt: skip


def arrow_column(col):
    """One Arrow (chunked) array as a NumPy array (numeric) or pandas values (the rest)."""
    import pyarrow as pa
    import pyarrow.types as pt

    if isinstance(col, pa.ChunkedArray):
        col = col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()
    t = col.type
    if pt.is_integer(t) or pt.is_floating(t) or pt.is_boolean(t):
        if col.null_count == 0:
            if pt.is_boolean(t):
                return col.to_numpy(zero_copy_only=False)
            return col.to_numpy(zero_copy_only=True)  # a read-only view of the buffer
        return col.cast(pa.float64()).to_numpy(zero_copy_only=False)  # NaN where missing
    return col.to_pandas().array


def _is_na_string(dtype) -> bool:
    """pandas' "string" dtypes with pd.NA as the missing value (the default "str" has NaN)."""
    return isinstance(dtype, pd.StringDtype) and dtype.na_value is pd.NA


def _type_name(data) -> str:
    t = type(data)
    return f"{t.__module__}.{t.__qualname__}"
