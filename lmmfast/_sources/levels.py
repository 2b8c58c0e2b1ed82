"""Level codes that are the same in every batch: the first pass over batched rows.

In memory, encode_groups (lmmfast/_terms.py) numbers a grouping factor's levels by first
appearance (or, for integer labels and pandas categoricals, by value / category order) and
keeps R's factor order beside them.  A batched source cannot see all rows at once, so a
first, cheap pass collects per batch the distinct values of the grouping and categorical
columns among the rows kept (na.omit), in order of appearance; the per-batch results are
merged in batch order (a monoid: any tree of merges that keeps the order gives the same
result).  The encoders built from the merged values then give every batch the codes, labels
and order that encode_groups gives the whole data.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .._errors import DataError
from .._terms import _narrow

SAMPLE_ROWS = 64  # rows kept to build formulaic's model spec on a small prototype frame


@dataclass(eq=False)
class Scan:
    """What the first pass learns from some batches (merge keeps batch order)."""

    n_rows: int = 0
    n_kept: int = 0
    values: dict = field(default_factory=dict)  # column -> distinct values, first appearance
    categories: dict = field(default_factory=dict)  # categorical column -> category order
    combos: dict = field(default_factory=dict)  # factors tuple -> distinct rows (DataFrame)
    sample: pd.DataFrame | None = None  # the first kept rows (the columns' dtypes and values)

    def merge(self, other: Scan) -> Scan:
        """self's batches, then other's."""
        values = {c: _unique(np.concatenate([v, other.values[c]])) for c, v in self.values.items()}
        cats = {c: _union(v, other.categories.get(c, [])) for c, v in self.categories.items()}
        for c, v in other.categories.items():
            cats.setdefault(c, v)
        combos = {
            f: pd.concat([v, other.combos[f]], ignore_index=True).drop_duplicates()
            for f, v in self.combos.items()
        }
        sample = self.sample
        if sample is None or (len(sample) < SAMPLE_ROWS and other.sample is not None):
            parts = [s for s in (sample, other.sample) if s is not None and len(s)]
            sample = (
                pd.concat(parts).head(SAMPLE_ROWS)
                if parts
                else (sample if sample is not None else other.sample)
            )
        return Scan(self.n_rows + other.n_rows, self.n_kept + other.n_kept, values, cats,
                    combos, sample)  # fmt: skip


def scan_batch(frame: pd.DataFrame, n_rows: int, level_cols, combo_factors) -> Scan:
    """The first pass on one batch: `frame` holds the kept rows of a batch of n_rows."""
    values, cats = {}, {}
    for c in level_cols:
        col = frame[c]
        if isinstance(col.dtype, pd.CategoricalDtype):
            cats[c] = list(col.cat.categories)
            values[c] = _unique(np.asarray(col.astype(object)))
        else:
            values[c] = _unique(col.to_numpy())
    combos = {f: frame[list(f)].drop_duplicates().reset_index(drop=True) for f in combo_factors}
    for f, d in combos.items():
        combos[f] = d.astype(object)
    return Scan(n_rows, len(frame), values, cats, combos, frame.head(SAMPLE_ROWS))


def _unique(v: np.ndarray) -> np.ndarray:
    return np.asarray(pd.unique(v))


def _union(a: list, b: list) -> list:
    seen = set(a)
    return list(a) + [x for x in b if x not in seen]


class ColumnEncoder:
    """One column's levels, as encode_groups' _encode_column finds them on the kept rows."""

    def __init__(self, values: np.ndarray, categories, n: int):
        self.table = self.index = None
        if categories is not None:  # a pandas categorical: category order, unused dropped
            used = set(values.tolist())
            cats = [c for c in categories if c in used]
            self.index = pd.Index(cats, dtype=object)
            self.labels = np.array([str(c) for c in cats], dtype=object)
            self.ranks = np.arange(len(cats))
            return
        if values.dtype.kind in "iu" and len(values):
            lo, hi = int(values.min()), int(values.max())
            if lo >= 0 and hi < 2 * n + 1024 and hi < 2**31 - 1:  # _integer_codes' rule
                vals = np.sort(values)
                self.table = np.full(hi + 1, -1, dtype=np.int32)
                self.table[vals] = np.arange(len(vals), dtype=np.int32)
                self.labels = np.array([str(x) for x in vals], dtype=object)
                self.ranks = np.arange(len(vals))
                return
        self.index = pd.Index(values)
        self.labels = np.array([str(u) for u in values], dtype=object)
        self.ranks = np.empty(len(values), dtype=np.int64)
        try:
            self.ranks[np.argsort(values, kind="stable")] = np.arange(len(values))
        except TypeError:  # mixed types: order by their text
            self.ranks[np.argsort(values.astype(str), kind="stable")] = np.arange(len(values))

    def encode(self, col: pd.Series) -> np.ndarray:
        """Codes of a column's (non-missing) values."""
        if self.table is not None:
            v = col.to_numpy()
            if v.dtype.kind in "iu" and (len(v) == 0 or 0 <= v.min() <= v.max() < len(self.table)):
                return self._lookup(self.table[v])
            return self._lookup(pd.Index(np.flatnonzero(self.table >= 0)).get_indexer(v))
        if isinstance(col.dtype, pd.CategoricalDtype):
            tab = self.index.get_indexer(col.cat.categories.astype(object))
            return self._lookup(tab[col.cat.codes.to_numpy()])
        return self._lookup(self.index.get_indexer(col.to_numpy()))

    @staticmethod
    def _lookup(codes: np.ndarray) -> np.ndarray:
        if len(codes) and codes.min() < 0:
            raise DataError(
                "a batch has a level that the first pass over the data did not see: the data "
                "changed between the two passes; fit again on data that do not change"
            )
        return codes


class GroupEncoder:
    """A grouping factor (one column or the interaction of several): codes in every batch,
    labels and R's level order exactly as encode_groups gives them on all the rows."""

    def __init__(self, factors: tuple, scan: Scan, columns: dict):
        self.factors = factors
        self.parts = [columns[f] for f in factors]
        if len(factors) == 1:
            enc = self.parts[0]
            self.labels, self.order = enc.labels, np.argsort(enc.ranks, kind="stable")
            self.keys = None
            return
        combos = scan.combos[factors]
        comp = [enc.encode(_series(combos[f])) for f, enc in zip(factors, self.parts)]
        keys = self._key(comp)
        self.keys = pd.Index(keys)
        self.labels = np.array(
            [":".join(str(p.labels[c]) for p, c in zip(self.parts, cs)) for cs in zip(*comp)],
            dtype=object,
        )
        self.order = np.lexsort([p.ranks[c] for p, c in zip(reversed(self.parts), reversed(comp))])

    @property
    def nlevels(self) -> int:
        return len(self.labels)

    def _key(self, comp) -> np.ndarray:
        key = np.zeros(len(comp[0]), dtype=np.int64)
        for c, enc in zip(comp, self.parts):
            key = key * len(enc.labels) + c
        return key

    def encode(self, frame: pd.DataFrame) -> np.ndarray:
        if self.keys is None:
            return _narrow(self.parts[0].encode(frame[self.factors[0]]))
        comp = [enc.encode(frame[f]) for f, enc in zip(self.factors, self.parts)]
        return _narrow(ColumnEncoder._lookup(self.keys.get_indexer(self._key(comp))))


def _series(values) -> pd.Series:
    return pd.Series(np.asarray(values, dtype=object))


def column_encoders(scan: Scan, factor_cols, n: int) -> dict:
    return {c: ColumnEncoder(scan.values[c], scan.categories.get(c), n) for c in factor_cols}
