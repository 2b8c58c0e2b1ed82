"""Larger than memory, no cluster: Parquet files (a pyarrow.dataset.Dataset or a path)
streamed record batch by record batch through the one-pass kernel (see batched.py).

Only the columns the formula uses are read.  Peak memory is one batch plus the per-level
accumulators (O(levels)), never O(rows): batches are gathered to about BATCH_ROWS rows (or
a few times the number of random effects, whichever is larger, so that zeroing and adding
the per-level accumulators stays small next to the pass), read in the dataset's fragment
order, so that both passes, and pandas.read_parquet of the same files, see the rows in one
order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .._errors import DataError
from .dataframes import arrow_to_pandas
from .levels import SAMPLE_ROWS

BATCH_ROWS = 1 << 21  # rows per batch at least
LEVELS_PER_BATCH = 4  # and at least this many rows per random effect


class ParquetSource:
    """Record batches of a Parquet dataset, in a fixed order."""

    def __init__(self, dataset):
        self.dataset = dataset
        self.meta = arrow_to_pandas(dataset.schema.empty_table())
        self.batch_rows = BATCH_ROWS

    @classmethod
    def open(cls, data) -> ParquetSource:
        import pyarrow.dataset as ds

        if isinstance(data, ds.Dataset):
            return cls(data)
        path = Path(data)
        if not path.exists():
            raise DataError(f"data {str(data)!r} is not a file or folder; give the path of a "
                            "Parquet file or of a folder of Parquet files")  # fmt: skip
        try:
            return cls(ds.dataset(str(path), format="parquet"))
        except Exception as e:  # pyarrow: not Parquet, unreadable
            raise DataError(f"cannot read {str(data)!r} as Parquet: {e}") from None

    def batches(self, columns):
        """pandas frames of about batch_rows rows (the columns given), index = row number."""
        import pyarrow as pa

        columns = None if columns is None else list(columns)
        start, pending, count = 0, [], 0
        for fragment in self.dataset.get_fragments():
            for rb in fragment.to_batches(columns=columns, batch_size=1 << 20):
                pending.append(rb)
                count += rb.num_rows
                if count >= self.batch_rows:
                    yield _frame(pa.Table.from_batches(pending), start)
                    start, pending, count = start + count, [], 0
        if pending or start == 0:
            table = self.dataset.schema.empty_table()
            table = pa.Table.from_batches(pending) if pending else (
                table if columns is None else table.select(columns))  # fmt: skip
            yield _frame(table, start)

    def reduce(self, func, merge, columns):
        """func on every batch, folded with merge in batch order; the next batch is read
        (pyarrow, GIL released) while func runs on this one (the kernel releases it too)."""
        acc = None
        for df in _prefetched(self.batches(columns)):
            r = func(df)
            acc = r if acc is None else merge(acc, r)
        return acc

    def head(self, columns) -> pd.DataFrame:
        """The first rows (SAMPLE_ROWS of them) of the columns given."""
        return arrow_to_pandas(self.dataset.head(SAMPLE_ROWS, columns=list(columns)))

    def scan_columns(self, used, level_cols):
        """The columns the levels pass must read: the level columns, and the others only
        where the files' statistics do not prove them free of missing values."""
        maybe_null = set()
        for fragment in self.dataset.get_fragments():
            md = fragment.metadata
            names = [md.schema.column(j).name for j in range(md.num_columns)]
            for i in range(md.num_row_groups):
                rg = md.row_group(i)
                for j, name in enumerate(names):
                    st = rg.column(j).statistics
                    if name in used and (st is None or not st.has_null_count or st.null_count):
                        maybe_null.add(name)
        return [c for c in used if c in level_cols or c in maybe_null]

    def sized_for(self, nre: int) -> None:
        """Grow the batches so that the per-level accumulators are small next to a batch."""
        self.batch_rows = max(BATCH_ROWS, LEVELS_PER_BATCH * nre)

    def row_values(self, plan, keep, beta, b, what: str, out=None, scale: float = 1.0):
        """fitted values or residuals of the rows used, streamed: a pandas Series indexed by
        row number, or, with `out`, written to a Parquet file (columns row, <what>)."""
        columns = plan.layout.used
        if out is None:
            parts = [plan.fitted(df, keep, beta, b, what, scale) for df in self.batches(columns)]
            return pd.concat(parts) if len(parts) > 1 else parts[0]
        import pyarrow as pa
        import pyarrow.parquet as pq

        writer = None
        try:
            for df in self.batches(columns):
                s = plan.fitted(df, keep, beta, b, what, scale)
                table = pa.table({"row": s.index.to_numpy(dtype=np.int64), s.name: s.to_numpy()})
                if writer is None:
                    writer = pq.ParquetWriter(str(out), table.schema)
                writer.write_table(table)
        finally:
            if writer is not None:
                writer.close()
        return Path(out)


def _prefetched(batches):
    """The batches of a generator, each read in a thread while the previous is used."""
    from concurrent.futures import ThreadPoolExecutor

    done = object()
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(next, batches, done)
        while True:
            df = future.result()
            if df is done:
                return
            future = pool.submit(next, batches, done)
            yield df


def _frame(table, start: int) -> pd.DataFrame:
    return arrow_to_pandas(table, index=pd.RangeIndex(start, start + table.num_rows))
