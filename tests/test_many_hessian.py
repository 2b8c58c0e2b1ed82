"""src/_scalar_crossed.pyx's Hessian (lmer_many's compiled Newton fit): against a dense oracle
written in V = Z Lambda Lambda'Z' + W^{-1} directly (n x n matrices, the classical REML/ML
derivatives in phi = theta^2), and against central differences of the kernel's gradient."""

import numpy as np
import pandas as pd
import pytest
from dense import dense_Lambda, dense_Z

import lmmfast
from lmmfast._many_scalar import ScalarDesign
from lmmfast._sources.crossprod import RowData
from lmmfast._sources.formula import parse_formula
from lmmfast._sources.frame import build_frame

FORMULAS = [
    "y ~ x + (1 | a)",
    "y ~ x + (1 | a) + (1 | b)",
    "y ~ 1 + (1 | a) + (1 | b) + (1 | c)",
    "y ~ x + x2 + (1 | a) + (1 | b)",
]


def _kernel(formula, reml, seed=21, n=120):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({k: rng.integers(0, m, n).astype(str) for k, m in zip("abc", (15, 4, 3))})
    df = df.assign(x=rng.normal(size=n), x2=rng.normal(size=n), y=rng.normal(size=n))
    w = rng.uniform(0.5, 2.0, n)
    frame = build_frame(parse_formula(formula), df, weights=w)
    cp = RowData(frame.terms, frame.Xcols, frame.xnames, frame.y).cross_products(w)
    p1 = cp.XtXy.shape[0]
    kernel = ScalarDesign(cp, frame.terms).kernel(p1)
    Z1 = np.ascontiguousarray(cp.ZXY[0][:, 0, :])
    Z2 = np.ascontiguousarray(
        np.concatenate([z[:, 0, :] for z in cp.ZXY[1:]]) if len(cp.ZXY) > 1 else np.zeros((0, p1))
    )
    kernel.set_response(Z1, Z2, np.ascontiguousarray(cp.XtXy))
    nmp = float(n - (p1 - 1) if reml else n)

    def grad_hess(theta):
        kernel.theta[:] = theta
        assert kernel.evaluate(True, reml, nmp, True) == 0
        return kernel.grad.copy(), kernel.hess.copy()

    return frame, w, grad_hess, rng


def _dense_derivatives(frame, w, theta, reml):
    """Gradient and Hessian in theta of the profiled criterion, from V directly: in
    phi = theta^2, F_k = tr(P* V_k) - nu y'PV_kPy / y'Py and F_kl = -tr(P*V_kP*V_l)
    + nu (2 y'PV_kPV_lPy / y'Py - y'PV_kPy y'PV_lPy / (y'Py)^2), P* = P (REML) or V^{-1}."""
    Z, X, y = dense_Z(frame.terms), frame.X, frame.y
    n, p = X.shape
    Lam = dense_Lambda(frame.terms, [np.array([[t]]) for t in theta])
    V = Z @ Lam @ Lam.T @ Z.T + np.diag(1.0 / w)
    Vi = np.linalg.inv(V)
    P = Vi - Vi @ X @ np.linalg.solve(X.T @ Vi @ X, X.T @ Vi)
    Ps = P if reml else Vi
    nu = n - p if reml else n
    sizes = np.cumsum([0] + [t.nlevels for t in frame.terms])
    Vk = [Z[:, a:b] @ Z[:, a:b].T for a, b in zip(sizes[:-1], sizes[1:])]
    yPy = y @ P @ y
    q = [y @ P @ V_ @ P @ y for V_ in Vk]
    K = len(Vk)
    F = np.array([np.trace(Ps @ Vk[k]) - nu * q[k] / yPy for k in range(K)])
    FH = np.array(
        [
            [
                -np.trace(Ps @ Vk[k] @ Ps @ Vk[u])
                + nu * (2 * (y @ P @ Vk[k] @ P @ Vk[u] @ P @ y) / yPy - q[k] * q[u] / yPy**2)
                for u in range(K)
            ]
            for k in range(K)
        ]
    )
    th = np.asarray(theta, dtype=float)
    return 2 * th * F, 4 * np.outer(th, th) * FH + 2 * np.diag(F)


@pytest.mark.parametrize("reml", [True, False])
@pytest.mark.parametrize("formula", FORMULAS)
def test_hessian_matches_the_dense_oracle_and_differences_of_the_gradient(formula, reml):
    frame, w, grad_hess, rng = _kernel(formula, reml)
    K = len(frame.terms)
    points = [
        rng.uniform(0.2, 1.5, K),
        np.where(np.arange(K) % 2 == 0, -1.0, 1.0) * rng.uniform(0.2, 1.5, K),  # theta < 0
        np.r_[0.0, rng.uniform(0.2, 1.0, K - 1)],  # a theta at 0: Z'V^{-1}X by G products
        np.r_[rng.uniform(0.2, 1.0, K - 1), 1e-7],
        np.full(K, 4.0),
    ]
    for theta in points:
        g, H = grad_hess(theta)
        g_dense, H_dense = _dense_derivatives(frame, w, theta, reml)
        scale = max(1.0, np.max(np.abs(H_dense)))
        np.testing.assert_allclose(g, g_dense, rtol=1e-8, atol=1e-8 * scale)
        np.testing.assert_allclose(H, H_dense, rtol=1e-8, atol=1e-8 * scale)
        assert np.array_equal(H, H.T)
        h = 1e-6
        fd = np.array([(grad_hess(theta + h * e)[0] - grad_hess(theta - h * e)[0]) / (2 * h)
                       for e in np.eye(K)]).T  # fmt: skip
        np.testing.assert_allclose(H, fd, rtol=1e-5, atol=1e-5 * scale)


def test_the_compiled_newton_fit_needs_few_evaluations():
    """Newton on the analytic Hessian: about 12 factorizations per response on the bench's
    genes design (the quasi-Newton descent with a difference Hessian took ~55); every
    response in C, none left to the Python path."""
    rng = np.random.default_rng(5)
    ind = np.repeat(np.arange(40), 5)
    n, G = len(ind), 60
    batch = rng.integers(0, 8, n)
    df = pd.DataFrame({"ind": ind.astype(str), "batch": batch.astype(str),
                       "cond": rng.choice(["c", "t"], n)})  # fmt: skip
    Y = (rng.normal(size=(40, G)) * rng.uniform(0, 0.8, G))[ind]
    Y += (rng.normal(size=(8, G)) * rng.uniform(0, 0.5, G))[batch] + rng.normal(size=(n, G))
    many = lmmfast.lmer_many("~ cond + (1 | ind) + (1 | batch)", df, Y, threads=1)
    assert many._r.compiled.all() and many.converged.all()
    evals = np.array([o.feval for o in many._r.opt])
    assert evals.mean() <= 16 and evals.max() <= 40
