"""The model frame: rows used, response, fixed-effects matrix, weights, offset, terms.

As lme4's model.frame + na.omit: every variable the formula (or weights/offset) uses
is looked up, rows with a missing value in any of them are dropped and counted, and
the caller's DataFrame is only read, never modified.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._errors import DataError, MissingColumnError
from .._terms import ReTerm, check_term, encode_groups
from .dataframes import as_pandas
from .design import Design, build_design, evaluate_vector, variables_of
from .formula import ParsedFormula
from .rexpr import is_constant_name, parse
from .rfunctions import data_symbols
from .sparse_columns import SPARSE_COLUMNS, SparseColumns


@dataclass(eq=False)
class ModelFrame:
    """Everything the fit needs from the data, for the rows kept."""

    y: np.ndarray  # (n,)
    Xcols: list[np.ndarray]  # p columns, each (n,): the caller's own arrays where possible
    xnames: list[str]
    weights: np.ndarray | None  # prior weights (None: all 1)
    offset: np.ndarray | None
    terms: list[ReTerm]  # in lme4's order: decreasing number of levels
    n_dropped: int  # rows dropped for missing values
    row_index: pd.Index  # index labels of the rows kept
    fixed_spec: object  # design.Design of the fixed part, or the column names if simple

    @property
    def n(self) -> int:
        return len(self.y)

    @property
    def X(self) -> np.ndarray:
        """The (n, p) fixed-effects matrix as one array (a copy; for small data and tests)."""
        return np.column_stack([np.broadcast_to(x, x.shape) for x in self.Xcols])


def build_frame(
    parsed: ParsedFormula, data, weights=None, offset=None, contrasts=None
) -> ModelFrame:
    """Evaluate a parsed formula on `data` (a DataFrame or a mapping of columns).

    contrasts: {factor: "treatment" | "sum" | "helmert" | "poly" | "SAS"} for the fixed part."""
    data = _as_frame(data)
    used = _used_columns(parsed, data, weights, offset)
    columns = {name: data[name] for name in used}  # each looked up once (~10 us in pandas)
    keep = np.ones(len(data), dtype=bool)
    for col in columns.values():
        _drop_missing(keep, col)
    w_arr = _vector_arg(weights, "weights", data)
    o_arr = _vector_arg(offset, "offset", data)
    for arr in (w_arr, o_arr):
        if arr is not None:
            keep &= ~np.isnan(arr)
    n_dropped = int(len(data) - keep.sum())
    # every row kept: the data themselves (only the used columns are read), no subframe
    frame = data.loc[keep, used] if n_dropped else data
    if len(frame) == 0:
        raise DataError(
            f"no rows left: all {len(data)} rows have a missing value in "
            f"{', '.join(map(repr, used))}; check those columns"
        )
    if n_dropped:
        columns = {name: frame[name] for name in used}
    y = _response(parsed.response, frame, columns)
    Xcols, xnames, fixed_spec = _model_columns(
        parsed.fixed,
        frame,
        parsed.formula,
        contrasts,
        sparse_from=SPARSE_COLUMNS,
        columns=columns,
    )  # a wide fixed part is built sparse (design.py); random-effect columns stay dense
    if len(Xcols) >= SPARSE_COLUMNS and not isinstance(Xcols, SparseColumns):
        Xcols = _sparse_columns(Xcols)  # many columns: X'WX by sparse products
    n = len(frame)
    if w_arr is not None:
        w_arr = w_arr[keep]
        if np.any(~np.isfinite(w_arr)) or np.any(w_arr <= 0):
            raise DataError(
                "weights must be finite and positive; remove rows with zero weight and check "
                "for negative or infinite values"
            )
    off = _offset(parsed, o_arr, keep, frame)
    terms = [_term(rt, frame, parsed.formula, columns) for rt in parsed.random]
    terms = lme4_order(terms)
    for t in terms:
        check_term(t, n)
    nre = sum(t.nlevels * t.q for t in terms)
    if n <= nre:
        raise DataError(
            f"{n} observations for {nre} random effects: the random-effects parameters and the "
            "residual variance cannot be identified. Simplify the random-effects terms."
        )
    return ModelFrame(
        y=y,
        Xcols=Xcols,
        xnames=xnames,
        weights=w_arr,
        offset=off,
        terms=terms,
        n_dropped=n_dropped,
        row_index=frame.index,
        fixed_spec=fixed_spec,
    )


def _offset(parsed: ParsedFormula, o_arr, keep: np.ndarray, frame: pd.DataFrame):
    """The offset= argument plus the formula's offset() terms on the rows kept; None if none."""
    if o_arr is None and not parsed.offsets:
        return None
    off = np.zeros(len(frame))
    if o_arr is not None:
        off += o_arr[keep]
    for expr in parsed.offsets:
        off += evaluate_vector(expr, frame, "offset")
    if not np.all(np.isfinite(off)):
        raise DataError("the offset has infinite values; check the offset column or expression")
    return off


def lme4_order(terms: list[ReTerm]) -> list[ReTerm]:
    """lme4's mkReTrms order: only if some term has more levels than the one before it,
    reorder by rev(order(nlevels)), i.e. decreasing levels with ties in reverse order."""
    if len(terms) < 2:
        return terms
    nl = np.array([t.nlevels for t in terms])
    if not np.any(np.diff(nl) > 0):
        return terms
    return [terms[i] for i in np.argsort(nl, kind="stable")[::-1]]


def _drop_missing(keep: np.ndarray, col: pd.Series) -> None:
    """keep &= the rows where col has a value (NumPy integers and booleans always have)."""
    dtype = col.dtype
    if isinstance(dtype, np.dtype) and dtype.kind in "iub":
        return
    if isinstance(dtype, np.dtype) and dtype.kind == "f":
        keep &= ~np.isnan(col.to_numpy())
        return
    keep &= ~np.asarray(col.array.isna(), dtype=bool)  # the array's own test: no Series built


def _as_frame(data) -> pd.DataFrame:
    """pandas, polars, pyarrow, narwhals frames or a dict of columns, as pandas (no copies of
    numeric columns where the layout allows; see dataframes.py)."""
    return as_pandas(data)


def _used_columns(parsed: ParsedFormula, data: pd.DataFrame, weights, offset) -> list[str]:
    names: list[str] = []

    def add(found):
        for v in found:
            if v not in data.columns:
                raise MissingColumnError(v, data.columns)
            if v not in names:
                names.append(v)

    add(_variables(parsed.response, data, rhs=False))
    add(_variables(parsed.fixed, data))
    for expr in parsed.offsets:
        add(_variables(expr, data, rhs=False))
    for rt in parsed.random:
        add(_variables(rt.expr, data))
        add(rt.factors)
    for arg in (weights, offset):
        if isinstance(arg, str):
            add([arg])
    return names


def _variables(expr: str, data: pd.DataFrame, rhs: bool = True) -> list[str]:
    """The data columns an expression reads (a right-hand side, or one R expression)."""
    if expr in data.columns:
        return [expr]
    names = variables_of(expr) if rhs else data_symbols(parse(expr))
    return [v for v in names if v in data.columns or not is_constant_name(v)]


def _vector_arg(arg, what: str, data: pd.DataFrame) -> np.ndarray | None:
    if arg is None:
        return None
    if isinstance(arg, str):
        values = data[arg]
    else:
        values = np.asarray(arg)
        if values.ndim != 1 or len(values) != len(data):
            raise DataError(
                f"{what} has shape {values.shape} but the data have {len(data)} rows; pass one "
                f"value per row (or the name of a column)"
            )
    try:
        return np.array(values, dtype=np.float64)  # a copy: the caller's array stays as it is
    except (TypeError, ValueError):
        raise DataError(f"{what} must be numeric") from None


def _response(expr: str, frame: pd.DataFrame, columns=None) -> np.ndarray:
    """columns: frame's columns already looked up, by name (build_frame's)."""
    col = (frame if columns is None else columns).get(expr)
    if col is not None:
        if pd.api.types.is_bool_dtype(col.dtype):
            raise DataError(
                f"response {expr!r} is boolean; a linear mixed model needs a numeric response. "
                "For a binary outcome use a generalized model, or cast it to float if you mean it."
            )
        if not pd.api.types.is_numeric_dtype(col.dtype):
            raise DataError(
                f"response {expr!r} is not numeric (dtype {col.dtype}); convert it with "
                "pd.to_numeric or choose a numeric column"
            )
        y = col.to_numpy(dtype=np.float64)  # read-only, never written
    else:
        y = evaluate_vector(expr, frame, "response")
    if not np.all(np.isfinite(y)):
        raise DataError(f"response {expr!r} has infinite values; remove or recode those rows")
    return y


def _term(rt, frame: pd.DataFrame, formula: str, columns=None) -> ReTerm:
    Zcols, cnames, spec = _model_columns(rt.expr, frame, formula, columns=columns)
    codes, labels, order = encode_groups(frame if columns is None else columns, rt.factors)
    return ReTerm(rt.label, cnames, codes, labels, order, Zcols, spec, tuple(rt.factors))


def _model_columns(
    expr: str, frame: pd.DataFrame, formula: str, contrasts=None, sparse_from: int | None = None,
    columns=None,
):  # fmt: skip
    """The model columns of a formula's right-hand side: (columns, names, spec).

    A plain sum of numeric columns (with or without intercept, the common case) is read
    straight from the data, without copies; anything else is R's model.matrix (design.py).
    columns: frame's columns already looked up, by name (build_frame's).
    """
    n = len(frame)
    source = frame if columns is None else columns
    simple = _plain_columns(expr, source) if not contrasts else None
    if simple is not None:
        intercept, names = simple
        cols = [source[c].to_numpy(dtype=np.float64) for c in names]
        _check_finite(cols, names)
        if intercept:
            cols.insert(0, np.broadcast_to(np.float64(1.0), (n,)))  # all ones, not allocated
        return cols, (["(Intercept)"] if intercept else []) + names, ("columns", intercept, names)
    cols, names, spec = build_design(expr, frame, formula, contrasts, sparse_from=sparse_from)
    _check_finite(cols, names)
    return cols, names, spec


def _sparse_columns(cols: list[np.ndarray]) -> SparseColumns:
    """The model columns as one CSC matrix: only their non-zeros are kept (indicator columns
    of a many-level factor have one per level), so the one pass costs n (non-zeros per
    row)^2 instead of n p^2.  (Plain numeric columns; design.py builds a wide model matrix
    sparse itself.)"""
    n = len(cols[0]) if cols else 0
    nz = [np.flatnonzero(np.asarray(c)) for c in cols]
    indptr = np.concatenate([[0], np.cumsum([len(i) for i in nz])]).astype(np.int64)
    indices = np.concatenate(nz) if nz else np.zeros(0, dtype=np.int64)
    data = np.concatenate([np.asarray(c)[i] for c, i in zip(cols, nz)]) if nz else np.zeros(0)
    return SparseColumns(sp.csc_matrix((data, indices, indptr), shape=(n, len(cols))))


def evaluate_columns(spec, data: pd.DataFrame) -> list[np.ndarray]:
    """The model columns that `spec` (from _model_columns) describes, on new data."""
    if isinstance(spec, tuple) and spec[0] == "columns":
        _, intercept, names = spec
        for c in names:
            if c not in data.columns:
                raise MissingColumnError(c, data.columns)
        cols = [data[c].to_numpy(dtype=np.float64, na_value=np.nan) for c in names]
        return ([np.broadcast_to(np.float64(1.0), (len(data),))] if intercept else []) + cols
    if isinstance(spec, Design):
        return spec.columns(data)
    try:  # a formulaic ModelSpec (a fit saved by lmmfast 0.x)
        M = np.asfortranarray(spec.get_model_matrix(data, na_action="ignore").to_numpy(float))
    except Exception as e:  # formulaic: a missing column, an unknown level, ...
        missing = [v for v in spec.required_variables if v not in data.columns]
        if missing:
            raise MissingColumnError(sorted(missing)[0], data.columns) from None
        if isinstance(e, DataError):
            raise
        raise DataError(f"cannot evaluate the model on the new data: {e}") from None
    return [M[:, j] for j in range(M.shape[1])]


def _plain_columns(expr: str, frame):
    """(intercept, column names) if expr is a sum of numeric columns and 0/1; else None.
    frame: a DataFrame, or its columns by name."""
    intercept, names = True, []
    for piece in (p.strip() for p in expr.split("+")):
        if piece in ("1",):
            continue
        if piece in ("0", "-1"):
            intercept = False
            continue
        if piece not in frame or not _NAME.match(piece):
            return None
        dtype = frame[piece].dtype
        if dtype.kind not in "iuf":  # bool, categorical, string: formulaic's coding
            return None
        if piece not in names:
            names.append(piece)
    return intercept, names


_NAME = re.compile(r"^[A-Za-z_.][A-Za-z0-9_.]*$")


def _check_finite(cols: list[np.ndarray], names: list[str]) -> None:
    if isinstance(cols, SparseColumns):  # a sparse design (design.py): its stored values
        bad = ~cols.all_finite()
    else:
        bad = [not np.isfinite(c).all() for c in cols]
    if any(bad):
        cols = [n for n, b in zip(names, bad) if b]
        raise DataError(
            f"infinite values in {', '.join(map(repr, cols))}; remove or recode those rows "
            "(missing values are dropped, infinite ones are not)"
        )
