"""The crossed factor's scalar branch (every term a random intercept): its kernels against
dense NumPy oracles, its reuse of a repeated theta, and its gradient against finite
differences at theta near 0, at SCALAR_TRACE_MIN and at ordinary values."""

import numpy as np
import pandas as pd
import pytest
from dense import central_gradient

from lmmfast import _schur
from lmmfast._factor import crossed
from lmmfast._optimize import check_optimum_fg, lbfgs
from lmmfast._pls import ProfiledDeviance
from lmmfast._sources.crossprod import cross_products
from lmmfast._sources.formula import parse_formula
from lmmfast._sources.frame import build_frame


def _entries(rng, l1, m, n):
    """Unique (level of term 1, row of S) pairs in level order, then by row, and ptr."""
    pairs = sorted(
        {(int(j), int(r)) for j, r in zip(rng.integers(0, l1, n), rng.integers(0, m, n))}
    )
    j = np.array([p[0] for p in pairs], dtype=np.int64)
    row = np.array([p[1] for p in pairs], dtype=np.int64)
    ptr = np.zeros(l1 + 1, dtype=np.int64)
    np.cumsum(np.bincount(j, minlength=l1), out=ptr[1:])
    return j, row, ptr


def test_scalar_lt_times_first_matches_the_dense_product():
    rng = np.random.default_rng(4)
    l1, m, k = 7, 11, 3
    j, row, ptr = _entries(rng, l1, m, 40)
    We = rng.normal(size=len(row))
    x2 = rng.normal(size=(m, k))
    r0 = rng.normal(size=(l1, 1, k))
    r1 = r0.copy()
    _schur.scalar_lt_times_first(ptr, row, We, x2, r1)
    L21 = np.zeros((m, l1))  # dense oracle: L21[row e, j] = W_e
    L21[row, j] = We
    np.testing.assert_allclose(r1[:, 0, :], r0[:, 0, :] - L21.T @ x2, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("nlev,m", [(20, 9), (300, 40), (70_000, 30)])
def test_entry_order_is_lexsort_by_level_then_row(nlev, m):
    rng = np.random.default_rng(nlev)
    n = 5000
    pairs = np.unique(np.column_stack([rng.integers(0, nlev, n), rng.integers(0, m, n)]), axis=0)
    pairs = pairs[rng.permutation(len(pairs))]  # CrossProducts' pairs: in order of appearance
    j, r = pairs[:, 0].astype(np.int64), pairs[:, 1].astype(np.int64)
    np.testing.assert_array_equal(crossed._entry_order(j, r, nlev, m), np.lexsort((r, j)))


def _data(seed=5, n=400):
    rng = np.random.default_rng(seed)
    u, v, w = rng.integers(0, 30, n), rng.integers(0, 9, n), rng.integers(0, 4, n)
    x = rng.normal(size=n)
    y = 1 + x + rng.normal(size=30)[u] + 0.7 * rng.normal(size=9)[v] + 0.4 * rng.normal(size=4)[w]
    return pd.DataFrame(
        {"y": y + rng.normal(size=n), "x": x, "u": u.astype(str), "v": v.astype(str),
         "w": w.astype(str)}
    )  # fmt: skip


@pytest.fixture
def sparse_l21(monkeypatch):
    """Small designs fill L21 densely (the dense route): the scalar one, as on large ones."""
    monkeypatch.setattr(crossed, "DENSE_FILL", 2.0)


def _deviance(formula="y ~ x + (1 | u) + (1 | v) + (1 | w)", reml=False):
    frame = build_frame(parse_formula(formula), _data(), None, None)
    cp = cross_products(frame.terms, frame.X, frame.y, None)
    dev = ProfiledDeviance(cp, frame.terms, frame.n, reml, 0.0)
    dev.factor = crossed.CrossedFactor(cp, frame.terms)
    assert dev.factor.scalar and not dev.factor.dense
    return dev


def test_a_repeated_theta_gives_what_a_fresh_factor_gives(sparse_l21):
    dev, fresh = _deviance(), _deviance()
    a, b = np.array([0.8, 0.5, 0.3]), np.array([0.6, 0.9, 0.2])
    for theta in (a, b, a, a, b, b, a):  # repeats reuse the factor, its result and gradient
        v, g = dev.value_and_gradient(theta)
        vf, gf = _deviance().value_and_gradient(theta)
        assert v == vf
        np.testing.assert_array_equal(g, gf)
    # the factor's state after a repeat is the one at theta: the modes from it
    dec = dev.decompose(a)
    decf = fresh.decompose(a)
    for u, uf in zip(dev.factor.spherical_modes(dec.beta), fresh.factor.spherical_modes(decf.beta)):
        np.testing.assert_array_equal(u, uf)
    dev(b)  # an objective-only call between: the gradient at a is computed again
    np.testing.assert_array_equal(dev.value_and_gradient(a)[1], fresh.value_and_gradient(a)[1])


@pytest.mark.parametrize("reml", [False, True])
@pytest.mark.parametrize(
    "theta",
    [[0.8, 1.3, 0.4], [0.3, 0.0, 0.5], [1e-3, 0.7, 0.2], [0.9, 2e-4, 0.3], [0.5, 0.6, 1e-3]],
)
def test_scalar_gradient_matches_finite_differences(theta, reml, sparse_l21):
    # ordinary values, an exact 0 (zero slope: the deviance is even in theta), the
    # diagonal-of-A^{-1} route at SCALAR_TRACE_MIN, and the selected inverse below it
    assert crossed.SCALAR_TRACE_MIN == 1e-3
    dev = _deviance(reml=reml)
    theta = np.array(theta)
    value, grad = dev.value_and_gradient(theta)
    assert value == pytest.approx(dev(theta), rel=1e-12)
    h = 1e-7
    fd = central_gradient(dev, theta, h)
    np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-5 * max(1.0, np.abs(fd).max()))
    assert grad[theta == 0.0] == pytest.approx(0.0, abs=1e-12)


def test_lbfgs_hands_its_end_point_to_the_optimum_check():
    A = np.array([[3.0, 1.0], [1.0, 2.0]])
    calls = []

    def fg(x):
        calls.append(x.copy())
        return float(0.5 * x @ A @ x - x.sum() + 10.0), A @ x - 1.0

    s = lbfgs(fg, np.array([2.0, -1.0]), np.full(2, -np.inf))
    assert s.feval == len(calls)
    assert len({c.tobytes() for c in calls}) == len(calls)  # no point evaluated twice
    x, f, g = s.fg_at
    np.testing.assert_array_equal(x, s.theta)
    assert f == s.fmin and f == fg(s.theta)[0]
    np.testing.assert_array_equal(g, fg(s.theta)[1])
    calls.clear()
    check_optimum_fg(fg, s)  # the Hessian's 2 gradients only
    assert len(calls) == 2 and not any(np.array_equal(c, s.theta) for c in calls)
    np.testing.assert_allclose(s.hessian, A, rtol=1e-4)
