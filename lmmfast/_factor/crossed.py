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
from scipy.linalg import blas, lapack

from .. import _blockdiag, _crossed_dense, _schur
from .._errors import DataError
from .._sources.crossprod import CrossProducts
from .._terms import ReTerm
from .gradient import GradientAssembly, add_pair_terms

MAX_DENSE = 4000  # above this many effects in the other terms, CHOLMOD's sparsity wins
DENSE_FILL = 0.2  # L21 at least this full (and small): kept dense, S by one BLAS syrk
DENSE_L21 = 2_000_000  # at most this many entries in a dense L21
SCHUR_PANEL = 64  # rows of S per pass of the scalar Schur kernel (64 x m doubles in cache)
SCALAR_TRACE_MIN = 1e-3  # |theta_k| from which scalar terms' log|A| gradient uses diag(A^{-1})


def _entry_order(j: np.ndarray, rows: np.ndarray, nlev: int, m: int) -> np.ndarray:
    """The coupling entries' order by level j of term 1, then by row (the pairs are unique):
    two stable radix sorts of 16-bit keys where they fit (1M entries: 45 ms; one sort of
    the int64 key j m + row: 105 ms, lexsort 280 ms)."""
    if nlev > 65536 or m > 65536:
        return np.argsort(j * m + rows, kind="stable")
    by_row = np.argsort(rows.astype(np.uint16), kind="stable")
    return by_row[np.argsort(j[by_row].astype(np.uint16), kind="stable")]


def _gathered(parts: list[np.ndarray], order: np.ndarray) -> np.ndarray:
    """np.concatenate(parts)[order] as int64, without the gather where all are one value."""
    first = parts[0][:1] if parts and len(parts[0]) else np.zeros(0, np.int64)
    if len(first) and all(np.all(p == first[0]) for p in parts):
        return np.full(len(order), first[0], dtype=np.int64)
    return np.concatenate(parts)[order].astype(np.int64)


class CrossedFactor:
    """L = [L11 0; L21 L22]: L11 per level of term 1, L21 sparse blocks, L22 dense."""

    kind = "crossed"

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
        self.assembly = GradientAssembly(cp)
        j = np.concatenate(js) if js else np.zeros(0, np.int64)
        order = _entry_order(j, np.concatenate(rows), t1.nlevels, self.m)
        sizes_e = np.concatenate([b.shape[1] * np.ones(len(b), np.int64) for b in blocks])
        flat = np.concatenate([b.ravel() for b in blocks]) if blocks else np.zeros(0)
        start = np.concatenate([[0], np.cumsum(sizes_e)[:-1]]).astype(np.int64)
        inv = np.empty(len(order), dtype=np.int64)
        inv[order] = np.arange(len(order))
        self._pair_entry, start_e = [], 0  # per pair with term 1: its entries e, in level order
        for pr in cp.pairs:
            if pr.t == 0:
                self._pair_entry.append(inv[start_e : start_e + len(pr.levels)])
                start_e += len(pr.levels)
            else:
                self._pair_entry.append(None)
        counts = np.bincount(j, minlength=t1.nlevels)
        self.j = np.repeat(np.arange(t1.nlevels, dtype=np.int64), counts)  # = j[order]
        self.row = np.concatenate(rows)[order].astype(np.int64)
        self.qe = _gathered(qes, order)
        self.toff = _gathered(toffs, order)
        self.ooff = start[order]
        self.O = flat
        self.ptr = np.zeros(t1.nlevels + 1, dtype=np.int64)
        np.cumsum(counts, out=self.ptr[1:])
        self.W = np.zeros_like(flat)
        p1 = cp.XtXy.shape[0]
        self.L11 = np.zeros((t1.nlevels, t1.q, t1.q))
        self.c1 = np.zeros((t1.nlevels, t1.q, p1))
        self._C1 = np.zeros((1, p1, p1))
        self._ld1 = np.zeros(1)
        self._lower = np.tri(p1, dtype=bool)
        self.a22_idx = np.concatenate(self._a22_idx)
        self.diag_idx = np.arange(self.m) * (self.m + 1)
        self._S = np.empty((self.m, self.m))  # the Schur complement, refilled per theta
        N1 = t1.nlevels * t1.q
        filled = sum(len(pr.levels) * pr.O.shape[1] * pr.O.shape[2] for pr in cp.pairs if pr.t == 0)
        self.dense = self.m * N1 <= DENSE_L21 and filled >= DENSE_FILL * self.m * N1
        if self.dense:
            self._plan_dense(cp, N1)
        self.scalar = not self.dense and all(t.q == 1 for t in terms)
        self._a22_at = self.a22_idx  # where A22's values go in S (C order)
        if self.scalar:  # O and W in entry order (W[ooff] only for the selected inverse)
            self._Oe = self.O[self.ooff]
            # scalar_schur fills S's upper triangle (C order): A22's entries transposed
            self._a22_at = (self.a22_idx % self.m) * self.m + self.a22_idx // self.m
            self._We = np.zeros(len(self.row))
            self._cur = np.zeros(t1.nlevels, dtype=np.int64)
        self._at = self._last = self._grad_at = None  # the last update's theta and result
        self._planned = False
        if not self.scalar:  # the scalar gradient needs no selected inverse, unless theta ~ 0
            self._plan_selected_inverse()

    def _plan_selected_inverse(self) -> None:
        """Index arrays of selected_inverse's gathers, once per design: the rows of S of
        each later term's levels, (l, q), and per pair where its blocks lie in Z21 (term 1
        with a later term) or in S^{-1} (two later terms)."""
        self._planned = True
        q1 = self.terms[0].q
        self._rest_rows = [
            self.off[k] + np.arange(t.nlevels)[:, None] * t.q + np.arange(t.q)
            for k, t in enumerate(self.terms[1:])
        ]
        self._pair_index = []
        for pr, ent in zip(self.pairs, self._pair_entry):
            qu = self.terms[pr.u].q
            ru = self.off[pr.u - 1] + pr.levels[:, 1][:, None] * qu + np.arange(qu)
            if pr.t == 0 and self.dense:
                self._pair_index.append((pr.levels[:, 0][:, None], ru))
            elif pr.t == 0:
                self._pair_index.append(self.ooff[ent][:, None] + np.arange(qu * q1))
            else:
                qt = self.terms[pr.t].q
                rt = self.off[pr.t - 1] + pr.levels[:, 0][:, None] * qt + np.arange(qt)
                self._pair_index.append((rt[:, :, None], ru[:, None, :]))
        # the pairs of two later terms, read from S^{-1}'s lower (C order) triangle only
        self._rest_pairs = [i for i, pr in enumerate(self.pairs) if pr.t != 0]
        self._rest_pair_flat = [  # rows of u after those of t: (u, t) is in the lower half
            self._pair_index[i][1] * self.m + self._pair_index[i][0] for i in self._rest_pairs
        ]

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
        at = self._theta_key(Ts)
        if at is not None and at == self._at:  # the factor is at Ts already (see _theta_key)
            return self._last[0], self._last[1].copy()
        self._at = None
        T1 = np.ascontiguousarray(Ts[0])
        _blockdiag.update(T1, self.D1, self.ZXY1, self.L11, self.c1, self._C1, self._ld1)
        ld1 = float(self._ld1[0])
        S = self._S
        if not (self.dense and self._dense_assign):  # else _dense_schur writes all of S
            S.fill(0.0)
            S.flat[self._a22_at] = self._a22_values(Ts)
            S.flat[self.diag_idx] += 1.0
        rhs = np.vstack([(T.T @ Z).reshape(-1, Z.shape[2]) for T, Z in zip(Ts[1:], self.ZXY2)])
        if self.dense:
            self._dense_schur(Ts, S, rhs)
        else:
            Tflat = np.concatenate([np.ascontiguousarray(T).ravel() for T in Ts])
            if self.scalar:
                _schur.scalar_schur(
                    self.ptr, self.row, self.toff, self._Oe, Tflat, float(T1[0, 0]),
                    self.L11, self.c1, self._We, self._cur, S, rhs, SCHUR_PANEL,
                )  # fmt: skip
            else:
                _schur.schur(
                    self.ptr, self.row, self.qe, self.toff, self.ooff, self.O, Tflat, T1,
                    self.L11, self.c1, self.W, S, rhs,
                )  # fmt: skip
        # S's lower triangle (C order) is the upper one of S.T (Fortran order): LAPACK
        # factors it in place, U'U = S with U = L22'; scalar terms: S's upper triangle,
        # the lower one of S.T, L22 L22' = S there.  self._chol: (that factor, lower)
        lower = int(self.scalar)
        F, info = lapack.dpotrf(S.T, lower=lower, clean=0, overwrite_a=1)
        if info != 0:
            raise DataError("the random-effects system is not positive definite")
        self._chol = (F, lower)
        self.L22 = F if lower else F.T
        self.c2, _ = lapack.dtrtrs(F, rhs, lower=lower, trans=1 - lower)  # L22^{-1} rhs
        ldL2 = ld1 + 2.0 * np.sum(np.log(F.diagonal()))
        C1 = np.where(self._lower, self._C1[0], self._C1[0].T)  # its lower half mirrored
        C = C1 + self.c2.T @ self.c2
        if at is not None:
            self._at, self._last, self._grad_at = at, (ldL2, C.copy()), None
        return ldL2, C

    def _theta_key(self, Ts: list[np.ndarray]) -> bytes | None:
        """Scalar terms: theta's bytes, so that a repeated evaluation at the factor's theta
        (the optimum check's at the optimizer's end point, the fit's final decomposition
        after the polish) reuses the factor, its result and the gradient."""
        if not self.scalar:
            return None
        return np.array([T[0, 0] for T in Ts], dtype=np.float64).tobytes()

    def _plan_dense(self, cp: CrossProducts, N1: int) -> None:
        """Buffers and block tables of the dense path (src/_crossed_dense.pyx): G12 =
        Z_1'WZ_2 as one dense N1 x m matrix (columns as in S), and per level k of a later
        term its rows of S (bstart), its term (bterm) and the offsets of its T (btoff,
        into the later terms' T's, row-major) and of its block of G (in Dflat)."""
        t1, rest = self.terms[0], self.terms[1:]
        self._G12 = np.zeros((N1, self.m))
        for pr in cp.pairs:
            if pr.t == 0:
                j, k = pr.levels[:, 0], pr.levels[:, 1]
                cols = self.off[pr.u - 1] + k[:, None] * pr.O.shape[2] + np.arange(pr.O.shape[2])
                for c in range(t1.q):  # O[m, c, a] = Z_1j[:, c]'W Z_uk[:, a]
                    self._G12[j[:, None] * t1.q + c, cols] = pr.O[:, c, :]
        tq = np.array([t.q for t in rest], dtype=np.int64)
        self._tq = tq
        self._ttoff = np.concatenate([[0], np.cumsum(tq * tq)[:-1]]).astype(np.int64)
        self._bterm = np.repeat(np.arange(len(rest)), [t.nlevels for t in rest]).astype(np.int64)
        self._bstart = np.append(np.concatenate(
            [self.off[k] + np.arange(t.nlevels) * t.q for k, t in enumerate(rest)]
        ), self.m).astype(np.int64)  # fmt: skip
        self._btoff = self._ttoff[self._bterm]
        self._Dflat = np.concatenate([np.ascontiguousarray(D).ravel() for D in cp.D[1:]])
        # no pairs of two later terms: A22 + I is block-diagonal, S written by the kernel
        # alone (its upper triangle, C order, stays 0)
        self._dense_assign = all(pr.t == 0 for pr in cp.pairs)
        self._S = np.zeros((self.m, self.m))
        qmax = max(t.q for t in self.terms)
        self._work = np.empty((4, qmax * qmax))
        self._buf = np.empty((2, qmax * self.m))
        self._M = np.empty((len(rest) ** 2, qmax**4))
        self._frest = np.empty((len(rest), qmax, qmax))
        self._P = np.empty((t1.nlevels, t1.q, self.m))  # L11_j^{-1} T1' G12_j per level
        self._H = np.zeros((self.m, self.m))  # P'P in the lower triangle (C order), 0 above
        self._X = np.empty((N1, self.m))  # G12 Lambda_2, then L22^{-1} (G12 Lambda_2)'
        self._K = np.empty((t1.nlevels, t1.q, t1.q))
        self._Sinv = np.empty((self.m, self.m))
        self.L11inv = np.empty((t1.nlevels, t1.q, t1.q))
        self._R = np.empty_like(self.L11inv)

    def _dense_schur(self, Ts: list[np.ndarray], S: np.ndarray, rhs: np.ndarray) -> None:
        """L21 = Lambda_2' P' with P = L11^{-1} Lambda_1' G12 (per level of term 1, N1 x m):
        H = P'P (BLAS syrk, lower half), S -= Lambda_2' H Lambda_2 (H Lambda_2 by one gemm,
        then T_k' per block row of S; S := A22 + I - ... where A22 is block-diagonal),
        rhs -= Lambda_2' P' c1.  H is kept for the gradient."""
        n1, q1 = self.L11.shape[:2]
        _schur.first_factors(np.ascontiguousarray(Ts[0]), self.L11, self.L11inv, self._R)
        P = np.matmul(self._R.transpose(0, 2, 1), self._G12.reshape(n1, q1, -1), out=self._P)
        P = P.reshape(n1 * q1, -1)
        H = blas.dsyrk(1.0, P.T, beta=0.0, c=self._H.T, trans=0, lower=0, overwrite_c=1)
        self._H = H.T  # in place
        self._Ts = [np.ascontiguousarray(T) for T in Ts]
        self._Tflat2 = np.concatenate([T.ravel() for T in self._Ts[1:]])
        Y = self._times_lambda2(self._H, self._Ts, out=self._Sinv)  # scratch until gradient
        _crossed_dense.congruence_subtract(
            self._H, Y, self._bstart, self._btoff, self._Tflat2, self._Dflat,
            self._dense_assign, self._work, S,
        )  # fmt: skip
        rhs -= self._lambda2_times(P.T @ self.c1.reshape(n1 * q1, -1), Ts, trans=True)

    def _lambda2_times(self, B: np.ndarray, Ts, trans: bool = False) -> np.ndarray:
        """Lambda_2 B (Lambda_2' B if trans) for B with the rows of S, (m, k)."""
        out = np.empty_like(B)
        for k, T in enumerate(Ts[1:]):
            r = slice(self.off[k], self.off[k + 1])
            out[r] = ((T.T if trans else T) @ B[r].reshape(-1, T.shape[0], B.shape[1])).reshape(
                -1, B.shape[1]
            )
        return out

    def _times_lambda2(self, A: np.ndarray, Ts, out: np.ndarray | None = None) -> np.ndarray:
        """A Lambda_2 for A with the columns of S, (r, m)."""
        out = np.empty_like(A) if out is None else out
        for k, T in enumerate(Ts[1:]):
            c = slice(self.off[k], self.off[k + 1])
            if len(Ts) == 2:  # one later term: one gemm in place
                np.matmul(A.reshape(-1, T.shape[0]), T, out=out.reshape(-1, T.shape[0]))
            else:
                out[:, c] = (A[:, c].reshape(-1, T.shape[0]) @ T).reshape(len(A), -1)
        return out

    def _L21(self) -> np.ndarray:
        """L21 = (P Lambda_2)' (m x N1, Fortran order) at the last update."""
        return self._times_lambda2(self._P.reshape(-1, self.m), self._Ts).T

    def _L11inv(self) -> np.ndarray:
        if not self.dense:  # the dense path computes it in update()
            self.L11inv = np.linalg.inv(self.L11)
        return self.L11inv

    def back_solve(self, c1: np.ndarray, c2: np.ndarray) -> list[np.ndarray]:
        """L^{-T} [c1; c2] per term as (l, q, k): x2 = L22^{-T} c2, x1_j = L11_j^{-T}(c1_j -
        L21_j' x2); c1 is (n1, q1, k), c2 (m, k)."""
        F, lower = self._chol
        x2, _ = lapack.dtrtrs(F, c2, lower=lower, trans=lower)  # L22' x2 = c2
        n1, q1 = self.L11.shape[:2]
        if self.dense:
            r1 = c1 - (self._P.reshape(n1 * q1, -1) @ self._lambda2_times(x2, self._Ts)).reshape(
                n1, q1, -1
            )  # L21' x2 = P Lambda_2 x2
        else:
            r1 = np.array(c1, dtype=np.float64, order="C")
            x2 = np.ascontiguousarray(x2)
            if self.scalar:
                _schur.scalar_lt_times_first(self.ptr, self.row, self._We, x2, r1)
            else:
                _schur.lt_times_first(self.ptr, self.row, self.qe, self.ooff, self.W, x2, r1)
        if q1 == 1:  # a scalar term 1: L11_j^{-T} is a division
            x1 = r1 / self.L11
        else:
            x1 = self._L11inv().transpose(0, 2, 1) @ r1
        return [x1] + [
            x2[self.off[k] : self.off[k + 1]].reshape(t.nlevels, t.q, -1)
            for k, t in enumerate(self.terms[1:])
        ]

    def selected_inverse(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Blocks of A^{-1} on the pattern of Z'WZ (blocked Takahashi recurrence on L):
        Z22 = S^{-1}; below term 1, Z21_e = -(sum_f Z22[e, f] L21_f) L11_j^{-1}; term 1's
        diagonal blocks L11_j^{-T} L11_j^{-1} - (sum_e Z21_e' L21_e) L11_j^{-1}.
        Returns the diagonal blocks per term, (l, q, q), and the blocks of every pair of
        cp.pairs, (npair, q_t, q_u)."""
        if not self._planned:
            self._plan_selected_inverse()
        F, lower = self._chol
        Zinv, info = lapack.dpotri(F, lower=lower)  # S^{-1} in the factor's triangle
        if info != 0:
            raise FloatingPointError("cannot invert the Schur complement")
        Z22 = Zinv if lower else Zinv.T  # S^{-1} in its lower triangle
        Z22 = np.tril(Z22) + np.tril(Z22, -1).T
        Linv = self._L11inv()
        n1, q1 = Linv.shape[:2]
        if self.dense:
            F = self._L21()
            Z21 = (-(Z22 @ F)).reshape(self.m, n1, q1).transpose(1, 0, 2) @ Linv
            M = Z21.transpose(0, 2, 1) @ F.reshape(self.m, n1, q1).transpose(1, 0, 2)
        else:
            if self.scalar:  # scalar_schur keeps W in entry order
                self.W[self.ooff] = self._We
            Z21 = np.zeros_like(self.W)
            M = np.zeros((n1, q1, q1))
            _schur.selinv_first(self.ptr, self.row, self.qe, self.ooff, self.W, Z22, Linv, Z21, M)
        Zd = [Linv.transpose(0, 2, 1) @ Linv - M @ Linv]
        Zd += [Z22[r[:, :, None], r[:, None, :]] for r in self._rest_rows]
        Zp = []
        for pr, idx in zip(self.pairs, self._pair_index):
            if pr.t == 0 and self.dense:  # Z21[j, rows of (u, k), :]'
                Zp.append(Z21[idx].transpose(0, 2, 1))
            elif pr.t == 0:
                Zp.append(Z21[idx].reshape(-1, self.terms[pr.u].q, q1).transpose(0, 2, 1))
            else:
                Zp.append(Z22[idx])
        return Zd, Zp

    def gradient(self, Ts, beta, P, scale: float, reml: bool) -> np.ndarray:
        """d objective / d theta at the last update (see gradient.py)."""
        key = None
        if self.scalar and self._at is not None and self._theta_key(Ts) == self._at:
            key = (beta.tobytes(), None if P is None else P.tobytes(), float(scale), bool(reml))
            if self._grad_at is not None and self._grad_at[0] == key:
                return self._grad_at[1].copy()
        Y = self.back_solve(self.c1, self.c2)
        if self.dense:
            F = self._dense_logdet_gradient(Ts)
            return self.assembly.with_solution_terms(
                F, Ts, Y, beta, P, scale, reml, G_times=self._dense_G_times
            )
        theta = np.array([float(T[0, 0]) for T in Ts]) if self.scalar else None
        if self.scalar and np.all((theta == 0.0) | (np.abs(theta) >= SCALAR_TRACE_MIN)):
            F = [np.array([[f]]) for f in self._scalar_logdet_gradient(theta)]
            g = self.assembly.with_solution_terms(F, Ts, Y, beta, P, scale, reml)
        else:
            Zd, Zp = self.selected_inverse()
            g = self.assembly.gradient(Ts, Zd, Zp, Y, beta, P, scale, reml)
        if key is not None:
            self._grad_at = (key, np.array(g, copy=True))
        return g

    def _dense_logdet_gradient(self, Ts: list[np.ndarray]) -> list[np.ndarray]:
        """d log|A| / d T_t per term, (q, q), for a dense L21, from small blocks only.

        d log|A| = 2 tr(A^{-1} Lambda'G Lambda-dot).  With X = G12 Lambda_2 (N1 x m),
        K_j = X_j S^{-1} X_j' (q1 x q1 per level j of term 1; X_j its rows) and
        E_j = A11_j^{-1} T1', term 1's diagonal blocks of A^{-1} are A11_j^{-1} + E_j K_j E_j'
        and those of (A^{-1})_12 Lambda_2'G21 are -E_j K_j, so

            term 1:     2 sum_j E_j D_j + E_j K_j (T1 E_j D_j - I);

        K_j = W_j'W_j with W = L22^{-1} X' (one triangular solve, m^2 N1 flops).  Below
        term 1, (A^{-1})_21 Lambda_1'G12 = -S^{-1} Lambda_2' H (H = P'P from update), so
        with Z = S^{-1} (dpotri; lower triangle)

            term u > 1: 2 sum_{k in u} Z_kk T_u' D_k - sum_l Z_kl T_l' H_lk

        (blocks of the levels k, l of the later terms; O(m^2 q^2) flops, no S^{-1} L21),
        plus the pairs of later terms read from Z.  Nothing divides by theta: exact at
        singular T."""
        n1, q1 = self.L11.shape[:2]
        X = self._times_lambda2(self._G12, self._Ts, out=self._X)
        W = blas.dtrsm(1.0, self.L22.T, X.T, side=0, lower=0, trans_a=1, overwrite_b=1).T
        _crossed_dense.level_grams(W, self._K)  # W' = L22^{-1} X', in X's place
        f1 = np.empty((q1, q1))
        _crossed_dense.first_term_gradient(
            self.L11inv, self._Ts[0], self.D1, self._K, self._work, f1
        )
        np.copyto(self._Sinv, self.L22)
        Z, info = lapack.dpotri(self._Sinv.T, lower=0, overwrite_c=1)  # upper (F) = lower (C)
        if info != 0:
            raise FloatingPointError("cannot invert the Schur complement")
        out = self._frest
        _crossed_dense.rest_gradient(
            Z.T, self._H, self._bstart, self._btoff, self._bterm, self.off, self._tq,
            self._ttoff, self._Tflat2, self._Dflat, self._buf[0], self._buf[1], self._M,
            self._work, out,
        )  # fmt: skip
        F = [2.0 * f1] + [2.0 * out[k, :q, :q] for k, q in enumerate(self._tq)]
        Z22 = Z.T.ravel()
        for i, flat in zip(self._rest_pairs, self._rest_pair_flat):
            add_pair_terms(F, self.pairs[i], Z22[flat], Ts)  # S^{-1}[ru, rt] = [rt, ru]
        return F

    def _dense_G_times(self, v: list[np.ndarray]) -> list[np.ndarray]:
        """G v (as GradientAssembly.G_times) with the pairs of term 1 by the dense G12."""
        out = self.assembly.G_times(v, self._rest_pairs)
        N1 = len(self._G12)
        v1 = v[0].reshape(N1, -1)
        for k in range(1, len(v)):
            G = self._G12[:, self.off[k - 1] : self.off[k]]
            out[0] += (G @ v[k].reshape(G.shape[1], -1)).reshape(out[0].shape)
            out[k] += (G.T @ v1).reshape(out[k].shape)
        return out

    def _scalar_logdet_gradient(self, theta: np.ndarray) -> np.ndarray:
        """d log|A| / d theta_k for scalar terms from the diagonal of A^{-1} only.

        With Lambda = diag(theta_k on term k's levels), (A - I) P_k = Lambda'G Lambda P_k is
        theta_k d/d theta_k of Lambda'G Lambda restricted to term k's columns, so
        d log|A| / d theta_k = 2 tr(A^{-1}(A - I) P_k) / theta_k
                             = 2 sum_{i in k} (1 - (A^{-1})_ii) / theta_k,
        and 0 at theta_k = 0 (A is even in theta_k).  The diagonal of A^{-1} is S^{-1}'s
        below term 1 (dpotri) and (1 + w_j'S^{-1} w_j) / L11_j^2 on term 1
        (_schur.scalar_condvar, which reads S^{-1}'s entries on the pairs of rows that share
        a level of term 1, its upper triangle in C order only): no pair blocks and no full
        symmetric copy of S^{-1}.  The subtraction loses ~n_k eps / theta_k, hence
        SCALAR_TRACE_MIN (below it the selected inverse on the pattern is used).
        """
        Zinv, info = lapack.dpotri(self._chol[0], lower=1)  # lower (Fortran) = upper (C)
        if info != 0:
            raise FloatingPointError("cannot invert the Schur complement")
        acc = np.zeros_like(self.L11)
        _schur.scalar_condvar(self.ptr, self.row, self._We, self._cur, Zinv.T, acc, SCHUR_PANEL)
        L2 = self.L11[:, 0, 0] ** 2  # = 1 + theta_1^2 d_j
        off1 = theta[0] ** 2 * self.D1[:, 0, 0] - acc[:, 0, 0]  # L2 (1 - (A^{-1})_jj)
        sums = [np.sum(off1 / L2)]
        sums += list(np.add.reduceat(1.0 - np.diagonal(Zinv), self.off[:-1]))
        return np.array(
            [2.0 * s / t if t != 0.0 else 0.0 for s, t in zip(sums, theta)], dtype=np.float64
        )

    def inverse_blocks(self) -> list[np.ndarray]:
        """Diagonal blocks of A^{-1} per term, (l, q, q)."""
        return self.selected_inverse()[0]

    def spherical_modes(self, beta: np.ndarray) -> list[np.ndarray]:
        """u = L^{-T}(c_y - R_ZX beta) per term as (l, q)."""
        r1 = self.c1[:, :, -1:] - self.c1[:, :, :-1] @ beta[:, None]
        r2 = self.c2[:, -1:] - self.c2[:, :-1] @ beta[:, None]
        return [u[:, :, 0] for u in self.back_solve(r1, r2)]
