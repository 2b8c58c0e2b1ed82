"""The small fit's short paths (lmmfast/_pls.py's blocked evaluation, mirror_lower) give the
general paths' numbers bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

import lmmfast
from lmmfast._sources.crossprod import mirror_lower

SLEEP = lmmfast.datasets.load("sleepstudy")


@pytest.mark.parametrize(
    "formula, reml",
    [
        ("Reaction ~ Days + (Days | Subject)", True),
        ("Reaction ~ Days + (Days | Subject)", False),
        ("Reaction ~ Days + (1 | Subject) + (0 + Days | Subject)", True),
        ("Reaction ~ 1 + (1 | Subject)", True),
        ("Reaction ~ 0 + Days + (Days | Subject)", True),
    ],
)
def test_the_blocked_evaluation_is_the_general_one_bit_for_bit(formula, reml):
    dev = lmmfast.lmer(formula, SLEEP, REML=reml)._dev
    assert dev._blocked
    rng = np.random.default_rng(0)
    k = sum(t.ntheta for t in dev.terms)
    for _ in range(20):
        theta = np.abs(rng.standard_normal(k)) + 0.01
        dev._blocked = True
        f1, g1 = dev.value_and_gradient(theta)
        d1 = dev.decompose(theta)
        dev._blocked = False  # the general path: update()'s mirrored C, Ts, gradient()
        f0, g0 = dev.value_and_gradient(theta)
        d0 = dev.decompose(theta)
        assert f1 == f0 and np.array_equal(g1, g0)
        assert np.array_equal(d1.R, d0.R) and np.array_equal(d1.beta, d0.beta)
        assert (d1.ldL2, d1.ldRX2, d1.pwrss) == (d0.ldL2, d0.ldRX2, d0.pwrss)
    dev._blocked = True
    g = dev.value_and_gradient(theta)[1]
    assert g is not dev.value_and_gradient(theta)[1]  # a new gradient array at every call


def test_mirror_lower_is_tril_plus_its_transpose():
    rng = np.random.default_rng(1)
    for n in (1, 2, 3, 7):
        A = rng.standard_normal((n, n))
        A[rng.random((n, n)) < 0.3] = -0.0
        ref = np.tril(A) + np.tril(A, -1).T
        out = mirror_lower(A)
        assert np.array_equal(out, ref) and np.array_equal(np.signbit(out), np.signbit(ref))


@pytest.mark.parametrize("threads", [1, 2])
def test_the_blocked_kernel_object_is_the_kernel_functions(threads):
    """_blockdiag.Blocked (views taken once) against update() and gradient(), bit for bit,
    in one chunk and in two; those are checked against dense NumPy in test_kernels.py."""
    from lmmfast import _blockdiag

    rng = np.random.default_rng(2)
    nlev, Q, p1 = 7, 3, 4
    Z = rng.standard_normal((nlev, 5, Q))
    B = np.ascontiguousarray(Z.transpose(0, 2, 1) @ Z)
    ZXY = rng.standard_normal((nlev, Q, p1))
    T = np.tril(rng.standard_normal((Q, Q))) + 2 * np.eye(Q)
    beta, P = rng.standard_normal(p1 - 1), np.eye(p1 - 1) + 0.1
    out = []
    for use_object in (False, True):
        L, cu = np.zeros((nlev, Q, Q)), np.zeros((nlev, Q, p1))
        C, ld = np.zeros((threads, p1, p1)), np.zeros(threads)
        F, work = np.zeros((threads, Q, Q)), np.zeros((threads, 3 + 2 * (p1 - 1), Q))
        if use_object:
            k = _blockdiag.Blocked(B, ZXY, L, cu, C, ld, F, work, threads)
            assert k.update(T)
            k.gradient(T, beta, P, 0.7, True)
        else:
            assert _blockdiag.update(T, B, ZXY, L, cu, C, ld, threads)
            _blockdiag.gradient(T, B, ZXY, L, cu, beta, P, 0.7, True, F, work, threads)
        out.append((L, cu, C, ld, F))
    for a, b in zip(*out):
        assert np.array_equal(a, b)


def test_a_fit_with_the_kernel_object_pickles():
    import pickle

    fit = lmmfast.lmer("Reaction ~ Days + (Days | Subject)", SLEEP)
    again = pickle.loads(pickle.dumps(fit))
    theta = np.array([0.9, 0.1, 0.3])
    assert again._dev.value_and_gradient(theta)[0] == fit._dev.value_and_gradient(theta)[0]


def test_theta_scale_in_python_floats_is_the_arrays():
    """_lmer._theta_scale against its NumPy form, with columns of extreme and ordinary RMS."""
    from types import SimpleNamespace

    from lmmfast._lmer import EXTREME, _theta_scale

    rng = np.random.default_rng(3)
    for _ in range(50):
        qs = rng.integers(1, 4, rng.integers(1, 3)).tolist()
        D = [
            (lambda Z: Z.transpose(0, 2, 1) @ Z)(
                rng.standard_normal((5, 4, q)) * 10.0 ** rng.integers(-9, 10, q)
            )
            for q in qs
        ]
        terms, n = [SimpleNamespace(q=q) for q in qs], int(rng.integers(1, 1000))
        ref = []
        for t, d in zip(terms, D):
            rms = np.sqrt(np.maximum(np.einsum("jaa->a", d), 1e-300) / n)
            s = np.where((rms < EXTREME[0]) | (rms > EXTREME[1]), 1.0 / rms, 1.0)
            ref += [s[a] for b in range(t.q) for a in range(b, t.q)]
        assert np.array_equal(_theta_scale(terms, SimpleNamespace(D=D), n), np.array(ref))


def test_amax_is_numpys_max_of_abs():
    from lmmfast._polish import _amax

    for v in ([1.0, -3.0, 2.0], [-0.0], [np.nan, 1.0], [1.0, np.inf], [-np.inf, np.nan]):
        a, b = _amax(np.array(v)), np.max(np.abs(np.array(v)))
        assert (a == b) or (np.isnan(a) and np.isnan(b))


def test_newton_polish_reaches_a_bounded_quadratics_minimum():
    """f = (x - c)'A(x - c)/2 with x >= lower: the free coordinates reach the optimum and a
    bounded one pushed outwards stays on its bound, with and without a known Hessian."""
    from lmmfast._polish import newton_polish

    A = np.array([[3.0, 0.5, 0.2], [0.5, 2.0, 0.1], [0.2, 0.1, 1.0]])
    c = np.array([1.0, -2.0, -0.5])
    lower = np.array([0.0, -np.inf, 0.0])

    def fg(x):
        r = x - c
        return 0.5 * r @ A @ r, A @ r

    x0 = np.array([1.2, -1.5, 0.0])
    f0, g0 = fg(x0)
    for at in (None, (f0, g0, A.copy())):
        x, f, _ = newton_polish(fg, x0, lower, at)
        assert x[2] == 0.0 and f <= f0
        g = fg(x)[1]
        assert np.allclose(g[:2], 0.0, atol=1e-10) and g[2] >= 0
