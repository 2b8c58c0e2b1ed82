"""lmerTest's hypothesis matrices for the per-term F tests of anova(fit, type = 1 | 2 | 3).

The fixed-effects terms are those of R's terms() (the fit's Design, rterms.py): a term's
label as R writes it, its variables, how terms() codes each (the "factors" attribute: 1
by contrasts, 2 by indicators), which are numeric, and the columns of X it owns.  Then,
as lmerTest 3.1:

* type 1 (get_contrasts_type1): rows of t(doolittle(X'X)$L), the sequential hypotheses;
* type 2 (get_contrasts_type2_unfolded): terms contained in no other term get the marginal
  hypothesis (the rows of the identity for their columns); the others the Doolittle rows of
  X'X with the term and the terms containing it moved last;
* type 3 (get_contrasts_type3 / extract_contrasts_type3): the term's overparameterized
  columns (all level combinations, rdX) expressed in X's columns, L = t(ginv(X) rdX), each
  term's columns orthogonalized to those of the terms containing it (highest order first).
  With another coding than contr.treatment, the hypotheses of the treatment-coded design
  are mapped to the fit's coefficients by ginv(X_treatment) X, so type 3 depends on no
  contrast coding.  X and rdX are evaluated on a grid of the variables' values (every level
  combination of the factors, numeric variables drawn at random): the identity X B = rdX is
  algebraic in them, so B is that of the data whenever X has on the data the rank it has on
  the grid (a fit whose data lack a cell has not: refused, see _type3).

A term contains another (lmerTest's term_contain) if it has all its variables and more,
with the same numeric variables; as lmerTest, a term's variables are those terms() codes 1,
and only a plain numeric variable is numeric (a matrix such as poly(x, 2) is not).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from .._errors import ArgumentError, NeedsDataError
from .._sources.design import Design
from .._sources.rvalues import Factor, Matrix

MAX_GRID = 200_000  # rows of the type-3 grid (level combinations x draws)


@dataclass(frozen=True)
class FixedTerm:
    """A term of the fixed-effects formula."""

    label: str  # as R writes it: "recipe", "recipe:temp", "factor(x)"
    variables: tuple[str, ...]  # its variables, in R's order
    coded: frozenset  # the variables terms() codes 1 (lmerTest's get_vars)
    numeric: frozenset  # those of them that are numeric (dataClasses "numeric")
    cols: tuple[int, ...]  # columns of X (the kept ones, fit.xnames order)
    full: tuple[int, ...]  # columns of the full model matrix (before rank-deficient drops)

    @property
    def order(self) -> int:
        return len(self.variables)


def fixed_terms(fit) -> tuple[bool, list[FixedTerm]]:
    """(has intercept, terms) of the fit's fixed-effects formula, in R's term order."""
    design = _design(fit)
    intercept, terms = design.terms()
    kept = {j: i for i, j in enumerate(_keep(fit, design))}
    out = []
    for t in terms:
        coded = frozenset(v for v, c in zip(t.variables, t.by_contrasts) if c)
        numeric = frozenset(v for v, k in zip(t.variables, t.kinds) if k == "numeric")
        cols = tuple(kept[j] for j in t.columns if j in kept)
        out.append(FixedTerm(t.label, t.variables, coded, numeric & coded, cols, t.columns))
    return intercept and 0 in kept, out


def _design(fit) -> Design:
    spec = fit._fixed_spec
    if isinstance(spec, Design):
        return spec
    if isinstance(spec, tuple) and spec[0] == "columns":
        return Design.of_columns(bool(spec[1]), list(spec[2]))
    raise ArgumentError(
        "this fit's fixed-effects formula is stored in an old format (a fit saved by an "
        "earlier lmmfast) that anova() cannot read; refit the model"
    )


def _keep(fit, design: Design) -> list[int]:
    return list(range(len(design.names))) if fit._keep is None else list(fit._keep)


def containment(terms: list[FixedTerm]) -> dict[str, list[str]]:
    """For each term, the terms that contain it (lmerTest's containment / term_contain)."""
    return {
        t.label: [u.label for u in terms
                  if t.coded <= u.coded and u.coded - t.coded and t.numeric == u.numeric]
        for t in terms
    }  # fmt: skip


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
        raise NeedsDataError(
            "type 1 and 2 tests of a weighted fit need the unweighted X'X, from the rows, which a "
            "loaded fit does not keep: refit it with lmer() or use type=3"
        )
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
    if p == 1:
        L = np.ones((1, 1))
    elif len(terms) == 1 and intercept:
        # one term after the intercept: the rows of L for its columns are zero in the
        # intercept's column and triangular (invertible) in its own, so the F test is that
        # of beta_term = 0 whatever X'X is (and X'X of a loaded weighted fit is not at hand)
        L = np.eye(p)
    else:
        L = doolittle(_crossprod(fit)).T
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
    design = _design(fit)
    keep = _keep(fit, design)
    values = _grid(design, fit)
    full = np.column_stack(design.columns_of(values)[0])
    X = full[:, keep]
    scale = np.abs(full).max()
    if _rank(full, scale) > len(keep) or _rank(X, scale) < len(keep):
        # the data lack what the grid has (a level combination, ...): lmerTest's hypotheses
        # come from the data's rows, which the grid does not reproduce then
        raise ArgumentError(
            "type III hypotheses of a rank-deficient fit (columns dropped: "
            f"{', '.join(fit.dropped_columns) or 'none'}; e.g. a missing combination of factor "
            "levels) are not computed; use type=1 or type=2, or contest() with your own "
            "contrast matrix"
        )
    rd, rdnames = design.overparameterized(values)
    factors = [k for k in design.kinds.values() if k["kind"] == "factor"]
    if factors and all(k["contrast"] == "treatment" for k in factors):
        return _extract_type3(X, list(fit.xnames), rdnames, rd, terms)
    # other codings (contr.sum, ...): as lmerTest, the hypotheses of the treatment-coded
    # design (its independent columns), mapped to these coefficients by ginv(X_treatment) X
    tdesign = design.with_contrasts("treatment")
    tcols, tnames = tdesign.columns_of(values)
    Xt = np.column_stack(tcols)
    tkeep = _independent(Xt)
    where = {j: i for i, j in enumerate(tkeep)}
    t_terms = [
        FixedTerm(t.label, t.variables, t.coded, t.numeric,
                  tuple(where[j] for j in t.full if j in where), t.full)
        for t in terms
    ]  # fmt: skip
    Xt = Xt[:, tkeep]
    Lt = _extract_type3(Xt, [tnames[j] for j in tkeep], rdnames, rd, t_terms)
    M = _zapsmall(np.linalg.lstsq(Xt, X, rcond=None)[0])
    return {t.label: Lt[t.label] @ M for t in terms}


def _rank(X: np.ndarray, scale: float, tol: float = 1e-7) -> int:
    """R's qr rank, roughly: singular values below tol * max(1, max |X|) are zero."""
    return int(np.linalg.matrix_rank(X, tol=tol * max(1.0, scale)))


def _independent(X: np.ndarray, tol: float = 1e-7) -> list[int]:
    """Columns of X in order, dropping each one in the span of those before it."""
    keep: list[int] = []
    for j in range(X.shape[1]):
        cand = keep + [j]
        if _rank(X[:, cand], np.abs(X).max(), tol) == len(cand):
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


def _grid(design: Design, fit) -> dict:
    """The variables' values on a grid: every combination of the factors' levels, each
    with random draws of the numeric and matrix variables (enough for X to have full
    column rank)."""
    kinds = design.kinds
    factors = [lab for lab, k in kinds.items() if k["kind"] == "factor"]
    others = [lab for lab in kinds if lab not in factors]
    ncol = sum(kinds[lab].get("ncol", 1) for lab in others)
    combos = list(itertools.product(*[range(len(design.levels(f))) for f in factors])) or [()]
    m = 2 + 2 * ncol + len(fit.xnames)
    n = len(combos) * m
    if n > MAX_GRID:
        raise ArgumentError(
            f"type III hypotheses over {len(combos)} level combinations are too many; "
            "use type=1 or type=2"
        )
    rng = np.random.default_rng(20261201)
    values = {}
    for i, f in enumerate(factors):
        codes = np.repeat([c[i] for c in combos], m)
        values[f] = Factor(codes, design.levels(f))
    for lab in others:
        if kinds[lab]["kind"] == "matrix":
            values[lab] = Matrix(rng.uniform(0.5, 2.0, (n, kinds[lab]["ncol"])))
        else:
            values[lab] = rng.uniform(0.5, 2.0, n)
    return values
