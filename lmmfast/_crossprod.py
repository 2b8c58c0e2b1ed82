"""The blocks of A = [Z X y]'W[Z X y], from one O(n) pass over the rows (src/_assemble.pyx).

This is the only place that touches every row before the optimizer starts; each
evaluation of the objective afterwards reads these blocks only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import _assemble
from ._terms import ReTerm


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


def cross_products(
    terms: list[ReTerm], X: np.ndarray, y: np.ndarray, w: np.ndarray | None
) -> CrossProducts:
    """One pass over the rows: D, the term pairs, ZXY and XtXy."""
    n, p = X.shape
    K = len(terms)
    wide = any(t.codes.dtype == np.int64 for t in terms)
    itype = np.int64 if wide else np.int32
    codes = np.empty((n, K), dtype=itype)
    for k, t in enumerate(terms):
        codes[:, k] = t.codes
    pair_terms, pair_idx, pair_levels = [], [], []
    for t in range(K):
        for u in range(t + 1, K):
            idx, levels = _level_pairs(terms[t], terms[u])
            pair_terms.append((t, u))
            pair_idx.append(idx)
            pair_levels.append(levels)
    P = np.empty((n, len(pair_idx)), dtype=itype)
    for r, idx in enumerate(pair_idx):
        P[:, r] = idx
    qs = np.array([t.q for t in terms], dtype=np.int64)
    zoff = np.concatenate([[0], np.cumsum(qs)[:-1]]).astype(np.int64)
    Z = np.ascontiguousarray(np.hstack([t.Zt for t in terms]))
    XY = np.empty((n, p + 1))
    XY[:, :p] = X
    XY[:, p] = y
    ww = np.ones(n) if w is None else np.ascontiguousarray(w, dtype=np.float64)
    p1 = p + 1
    dsz = [t.nlevels * t.q * t.q for t in terms]
    osz = [len(lv) * qs[t] * qs[u] for (t, u), lv in zip(pair_terms, pair_levels)]
    xsz = [t.nlevels * t.q * p1 for t in terms]
    D, O, ZXY = np.zeros(sum(dsz)), np.zeros(int(sum(osz))), np.zeros(sum(xsz))
    XtXy = np.zeros((p1, p1))
    _assemble.assemble(
        codes,
        P,
        np.array(pair_terms, dtype=np.int64).reshape(-1, 2),
        zoff,
        qs,
        Z,
        XY,
        ww,
        D,
        _offsets(dsz),
        O,
        _offsets(osz),
        ZXY,
        _offsets(xsz),
        XtXy,
    )
    XtXy = np.tril(XtXy) + np.tril(XtXy, -1).T
    Ds = _split(D, dsz, [(t.nlevels, t.q, t.q) for t in terms])
    Os = _split(O, osz, [(len(lv), qs[t], qs[u]) for (t, u), lv in zip(pair_terms, pair_levels)])
    Xs = _split(ZXY, xsz, [(t.nlevels, t.q, p1) for t in terms])
    pairs = [TermPair(t, u, lv, o) for (t, u), lv, o in zip(pair_terms, pair_levels, Os)]
    return CrossProducts(Ds, pairs, Xs, XtXy)


def _level_pairs(a: ReTerm, b: ReTerm):
    """Number the distinct (level of a, level of b) pairs by hashing; same factor: the diagonal."""
    if a.codes is b.codes or np.array_equal(a.codes, b.codes):
        lv = np.arange(a.nlevels)
        return a.codes, np.column_stack([lv, lv])
    key = a.codes.astype(np.int64) * b.nlevels + b.codes
    idx, uniq = pd.factorize(key, sort=False)
    return idx, np.column_stack([uniq // b.nlevels, uniq % b.nlevels])


def _offsets(sizes) -> np.ndarray:
    return (
        np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        if sizes
        else np.zeros(0, dtype=np.int64)
    )


def _split(flat: np.ndarray, sizes, shapes) -> list[np.ndarray]:
    out, start = [], 0
    for size, shape in zip(sizes, shapes):
        out.append(flat[start : start + size].reshape(tuple(int(s) for s in shape)))
        start += size
    return out
