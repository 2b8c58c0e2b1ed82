"""Per-cluster factorization: every term on one grouping factor (src/_blockdiag.pyx).

Then Lambda'Z'WZ Lambda + I is block-diagonal, one Q x Q block per level (Q = the
terms' columns together), and the blocks are factored directly, with no sparse
machinery: the common case (students in schools, patients over time) and the fast one.
"""

from __future__ import annotations

import itertools

import numpy as np
from scipy.linalg import blas, solve_triangular

from .. import _blockdiag
from .._sources.crossprod import CrossProducts, _sum_chunks, lower_mask, mirror_lower
from .._terms import ReTerm
from .._threads import PARALLEL_LEVELS, kernel_threads
from .gradient import GradientAssembly


def is_block_diagonal(terms: list[ReTerm]) -> bool:
    """True when all terms share one grouping factor (one level partition of the rows)."""
    first = terms[0]
    return all(t.codes is first.codes or np.array_equal(t.codes, first.codes) for t in terms[1:])


class BlockedFactor:
    """L_j L_j' = T' B_j T + I for each level j, T = blockdiag(T_1, ..., T_K)."""

    kind = "blocked"

    def __init__(self, cp: CrossProducts, terms: list[ReTerm]):
        self.terms = terms
        self.qoff = np.array([0, *itertools.accumulate(t.q for t in terms)])
        Q, nlev, p1 = int(self.qoff[-1]), terms[0].nlevels, cp.XtXy.shape[0]
        if len(terms) == 1:  # its D is B
            B = np.array(cp.D[0], dtype=np.float64, order="C")
        else:
            B = np.zeros((nlev, Q, Q))
            for k, D in enumerate(cp.D):
                s = self._cols(k)
                B[:, s, s] = D
        for pr in cp.pairs:  # terms on the same factor: level j pairs with level j
            st, su = self._cols(pr.t), self._cols(pr.u)
            B[pr.levels[:, 0], st, su] = pr.O
            B[pr.levels[:, 0], su, st] = pr.O.transpose(0, 2, 1)
        self.B = B
        self.ZXY = np.ascontiguousarray(np.concatenate(cp.ZXY, axis=1))
        self.L = np.zeros((nlev, Q, Q))
        self.cu = np.empty((nlev, Q, p1))
        self.threads = kernel_threads(nlev, PARALLEL_LEVELS)
        self._C = np.empty((self.threads, p1, p1))
        self._ld = np.empty(self.threads)
        self._lower = lower_mask(p1)
        # theta's entry T_t[a, b] (a >= b, column-major) in F: found once, not per gradient
        rows = [o + b for k, t in enumerate(terms) for o in [int(self.qoff[k])]
                for b in range(t.q) for a in range(b, t.q)]  # fmt: skip
        cols = [o + a for k, t in enumerate(terms) for o in [int(self.qoff[k])]
                for b in range(t.q) for a in range(b, t.q)]  # fmt: skip
        self._theta_at = (np.array(rows, dtype=np.intp), np.array(cols, dtype=np.intp))
        self._theta_flat = self._theta_at[0] * Q + self._theta_at[1]  # the same, in F[0].ravel()
        # many fixed effects (a factor with many levels): the kernel does the blocks and y,
        # BLAS the p-wide part (R_ZX and R_ZX'R_ZX: nlev Q p^2 flops at BLAS speed)
        self.wide = p1 > WIDE_X
        # the gradient's outputs and scratch, allocated once (its kernel overwrites them)
        self._F = np.empty((self.threads, Q, Q))
        self._work = np.zeros((self.threads, 3 + 2 * (p1 - 1), Q))
        if self.wide:
            self._ZY = np.ascontiguousarray(self.ZXY[:, :, -1:])
            self._cuy = np.empty((nlev, Q, 1))
            self._C = np.empty((self.threads, 1, 1))
        self._kernel = self._kernel_of()

    def _kernel_of(self):
        """The narrow X's kernel calls on this factor's arrays (None for a wide X)."""
        if self.wide:
            return None
        return _blockdiag.Blocked(
            self.B, self.ZXY, self.L, self.cu, self._C, self._ld, self._F, self._work, self.threads
        )

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "_kernel"}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._kernel = self._kernel_of()

    def _cols(self, k: int) -> slice:
        return slice(int(self.qoff[k]), int(self.qoff[k + 1]))

    def _T(self, Ts: list[np.ndarray]) -> np.ndarray:
        """blockdiag(T_1, ..., T_K), the per-level factor of Lambda."""
        if len(Ts) == 1:
            return np.ascontiguousarray(Ts[0])
        T = np.zeros((int(self.qoff[-1]),) * 2)
        for k, Tk in enumerate(Ts):
            T[self._cols(k), self._cols(k)] = Tk
        return T

    def update(self, Ts: list[np.ndarray], schur: bool = True) -> tuple[float, np.ndarray]:
        """Refactor for the terms' T; return log|L|^2 and M'(Lambda'Z'WZ Lambda + I)^{-1}M
        (None for a wide X with schur=False: the caller eliminates X's columns itself)."""
        T = self._T(Ts)
        if self.wide:
            ok = _blockdiag.update(
                T, self.B, self._ZY, self.L, self._cuy, self._C, self._ld, self.threads
            )
            if not ok:
                raise FloatingPointError(NOT_POSITIVE)
            return float(_sum_chunks(self._ld)), self._wide_update(T, schur)
        ldL2, C = self.update_lower(T)  # its lower half: mirrored (one pass, no temporaries)
        return ldL2, np.where(self._lower, C, C.T)

    def update_lower(self, T: np.ndarray) -> tuple[float, np.ndarray]:
        """update() at T = blockdiag(T_1, ..., T_K) (C-contiguous) for a narrow X, with only
        the lower half of M'(...)^{-1}M (the upper is zero): all that a lower Cholesky reads.
        With one thread C is the factor's own buffer, valid until the next update."""
        if not self._kernel.update(T):
            raise FloatingPointError(NOT_POSITIVE)
        if self.threads == 1:
            return float(self._ld[0]), self._C[0]
        return float(_sum_chunks(self._ld)), _sum_chunks(self._C)

    def _wide_update(self, T: np.ndarray, schur: bool = True) -> np.ndarray | None:
        """cu_j = L_j^{-1} T' ZXY_j for all levels at once, and C = sum_j cu_j'cu_j (dsyrk)."""
        LinvTt = np.linalg.solve(_tril(self.L), np.broadcast_to(T.T, self.L.shape))
        np.matmul(LinvTt, self.ZXY, out=self.cu)
        if not schur:
            return None
        cu2 = self.cu.reshape(-1, self.cu.shape[2])
        C = blas.dsyrk(1.0, cu2, trans=1, lower=1)  # the lower half; the upper is zero
        C += C.T
        C[np.diag_indices_from(C)] *= 0.5  # exact
        return C

    def gradient(self, Ts, beta, P, scale: float, reml: bool, RX=None, hph=None) -> np.ndarray:
        """d objective / d theta at the last update (see src/_blockdiag.pyx, gradient).

        P = (R_X'R_X)^{-1}; for a wide X the caller may pass P=None and R_X instead: the
        REML part is then T'H_j R_X^{-1} R_X^{-T} H_j' by one triangular solve (BLAS), or
        hph(H) = sum_j H_j P H_j' where the caller solves with P itself."""
        T = self._T(Ts)
        if P is not None and not self.wide:
            return self.gradient_T(T, beta, P, scale, reml)
        Q, p = T.shape[0], len(beta)
        F = np.empty((self.threads, Q, Q))
        by_rx = P is None
        work = np.zeros((self.threads, 3 + (0 if by_rx else 2 * p), Q))
        _blockdiag.gradient(
            T, self.B, self.ZXY, self.L, self.cu, np.ascontiguousarray(beta, dtype=float),
            np.zeros((0, 0)) if by_rx else np.ascontiguousarray(P), scale, reml and not by_rx,
            F, work, self.threads,
        )  # fmt: skip
        F = _sum_chunks(F)
        if reml and by_rx and p:
            F -= 2.0 * T.T @ (self._reml_HPH(T, RX) if hph is None else hph(self.reml_H(T)))
        return F[self._theta_at]  # theta at T_t[a, b] (a >= b), column-major

    def gradient_T(self, T: np.ndarray, beta, P: np.ndarray, scale: float, reml: bool):
        """gradient() at T = blockdiag(T_1, ..., T_K) for a narrow X and a given P, into the
        buffers allocated once; a new array."""
        F = self._F
        self._kernel.gradient(
            T, np.ascontiguousarray(beta, dtype=float), np.ascontiguousarray(P), scale, reml
        )
        if self.threads == 1:  # F[0][self._theta_at], by one take from its flat buffer
            return F.take(self._theta_flat)
        return _sum_chunks(F)[self._theta_at]

    def _reml_HPH(self, T: np.ndarray, RX: np.ndarray) -> np.ndarray:
        """sum_j H_j P H_j' with H_j = Z_j'WX - B_j T L_j'^{-1} c_Xj and P = (R_X'R_X)^{-1}."""
        nlev, Q, p1 = self.cu.shape
        H = self.reml_H(T)
        G = solve_triangular(RX, H.reshape(-1, p1 - 1).T, trans="T", check_finite=False)
        G = G.T.reshape(nlev, Q, p1 - 1)  # H_j R_X^{-1}
        return np.einsum("jap,jbp->ab", G, G)

    def reml_H(self, T: np.ndarray) -> np.ndarray:
        """H_j = Z_j'WX - B_j T L_j'^{-1} c_Xj for every level, (l, Q, p)."""
        Lt = _triu(self.L.transpose(0, 2, 1))
        V = np.linalg.solve(Lt, self.cu[:, :, :-1])  # L_j'^{-1} c_Xj
        return self.ZXY[:, :, :-1] - self.B @ (T @ V)

    def inverse_blocks(self) -> list[np.ndarray]:
        """Diagonal blocks of A^{-1} = (Lambda'Z'WZ Lambda + I)^{-1} per term, (l, q, q)."""
        Linv = np.linalg.inv(np.tril(self.L))
        Minv = Linv.transpose(0, 2, 1) @ Linv
        return [Minv[:, self._cols(k), self._cols(k)] for k in range(len(self.terms))]

    def spherical_modes(self, beta: np.ndarray) -> list[np.ndarray]:
        """u = L^{-T}(c_y - R_ZX beta) for the last update, per term as (l, q)."""
        rhs = self.cu[:, :, -1] - self.cu[:, :, :-1] @ beta
        Lt = _triu(self.L.transpose(0, 2, 1))  # the kernel writes only the lower triangles
        u = np.linalg.solve(Lt, rhs[:, :, None])[:, :, 0]
        return [u[:, self._cols(k)] for k in range(len(self.terms))]


def _tril(A: np.ndarray) -> np.ndarray:
    """np.tril(A) over the last two axes (square), with the mask made once per order."""
    return np.where(lower_mask(A.shape[-1]), A, 0.0)


def _triu(A: np.ndarray) -> np.ndarray:
    """np.triu(A) over the last two axes (square), with the mask made once per order."""
    return np.where(lower_mask(A.shape[-1]).T, A, 0.0)


NOT_POSITIVE = "a block of Lambda'Z'WZ Lambda + I is not positive definite"
WIDE_X = 64  # [X y] with more columns than this: its dense part by BLAS (see update)

MAX_CLUSTER = (
    64  # larger clusters are factored by CHOLMOD, whose ordering exploits their inner sparsity
)


def nesting_maps(terms: list[ReTerm]) -> list[np.ndarray] | None:
    """If every factor is nested in the coarsest one, map each term's levels to the coarsest
    factor's levels (the clusters); else None."""
    coarse = min(terms, key=lambda t: t.nlevels)
    maps = []
    for t in terms:
        m = np.full(t.nlevels, -1, dtype=np.int64)
        m[t.codes] = coarse.codes
        if not np.array_equal(m[t.codes], coarse.codes):
            return None
        maps.append(m)
    return maps


class ClusteredFactor:
    """Nested factors: Lambda'Z'WZ Lambda + I is block-diagonal by the coarsest factor's levels.

    Cluster k stacks, term by term, the effects of every level inside k (q_t rows each); its
    dense block is factored directly (src/_blockdiag.pyx, update_var).
    """

    kind = "nested"

    def __init__(self, cp: CrossProducts, terms: list[ReTerm], maps: list[np.ndarray]):
        self.terms = terms
        ncl = int(max(m.max() for m in maps)) + 1
        counts = [np.bincount(m, minlength=ncl) for m in maps]
        sizes = sum(t.q * c for t, c in zip(terms, counts))
        self.roff = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.boff = np.concatenate([[0], np.cumsum(sizes**2)]).astype(np.int64)
        self.max_size = int(sizes.max())
        Tq = np.array([t.q * t.q for t in terms])
        self.Toff = np.concatenate([[0], np.cumsum(Tq)[:-1]]).astype(np.int64)
        nrow = int(self.roff[-1])
        self.row_t, self.row_q, self.row_a, self.row_seg = (
            np.zeros(nrow, np.int64) for _ in "tqas"
        )
        self.rows = []  # per term: (l, q) global row of each effect
        before = np.zeros(ncl, dtype=np.int64)  # rows of earlier terms in each cluster
        for k, (t, m, c) in enumerate(zip(terms, maps, counts)):
            order = np.argsort(m, kind="stable")
            rank = np.empty(t.nlevels, dtype=np.int64)
            rank[order] = np.arange(t.nlevels) - (np.cumsum(c) - c)[m[order]]
            seg = self.roff[m] + before[m] + rank * t.q  # global row of each level's segment
            rows = seg[:, None] + np.arange(t.q)
            self.rows.append(rows)
            self.row_t[rows] = self.Toff[k]
            self.row_q[rows] = t.q
            self.row_a[rows] = np.arange(t.q)
            self.row_seg[rows] = (seg - self.roff[m])[:, None]
            before += t.q * c
        self.cluster = np.repeat(np.arange(ncl), sizes)  # cluster of each global row
        B = np.zeros(int(self.boff[-1]))
        for rows, D in zip(self.rows, cp.D):
            self._scatter(B, rows[:, :, None], rows[:, None, :], D)
        for pr in cp.pairs:
            ra = self.rows[pr.t][pr.levels[:, 0]][:, :, None]
            rb = self.rows[pr.u][pr.levels[:, 1]][:, None, :]
            self._scatter(B, ra, rb, pr.O)
            self._scatter(B, rb.transpose(0, 2, 1), ra.transpose(0, 2, 1), pr.O.transpose(0, 2, 1))
        self.B = B
        p1 = cp.XtXy.shape[0]
        ZXY = np.zeros((nrow, p1))
        for rows, Z in zip(self.rows, cp.ZXY):
            ZXY[rows.ravel()] = Z.reshape(-1, p1)
        self.ZXY = ZXY.ravel()
        self.L = np.zeros_like(B)
        self.assembly = GradientAssembly(cp)
        self.pairs = cp.pairs
        self.cu = np.zeros(nrow * p1)
        self._C = np.zeros((p1, p1))
        self._work = np.zeros(self.max_size**2)

    def _scatter(self, out, ri, rj, vals):
        """out[block of cluster(ri)][local ri, local rj] = vals, with broadcasting."""
        ri, rj = np.broadcast_arrays(ri, rj)
        k = self.cluster[ri]
        s = self.roff[k + 1] - self.roff[k]
        out[self.boff[k] + (ri - self.roff[k]) * s + (rj - self.roff[k])] = vals

    def update(self, Ts: list[np.ndarray]) -> tuple[float, np.ndarray]:
        T = np.concatenate([np.ascontiguousarray(T).ravel() for T in Ts])
        ldL2 = _blockdiag.update_var(
            T, self.row_t, self.row_q, self.row_a, self.row_seg, self.roff, self.boff,
            self.B, self.ZXY, self.L, self.cu, self._C, self._work,
        )  # fmt: skip
        if ldL2 == -1.0:
            raise FloatingPointError(NOT_POSITIVE)
        return ldL2, mirror_lower(self._C)

    def _cluster_inverses(self) -> np.ndarray:
        """Each cluster's block of A^{-1} (flat, as L), clusters of one size at a time."""
        sizes = np.diff(self.roff)
        Minv = np.zeros_like(self.L)
        for s in np.unique(sizes):
            k = np.flatnonzero(sizes == s)
            idx = self.boff[k, None] + np.arange(s * s)
            Linv = np.linalg.inv(np.tril(self.L[idx].reshape(len(k), s, s)))
            Minv[idx] = (Linv.transpose(0, 2, 1) @ Linv).reshape(len(k), -1)
        return Minv

    def _entries(self, Minv: np.ndarray, ri: np.ndarray, rj: np.ndarray) -> np.ndarray:
        """Minv at global rows ri, columns rj (broadcast; both in one cluster)."""
        ri, rj = np.broadcast_arrays(ri, rj)
        k = self.cluster[ri]
        s = self.roff[k + 1] - self.roff[k]
        return Minv[self.boff[k] + (ri - self.roff[k]) * s + (rj - self.roff[k])]

    def selected_inverse(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Blocks of A^{-1} on the pattern of Z'WZ: per term (l, q, q), per pair
        (npair, q_t, q_u); nested pairs lie inside one cluster, whose inverse is dense."""
        Minv = self._cluster_inverses()
        Zd = [self._entries(Minv, r[:, :, None], r[:, None, :]) for r in self.rows]
        Zp = [
            self._entries(
                Minv,
                self.rows[pr.t][pr.levels[:, 0]][:, :, None],
                self.rows[pr.u][pr.levels[:, 1]][:, None, :],
            )
            for pr in self.pairs
        ]
        return Zd, Zp

    def reml_H(self, T: np.ndarray) -> np.ndarray:
        """H_j = Z_j'WX - B_j T L_j'^{-1} c_Xj for every level, (l, Q, p)."""
        Lt = np.triu(self.L.transpose(0, 2, 1))
        V = np.linalg.solve(Lt, self.cu[:, :, :-1])  # L_j'^{-1} c_Xj
        return self.ZXY[:, :, :-1] - self.B @ (T @ V)

    def inverse_blocks(self) -> list[np.ndarray]:
        """Diagonal blocks of A^{-1} per term, (l, q, q)."""
        return self.selected_inverse()[0]

    def gradient(self, Ts, beta, P, scale: float, reml: bool) -> np.ndarray:
        """d objective / d theta at the last update (see gradient.py)."""
        Zd, Zp = self.selected_inverse()
        cu = self.cu.reshape(len(self.row_t), -1)
        Y = np.empty_like(cu)
        for c in range(cu.shape[1]):  # A^{-1} Lambda'Z'W[X y] = L^{-T} cu
            x = np.ascontiguousarray(cu[:, c])
            _blockdiag.solve_upper_var(self.L, self.roff, self.boff, x)
            Y[:, c] = x
        return self.assembly.gradient(Ts, Zd, Zp, [Y[r] for r in self.rows], beta, P, scale, reml)

    def spherical_modes(self, beta: np.ndarray) -> list[np.ndarray]:
        cu = self.cu.reshape(len(self.row_t), -1)
        u = np.ascontiguousarray(cu[:, -1] - cu[:, :-1] @ beta)
        _blockdiag.solve_upper_var(self.L, self.roff, self.boff, u)
        return [u[rows] for rows in self.rows]
