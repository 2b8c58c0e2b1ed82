"""L-BFGS-B's reverse-communication loop around scipy's own ``setulb``: the iterates of
``scipy.optimize.minimize(fg, x0, jac=True, method="L-BFGS-B")``, bit for bit, without its
per-evaluation wrappers.

scipy's driver wraps the objective three times (MemoizeJac, ScalarFunction, a scalar
check) and validates the bounds on every call: about 20 us per evaluation and 150 us per
call, which was a fifth of a small fit (sleepstudy: 26 evaluations of ~25 us each).  This
module is the same loop as scipy's ``_minimize_lbfgsb`` (scipy >= 1.15, where the
L-BFGS-B code is C and ``setulb`` takes ``ln_task``): the same start (x0 clipped to the
bounds, one evaluation there), the same memo (a point equal to the last one is not
evaluated again), the same stopping tests and messages.  Where scipy's ``setulb`` does not
have that signature (older or newer scipy), ``minimize_lbfgsb`` returns None and the caller
uses ``scipy.optimize.minimize``; tests/test_lbfgsb.py checks that both give the same
iterates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

try:  # scipy's private module: its signature is checked here and on the first call
    from scipy.optimize import _lbfgsb
    from scipy.optimize._lbfgsb_py import status_messages, task_messages
except ImportError:  # pragma: no cover - a scipy without them: scipy.optimize.minimize
    _lbfgsb = None

_OPTIONS = {"ftol", "gtol", "maxiter", "maxfun", "maxcor", "maxls"}
# scipy >= 1.15's (C) setulb; the Fortran one before it took iprint and csave
_SIGNATURE = "setulb(m,x,l,u,nbd,f,g,factr,pgtol,wa,iwa,task,lsave,isave,dsave,maxls,ln_task)"
_state = {
    "usable": _lbfgsb is not None
    and (getattr(_lbfgsb.setulb, "__doc__", None) or "").startswith(_SIGNATURE)
}

_FG, _NEW_X, _CONVERGENCE = 3, 1, 4  # task[0] codes of setulb


@dataclass
class Result:
    """What lbfgs reads of scipy's OptimizeResult."""

    x: np.ndarray
    fun: float
    jac: np.ndarray
    success: bool
    message: str
    nfev: int


def minimize_lbfgsb(fg, x0, lower: np.ndarray, upper: np.ndarray, **options) -> Result | None:
    """Minimize fg(x) -> (f, g) over lower <= x <= upper (-inf / inf: no bound) as scipy's
    L-BFGS-B with options ftol, gtol, maxiter, maxfun, maxcor, maxls (scipy's defaults);
    None where this scipy's setulb cannot be driven here (or for another option)."""
    if not _state["usable"] or not set(options) <= _OPTIONS:
        return None
    m, maxls = int(options.get("maxcor", 10)), int(options.get("maxls", 20))
    maxiter, maxfun = options.get("maxiter", 15000), options.get("maxfun", 15000)
    factr = options.get("ftol", 2.2204460492503131e-09) / np.finfo(float).eps
    pgtol = options.get("gtol", 1e-5)
    lower, upper = np.asarray(lower, dtype=np.float64), np.asarray(upper, dtype=np.float64)
    x = np.clip(np.asarray(x0, dtype=np.float64).ravel(), lower, upper)
    n = len(x)
    has_lo, has_hi = np.isfinite(lower), np.isfinite(upper)
    # setulb's bound codes: 0 none, 1 lower only, 2 both, 3 upper only
    nbd = np.where(has_lo, np.where(has_hi, 2, 1), np.where(has_hi, 3, 0)).astype(np.int32)
    low_bnd = np.where(has_lo, lower, 0.0)
    upper_bnd = np.where(has_hi, upper, 0.0)

    start = x.copy()
    f, g = np.array(0.0, dtype=np.float64), np.zeros(n, dtype=np.float64)
    wa = np.zeros(2 * m * n + 5 * n + 11 * m * m + 8 * m, np.float64)
    iwa = np.zeros(3 * n, dtype=np.int32)
    task, ln_task = np.zeros(2, dtype=np.int32), np.zeros(2, dtype=np.int32)
    lsave, isave = np.zeros(4, dtype=np.int32), np.zeros(44, dtype=np.int32)
    dsave = np.zeros(29, dtype=np.float64)
    iterations, first = 0, True
    while True:
        g = g.astype(np.float64)
        try:
            _lbfgsb.setulb(m, x, low_bnd, upper_bnd, nbd, f, g, factr, pgtol, wa, iwa, task,
                           lsave, isave, dsave, maxls, ln_task)  # fmt: skip
        except TypeError:
            if not first:
                raise
            _state["usable"] = False  # another signature: scipy.optimize.minimize from now on
            return None  # before any evaluation, so that minimize's path is the same
        if first:  # scipy evaluates at the start (before its loop) and memoizes the last point
            first, last = False, start
            fx, gx = _evaluate(fg, last)
            nfev = 1
        if task[0] == _FG:
            if not np.array_equal(x, last):
                last = x.copy()
                fx, gx = _evaluate(fg, last)
                nfev += 1
            f, g = fx, gx
        elif task[0] == _NEW_X:
            iterations += 1
            if iterations >= maxiter:
                task[0], task[1] = 5, 504
            elif nfev > maxfun:
                task[0], task[1] = 5, 502
        else:
            break
    success = task[0] == _CONVERGENCE
    message = status_messages[task[0]] + ": " + task_messages[task[1]]
    return Result(x, f, g, bool(success), message, nfev)


def _evaluate(fg, x: np.ndarray):
    """fg at a copy of x (the callee may keep or change it), as a float and a 1-D gradient."""
    f, g = fg(x.copy())
    if not np.isscalar(f):
        f = np.asarray(f).item()
    return f, np.atleast_1d(g)
