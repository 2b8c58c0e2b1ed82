"""method="krylov": conditional variances by probing (KrylovFactor.inverse_blocks) against
the exact crossed factor's selected inverse, and save/load (fit.save, lmmfast.load) of a Krylov fit.

Tolerance: every entry within 6 of its own reported Monte Carlo SEs (plus 1e-12) of the
exact value, at least 95% within 2.5 SEs (the SE is itself estimated from 16 probes), and the
conditional SDs within 1% relative: on this design S~^{-1} is close to I off the deflated
direction, so the probing error is small.
"""

import numpy as np
import pytest
from test_krylov import crossed

import lmmfast

F = "y ~ x + (1 | u) + (1 | m)"


@pytest.fixture(scope="module")
def fits():
    df = crossed(20_000, 2_000, 200, seed=12)
    return df, lmmfast.lmer(F, df, method="exact"), lmmfast.lmer(F, df, method="krylov")


def test_cond_var_matches_exact(fits):
    _, exact, fit = fits
    assert fit.factorization == "krylov"
    cv = fit.cond_var  # computes the SEs too
    se = fit._factor.inverse_se
    for k, g in enumerate(("u", "m")):
        a, b = cv[g][:, 0, 0], exact.cond_var[g][:, 0, 0]
        # the same quantity scaled: Var = sigma^2 theta^2 diag(A^{-1})
        scale = fit.sigma**2 * fit.theta[k] ** 2
        err = np.abs(a / scale - b / (exact.sigma**2 * exact.theta[k] ** 2))
        order = fit.terms[k].order
        s = se[k][order]
        assert np.all(err <= 6 * s + 1e-12 + 1e-3 * np.abs(b / scale)), np.max(err / s)
        assert np.mean(err <= 2.5 * s + 1e-12) >= 0.95
        np.testing.assert_allclose(np.sqrt(a), np.sqrt(b), rtol=1e-2)
    table = fit.ranef_table()
    assert np.all(np.isfinite(table["condsd"])) and np.all(table["condsd"] > 0)


def test_save_load_round_trip(fits, tmp_path):
    _, _, fit = fits
    path = tmp_path / "krylov.npz"
    fit.save(path)
    back = lmmfast.load(path)
    assert back.factorization == "krylov"
    np.testing.assert_array_equal(back.theta, fit.theta)
    for g in fit.cond_var:
        np.testing.assert_array_equal(back.cond_var[g], fit.cond_var[g])
    rep, rep2 = fit.optsummary.krylov, back.optsummary.krylov
    assert rep2.objective == rep.objective and rep2.objective_se == rep.objective_se
    np.testing.assert_array_equal(rep2.probe_lower, rep.probe_lower)
    assert str(back.summary()) == str(fit.summary())
