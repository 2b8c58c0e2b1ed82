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
