"""R's vector types as a formula's variables take them: numeric, logical, character, factor, matrix.

The evaluator (rfunctions.py) computes on these; the design (design.py) turns them into
model columns.  Missing values: NaN in numeric and logical vectors, None in character
vectors, code -1 in factors.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .._errors import NewLevelsError
from .rexpr import format_number


class Logical:
    """A logical vector: 0.0 / 1.0, NaN for NA."""

    def __init__(self, v):
        self.v = np.asarray(v, dtype=np.float64)


class Char:
    """A character vector: str, None for NA."""

    def __init__(self, v):
        self.v = np.asarray(v, dtype=object)


class Factor:
    """A factor: integer codes into `levels` (-1 for NA); `contrast` set by C(f, ...)."""

    def __init__(self, codes, levels, ordered=False, contrast=None):
        self.codes = np.asarray(codes, dtype=np.int64)
        self.levels = list(levels)
        self.ordered = ordered
        self.contrast = contrast


class Matrix:
    """A numeric matrix variable (poly(), scale()): columns named var + colname."""

    def __init__(self, values, colnames=None):
        self.values = np.asarray(values, dtype=np.float64)
        self.colnames = colnames


def from_column(col: pd.Series):
    """A data column as R's model.frame sees it."""
    dtype = col.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        cats = [_label(c) for c in dtype.categories]
        return Factor(col.cat.codes.to_numpy(), cats, bool(dtype.ordered))
    if pd.api.types.is_bool_dtype(dtype):
        return Logical(col.to_numpy(dtype=np.float64, na_value=np.nan))
    if pd.api.types.is_numeric_dtype(dtype):
        return col.to_numpy(dtype=np.float64, na_value=np.nan)
    values = col.to_numpy(dtype=object)
    na = pd.isna(values)
    kind = pd.api.types.infer_dtype(values, skipna=True)  # objects with None: what they hold
    if kind in ("boolean", "integer", "floating", "mixed-integer-float", "decimal"):
        out = np.full(len(values), np.nan)
        out[~na] = values[~na].astype(np.float64)
        return Logical(out) if kind == "boolean" else out
    if kind == "string":
        out = values.copy()
        out[na] = None
        return Char(out)
    out = np.array([None if m else str(v) for v, m in zip(values, na)], dtype=object)
    return Char(out)


def _label(v) -> str:
    if isinstance(v, (bool, np.bool_)):
        return "TRUE" if v else "FALSE"
    if isinstance(v, (float, np.floating)):
        return format_number(float(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    return str(v)


_PUNCTUATION = " _-,;:!?.'\"()[]{}@*/\\&#%`^+<=>|~$"  # ICU's root order of ASCII symbols


def collation_key(s: str):
    """An approximation of R's (ICU) string order: symbols (in ICU's order) < digits <
    letters, letters compared ignoring case first, lower case before upper case on ties."""
    primary = tuple(
        (1, c) if c.isdigit() else (2, c.lower()) if c.isalpha()
        else (0, chr(_PUNCTUATION.find(c) % 128) if c in _PUNCTUATION else c)
        for c in s
    )  # fmt: skip
    return primary, tuple(c.isupper() for c in s)


def as_factor(value, key: str, state: dict, fitting: bool, what: str) -> Factor:
    """factor(value) as R's model.frame (levels observed in the fit, in R's order); on new
    data the fit's levels, and a NewLevelsError naming `what` for a level it has not seen."""
    labels, na, natural = _labels(value)
    if fitting:
        seen = set(labels[~na].tolist())
        levels = [lv for lv in natural if lv in seen]
        ordered = isinstance(value, Factor) and value.ordered
        contrast = value.contrast if isinstance(value, Factor) else None
        state[key] = {"levels": levels, "ordered": ordered, "contrast": contrast}
    info = state[key]
    levels = info["levels"]
    index = pd.Index(levels).get_indexer(labels)
    unseen = (index < 0) & ~na
    if unseen.any():
        new = pd.unique(labels[unseen])
        shown = ", ".join(map(repr, new[:5])) + (" ..." if len(new) > 5 else "")
        raise NewLevelsError(
            f"newdata has {len(new)} level(s) of the fixed-effect factor {what!r} that the fit "
            f"has not seen: {shown}; its levels are {levels[:10]}"
            + (" ..." if len(levels) > 10 else "")
            + ". A model has no coefficient for a new level: map it to a known one, or drop "
            "those rows"
        )
    index[na] = -1
    return Factor(index, levels, info["ordered"], info["contrast"])


def _labels(value):
    """(labels per row as strings, NA mask, unique labels in R's level order)."""
    if isinstance(value, Factor):
        lv = np.array(value.levels + [""], dtype=object)
        labels = lv[value.codes]
        return labels, value.codes < 0, list(value.levels)
    if isinstance(value, Logical):
        na = np.isnan(value.v)
        labels = np.where(value.v == 1, "TRUE", "FALSE").astype(object)
        return labels, na, ["FALSE", "TRUE"]
    if isinstance(value, Char):
        na = pd.isna(value.v)
        labels = np.where(na, "", value.v).astype(object)
        uniq = sorted({s for s in labels[~na]}, key=collation_key)
        return labels, na, uniq
    v = np.asarray(value, dtype=np.float64)
    na = np.isnan(v)
    uniq, inverse = np.unique(v[~na], return_inverse=True)
    names = np.array([format_number(float(x)) for x in uniq] + [""], dtype=object)
    labels = np.full(len(v), "", dtype=object)
    labels[~na] = names[inverse]
    return labels, na, names[:-1].tolist()
