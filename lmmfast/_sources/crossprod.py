"""The blocks of A = [Z X y]'W[Z X y], from one O(n) pass over the rows (src/_assemble.pyx).

This is the only place that touches every row before the optimizer starts; each
evaluation of the objective afterwards reads these blocks only.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .. import _assemble
from .._terms import ReTerm
from .._threads import PARALLEL_ROWS, kernel_threads
from .sparse_columns import SparseColumns, term_matrix


@dataclass(eq=False)
class TermPair:
    """Z_t'W Z_u for terms t < u: the level pairs that occur together and their blocks."""

    t: int
    u: int
    levels: np.ndarray  # (npair, 2): level of term t, level of term u
    O: np.ndarray  # (npair, q_t, q_u)


@dataclass(eq=False)
class CrossProducts:
    D: list[np.ndarray]  # per term: (l, q, q), Z_t'W Z_t by level
    pairs: list[TermPair]
    ZXY: list[np.ndarray]  # per term: (l, q, p+1), Z_t'W [X y] by level
    XtXy: np.ndarray  # (p+1, p+1), [X y]'W[X y]

    def select(self, cols: np.ndarray) -> CrossProducts:
        """Keep fixed-effects columns `cols` (and y, the last column)."""
        keep = np.append(cols, self.XtXy.shape[0] - 1)
        return CrossProducts(
            self.D, self.pairs, [z[:, :, keep] for z in self.ZXY], self.XtXy[np.ix_(keep, keep)]
        )


class RowData:
    """What the passes over the rows read: level codes, level-pair numbers and the columns
    (the caller's own arrays where possible), planned once per fit."""

    def __init__(self, terms: list[ReTerm], Xcols, xnames, y: np.ndarray):
        self.terms, self.n = terms, len(y)
        K = len(terms)
        itype = np.int64 if any(t.codes.dtype == np.int64 for t in terms) else np.int32
        self.codes = _stack([t.codes for t in terms], self.n, itype)
        self.pair_terms, idx, self.pair_levels = [], [], []
        for t in range(K):
            for u in range(t + 1, K):
                i, levels = _level_pairs(terms[t], terms[u])
                self.pair_terms.append((t, u))
                idx.append(i)
                self.pair_levels.append(levels)
        self.pair_idx = _stack(idx, self.n, itype)
        self.qs = np.array([t.q for t in terms], dtype=np.int64)
        self.zoff = _offsets([t.q for t in terms])
        cols = _Columns(self.n)
        # a sparse X (many-level factors) is multiplied by scipy; the kernel reads y and Z only
        self.Xs = Xcols.matrix if isinstance(Xcols, SparseColumns) else None
        dense_x = [] if self.Xs is not None else list(zip(Xcols, xnames))
        self.xcol = np.array([cols.index(x, nm) for x, nm in dense_x], dtype=np.int64)
        self.ycol = cols.index(y, None)
        self.y = y
        self.zcol = np.array(
            [cols.index(z, nm) for t in terms for z, nm in zip(t.Zcols, t.cnames)], dtype=np.int64
        )
        self.cols = cols.arrays
        self.threads = kernel_threads(self.n, PARALLEL_ROWS)

    def cross_products(self, w: np.ndarray | None) -> CrossProducts:
        """One pass over the rows: D, the term pairs, ZXY and XtXy."""
        terms, qs = self.terms, self.qs
        p1 = len(self.xcol) + 1
        rec = [t.q * t.q + t.q * p1 for t in terms]  # per level: [Z_j'WZ_j | Z_j'W[X y]]
        rsz = [t.nlevels * r for t, r in zip(terms, rec)]
        osz = [len(lv) * qs[t] * qs[u] for (t, u), lv in zip(self.pair_terms, self.pair_levels)]
        R, O = (np.zeros((self.threads, int(sum(s)))) for s in (rsz, osz))
        XtXy = np.zeros((self.threads, p1, p1))
        _assemble.assemble(
            self.codes, self.pair_idx, np.array(self.pair_terms, dtype=np.int64).reshape(-1, 2),
            self.zoff, qs, self.cols, self.zcol, np.append(self.xcol, self.ycol),
            _ONE if w is None else np.ascontiguousarray(w, dtype=np.float64),
            R, _offsets(rsz), O, _offsets(osz), XtXy, w is not None, self.threads,
        )  # fmt: skip
        R, O, XtXy = (a[0] if self.threads == 1 else _sum_chunks(a) for a in (R, O, XtXy))
        XtXy = mirror_lower(XtXy)
        Ds, Xs = [], []
        shapes = [(t.nlevels, r) for t, r in zip(terms, rec)]
        for t, block in zip(terms, _split(R, rsz, shapes)):
            qq = t.q * t.q
            Ds.append(np.ascontiguousarray(block[:, :qq]).reshape(t.nlevels, t.q, t.q))
            Xs.append(np.ascontiguousarray(block[:, qq:]).reshape(t.nlevels, t.q, p1))
        shapes = [(len(lv), qs[t], qs[u]) for (t, u), lv in zip(self.pair_terms, self.pair_levels)]
        Os = _split(O, osz, shapes)
        pairs = [
            TermPair(t, u, lv, o) for (t, u), lv, o in zip(self.pair_terms, self.pair_levels, Os)
        ]
        if self.Xs is not None:
            Xs, XtXy = self._with_sparse_x(w, Xs, XtXy)
        return CrossProducts(Ds, pairs, Xs, XtXy)

    def _with_sparse_x(self, w, Zy: list[np.ndarray], yty: np.ndarray):
        """Add the sparse X's blocks to the kernel's y-only ones: X'WX, X'Wy, Z_t'WX."""
        X = self.Xs
        y = self.y
        WX = X if w is None else (X.multiply(np.asarray(w, dtype=np.float64)[:, None])).tocsc()
        p = X.shape[1]
        XtXy = np.empty((p + 1, p + 1))
        XtXy[:p, :p] = (X.T @ WX).toarray()
        XtXy[:p, p] = XtXy[p, :p] = WX.T @ y
        XtXy[p, p] = yty[0, 0]
        ZXY = []
        for t, zy in zip(self.terms, Zy):
            Zt = term_matrix(t.codes, t.Zcols, t.q, t.nlevels)
            ZX = np.asarray((Zt.T @ WX).todense()).reshape(t.nlevels, t.q, p)
            ZXY.append(np.concatenate([ZX, zy], axis=2))
        return ZXY, XtXy

    def fitted(self, keep: np.ndarray, beta: np.ndarray, b: list[np.ndarray], offset) -> np.ndarray:
        """One more pass: X beta + Z b (+ offset), X restricted to the kept columns."""
        out = np.zeros(self.n) if offset is None else np.array(offset, dtype=np.float64)
        if self.Xs is not None:  # X beta by scipy; the kernel adds Z b
            out += self.Xs[:, keep] @ beta
            keep, beta = keep[:0], beta[:0]
        flat = np.concatenate([bt.ravel() for bt in b]) if len(b) > 1 else b[0].ravel()
        boff = _offsets([bt.size for bt in b])
        _assemble.fitted(
            self.codes, self.cols, self.xcol[keep], np.ascontiguousarray(beta, dtype=np.float64),
            self.zcol, self.zoff, self.qs, flat, boff, out, self.threads,
        )  # fmt: skip
        return out


def cross_products(terms, X, y, w, xnames=None) -> CrossProducts:
    """The blocks of [Z X y]'W[Z X y] for a 2-D X (a convenience over RowData)."""
    X = np.asarray(X)
    cols = [X[:, j] for j in range(X.shape[1])]
    return RowData(terms, cols, xnames or [None] * len(cols), y).cross_products(w)


class _Columns:
    """The distinct float64 columns the kernel reads, each once; -1 stands for all ones."""

    def __init__(self, n: int):
        self.n, self.arrays, self.names = n, [], {}

    def index(self, v: np.ndarray, name) -> int:
        if name is not None and name in self.names:
            return self.names[name]
        if name == "(Intercept)" or (len(v) and v[0] == 1.0 and np.all(v == 1.0)):
            return -1
        self.arrays.append(np.ascontiguousarray(v, dtype=np.float64))  # a view when it can be
        k = len(self.arrays) - 1
        if name is not None:
            self.names[name] = k
        return k


def _stack(vectors, n: int, itype) -> np.ndarray:
    """(n, k) C-contiguous; one vector of the right type is reshaped, not copied."""
    if len(vectors) == 1 and vectors[0].dtype == itype and vectors[0].flags.c_contiguous:
        return vectors[0].reshape(n, 1)
    out = np.empty((n, len(vectors)), dtype=itype)
    for k, v in enumerate(vectors):
        out[:, k] = v
    return out


def mirror_lower(A: np.ndarray) -> np.ndarray:
    """np.tril(A) + np.tril(A, -1).T, bit for bit (the + 0.0 is that sum's: -0.0 becomes
    0.0), without np.tri's cost (10 us on a small fit's 3 x 3)."""
    out = np.where(lower_mask(len(A)), A, A.T)
    out += 0.0
    return out


def lower_mask(n: int) -> np.ndarray:
    """np.tri(n, dtype=bool), made once per order (read-only)."""
    mask = _LOWER.get(n)
    if mask is None:
        mask = np.tri(n, dtype=bool)
        mask.flags.writeable = False
        mask = _LOWER.setdefault(n, mask)
    return mask


_LOWER: dict[int, np.ndarray] = {}


def _sum_chunks(a: np.ndarray) -> np.ndarray:
    """Sum the per-thread partial results in a fixed order (deterministic)."""
    out = a[0].copy()
    for c in range(1, len(a)):
        out += a[c]
    return out


def _level_pairs(a: ReTerm, b: ReTerm):
    """Number the distinct (level of a, level of b) pairs by hashing; same factor: the diagonal."""
    if a.codes is b.codes or np.array_equal(a.codes, b.codes):
        lv = np.arange(a.nlevels)
        return a.codes, np.column_stack([lv, lv])
    key = a.codes.astype(np.int64) * b.nlevels + b.codes
    idx, uniq = pd.factorize(key, sort=False)
    return idx, np.column_stack([uniq // b.nlevels, uniq % b.nlevels])


def _offsets(sizes) -> np.ndarray:
    """Where each of the blocks of these sizes starts in their concatenation."""
    return np.array([0, *itertools.accumulate(sizes)][: len(sizes)], dtype=np.int64)


_ONE = np.ones(1)  # the kernel's weights without prior weights (read only)
_ONE.flags.writeable = False


def _split(flat: np.ndarray, sizes, shapes) -> list[np.ndarray]:
    out, start = [], 0
    for size, shape in zip(sizes, shapes):
        out.append(flat[start : start + size].reshape(tuple(int(s) for s in shape)))
        start += size
    return out
