r"""The gradient of the profiled objective from a factor's selected inverse.

With G = Z'WZ, A = Lambda'G Lambda + I and theta_i an entry T_t[a, b] of one term's
factor (Lambda-dot = the unit matrix E_ab on every level block of term t):

    d log|A|        = 2 tr(A^{-1} Lambda'G Lambda-dot)
                    = 2 sum_j [sum_k (A^{-1})_{tj,k} T_k' G_{k,tj}]_{ba}
    d pwrss         = -2 sum_j s_tj[a] u_tj[b]        (envelope theorem)
    d log|R_X'R_X|  = -2 sum_j [V_tj P H_tj']_{ba}

with Y = A^{-1} Lambda'Z'W[X y] (V: its X columns), u = Y_y - V beta, H = Z'W[X y] -
G Lambda Y (so that V = Lambda'H), s = H_y - H_X beta, P = (R_X'R_X)^{-1}.  The sum over k
runs over the blocks where G is non-zero: the term's own level (D) and the level pairs
it shares with other terms, so only the blocks of A^{-1} on the pattern of G are needed
-- the selected inverse (Takahashi, Murray & Bates 2016; MixedModels.jl's gradient
evaluation).  Every factorization supplies those blocks and Y; this module adds them up.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .._sources.crossprod import CrossProducts


class GradientAssembly:
    """The pattern of G (blocks D per term level, level pairs), planned once per design."""

    def __init__(self, cp: CrossProducts):
        self.cp = cp
        self._G = [None] * len(cp.pairs)  # per pair, built on first use (pair_G)

    def pair_G(self, i: int) -> sp.csr_matrix:
        """Z_t'W Z_u of pair i as a sparse (l_t q_t) x (l_u q_u) matrix, built on first use
        (a factor with its own product for some pairs never builds theirs)."""
        if self._G[i] is None:
            cp, pr = self.cp, self.cp.pairs[i]
            n, qt, qu = pr.O.shape
            lt, lu = len(cp.D[pr.t]), len(cp.D[pr.u])
            m, c, d = np.indices((n, qt, qu)).reshape(3, -1)
            rows, cols = pr.levels[m, 0] * qt + c, pr.levels[m, 1] * qu + d
            self._G[i] = sp.csr_matrix((pr.O.ravel(), (rows, cols)), shape=(lt * qt, lu * qu))
        return self._G[i]

    def G_times(self, v: list[np.ndarray], pairs=None) -> list[np.ndarray]:
        """G v, v per term as (l, q, k): the diagonal blocks batched, each pair's blocks
        one sparse product each way (G_tu.T is its CSC view, no copy).  pairs: the indices
        of the pairs to include (default all)."""
        cp = self.cp
        out = [D @ vt for D, vt in zip(cp.D, v)]
        for i in range(len(cp.pairs)) if pairs is None else pairs:
            pr, G = cp.pairs[i], self.pair_G(i)
            vt, vu = v[pr.t], v[pr.u]
            out[pr.t] += (G @ vu.reshape(G.shape[1], -1)).reshape(out[pr.t].shape)
            out[pr.u] += (G.T @ vt.reshape(G.shape[0], -1)).reshape(out[pr.u].shape)
        return out

    def gradient(self, Ts, Zd, Zp, Y, beta, P, scale: float, reml: bool) -> np.ndarray:
        """d phi / d theta (theta in lme4's order) from the diagonal blocks Zd (per term,
        (l, q, q)) and the pair blocks Zp (per pair, (npair, q_t, q_u)) of A^{-1}, and Y
        (per term, (l, q, p + 1))."""
        cp = self.cp
        F = [diagonal_term(Z, T, D) for Z, T, D in zip(Zd, Ts, cp.D)]
        for pr, Z in zip(cp.pairs, Zp):
            add_pair_terms(F, pr, Z, Ts)
        return self.with_solution_terms(F, Ts, Y, beta, P, scale, reml)

    def with_solution_terms(
        self, F, Ts, Y, beta, P, scale: float, reml: bool, G_times=None
    ) -> np.ndarray:
        """Add the pwrss and REML terms (from Y) to F, d log|A| / d T_t per term as (q, q)
        matrices (entry [a, b] the derivative by T_t[b, a]), and list it in theta's order.
        G_times: the product by G if the factor has a faster one than self.G_times."""
        p = len(beta)
        H = (G_times or self.G_times)([T @ y for T, y in zip(Ts, Y)])
        for t, (y, h, zx) in enumerate(zip(Y, H, self.cp.ZXY)):
            h = zx - h
            u = y[:, :, p] - y[:, :, :p] @ beta
            s = h[:, :, p] - h[:, :, :p] @ beta
            F[t] -= 2.0 * scale * (u.T @ s)
            if reml and p:
                F[t] -= 2.0 * np.tensordot(y[:, :, :p] @ P, h[:, :, :p], ([0, 2], [0, 2]))
        out = []
        for f in F:
            q = f.shape[0]
            out += [f[b, a] for b in range(q) for a in range(b, q)]
        return np.array(out)


def diagonal_term(Z: np.ndarray, T: np.ndarray, D: np.ndarray) -> np.ndarray:
    """2 sum_j Z_j T' D_j: a term's own blocks' share of d log|A| / d T (one gemm by T,
    the sum over levels a tensordot)."""
    return 2.0 * np.tensordot(_right(Z, T.T), D, ([0, 2], [0, 1]))


def add_pair_terms(F: list[np.ndarray], pr, Z: np.ndarray, Ts: list[np.ndarray]) -> None:
    """F[t] += 2 sum_m Z_m T_u'O_m' and F[u] += 2 sum_m Z_m'T_t'O_m for one pair of terms
    (Z: its blocks of A^{-1}, (npair, q_t, q_u))."""
    F[pr.t] += 2.0 * np.tensordot(_right(Z, Ts[pr.u].T), pr.O, ([0, 2], [0, 2]))
    TtO = _right(pr.O.transpose(0, 2, 1), Ts[pr.t]).transpose(0, 2, 1)  # T_t'O_m
    F[pr.u] += 2.0 * np.tensordot(Z, TtO, ([0, 1], [0, 1]))


def _right(Z: np.ndarray, M: np.ndarray) -> np.ndarray:
    """Z_m M for every block of Z (n, a, b), M (b, c): one gemm on the stacked rows."""
    n, a, b = Z.shape
    return (Z.reshape(n * a, b) @ M).reshape(n, a, M.shape[1])
