"""lmer(): the fit in four stages, as lme4's: parse, build the objective, optimize, package."""

from __future__ import annotations

import inspect
import logging
import math
import warnings
from dataclasses import replace
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ._control import OPTIMIZERS, Control, logger, traced
from ._errors import (
    ArgumentError,
    ConvergenceError,
    ConvergenceWarning,
    DataError,
    DuplicateTermWarning,
    FormulaError,
    SingularFitWarning,
)
from ._factor import krylov_dask
from ._factor.krylov import LBFGS_OPTIONS as KRYLOV_LBFGS
from ._factor.krylov import check_optimum as krylov_check
from ._factor.krylov import report as krylov_report
from ._moments import MOMENT_START_MAX_P, MOMENT_START_MIN_THETA, moment_start, scalar_moment_start
from ._optimize import lbfgs, minimize_theta
from ._pls import ProfiledDeviance
from ._polish import ROUNDING, newton_polish
from ._rank import independent_columns
from ._result import LmerFit, TermInfo
from ._sources.batched import StreamFrame
from ._sources.crossprod import RowData
from ._sources.formula import parse_formula
from ._sources.frame import ModelFrame, build_frame
from ._sources.sources import batched_source, stream_frame
from ._stored import StoredObjective
from ._threads import fit_threads


class RankDeficiencyWarning(UserWarning):
    """Fixed-effects columns were dropped because X is rank deficient."""


METHODS = ("auto", "exact", "krylov")


def lmer(
    formula: str,
    data: Any,
    REML: bool = True,
    weights: str | ArrayLike | None = None,
    offset: str | ArrayLike | None = None,
    optimizer: str = "auto",
    control: Control | None = None,
    contrasts: dict | None = None,
    method: str = "auto",
) -> LmerFit:
    """Fit a linear mixed model, as lme4's ``lmer``.

    Parameters
    ----------
    formula : str
        An lme4 formula, e.g. ``"Reaction ~ Days + (Days | Subject)"``.  Random terms
        ``(x | g)``, ``(x || g)`` (uncorrelated), ``(1 | a/b)`` (nested), ``(1 | a:b)``
        and any number of crossed terms; the fixed part follows R's formula rules
        (treatment contrasts, interactions, ``I(x^2)``, ``factor(x)``, ``offset(z)``).
    data : a data frame, a Dask DataFrame, a pyarrow.dataset.Dataset or a Parquet path
        pandas (also with Arrow dtypes), polars (DataFrame, LazyFrame), pyarrow (Table,
        RecordBatch), a dict of columns; or, for data larger than memory, a Dask DataFrame
        (the pass runs on the workers) or Parquet files (streamed batch by batch).
        Rows with a missing value in any variable used are dropped (lme4's na.omit);
        the number is kept in ``fit.n_dropped_rows``.  The data are not modified.
    REML : bool
        Restricted maximum likelihood (default, as lme4) or maximum likelihood.
    weights, offset : column name or array of length len(data), optional
        Prior weights (residual variance sigma^2 / w_i) and a known offset, as lme4.
    optimizer : {"auto", "lbfgs", "bobyqa"}
        "auto" (default) uses L-BFGS-B with the analytic gradient where it is available (one
        grouping factor) and BOBYQA (lme4's default) otherwise or if L-BFGS-B fails.
        A shorthand for ``control=Control(optimizer=...)``.
    control : lmmfast.Control, optional
        The optimizer's settings and the convergence checks, as lme4's ``lmerControl``.
    contrasts : dict, optional
        The coding of fixed-effect factors, as lme4's ``contrasts=``: ``{"recipe": "sum"}``;
        one of "treatment" (the default; ordered factors: "poly"), "sum", "helmert", "poly",
        "SAS", also spelled "contr.sum" etc.  Column names are R's (``recipe1`` for sum).
    method : {"auto", "exact", "krylov"}
        "krylov": for crossed scalar terms, the iterative method (conjugate gradients and
        stochastic Lanczos quadrature; never forms the dense Schur complement), with its
        error estimate in ``fit.optsummary.krylov``; "exact": never it; "auto" (default):
        Krylov where the exact crossed factor would not fit in memory or exceed the time
        budget (see README, "Crossed at any size").

    Returns
    -------
    LmerFit
    """
    control = _control_of(optimizer, control)
    _check_arguments(formula, REML, weights, offset)
    if method not in METHODS:
        raise ArgumentError(f"method must be one of {METHODS}, not {method!r}")
    data_name = _caller_name(data)
    parsed = parse_formula(formula)
    if contrasts is not None and not isinstance(contrasts, dict):
        raise ArgumentError(
            f"contrasts must be a dict such as {{'recipe': 'sum'}}, not {type(contrasts).__name__}"
        )
    source = batched_source(data)
    if source is not None:  # Dask, Parquet: the pass runs batch by batch (or on the workers)
        if contrasts:
            raise ArgumentError(
                "contrasts= is not available for Parquet or Dask data; code the factor as "
                "numeric columns first, or fit the data in memory"
            )
        frame = stream_frame(parsed, source, weights, offset)
    else:
        frame = build_frame(parsed, data, weights, offset, contrasts)
    if frame.y is not None and np.ptp(frame.y) == 0:
        raise DataError(
            f"response {parsed.response!r} is constant (zero variance); there is nothing to model"
        )
    _warn_duplicate_terms(frame.terms)
    fit = _fit(parsed.formula, frame, bool(REML), control, method=method)
    fit.data_name = data_name
    fit.weights_name = _arg_name(weights)
    fit.offset_name = _arg_name(offset)
    return fit


def _control_of(optimizer, control) -> Control:
    """One Control from lmer's optimizer= shorthand and control=."""
    if control is not None and not isinstance(control, Control):
        raise ArgumentError(
            f"control must be an lmmfast.Control, not {type(control).__name__}: "
            "e.g. control=lmmfast.Control(optimizer='bobyqa', maxeval=1000)"
        )
    if not isinstance(optimizer, str) or optimizer not in OPTIMIZERS:
        raise ArgumentError(f"optimizer must be one of {OPTIMIZERS}, not {optimizer!r}")
    if control is None:
        return Control(optimizer=optimizer)
    if optimizer != "auto" and optimizer != control.optimizer:
        raise ArgumentError(
            f"optimizer={optimizer!r} contradicts control.optimizer={control.optimizer!r}; "
            "give the optimizer in one place"
        )
    return control


def _check_arguments(formula, REML, weights, offset) -> None:
    """Types of lmer's arguments (the data and the formula's content are checked later)."""
    if not isinstance(formula, str):
        raise FormulaError(
            f"formula must be a string such as 'y ~ x + (1 | g)', not {type(formula).__name__}"
        )
    if not isinstance(REML, (bool, np.bool_)):
        raise ArgumentError(
            f"REML must be True or False, not {REML!r} ({type(REML).__name__}); "
            "note that the string 'FALSE' is not False"
        )
    for name, v in (("weights", weights), ("offset", offset)):
        if v is None or isinstance(v, str) or np.ndim(v) == 1:
            continue
        raise ArgumentError(
            f"{name} must be a column name or one value per row (a 1-D array), "
            f"not {type(v).__name__} of {np.ndim(v)} dimensions"
        )


def _warn_duplicate_terms(terms) -> None:
    """lme4 1.1-31 fits (1 | g) + (1 | g) without a word (its issue #625); its two variances
    are not identified, only their sum, so say so."""
    seen = set()
    for t in terms:
        key = (t.group, tuple(t.cnames))
        if key in seen:
            warnings.warn(
                f"the random-effects term ({' + '.join(t.cnames)} | {t.group}) appears more than "
                "once: the copies have the same columns, so only the sum of their variances is "
                "identified. Remove the duplicate term.",
                DuplicateTermWarning,
                stacklevel=3,
            )
        seen.add(key)


def _fit(
    formula: str, frame: ModelFrame, REML: bool, optimizer, like=None, method: str = "auto"
) -> LmerFit:
    """_fit_threads under the fit's thread rule (lmmfast/_threads.py)."""
    with fit_threads(frame.terms, len(frame.xnames)):
        return _fit_threads(formula, frame, REML, optimizer, like, method)


def _fit_threads(
    formula: str, frame: ModelFrame, REML: bool, optimizer, like=None, method: str = "auto"
) -> LmerFit:
    """Build the objective from the model frame, optimize it, package the result.

    optimizer: a Control (or an optimizer's name); like: the factorization of a fit of the
    same design, whose structure is reused."""
    control = optimizer if isinstance(optimizer, Control) else Control(optimizer=optimizer)
    if isinstance(frame, StreamFrame):  # a batched source: its pass has run already
        rows, cp, ldW = frame, frame.cp, frame.ldW
    else:
        y = frame.y if frame.offset is None else frame.y - frame.offset
        rows = RowData(frame.terms, frame.Xcols, frame.xnames, y)
        cp = rows.cross_products(frame.weights)
        ldW = 0.0 if frame.weights is None else float(np.sum(np.log(frame.weights)))
    _check_term_columns(frame.terms, cp)
    keep = independent_columns(cp.XtXy[:-1, :-1])
    kept = set(keep.tolist())
    dropped = [name for j, name in enumerate(frame.xnames) if j not in kept]
    if dropped:
        if like is None:  # a refit has said so already
            warnings.warn(
                f"fixed-effect model matrix is rank deficient so dropping {len(dropped)} "
                f"column{'s' if len(dropped) > 1 else ''}: {', '.join(dropped)}",
                RankDeficiencyWarning,
                stacklevel=3,
            )
        cp = cp.select(keep)
    dev = ProfiledDeviance(cp, frame.terms, frame.n, REML, ldW, like=like, method=method)
    if isinstance(frame, StreamFrame) and dev.factorization == "krylov":
        krylov_dask.attach(dev.factor, frame)  # a Dask source: the sweeps on its workers
    opt = _minimize(dev, control)
    fit = _package(formula, REML, frame, rows, keep, dev, opt, dropped, None)
    if fit.is_singular and like is None:
        warnings.warn(
            "boundary (singular) fit: see fit.is_singular", SingularFitWarning, stacklevel=3
        )
    fit._frame, fit._optimizer = frame, control
    fit._fixed_spec, fit._dev = frame.fixed_spec, dev
    fit._objective = StoredObjective.of(dev)
    return fit


def _minimize(dev: ProfiledDeviance, control: Control):
    """Optimize theta (L-BFGS-B where there is a gradient, BOBYQA otherwise or after it),
    check the optimum, and warn (or raise, or not) as control.check_conv says."""
    terms, cp, optimizer = dev.terms, dev.cp, control.optimizer
    theta0 = np.concatenate([t.theta_init() for t in terms])
    lower = np.concatenate([t.theta_lower() for t in terms])
    # optimize over eta = theta / scale: columns of extreme scale (1e12, 1e-12) get O(1)
    # coordinates; ordinary columns keep scale 1, so lme4's path is unchanged for them
    scale = _theta_scale(terms, cp, dev.n)
    krylov = dev.factorization == "krylov"
    intercepts = all(list(t.cnames) == ["(Intercept)"] for t in terms)
    p = cp.XtXy.shape[0] - 1
    if krylov or (intercepts and p <= MOMENT_START_MAX_P):
        # random intercepts: start from moment estimates (_moments.py; InstEval 42 -> 21
        # evaluations); krylov: any scalar terms
        theta0 = scalar_moment_start(cp) / scale
    elif len(theta0) >= MOMENT_START_MIN_THETA and p <= MOMENT_START_MAX_P:
        # vector-valued terms, many theta: kb07 300 x 200 76 -> 37 evaluations
        start = moment_start(cp, [t.q for t in terms], dev.n)
        if start is not None:
            theta0 = start / scale

    def f(eta):
        return dev(eta * scale)

    def fg(eta):
        v, g = dev.value_and_gradient(eta * scale)
        return v, g * scale

    if np.all(scale == 1.0):  # the common case: eta is theta (x * 1.0 is x, bit for bit);
        f, fg = dev, dev.value_and_gradient  # its gradient is a new array at every call, too

    verbose = bool(control.verbose)
    f_traced, fg_traced = traced(f, verbose, scale), traced(fg, verbose, scale)
    opt, doubtful = minimize_theta(
        f_traced, fg_traced if dev.has_gradient else None, theta0, lower, [t.q for t in terms],
        optimizer, maxeval=control.maxeval, tolerances=control.tolerances,
        lbfgs_options=KRYLOV_LBFGS if krylov else None,
        check=(lambda o: krylov_check(fg, o)) if krylov else None,  # Hessian from gradients
    )  # fmt: skip
    if not krylov and opt.converged and dev.has_gradient:
        # a scalar theta a hair above 0, and the last digits of the optimum: Newton steps on
        # the analytic gradient, so that the end point does not depend on the path taken
        # (lmer_many's fits equal lmer's to 1e-8)
        if opt.optimizer == "L-BFGS-B":
            opt = _off_the_boundary(fg, opt, lower)
        _polish(fg, opt, lower)
    opt.to_theta_scale(scale)
    if krylov:
        opt.krylov = krylov_report(dev, opt)
    if logger.isEnabledFor(logging.INFO):  # array2string costs more than a small fit's step
        logger.info(
            "%s: objective %.10g after %d evaluations (%s), theta %s",
            opt.optimizer, opt.fmin, opt.feval, opt.message or "done", np.array2string(opt.theta),
        )  # fmt: skip
    if doubtful:
        _convergence(
            f"the optimizer stopped where a Newton step would still lower the objective by "
            f"{opt.newton_decrement:.2g} (deviance units); the estimates may not be the optimum. "
            "Check the scale of the covariates and whether the random-effects structure is "
            "too rich for the data; fit.optsummary has the gradient and Hessian.",
            control,
        )
    if not opt.converged:
        _convergence(
            f"the optimizer did not converge ({opt.message}) after {opt.feval} evaluations; the "
            "estimates may not be the optimum. Check the scale of the covariates (centre and "
            "scale them) and whether the random-effects structure is too rich for the data.",
            control,
        )
    return opt


def _optimize(dev: ProfiledDeviance, terms, cp, n: int, optimizer: str, warn: bool = True):
    """_minimize with an optimizer's name (lmer_many: without warnings, it reports per fit)."""
    return _minimize(dev, Control(optimizer=optimizer, check_conv="warning" if warn else "ignore"))


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
    if not (again.converged and again.fmin <= opt.fmin):
        return opt
    # the optimum check's record (gradient, Hessian, decrement) was taken within NEAR_BOUND
    again.gradient, again.hessian = opt.gradient, opt.hessian
    again.newton_decrement, again.theta0 = opt.newton_decrement, opt.theta0
    return again


def _polish(fg, opt, lower) -> None:
    """Newton steps on the analytic gradient to the optimum itself (see _polish.py), from
    the optimum check's gradient and Hessian where they were taken at opt.theta."""
    at = None
    if opt.hessian_at is not None and np.array_equal(opt.hessian_at[0], opt.theta):
        at = (opt.hessian_at[1], opt.gradient, opt.hessian)
    try:
        x, fx, k = newton_polish(fg, opt.theta, lower, at)
    except (DataError, FloatingPointError, np.linalg.LinAlgError):
        return
    opt.feval += k
    if fx <= opt.fmin + ROUNDING * abs(opt.fmin):
        opt.theta, opt.fmin = x, fx


def _convergence(message: str, control: Control) -> None:
    logger.warning(message)
    if control.check_conv == "stop":
        raise ConvergenceError(message)
    if control.check_conv == "warning":
        warnings.warn(message, ConvergenceWarning, stacklevel=5)


def _refit_stored(fit: LmerFit, reml: bool) -> LmerFit:
    """The model refitted (by ML for anova and profiles) from its stored cross-products A,
    without the rows: every field except the row-level ones (fitted values, residuals,
    simulate, refit), which then need data=."""
    stored = fit._objective
    dev = stored.deviance(reml)
    opt = _minimize(dev, fit._optimizer)
    dec = dev.decompose(opt.theta)
    us = dev.factor.spherical_modes(dec.beta)
    bs = [u @ T.T for T, u in zip(dev.Ts(opt.theta), us)]
    return replace(
        fit, reml=reml, theta=opt.theta, beta=dec.beta, sigma=dev.sigma(dec),
        objective=dev.objective(dec), RX=dec.RX, optsummary=opt, fitted_values=None,
        terms=[replace(t, b=b[t.order]) for t, b in zip(fit.terms, bs)],
        _factor=dev.factor, _rows=None, _frame=None, _dev=dev, _objective=stored,
    )  # fmt: skip


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


def _rows_of(fit: LmerFit, data):
    """The model frame and row plan of `data` for a loaded fit, checked to be its rows."""
    parsed = parse_formula(fit.formula)
    weights = fit.weights if fit.weights_name == "(array)" else fit.weights_name
    offset = fit._offset if fit.offset_name == "(array)" else fit.offset_name
    frame = build_frame(parsed, data, weights, offset)
    same = frame.n == fit.nobs and np.array_equal(frame.y, fit.response)
    if same and fit.weights is not None:
        same = frame.weights is not None and np.array_equal(frame.weights, fit.weights)
    if not same:
        raise DataError(
            f"data= is not the data this fit was made from: it gives {frame.n} rows used "
            f"(the fit has {fit.nobs}) or a different response; pass the same rows"
        )
    y = frame.y if frame.offset is None else frame.y - frame.offset
    return frame, RowData(frame.terms, frame.Xcols, frame.xnames, y)


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
        s = []
        for v in np.einsum("jaa->a", D).tolist():  # in Python floats: the same arithmetic
            rms = math.sqrt(max(v, 1e-300) / n)
            s.append(1.0 / rms if rms < EXTREME[0] or rms > EXTREME[1] else 1.0)
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
