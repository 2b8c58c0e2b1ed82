"""Each Cython kernel against a dense NumPy oracle on seeded random designs."""

import numpy as np
import pytest

from lmmfast import _assemble, _blockdiag, _schur


def _assemble_inputs(rng, n, nlev, qs, p, itype):
    K = len(qs)
    codes = np.column_stack([rng.integers(0, l, size=n) for l in nlev]).astype(itype)
    pair_terms = [(t, u) for t in range(K) for u in range(t + 1, K)]
    pair_keys = [codes[:, t].astype(np.int64) * nlev[u] + codes[:, u] for t, u in pair_terms]
    pair_uniq = [np.unique(k) for k in pair_keys]
    P = np.column_stack(
        [np.searchsorted(u, k) for u, k in zip(pair_uniq, pair_keys)] or [np.zeros(n)]
    ).astype(itype)[:, : len(pair_terms)]
    Z = rng.normal(size=(n, sum(qs)))
    XY = rng.normal(size=(n, p + 1))
    w = rng.uniform(0.2, 3.0, size=n)
    return codes, P, pair_terms, pair_uniq, Z, XY, w


@pytest.mark.parametrize("itype", [np.int32, np.int64])
@pytest.mark.parametrize(
    "nlev,qs,p",
    [([5], [1], 1), ([4], [2], 2), ([6, 3], [2, 1], 3), ([1], [1], 1), ([3, 3, 2], [1, 2, 1], 0)],
)
def test_assemble_matches_dense_products(itype, nlev, qs, p):
    rng = np.random.default_rng(sum(nlev) + 10 * p)
    n = 50
    codes, P, pair_terms, pair_uniq, Z, XY, w = _assemble_inputs(rng, n, nlev, qs, p, itype)
    zoff = np.concatenate([[0], np.cumsum(qs)[:-1]]).astype(np.int64)
    qs64 = np.array(qs, dtype=np.int64)
    osz = [len(u) * qs[a] * qs[b] for (a, b), u in zip(pair_terms, pair_uniq)]

    def offs(s):
        return (
            np.concatenate([[0], np.cumsum(s)[:-1]]).astype(np.int64)
            if s
            else np.zeros(0, np.int64)
        )

    cols = [np.ascontiguousarray(Z[:, k]) for k in range(Z.shape[1])]
    cols += [np.ascontiguousarray(XY[:, k]) for k in range(p + 1)]
    zcol = np.arange(Z.shape[1], dtype=np.int64)
    xcol = np.arange(Z.shape[1], Z.shape[1] + p + 1, dtype=np.int64)
    rec = [q * q + q * (p + 1) for q in qs]  # per level: [Z_j'WZ_j | Z_j'W[X y]]
    rsz = [l * r for l, r in zip(nlev, rec)]
    outs = {}
    for nchunks in (1, 2):  # the two-thread split must give the same sums
        R, O = np.zeros((nchunks, sum(rsz))), np.zeros((nchunks, sum(osz)))
        XtXy = np.zeros((nchunks, p + 1, p + 1))
        _assemble.assemble(
            codes, np.ascontiguousarray(P), np.array(pair_terms, dtype=np.int64).reshape(-1, 2),
            zoff, qs64, cols, zcol, xcol, w, R, offs(rsz), O, offs(osz), XtXy, True, nchunks,
        )  # fmt: skip
        outs[nchunks] = [a.sum(axis=0) for a in (R, O, XtXy)]
    for a, b in zip(outs[1], outs[2]):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    R, O, XtXy = outs[1]
    D, ZXY = [], []
    for t, (l, q) in enumerate(zip(nlev, qs)):
        block = R[offs(rsz)[t] : offs(rsz)[t] + rsz[t]].reshape(l, rec[t])
        D.append(block[:, : q * q].reshape(l, q, q))
        ZXY.append(block[:, q * q :].reshape(l * q, p + 1))
    # dense oracle: Z_t with level-major columns, then plain matrix products
    Zd = []
    for t, (l, q) in enumerate(zip(nlev, qs)):
        M = np.zeros((n, l * q))
        for i in range(n):
            M[i, codes[i, t] * q : (codes[i, t] + 1) * q] = Z[i, zoff[t] : zoff[t] + q]
        Zd.append(M)
    W = np.diag(w)
    np.testing.assert_allclose(np.tril(XtXy), np.tril(XY.T @ W @ XY), rtol=1e-12, atol=1e-12)
    for t, (l, q) in enumerate(zip(nlev, qs)):
        full = Zd[t].T @ W @ Zd[t]
        blocks = D[t]
        for j in range(l):
            np.testing.assert_allclose(
                blocks[j], full[j * q : (j + 1) * q, j * q : (j + 1) * q], rtol=1e-12, atol=1e-12
            )
        zx = ZXY[t]
        np.testing.assert_allclose(zx, Zd[t].T @ W @ XY, rtol=1e-12, atol=1e-12)
    for r, ((a, b), uniq) in enumerate(zip(pair_terms, pair_uniq)):
        qa, qb = qs[a], qs[b]
        full = Zd[a].T @ W @ Zd[b]
        blocks = O[offs(osz)[r] : offs(osz)[r] + osz[r]].reshape(len(uniq), qa, qb)
        for k, key in enumerate(uniq):
            ja, jb = divmod(int(key), nlev[b])
            np.testing.assert_allclose(
                blocks[k],
                full[ja * qa : (ja + 1) * qa, jb * qb : (jb + 1) * qb],
                rtol=1e-12,
                atol=1e-12,
            )


@pytest.mark.parametrize("nlev,Q,p1", [(7, 1, 2), (5, 2, 3), (4, 3, 1), (1, 2, 2)])
def test_blockdiag_update_matches_dense_cholesky(nlev, Q, p1):
    rng = np.random.default_rng(nlev * Q)
    G = rng.normal(size=(nlev, 6, Q))
    B = np.ascontiguousarray(G.transpose(0, 2, 1) @ G)  # positive semi-definite blocks
    ZXY = rng.normal(size=(nlev, Q, p1))
    T = np.tril(rng.normal(size=(Q, Q)))
    np.fill_diagonal(T, np.abs(np.diag(T)) + 0.1)
    L, cu, C = np.zeros((nlev, Q, Q)), np.zeros((nlev, Q, p1)), np.zeros((2, p1, p1))
    ld = np.zeros(2)
    assert _blockdiag.update(T, B, ZXY, L, cu, C, ld, 2)  # two chunks of levels
    ldL2, C = ld.sum(), C.sum(axis=0)
    expected_ld, expected_C = 0.0, np.zeros((p1, p1))
    for j in range(nlev):
        Lj = np.linalg.cholesky(T.T @ B[j] @ T + np.eye(Q))
        np.testing.assert_allclose(np.tril(L[j]), Lj, rtol=1e-12, atol=1e-12)
        cj = np.linalg.solve(Lj, T.T @ ZXY[j])
        np.testing.assert_allclose(cu[j], cj, rtol=1e-10, atol=1e-12)
        expected_ld += 2 * np.sum(np.log(np.diag(Lj)))
        expected_C += cj.T @ cj
    assert ldL2 == pytest.approx(expected_ld, rel=1e-12)
    np.testing.assert_allclose(np.tril(C), np.tril(expected_C), rtol=1e-10, atol=1e-12)


def test_blockdiag_update_at_theta_zero_is_the_identity():
    # singular fits put theta on its bound: T = 0 gives L = I and no correction
    B = np.ones((3, 1, 1))
    ZXY = np.ones((3, 1, 2))
    L, cu, C, ld = np.zeros((3, 1, 1)), np.zeros((3, 1, 2)), np.zeros((1, 2, 2)), np.ones(1)
    assert _blockdiag.update(np.zeros((1, 1)), B, ZXY, L, cu, C, ld)
    assert ld[0] == 0.0
    np.testing.assert_array_equal(L[:, 0, 0], 1.0)
    np.testing.assert_array_equal(C, 0.0)


def _clusters(rng):
    """Three clusters of sizes 3, 1 and 4 made of segments of terms with q = 1 and q = 2."""
    Ts = [np.array([[0.9]]), np.array([[1.1, 0.0], [-0.4, 0.6]])]
    Toff = [0, 1]
    layout = [[0, 1], [0], [1, 1]]  # the terms of each cluster's segments
    row_t, row_q, row_a, row_seg, sizes = [], [], [], [], []
    for segs in layout:
        start = 0
        for t in segs:
            q = Ts[t].shape[0]
            for a in range(q):
                row_t.append(Toff[t])
                row_q.append(q)
                row_a.append(a)
                row_seg.append(start)
            start += q
        sizes.append(start)
    sizes = np.array(sizes)
    roff = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    boff = np.concatenate([[0], np.cumsum(sizes**2)]).astype(np.int64)
    Bs = []
    for s in sizes:
        G = rng.normal(size=(s + 2, s))
        Bs.append(G.T @ G)
    Lams = []
    for segs in layout:
        blocks = [Ts[t] for t in segs]
        n = sum(b.shape[0] for b in blocks)
        Lam, k = np.zeros((n, n)), 0
        for b in blocks:
            Lam[k : k + len(b), k : k + len(b)] = b
            k += len(b)
        Lams.append(Lam)
    arrays = [np.array(x, dtype=np.int64) for x in (row_t, row_q, row_a, row_seg)]
    T = np.concatenate([t.ravel() for t in Ts])
    return T, arrays, roff, boff, Bs, Lams, sizes


def test_update_var_matches_dense_cholesky_per_cluster():
    rng = np.random.default_rng(3)
    T, (row_t, row_q, row_a, row_seg), roff, boff, Bs, Lams, sizes = _clusters(rng)
    p1 = 2
    ZXY = rng.normal(size=(int(roff[-1]), p1))
    B = np.concatenate([b.ravel() for b in Bs])
    L, cu, C = np.zeros_like(B), np.zeros(ZXY.size), np.zeros((p1, p1))
    ldL2 = _blockdiag.update_var(
        T, row_t, row_q, row_a, row_seg, roff, boff, B, ZXY.ravel(), L, cu, C,
        np.zeros(int(sizes.max()) ** 2),
    )  # fmt: skip
    cu = cu.reshape(-1, p1)
    expected_ld, expected_C = 0.0, np.zeros((p1, p1))
    for k, (s, Bk, Lam) in enumerate(zip(sizes, Bs, Lams)):
        Lk = np.linalg.cholesky(Lam.T @ Bk @ Lam + np.eye(s))
        got = np.tril(L[boff[k] : boff[k + 1]].reshape(s, s))
        np.testing.assert_allclose(got, Lk, rtol=1e-12, atol=1e-12)
        ck = np.linalg.solve(Lk, Lam.T @ ZXY[roff[k] : roff[k + 1]])
        np.testing.assert_allclose(cu[roff[k] : roff[k + 1]], ck, rtol=1e-10, atol=1e-12)
        expected_ld += 2 * np.sum(np.log(np.diag(Lk)))
        expected_C += ck.T @ ck
    assert ldL2 == pytest.approx(expected_ld, rel=1e-12)
    np.testing.assert_allclose(np.tril(C), np.tril(expected_C), rtol=1e-10)
    # and the back-solve with the factors just computed
    x = rng.normal(size=int(roff[-1]))
    got = x.copy()
    _blockdiag.solve_upper_var(L, roff, boff, got)
    for k, s in enumerate(sizes):
        Lk = np.tril(L[boff[k] : boff[k + 1]].reshape(s, s))
        np.testing.assert_allclose(
            got[roff[k] : roff[k + 1]], np.linalg.solve(Lk.T, x[roff[k] : roff[k + 1]]), rtol=1e-10
        )


def test_schur_matches_dense_block_elimination():
    # term 1: 4 levels, q1 = 2; the rest: a q = 1 term with 3 levels and a q = 2 term with 2
    rng = np.random.default_rng(5)
    l1, q1, p1 = 4, 2, 2
    T1 = np.array([[1.2, 0.0], [0.3, 0.7]])
    Tu = [np.array([[0.8]]), np.array([[0.9, 0.0], [-0.2, 0.5]])]
    rest_q = [1, 2]  # the rest: a q = 1 term with 3 levels, a q = 2 term with 2
    roff = np.array([0, 3])  # first row of each rest term in the dense block
    m = 3 + 4
    L11 = np.zeros((l1, q1, q1))
    for j in range(l1):
        G = rng.normal(size=(q1 + 2, q1))
        L11[j] = np.linalg.cholesky(G.T @ G + np.eye(q1))
    c1 = rng.normal(size=(l1, q1, p1))
    entries = [(0, 0, 1), (0, 1, 0), (1, 0, 0), (1, 1, 1), (2, 0, 2), (3, 1, 1), (3, 0, 1)]
    entries.sort(key=lambda e: e[0])  # (level j of term 1, rest term u, its level k)
    Os = [rng.normal(size=(q1, rest_q[u])) for _, u, _ in entries]
    ooff = np.concatenate([[0], np.cumsum([o.size for o in Os])[:-1]]).astype(np.int64)
    Tflat = np.concatenate([t.ravel() for t in Tu])
    toffs = [0, 1]
    row = np.array([roff[u] + k * rest_q[u] for _, u, k in entries], dtype=np.int64)
    qe = np.array([rest_q[u] for _, u, _ in entries], dtype=np.int64)
    toff = np.array([toffs[u] for _, u, _ in entries], dtype=np.int64)
    ptr = np.zeros(l1 + 1, dtype=np.int64)
    np.cumsum(np.bincount([e[0] for e in entries], minlength=l1), out=ptr[1:])
    S0 = rng.normal(size=(m, m))
    S0 = S0 @ S0.T + m * np.eye(m)
    rhs0 = rng.normal(size=(m, p1))
    W = np.zeros(sum(o.size for o in Os))
    S, rhs = S0.copy(), rhs0.copy()
    _schur.schur(ptr, row, qe, toff, ooff, np.concatenate([o.ravel() for o in Os]), Tflat, T1,
                 L11, c1, W, S, rhs)  # fmt: skip
    # dense oracle: L21 = (Lambda_2' Z_2'Z_1 Lambda_1) L11^{-T}, column blocks by level
    L21 = np.zeros((m, l1 * q1))
    for (j, u, k), O in zip(entries, Os):
        r = roff[u] + k * rest_q[u]
        blk = Tu[u].T @ O.T @ T1 @ np.linalg.inv(L11[j]).T
        L21[r : r + rest_q[u], j * q1 : (j + 1) * q1] += blk
    np.testing.assert_allclose(np.tril(S), np.tril(S0 - L21 @ L21.T), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(rhs, rhs0 - L21 @ c1.reshape(-1, p1), rtol=1e-10, atol=1e-10)


def test_assemble_reads_constant_columns_without_arrays():
    # index -1 stands for a column of ones (an intercept); unweighted rows have w = 1
    rng = np.random.default_rng(2)
    n, nlev = 40, 4
    codes = rng.integers(0, nlev, size=(n, 1)).astype(np.int32)
    x, y = rng.normal(size=n), rng.normal(size=n)
    R, XtXy = np.zeros((1, nlev * 10)), np.zeros((1, 3, 3))
    _assemble.assemble(
        codes, np.zeros((n, 0), np.int32), np.zeros((0, 2), np.int64), np.zeros(1, np.int64),
        np.array([2], np.int64), [x, y], np.array([-1, 0], np.int64),
        np.array([-1, 0, 1], np.int64),
        np.ones(1), R, np.zeros(1, np.int64), np.zeros((1, 0)), np.zeros(0, np.int64),
        XtXy, False, 1,
    )  # fmt: skip
    D = R[:, np.arange(nlev)[:, None] * 10 + np.arange(4)].reshape(1, -1)
    XY = np.column_stack([np.ones(n), x, y])
    np.testing.assert_allclose(np.tril(XtXy[0]), np.tril(XY.T @ XY), rtol=1e-12)
    j = codes[:, 0] == 2
    Zj = np.column_stack([np.ones(j.sum()), x[j]])
    np.testing.assert_allclose(D[0, 8:12].reshape(2, 2), Zj.T @ Zj, rtol=1e-12)


@pytest.mark.parametrize("threads", [1, 2])
def test_fitted_matches_dense_product(threads):
    rng = np.random.default_rng(8)
    n, nlev, q = 60, [5, 3], [2, 1]
    codes = np.column_stack([rng.integers(0, l, n) for l in nlev]).astype(np.int64)
    x, z = rng.normal(size=n), rng.normal(size=n)
    beta = np.array([0.5, -1.5])
    b = [rng.normal(size=(5, 2)), rng.normal(size=(3, 1))]
    out = np.full(n, 2.0)  # starts from the offset
    _blockless = np.concatenate([bt.ravel() for bt in b])
    _assemble.fitted(
        codes, [x, z], np.array([-1, 0], np.int64), beta, np.array([-1, 1, -1], np.int64),
        np.array([0, 2], np.int64), np.array(q, np.int64), _blockless,
        np.array([0, 10], np.int64), out, threads,
    )  # fmt: skip
    expected = 2.0 + beta[0] + beta[1] * x
    expected += b[0][codes[:, 0], 0] + b[0][codes[:, 0], 1] * z + b[1][codes[:, 1], 0]
    np.testing.assert_allclose(out, expected, rtol=1e-13)


@pytest.mark.parametrize("n,density,seed", [(1, 1.0, 0), (12, 0.2, 1), (40, 0.08, 2), (60, 0.3, 3)])
def test_takahashi_selected_inverse_matches_the_dense_inverse(n, density, seed):
    import scipy.sparse as sp
    from sksparse import cholmod

    from lmmfast import _selinv

    R = sp.random(n, n, density, random_state=seed)
    A = (R @ R.T + sp.eye(n)).tocsc()
    f = cholmod.analyze(A)
    f.cholesky_inplace(A)
    L, perm = f.L(), f.P()
    indptr, indices = L.indptr.astype(np.int64), L.indices.astype(np.int64)
    Zx = np.zeros(L.nnz)
    pos = np.full(n, -1, dtype=np.int64)
    _selinv.takahashi(indptr, indices, L.data, Zx, pos, np.zeros(n))
    dense = np.linalg.inv(A.toarray()[np.ix_(perm, perm)])
    cols = np.repeat(np.arange(n), np.diff(indptr))
    np.testing.assert_allclose(Zx, dense[indices, cols], rtol=1e-11, atol=1e-13)
    assert np.all(pos == -1)


@pytest.mark.parametrize("width", [1, 3, 64])
def test_scalar_schur_and_condvar_match_dense_products(width):
    # every term scalar: term 1 with 6 levels, the rest 9 rows (two terms); entries sorted
    # by level, then by row; the kernels work in row panels of S's upper half `width` high
    rng = np.random.default_rng(8)
    l1, m, p1, t1 = 6, 9, 2, 0.8
    pairs = sorted(
        {(int(j), int(r)) for j, r in zip(rng.integers(0, l1, 30), rng.integers(0, m, 30))}
    )
    j = np.array([p[0] for p in pairs], dtype=np.int64)
    row = np.array([p[1] for p in pairs], dtype=np.int64)
    theta_rest = np.array([0.6, 1.3])  # rows 0-4: term 2, rows 5-8: term 3
    toff = (row >= 5).astype(np.int64)
    ooff = rng.permutation(len(row)).astype(np.int64)  # W's layout need not be entry order
    O = np.zeros(len(row))
    O[ooff] = rng.normal(size=len(row))
    ptr = np.zeros(l1 + 1, dtype=np.int64)
    np.cumsum(np.bincount(j, minlength=l1), out=ptr[1:])
    L11 = (1.0 + rng.uniform(size=l1)).reshape(l1, 1, 1)
    c1 = rng.normal(size=(l1, 1, p1))
    S0 = rng.normal(size=(m, m))
    S0 = S0 @ S0.T + m * np.eye(m)
    rhs0 = rng.normal(size=(m, p1))
    We, cur = np.zeros(len(row)), np.zeros(l1, dtype=np.int64)
    S, rhs = S0.copy(), rhs0.copy()
    _schur.scalar_schur(ptr, row, toff, O[ooff], theta_rest, t1, L11, c1, We, cur, S, rhs,
                        width)  # fmt: skip
    L21 = np.zeros((m, l1))  # dense oracle: theta_u O_e theta_1 / L11_j at (row e, j)
    L21[row, j] = theta_rest[toff] * O[ooff] * t1 / L11[j, 0, 0]
    np.testing.assert_allclose(We, L21[row, j], rtol=1e-14)
    np.testing.assert_allclose(np.triu(S), np.triu(S0 - L21 @ L21.T), rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(np.tril(S, -1), np.tril(S0, -1))  # the lower half untouched
    np.testing.assert_allclose(rhs, rhs0 - L21 @ c1[:, 0, :], rtol=1e-12, atol=1e-12)
    Sinv = np.linalg.inv(S0)
    out = np.ones((l1, 1, 1))
    _schur.scalar_condvar(
        ptr, row, We, cur, np.triu(Sinv) + np.tril(rng.normal(size=(m, m)), -1), out, width
    )  # fmt: skip  (only the upper triangle may be read)
    want = 1.0 + np.einsum("rj,rs,sj->j", L21, Sinv, L21)
    np.testing.assert_allclose(out[:, 0, 0], want, rtol=1e-12)
