"""A fit evaluated at a given theta (lme4's), for tests of what is computed after the fit.

lmmfast's and lme4's optima can differ by ~1e-6 in theta where the objective is flat (they
agree to 1e-10), and quantities such as Satterthwaite's df move with theta at first order;
evaluating at lme4's theta tests the computation itself at the reference's tolerance."""

from dataclasses import replace

import numpy as np

from lmmfast._lmer import _package


def at_theta(fit, theta):
    """The same model at `theta` (beta, sigma, modes, fitted values recomputed)."""
    dev = fit._dev
    opt = replace(fit.optsummary, theta=np.asarray(theta, dtype=float))
    out = _package(fit.formula, fit.reml, fit._frame, fit._rows, fit._keep, dev, opt,
                   fit.dropped_columns, None)  # fmt: skip
    out._frame, out._optimizer, out._fixed_spec, out._dev = (
        fit._frame, fit._optimizer, fit._fixed_spec, dev)  # fmt: skip
    return out
