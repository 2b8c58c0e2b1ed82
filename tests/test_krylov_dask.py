"""method="krylov" from a Dask DataFrame: the Schur sweeps on the workers (issue 12).

One LocalCluster (2 worker processes, 1 thread each) for the module, closed at the end.
The Dask fit uses the same probes as the in-memory one (the pass gives the same level
codes), so the two agree to rounding.
"""

import numpy as np
import pytest
import scipy.sparse as sp
from test_dask import client  # noqa: F401  (skips without dask; its LocalCluster fixture)
from test_krylov import crossed

import lmmfast

dd = pytest.importorskip("dask.dataframe")
pytestmark = pytest.mark.usefixtures("client")

CASES = [
    ("y ~ x + (1 | u) + (1 | m)", dict(n=8000, nu=400, nm=100, seed=3, distinct=True), {}),
    ("y ~ x + (1 | u) + (1 | m) + (1 | g)", dict(n=8000, nu=400, nm=100, seed=4, three=True),
     {"weights": "w"}),
]  # fmt: skip


@pytest.mark.parametrize("formula,data,kw", CASES)
def test_dask_krylov_fit_equals_in_memory(formula, data, kw):
    df = crossed(**data)
    df["w"] = np.random.default_rng(1).uniform(0.5, 2.0, len(df))
    ref = lmmfast.lmer(formula, df, REML=False, method="krylov", **kw)
    got = lmmfast.lmer(formula, dd.from_pandas(df, npartitions=5, sort=False), REML=False,
                       method="krylov", **kw)  # fmt: skip
    f = got._dev.factor
    assert f.sweep is not None and f.sweep.rounds > 0  # the sweeps ran on the workers
    assert len(f.sweep.blocks) == 5
    np.testing.assert_allclose(got.theta, ref.theta, rtol=1e-10)
    np.testing.assert_allclose(got.beta, ref.beta, rtol=1e-10)
    np.testing.assert_allclose(got.sigma, ref.sigma, rtol=1e-10)
    assert abs(got.objective - ref.objective) < 1e-10 * abs(ref.objective)
    a, b = got.optsummary.krylov, ref.optsummary.krylov
    assert abs(a.objective - b.objective) < 1e-10 * abs(b.objective)
    assert a.evaluations == b.evaluations
    for t in ("u", "m"):
        np.testing.assert_allclose(got.ranef[t].to_numpy(), ref.ranef[t].to_numpy(),
                                   rtol=1e-8, atol=1e-10)  # fmt: skip


def test_dask_sweep_matches_dense():
    """The blocks' map and reduction against N'(s * (N W)) from the dense N."""
    df = crossed(5000, 300, 40, seed=5, three=True)
    df["w"] = np.random.default_rng(2).uniform(0.5, 2.0, len(df))
    fit = lmmfast.lmer("y ~ x + (1 | u) + (1 | m) + (1 | g)",
                       dd.from_pandas(df, npartitions=4, sort=False), REML=False,
                       method="krylov", weights="w")  # fmt: skip
    f = fit._dev.factor
    rng = np.random.default_rng(0)
    W, s = rng.standard_normal((f.m, 3)), rng.random(f.n1)
    N = sp.csr_matrix(f.N).toarray()
    np.testing.assert_allclose(f.sweep.apply(W, s), N.T @ (s[:, None] * (N @ W)), rtol=1e-12,
                               atol=1e-12)  # fmt: skip
