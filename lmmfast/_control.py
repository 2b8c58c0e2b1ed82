"""The optimizer's settings in one object, as lme4's lmerControl, and the "lmmfast" logger.

``lmer(..., control=Control(optimizer="bobyqa", maxeval=500, verbose=True))``.  The
tolerances are nlopt's BOBYQA stopping rules (lme4's optCtrl for nloptwrap); L-BFGS-B keeps
its own (ftol 1e-13 on the scaled objective, projected gradient 1e-8) and reads only
``maxeval``.  ``verbose`` prints one line per evaluation of the objective (evaluation
number, objective, theta), as lme4's verbose = 1; the same lines go to the logger "lmmfast"
at level DEBUG, and a summary of each fit at level INFO.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np

from ._errors import ArgumentError

logger = logging.getLogger("lmmfast")
logger.addHandler(logging.NullHandler())

OPTIMIZERS = ("auto", "lbfgs", "bobyqa")
CHECKS = ("warning", "ignore", "stop")


@dataclass(frozen=True)
class Control:
    """Settings of the optimizer and of the convergence checks (lme4's ``lmerControl``).

    Parameters
    ----------
    optimizer : {"auto", "lbfgs", "bobyqa"}
        "auto": L-BFGS-B with the analytic gradient where there is one, else BOBYQA.
    maxeval : int
        Most evaluations of the objective (lme4's optCtrl maxeval / maxfun).
    ftol_rel, ftol_abs, xtol_rel, xtol_abs : float
        BOBYQA's stopping rules (0 switches a rule off); the default stops only when a
        step in theta is below xtol_abs = 1e-9 (see lmmfast/_optimize.py).
    verbose : bool or int
        Print the evaluation number, the objective and theta at each evaluation.
    check_conv : {"warning", "ignore", "stop"} or bool
        What a doubtful optimum or a failed optimizer does: warn (True, the default),
        nothing (False) or raise ``ConvergenceError``.
    """

    optimizer: str = "auto"
    maxeval: int = 100_000
    ftol_rel: float = 0.0
    ftol_abs: float = 0.0
    xtol_rel: float = 0.0
    xtol_abs: float = 1e-9
    verbose: bool | int = False
    check_conv: str | bool = "warning"

    def __post_init__(self):
        if not isinstance(self.optimizer, str) or self.optimizer not in OPTIMIZERS:
            raise ArgumentError(f"optimizer must be one of {OPTIMIZERS}, not {self.optimizer!r}")
        if isinstance(self.maxeval, bool) or not isinstance(self.maxeval, Integral):
            raise ArgumentError(f"maxeval must be an integer, not {self.maxeval!r}")
        if self.maxeval < 1:
            raise ArgumentError(f"maxeval must be at least 1, not {self.maxeval}")
        for name in ("ftol_rel", "ftol_abs", "xtol_rel", "xtol_abs"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, Real) or not np.isfinite(v) or v < 0:
                raise ArgumentError(f"{name} must be a finite number >= 0, not {v!r}")
        if not isinstance(self.verbose, (bool, Integral)):
            raise ArgumentError(f"verbose must be True/False or an integer, not {self.verbose!r}")
        check = self.check_conv
        if isinstance(check, bool):
            object.__setattr__(self, "check_conv", "warning" if check else "ignore")
        elif not isinstance(check, str) or check not in CHECKS:
            raise ArgumentError(f"check_conv must be True, False or one of {CHECKS}, not {check!r}")

    @property
    def tolerances(self) -> dict:
        """BOBYQA's stopping rules and evaluation limit, as _optimize.bobyqa takes them."""
        return {"ftol_rel": float(self.ftol_rel), "ftol_abs": float(self.ftol_abs),
                "xtol_rel": float(self.xtol_rel), "xtol_abs": float(self.xtol_abs),
                "maxeval": int(self.maxeval)}  # fmt: skip


def traced(f, verbose: bool, scale: np.ndarray):
    """f(eta) (a value, or a value and a gradient), printing if verbose and logging at DEBUG
    each evaluation: its number, the objective and theta = eta * scale."""
    if not verbose and not logger.isEnabledFor(logging.DEBUG):
        return f
    count = [0]

    def g(eta):
        r = f(eta)
        count[0] += 1
        value = r[0] if isinstance(r, tuple) else r
        theta = np.array2string(np.asarray(eta) * scale, precision=6, separator=", ")
        line = f"{count[0]:5d}: objective {float(value):.10g}  theta {theta}"
        if verbose:
            print(line, flush=True)
        logger.debug(line)
        return r

    return g
