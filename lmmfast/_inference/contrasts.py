"""lmerTest's hypothesis matrices for the per-term F tests of anova(fit, type = 1 | 2 | 3).

The fixed-effects terms are read from the model spec (formulaic's, or the plain-column
spec): a term's label as R writes it, its variables, which of them are numeric, and the
columns of X it owns.  Then, as lmerTest 3.1:

* type 1 (get_contrasts_type1): rows of t(doolittle(X'X)$L), the sequential hypotheses;
* type 2 (get_contrasts_type2_unfolded): terms contained in no other term get the marginal
  hypothesis (the rows of the identity for their columns); the others the Doolittle rows of
  X'X with the term and the terms containing it moved last;
* type 3 (get_contrasts_type3 / extract_contrasts_type3): the term's overparameterized
  columns (all level combinations, rdX) expressed in X's columns, L = t(ginv(X) rdX), each
  term's columns orthogonalized to those of the terms containing it (highest order first).
  It depends on the column space only, so on no contrast coding.  X and rdX are evaluated
  on a grid of every level combination (numeric variables drawn at random): the identity
  X B = rdX is algebraic, so B is that of the data whenever the data have every cell.

A term contains another (lmerTest's term_contain) if it has all its variables and more,
with the same numeric variables.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .._errors import ArgumentError
from .._sources.frame import _r_name, evaluate_columns

MAX_GRID = 200_000  # rows of the type-3 grid (level combinations x draws)


@dataclass(frozen=True)
class FixedTerm:
    """A term of the fixed-effects formula."""

    label: str  # as R writes it: "recipe", "recipe:temp", "factor(x)"
    factors: tuple[str, ...]  # formulaic factor expressions, in the term's order
    numeric: tuple[bool, ...]  # which factors are numeric
    cols: tuple[int, ...]  # columns of X (the kept ones, fit.xnames order)

    @property
    def order(self) -> int:
        return len(self.factors)


def fixed_terms(fit) -> tuple[bool, list[FixedTerm]]:
    """(has intercept, terms) of the fit's fixed-effects formula, in R's term order."""
    return _terms_of(fit._fixed_spec, fit.formula, fit.xnames)


def _terms_of(spec, formula: str, xnames) -> tuple[bool, list[FixedTerm]]:
    index = {name: j for j, name in enumerate(xnames)}
    if isinstance(spec, tuple):  # plain numeric columns
        _, intercept, names = spec
        terms = [FixedTerm(n, (n,), (True,), (index[n],)) for n in names if n in index]
        return bool(intercept) and "(Intercept)" in index, terms
    intercept, terms = False, []
    for st in spec.structure:
        factors = tuple(str(f.expr) for f in st.term.factors)
        cols = tuple(index[c] for c in (_r_name(c, formula) for c in st.columns) if c in index)
        if factors in ((), ("1",)):
            intercept = bool(cols)
            continue
        numeric = tuple(_kind(spec, f) != "categorical" for f in factors)
        terms.append(FixedTerm(_r_name(str(st.term), formula), factors, numeric, cols))
    return intercept, terms


def _kind(spec, factor: str) -> str:
    state = spec.encoder_state.get(factor)
    if state is None:
        return "numerical"
    kind = state[0]
    return str(getattr(kind, "value", kind)).lower()


def containment(terms: list[FixedTerm]) -> dict[str, list[str]]:
    """For each term, the terms that contain it (lmerTest's containment)."""
    out = {}
    for t in terms:
        vt, nt = set(t.factors), {f for f, n in zip(t.factors, t.numeric) if n}
        out[t.label] = [
            u.label
            for u in terms
            if vt <= set(u.factors) and set(u.factors) - vt
            and nt == {f for f, n in zip(u.factors, u.numeric) if n}
        ]  # fmt: skip
    return out


def hypothesis_matrices(fit, type) -> dict[str, np.ndarray]:
    """term label -> its hypothesis matrix (rows: contrasts, columns: fit.xnames)."""
    t = _type(type)
    intercept, terms = fixed_terms(fit)
    p = len(fit.xnames)
    if t == 1 or p <= 1 or len(terms) <= 1:
        return _type1(fit, intercept, terms)
    if t == 2:
        return _type2(fit, terms)
    return _type3(fit, intercept, terms)


def _type(type) -> int:
    names = {"1": 1, "2": 2, "3": 3, "i": 1, "ii": 2, "iii": 3}
    t = names.get(str(type).strip().lower())
    if t is None:
        raise ArgumentError(f"type must be 1, 2 or 3 (or 'I', 'II', 'III'), not {type!r}")
    return t


def _crossprod(fit) -> np.ndarray:
    """X'X, unweighted (lmerTest's crossprod(model.matrix(fit)))."""
    if fit.weights is None and fit._dev is not None:
        return fit._dev.cp.XtXy[:-1, :-1].copy()  # from the one pass, no rows read
    if fit._frame is None:
        raise RuntimeError("type 1 and 2 tests need the data, which a fit loaded from disk has not")
    cols = [np.broadcast_to(fit._frame.Xcols[j], (fit.nobs,)) for j in fit._keep]
    return np.array([[float(a @ b) for b in cols] for a in cols])


def doolittle(x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """The unit lower-triangular L of lmerTest's doolittle(x) (x = L U, small pivots give 0)."""
    n = len(x)
    L, U = np.eye(n), np.zeros((n, n))
    for i in range(n):
        U[i, :] = x[i, :] - L[i, :i] @ U[:i, :]
        for j in range(i + 1, n):
            v = x[j, i] - L[j, :i] @ U[:i, i]
            L[j, i] = 0.0 if abs(U[i, i]) < eps else v / U[i, i]
    L[np.abs(L) < eps] = 0.0
    return L


def _type1(fit, intercept, terms) -> dict[str, np.ndarray]:
    p = len(fit.xnames)
    if p == 1 and intercept:
        return {t.label: np.zeros((0, 1)) for t in terms}
    L = np.ones((1, 1)) if p == 1 else doolittle(_crossprod(fit)).T
    return {t.label: L[list(t.cols), :] for t in terms}


def _type2(fit, terms) -> dict[str, np.ndarray]:
    p = len(fit.xnames)
    XtX = _crossprod(fit)
    contained = containment(terms)
    by_label = {t.label: t for t in terms}
    out = {}
    for t in terms:
        if not contained[t.label]:
            out[t.label] = np.eye(p)[list(t.cols), :]
            continue
        last = [c for u in [t.label, *contained[t.label]] for c in by_label[u].cols]
        perm = [c for c in range(p) if c not in last] + last
        Lc = doolittle(XtX[np.ix_(perm, perm)]).T
        rows = [i for i, c in enumerate(perm) if c in t.cols]
        M = np.zeros((len(rows), p))
        M[:, perm] = Lc[rows, :]  # columns back in X's order
        out[t.label] = M
    return out


def _type3(fit, intercept, terms) -> dict[str, np.ndarray]:
    grid = _grid(fit, terms)
    spec, formula = fit._fixed_spec, fit.formula
    X = np.column_stack(evaluate_columns(spec, grid))[:, fit._keep]
    names, cols = _overparameterized(spec, formula, intercept, terms, grid)
    explicit = any(_DROP_CONTRASTS.search(f) for t in terms for f in t.factors)
    if not explicit and all(n in names for n in fit.xnames):  # R's default treatment coding
        return _extract_type3(X, list(fit.xnames), names, cols, terms)
    # other codings (contr.sum, ...): as lmerTest, the hypotheses of the treatment-coded
    # design, mapped to these coefficients by ginv(X_treatment) X
    tspec, Xt, tnames = _treatment_design(spec, grid, formula)
    t_int, t_terms = _terms_of(tspec, formula, tnames)
    if len(t_terms) != len(terms):
        raise ArgumentError("cannot match the terms of the treatment-coded design; use type=1 or 2")
    names, cols = _overparameterized(tspec, formula, t_int, t_terms, grid)
    Lt = _extract_type3(Xt, tnames, names, cols, t_terms)
    M = _zapsmall(np.linalg.lstsq(Xt, X, rcond=None)[0])
    return {t.label: Lt[u.label] @ M for t, u in zip(terms, t_terms)}


def _treatment_design(spec, grid, formula: str):
    """The same formula with every factor in R's default treatment coding, on the grid:
    (spec, X with independent columns, their names)."""
    from formulaic import model_matrix

    text = _DROP_CONTRASTS.sub(r"C(\1)", str(spec.formula))
    mm = model_matrix(text, grid)
    X = mm.to_numpy(dtype=float)
    keep = _independent(X)
    tnames = [_r_name(c, formula) for c in np.array(mm.columns)[keep]]
    return mm.model_spec, X[:, keep], tnames


_DROP_CONTRASTS = re.compile(r"C\(\s*([^,()]+?)\s*,(?:[^()]|\([^()]*\))*\)")


def _independent(X: np.ndarray, tol: float = 1e-7) -> list[int]:
    """Columns of X in order, dropping each one in the span of those before it."""
    keep: list[int] = []
    for j in range(X.shape[1]):
        cand = keep + [j]
        if np.linalg.matrix_rank(X[:, cand], tol=tol * max(1.0, np.abs(X).max())) == len(cand):
            keep.append(j)
    return keep


def _extract_type3(X, xnames, names, cols, terms) -> dict[str, np.ndarray]:
    """lmerTest's extract_contrasts_type3 on X (treatment coded) and rdX (names, cols)."""
    rdX = np.column_stack(cols)
    L = _zapsmall(np.linalg.lstsq(X, rdX, rcond=None)[0].T)  # rows: rdX columns
    contained = containment(terms)
    by_label = {t.label: t for t in terms}
    for t in sorted(terms, key=lambda t: -t.order):  # stable: R's order(, decreasing = TRUE)
        if contained[t.label]:
            xcols = [c for u in contained[t.label] for c in by_label[u].cols]
            A, Y = L[:, xcols], L[:, list(t.cols)]
            L[:, list(t.cols)] = _zapsmall(Y - A @ np.linalg.lstsq(A, Y, rcond=None)[0])
    pos = {n: i for i, n in enumerate(names)}
    missing = [n for n in xnames if n not in pos]
    if missing:
        raise ArgumentError(
            f"type III hypotheses: cannot place the columns {missing}. "
            "Use type=1 or type=2, or contest() with your own contrast matrix."
        )
    L = L[[pos[n] for n in xnames], :]
    out = {}
    for t in terms:
        M = L[:, list(t.cols)].T
        out[t.label] = M[np.abs(M).sum(axis=1) > 1e-8, :]
    return out


def _zapsmall(x: np.ndarray, digits: int = 7) -> np.ndarray:
    """R's zapsmall(x): round to `digits` significant digits of the largest |x|."""
    mx = np.max(np.abs(x)) if x.size else 0.0
    if not mx > 0:
        return x
    return np.round(x, max(0, digits - int(np.ceil(np.log10(mx)))))


_IDENT = re.compile(r"[A-Za-z_.][A-Za-z0-9_.]*")


def _grid(fit, terms) -> pd.DataFrame:
    """Every combination of the categorical variables' levels, each with random draws of
    the numeric variables (enough for X to have full column rank)."""
    spec = fit._fixed_spec
    if isinstance(spec, tuple):
        variables, levels = list(spec[2]), {}
    else:
        variables = sorted(spec.required_variables, key=str)
        levels = {}
        for t in terms:
            for f, num in zip(t.factors, t.numeric):
                if not num:
                    raw = [v for v in _IDENT.findall(f) if v in variables] or [f]
                    levels[raw[0]] = list(spec.encoder_state[f][1]["categories"])
    cat = [v for v in variables if v in levels]
    num = [v for v in variables if v not in levels]
    combos = list(itertools.product(*[levels[v] for v in cat])) or [()]
    m = 2 + 2 * len(num) + len(fit.xnames)
    if len(combos) * m > MAX_GRID:
        raise ArgumentError(
            f"type III hypotheses over {len(combos)} level combinations are too many; "
            "use type=1 or type=2"
        )
    rng = np.random.default_rng(20261201)
    data = {v: [c[i] for c in combos for _ in range(m)] for i, v in enumerate(cat)}
    for v in num:
        data[v] = rng.uniform(0.5, 2.0, len(combos) * m)
    return pd.DataFrame(data)


def _overparameterized(spec, formula, intercept, terms, grid):
    """rdX: per term, a column for every combination of its factors' levels (the first
    factor varying fastest, as R's model.matrix(~ 0 + term)), times its numeric factors."""
    n = len(grid)
    names, cols = [], []
    if intercept:
        names.append("(Intercept)")
        cols.append(np.ones(n))
    for t in terms:
        parts = []
        for f, num in zip(t.factors, t.numeric):
            if num:
                parts.append([(_r_name(f, formula), _numeric(spec, f, grid))])
            else:
                raw = grid[[v for v in _IDENT.findall(f) if v in grid.columns][0]].to_numpy()
                levs = spec.encoder_state[f][1]["categories"]
                parts.append(
                    [(_r_name(f"{f}[{lv}]", formula), (raw == lv).astype(float)) for lv in levs]
                )
        for combo in itertools.product(*reversed(parts)):  # first factor fastest
            combo = combo[::-1]
            names.append(":".join(c[0] for c in combo))
            cols.append(np.prod([c[1] for c in combo], axis=0))
    return names, cols


def _numeric(spec, factor: str, grid: pd.DataFrame) -> np.ndarray:
    if isinstance(spec, tuple) or factor in grid.columns:
        return grid[factor].to_numpy(dtype=float)
    from formulaic import model_matrix

    mm = model_matrix("0 + " + factor, grid)
    return mm.to_numpy(dtype=float)[:, 0]
