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
from formulaic import Formula, model_matrix

from .._errors import DataError, MissingColumnError
from .._terms import ReTerm, check_term, encode_groups
from .formula import ParsedFormula
from .sparse_columns import SPARSE_COLUMNS, SparseColumns

_BRACKET = re.compile(r"\[(?:T\.)?([^\]]*)\]")


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
    fixed_spec: object  # formulaic ModelSpec of the fixed part, or the column names if simple

    @property
    def n(self) -> int:
        return len(self.y)

    @property
    def X(self) -> np.ndarray:
        """The (n, p) fixed-effects matrix as one array (a copy; for small data and tests)."""
        return np.column_stack([np.broadcast_to(x, x.shape) for x in self.Xcols])


def build_frame(parsed: ParsedFormula, data, weights=None, offset=None) -> ModelFrame:
    """Evaluate a parsed formula on `data` (a DataFrame or a mapping of columns)."""
    data = _as_frame(data)
    used = _used_columns(parsed, data, weights, offset)
    keep = np.ones(len(data), dtype=bool)
    for name in used:
        keep &= data[name].notna().to_numpy()
    w_arr = _vector_arg(weights, "weights", data)
    o_arr = _vector_arg(offset, "offset", data)
    for arr in (w_arr, o_arr):
        if arr is not None:
            keep &= ~np.isnan(arr)
    n_dropped = int(len(data) - keep.sum())
    frame = data.loc[keep, used] if n_dropped else data[used]
    if len(frame) == 0:
        raise DataError(
            f"no rows left: all {len(data)} rows have a missing value in "
            f"{', '.join(map(repr, used))}; check those columns"
        )
    y = _response(parsed.response, frame)
    Xcols, xnames, fixed_spec = _model_columns(parsed.fixed, frame, parsed.formula, sparse=True)
    n = len(frame)
    if w_arr is not None:
        w_arr = w_arr[keep]
        if np.any(~np.isfinite(w_arr)) or np.any(w_arr <= 0):
            raise DataError(
                "weights must be finite and positive; remove rows with zero weight and check "
                "for negative or infinite values"
            )
    off = np.zeros(n)
    has_offset = o_arr is not None or bool(parsed.offsets)
    if o_arr is not None:
        off += o_arr[keep]
    for expr in parsed.offsets:
        off += _evaluate(expr, frame)
    if not np.all(np.isfinite(off)):
        raise DataError("the offset has infinite values; check the offset column or expression")
    terms = [_term(rt, frame, parsed.formula) for rt in parsed.random]
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
        offset=off if has_offset else None,
        terms=terms,
        n_dropped=n_dropped,
        row_index=frame.index,
        fixed_spec=fixed_spec,
    )


def lme4_order(terms: list[ReTerm]) -> list[ReTerm]:
    """lme4's mkReTrms order: only if some term has more levels than the one before it,
    reorder by rev(order(nlevels)), i.e. decreasing levels with ties in reverse order."""
    nl = np.array([t.nlevels for t in terms])
    if not np.any(np.diff(nl) > 0):
        return terms
    return [terms[i] for i in np.argsort(nl, kind="stable")[::-1]]


def _as_frame(data) -> pd.DataFrame:
    if isinstance(data, pd.DataFrame):
        if data.columns.duplicated().any():
            dup = data.columns[data.columns.duplicated()].unique().tolist()
            raise DataError(f"the data have duplicate column names {dup}; rename them")
        return data
    if isinstance(data, dict):
        return pd.DataFrame(data, copy=False)  # the arrays themselves, not copies
    raise DataError(
        f"data must be a pandas DataFrame or a dict of columns, not {type(data).__name__}"
    )


def _used_columns(parsed: ParsedFormula, data: pd.DataFrame, weights, offset) -> list[str]:
    names: list[str] = []

    def add(found):
        for v in sorted(found, key=str):
            if v not in data.columns:
                raise MissingColumnError(v, data.columns)
            if v not in names:
                names.append(v)

    add(_variables(parsed.response, data))
    add(_variables(parsed.fixed, data))
    for expr in parsed.offsets:
        add(_variables(expr, data))
    for rt in parsed.random:
        add(_variables(rt.expr, data))
        add(rt.factors)
    for arg in (weights, offset):
        if isinstance(arg, str):
            add([arg])
    return names


def _variables(expr: str, data: pd.DataFrame) -> set[str]:
    if expr in data.columns:
        return {expr}
    try:
        found = Formula(expr).required_variables
    except Exception as e:  # formulaic's own parse errors
        from .._errors import FormulaError

        raise FormulaError(f"cannot parse {expr!r}: {e}") from None
    # formulaic leaves out the arguments of some transforms (center(x)): any identifier
    # of the expression that names a column is used too
    named = {w for w in _IDENT.findall(expr) if w in data.columns}
    calls = {m for m in re.findall(r"([A-Za-z_.][A-Za-z0-9_.]*)\s*\(", expr)} - set(data.columns)
    return {v for v in (str(x) for x in found) if v not in _KNOWN_FUNCTIONS | calls} | named


_IDENT = re.compile(r"[A-Za-z_.][A-Za-z0-9_.]*")


_KNOWN_FUNCTIONS = {"np", "numpy", "log", "exp", "sqrt", "abs", "center", "scale", "poly", "C"}


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


def _response(expr: str, frame: pd.DataFrame) -> np.ndarray:
    col = frame[expr] if expr in frame.columns else None
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
        y = _evaluate(expr, frame)
    if not np.all(np.isfinite(y)):
        raise DataError(f"response {expr!r} has infinite values; remove or recode those rows")
    return y


def _evaluate(expr: str, frame: pd.DataFrame) -> np.ndarray:
    mm = model_matrix("0 + " + expr, frame, na_action="raise")
    if mm.shape[1] != 1:
        raise DataError(f"{expr!r} must evaluate to one numeric column, not {mm.shape[1]}")
    return mm.to_numpy(dtype=np.float64)[:, 0].copy()


def _term(rt, frame: pd.DataFrame, formula: str) -> ReTerm:
    Zcols, cnames, spec = _model_columns(rt.expr, frame, formula)
    codes, labels, order = encode_groups(frame, rt.factors)
    return ReTerm(rt.label, cnames, codes, labels, order, Zcols, spec, tuple(rt.factors))


def _model_columns(expr: str, frame: pd.DataFrame, formula: str, sparse: bool = False):
    """The model columns of a formula's right-hand side: (columns, names, spec).

    A plain sum of numeric columns (with or without intercept, the common case) is read
    straight from the data, without copies; anything else goes through formulaic.  With
    `sparse` (the fixed part), a design of SPARSE_COLUMNS or more columns (factors with
    many levels) is built sparse and returned as SparseColumns.
    """
    n = len(frame)
    simple = _plain_columns(expr, frame)
    if simple is not None:
        intercept, names = simple
        cols = [frame[c].to_numpy(dtype=np.float64) for c in names]
        _check_finite(cols, names)
        if intercept:
            cols.insert(0, np.broadcast_to(np.float64(1.0), (n,)))  # all ones, not allocated
        return cols, (["(Intercept)"] if intercept else []) + names, ("columns", intercept, names)
    if sparse and _estimated_columns(expr, frame) >= SPARSE_COLUMNS:
        return _sparse_model_columns(expr, frame, formula)
    _check_design_memory(expr, frame)
    try:
        mm = model_matrix(expr, frame, na_action="raise")
    except Exception as e:  # formulaic: an unknown function, a bad transform argument, ...
        raise DataError(f"cannot evaluate {expr!r} on the data: {e}") from None
    M = np.asfortranarray(mm.to_numpy(dtype=np.float64))  # contiguous columns
    names = [_r_name(c, formula) for c in mm.columns]
    cols = [M[:, j] for j in range(M.shape[1])]
    _check_finite(cols, names)
    return cols, names, mm.model_spec


def _sparse_model_columns(expr: str, frame: pd.DataFrame, formula: str):
    _check_design_memory(expr, frame, sparse=True)
    try:
        mm = model_matrix(expr, frame, na_action="raise", output="sparse")
    except Exception as e:  # formulaic's errors, as in _model_columns
        raise DataError(f"cannot evaluate {expr!r} on the data: {e}") from None
    cols = SparseColumns(mm)
    names = [_r_name(c, formula) for c in mm.model_spec.column_names]
    _report_infinite(~cols.all_finite(), names)
    return cols, names, mm.model_spec


def evaluate_columns(spec, data: pd.DataFrame) -> list[np.ndarray]:
    """The model columns that `spec` (from _model_columns) describes, on new data."""
    if isinstance(spec, tuple) and spec[0] == "columns":
        _, intercept, names = spec
        for c in names:
            if c not in data.columns:
                raise MissingColumnError(c, data.columns)
        cols = [data[c].to_numpy(dtype=np.float64) for c in names]
        return ([np.broadcast_to(np.float64(1.0), (len(data),))] if intercept else []) + cols
    try:
        mm = spec.get_model_matrix(data, na_action="ignore")
        M = np.asfortranarray(mm.toarray() if sp.issparse(mm) else mm.to_numpy(float))
    except Exception as e:  # formulaic: a missing column, an unknown level, ...
        missing = [v for v in spec.required_variables if v not in data.columns]
        if missing:
            raise MissingColumnError(sorted(missing)[0], data.columns) from None
        raise DataError(f"cannot evaluate the model on the new data: {e}") from None
    return [M[:, j] for j in range(M.shape[1])]


def group_labels(data: pd.DataFrame, factors: tuple) -> np.ndarray:
    """The grouping factor's level labels on (new) data, as encode_groups labels them."""
    for f in factors:
        if f not in data.columns:
            raise MissingColumnError(f, data.columns)
    parts = [data[f].astype(str).to_numpy(dtype=object) for f in factors]
    out = parts[0]
    for p in parts[1:]:
        out = out + ":" + p
    return out


def _check_design_memory(expr: str, frame: pd.DataFrame, sparse: bool = False) -> None:
    """A categorical variable with many levels makes a dense n x levels matrix: estimate it
    (and formulaic's copy) before it is built.  Sparse: the dense p x p cross-products and
    factors (about four of them) instead of the n x p matrix."""
    from .._memory import check_allocation

    ncol = _estimated_columns(expr, frame)
    nbytes = 4 * 8 * ncol**2 if sparse else 3 * 8 * len(frame) * ncol
    check_allocation(
        nbytes, f"the model matrix of {expr!r} ({len(frame)} rows x ~{ncol} "
        "columns)", "A categorical variable with this many levels belongs in a random-effects "
        "term, e.g. (1 | variable), not in the fixed effects.",
    )  # fmt: skip


def _estimated_columns(expr: str, frame: pd.DataFrame) -> int:
    """Columns of expr's model matrix, roughly: 1 + levels of each categorical variable + 1
    per numeric one (interactions not counted)."""
    ncol = 1
    for v in _variables(expr, frame):
        col = frame[v]
        if not pd.api.types.is_numeric_dtype(col.dtype) or pd.api.types.is_bool_dtype(col.dtype):
            ncol += col.nunique()
        else:
            ncol += 1
    return ncol


def _plain_columns(expr: str, frame: pd.DataFrame):
    """(intercept, column names) if expr is a sum of numeric columns and 0/1; else None."""
    intercept, names = True, []
    for piece in (p.strip() for p in expr.split("+")):
        if piece in ("1",):
            continue
        if piece in ("0", "-1"):
            intercept = False
            continue
        if piece not in frame.columns or not _NAME.match(piece):
            return None
        dtype = frame[piece].dtype
        if dtype.kind not in "iuf":  # bool, categorical, string: formulaic's coding
            return None
        if piece not in names:
            names.append(piece)
    return intercept, names


_NAME = re.compile(r"^[A-Za-z_.][A-Za-z0-9_.]*$")


def _check_finite(cols: list[np.ndarray], names: list[str]) -> None:
    _report_infinite([not np.isfinite(c).all() for c in cols], names)


def _report_infinite(bad, names: list[str]) -> None:
    if any(bad):
        cols = [n for n, b in zip(names, bad) if b]
        raise DataError(
            f"infinite values in {', '.join(map(repr, cols))}; remove or recode those rows "
            "(missing values are dropped, infinite ones are not)"
        )


def _r_name(name: str, formula: str) -> str:
    """formulaic column name -> the name lme4 prints: Intercept -> (Intercept), f[T.b] -> fb."""
    if name == "Intercept":
        return "(Intercept)"
    name = _BRACKET.sub(r"\1", name).replace(" ** ", "^")
    if "factor(" in formula:  # the user wrote R's factor(x), which the parser made C(x)
        name = re.sub(r"(?<![A-Za-z0-9_.])C\(", "factor(", name)
    return name
