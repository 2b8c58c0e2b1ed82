"""src/_many_blocked_kernel.pyx (lmer_many, one term on one grouping factor): its objective
pieces against a dense oracle written in V = Z Lambda Lambda'Z' + W^{-1} directly, its
gradient against central differences and against lmer()'s blocked factorization, and
lmer_many's fits through it against lmer()'s."""

import warnings

import numpy as np
import pandas as pd
import pytest
from dense import central_gradient, dense_Lambda, dense_Z, marginal_objective

import lmmfast
from lmmfast import _many
from lmmfast._many_blocked import BlockedDeviance, applies, kernel
from lmmfast._pls import ProfiledDeviance
from lmmfast._sources.crossprod import RowData
from lmmfast._sources.formula import parse_formula
from lmmfast._sources.frame import build_frame

FORMULAS = ["y ~ x + (1 + x | g)", "y ~ x + x2 + (1 + x + x2 | g)", "y ~ 1 + (1 + x | g)"]
THETAS = {2: [[1.0, 0.0, 1.0], [0.7, -0.4, 0.3], [0.5, 0.2, 0.0]],
          3: [[1.0, 0.0, 0.0, 1.0, 0.0, 1.0], [0.8, 0.3, -0.2, 0.6, 0.1, 0.4]]}  # fmt: skip


def _design(formula, seed=3, n=90):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"g": rng.integers(0, 9, n).astype(str), "x": rng.normal(size=n),
                       "x2": rng.normal(size=n), "y": rng.normal(size=n)})  # fmt: skip
    w = rng.uniform(0.5, 2.0, n)
    frame = build_frame(parse_formula(formula), df, weights=w)
    cp = RowData(frame.terms, frame.Xcols, frame.xnames, frame.y).cross_products(w)
    return frame, cp, w


def _deviance(frame, cp, w, reml):
    ldW = float(np.sum(np.log(w)))
    kern = kernel(cp.D[0], cp.XtXy.shape[0])
    return BlockedDeviance(kern, cp, frame.terms, frame.n, reml, ldW), ldW


@pytest.mark.parametrize("formula", FORMULAS)
@pytest.mark.parametrize("reml", [True, False])
def test_objective_equals_dense_oracle(formula, reml):
    frame, cp, w = _design(formula)
    dev, _ = _deviance(frame, cp, w, reml)
    Z, X, y = dense_Z(frame.terms), frame.X, frame.y
    for theta in THETAS[frame.terms[0].q]:
        theta = np.array(theta)
        Lam = dense_Lambda(frame.terms, [frame.terms[0].T(theta)])
        want, beta = marginal_objective(y, X, Z, Lam, w, reml)
        dec = dev.decompose(theta)
        assert dev.objective(dec) == pytest.approx(want, rel=1e-11)
        np.testing.assert_allclose(dec.beta, beta, rtol=1e-9, atol=1e-11)
        # and the pieces as lmer()'s blocked factorization computes them
        ref = ProfiledDeviance(cp, frame.terms, frame.n, reml, float(np.sum(np.log(w))))
        r = ref.decompose(theta)
        assert (dec.ldL2, dec.ldRX2, dec.pwrss) == pytest.approx((r.ldL2, r.ldRX2, r.pwrss),
                                                                 rel=1e-12)  # fmt: skip
        np.testing.assert_allclose(dec.R, r.R, rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("formula", FORMULAS)
@pytest.mark.parametrize("reml", [True, False])
def test_gradient_central_differences_and_lmer(formula, reml):
    frame, cp, w = _design(formula, seed=8)
    dev, ldW = _deviance(frame, cp, w, reml)
    ref = ProfiledDeviance(cp, frame.terms, frame.n, reml, ldW)
    assert applies(ref)
    for theta in THETAS[frame.terms[0].q]:
        theta = np.array(theta)
        f, g = dev.value_and_gradient(theta)
        h = 1e-6
        fd = central_gradient(dev, theta, h)
        np.testing.assert_allclose(g, fd, rtol=1e-5, atol=1e-5)
        fr, gr = ref.value_and_gradient(theta)
        assert f == pytest.approx(fr, rel=1e-13)
        np.testing.assert_allclose(g, gr, rtol=1e-10, atol=1e-10 * max(1.0, abs(fr)))


def test_lmer_many_uses_it_and_equals_lmer(monkeypatch):
    rng = np.random.default_rng(13)
    subj = np.repeat(np.arange(12), 8)
    t = np.tile(np.linspace(0, 1, 8), 12)
    df = pd.DataFrame({"subject": [f"s{k}" for k in subj], "time": t})
    G = 6
    b0, b1 = rng.normal(size=(12, G)), rng.normal(size=(12, G)) * 0.5
    Y = b0[subj] + b1[subj] * t[:, None] + rng.normal(size=(len(t), G))
    Y[:, 5] = rng.normal(size=len(t))  # no subject variation: a singular fit
    used = []

    class Spy(BlockedDeviance):
        def __init__(self, *a, **k):
            used.append(1)
            super().__init__(*a, **k)

    monkeypatch.setattr(_many, "BlockedDeviance", Spy)
    for reml in (True, False):
        m1 = lmmfast.lmer_many("~ time + (1 + time | subject)", df, Y, REML=reml, threads=1)
        m2 = lmmfast.lmer_many("~ time + (1 + time | subject)", df, Y, REML=reml, threads=2)
        pd.testing.assert_frame_equal(m1.theta, m2.theta, check_exact=True)
        pd.testing.assert_series_equal(m1.objective, m2.objective, check_exact=True)
        for g in range(G):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                f = lmmfast.lmer("y ~ time + (1 + time | subject)", df.assign(y=Y[:, g]),
                                 REML=reml)  # fmt: skip
            assert m1.objective.iloc[g] == pytest.approx(f.objective, rel=1e-10)
            np.testing.assert_allclose(m1.theta.iloc[g], f.theta, atol=1e-8)
            np.testing.assert_allclose(m1.fixef.iloc[g], f.fixef, atol=1e-8)
    assert len(used) == 4 * G
