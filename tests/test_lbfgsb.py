"""lmmfast._lbfgsb: its loop around scipy's setulb takes the same iterates as
scipy.optimize.minimize(method="L-BFGS-B"), bit for bit, and ends with the same record."""

import numpy as np
import pytest
from scipy.optimize import minimize

import lmmfast
from lmmfast._lbfgsb import minimize_lbfgsb


def _recorded(fun):
    """fun and the list of the points it was evaluated at."""
    seen = []

    def f(x):
        seen.append(np.array(x, copy=True))
        return fun(x)

    return f, seen


def _rosenbrock(x):
    f = np.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)
    g = np.zeros_like(x)
    g[:-1] = -400.0 * x[:-1] * (x[1:] - x[:-1] ** 2) - 2 * (1 - x[:-1])
    g[1:] += 200.0 * (x[1:] - x[:-1] ** 2)
    return f, g


def _even_quartic(x):  # even in x[0], a minimum away from 0 (a scalar term's theta)
    f = (x[0] ** 2 - 0.5) ** 2 + np.sum((x[1:] - 0.3 * x[0]) ** 2) + 0.1 * x[-1] ** 4
    g = np.empty_like(x)
    g[0] = 4 * x[0] * (x[0] ** 2 - 0.5) - 0.6 * np.sum(x[1:] - 0.3 * x[0])
    g[1:] = 2 * (x[1:] - 0.3 * x[0])
    g[-1] += 0.4 * x[-1] ** 3
    return f, g


CASES = [
    (_rosenbrock, np.array([-1.2, 1.0, 0.5]), np.array([-np.inf, 0.0, -np.inf]), {}),
    (_rosenbrock, np.array([0.5, 2.0, -0.3, 1.1]), np.array([0.0, 0.0, 0.0, 0.0]),
     {"ftol": 1e-13, "gtol": 1e-8, "maxiter": 1000, "maxfun": 100_000}),
    (_rosenbrock, np.array([-1.2, 1.0]), np.array([-np.inf, -np.inf]), {"maxfun": 7}),
    (_rosenbrock, np.array([-1.2, 1.0]), np.array([-np.inf, -np.inf]), {"maxiter": 3}),
    (_rosenbrock, np.array([-1.0, -1.0, 2.0]), np.array([0.0, 0.0, -np.inf]), {}),  # clipped
    (_even_quartic, np.array([1.0, 0.0, 1.0]), np.array([-np.inf, -np.inf, 0.0]),
     {"ftol": 1e-9, "gtol": 1e-4, "maxls": 6}),
    (_even_quartic, np.array([0.0, 0.2, 0.0]), np.array([0.0, -np.inf, 0.0]), {"maxcor": 3}),
]  # fmt: skip


@pytest.mark.parametrize("fun, x0, lower, options", CASES)
def test_same_iterates_as_scipy(fun, x0, lower, options):
    f_ours, ours = _recorded(fun)
    f_scipy, theirs = _recorded(fun)
    upper = np.full(len(x0), np.inf)
    r = minimize_lbfgsb(f_ours, x0, lower, upper, **options)
    assert r is not None, "this scipy's setulb is not the one _lbfgsb.py drives"
    bounds = [(lo if np.isfinite(lo) else None, None) for lo in lower]
    s = minimize(f_scipy, x0, jac=True, method="L-BFGS-B", bounds=bounds, options=options)
    assert len(ours) == len(theirs) == r.nfev == s.nfev
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(r.x, s.x)
    np.testing.assert_array_equal(r.jac, s.jac)
    assert r.fun == s.fun
    assert r.success == s.success and r.message == s.message


def test_other_options_left_to_scipy():
    assert (
        minimize_lbfgsb(_rosenbrock, np.ones(2), np.zeros(2), np.full(2, np.inf), eps=1e-6) is None
    )


def test_sleepstudy_path_unchanged():
    """The fit through the loop here equals the fit through scipy.optimize.minimize."""
    import lmmfast._lbfgsb as mod

    df = lmmfast.datasets.load("sleepstudy")
    fast = lmmfast.lmer("Reaction ~ Days + (Days | Subject)", df)
    usable, mod._state["usable"] = mod._state["usable"], False
    try:
        slow = lmmfast.lmer("Reaction ~ Days + (Days | Subject)", df)
    finally:
        mod._state["usable"] = usable
    assert fast.objective == slow.objective
    np.testing.assert_array_equal(fast.theta, slow.theta)
    assert fast.optsummary.feval == slow.optsummary.feval


def test_another_setulb_signature_falls_back_before_any_evaluation(monkeypatch):
    """A scipy whose setulb takes other arguments: None, with fg not called (so that
    scipy.optimize.minimize's path and evaluation count are the same), and from then on."""
    import lmmfast._lbfgsb as mod

    class Other:
        @staticmethod
        def setulb(*args):
            raise TypeError("setulb() takes 18 positional arguments")

    monkeypatch.setattr(mod, "_lbfgsb", Other)
    monkeypatch.setitem(mod._state, "usable", True)
    f, seen = _recorded(_rosenbrock)
    assert minimize_lbfgsb(f, np.ones(2), np.zeros(2), np.full(2, np.inf)) is None
    assert seen == [] and mod._state["usable"] is False
    df = lmmfast.datasets.load("sleepstudy")
    fit = lmmfast.lmer("Reaction ~ Days + (Days | Subject)", df)  # through minimize
    monkeypatch.undo()
    again = lmmfast.lmer("Reaction ~ Days + (Days | Subject)", df)
    assert fit.objective == again.objective and fit.optsummary.feval == again.optsummary.feval
