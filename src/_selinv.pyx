"""The sparse selected inverse (Takahashi recurrence) of A = L L' on the pattern of L.

L is lower triangular in CSC form with sorted row indices, the diagonal first in each
column (CHOLMOD's simplicial LL' factor).  Z = A^{-1} is computed only where L is
structurally non-zero, column by column from the last:

    Z_ij = -(1 / L_jj) sum_{k in struct(j)} Z_ik L_kj          (i in struct(j), i > j)
    Z_jj = 1 / L_jj^2 - (1 / L_jj) sum_{k in struct(j)} Z_kj L_kj

struct(j) = the rows below the diagonal in column j; every Z_ik needed lies on the
pattern (for k in struct(j), struct(j) minus k is contained in struct(k) and rows < k are
read from column i by symmetry), so nothing outside the pattern of L is formed.
"""

from libc.stdint cimport int64_t


def takahashi(
    const int64_t[::1] indptr,
    const int64_t[::1] indices,
    const double[::1] Lx,
    double[::1] Zx,
    int64_t[::1] pos,
    double[::1] acc,
):
    """Zx := the entries of (L L')^{-1} on the pattern of L (lower triangle, as Lx).

    pos (n entries, all -1 on entry and on return) and acc (n entries) are scratch."""
    cdef Py_ssize_t n = indptr.shape[0] - 1
    cdef Py_ssize_t j, p, pk, q, i, k
    cdef double ljj, lkj, s
    with nogil:
        for j in range(n - 1, -1, -1):
            ljj = Lx[indptr[j]]
            for p in range(indptr[j] + 1, indptr[j + 1]):
                pos[indices[p]] = p
                acc[p - indptr[j]] = 0.0
            for pk in range(indptr[j] + 1, indptr[j + 1]):
                k = indices[pk]
                lkj = Lx[pk]
                acc[pk - indptr[j]] += Zx[indptr[k]] * lkj  # Z_kk L_kj
                for q in range(indptr[k] + 1, indptr[k + 1]):
                    i = indices[q]
                    if pos[i] >= 0:  # Z_ik (i > k), both in struct(j)
                        acc[pos[i] - indptr[j]] += Zx[q] * lkj
                        acc[pk - indptr[j]] += Zx[q] * Lx[pos[i]]
            s = 0.0
            for p in range(indptr[j] + 1, indptr[j + 1]):
                Zx[p] = -acc[p - indptr[j]] / ljj
                s = s + Zx[p] * Lx[p]
                pos[indices[p]] = -1
            Zx[indptr[j]] = 1.0 / (ljj * ljj) - s / ljj
