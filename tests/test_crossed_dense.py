"""The crossed factor's dense path (CrossedFactor with a dense L21; src/_crossed_dense.pyx):
its kernels against dense NumPy oracles, and the gradient against finite differences and
the selected-inverse route, at full-rank, near-singular and singular T."""

import numpy as np
import pandas as pd
import pytest
from dense import central_gradient

from lmmfast import _crossed_dense
from lmmfast._pls import ProfiledDeviance
from lmmfast._sources.crossprod import cross_products
from lmmfast._sources.formula import parse_formula
from lmmfast._sources.frame import build_frame


def _blocks(rng, qs_levels):
    """Random lower-triangular T per term and the block tables of _plan_dense."""
    Ts = [np.tril(rng.normal(size=(q, q))) for q, _ in qs_levels]
    tq = np.array([q for q, _ in qs_levels], dtype=np.int64)
    ttoff = np.concatenate([[0], np.cumsum(tq * tq)[:-1]]).astype(np.int64)
    bterm = np.repeat(np.arange(len(tq)), [n for _, n in qs_levels]).astype(np.int64)
    bq = tq[bterm]
    bstart = np.concatenate([[0], np.cumsum(bq)]).astype(np.int64)
    tstart = np.concatenate([[0], np.cumsum([q * n for q, n in qs_levels])]).astype(np.int64)
    Tflat = np.concatenate([T.ravel() for T in Ts])
    return Ts, tq, ttoff, bterm, bstart, ttoff[bterm], Tflat, tstart


QS = [[(3, 5)], [(2, 4), (3, 3), (1, 6)]]


@pytest.mark.parametrize("qs_levels", QS)
def test_congruence_subtract_matches_numpy(qs_levels):
    rng = np.random.default_rng(1)
    Ts, tq, ttoff, bterm, bstart, btoff, Tflat, tstart = _blocks(rng, qs_levels)
    m = int(bstart[-1])
    B = rng.normal(size=(m, m))
    H = B @ B.T
    Lam = np.zeros((m, m))
    for k in range(len(bterm)):
        r = slice(bstart[k], bstart[k + 1])
        Lam[r, r] = Ts[bterm[k]]
    S0 = np.tril(rng.normal(size=(m, m)))
    S = S0.copy()
    Hl = np.tril(H) + np.triu(rng.normal(size=(m, m)), 1)  # the upper triangle is not read
    Y = Hl @ Lam  # its blocks below the diagonal are read
    D = np.zeros((m, m))
    for k in range(len(bterm)):
        r = slice(bstart[k], bstart[k + 1])
        C = rng.normal(size=(tq[bterm[k]],) * 2)
        D[r, r] = C @ C.T
    Dflat = np.concatenate([D[bstart[k] : bstart[k + 1], bstart[k] : bstart[k + 1]].ravel()
                            for k in range(len(bterm))])  # fmt: skip
    args = (bstart, btoff, Tflat, Dflat)
    _crossed_dense.congruence_subtract(Hl, Y, *args, False, np.empty((1, 9)), S)
    np.testing.assert_allclose(S, np.tril(S0 - Lam.T @ H @ Lam), rtol=1e-13, atol=1e-12)
    S = np.triu(S0, 1)  # assign: the lower triangle written, the upper one left
    _crossed_dense.congruence_subtract(Hl, Y, *args, True, np.empty((1, 9)), S)
    want = np.tril(Lam.T @ (D - H) @ Lam + np.eye(m)) + np.triu(S0, 1)
    np.testing.assert_allclose(S, want, rtol=1e-13, atol=1e-12)


def test_level_grams_match_numpy():
    rng = np.random.default_rng(2)
    W = rng.normal(size=(5 * 3, 11))
    K = np.empty((5, 3, 3))
    _crossed_dense.level_grams(W, K)
    Wj = W.reshape(5, 3, 11)
    np.testing.assert_allclose(K, Wj @ Wj.transpose(0, 2, 1), rtol=1e-13)


def test_first_term_gradient_matches_numpy():
    rng = np.random.default_rng(3)
    n, q = 6, 3
    T1 = np.tril(rng.normal(size=(q, q)))
    B = rng.normal(size=(n, q, 2 * q))
    D = B @ B.transpose(0, 2, 1)
    L = np.linalg.cholesky(T1.T @ D @ T1 + np.eye(q))
    Linv = np.linalg.inv(L)
    Kb = rng.normal(size=(n, q, 4))
    K = Kb @ Kb.transpose(0, 2, 1)
    out = np.empty((q, q))
    _crossed_dense.first_term_gradient(Linv, T1, D, K, np.empty((4, q * q)), out)
    E = np.linalg.inv(L @ L.transpose(0, 2, 1)) @ T1.T
    want = (E @ D + E @ K @ (T1 @ E @ D - np.eye(q))).sum(axis=0)
    np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("qs_levels", QS)
def test_rest_gradient_matches_numpy(qs_levels):
    rng = np.random.default_rng(4)
    Ts, tq, ttoff, bterm, bstart, btoff, Tflat, tstart = _blocks(rng, qs_levels)
    m, nb, nt = int(bstart[-1]), len(bterm), len(tq)
    A, B = rng.normal(size=(2, m, m))
    Z, H = A @ A.T, B @ B.T
    Lam, G = np.zeros((m, m)), np.zeros((m, m))
    Ds = []
    for k in range(nb):
        r = slice(bstart[k], bstart[k + 1])
        Lam[r, r] = Ts[bterm[k]]
        C = rng.normal(size=(tq[bterm[k]],) * 2)
        G[r, r] = C @ C.T
        Ds.append(G[r, r].ravel())
    junk = np.triu(rng.normal(size=(m, m)), 1)  # the upper triangles are not read
    qmax = int(tq.max())
    out = np.empty((nt, qmax, qmax))
    _crossed_dense.rest_gradient(
        np.tril(Z) + junk, np.tril(H) + junk, bstart, btoff, bterm, tstart, tq, ttoff, Tflat,
        np.concatenate(Ds), np.empty(qmax * m), np.empty(qmax * m),
        np.empty((nt * nt, qmax**4)), np.empty((1, qmax * qmax)), out,
    )  # fmt: skip
    C = Z @ Lam.T @ (G - H)  # out[t] = sum of C's diagonal blocks on term t
    for t in range(nt):
        want = sum(C[bstart[k] : bstart[k + 1], bstart[k] : bstart[k + 1]]
                   for k in range(nb) if bterm[k] == t)  # fmt: skip
        np.testing.assert_allclose(out[t, : tq[t], : tq[t]], want, rtol=1e-11, atol=1e-10)


def _crossed_data(seed, nu=14, nv=9, reps=2):
    rng = np.random.default_rng(seed)
    u, v = np.divmod(np.arange(nu * nv * reps) % (nu * nv), nv)
    n = len(u)
    x, z = rng.normal(size=n), rng.uniform(-1, 1, n)
    y = 1 + x + rng.normal(size=nu)[u] * (1 + 0.4 * x) + rng.normal(size=nv)[v] * (1 - 0.3 * z)
    return pd.DataFrame(
        {"y": y + rng.normal(size=n), "x": x, "z": z, "wt": rng.uniform(0.5, 2, n),
         "u": u.astype(str), "v": v.astype(str), "g": (v // 3).astype(str)}
    )  # fmt: skip


FORMULAS = [
    "y ~ x + z + (1 + x + z | u) + (1 + x + z | v)",
    "y ~ x + (1 + x | u) + (1 + z | v) + (1 | g)",  # pairs of two later terms
    "y ~ x + (1 + x + z | u) + (1 | v)",
]


def _deviance(formula, reml, weighted):
    frame = build_frame(parse_formula(formula), _crossed_data(5),
                        weights="wt" if weighted else None)  # fmt: skip
    cp = cross_products(frame.terms, frame.X, frame.y, frame.weights)
    ldW = float(np.sum(np.log(frame.weights))) if weighted else 0.0
    dev = ProfiledDeviance(cp, frame.terms, frame.n, reml, ldW)
    assert dev.factorization == "crossed" and dev.factor.dense
    return dev


def _thetas(dev, rng):
    """Full rank, near-singular (a tiny last diagonal entry) and singular (a zero row) T."""
    lower = np.concatenate([t.theta_lower() for t in dev.terms])
    base = np.where(lower == 0, rng.uniform(0.3, 1.2, len(lower)), rng.normal(size=len(lower)))
    near, sing = base.copy(), base.copy()
    for t, s in zip(dev.terms, dev.slices):
        if t.q > 1:  # theta is T's lower triangle by columns: the last entry is T[q-1, q-1]
            near[s.stop - 1] = 1e-5
            sing[s.stop - 1] = 0.0
            sing[s.start + t.q - 1] = 0.0  # T[q-1, 0]: T's last row 0 with T[q-1, q-1]
    first = dev.slices[0]
    zero1 = base.copy()
    zero1[first] = 0.0  # term 1 switched off
    return [base, near, sing, zero1]


@pytest.mark.parametrize("reml", [False, True])
@pytest.mark.parametrize("formula", FORMULAS)
def test_dense_gradient_matches_finite_differences(formula, reml):
    dev = _deviance(formula, reml, weighted=formula == FORMULAS[1])
    for theta in _thetas(dev, np.random.default_rng(21)):
        value, grad = dev.value_and_gradient(theta)
        assert value == pytest.approx(dev(theta), rel=1e-12)
        h = 1e-6
        fd = central_gradient(dev, theta, h)
        np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-5 * max(1.0, np.abs(fd).max()))


@pytest.mark.parametrize("reml", [False, True])
@pytest.mark.parametrize("formula", FORMULAS)
def test_dense_gradient_matches_the_selected_inverse_at_singular_fits(formula, reml):
    dev = _deviance(formula, reml, weighted=True)
    f = dev.factor
    for theta in _thetas(dev, np.random.default_rng(22)):
        Ts = dev.Ts(theta)
        dec = dev.decompose(theta, Ts)
        P = np.linalg.inv(dec.RX.T @ dec.RX)
        got = f.gradient(Ts, dec.beta, P, 1.3, reml)
        Zd, Zp = f.selected_inverse()
        want = f.assembly.gradient(Ts, Zd, Zp, f.back_solve(f.c1, f.c2), dec.beta, P, 1.3, reml)
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10 * np.abs(want).max())


@pytest.mark.parametrize("formula", FORMULAS)
def test_dense_objective_matches_the_sparse_layout(formula, monkeypatch):
    # the Schur complement from H = P'P (dense path; A22 + I written by the kernel where it
    # is block-diagonal) and from the per-level kernel (sparse)
    from lmmfast._factor import crossed as _crossed

    dev = _deviance(formula, True, True)
    assert dev.factor._dense_assign == (formula != FORMULAS[1])
    monkeypatch.setattr(_crossed, "DENSE_FILL", 2.0)
    frame = build_frame(parse_formula(formula), _crossed_data(5), weights="wt")
    cp = cross_products(frame.terms, frame.X, frame.y, frame.weights)
    other = ProfiledDeviance(cp, frame.terms, frame.n, True, float(np.sum(np.log(frame.weights))))
    assert not other.factor.dense
    for theta in _thetas(dev, np.random.default_rng(23)):
        assert dev(theta) == pytest.approx(other(theta), rel=1e-12)
