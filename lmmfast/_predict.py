"""predict(): X beta + Z b on the fit's rows or on new data, vectorized over rows."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ._errors import DataError, FormulaError, MissingColumnError, NeedsDataError, NewLevelsError
from ._sources.formula import parse_formula
from ._sources.frame import _as_frame, evaluate_columns
from ._sources.rexpr import parse
from ._sources.rfunctions import Env, evaluate
from ._sources.sparse_columns import SparseColumns

_NONE = {"~0", "~ 0", "0", "NA", "~NA", "~ NA", "~-1", "~ -1"}


def predict(fit, newdata, re_form, allow_new_levels: bool) -> pd.Series:
    use = _selected_terms(fit, re_form)
    if newdata is None:
        zeros = [t.b if k in use else np.zeros_like(t.b) for k, t in enumerate(fit.terms)]
        if len(use) == len(fit.terms):
            return fit.fitted()
        if not use:
            return pd.Series(fit.fitted_marginal, index=fit.row_index, name="predicted")
        if fit._rows is None:
            raise NeedsDataError(
                "predicting the fitted rows with re_form needs the rows: pass newdata=<the data>"
            )
        # b in R's level order; the row pass indexes levels in internal order
        internal = [np.empty_like(z) for z in zeros]
        for t, z, out in zip(fit.terms, zeros, internal):
            out[t.order] = z
        pred = fit._rows.fitted(fit._keep, fit.beta, internal, fit._offset)
        return pd.Series(pred, index=fit.row_index, name="predicted")
    data = _as_frame(newdata)
    X = evaluate_columns(fit._fixed_spec, data)
    if isinstance(X, SparseColumns):  # a wide design (many-level factors): one sparse product
        pred = X.matrix[:, fit._keep] @ np.asarray(fit.beta, dtype=np.float64)
    else:
        pred = np.zeros(len(data))
        for col, b in zip((X[j] for j in fit._keep), fit.beta):
            pred += col * b
    pred += _offset(fit, data)
    for k in use:
        t = fit.terms[k]
        idx, missing, labels = _group_index(data, t.factors, t.levels)
        new = (idx < 0) & ~missing
        if new.any() and not allow_new_levels:
            unseen = pd.unique(labels(new))
            shown = ", ".join(map(repr, unseen[:5])) + (" ..." if len(unseen) > 5 else "")
            raise NewLevelsError(
                f"newdata has {len(unseen)} level(s) of {t.group!r} not in the fit: {shown}; "
                "pass allow_new_levels=True to predict them at the population level"
            )
        Z = evaluate_columns(t.spec, data)
        safe = np.where(idx < 0, 0, idx)
        for a, z in enumerate(Z):
            pred += np.where(idx < 0, 0.0, z * t.b[safe, a])
        pred[missing] = np.nan
    return pd.Series(pred, index=data.index, name="predicted")


def _group_index(data: pd.DataFrame, factors: tuple, levels):
    """(index of each row's level in `levels`, -1 if new or missing; missing mask; a function
    giving the labels of given rows), as labelling every row 'v1:v2' with str() would give,
    but hashing the rows once and formatting only their distinct values."""
    for f in factors:
        if f not in data.columns:
            raise MissingColumnError(f, data.columns)
    key = np.zeros(len(data), dtype=np.int64)
    parts = []
    for f in factors:
        codes, uniq = pd.factorize(data[f])
        parts.append((pd.Index(uniq).astype(str).to_numpy(dtype=object), len(uniq) + 1))
        key = key * (len(uniq) + 1) + (codes + 1)  # 0: missing
    rows, combos = pd.factorize(key)
    combos = np.asarray(combos)
    comp = []
    for _, base in reversed(parts):
        comp.append(combos % base - 1)
        combos = combos // base
    comp.reverse()
    missing_u = np.zeros(len(comp[0]), dtype=bool)
    for c in comp:
        missing_u |= c < 0
    labels_u = None
    for (names, _), c in zip(parts, comp):
        lab = np.append(names, "nan")[c]
        labels_u = lab if labels_u is None else labels_u + ":" + lab
    idx_u = pd.Index(levels).get_indexer(labels_u)
    idx_u[missing_u] = -1
    return idx_u[rows], missing_u[rows], lambda which: labels_u[rows[which]]


def _selected_terms(fit, re_form) -> list[int]:
    if re_form is None:
        return list(range(len(fit.terms)))
    if (isinstance(re_form, float) and np.isnan(re_form)) or str(re_form).strip() in _NONE:
        return []
    text = str(re_form).strip()
    if not text.startswith("~"):
        raise FormulaError(f"re_form must be a one-sided formula such as '~(1 | g)', not {text!r}")
    wanted = parse_formula("y " + text).random
    out = []
    for rt in wanted:
        names = _column_names(rt.expr)
        hits = [
            k for k, t in enumerate(fit.terms)
            if t.group == rt.label and (names is None or t.cnames == names)
        ]  # fmt: skip
        if not hits:
            raise FormulaError(
                f"re_form names ({rt.expr} | {rt.label}), which is not a random-effects term "
                f"of the model; its terms are "
                + ", ".join(f"({' + '.join(t.cnames)} | {t.group})" for t in fit.terms)
            )
        out += [k for k in hits if k not in out]
    return sorted(out)


def _column_names(expr: str):
    """The column names of a plain term expression ('1', 'x', '0 + x', '1 + x'), else None."""
    pieces = [p.strip() for p in expr.split("+")]
    intercept = "0" not in pieces and "-1" not in pieces
    names = [p for p in pieces if p not in ("0", "1", "-1")]
    if not all(n.replace("_", "").replace(".", "").isalnum() for n in names):
        return None
    return (["(Intercept)"] if intercept else []) + names


def _offset(fit, data: pd.DataFrame) -> np.ndarray:
    off = np.zeros(len(data))
    if fit.offset_name is not None:
        if fit.offset_name == "(array)":
            raise DataError(
                "the model was fitted with an offset given as an array; give it as a column "
                "name (offset='col') so that it can be read from new data"
            )
        off += data[fit.offset_name].to_numpy(dtype=np.float64)
    for expr in parse_formula(fit.formula).offsets:
        off += evaluate(parse(expr), Env(data, fitting=False))
    return off
