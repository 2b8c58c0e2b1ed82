"""General random effects (crossed, nested, several factors): CHOLMOD on a fixed pattern.

The lower triangle of Lambda'Z'WZ Lambda is laid out once as a CSC matrix whose
pattern is that of Z'WZ at block level (every block dense, explicit zeros kept), and
CHOLMOD analyses it once.  Per theta, the scaled blocks T_t' B T_u are written into
that matrix's data array through a fixed index map (never rebuilt with scipy
arithmetic, which would drop zeros and change the pattern), and CHOLMOD refactors
A + I numerically.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .. import _selinv
from .._sources.crossprod import CrossProducts
from .._terms import ReTerm
from .gradient import GradientAssembly


class SparseFactor:
    """L L' = P(Lambda'Z'WZ Lambda + I)P' by CHOLMOD, analysed once."""

    kind = "cholmod"

    def __init__(self, cp: CrossProducts, terms: list[ReTerm], analysis=None):
        # scikit-sparse is loaded here, when a design needs CHOLMOD, not on `import lmmfast`
        # (cholmod.py imports only numpy, scipy and sksparse: no cycle is hidden by this)
        from .cholmod import SymbolicCholesky

        self.terms, self.cp = terms, cp
        sizes = [t.nlevels * t.q for t in terms]
        self.off = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        nq = int(self.off[-1])
        rows, cols = [], []
        for k, t in enumerate(terms):  # diagonal blocks: entry (j, a, b) of D_k
            j, a, b = np.indices((t.nlevels, t.q, t.q)).reshape(3, -1)
            rows.append(self.off[k] + j * t.q + a)
            cols.append(self.off[k] + j * t.q + b)
        for pr in cp.pairs:  # block (level pair m) of Z_t'WZ_u lies at rows of u, cols of t
            qt, qu = terms[pr.t].q, terms[pr.u].q
            m, a, b = np.indices((len(pr.levels), qt, qu)).reshape(3, -1)
            rows.append(self.off[pr.u] + pr.levels[m, 1] * qu + b)
            cols.append(self.off[pr.t] + pr.levels[m, 0] * qt + a)
        rows, cols = np.concatenate(rows), np.concatenate(cols)
        src = np.flatnonzero(rows >= cols)  # lower triangle, as CHOLMOD reads it
        order = np.lexsort((rows[src], cols[src]))
        self.src = src[order]  # data[k] = scaled block values[src[k]]
        indptr = np.zeros(nq + 1, dtype=np.int64)
        np.cumsum(np.bincount(cols[self.src], minlength=nq), out=indptr[1:])
        self.A = sp.csc_matrix(
            (np.ones(len(self.src)), rows[self.src].astype(np.int64), indptr), shape=(nq, nq)
        )
        # the pattern depends only on the grouping factors: a refit reuses the analysis
        self.chol = analysis if analysis is not None else SymbolicCholesky(self.A)
        self._S = None
        self.assembly = GradientAssembly(cp)
        self._lookup = None  # positions of the needed entries of A^{-1} in the factor's pattern

    def update(self, Ts: list[np.ndarray]) -> tuple[float, np.ndarray]:
        """Refactor for the terms' T; return log|L|^2 and M'(Lambda'Z'WZ Lambda + I)^{-1}M."""
        vals = [(T.T @ D @ T).ravel() for T, D in zip(Ts, self.cp.D)]
        vals += [(Ts[pr.t].T @ pr.O @ Ts[pr.u]).ravel() for pr in self.cp.pairs]
        self.A.data[:] = np.concatenate(vals)[self.src]
        self.chol.refactor(self.A, beta=1.0)
        M = np.vstack(  # Lambda'Z'W[X y]
            [(T.T @ Z).reshape(-1, Z.shape[2]) for T, Z in zip(Ts, self.cp.ZXY)]
        )
        self._S = self.chol.solve(M)
        return self.chol.logdet(), M.T @ self._S

    def _wanted(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """(rows, cols) of the blocks of A^{-1} the gradient reads: each term's level
        blocks, then each pair's."""
        out = []
        for k, t in enumerate(self.terms):
            r = self.off[k] + np.arange(t.nlevels)[:, None] * t.q + np.arange(t.q)
            out.append((r[:, :, None], r[:, None, :]))
        for pr in self.cp.pairs:
            qt, qu = self.terms[pr.t].q, self.terms[pr.u].q
            rt = self.off[pr.t] + pr.levels[:, 0][:, None] * qt + np.arange(qt)
            ru = self.off[pr.u] + pr.levels[:, 1][:, None] * qu + np.arange(qu)
            out.append((rt[:, :, None], ru[:, None, :]))
        return out

    def selected_inverse(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Blocks of A^{-1} on the pattern of Z'WZ from the Takahashi recurrence on CHOLMOD's
        factor (src/_selinv.pyx): per term (l, q, q), per pair (npair, q_t, q_u)."""
        L, perm = self.chol.factor()
        n = L.shape[0]
        indptr, indices = L.indptr.astype(np.int64), L.indices.astype(np.int64)
        if self._lookup is None or self._lookup[0] != L.nnz:
            pinv = np.empty(n, dtype=np.int64)
            pinv[perm] = np.arange(n)
            cols = np.repeat(np.arange(n, dtype=np.int64), np.diff(indptr))
            keys = cols * n + indices  # sorted: by column, then row
            pos = []
            for ri, rj in self._wanted():
                a, b = np.broadcast_arrays(pinv[ri], pinv[rj])
                want = np.minimum(a, b) * n + np.maximum(a, b)
                at = np.searchsorted(keys, want)
                pos.append(at)
            self._lookup = (L.nnz, pos)
        Zx = np.zeros(L.nnz)
        _selinv.takahashi(
            indptr, indices, np.ascontiguousarray(L.data), Zx, np.full(n, -1, np.int64), np.zeros(n)
        )
        blocks = [Zx[at] for at in self._lookup[1]]
        K = len(self.terms)
        return blocks[:K], blocks[K:]

    def gradient(self, Ts, beta, P, scale: float, reml: bool) -> np.ndarray:
        """d objective / d theta at the last update (see gradient.py)."""
        Zd, Zp = self.selected_inverse()
        p1 = self._S.shape[1]
        Y = [self._S[self.off[k] : self.off[k + 1]].reshape(t.nlevels, t.q, p1)
             for k, t in enumerate(self.terms)]  # fmt: skip
        return self.assembly.gradient(Ts, Zd, Zp, Y, beta, P, scale, reml)

    def inverse_blocks(self, batch: int = 256) -> list[np.ndarray]:
        """Diagonal blocks of A^{-1} per term, (l, q, q), by solving for unit vectors in
        batches (each batch: whole levels, at most `batch` columns)."""
        out = []
        for k, t in enumerate(self.terms):
            blocks = np.empty((t.nlevels, t.q, t.q))
            per = max(1, batch // t.q)
            for j0 in range(0, t.nlevels, per):
                j1 = min(t.nlevels, j0 + per)
                cols = np.arange(self.off[k] + j0 * t.q, self.off[k] + j1 * t.q)
                E = np.zeros((int(self.off[-1]), len(cols)))
                E[cols, np.arange(len(cols))] = 1.0
                X = self.chol.solve(E)[cols].reshape(j1 - j0, t.q, j1 - j0, t.q)
                lv = np.arange(j1 - j0)
                blocks[j0:j1] = X[lv, :, lv, :]
            out.append(blocks)
        return out

    def spherical_modes(self, beta: np.ndarray) -> list[np.ndarray]:
        """u = (Lambda'Z'WZ Lambda + I)^{-1} Lambda'Z'W(y - X beta) for the last update."""
        u = self._S[:, -1] - self._S[:, :-1] @ beta
        return [
            u[self.off[k] : self.off[k + 1]].reshape(t.nlevels, t.q)
            for k, t in enumerate(self.terms)
        ]
