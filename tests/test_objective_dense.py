"""The profiled objective at fixed theta against a dense marginal-likelihood computation.

Oracle: tests/dense.py builds Z and Lambda densely and evaluates the (restricted)
likelihood of y ~ N(X beta, sigma^2 (Z Lambda Lambda' Z' + W^{-1})) profiled over beta
and sigma.  Designs are seeded and random, covering both backends (one factor: the
per-cluster kernel; crossed and nested: CHOLMOD), slopes, weights and offsets.
"""

import numpy as np
import pandas as pd
import pytest
from dense import dense_Lambda, dense_Z, marginal_objective

from lmmfast._pls import ProfiledDeviance
from lmmfast._sources.crossprod import cross_products
from lmmfast._sources.formula import parse_formula
from lmmfast._sources.frame import build_frame


def _data(seed, n=120):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "x": rng.normal(size=n),
            "z": rng.uniform(-1, 1, size=n),
            "g": rng.integers(0, 9, size=n).astype(str),
            "h": rng.choice(list("abcde"), size=n),
            "w": rng.uniform(0.5, 2.0, size=n),
            "off": rng.normal(size=n),
        }
    )
    df["a"] = df["g"]  # for nesting: b within a
    df["b"] = rng.integers(0, 3, size=n).astype(str)
    df["c"] = rng.integers(0, 2, size=n).astype(str)
    df["y"] = 1 + df.x + rng.normal(size=n) + rng.normal(size=9)[df.g.astype(int)]
    return df


CASES = [
    ("y ~ x + (1 | g)", False),
    ("y ~ x + (x | g)", False),
    ("y ~ x + z + (x + z | g)", False),
    ("y ~ x + (x || g)", False),
    ("y ~ x + (1 | g) + (1 | h)", False),
    ("y ~ x + (x | g) + (1 | h)", False),
    ("y ~ x + (1 | a/b)", False),
    ("y ~ x + (x | a/b)", False),
    ("y ~ x + (1 | a/b/c)", True),
    ("y ~ x + (x || a/b)", False),
    ("y ~ x + (1 | g:h)", False),
    ("y ~ x + (1 | g) + (1 | h) + (1 | c)", True),
    ("y ~ x + (x | g) + (x | h)", False),
    ("y ~ x + (1 | h) + (x || g)", False),
    ("y ~ x + (1 | g)", True),
    ("y ~ x + (x | g) + (1 | h)", True),
]


@pytest.mark.parametrize("reml", [True, False])
@pytest.mark.parametrize("formula,weighted", CASES)
def test_profiled_objective_equals_dense_marginal_likelihood(formula, weighted, reml):
    df = _data(hash(formula) % 1000)
    frame = build_frame(parse_formula(formula), df, weights="w" if weighted else None)
    cp = cross_products(frame.terms, frame.X, frame.y, frame.weights)
    w = frame.weights if weighted else np.ones(frame.n)
    dev = ProfiledDeviance(cp, frame.terms, frame.n, reml, float(np.sum(np.log(w))))
    rng = np.random.default_rng(7)
    lower = np.concatenate([t.theta_lower() for t in frame.terms])
    for _ in range(3):
        theta = np.where(lower == 0, rng.uniform(0.1, 2.0, len(lower)), rng.normal(size=len(lower)))
        Ts = dev.Ts(theta)
        Z, Lam = dense_Z(frame.terms), dense_Lambda(frame.terms, Ts)
        expected, beta = marginal_objective(frame.y, frame.X, Z, Lam, w, reml)
        dec = dev.decompose(theta)
        assert dev.objective(dec) == pytest.approx(expected, rel=1e-10)
        np.testing.assert_allclose(dec.beta, beta, rtol=1e-8, atol=1e-10)


def test_offset_is_subtracted_from_the_response():
    df = _data(3)
    with_offset = build_frame(parse_formula("y ~ x + (1 | g)"), df, offset="off")
    shifted = df.assign(y=df.y - df.off)
    plain = build_frame(parse_formula("y ~ x + (1 | g)"), shifted)
    np.testing.assert_allclose(with_offset.y - with_offset.offset, plain.y)


def test_evaluation_reads_no_rows():
    # the objective at theta uses only the cross products: rebinding the rows changes nothing
    df = _data(5)
    frame = build_frame(parse_formula("y ~ x + (x | g) + (1 | h)"), df)
    cp = cross_products(frame.terms, frame.X, frame.y, None)
    dev = ProfiledDeviance(cp, frame.terms, frame.n, True, 0.0)
    before = dev(np.array([0.8, 0.1, 0.5, 1.2]))
    for t in frame.terms:  # what the objective could read of the rows, made useless
        t.Zcols = [np.full(frame.n, np.nan) for _ in t.Zcols]
        t.codes = np.zeros_like(t.codes)
    assert dev(np.array([0.8, 0.1, 0.5, 1.2])) == before


@pytest.mark.parametrize("formula", ["y ~ x + (1 | a/b)", "y ~ x + (x | a/b)", "y ~ (1 | a/b/c)"])
def test_nested_factorization_agrees_with_cholmod(formula, monkeypatch):
    from lmmfast._factor import blocked as _blocked
    from lmmfast._factor import crossed as _crossed

    df = _data(11)
    frame = build_frame(parse_formula(formula), df)
    cp = cross_products(frame.terms, frame.X, frame.y, None)
    nested = ProfiledDeviance(cp, frame.terms, frame.n, True, 0.0)
    monkeypatch.setattr(_blocked, "MAX_CLUSTER", 0)  # clusters and the dense rest too large:
    monkeypatch.setattr(_crossed, "MAX_DENSE", 0)  # CHOLMOD
    sparse = ProfiledDeviance(cp, frame.terms, frame.n, True, 0.0)
    assert (nested.factorization, sparse.factorization) == ("nested", "cholmod")
    lower = np.concatenate([t.theta_lower() for t in frame.terms])
    theta = np.where(lower == 0, 0.7, 0.2)
    assert nested(theta) == pytest.approx(sparse(theta), rel=1e-12)
    beta = nested.decompose(theta).beta
    np.testing.assert_allclose(beta, sparse.decompose(theta).beta, rtol=1e-10)
    for a, b in zip(nested.factor.spherical_modes(beta), sparse.factor.spherical_modes(beta)):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(
    "formula",
    ["y ~ x + (1 | g) + (1 | h)", "y ~ x + (x | g) + (x | h)", "y ~ (1 | g) + (1 | h) + (1 | c)"],
)
def test_crossed_factorization_agrees_with_cholmod(formula, monkeypatch):
    from lmmfast._factor import crossed as _crossed

    df = _data(13)
    frame = build_frame(parse_formula(formula), df)
    cp = cross_products(frame.terms, frame.X, frame.y, None)
    crossed = ProfiledDeviance(cp, frame.terms, frame.n, False, 0.0)
    monkeypatch.setattr(_crossed, "MAX_DENSE", 0)
    sparse = ProfiledDeviance(cp, frame.terms, frame.n, False, 0.0)
    assert (crossed.factorization, sparse.factorization) == ("crossed", "cholmod")
    lower = np.concatenate([t.theta_lower() for t in frame.terms])
    theta = np.where(lower == 0, 0.8, -0.3)
    assert crossed(theta) == pytest.approx(sparse(theta), rel=1e-12)
    beta = crossed.decompose(theta).beta
    for a, b in zip(crossed.factor.spherical_modes(beta), sparse.factor.spherical_modes(beta)):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
