"""Newton polish: where the analytic gradient exists, a few projected Newton steps from the
optimizer's end point take theta to the optimum itself.

L-BFGS-B stops on a relative change of the objective (ftol 1e-13), which leaves theta up
to ~1e-7 from the optimum in flat directions; which iteration meets the test depends on
the last bits of the objective, so two evaluations of the same function that differ by
rounding (another factorization, another order of sums) can stop 1e-7 apart.  From
there one Newton step on the analytic gradient (Hessian by differences of the
gradient, computed once and reused by the next steps) lands within ~1e-12, so the
answer no longer depends on the path: lmer() and lmer_many() (src/_scalar_crossed.pyx)
give the same theta to 1e-10.

A step is kept only if the objective does not rise by more than rounding (1e-13
relative); parameters held at a bound with the gradient pushing outwards stay there, and
one within 1e-6 of its bound is put on it if that costs no more than rounding.
"""

from __future__ import annotations

import math

import numpy as np

STEPS = 3
ROUNDING = 1e-13  # relative rise of the objective accepted as rounding
STEP_TOL = 1e-12  # stop when the step is below this (relative to max(|x|, 1))
SNAP = 1e-6  # a bounded parameter this close to its bound is tried on it


def newton_polish(fg, x: np.ndarray, lower: np.ndarray, at=None):
    """Projected Newton steps from x (theta >= lower) on fg(x) -> (f, g).
    at: (f, g, H) at x already known (the optimum check's, H over all parameters), so that
    a fit builds one Hessian, not two.  Returns (x, f, evaluations)."""
    x = np.array(x, dtype=np.float64)
    if at is None:
        f, g = fg(x)
        nevals = 1
        Hall = None
    else:
        f, g, Hall = at
        nevals = 0
    H, free0 = None, None
    lows = np.asarray(lower, dtype=np.float64).tolist()  # the tests in Python floats
    for _ in range(STEPS):
        flags = [
            not (a <= b and c >= 0) for a, b, c in zip(x.tolist(), lows, np.asarray(g).tolist())
        ]
        every = all(flags)
        if not (every or any(flags)):
            break
        free = np.array(flags)
        if H is None or flags != free0:  # later steps reuse the Hessian
            if Hall is not None:  # every step uses the Hessian at the start
                H = Hall if every else Hall[np.ix_(free, free)]
            else:
                H, k = gradient_hessian(fg, x, g, lower, free)
                nevals += k
            free0 = flags
            try:  # once per Hessian
                definite = not np.any(np.linalg.eigvalsh(H) <= 0)
            except np.linalg.LinAlgError:
                definite = False
        if not definite:
            break
        try:
            step = np.linalg.solve(H, g if every else g[free])
        except np.linalg.LinAlgError:
            break
        if _negligible(step, x):
            break  # at the optimum to rounding: the step is not worth an evaluation
        if every:
            xn = x - step
        else:
            xn = x.copy()
            xn[free] -= step
        xn = np.maximum(xn, lower)
        fn, gn = fg(xn)
        nevals += 1
        if not math.isfinite(fn) or fn > f + ROUNDING * abs(f):
            break
        x, f, g = xn, fn, gn
        if _negligible(step, x):
            break
    # a bounded parameter within SNAP of its bound, where the objective is flat to rounding
    # (the gradient's rounding error grows as 1/theta there): on the bound, as lme4 ends
    near = [i for i, (a, b) in enumerate(zip(x.tolist(), lows)) if a > b and a < b + SNAP]
    if near:
        xs = x.copy()
        xs[near] = lower[near]
        fs = fg(xs)[0]
        nevals += 1
        if fs <= f + ROUNDING * abs(f):
            x, f = xs, fs
    return x, f, nevals


def _negligible(step: np.ndarray, x: np.ndarray) -> bool:
    """np.max(np.abs(step)) <= STEP_TOL * max(1.0, np.max(np.abs(x))), in Python floats."""
    return _amax(step) <= STEP_TOL * max(1.0, _amax(x))


def _amax(v: np.ndarray) -> float:
    """np.max(np.abs(v)) of a short non-empty vector: NaN if it holds one, as numpy's."""
    a = [abs(t) for t in v.tolist()]
    return math.nan if any(t != t for t in a) else max(a)


def gradient_hessian(fg, x, g, lower, free=None, forward=False):
    """Central differences of the gradient fg(x)[1] over the free parameters (all where free
    is None; forward differences where a central step would cross the bound, or everywhere
    if forward: k instead of 2k evaluations, H to ~1e-5 relative), symmetrized.
    Returns (H over the free parameters, evaluations)."""
    idx = None if free is None else np.flatnonzero(free)  # None: every parameter
    m = len(x) if idx is None else len(idx)
    H = np.zeros((m, m))
    k = 0
    xs, lows = x.tolist(), np.asarray(lower).tolist()  # Python floats: the same arithmetic
    for c, i in enumerate(range(len(x)) if idx is None else idx.tolist()):
        h = 1e-5 * max(abs(xs[i]), 0.1)
        up = x.copy()
        up[i] += h
        gp = np.asarray(fg(up)[1])
        k += 1
        if not forward and xs[i] - h >= lows[i]:
            dn = x.copy()
            dn[i] -= h
            d, h2 = gp - np.asarray(fg(dn)[1]), 2 * h
            k += 1
        else:
            d, h2 = gp - g, h
        H[:, c] = (d if idx is None else d[idx]) / h2
    return 0.5 * (H + H.T), k
