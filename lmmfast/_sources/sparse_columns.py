"""Fixed-effects columns kept as one sparse matrix: factors with many levels.

A fixed factor with k levels makes k - 1 indicator columns with one non-zero per row
each; dense, X'WX costs n p^2 in the one pass (a 2,000-level factor on 200k rows: 8e11
flops, 3.2 GB) where the sparse product costs n (non-zeros per row)^2.  The model frame
holds such a design as SparseColumns, which reads as the usual list of columns (a
dense column is made on demand); the cross-products (crossprod.py) take the sparse
matrix itself.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

SPARSE_COLUMNS = 64  # a fixed part with at least this many columns (estimated) is kept sparse


class SparseColumns(Sequence):
    """The p columns of a CSC matrix as a sequence of dense (n,) columns."""

    def __init__(self, matrix):
        self.matrix = sp.csc_matrix(matrix, dtype=np.float64)
        self.matrix.sort_indices()

    def __len__(self) -> int:
        return self.matrix.shape[1]

    def __getitem__(self, j):
        if isinstance(j, slice):
            return [self[i] for i in range(*j.indices(len(self)))]
        if not -len(self) <= j < len(self):
            raise IndexError(j)
        return self.matrix[:, [j]].toarray().ravel()

    def all_finite(self) -> np.ndarray:
        """Per column: no infinite or NaN stored value."""
        M = self.matrix
        bad = ~np.isfinite(M.data)
        col = np.repeat(np.arange(M.shape[1]), np.diff(M.indptr))
        return np.bincount(col[bad], minlength=M.shape[1]) == 0


def term_matrix(codes: np.ndarray, Zcols, q: int, nlevels: int) -> sp.csr_matrix:
    """Z_t as an (n, nlevels * q) sparse matrix: row i holds z_i at columns codes_i * q + a."""
    n = len(codes)
    cols = codes.astype(np.int64)[:, None] * q + np.arange(q)
    vals = np.column_stack([np.broadcast_to(z, (n,)) for z in Zcols]) if q else np.zeros((n, 0))
    indptr = np.arange(0, n * q + 1, q, dtype=np.int64)
    return sp.csr_matrix((vals.ravel(), cols.ravel(), indptr), shape=(n, nlevels * q))


class RowSparse:
    """n rows of model columns in compressed-row form (indptr, indices, data), built a
    variable at a time: model.matrix's columns without its dense n x p intermediate.

    Entries are kept even where their value is 0 (a numeric variable is one entry per row)
    until ``columns()``, which drops the zeros as the dense-to-sparse conversion does."""

    def __init__(self, indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, ncol: int):
        self.indptr, self.indices, self.data, self.ncol = indptr, indices, data, ncol

    @property
    def n(self) -> int:
        return len(self.indptr) - 1

    @classmethod
    def dense(cls, cols: list[np.ndarray], n: int) -> RowSparse:
        """Every entry of the dense columns `cols` (each (n,)), row by row."""
        k = len(cols)
        data = np.empty((n, k))
        for j, c in enumerate(cols):
            data[:, j] = c
        indices = np.broadcast_to(np.arange(k, dtype=np.int64), (n, k)).ravel()
        return cls(np.arange(0, n * k + 1, k, dtype=np.int64), indices, data.ravel(), k)

    @classmethod
    def coded(cls, codes: np.ndarray, C: np.ndarray) -> RowSparse:
        """Row i is row codes[i] of the coding matrix C (levels x columns, dense or sparse),
        its non-zeros only; code -1 (a missing level) is the row of NaN, as in the dense
        coding."""
        m = C.shape[1]
        Cs = sp.csr_matrix(sp.vstack([sp.csr_matrix(C), np.full((1, m), np.nan)]))
        Cs.eliminate_zeros()  # NaN is not zero: kept
        per = np.diff(Cs.indptr)[codes]
        indptr = np.concatenate([[0], np.cumsum(per)]).astype(np.int64)
        pos = _positions(indptr, Cs.indptr[:-1][codes])
        return cls(indptr, Cs.indices[pos].astype(np.int64), Cs.data[pos], m)

    def kron(self, other: RowSparse) -> RowSparse:
        """The row-wise products a_ij * b_ik at column j + ncol_a * k (a varies fastest), as
        model.matrix multiplies an interaction's columns: the product is computed as
        a * b, so the values are those of the dense columns bit for bit."""
        ca, cb = np.diff(self.indptr), np.diff(other.indptr)
        per = ca * cb
        indptr = np.concatenate([[0], np.cumsum(per)]).astype(np.int64)
        row = np.repeat(np.arange(self.n, dtype=np.int64), per)
        t = np.arange(indptr[-1], dtype=np.int64) - indptr[:-1][row]
        wa = ca[row]
        ia = self.indptr[:-1][row] + t % wa
        ib = other.indptr[:-1][row] + t // wa
        return RowSparse(
            indptr, self.indices[ia] + self.ncol * other.indices[ib],
            self.data[ia] * other.data[ib], self.ncol * other.ncol,
        )  # fmt: skip

    def matrix(self) -> sp.csr_matrix:
        return sp.csr_matrix((self.data, self.indices, self.indptr), shape=(self.n, self.ncol))


def stack_columns(blocks: list[RowSparse], n: int) -> SparseColumns:
    """The blocks side by side as SparseColumns, zero entries dropped (as the conversion of
    the dense columns keeps only their non-zeros)."""
    M = sp.hstack([b.matrix() for b in blocks], format="csc") if blocks else sp.csc_matrix((n, 0))
    M.eliminate_zeros()
    return SparseColumns(M)


def _positions(indptr: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """For runs of lengths diff(indptr): starts[r] + 0, 1, ... for each run r."""
    per = np.diff(indptr)
    row = np.repeat(np.arange(len(per), dtype=np.int64), per)
    return np.asarray(starts, dtype=np.int64)[row] + (np.arange(indptr[-1]) - indptr[:-1][row])
