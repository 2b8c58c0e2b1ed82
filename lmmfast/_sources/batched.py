"""Rows in batches -> the same cross-products as rows in memory.

Every block of A = [Z X y]'W[Z X y] is a sum over rows, so a source that delivers its rows
in batches (Parquet record batches, Dask partitions) runs the one-pass kernel
(crossprod.RowData) on each batch and ADDS the partial blocks; nothing downstream knows
where the rows came from.  What must agree across batches is decided first:

1. a cheap first pass (levels.py) over the grouping and categorical columns: the rows kept
   (lme4's na.omit), the distinct levels in order of appearance;
2. from it, the plan: level encoders, and formulaic's model spec learnt on a small
   prototype frame holding every level, so that every batch gets the same model columns
   (transforms whose state depends on all rows, center() or poly(), are refused);
3. the pass: per batch, model frame -> RowData -> CrossProducts, merged by `add`
   (associative, in batch order: a sequential fold or a tree reduction give one answer).

Afterwards `StreamFrame` stands in for the in-memory ModelFrame: _lmer._fit optimizes theta
from its cross-products alone, and the post-fit values that need rows (fitted, residuals)
go back to the source, batch by batch.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .._errors import DataError
from .._terms import ReTerm, check_term
from .crossprod import CrossProducts, RowData, TermPair
from .dataframes import as_pandas
from .design import Design, evaluate_vector
from .formula import ParsedFormula
from .frame import (
    _check_finite,
    _model_columns,
    _response,
    _used_columns,
    evaluate_columns,
    lme4_order,
)
from .levels import GroupEncoder, Scan, column_encoders, scan_batch

_STATEFUL = re.compile(r"(poly|scale|center|standardize)\(")
_FACTOR_CALL = re.compile(r"\bC\(\s*([A-Za-z_.][A-Za-z0-9_.]*)")


class Layout:
    """Which columns a fit reads, known from the formula and the column types alone."""

    def __init__(self, parsed: ParsedFormula, meta: pd.DataFrame, weights, offset):
        for what, arg in (("weights", weights), ("offset", offset)):
            if arg is not None and not isinstance(arg, str):
                raise DataError(
                    f"{what} must be given as a column name when the data are streamed or on a "
                    f"cluster (an array cannot be matched to the rows); add it as a column"
                )
        self.parsed, self.weights, self.offset = parsed, weights, offset
        self.used = _used_columns(parsed, meta, weights, offset)
        exprs = [parsed.fixed, *(rt.expr for rt in parsed.random)]
        inside_c = {m for e in exprs for m in _FACTOR_CALL.findall(e)}
        self.factor_cols = list(dict.fromkeys(f for rt in parsed.random for f in rt.factors))
        self.level_cols = list(self.factor_cols) + [
            c for c in self.used
            if c not in self.factor_cols and (c in inside_c or not _is_numeric(meta[c].dtype))
        ]  # fmt: skip
        self.combo_factors = list(dict.fromkeys(rt.factors for rt in parsed.random
                                                if len(rt.factors) > 1))  # fmt: skip

    def kept(self, df: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray | None]:
        """The rows of a batch without a missing value in a used column (na.omit)."""
        df = as_pandas(df)  # pandas' NA-string and Arrow dtypes, as in memory
        keep = np.ones(len(df), dtype=bool)
        for name in self.used:
            if name in df.columns:  # the levels pass may read fewer (scan_columns)
                keep &= df[name].notna().to_numpy()
        if keep.all():
            return df, None
        return df.loc[keep], keep

    def scan(self, df: pd.DataFrame) -> Scan:
        """The first pass on one batch."""
        frame, _ = self.kept(df)
        return scan_batch(frame, len(df), self.level_cols, self.combo_factors)


@dataclass(eq=False)
class _TermPlan:
    label: str
    factors: tuple
    cnames: list[str]
    spec: object
    encoder: GroupEncoder

    @property
    def nlevels(self) -> int:
        return self.encoder.nlevels


@dataclass(eq=False)
class Partial:
    """The cross-products of some batches and what the checks need; `add` merges two."""

    cp: CrossProducts
    n: int
    n_rows: int
    ldW: float
    ymin: float
    ymax: float
    tuples: np.ndarray | None  # distinct rows of the terms' level codes (2+ terms)
    seconds: float = 0.0  # time spent in the batches' passes (for bench/)

    def add(self, other: Partial) -> Partial:
        a, b = self.cp, other.cp
        pairs = [_merge_pair(p, r) for p, r in zip(a.pairs, b.pairs)]
        cp = CrossProducts([x + y for x, y in zip(a.D, b.D)], pairs,
                           [x + y for x, y in zip(a.ZXY, b.ZXY)], a.XtXy + b.XtXy)  # fmt: skip
        tuples = None if self.tuples is None else _distinct_rows(
            np.concatenate([self.tuples, other.tuples]))  # fmt: skip
        return Partial(cp, self.n + other.n, self.n_rows + other.n_rows, self.ldW + other.ldW,
                       min(self.ymin, other.ymin), max(self.ymax, other.ymax), tuples,
                       self.seconds + other.seconds)  # fmt: skip


def add(a: Partial, b: Partial) -> Partial:
    return a.add(b)


def merge_scans(a: Scan, b: Scan) -> Scan:
    return a.merge(b)


class Plan:
    """Everything a batch needs to become cross-products, the same for every batch."""

    def __init__(self, layout: Layout, scan: Scan):
        self.layout = layout
        parsed = layout.parsed
        self.formula = parsed.formula
        self.n_rows, self.n = scan.n_rows, scan.n_kept
        if self.n == 0:
            raise DataError(
                f"no rows left: all {scan.n_rows} rows have a missing value in "
                f"{', '.join(map(repr, layout.used))}; check those columns"
            )
        proto = _prototype(scan, layout)
        _, self.xnames, self.fixed_spec = _model_columns(parsed.fixed, proto, parsed.formula)
        _check_stateless(self.fixed_spec, parsed.fixed)
        columns = column_encoders(scan, layout.factor_cols, self.n)
        terms = []
        for rt in parsed.random:
            _, cnames, spec = _model_columns(rt.expr, proto, parsed.formula)
            _check_stateless(spec, rt.expr)
            terms.append(_TermPlan(rt.label, tuple(rt.factors), cnames, spec,
                                   GroupEncoder(tuple(rt.factors), scan, columns)))  # fmt: skip
        self.terms = lme4_order(terms)
        self.numeric = [c for c in layout.used if c not in layout.level_cols]

    # ----- one batch --------------------------------------------------------------------
    def batch(self, df: pd.DataFrame):
        """(RowData of the kept rows, weights, offset, kept-row mask or None, y)."""
        lay = self.layout
        frame, keep = lay.kept(df)
        for c in self.numeric:  # a column numeric in the schema must be numeric in each batch
            if not _is_numeric(frame[c].dtype):
                raise DataError(
                    f"column {c!r} is not numeric in a batch of the data (dtype "
                    f"{frame[c].dtype}); convert it with pd.to_numeric or fix those rows"
                )
        y = _response(lay.parsed.response, frame)
        X = evaluate_columns(self.fixed_spec, frame)
        _check_finite(X, self.xnames)
        w = None
        if lay.weights is not None:
            w = frame[lay.weights].to_numpy(dtype=np.float64)
            if np.any(~np.isfinite(w)) or np.any(w <= 0):
                raise DataError(
                    "weights must be finite and positive; remove rows with zero weight and "
                    "check for negative or infinite values"
                )
        off = None
        if lay.offset is not None or lay.parsed.offsets:
            off = np.zeros(len(frame))
            if lay.offset is not None:
                off += frame[lay.offset].to_numpy(dtype=np.float64)
            for expr in lay.parsed.offsets:
                off += evaluate_vector(expr, frame, "offset")
            if not np.all(np.isfinite(off)):
                raise DataError(
                    "the offset has infinite values; check the offset column or expression"
                )
        codes: dict[tuple, np.ndarray] = {}
        terms = []
        for t in self.terms:
            if t.factors not in codes:  # one array per factor: RowData sees terms on one factor
                codes[t.factors] = t.encoder.encode(frame)
            Z = evaluate_columns(t.spec, frame)
            _check_finite(Z, t.cnames)
            terms.append(ReTerm(t.label, t.cnames, codes[t.factors], t.encoder.labels,
                                t.encoder.order, Z, t.spec, t.factors))  # fmt: skip
        rows = RowData(terms, X, self.xnames, y if off is None else y - off)
        return rows, w, off, keep, y, frame.index

    def partial(self, df: pd.DataFrame) -> Partial:
        """The second pass on one batch: its cross-products."""
        start = time.perf_counter()
        if not self.layout.kept(df)[0].shape[0]:
            return self._empty(len(df))
        rows, w, _, _, y, _ = self.batch(df)
        cp = rows.cross_products(w)
        tuples = None
        if len(self.terms) > 1:
            tuples = _distinct_rows(rows.codes.astype(np.int64, copy=False))
        ldW = 0.0 if w is None else float(np.sum(np.log(w)))
        lo, hi = (float(y.min()), float(y.max())) if len(y) else (np.inf, -np.inf)
        return Partial(cp, rows.n, len(df), ldW, lo, hi, tuples, time.perf_counter() - start)

    def _empty(self, n_rows: int) -> Partial:
        """The partial of a batch without a row kept: zero blocks."""
        p1 = len(self.xnames) + 1
        q = [len(t.cnames) for t in self.terms]
        D = [np.zeros((t.nlevels, k, k)) for t, k in zip(self.terms, q)]
        ZXY = [np.zeros((t.nlevels, k, p1)) for t, k in zip(self.terms, q)]
        pairs = [TermPair(a, b, np.zeros((0, 2), dtype=np.int64), np.zeros((0, q[a], q[b])))
                 for a in range(len(q)) for b in range(a + 1, len(q))]  # fmt: skip
        tuples = np.zeros((0, len(q)), dtype=np.int64) if len(q) > 1 else None
        cp = CrossProducts(D, pairs, ZXY, np.zeros((p1, p1)))
        return Partial(cp, 0, n_rows, 0.0, np.inf, -np.inf, tuples)

    def fitted(
        self, df: pd.DataFrame, keep_cols, beta, b_internal, what: str, scale: float = 1.0
    ) -> pd.Series:
        """fitted (X beta + Z b + offset), or residuals (y - that; "pearson": times sqrt(w)),
        times `scale`, of one batch's kept rows; index: the batch's labels of those rows."""
        if not self.layout.kept(df)[0].shape[0]:
            return pd.Series([], index=df.index[:0], name=_name(what), dtype=float)
        rows, w, off, _, y, index = self.batch(df)
        fit = rows.fitted(keep_cols, beta, b_internal, off)
        if what == "fitted":
            return pd.Series(fit * scale, index=index, name="fitted")
        r = y - fit
        if what == "pearson" and w is not None:
            r = r * np.sqrt(w)
        return pd.Series(r * scale, index=index, name="residuals")

    # ----- after the pass ---------------------------------------------------------------
    def frame(self, part: Partial, source) -> StreamFrame:
        """The checks build_frame makes, on the merged pass; the fit's stand-in frame."""
        if part.ymax == part.ymin:
            raise DataError(
                f"response {self.layout.parsed.response!r} is constant (zero variance); there "
                "is nothing to model"
            )
        cp = _finish_pairs(part, self.terms)
        terms = []
        for k, t in enumerate(self.terms):
            pseudo = (part.tuples[:, k] if part.tuples is not None
                      else np.arange(t.nlevels, dtype=np.int64))  # fmt: skip
            terms.append(ReTerm(t.label, t.cnames, _narrow_codes(pseudo), t.encoder.labels,
                                t.encoder.order, [], t.spec, t.factors))  # fmt: skip
        for t in terms:
            check_term(t, part.n)
        nre = sum(t.nlevels * t.q for t in terms)
        if part.n <= nre:
            raise DataError(
                f"{part.n} observations for {nre} random effects: the random-effects parameters "
                "and the residual variance cannot be identified. Simplify the random-effects "
                "terms."
            )
        lay = self.layout
        return StreamFrame(
            terms=terms, xnames=self.xnames, n=part.n, n_dropped=part.n_rows - part.n,
            fixed_spec=self.fixed_spec, cp=cp, ldW=part.ldW, plan=self, source=source,
            has_offset=lay.offset is not None or bool(lay.parsed.offsets),
            weighted=lay.weights is not None, pass_seconds=part.seconds,
        )  # fmt: skip


@dataclass(eq=False)
class StreamFrame:
    """The ModelFrame of a batched source: cross-products instead of rows.

    _lmer._fit reads `cp` and `ldW` instead of making a pass; `fitted` (the RowData method
    _package calls) returns None: the fit's fitted values and residuals are computed by the
    source on request (fitted(), residuals())."""

    terms: list[ReTerm]
    xnames: list[str]
    n: int
    n_dropped: int
    fixed_spec: object
    cp: CrossProducts
    ldW: float
    plan: Plan
    source: object
    has_offset: bool = False
    weighted: bool = False
    pass_seconds: float = 0.0
    stages: dict = field(default_factory=dict)  # seconds per stage (bench/)
    y: None = None
    weights: None = None
    offset: None = None
    row_index: None = None
    Xcols: list = field(default_factory=list)

    def fitted(self, keep, beta, bs, offset):
        return None  # computed by the source on request: see fitted_values()

    def b_internal(self, fit, use=None) -> list[np.ndarray]:
        """The conditional modes in the encoders' level order (the pass's codes)."""
        out = []
        for k, t in enumerate(fit.terms):
            b = np.zeros_like(t.b)
            if use is None or k in use:
                b[t.order] = t.b
            out.append(b)
        return out

    def values(self, fit, what: str, use=None, out=None, scale: float = 1.0):
        """fitted values or residuals ("response", "pearson") of every row used, computed by
        the source; `use`: the terms whose conditional modes count (default all)."""
        b = self.b_internal(fit, use)
        return self.source.row_values(self.plan, fit._keep, fit.beta, b, what, out, scale)


def _name(what: str) -> str:
    return "fitted" if what == "fitted" else "residuals"


def _merge_pair(a: TermPair, b: TermPair) -> TermPair:
    """The blocks of one term pair from two sets of rows: summed where the level pairs agree."""
    levels = np.concatenate([a.levels, b.levels])
    m = int(max(levels[:, 1].max(initial=0), 0)) + 1
    idx, uniq = pd.factorize(levels[:, 0].astype(np.int64) * m + levels[:, 1], sort=False)
    O = np.concatenate([a.O, b.O])
    flat = O.reshape(len(O), -1)
    out = np.empty((len(uniq), flat.shape[1]))
    for j in range(flat.shape[1]):
        out[:, j] = np.bincount(idx, weights=flat[:, j], minlength=len(uniq))
    return TermPair(a.t, a.u, np.column_stack([uniq // m, uniq % m]), out.reshape(-1, *O.shape[1:]))


def _finish_pairs(part: Partial, terms) -> CrossProducts:
    """The level pairs in the order and with the entries the in-memory pass finds: the
    diagonal of all levels where two terms share their codes, else the pairs that occur,
    in order of appearance (a batch whose codes of two factors coincide gives the diagonal)."""
    cp = part.cp
    if part.tuples is None:
        return cp
    pairs = []
    for pr in cp.pairs:
        ct, cu = part.tuples[:, pr.t], part.tuples[:, pr.u]
        if np.array_equal(ct, cu) and terms[pr.t].nlevels == terms[pr.u].nlevels:
            lv = np.arange(terms[pr.t].nlevels)
            want = np.column_stack([lv, lv])
        else:
            key = ct * terms[pr.u].nlevels + cu
            uniq = pd.unique(key)
            want = np.column_stack([uniq // terms[pr.u].nlevels, uniq % terms[pr.u].nlevels])
        have = pd.Index(pr.levels[:, 0] * terms[pr.u].nlevels + pr.levels[:, 1])
        pos = have.get_indexer(want[:, 0] * terms[pr.u].nlevels + want[:, 1])
        O = np.zeros((len(want), *pr.O.shape[1:]))
        O[pos >= 0] = pr.O[pos[pos >= 0]]
        pairs.append(TermPair(pr.t, pr.u, want, O))
    return CrossProducts(cp.D, pairs, cp.ZXY, cp.XtXy)


def _distinct_rows(a: np.ndarray) -> np.ndarray:
    """Distinct rows of an integer matrix, in order of first appearance."""
    if len(a) == 0:
        return a.reshape(0, a.shape[1])
    return pd.DataFrame(a).drop_duplicates().to_numpy(dtype=np.int64)


def _narrow_codes(codes: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(codes, dtype=np.int32 if codes.max(initial=0) < 2**31 - 1
                                else np.int64)  # fmt: skip


def _is_numeric(dtype) -> bool:
    return pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)


def _prototype(scan: Scan, layout: Layout) -> pd.DataFrame:
    """A small frame with every level of every categorical column (so that formulaic learns
    them all) and the first rows' values of the numeric ones, in the batches' dtypes."""
    sample = scan.sample
    m = max([len(scan.values[c]) for c in layout.level_cols] + [len(sample), 2])
    cols = {}
    for c in layout.used:
        if c in scan.values:
            v = np.resize(np.asarray(scan.values[c], dtype=object), m)
            if c in scan.categories:
                cols[c] = pd.Categorical(v, categories=scan.categories[c])
            else:
                cols[c] = pd.Series(v).astype(sample[c].dtype).to_numpy()
        else:
            cols[c] = np.resize(sample[c].to_numpy(), m)
    return pd.DataFrame(cols)


def _check_stateless(spec, expr: str) -> None:
    state = getattr(spec, "transform_state", None)  # a formulaic ModelSpec
    if isinstance(spec, Design):  # R's model.matrix: poly(), scale(), center() learn from rows
        state = [k for k in spec.state if _STATEFUL.match(k)]
    if state:
        raise DataError(
            f"{expr!r} uses a transform whose state depends on all rows ({', '.join(state)}), "
            "which a batched source cannot learn in one batch; compute the column first (e.g. "
            "x - mean(x)) and use it in the formula"
        )
