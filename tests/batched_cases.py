"""Shared by the batched-source tests (Parquet, Dask): data with every feature the pass
must carry across batches, the models, and the comparison with the in-memory fit.

Tolerances.  The data path is exact: the batched cross-products equal the in-memory ones
to 1e-13 relative (the batches add the same numbers in another order) and the objective
agrees to 1e-10 relative, as issue 11 asks.  beta, theta, sigma and the SEs agree to
PARAM_RTOL = 1e-8, the issue's: lmer ends with Newton steps on the analytic gradient, so
the optimum does not depend on the order the rows were added in
(test_in_memory_fit_does_not_move_when_rows_are_reversed).
"""

import numpy as np
import pandas as pd

# every random-term form, categorical fixed effects, factor() of an integer, weights and
# offsets, an arithmetic response; rows with missing values are dropped (na.omit)
MODELS = [
    ("y ~ x + f + (x | g)", {"weights": "w", "offset": "o"}),
    ("y ~ x + (x || g)", {}),
    ("y ~ x + (1 | g) + (1 | h)", {}),
    ("y ~ x + (1 | g/s)", {}),
    ("y ~ x * f + factor(k) + (1 | g:h)", {"weights": "w"}),
    ("log(y + 20) ~ x + (1 | h) + offset(o)", {}),
]


def make_data(n: int = 1200, seed: int = 1) -> pd.DataFrame:
    """Rows in random order (levels first appear in different batches), some missing."""
    rng = np.random.default_rng(seed)
    g = rng.integers(0, 40, n)  # integer labels: the value-order fast path
    h = rng.choice([f"h{j:02d}" for j in range(9)], n)  # strings: first-appearance codes
    s = rng.integers(0, 3, n)  # nested in g: g/s
    x = rng.normal(size=n)
    f = rng.choice(["lo", "mid", "hi"], n)
    k = rng.integers(1, 4, n)
    bg = rng.normal(size=40)
    bgx = 0.5 * rng.normal(size=40)
    bgs = 0.6 * rng.normal(size=(40, 3))
    bh = dict(zip([f"h{j:02d}" for j in range(9)], rng.normal(size=9)))
    y = (1 + 0.5 * x + bg[g] + bgx[g] * x + np.array([bh[v] for v in h])
         + bgs[g, s] + (f == "hi") * 0.7 + 0.2 * k + rng.normal(size=n))  # fmt: skip
    df = pd.DataFrame({"y": y, "x": x, "f": f, "g": g, "h": h, "s": s, "k": k,
                       "w": rng.uniform(0.5, 2, n), "o": rng.normal(scale=0.1, size=n),
                       "unused": "text"})  # fmt: skip
    df.loc[rng.choice(n, 15, replace=False), "y"] = np.nan
    df.loc[rng.choice(n, 5, replace=False), "f"] = None
    return df


def assert_same_fit(got, ref) -> None:
    """The same fit: the numbers, the names and the level order."""
    assert got.nobs == ref.nobs and got.n_dropped_rows == ref.n_dropped_rows
    assert got.xnames == ref.xnames
    assert got.theta_names == ref.theta_names
    assert got.factorization == ref.factorization
    np.testing.assert_allclose(got.objective, ref.objective, rtol=1e-10)
    for a, b in ((got.beta, ref.beta), (got.theta, ref.theta), (got.se, ref.se)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=PARAM_RTOL, atol=1e-9)
    np.testing.assert_allclose(got.sigma, ref.sigma, rtol=PARAM_RTOL)
    for g in ref.ranef:
        pd.testing.assert_index_equal(got.ranef[g].index, ref.ranef[g].index)
        np.testing.assert_allclose(got.ranef[g].to_numpy(), ref.ranef[g].to_numpy(),
                                   rtol=1e-5, atol=1e-7)  # fmt: skip


PARAM_RTOL = 1e-8


def assert_same_cross_products(frame, data, formula, kw) -> None:
    """The batched pass's blocks of A against the in-memory pass (1e-13 relative)."""
    from lmmfast._sources.crossprod import RowData
    from lmmfast._sources.formula import parse_formula
    from lmmfast._sources.frame import build_frame

    mf = build_frame(parse_formula(formula), data, kw.get("weights"), kw.get("offset"))
    y = mf.y if mf.offset is None else mf.y - mf.offset
    ref = RowData(mf.terms, mf.Xcols, mf.xnames, y).cross_products(mf.weights)
    cp = frame.cp

    def close(a, b):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-13 * max(np.abs(b).max(), 1.0))

    close(cp.XtXy, ref.XtXy)
    for a, b in zip(cp.D + cp.ZXY, ref.D + ref.ZXY, strict=True):
        close(a, b)
    for a, b in zip(cp.pairs, ref.pairs, strict=True):
        np.testing.assert_array_equal(a.levels, b.levels)
        close(a.O, b.O)
    ldW = 0.0 if mf.weights is None else np.log(mf.weights).sum()
    np.testing.assert_allclose(frame.ldW, ldW, rtol=1e-13)
    assert frame.n == mf.n and frame.n_dropped == mf.n_dropped
    for t, u in zip(frame.terms, mf.terms, strict=True):
        np.testing.assert_array_equal(t.levels, u.levels)
        np.testing.assert_array_equal(t.order, u.order)
