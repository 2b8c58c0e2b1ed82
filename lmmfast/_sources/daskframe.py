"""Dask DataFrames: the pass runs on the workers (see batched.py).

Each partition becomes partial cross-products with the same Cython kernel as in memory;
the partials are merged by a tree reduction in partition order (so the sum, and the fit,
are the same on every run, including one where a lost worker's tasks were recomputed).
The first pass (the levels) is reduced the same way.  The plan (level encoders, model
spec) is one task of the graph, sent once to each worker; theta is optimized on the driver
from the merged blocks alone.  dask is imported only here, when a Dask object is passed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

FAN_IN = 8  # partials merged per reduction task


class DaskSource:
    """The partitions of a Dask DataFrame."""

    def __init__(self, ddf):
        self.ddf = ddf
        self.meta = ddf._meta

    def reduce(self, func, merge, columns):
        """func on every partition, merged by a tree reduction in partition order."""
        import dask

        parts = self.ddf[list(columns)].to_delayed()
        fn = dask.delayed(func, pure=True)
        level = [dask.delayed(_apply)(fn, p) for p in parts]
        while len(level) > 1:
            level = [dask.delayed(_merge_all)(merge, *level[i : i + FAN_IN])
                     for i in range(0, len(level), FAN_IN)]  # fmt: skip
        return level[0].compute()

    def row_values(self, plan, keep, beta, b, what: str, out=None, scale: float = 1.0):
        """fitted values or residuals of the rows used: a lazy Dask Series (map_partitions),
        or, with `out`, written to Parquet (a folder, one file per partition)."""
        import dask

        name = "fitted" if what == "fitted" else "residuals"
        s = self.ddf[plan.layout.used].map_partitions(
            _values, dask.delayed(plan, pure=True), np.asarray(keep), beta,
            dask.delayed(b, pure=True), what, scale, meta=pd.Series(dtype=np.float64, name=name),
        )  # fmt: skip
        if out is None:
            return s
        s.to_frame().to_parquet(str(out))
        return out

    def map_partitions(self, func, fit, *args, name: str):
        """func(fit, partition, *args) on every partition, lazily (fit sent once)."""
        import dask

        return self.ddf.map_partitions(
            _call, func, dask.delayed(fit, pure=True), *args,
            meta=pd.Series(dtype=np.float64, name=name),
        )  # fmt: skip


def _apply(func, part):
    return func(part)


def _merge_all(merge, *parts):
    acc = parts[0]
    for p in parts[1:]:
        acc = merge(acc, p)
    return acc


def _values(part, plan, keep, beta, b, what, scale):
    return plan.fitted(part, keep, beta, b, what, scale)


def _call(part, func, fit, *args):
    return func(fit, part, *args)
