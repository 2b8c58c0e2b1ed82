"""R's model.matrix: the model columns of a formula's right-hand side, and how to rebuild
them on new data.

The terms come from rterms.py, the variables from rfunctions.py.  Each term's columns are
the products of its variables' columns, the first variable varying fastest, named
``a:b`` from the variables' column names: a numeric variable its name, a matrix variable
(``poly(x, 2)``) its name and column (``poly(x, 2)1``), a factor its name and level
(``recipeB``) or contrast column (``recipe1``, ``o.L``).  A character or logical variable is
a factor (levels ``FALSE``, ``TRUE``), as in R's model.frame.  Without an intercept, the
first factor of the first term holding one is coded by indicators, as R does.

``Design`` keeps all that the fit learnt (levels, poly() and scale() coefficients, the
coding) as plain data: ``columns(newdata)`` evaluates the same columns on new rows (a
missing value gives NaN, an unseen level a NewLevelsError), and ``to_json()`` stores it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._errors import ArgumentError, DataError
from .._memory import check_allocation
from .contrasts import contrast_matrix, contrast_name
from .rexpr import parse
from .rfunctions import Env, data_symbols, evaluate
from .rterms import Terms, r_terms
from .rvalues import Char, Factor, Logical, Matrix, as_factor
from .sparse_columns import RowSparse, SparseColumns, stack_columns


@dataclass(frozen=True)
class DesignTerm:
    """A term of a formula's right-hand side as R's terms() and model.matrix see it."""

    label: str  # R's term label: "recipe", "recipe:temp", "factor(x)"
    variables: tuple[str, ...]  # its variables' labels, in variable (R's) order
    kinds: tuple[str, ...]  # each variable's kind: "numeric", "matrix" or "factor"
    by_contrasts: tuple[bool, ...]  # terms()'s "factors" attribute: 1 (True) or 2 (False)
    columns: tuple[int, ...]  # its columns of the model matrix (positions in Design.names)


@dataclass(eq=False)
class Design:
    """How to compute a formula's model columns (the fitted state included)."""

    rhs: str  # the right-hand side, R's syntax ("recipe * temp", "0 + Days")
    kinds: dict  # variable label -> {"kind": "numeric" | "matrix" | "factor", ...}
    state: dict  # stateful functions' state, keyed by deparsed call (see rfunctions)
    names: list[str] = field(default_factory=list)  # the column names at fitting time
    sparse_from: int | None = None  # columns() is sparse from this many columns (None: never)

    @property
    def required_variables(self) -> set[str]:
        terms = r_terms(self.rhs)
        return {s for v in terms.variables for s in data_symbols(v)}

    def columns(self, data: pd.DataFrame, sparse: bool | None = None):
        """The model columns on (new) data: NaN for rows with a missing value.  A list of
        (n,) columns, or SparseColumns when sparse (None: when the matrix is wide)."""
        terms = r_terms(self.rhs)
        env = Env(data, self.state, fitting=False)
        values = [
            _variable(v, lab, env, self.kinds[lab]) for v, lab in zip(terms.variables, terms.labels)
        ]  # fmt: skip
        if sparse is None:
            sparse = _is_wide(terms, values, self.kinds, self.sparse_from)
        cols, _ = _assemble(terms, values, self.kinds, len(data), sparse)
        return cols

    def terms(self) -> tuple[bool, list[DesignTerm]]:
        """(has intercept, the terms in R's order): each with R's label, its variables, and
        its columns of the model matrix; from the stored state alone (no data)."""
        terms = r_terms(self.rhs)
        pos = 1 if terms.intercept else 0
        out = []
        for term, attr, code in zip(
            terms.terms, terms.contrast_codes(), _model_codes(terms, self.kinds)
        ):
            order = sorted(term)
            labels = tuple(terms.labels[v] for v in order)
            width = int(np.prod([self._width(lab, code[v]) for v, lab in zip(order, labels)]))
            out.append(DesignTerm(
                terms.term_label(term), labels,
                tuple(self.kinds[lab]["kind"] for lab in labels),
                tuple(attr[v] for v in order), tuple(range(pos, pos + width)),
            ))  # fmt: skip
            pos += width
        return terms.intercept, out

    def levels(self, label: str) -> list[str]:
        """The levels a factor variable had in the fit."""
        return list(self.state["var:" + label]["levels"])

    def _width(self, label: str, by_contrasts: bool) -> int:
        kind = self.kinds[label]
        if kind["kind"] == "factor":
            return len(self.levels(label)) - bool(by_contrasts)
        return kind["ncol"] if kind["kind"] == "matrix" else 1

    def with_contrasts(self, name: str) -> Design:
        """The same design with every factor coded by the contrasts `name` ("treatment")."""
        kinds = {
            lab: {**k, "contrast": name} if k["kind"] == "factor" else k
            for lab, k in self.kinds.items()
        }  # fmt: skip
        return Design(self.rhs, kinds, self.state, [], self.sparse_from)

    def columns_of(self, values: dict) -> tuple[list[np.ndarray], list[str]]:
        """(model columns, names) from the variables' values rather than from data: label
        -> ndarray (n,), Matrix or Factor (codes into the fit's levels), e.g. on a grid."""
        terms = r_terms(self.rhs)
        vals = [values[lab] for lab in terms.labels]
        return _assemble(terms, vals, self.kinds, _length(vals[0]) if vals else 1)

    def overparameterized(self, values: dict) -> tuple[list[np.ndarray], list[str]]:
        """lmerTest's rank-deficient design (get_rdX) from the variables' values: the
        intercept, then per term model.matrix(~ 0 + term), every factor by indicators."""
        terms = r_terms(self.rhs)
        vals = [values[lab] for lab in terms.labels]
        n = _length(vals[0]) if vals else 1
        cols = [np.ones(n)] if terms.intercept else []
        names = ["(Intercept)"] if terms.intercept else []
        for term in terms.terms:
            tcols, tnames = _term_columns(terms, term, vals, self.kinds, dict.fromkeys(term, False))
            cols += tcols
            names += tnames
        return cols, names

    @classmethod
    def of_columns(cls, intercept: bool, names: list[str]) -> Design:
        """The Design of a plain sum of numeric data columns (frame.py's fast path)."""
        rhs = " + ".join(["1" if intercept else "0", *names])
        kinds = {n: {"kind": "numeric"} for n in names}
        return cls(rhs, kinds, {}, (["(Intercept)"] if intercept else []) + list(names))

    def to_json(self) -> dict:
        out = {"kind": "r", "rhs": self.rhs, "kinds": self.kinds, "state": self.state,
               "names": self.names}  # fmt: skip
        if self.sparse_from is not None:
            out["sparse_from"] = self.sparse_from
        return out

    @classmethod
    def from_json(cls, d: dict) -> Design:
        return cls(d["rhs"], d["kinds"], d["state"], d["names"], d.get("sparse_from"))


def build_design(
    rhs: str, frame: pd.DataFrame, formula: str, contrasts: dict | None = None,
    sparse: bool | None = None, sparse_from: int | None = None,
):  # fmt: skip
    """(columns, names, Design) of the right-hand side `rhs` on the fitting rows.

    The columns are a list of (n,) arrays, or SparseColumns if sparse (None: if there are
    sparse_from columns or more, as with a many-level factor; None: never), built from the
    factors' codings without a dense n x p intermediate.  The Design keeps sparse_from for
    new data."""
    terms = r_terms(rhs, formula)
    env = Env(frame, {}, fitting=True)
    values = [_variable(v, lab, env, None) for v, lab in zip(terms.variables, terms.labels)]
    contrasts = dict(contrasts or {})
    kinds = {}
    for lab, v in zip(terms.labels, values):
        if isinstance(v, Factor):
            chosen = contrasts.pop(lab, None)
            name = (
                contrast_name(chosen, lab) if chosen is not None
                else v.contrast or ("poly" if v.ordered else "treatment")
            )  # fmt: skip
            kinds[lab] = {"kind": "factor", "contrast": name}
        elif isinstance(v, Matrix):
            kinds[lab] = {"kind": "matrix", "colnames": v.colnames, "ncol": v.values.shape[1]}
        else:
            kinds[lab] = {"kind": "numeric"}
    if contrasts:
        factors = [lab for lab, k in kinds.items() if k["kind"] == "factor"]
        verb = "is" if len(contrasts) == 1 else "are"
        raise ArgumentError(
            f"contrasts given for {sorted(contrasts)}, which {verb} not a factor of the fixed "
            f"effects; the factors are {factors}"
        )
    if sparse is None:
        sparse = _is_wide(terms, values, kinds, sparse_from)
    if not sparse:  # the sparse build estimates its own size, from the non-zeros
        _check_size(terms, values, len(frame), rhs)
    cols, names = _assemble(terms, values, kinds, len(frame), sparse)
    return cols, names, Design(rhs, kinds, env.state, names, sparse_from)


def evaluate_vector(expr: str, frame: pd.DataFrame, what: str) -> np.ndarray:
    """One numeric column from an R expression (a response such as incidence/size, an offset)."""
    v = evaluate(parse(expr), Env(frame))
    if isinstance(v, Matrix):
        if v.values.shape[1] != 1:
            raise DataError(
                f"{what} {expr!r} must evaluate to one numeric column, not {v.values.shape[1]}"
            )
        v = v.values[:, 0]
    if isinstance(v, Logical):
        raise DataError(
            f"{what} {expr!r} is logical; a linear mixed model needs a numeric {what}. Use "
            f"as.numeric({expr}) if you mean 0/1"
        )
    if isinstance(v, (Factor, Char)):
        raise DataError(f"{what} {expr!r} is not numeric (a factor or character vector)")
    return np.array(np.broadcast_to(np.asarray(v, dtype=np.float64), (len(frame),)))


def _variable(node, label: str, env: Env, kind: dict | None):
    """A model-frame variable: ndarray (n,), Matrix (n, k) or Factor."""
    v = evaluate(node, env)
    n = env.n
    as_f = kind["kind"] == "factor" if kind else isinstance(v, (Factor, Char, Logical))
    if as_f:
        if not isinstance(v, (Factor, Char, Logical)):
            v = np.broadcast_to(np.asarray(v, dtype=np.float64), (n,))
        return as_factor(_broadcast(v, n), "var:" + label, env.state, env.fitting, label)
    if isinstance(v, (Factor, Char, Logical)):
        raise DataError(
            f"{label!r} was numeric in the fit but is categorical in the new data; give it the "
            "type it had"
        )
    if isinstance(v, Matrix):
        out = v
    else:
        out = np.ascontiguousarray(np.broadcast_to(np.asarray(v, dtype=np.float64), (n,)))
    if env.fitting:
        vals = out.values if isinstance(out, Matrix) else out
        bad = int(np.isnan(vals).reshape(n, -1).any(axis=1).sum())
        if bad:
            raise DataError(
                f"{label!r} evaluates to NaN on {bad} row(s) of the data (for example the log "
                "or square root of a negative number); R would drop those rows, lmmfast does "
                "not guess: remove them, or change the expression"
            )
    return out


def _broadcast(v, n: int):
    if isinstance(v, Logical) and v.v.shape != (n,):
        return Logical(np.broadcast_to(v.v, (n,)))
    if isinstance(v, Char) and v.v.shape != (n,):
        return Char(np.broadcast_to(v.v, (n,)).copy())
    return v


def _check_size(terms: Terms, values, n: int, rhs: str) -> None:
    """A categorical variable with many levels makes a dense n x levels matrix: estimate it
    (and its copies) before it is built."""

    def width(v):
        if isinstance(v, Factor):
            return len(v.levels)
        return v.values.shape[1] if isinstance(v, Matrix) else 1

    ncol = 1 + sum(int(np.prod([width(values[i]) for i in t])) for t in terms.terms)
    check_allocation(
        3 * 8 * n * ncol, f"the model matrix of {rhs!r} ({n} rows x ~{ncol} columns)",
        _MANY_LEVELS,
    )  # fmt: skip


_MANY_LEVELS = (
    "A categorical variable with this many levels belongs in a random-effects term, e.g. "
    "(1 | variable), not in the fixed effects."
)


def _model_codes(terms: Terms, kinds: dict) -> list[dict[int, bool]]:
    """Per term: variable -> coded by contrasts (True) or indicators, as model.matrix codes
    it: R's TermCode, and without an intercept the first factor of the first term holding
    one by indicators."""
    codes = terms.contrast_codes()
    if not terms.intercept:
        for term, code in zip(terms.terms, codes):
            first = [v for v in sorted(term) if kinds[terms.labels[v]]["kind"] == "factor"]
            if first:
                code[first[0]] = False
                break
    return codes


def _assemble(terms: Terms, values, kinds: dict, n: int, sparse: bool = False):
    """(model columns, names): a list of dense (n,) columns, or SparseColumns if sparse."""
    if sparse:
        return _assemble_sparse(terms, values, kinds, n)
    cols = [np.ones(n)] if terms.intercept else []
    names = ["(Intercept)"] if terms.intercept else []
    for term, code in zip(terms.terms, _model_codes(terms, kinds)):
        tcols, tnames = _term_columns(terms, term, values, kinds, code)
        cols += tcols
        names += tnames
    return cols, names


def _is_wide(terms: Terms, values, kinds: dict, sparse_from: int | None) -> bool:
    """Whether the model matrix has sparse_from columns or more: then it is built (and
    kept) sparse, as a many-level factor's indicator columns are mostly zeros."""
    if sparse_from is None:
        return False
    ncol = int(terms.intercept)
    for term, code in zip(terms.terms, _model_codes(terms, kinds)):
        width = 1
        for v in term:
            value, kind = values[v], kinds[terms.labels[v]]
            if kind["kind"] == "factor":
                width *= len(value.levels) - bool(code[v])
            elif kind["kind"] == "matrix":
                width *= value.values.shape[1]
        ncol += width
    return ncol >= sparse_from


def _assemble_sparse(terms: Terms, values, kinds: dict, n: int):
    """The columns _assemble builds, as SparseColumns made from the variables' non-zeros
    row by row (peak memory: the non-zeros, not n x p).

    A row where a variable is missing or infinite is built dense (0 * NaN is NaN there, a
    structural zero would say 0), then put in place: the same matrix either way."""
    bad = np.zeros(n, dtype=bool)
    for v in values:
        bad |= _nonfinite(v, n)
    if not bad.any():
        return _sparse_rows(terms, values, kinds, n)
    good, rest = np.flatnonzero(~bad), np.flatnonzero(bad)
    X, names = _sparse_rows(terms, [_rows(v, good) for v in values], kinds, len(good))
    dense, _ = _assemble(terms, [_rows(v, rest) for v in values], kinds, len(rest))
    D = sp.csr_matrix(np.column_stack(dense)) if dense else sp.csr_matrix((len(rest), 0))
    M = sp.vstack([X.matrix, D]).tocoo()
    order = np.concatenate([good, rest])
    M = sp.coo_matrix((M.data, (order[M.row], M.col)), shape=(n, M.shape[1]))
    return SparseColumns(M.tocsc()), names


def _sparse_rows(terms: Terms, values, kinds: dict, n: int):
    """_assemble_sparse on rows where every value is finite: each term the row-wise product
    of its variables' RowSparse, the first variable varying fastest (_term_columns' order
    and products), its size estimated before it is built."""
    plan, names = [], ["(Intercept)"] if terms.intercept else []
    nnz = n * int(terms.intercept)
    for term, code in zip(terms.terms, _model_codes(terms, kinds)):
        parts, per, tnames = [], np.ones(n, dtype=np.int64), [""]
        for v in sorted(term):
            label = terms.labels[v]
            part, vnames, count = _variable_plan(values[v], label, kinds[label], code[v], n)
            parts.append(part)
            per = per * count
            tnames = [f"{m}:{vn}" if m else vn for vn in vnames for m in tnames]
        plan.append(parts)
        names += tnames
        nnz += int(per.sum())
    p = len(names)  # the fit then holds a few dense p x p blocks (X'WX, its factors)
    check_allocation(
        48 * nnz + 64 * p * p,
        f"the sparse model matrix ({n} rows x {p} columns, {nnz} non-zeros) and the fit's "
        f"{p} x {p} fixed-effects blocks", _MANY_LEVELS,
    )  # fmt: skip
    blocks = [RowSparse.dense([np.ones(n)], n)] if terms.intercept else []
    for parts in plan:
        rows = parts[0]()
        for part in parts[1:]:
            rows = rows.kron(part())
        blocks.append(rows)
    return stack_columns(blocks, n), names


def _variable_plan(value, label: str, kind: dict, by_contrasts: bool, n: int):
    """(a function making the variable's RowSparse, its column names, its entries per row)."""
    if kind["kind"] == "factor":
        C, names = _sparse_coding(value.levels, label, kind, by_contrasts)
        per_level = np.append(np.diff(C.indptr), C.shape[1])  # code -1: the NaN row
        return (lambda: RowSparse.coded(value.codes, C)), names, per_level[value.codes]
    cols, names = _variable_columns(value, label, kind, by_contrasts)
    return (lambda: RowSparse.dense(cols, n)), names, len(cols)


def _sparse_coding(levels: list[str], label: str, kind: dict, by_contrasts: bool):
    """_coding as a sparse matrix, without its dense levels x levels form where the coding
    is mostly zeros (indicators, treatment, SAS and sum contrasts): the same values."""
    k = len(levels)
    name = kind["contrast"] if by_contrasts else "indicators"
    if name not in ("indicators", "treatment", "SAS", "sum") or k < 2:
        C, names = _coding(levels, label, kind, by_contrasts)
        return sp.csr_matrix(C), names
    eye = sp.identity(k, format="csc")
    if name == "indicators":
        C, cn = eye, list(levels)
    elif name == "treatment":
        C, cn = eye[:, 1:], list(levels[1:])
    elif name == "SAS":
        C, cn = eye[:, :-1], list(levels[:-1])
    else:  # sum: the identity, and the last level -1 in every column
        C = sp.vstack([sp.identity(k - 1), -np.ones((1, k - 1))])
        cn = [str(j) for j in range(1, k)]
    return sp.csr_matrix(C), [label + c for c in cn]


def _nonfinite(value, n: int) -> np.ndarray:
    if isinstance(value, Factor):
        return value.codes < 0
    if isinstance(value, Matrix):
        return ~np.isfinite(value.values).reshape(n, -1).all(axis=1)
    return ~np.isfinite(np.broadcast_to(value, (n,)))


def _rows(value, idx: np.ndarray):
    """A variable's value on rows `idx`."""
    if isinstance(value, Factor):
        return Factor(value.codes[idx], value.levels, value.ordered, value.contrast)
    if isinstance(value, Matrix):
        return Matrix(value.values[idx], value.colnames)
    return np.broadcast_to(value, (len(value),))[idx]


def _term_columns(terms: Terms, term, values, kinds: dict, code: dict):
    """A term's columns: the products of its variables' columns, the first fastest."""
    tcols, tnames = [None], [""]
    for v in sorted(term):
        label = terms.labels[v]
        vcols, vnames = _variable_columns(values[v], label, kinds[label], code[v])
        tcols = [x if c is None else c * x for x in vcols for c in tcols]
        tnames = [f"{m}:{vn}" if m else vn for vn in vnames for m in tnames]
    return [np.ascontiguousarray(c) for c in tcols], tnames


def _length(value) -> int:
    if isinstance(value, Factor):
        return len(value.codes)
    return len(value.values) if isinstance(value, Matrix) else len(value)


def _variable_columns(value, label: str, kind: dict, by_contrasts: bool):
    if kind["kind"] == "numeric":
        return [value], [label]
    if kind["kind"] == "matrix":
        k = value.values.shape[1]
        cn = kind.get("colnames")
        if k == 1 and not cn:
            names = [label]
        else:
            names = [label + (cn[j] if cn else str(j + 1)) for j in range(k)]
        return [value.values[:, j] for j in range(k)], names
    C, names = _coding(value.levels, label, kind, by_contrasts)
    C = np.vstack([C, np.full((1, C.shape[1]), np.nan)])  # code -1 (missing): the NaN row
    cols = [np.take(np.ascontiguousarray(C[:, j]), value.codes) for j in range(C.shape[1])]
    return cols, names


def _coding(levels: list[str], label: str, kind: dict, by_contrasts: bool):
    """(levels x columns coding matrix, column names) of a factor: its contrasts, or
    indicators."""
    if by_contrasts:
        if len(levels) < 2:
            raise DataError(
                f"the factor {label!r} has only one level ({levels[0] if levels else 'none'}) "
                "in the data; contrasts need at least 2. Remove it from the formula"
            )
        C, cn = contrast_matrix(kind["contrast"], levels)
    else:
        C, cn = np.eye(len(levels)), list(levels)
    return C, [label + c for c in cn]


def variables_of(rhs: str, formula: str | None = None) -> list[str]:
    """The data columns a right-hand side reads (symbols of its variables)."""
    return list(_variables_of(rhs, formula))


@lru_cache(maxsize=256)
def _variables_of(rhs: str, formula: str | None) -> tuple[str, ...]:
    """variables_of, once per text (errors are not cached)."""
    terms = r_terms(rhs, formula)
    out: list[str] = []
    for v in terms.variables:
        for s in data_symbols(v):
            if s not in out:
                out.append(s)
    return tuple(out)
