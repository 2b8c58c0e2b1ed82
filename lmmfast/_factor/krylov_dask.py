"""method="krylov" from a Dask DataFrame: the Schur sweep on the workers.

KrylovFactor (krylov.py) applies S = A22 - A21 A11^{-1} A12 by a sweep over N, term 1's
levels x the other terms' effects.  For a Dask fit, N is also built on the workers, as
blocks of term 1's levels (contiguous code ranges, one block per partition): every
partition's rows give (term-1 level, effect, w z1 zk) triples, bucketed by block; each
block gathers its buckets from all partitions (in partition order), sums duplicate pairs
into a CSR matrix and stays in the workers' memory (persisted).  Since a block holds all of
its levels' pairs, N' diag(s) N = sum_b N_b' diag(s_b) N_b: one S.v (for k vectors at once)
is a map over the blocks, each N_b' (s_b * (N_b W)) by the same Cython kernel, plus one
tree reduction (FAN_IN at a time, in block order, so the sums and the fit are the same on
every run); the driver adds the diagonal.  One round trip per CG iteration.

The driver still holds the merged cross-products (the pairs among them, as for any Dask
fit: the right-hand sides, the diagonal and the conditional modes use them); what moves
to the workers is the work of the sweeps, nearly all of a Krylov fit's time.  Pairs among
the later terms (three or more terms) stay on the driver.  dask is imported only inside
the functions, when a Dask source is passed.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .. import _krylov

FAN_IN = 8  # partial products summed per reduction task


def attach(factor, frame) -> None:
    """For a fit from a Dask DataFrame (frame.source has `ddf`), build the blocks on the
    workers and let factor's sweeps run there; otherwise nothing."""
    if getattr(frame.source, "ddf", None) is not None:
        factor.sweep = DaskSweep(frame.source.ddf, frame.plan, factor)


class DaskSweep:
    """N as persisted blocks of term-1 levels; apply() = N'(s * (N W)) by map + reduce."""

    def __init__(self, ddf, plan, factor):
        import dask

        self.m = factor.m
        n1 = factor.n1
        nb = max(1, min(ddf.npartitions, n1))
        self.bounds = np.linspace(0, n1, nb + 1).round().astype(np.int64)
        plan_d = dask.delayed(plan, pure=True)
        off = np.asarray(factor.off[:-1])
        parts = ddf[plan.layout.used].to_delayed()
        trip = [dask.delayed(_triples, nout=nb, pure=True)(plan_d, p, off, self.bounds)
                for p in parts]  # fmt: skip
        blocks = [dask.delayed(_block, pure=True)(int(self.bounds[b + 1] - self.bounds[b]),
                                                  self.m, *[t[b] for t in trip])
                  for b in range(nb)]  # fmt: skip
        self.blocks = dask.persist(*blocks)
        self.rounds = 0  # reductions done (one per S.v)

    def apply(self, W: np.ndarray, s: np.ndarray) -> np.ndarray:
        """sum_b N_b' (s_b * (N_b W)), W (m, k)."""
        import dask

        self.rounds += 1
        Wd = dask.delayed(np.ascontiguousarray(W), pure=True)
        b = self.bounds
        level = [dask.delayed(_block_apply, pure=True)(blk, s[lo:hi], Wd)
                 for blk, lo, hi in zip(self.blocks, b[:-1], b[1:])]  # fmt: skip
        while len(level) > 1:
            level = [dask.delayed(_sum, pure=True)(*level[i : i + FAN_IN])
                     for i in range(0, len(level), FAN_IN)]  # fmt: skip
        return level[0].compute()


def _triples(plan, df, off: np.ndarray, bounds: np.ndarray):
    """One partition's (term-1 level within its block, effect, w z1 zk), per block."""
    nb = len(bounds) - 1
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))
    if not plan.layout.kept(df)[0].shape[0]:
        return tuple([empty] * nb)
    rows, w = plan.batch(df)[:2]
    terms = rows.terms
    w = np.ones(rows.n) if w is None else w
    z1 = w * np.asarray(terms[0].Zcols[0], dtype=np.float64)
    c1 = terms[0].codes.astype(np.int64)
    r = np.concatenate([c1] * (len(terms) - 1))
    c = np.concatenate([o + t.codes.astype(np.int64) for o, t in zip(off, terms[1:])])
    v = np.concatenate([z1 * np.asarray(t.Zcols[0], dtype=np.float64) for t in terms[1:]])
    block = np.searchsorted(bounds, r, side="right") - 1
    order = np.argsort(block, kind="stable")
    r, c, v, block = r[order], c[order], v[order], block[order]
    cuts = np.searchsorted(block, np.arange(nb + 1))
    return tuple((r[a:b] - bounds[k], c[a:b], v[a:b])
                 for k, (a, b) in enumerate(zip(cuts[:-1], cuts[1:])))  # fmt: skip


def _block(n_rows: int, m: int, *trips):
    """One block's CSR (int64 indptr, int32 indices, values, whether all are 1) from its
    buckets of every partition, duplicate pairs summed."""
    r = np.concatenate([t[0] for t in trips])
    c = np.concatenate([t[1] for t in trips])
    v = np.concatenate([t[2] for t in trips])
    N = sp.csr_matrix((v, (r, c)), shape=(n_rows, m))
    N.sum_duplicates()
    return (N.indptr.astype(np.int64), N.indices.astype(np.int32), N.data,
            bool(np.all(N.data == 1.0)))  # fmt: skip


def _block_apply(blk, s: np.ndarray, W: np.ndarray) -> np.ndarray:
    """N_b' (s_b * (N_b W)) by the in-memory kernel (diag 0, c 1: it returns minus that)."""
    indptr, indices, data, unit = blk
    m, k = W.shape
    out = np.empty_like(W)
    work = np.empty((1, m + 1, k))
    _krylov.schur_apply(indptr, indices, data, unit, np.ascontiguousarray(s), np.ones(m),
                        np.zeros(m), W, out, work, 1)  # fmt: skip
    return -out


def _sum(*parts):
    acc = parts[0].copy()
    for p in parts[1:]:
        acc += p
    return acc
