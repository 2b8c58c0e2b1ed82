"""Post-fit values of batched sources: fitted, residuals and predict from a Dask or Parquet
fit, and predict on Dask or Parquet new data.

A Dask fit answers with lazy Dask Series (map_partitions, with beta and the conditional-
mode tables sent once); a Parquet fit by streaming its rows again (or writing a Parquet
file); new data that are batched are predicted batch by batch with the in-memory code.
"""

from __future__ import annotations

from dataclasses import replace

import pandas as pd

from .batched import StreamFrame
from .sources import batched_source


def lazy_predict(fit, newdata, re_form, allow_new_levels: bool):
    """predict() for a batched fit or batched new data; None when neither is batched."""
    from .._predict import _selected_terms, predict

    if newdata is None:
        if not isinstance(fit._frame, StreamFrame) or fit.fitted_values is not None:
            return None
        use = _selected_terms(fit, re_form)
        return _renamed(fit._frame.values(fit, "fitted", use=use), "predicted")
    source = batched_source(newdata) if not isinstance(newdata, (pd.DataFrame, dict)) else None
    if source is None:
        return None
    light = portable(fit)
    if hasattr(source, "map_partitions"):
        return source.map_partitions(predict, light, re_form, allow_new_levels, name="predicted")
    parts = [predict(light, df, re_form, allow_new_levels) for df in source.batches(None)]
    return pd.concat(parts) if len(parts) > 1 else parts[0]


def lazy_residuals(fit, type: str, scaled: bool, marginal: bool, out=None):
    """residuals() of a batched fit (see LmerFit.residuals)."""
    scale = 1.0 / fit.sigma if scaled else 1.0
    use = [] if marginal else None
    return fit._frame.values(fit, type, use=use, out=out, scale=scale)


def portable(fit):
    """A copy of the fit without its rows or factorization: what predict(newdata) reads,
    small enough to send to every worker."""
    cond_var = fit.cond_var  # needs the factorization: computed here, carried along
    light = replace(fit, fitted_values=None, response=None, weights=None, row_index=None,
                    _factor=None, _rows=None, _frame=None, _dev=None)  # fmt: skip
    light.__dict__.update(cond_var=cond_var, fitted_marginal=None)
    return light


def _renamed(values, name: str):
    return values.rename(name) if hasattr(values, "rename") else values
