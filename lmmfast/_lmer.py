"""lmer(): the fit in four stages, as lme4's: parse, build the objective, optimize, package."""

from __future__ import annotations

import inspect
import warnings

import numpy as np

from ._errors import ArgumentError, ConvergenceWarning, DataError, SingularFitWarning
from ._optimize import bobyqa, check_optimum, lbfgs
from ._pls import ProfiledDeviance
from ._polish import ROUNDING, newton_polish
from ._rank import independent_columns
from ._result import LmerFit, TermInfo
from ._sources.crossprod import RowData
from ._sources.formula import parse_formula
from ._sources.frame import ModelFrame, build_frame


class RankDeficiencyWarning(UserWarning):
    """Fixed-effects columns were dropped because X is rank deficient."""


OPTIMIZERS = ("auto", "lbfgs", "bobyqa")


def lmer(
    formula: str, data, REML: bool = True, weights=None, offset=None, optimizer: str = "auto"
) -> LmerFit:
    """Fit a linear mixed model, as lme4's ``lmer``.

    Parameters
    ----------
    formula : str
        An lme4 formula, e.g. ``"Reaction ~ Days + (Days | Subject)"``.  Random terms
        ``(x | g)``, ``(x || g)`` (uncorrelated), ``(1 | a/b)`` (nested), ``(1 | a:b)``
        and any number of crossed terms; the fixed part follows R's formula rules
        (treatment contrasts, interactions, ``I(x^2)``, ``factor(x)``, ``offset(z)``).
    data : pandas.DataFrame
        Rows with a missing value in any variable used are dropped (lme4's na.omit);
        the number is kept in ``fit.n_dropped_rows``.  The DataFrame is not modified.
    REML : bool
        Restricted maximum likelihood (default, as lme4) or maximum likelihood.
    weights, offset : column name or array of length len(data), optional
        Prior weights (residual variance sigma^2 / w_i) and a known offset, as lme4.
    optimizer : {"auto", "lbfgs", "bobyqa"}
        "auto" (default) uses L-BFGS-B with the analytic gradient where it is available (one
        grouping factor) and BOBYQA (lme4's default) otherwise or if L-BFGS-B fails.

    Returns
    -------
    LmerFit
    """
    if optimizer not in OPTIMIZERS:
        raise ArgumentError(f"optimizer must be one of {OPTIMIZERS}, not {optimizer!r}")
    data_name = _caller_name(data)
    parsed = parse_formula(formula)
    frame = build_frame(parsed, data, weights, offset)
    if np.ptp(frame.y) == 0:
        raise DataError(
            f"response {parsed.response!r} is constant (zero variance); there is nothing to model"
        )
    fit = _fit(parsed.formula, frame, REML, optimizer)
    fit.data_name = data_name
    fit.weights_name = _arg_name(weights)
    fit.offset_name = _arg_name(offset)
    return fit


def _fit(formula: str, frame: ModelFrame, REML: bool, optimizer: str, like=None) -> LmerFit:
    """Build the objective from the model frame, optimize it, package the result.

    like: the factorization of a fit of the same design, whose structure is reused."""
    y = frame.y if frame.offset is None else frame.y - frame.offset
    rows = RowData(frame.terms, frame.Xcols, frame.xnames, y)
    cp = rows.cross_products(frame.weights)
    _check_term_columns(frame.terms, cp)
    keep = independent_columns(cp.XtXy[:-1, :-1])
    dropped = [name for j, name in enumerate(frame.xnames) if j not in set(keep)]
    if dropped:
        if like is None:  # a refit has said so already
            warnings.warn(
                f"fixed-effect model matrix is rank deficient so dropping {len(dropped)} "
                f"column{'s' if len(dropped) > 1 else ''}: {', '.join(dropped)}",
                RankDeficiencyWarning,
                stacklevel=3,
            )
        cp = cp.select(keep)
    ldW = 0.0 if frame.weights is None else float(np.sum(np.log(frame.weights)))
    dev = ProfiledDeviance(cp, frame.terms, frame.n, REML, ldW, like=like)
    opt = _optimize(dev, frame.terms, cp, frame.n, optimizer)
    fit = _package(formula, REML, frame, rows, keep, dev, opt, dropped, None)
    if fit.is_singular and like is None:
        warnings.warn(
            "boundary (singular) fit: see fit.is_singular", SingularFitWarning, stacklevel=3
        )
    fit._frame, fit._optimizer = frame, optimizer
    fit._fixed_spec, fit._dev = frame.fixed_spec, dev
    return fit


def _optimize(dev, terms, cp, n: int, optimizer: str, warn: bool = True):
    """Minimize the profiled objective over theta (L-BFGS-B and/or BOBYQA), check the
    optimum; warn (unless not `warn`) if it is doubtful or the optimizer did not converge."""
    theta0 = np.concatenate([t.theta_init() for t in terms])
    lower = np.concatenate([t.theta_lower() for t in terms])
    # optimize over eta = theta / scale: columns of extreme scale (1e12, 1e-12) get O(1)
    # coordinates; ordinary columns keep scale 1, so lme4's path is unchanged for them
    scale = _theta_scale(terms, cp, n)

    def f(eta):
        return dev(eta * scale)

    def fg(eta):
        v, g = dev.value_and_gradient(eta * scale)
        return v, g * scale

    opt = None
    if optimizer in ("auto", "lbfgs") and dev.has_gradient:
        opt = lbfgs(fg, theta0, lower)
    if opt is None or (optimizer == "auto" and not opt.converged):
        opt = bobyqa(f, theta0 if opt is None else opt.theta, lower)
    if opt.optimizer == "L-BFGS-B" and opt.converged:
        opt = _off_the_boundary(fg, opt, lower)
    if opt.converged and dev.has_gradient:
        _polish(fg, opt, lower)
    doubtful = opt.converged and check_optimum(f, opt)
    if doubtful and optimizer == "auto" and opt.optimizer == "L-BFGS-B":
        # L-BFGS-B can stop on a stalled line search with the slope still large (seen on a
        # badly scaled model): polish from there with BOBYQA and keep the better optimum
        polished = bobyqa(f, opt.theta, lower)
        polished.feval += opt.feval
        if polished.fmin <= opt.fmin:
            opt = polished
            if opt.converged:  # from BOBYQA's end (1e-8 in theta) to the optimum itself
                _polish(fg, opt, lower)
        doubtful = opt.converged and check_optimum(f, opt)
    opt.to_theta_scale(scale)
    if doubtful and warn:
        warnings.warn(
            f"the optimizer stopped where a Newton step would still lower the objective by "
            f"{opt.newton_decrement:.2g} (deviance units); the estimates may not be the optimum. "
            "Check the scale of the covariates and whether the random-effects structure is "
            "too rich for the data; fit.optsummary has the gradient and Hessian.",
            ConvergenceWarning,
            stacklevel=4,
        )
    if not opt.converged and warn:
        warnings.warn(
            f"the optimizer did not converge ({opt.message}) after {opt.feval} evaluations; the "
            "estimates may not be the optimum. Check the scale of the covariates (centre and "
            "scale them) and whether the random-effects structure is too rich for the data.",
            ConvergenceWarning,
            stacklevel=4,
        )
    return opt


NEAR_BOUND = 1e-10


def _off_the_boundary(fg, opt, lower):
    """A scalar term's theta stopped a hair above 0 (e.g. 1e-16, from rounding in a projected
    step) is where the objective is flat (it is even in that theta) but not its optimum;
    L-BFGS-B's probe away from the bound only looks at exact zeros.  Restart from the bound
    itself and keep the better end point."""
    near = (lower == 0) & (opt.theta > 0) & (opt.theta < NEAR_BOUND)
    if not near.any():
        return opt
    again = lbfgs(fg, np.where(near, 0.0, opt.theta), lower)
    again.feval += opt.feval
    return again if again.converged and again.fmin <= opt.fmin else opt


def _polish(fg, opt, lower) -> None:
    """Newton steps on the analytic gradient to the optimum itself (see _polish.py)."""
    try:
        x, fx, k = newton_polish(fg, opt.theta, lower)
    except (DataError, FloatingPointError, np.linalg.LinAlgError):
        return
    opt.feval += k
    if fx <= opt.fmin + ROUNDING * abs(opt.fmin):
        opt.theta, opt.fmin = x, fx


def _package(formula, reml, frame: ModelFrame, rows: RowData, keep, dev, opt, dropped, name):
    """The fitted model at the optimum: beta, sigma, b, and one more pass for fitted values."""
    dec = dev.decompose(opt.theta)
    beta = dec.beta
    sigma = dev.sigma(dec)
    us = dev.factor.spherical_modes(beta)
    bs = [u @ T.T for T, u in zip(dev.Ts(opt.theta), us)]  # b_j = T u_j for each level j
    fitted = rows.fitted(keep, beta, bs, frame.offset)
    infos = [
        TermInfo(
            t.group,
            t.cnames,
            t.levels[t.order],
            b[t.order],
            t.theta_lower(),
            t.order,
            t.spec,
            t.factors,
        )  # fmt: skip
        for t, b in zip(frame.terms, bs)
    ]
    return LmerFit(
        formula=formula,
        reml=reml,
        theta=opt.theta,
        beta=beta,
        xnames=[frame.xnames[j] for j in keep],
        sigma=sigma,
        objective=dev.objective(dec),
        RX=dec.RX,
        nobs=frame.n,
        terms=infos,
        fitted_values=fitted,
        response=frame.y,
        weights=frame.weights,
        optsummary=opt,
        dropped_columns=dropped,
        n_dropped_rows=frame.n_dropped,
        row_index=frame.row_index,
        _factor=dev.factor,
        _rows=rows,
        _keep=keep,
        _offset=frame.offset,
        data_name=name,
        factorization=dev.factorization,
        theta_names=[n for t in frame.terms for n in t.theta_names()],
    )


EXTREME = (1e-3, 1e3)  # column RMS outside this range: rescaled for the optimizer


def _check_term_columns(terms, cp) -> None:
    """A random-effects term's columns must be linearly independent (sum_j D_j is their
    Gram matrix): lme4 cannot estimate a covariance between copies of one column either."""
    for t, D in zip(terms, cp.D):
        if t.q < 2:
            continue
        kept = set(independent_columns(D.sum(axis=0)).tolist())
        dup = [c for k, c in enumerate(t.cnames) if k not in kept]
        if dup:
            raise DataError(
                f"the columns of the random-effects term ({' + '.join(t.cnames)} | {t.group}) "
                f"are collinear: {', '.join(map(repr, dup))} is a combination of the others. "
                "Remove it from the term."
            )


def _theta_scale(terms, cp, n: int) -> np.ndarray:
    """Per theta entry T[a, b]: 1 / RMS of the term's column a where that RMS is extreme
    (from the cross-products: sum_j D_j[a, a] = sum_i w_i z_ia^2), else 1."""
    out = []
    for t, D in zip(terms, cp.D):
        rms = np.sqrt(np.maximum(np.einsum("jaa->a", D), 1e-300) / n)
        s = np.where((rms < EXTREME[0]) | (rms > EXTREME[1]), 1.0 / rms, 1.0)
        out += [s[a] for b in range(t.q) for a in range(b, t.q)]
    return np.array(out)


def _arg_name(arg) -> str | None:
    return None if arg is None else arg if isinstance(arg, str) else "(array)"


def _caller_name(data) -> str | None:
    """The name the caller gave the data (for summary's 'Data:' line), if there is one."""
    frame = inspect.currentframe()
    try:
        caller = frame.f_back.f_back if frame and frame.f_back else None
        if caller is None:
            return None
        for scope in (caller.f_locals, caller.f_globals):
            for k, v in scope.items():
                if v is data and not k.startswith("_"):
                    return k
        return None
    finally:
        del frame
