"""Which data are batched (a Dask DataFrame, a Parquet dataset or path), and their fit frame.

Everything else (pandas, polars, Arrow, dicts) is in memory and goes through frame.py.
"""

from __future__ import annotations

import time
from pathlib import Path

from .batched import Layout, Plan, StreamFrame, add, merge_scans
from .formula import ParsedFormula


def batched_source(data):
    """The batched source for `data`, or None for in-memory data."""
    module = type(data).__module__
    if module.startswith(("dask.", "dask_expr")) and hasattr(data, "to_delayed"):
        from .daskframe import DaskSource

        return DaskSource(data)
    if isinstance(data, (str, Path)):
        from .parquet import ParquetSource

        return ParquetSource.open(data)
    if module.startswith("pyarrow"):
        import pyarrow.dataset as ds

        if isinstance(data, ds.Dataset):
            from .parquet import ParquetSource

            return ParquetSource(data)
    return None


def stream_frame(parsed: ParsedFormula, source, weights=None, offset=None) -> StreamFrame:
    """The two passes over a batched source: levels, then cross-products."""
    t0 = time.perf_counter()
    layout = Layout(parsed, source.meta, weights, offset)
    columns = layout.used
    if hasattr(source, "scan_columns"):  # Parquet: statistics may spare reading some columns
        columns = source.scan_columns(layout.used, layout.level_cols)
    scan = source.reduce(layout.scan, merge_scans, columns)
    if columns != layout.used:  # the prototype frame needs every column's dtype and values
        scan.sample = layout.kept(source.head(layout.used))[0]
    t1 = time.perf_counter()
    plan = Plan(layout, scan)
    if hasattr(source, "sized_for"):
        source.sized_for(sum(t.nlevels * len(t.cnames) for t in plan.terms))
    part = source.reduce(plan.partial, add, layout.used)
    frame = plan.frame(part, source)
    frame.stages = {"levels": t1 - t0, "pass": time.perf_counter() - t1,
                    "pass_in_kernels": part.seconds}  # fmt: skip
    return frame
