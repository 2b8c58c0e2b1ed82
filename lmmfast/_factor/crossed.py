"""Crossed random effects: MixedModels.jl's blocked Cholesky factor (Bates, Alday and
Kokandakar 2025, arXiv:2505.11674), with the rest of the factor dense.

The term whose factor has the most levels comes first (lme4's order); its diagonal
blocks are factored per level, exactly as for a single grouping factor.  Its coupling
with the other terms is kept as a list of small blocks (one per pair of levels that
occur together), and the Schur complement of the first term in the others is a dense
m x m matrix (m = effects of the other terms: 1,142 for InstEval) factored by LAPACK.
CHOLMOD on the same matrix spends most of its time on thousands of tiny supernodes
(one per level of the large factor), so this is several times faster for crossed designs
whose smaller factors have up to a few thousand levels.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import cholesky, lapack, solve_triangular

from .. import _blockdiag, _schur
from .._errors import DataError
from .._sources.crossprod import CrossProducts
from .._terms import ReTerm

MAX_DENSE = 4000  # above this many effects in the other terms, CHOLMOD's sparsity wins


class CrossedFactor:
    """L = [L11 0; L21 L22]: L11 per level of term 1, L21 sparse blocks, L22 dense."""

    kind = "crossed"

    @property
    def has_gradient(self) -> bool:
        """The analytic gradient is implemented for scalar terms ((1 | u) + (1 | v) ...)."""
        return all(t.q == 1 for t in self.terms)

    def __init__(self, cp: CrossProducts, terms: list[ReTerm]):
        self.terms = terms
        t1 = terms[0]
        sizes = [t.nlevels * t.q for t in terms[1:]]
        self.off = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)  # rows of the rest
        self.m = int(self.off[-1])
        from .._memory import check_allocation

        check_allocation(
            4 * 8 * self.m**2, f"the dense {self.m} x {self.m} Schur complement",
            "Fewer levels in the smaller grouping factors would help.",
        )  # fmt: skip
        self.D1 = np.ascontiguousarray(cp.D[0])
        self.ZXY1 = np.ascontiguousarray(cp.ZXY[0])
        self.ZXY2 = [np.ascontiguousarray(z) for z in cp.ZXY[1:]]
        Tsz = [t.q * t.q for t in terms]
        self.Toff = np.concatenate([[0], np.cumsum(Tsz)[:-1]]).astype(np.int64)
        # coupling blocks of term 1 with every later term, listed level by level of term 1
        js, rows, qes, toffs, blocks = [], [], [], [], []
        # rest blocks (A22): flat indices into the dense m x m matrix, lower triangle
        self._a22_src, self._a22_idx = [], []
        for k, t in enumerate(terms[1:], start=1):
            j, a, b = np.indices((t.nlevels, t.q, t.q)).reshape(3, -1)
            r = self.off[k - 1] + j * t.q
            keep = a >= b
            self._a22_idx.append(((r + a) * self.m + r + b)[keep])
            self._a22_src.append(("D", k, np.flatnonzero(keep)))
        for pr in cp.pairs:
            qt, qu = terms[pr.t].q, terms[pr.u].q
            if pr.t == 0:
                js.append(pr.levels[:, 0])
                rows.append(self.off[pr.u - 1] + pr.levels[:, 1] * qu)
                qes.append(np.full(len(pr.levels), qu))
                toffs.append(np.full(len(pr.levels), self.Toff[pr.u]))
                blocks.append(pr.O.reshape(len(pr.levels), -1))
            else:  # a block of A22 below the diagonal: rows of u, columns of t
                m_, a, b = np.indices((len(pr.levels), qt, qu)).reshape(3, -1)
                r = self.off[pr.u - 1] + pr.levels[m_, 1] * qu + b
                c = self.off[pr.t - 1] + pr.levels[m_, 0] * qt + a
                self._a22_idx.append(r * self.m + c)
                self._a22_src.append(("O", cp.pairs.index(pr), None))
        self.pairs = cp.pairs
        self.D = cp.D
        j = np.concatenate(js) if js else np.zeros(0, np.int64)
        order = np.lexsort((np.concatenate(rows), j))  # by level of term 1, then by row
        sizes_e = np.concatenate([b.shape[1] * np.ones(len(b), np.int64) for b in blocks])
        flat = np.concatenate([b.ravel() for b in blocks]) if blocks else np.zeros(0)
        start = np.concatenate([[0], np.cumsum(sizes_e)[:-1]]).astype(np.int64)
        self.j = j[order].astype(np.int64)
        self.row = np.concatenate(rows)[order].astype(np.int64)
        self.qe = np.concatenate(qes)[order].astype(np.int64)
        self.toff = np.concatenate(toffs)[order].astype(np.int64)
        self.ooff = start[order]
        self.O = flat
        self.ptr = np.zeros(t1.nlevels + 1, dtype=np.int64)
        np.cumsum(np.bincount(self.j, minlength=t1.nlevels), out=self.ptr[1:])
        self.W = np.zeros_like(flat)
        p1 = cp.XtXy.shape[0]
        self.L11 = np.zeros((t1.nlevels, t1.q, t1.q))
        self.c1 = np.zeros((t1.nlevels, t1.q, p1))
        self._C1 = np.zeros((1, p1, p1))
        self._ld1 = np.zeros(1)
        self.a22_idx = np.concatenate(self._a22_idx)
        self.qvalues = np.unique(self.qe)  # the widths of the coupling blocks
        self.diag_idx = np.arange(self.m) * (self.m + 1)

    def _a22_values(self, Ts: list[np.ndarray]) -> np.ndarray:
        vals = []
        for kind, k, sel in self._a22_src:
            if kind == "D":
                T = Ts[k]
                vals.append((T.T @ self.D[k] @ T).ravel()[sel])
            else:
                pr = self.pairs[k]
                vals.append((Ts[pr.t].T @ pr.O @ Ts[pr.u]).ravel())
        return np.concatenate(vals)

    def update(self, Ts: list[np.ndarray]) -> tuple[float, np.ndarray]:
        T1 = np.ascontiguousarray(Ts[0])
        _blockdiag.update(T1, self.D1, self.ZXY1, self.L11, self.c1, self._C1, self._ld1)
        ld1 = float(self._ld1[0])
        S = np.zeros((self.m, self.m))
        S.flat[self.a22_idx] = self._a22_values(Ts)
        S.flat[self.diag_idx] += 1.0
        rhs = np.vstack([(T.T @ Z).reshape(-1, Z.shape[2]) for T, Z in zip(Ts[1:], self.ZXY2)])
        Tflat = np.concatenate([np.ascontiguousarray(T).ravel() for T in Ts])
        _schur.schur(
            self.ptr, self.row, self.qe, self.toff, self.ooff, self.O, Tflat, T1,
            self.L11, self.c1, self.W, S, rhs,
        )  # fmt: skip
        try:
            self.L22 = cholesky(S, lower=True, overwrite_a=True, check_finite=False)
        except np.linalg.LinAlgError:
            raise DataError("the random-effects system is not positive definite") from None
        self.c2 = solve_triangular(self.L22, rhs, lower=True, check_finite=False)
        ldL2 = ld1 + 2.0 * np.sum(np.log(np.diag(self.L22)))
        C1 = np.tril(self._C1[0]) + np.tril(self._C1[0], -1).T
        return ldL2, C1 + self.c2.T @ self.c2

    def _G_times(self, v: list[np.ndarray]) -> list[np.ndarray]:
        """Z'WZ v for scalar terms, v given per term as (l, k) arrays."""
        out = [D[:, 0, 0][:, None] * vt for D, vt in zip(self.D, v)]
        for pr in self.pairs:
            o = pr.O[:, 0, 0]
            a, b = pr.levels[:, 0], pr.levels[:, 1]
            for c in range(v[0].shape[1]):
                out[pr.t][:, c] += np.bincount(a, o * v[pr.u][b, c], minlength=len(out[pr.t]))
                out[pr.u][:, c] += np.bincount(b, o * v[pr.t][a, c], minlength=len(out[pr.u]))
        return out

    def gradient(self, Ts, beta, P, scale: float, reml: bool) -> np.ndarray:
        """d objective / d theta for scalar terms, at the last update.

        log|A|: for theta_i > 0, Lambda_i = Lambda D_i / theta_i gives
        2 tr(A^{-1} Lambda'Z'WZ Lambda_i) = (2 / theta_i)(l_i - sum_{j in i} (A^{-1})_jj);
        the diagonal of A^{-1} is diag(S^{-1}) for the later terms and, for term 1,
        (1 + w_j' S^{-1} w_j) / L11_j^2 with w_j column j of L21.  pwrss and REML's
        log|X'V^{-1}X| as for one grouping factor (see src/_blockdiag.pyx, gradient).
        """
        theta = np.array([T[0, 0] for T in Ts])
        sizes = [t.nlevels for t in self.terms]
        Sinv, info = lapack.dpotri(self.L22, lower=1)  # lower triangle of S^{-1}
        Sinv = np.ascontiguousarray(Sinv)
        if info != 0:
            raise FloatingPointError("cannot invert the Schur complement")
        dS = np.diag(Sinv)
        mid = np.ones((self.terms[0].nlevels, 1, 1))
        _schur.condvar_first(self.ptr, self.row, self.qe, self.ooff, self.W, Sinv, mid)
        traces = [np.sum(mid[:, 0, 0] / self.L11[:, 0, 0] ** 2)]
        traces += [dS[self.off[k] : self.off[k + 1]].sum() for k in range(len(self.terms) - 1)]
        g = np.where(theta > 0, 2.0 / np.where(theta > 0, theta, 1.0)
                     * (np.array(sizes) - np.array(traces)), 0.0)  # fmt: skip
        # pwrss: -2 s'Lambda_i u, s = Z'W(y - X beta) - Z'WZ Lambda u
        u = [x[:, 0] for x in self.spherical_modes(beta)]
        Gb = [x[:, 0] for x in self._G_times([th * ut[:, None] for th, ut in zip(theta, u)])]
        ZX = [self.ZXY1[:, 0, :]] + [z[:, 0, :] for z in self.ZXY2]
        s = [zx[:, -1] - zx[:, :-1] @ beta - gb for zx, gb in zip(ZX, Gb)]
        g += scale * np.array([-2 * np.sum(st * ut) for st, ut in zip(s, u)])
        if reml and len(beta):
            # H = Z'WX - Z'WZ Lambda A^{-1} Lambda'Z'WX, with A^{-1} Lambda'Z'WX = L^{-T} c_X
            v = self._back_solve(self.c1[:, 0, :-1], self.c2[:, :-1])
            Gv = self._G_times([th * vt for th, vt in zip(theta, v)])
            H = [zx[:, :-1] - gv for zx, gv in zip(ZX, Gv)]
            g += np.array([-2 * th * np.sum((h @ P) * h) for th, h in zip(theta, H)])
        return g

    def _back_solve(self, c1: np.ndarray, c2: np.ndarray) -> list[np.ndarray]:
        """L^{-T} [c1; c2] for scalar terms, per term as (l, k)."""
        x2 = solve_triangular(self.L22, c2, lower=True, trans="T", check_finite=False)
        r1 = c1.copy()
        w = self.W[self.ooff]
        for c in range(r1.shape[1]):
            r1[:, c] -= np.bincount(self.j, w * x2[self.row, c], minlength=len(r1))
        x1 = r1 / self.L11[:, 0, 0][:, None]
        return [x1] + [x2[self.off[k] : self.off[k + 1]] for k in range(len(self.terms) - 1)]

    def inverse_blocks(self) -> list[np.ndarray]:
        """Diagonal blocks of A^{-1} per term, (l, q, q), from L = [L11 0; L21 L22]:
        (A^{-1})_22 = S^{-1}, (A^{-1})_11 block j = L11_j^{-T}(I + W_j' S^{-1} W_j)L11_j^{-1}."""
        L22inv = solve_triangular(self.L22, np.eye(self.m), lower=True, check_finite=False)
        Sinv = L22inv.T @ L22inv
        q1 = self.terms[0].q
        mid = np.repeat(np.eye(q1)[None], self.terms[0].nlevels, axis=0)
        _schur.condvar_first(self.ptr, self.row, self.qe, self.ooff, self.W, Sinv, mid)
        Linv = np.linalg.inv(np.tril(self.L11))
        out = [Linv.transpose(0, 2, 1) @ mid @ Linv]
        for k, t in enumerate(self.terms[1:]):
            r = self.off[k] + np.arange(t.nlevels)[:, None] * t.q + np.arange(t.q)
            out.append(Sinv[r[:, :, None], r[:, None, :]])
        return out

    def spherical_modes(self, beta: np.ndarray) -> list[np.ndarray]:
        rhs2 = self.c2[:, -1] - self.c2[:, :-1] @ beta
        u2 = solve_triangular(self.L22, rhs2, lower=True, trans="T", check_finite=False)
        q1 = self.terms[0].q
        r1 = self.c1[:, :, -1] - self.c1[:, :, :-1] @ beta
        if q1 == 1 and len(self.qvalues) == 1 and self.qvalues[0] == 1:  # scalar terms
            r1[:, 0] -= np.bincount(self.j, self.W[self.ooff] * u2[self.row], minlength=len(r1))
            u1 = r1 / self.L11[:, :, 0]
            return [u1] + [
                u2[self.off[k] : self.off[k + 1]].reshape(t.nlevels, t.q)
                for k, t in enumerate(self.terms[1:])
            ]
        for qu in self.qvalues:  # r1_j -= sum_e W_e' u2[e]
            sel = np.flatnonzero(self.qe == qu)
            Wm = self.W[self.ooff[sel, None] + np.arange(qu * q1)].reshape(len(sel), qu, q1)
            useg = u2[self.row[sel, None] + np.arange(qu)]
            contrib = np.einsum("eab,ea->eb", Wm, useg)
            for b in range(q1):
                r1[:, b] -= np.bincount(self.j[sel], contrib[:, b], minlength=len(r1))
        Lt = np.triu(self.L11.transpose(0, 2, 1))
        u1 = np.linalg.solve(Lt, r1[:, :, None])[:, :, 0]
        return [u1] + [
            u2[self.off[k] : self.off[k + 1]].reshape(t.nlevels, t.q)
            for k, t in enumerate(self.terms[1:])
        ]
