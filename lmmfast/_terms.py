"""One random-effects term: its grouping factor, model columns and relative covariance factor.

A term ``(expr | g)`` with q model columns and l levels contributes l*q random effects,
ordered level-major (all q effects of level 1, then level 2, ...) as in lme4.  Its
relative covariance factor is the lower-triangular q x q matrix T, whose non-zero
elements are the term's slice of theta in column-major order; Lambda repeats T once
per level.  The diagonal of T is bounded below by 0.

Levels are encoded by hashing (pandas.factorize), never by sorting rows; only the
l level labels are sorted, to report them in R's factor order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ._errors import GroupingError


@dataclass(eq=False)
class ReTerm:
    """A random-effects term after its rows are encoded."""

    group: str  # lme4's name of the grouping factor ("Subject", "cask:batch")
    cnames: list[str]  # model column names ("(Intercept)", "Days")
    codes: np.ndarray  # (n,) level of each row, int32 or int64, in `levels` order
    levels: np.ndarray  # (l,) level labels as strings, in first-appearance order
    order: np.ndarray  # (l,) permutation putting `levels` in R's factor order
    Zcols: list[np.ndarray] = field(repr=False)  # q model columns, each (n,)
    spec: object = None  # how to evaluate the columns on new data (see _frame.model_columns)
    factors: tuple = ()  # the data columns whose interaction is the grouping factor

    @property
    def Zt(self) -> np.ndarray:
        """The (n, q) model columns as one array (a copy; for small data and tests)."""
        return np.column_stack([np.broadcast_to(z, z.shape) for z in self.Zcols])

    @property
    def q(self) -> int:
        return len(self.cnames)

    @property
    def nlevels(self) -> int:
        return len(self.levels)

    @property
    def ntheta(self) -> int:
        return self.q * (self.q + 1) // 2

    def theta_lower(self) -> np.ndarray:
        """Lower bounds: 0 for the diagonal of T, -inf below it (column-major)."""
        return np.array([0.0 if i == j else -np.inf for j, i in _lower_ij(self.q)])

    def theta_init(self) -> np.ndarray:
        """lme4's start: T = I."""
        return np.array([1.0 if i == j else 0.0 for j, i in _lower_ij(self.q)])

    def theta_names(self) -> list[str]:
        """lme4's names(getME(fit, "theta")): 'g.a' on the diagonal, 'g.a.b' below it."""
        c = self.cnames
        return [
            f"{self.group}.{c[i]}" if i == j else f"{self.group}.{c[i]}.{c[j]}"
            for j, i in _lower_ij(self.q)
        ]

    def T(self, theta_k: np.ndarray) -> np.ndarray:
        """The q x q lower-triangular relative covariance factor from this term's theta."""
        T = np.zeros(self.q * self.q)
        T[_lower_flat(self.q)] = theta_k
        return T.reshape(self.q, self.q)


_LOWER: dict[int, np.ndarray] = {}


def _lower_flat(q: int) -> np.ndarray:
    """Row-major flat positions of the lower triangle, in theta's column-major order."""
    if q not in _LOWER:
        _LOWER[q] = np.array([i * q + j for j, i in _lower_ij(q)], dtype=np.intp)
    return _LOWER[q]


def _lower_ij(q: int):
    """(column, row) pairs of the lower triangle in column-major order."""
    return [(j, i) for j in range(q) for i in range(j, q)]


def encode_groups(data, factors: tuple[str, ...]):
    """Codes (int32 where levels fit), labels and R's level order of the interaction of columns
    (data: a DataFrame, or its columns by name)."""
    parts = [_encode_column(data[f]) for f in factors]
    if len(parts) == 1:
        codes, labels, ranks = parts[0]
        return codes, labels, np.argsort(ranks, kind="stable")
    key = np.zeros(len(parts[0][0]), dtype=np.int64)
    for codes, labels, _ in parts:
        key = key * len(labels) + codes
    codes, uniq = pd.factorize(key, sort=False)
    comp = []
    for _, labels_c, _ in reversed(parts):
        comp.append(uniq % len(labels_c))
        uniq = uniq // len(labels_c)
    comp.reverse()
    labels = np.array(
        [":".join(str(p[1][c]) for p, c in zip(parts, cs)) for cs in zip(*comp)], dtype=object
    )
    # R's a:b factor orders levels by a's levels, then b's
    order = np.lexsort([p[2][c] for p, c in zip(reversed(parts), reversed(comp))])
    return _narrow(codes), labels, order


def _encode_column(col: pd.Series):
    """(codes, labels as str, rank of each label in R's sort order)."""
    if isinstance(col.dtype, pd.CategoricalDtype):
        codes = col.cat.codes.to_numpy()
        used = np.bincount(codes, minlength=len(col.cat.categories)) > 0
        if not used.all():  # drop unused levels, as factor() in lme4's mkReTrms
            remap = np.cumsum(used) - 1
            codes = remap[codes]
        cats = col.cat.categories[used]
        return _narrow(codes), np.array([str(c) for c in cats], dtype=object), np.arange(len(cats))
    if col.dtype.kind in "iu" and len(col):
        fast = _integer_codes(col.to_numpy())
        if fast is not None:
            return fast
    if isinstance(col.dtype, np.dtype):
        codes, uniques = pd.factorize(col, sort=False)
    else:  # the extension array's own factorize (what pd.factorize calls), without the Index
        codes, uniques = col.array.factorize()
    uniques = np.asarray(uniques)
    ranks = np.empty(len(uniques), dtype=np.int64)
    try:
        ranks[np.argsort(uniques, kind="stable")] = np.arange(len(uniques))
    except TypeError:  # mixed types: order by their text
        ranks[np.argsort(uniques.astype(str), kind="stable")] = np.arange(len(uniques))
    return _narrow(codes), np.array([str(u) for u in uniques], dtype=object), ranks


def _integer_codes(v: np.ndarray):
    """Integer labels 0..K-1 (or a few gaps): the values are the codes, no hashing; levels
    keep their numeric order, as R's factor() of integers."""
    lo, hi = int(v.min()), int(v.max())
    if lo < 0 or hi >= 2 * len(v) + 1024 or hi >= 2**31 - 1:
        return None
    used = np.zeros(hi + 1, dtype=bool)
    for start in range(0, len(v), 1 << 20):  # in chunks: bincount would copy v to int64
        used[v[start : start + (1 << 20)]] = True
    values = np.flatnonzero(used)
    if len(values) == hi + 1:
        codes = v if v.dtype == np.int32 and v.flags.c_contiguous else v.astype(np.int32)
    else:  # drop the unused values, keeping their order
        remap = np.cumsum(used, dtype=np.int64) - 1
        codes = remap[v].astype(np.int32)
    return codes, np.array([str(x) for x in values], dtype=object), np.arange(len(values))


def _narrow(codes: np.ndarray) -> np.ndarray:
    dtype = np.int32 if len(codes) == 0 or codes.max() < 2**31 - 1 else np.int64
    return np.ascontiguousarray(codes, dtype=dtype)


def check_term(term: ReTerm, n: int) -> None:
    """lme4's checks on a grouping factor: at least 2 levels and fewer levels than rows."""
    if term.nlevels < 2:
        raise GroupingError(
            f"grouping factor {term.group!r} has {term.nlevels} level; a grouping factor needs "
            "at least 2 levels to estimate a variance. Remove the term or check the column."
        )
    if term.nlevels >= n:
        raise GroupingError(
            f"grouping factor {term.group!r} has {term.nlevels} levels for {n} observations; "
            "with one observation per level its variance cannot be told apart from the residual "
            "variance. Group by a coarser factor or drop the term."
        )
