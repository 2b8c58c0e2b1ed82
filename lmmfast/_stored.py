"""What the profiled objective needs, kept as data: the blocks of A and the terms' layout.

A fit keeps this record when it is pickled or saved, so that a loaded fit can rebuild its
objective (ProfiledDeviance) without the rows: Satterthwaite's df, likelihood-ratio tests
(an ML refit from A), profile intervals all read A only.  A is small (per level q x q and
q x (p+1) blocks, per level pair of crossed factors q_t x q_u, and (p+1) x (p+1)), and it
is what the objective already holds in memory, so keeping it costs nothing while fitting.
The factorization is rebuilt of the kind the fit used, so a loaded fit computes exactly
what the original did.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ._factor.blocked import BlockedFactor, ClusteredFactor, nesting_maps
from ._factor.crossed import CrossedFactor
from ._factor.sparse import SparseFactor
from ._pls import ProfiledDeviance
from ._sources.crossprod import CrossProducts, TermPair
from ._terms import ReTerm


@dataclass(eq=False)
class StoredObjective:
    """A's blocks (X restricted to the kept columns) and, per term, its name, columns and
    number of levels; `maps`: for nested factors, each term's levels -> clusters."""

    n: int
    ldW: float
    kind: str  # the factorization: blocked, nested, crossed or cholmod
    groups: list[str]
    cnames: list[list[str]]
    nlevels: list[int]
    cp: CrossProducts
    maps: list[np.ndarray] | None = None
    _rows_terms: list | None = field(default=None, repr=False)  # to find maps; not pickled

    @classmethod
    def of(cls, dev: ProfiledDeviance) -> StoredObjective:
        return cls(
            dev.n, float(dev.ldW), dev.factorization, [t.group for t in dev.terms],
            [list(t.cnames) for t in dev.terms], [t.nlevels for t in dev.terms], dev.cp,
            _rows_terms=dev.terms,
        )  # fmt: skip

    def _nesting(self) -> list[np.ndarray] | None:
        """The nested design's level -> cluster maps, found from the rows' level codes the
        first time they are needed (pickling, saving), so a fit does not pay for them."""
        if self.kind == "nested" and self.maps is None and self._rows_terms is not None:
            self.maps = nesting_maps(self._rows_terms)
        return self.maps

    def __getstate__(self):
        self._nesting()
        return {**self.__dict__, "_rows_terms": None}

    def terms(self) -> list[ReTerm]:
        """The terms as the factorizations read them: layout only, no rows."""
        none = np.zeros(0, dtype=np.int32)
        return [
            ReTerm(g, c, none, np.arange(k), np.arange(k), [])
            for g, c, k in zip(self.groups, self.cnames, self.nlevels)
        ]

    def deviance(self, reml: bool, cp: CrossProducts | None = None, like=None) -> ProfiledDeviance:
        """The objective of this design (for cross-products `cp`, default the stored ones);
        `like`: a factorization of the same design, whose CHOLMOD analysis is reused."""
        cp = self.cp if cp is None else cp
        terms = self.terms()
        if self.kind == "blocked":
            factor = BlockedFactor(cp, terms)
        elif self.kind == "nested":
            factor = ClusteredFactor(cp, terms, self._nesting())
        elif self.kind == "crossed":
            factor = CrossedFactor(cp, terms)
        else:
            analysis = like.chol if isinstance(like, SparseFactor) else None
            factor = SparseFactor(cp, terms, analysis=analysis)
        return ProfiledDeviance(cp, terms, self.n, reml, self.ldW, factor=factor)

    # ----- as arrays and JSON (lmmfast.save / load) ---------------------------------------
    def to_arrays(self) -> tuple[dict, dict]:
        """Arrays (name -> ndarray) and a JSON-able document that from_arrays reads back."""
        cp = self.cp
        a = {"XtXy": cp.XtXy}
        for k, (D, Z) in enumerate(zip(cp.D, cp.ZXY)):
            a[f"D{k}"], a[f"ZXY{k}"] = D, Z
        for k, pair in enumerate(cp.pairs):
            a[f"pair{k}_levels"], a[f"pair{k}_O"] = pair.levels, pair.O
        for k, m in enumerate(self._nesting() or []):
            a[f"map{k}"] = m
        meta = {"n": self.n, "ldW": self.ldW, "kind": self.kind, "groups": self.groups,
                "cnames": self.cnames, "nlevels": [int(k) for k in self.nlevels],
                "nested": self._nesting() is not None,
                "pairs": [[int(p.t), int(p.u)] for p in cp.pairs]}  # fmt: skip
        return a, meta

    @classmethod
    def from_arrays(cls, a: dict, meta: dict) -> StoredObjective:
        K = len(meta["groups"])
        pairs = [
            TermPair(t, u, a[f"pair{k}_levels"], a[f"pair{k}_O"])
            for k, (t, u) in enumerate(meta["pairs"])
        ]
        cp = CrossProducts([a[f"D{k}"] for k in range(K)], pairs,
                           [a[f"ZXY{k}"] for k in range(K)], a["XtXy"])  # fmt: skip
        maps = [a[f"map{k}"] for k in range(K)] if meta["nested"] else None
        return cls(meta["n"], meta["ldW"], meta["kind"], meta["groups"], meta["cnames"],
                   meta["nlevels"], cp, maps)  # fmt: skip
