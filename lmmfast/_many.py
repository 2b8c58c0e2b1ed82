"""lmer_many(): one mixed model, many responses (genes, voxels, simulated responses).

The design is shared, so everything that does not involve the response is computed once:
the model frame, the grouping structure and Z'WZ, Z'WX, X'WX (src/_assemble.pyx).  One
more pass over the rows gives, for all G responses together, Z'WY by level, X'WY and the
diagonal of Y'WY (src/_assemble_many.pyx).  Response g's blocks of
A = [Z X y_g]'W[Z X y_g] are then those blocks side by side, bit for bit what lmer()
computes for that response alone.  Scalar terms ((1 | a) + (1 | b) + ..., unscaled
columns): the whole fit of each response runs in C without the GIL
(_many_scalar.fit_compiled: Newton on the analytic Hessian, then lmer()'s snap to 0 and
boundary probes, so it ends at lmer()'s optimum, to 1e-8 in theta); a response
it does not converge on, and every other model, is optimized exactly as lmer() does it
(the same objective, the same optimizer path); for one term on one grouping factor
(x + (1 + x | g)) that objective and its gradient are one compiled call each
(_many_blocked.py), the final estimates lmer()'s own decomposition at the optimum.

Missing values in Y: the rows where a response is missing are dropped for that response
only.  Responses with the same pattern of missing rows share one design (its own frame
and cross-products, built from the rows they have), so a few patterns cost a few passes.

Responses are split over a pool of threads in fixed ranges; each response's result
depends on its own data only (no warm starts), so it does not depend on the number of
threads.
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from . import _assemble_many, _many_blocked, _many_scalar, _threads
from ._errors import ArgumentError, DataError, LMMError
from ._lmer import OPTIMIZERS, RankDeficiencyWarning, _check_term_columns, _optimize
from ._many_blocked import BlockedDeviance
from ._many_result import ManyFits, ResponseDesign
from ._many_scalar import ScalarDesign, ScalarDeviance
from ._optimize import DECREMENT_TOL
from ._pls import ProfiledDeviance
from ._rank import independent_columns
from ._result import SINGULAR_TOL
from ._sources.crossprod import CrossProducts, RowData
from ._sources.formula import parse_formula
from ._sources.frame import ModelFrame, _as_frame, build_frame

_ROW = "lmmfast_row_"  # the placeholder response: each row's position in the data


def lmer_many(
    formula: str,
    data: Any,
    Y: ArrayLike | pd.DataFrame,
    REML: bool = True,
    weights: str | ArrayLike | None = None,
    offset: str | ArrayLike | None = None,
    optimizer: str = "auto",
    threads: int | None = None,
) -> ManyFits:
    """Fit one linear mixed model to many responses that share a design.

    Parameters
    ----------
    formula : str
        The model without a response, e.g. ``"~ condition + (1 | individual) + (1 | batch)"``.
    data : pandas, polars or pyarrow DataFrame, or dict of columns
        The design columns, one row per observation (as for :func:`lmmfast.lmer`).
    Y : 2-D array, or pandas, polars or pyarrow DataFrame, n x G
        One column per response, rows aligned with ``data`` by position (a pandas
        DataFrame's index must equal ``data``'s); a frame's column names become the
        response names, an array's columns are named ``y1 .. yG``.  A missing value (NaN)
        drops that row for that response only; a row with a missing design value is dropped
        for all.
    REML, weights, offset, optimizer
        As for :func:`lmmfast.lmer`; each response is fitted exactly as ``lmer`` would fit
        it alone.
    threads : int, optional
        Threads to split the responses over (default: the number of CPUs).  The results do
        not depend on it.

    Notes
    -----
    How theta is optimized: for scalar random-effects terms only (``(1 | a) + (1 | b)``,
    at most 8, no column of extreme scale) and where ``lmer`` would use the gradient
    (``optimizer`` "auto" or "lbfgs"), each response's whole fit runs in compiled code,
    the responses split over the threads in fixed ranges: projected Newton from lmer's
    start (theta = 1) on the analytic gradient and Hessian in phi = theta^2 >= 0 (the
    variances, on which V depends linearly; eigenvalues in absolute value where the
    Hessian is not positive definite, backtracking), ending with full Newton steps at the
    precision floor as ``lmer``'s Newton polish does, then ``lmer``'s snap (theta within
    1e-6 of 0 put on 0 where that costs rounding) and its boundary probes (a theta at 0
    is tried at 1e-3 and 0.05 and the fit restarted from a lower one): about 12
    evaluations per response.  Both end at the optimum itself, so the results
    equal ``lmer``'s (objective to 1e-10 relative, theta and beta to 1e-8).  A response
    on which this does not converge (a Newton decrement above 1e-3, a failed
    factorization) is refitted exactly as ``lmer`` fits it, as is every response of any
    other model (L-BFGS-B or BOBYQA with ``lmer``'s checks; for one term on one grouping
    factor, such as ``(1 + time | subject)``, with the gradient, each evaluation of the
    objective and gradient is one compiled call).  ``fits[name].optsummary``
    says which ("newton (compiled)" or lmer's optimizer).

    Returns
    -------
    ManyFits
        ``fixef``, ``se``, ``theta`` (DataFrames, one row per response), ``sigma``,
        ``objective``, ``converged``, ``is_singular``, ``nobs`` (Series), ``varcorr`` and
        ``coef_table()`` (long DataFrames with a ``response`` column), ``fits[name]`` (the
        full :class:`LmerFit` of one response) and ``errors`` (responses that could not be
        fitted, with the reason; their results are NaN).
    """
    if optimizer not in OPTIMIZERS:
        raise ArgumentError(f"optimizer must be one of {OPTIMIZERS}, not {optimizer!r}")
    rhs = _right_hand_side(formula)
    df = _as_frame(data)
    names, Yv = _responses(Y, df)
    if _ROW in df.columns:
        raise ArgumentError(f"the data may not have a column named {_ROW!r} (used internally)")
    df = df.assign(**{_ROW: np.arange(len(df), dtype=np.float64)})  # a new frame; data unchanged
    weights, offset = _as_columns(df, weights, "weights"), _as_columns(df, offset, "offset")
    parsed = parse_formula(f"{_ROW} ~ {rhs}")
    frame = build_frame(parsed, df, weights, offset)
    rows = frame.y.astype(np.int64)  # positions of the rows with complete design values
    Yk = Yv[rows]
    missing = np.isnan(Yk)
    complete = np.flatnonzero(~missing.any(axis=0))
    groups = [(frame, complete)] if len(complete) else []
    incomplete = np.flatnonzero(missing.any(axis=0))
    if len(incomplete):  # one design per pattern of missing rows
        keys = pd.factorize(pd.Series([missing[:, g].tobytes() for g in incomplete]))[0]
        for k in range(keys.max() + 1):
            cols = incomplete[keys == k]
            observed = rows[~missing[:, cols[0]]]
            groups.append((observed, cols))
    threads = max(1, int(threads if threads is not None else (os.cpu_count() or 1)))
    out = _Results(len(names))
    designs: list = [None] * len(names)
    for design_rows, cols in groups:
        if isinstance(design_rows, ModelFrame):
            sub = design_rows
        else:
            try:
                sub = build_frame(parsed, df.iloc[design_rows], weights, offset)
            except LMMError as e:
                for g in cols:
                    out.errors[g] = str(e)
                    out.nobs[g] = len(design_rows)
                continue
        pos = sub.y.astype(np.int64)
        design = _fit_group(sub, Yv[np.ix_(pos, cols)], cols, REML, optimizer, threads, out)
        for g in cols:
            designs[g] = design
            out.nobs[g] = sub.n
    return ManyFits(rhs=rhs, reml=REML, names=names, results=out, designs=designs,
                    n_data=len(df), frame=frame)  # fmt: skip


def fit_responses(
    rhs: str, frame: ModelFrame, Y, REML: bool, optimizer: str, threads: int | None = None
) -> ManyFits:
    """Fit the model of `frame` (its design, weights and offset) to each column of Y
    (n x G, finite; a DataFrame's columns name the responses): the refit path of a
    bootstrap or a power analysis (LmerFit.refit_many)."""
    names, Yv = _responses(Y, pd.DataFrame(index=frame.row_index))
    if np.isnan(Yv).any():
        raise DataError("the responses must be finite (one value per row the fit used)")
    threads = max(1, int(threads if threads is not None else (os.cpu_count() or 1)))
    out = _Results(len(names))
    design = _fit_group(frame, Yv, np.arange(len(names)), REML, optimizer, threads, out)
    out.nobs[:] = frame.n
    return ManyFits(rhs=rhs, reml=REML, names=names, results=out, designs=[design] * len(names),
                    n_data=frame.n + frame.n_dropped)  # fmt: skip


# ----- one design, many complete responses ---------------------------------------------------


@dataclass(eq=False)
class _Context:
    """What every response of one design shares, and its own response blocks."""

    frame: ModelFrame
    keep: np.ndarray
    dropped: list
    D: list
    pairs: list
    ZX: list  # per term (l, q, p): Z_t'WX, kept columns
    XtX: np.ndarray
    ZY: list  # per term (l, q, G)
    XY: np.ndarray  # (p, G)
    yy: np.ndarray  # (G,)
    ldW: float
    reml: bool
    optimizer: str
    scalar: ScalarDesign | None = None  # the compiled objective, where it applies
    has_gradient: bool = False  # as the factorization lmer() would choose
    blocked: bool = False  # one term on one factor: the compiled blocked objective

    def cross_products(self, g: int) -> CrossProducts:
        """Response g's blocks of [Z X y]'W[Z X y], as lmer() builds them."""
        ZXY = [
            np.concatenate([zx, zy[:, :, g : g + 1]], axis=2) for zx, zy in zip(self.ZX, self.ZY)
        ]
        p = len(self.keep)
        XtXy = np.empty((p + 1, p + 1))
        XtXy[:p, :p] = self.XtX
        XtXy[p, :p] = XtXy[:p, p] = self.XY[:, g]
        XtXy[p, p] = self.yy[g]
        return CrossProducts(self.D, self.pairs, ZXY, XtXy)


class _Results:
    """Per-response results, filled in place by the worker threads (disjoint indices)."""

    def __init__(self, G: int):
        self.G = G
        self.theta: list = [None] * G
        self.beta: list = [None] * G
        self.se: list = [None] * G
        self.sigma = np.full(G, np.nan)
        self.objective = np.full(G, np.nan)
        self.converged = np.zeros(G, dtype=bool)
        self.singular = np.zeros(G, dtype=bool)
        self.nobs = np.zeros(G, dtype=np.int64)
        self.opt: list = [None] * G
        self.compiled = np.zeros(G, dtype=bool)  # fitted by the compiled optimizer
        self.errors: dict[int, str] = {}


def _fit_group(frame, Y, cols, REML, optimizer, threads, out: _Results) -> ResponseDesign:
    """Fit every column of Y (finite, rows of `frame`) on the design of `frame`."""
    raw = np.ascontiguousarray(Y, dtype=np.float64)
    Y = raw if frame.offset is None else raw - frame.offset[:, None]  # as lmer: y - offset
    rows = RowData(frame.terms, frame.Xcols, frame.xnames, np.zeros(frame.n))
    cp = rows.cross_products(frame.weights)
    _check_term_columns(frame.terms, cp)
    keep = independent_columns(cp.XtXy[:-1, :-1])
    dropped = [name for j, name in enumerate(frame.xnames) if j not in set(keep)]
    if dropped:
        warnings.warn(
            f"fixed-effect model matrix is rank deficient so dropping {len(dropped)} "
            f"column{'s' if len(dropped) > 1 else ''}: {', '.join(dropped)}",
            RankDeficiencyWarning,
            stacklevel=3,
        )
    ZY, XY, yy = _response_blocks(rows, frame, Y, threads)
    ctx = _Context(
        frame=frame, keep=keep, dropped=dropped, D=cp.D, pairs=cp.pairs,
        ZX=[z[:, :, keep] for z in cp.ZXY], XtX=cp.XtXy[np.ix_(keep, keep)],
        ZY=ZY, XY=XY[keep], yy=yy,
        ldW=0.0 if frame.weights is None else float(np.sum(np.log(frame.weights))),
        reml=REML, optimizer=optimizer,
    )  # fmt: skip
    if _many_scalar.applies(frame.terms):
        # only where lmer() optimizes with the gradient, and so polishes to the optimum
        # itself (_polish.py): without it, lmer()'s end point depends on rounding
        probe = ProfiledDeviance(ctx.cross_products(0), frame.terms, frame.n, REML, ctx.ldW)
        if probe.has_gradient and optimizer != "bobyqa":
            ctx.scalar = _many_scalar.ScalarDesign(cp, frame.terms)
            ctx.has_gradient = True
    elif optimizer != "bobyqa":  # lmer() optimizes by the gradient: its path, this objective
        probe = ProfiledDeviance(ctx.cross_products(0), frame.terms, frame.n, REML, ctx.ldW)
        ctx.blocked = _many_blocked.applies(probe)
    constant = np.ptp(raw, axis=0) == 0 if len(raw) else np.ones(Y.shape[1], bool)
    G = Y.shape[1]
    nchunks = min(threads, G)
    bounds = [(c * G // nchunks, (c + 1) * G // nchunks) for c in range(nchunks)]
    todo = np.ones(G, dtype=bool)
    if ctx.scalar is not None and _many_scalar.compiled_fit_applies(frame.terms, cp, frame.n):
        todo = _many_scalar.fit_compiled(ctx, ~constant, bounds, cols, out) | constant
    # the rest (and any response the compiled fit did not converge on): the Python path

    def work(lo_hi):
        # per thread: CHOLMOD's factor object and the kernel's work arrays are not shared
        like = ctx.scalar.kernel(len(keep) + 1) if ctx.scalar is not None else None
        if ctx.blocked:
            like = _many_blocked.kernel(ctx.D[0], len(keep) + 1)
        for g in range(*lo_hi):
            if todo[g]:
                like = _fit_response(ctx, g, cols[g], constant[g], like, out)

    # the matrices are small: BLAS's own threads only contend with the workers (10x slower)
    with _threads.limit(1):
        if nchunks == 1 or todo.sum() < 2 * nchunks:
            for b in bounds:
                work(b)
        else:
            with ThreadPoolExecutor(nchunks) as pool:
                list(pool.map(work, bounds))
    column = dict(zip(np.asarray(cols).tolist(), range(G)))
    return ResponseDesign(frame=frame, keep=keep, dropped=dropped, column=column, Y=raw,
                          reml=REML, optimizer=optimizer,
                          compiled=ctx.scalar is not None)  # fmt: skip


def _fit_response(ctx: _Context, g: int, at: int, constant: bool, like, out: _Results):
    """Optimize response g of the context; store its results at index `at`."""
    if constant:
        out.errors[at] = "the response is constant (zero variance); there is nothing to model"
        return like
    cp = ctx.cross_products(g)
    frame = ctx.frame
    try:
        if ctx.scalar is not None:
            dev = ScalarDeviance(like, cp, frame.terms, frame.n, ctx.reml, ctx.ldW,
                                 ctx.has_gradient)  # fmt: skip
        elif ctx.blocked:
            dev = BlockedDeviance(like, cp, frame.terms, frame.n, ctx.reml, ctx.ldW)
        else:
            dev = ProfiledDeviance(cp, frame.terms, frame.n, ctx.reml, ctx.ldW, like=like)
        opt = _optimize(dev, frame.terms, cp, frame.n, ctx.optimizer, warn=False)
        if ctx.blocked:  # the estimates at the optimum as lmer() and fits[name] compute them
            dev = ProfiledDeviance(cp, frame.terms, frame.n, ctx.reml, ctx.ldW)
        dec = dev.decompose(opt.theta)
    except (LMMError, FloatingPointError, np.linalg.LinAlgError) as e:
        out.errors[at] = str(e)
        return like
    beta = dec.beta
    sigma = dev.sigma(dec)
    Rinv = np.linalg.inv(dec.RX) if len(dec.RX) else dec.RX
    out.theta[at], out.beta[at], out.sigma[at] = opt.theta, beta, sigma
    out.se[at] = np.sqrt(np.diag(sigma**2 * Rinv @ Rinv.T))
    out.objective[at] = dev.objective(dec)
    out.converged[at] = opt.converged and opt.newton_decrement <= DECREMENT_TOL
    lower = np.concatenate([t.theta_lower() for t in frame.terms])
    out.singular[at] = bool(np.any(opt.theta[lower == 0] < SINGULAR_TOL))
    out.opt[at] = opt
    return like if ctx.scalar is not None or ctx.blocked else dev.factor


def _response_blocks(rows: RowData, frame: ModelFrame, Y: np.ndarray, threads: int):
    """Z_t'WY per term (l, q, G), X'WY (p, G) and diag(Y'WY) (G,), in one pass."""
    terms = frame.terms
    sizes = [t.nlevels * t.q for t in terms]
    zrow = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    G = Y.shape[1]
    ZY = np.zeros((int(sum(sizes)), G))
    XY = np.zeros((len(rows.xcol), G))
    yy = np.zeros(G)
    w = frame.weights
    _assemble_many.assemble_responses(
        rows.codes, rows.zoff, rows.qs, zrow, rows.cols, rows.zcol, rows.xcol,
        np.ones(1) if w is None else np.ascontiguousarray(w, dtype=np.float64), w is not None,
        Y, ZY, XY, yy, threads,
    )  # fmt: skip
    blocks = [ZY[a : a + s].reshape(t.nlevels, t.q, G) for a, s, t in zip(zrow, sizes, terms)]
    return blocks, XY, yy


# ----- arguments -------------------------------------------------------------------------------


def _right_hand_side(formula) -> str:
    if not isinstance(formula, str):
        raise ArgumentError(
            f"the formula must be a string such as '~ x + (1 | g)', not {type(formula).__name__}"
        )
    lhs, tilde, rhs = formula.partition("~")
    if not tilde:
        raise ArgumentError(
            f"the formula {formula!r} has no '~'; write it as '~ fixed effects + (terms | group)'"
        )
    if lhs.strip():
        raise ArgumentError(
            f"lmer_many's formula has no response (the responses are the columns of Y): "
            f"write '~{rhs}' instead of {formula!r}"
        )
    return rhs.strip()


def _responses(Y, data: pd.DataFrame) -> tuple[pd.Index, np.ndarray]:
    """The response names and an (n, G) float64 copy of Y (never the caller's array)."""
    if isinstance(Y, pd.Series):
        Y = Y.to_frame()
    elif not isinstance(Y, (pd.DataFrame, np.ndarray)) and _is_table(Y):
        Y = _as_frame(Y).set_axis(data.index)  # polars, pyarrow: no index, rows by position
    if isinstance(Y, pd.DataFrame):
        if not Y.index.equals(data.index):
            raise DataError(
                "Y's index differs from the data's: rows are matched by position, so give Y "
                "the data's index (Y.set_index(data.index)) or pass Y.to_numpy()"
            )
        if Y.columns.duplicated().any():
            dup = Y.columns[Y.columns.duplicated()].unique().tolist()
            raise DataError(f"Y has duplicate column names {dup}; rename them")
        names = pd.Index([str(c) for c in Y.columns])
        values = Y.to_numpy()
    else:
        values = np.asarray(Y)
        if values.ndim == 1:
            values = values[:, None]
        names = pd.Index([f"y{g + 1}" for g in range(values.shape[1] if values.ndim == 2 else 0)])
    if values.ndim != 2:
        raise DataError(f"Y must be 2-D (rows x responses), not {values.ndim}-D")
    try:
        values = np.array(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError("Y must be numeric (one column per response)") from None
    if values.shape[0] != len(data):
        raise DataError(
            f"Y has {values.shape[0]} rows but the data have {len(data)}; one row per observation"
        )
    if values.shape[1] == 0:
        raise DataError("Y has no columns: give at least one response")
    if np.isinf(values).any():
        raise DataError("Y has infinite values; use NaN for missing ones")
    return names, values


def _is_table(Y) -> bool:
    """A polars, pyarrow or other dataframe-protocol table (its columns name the responses)."""
    return hasattr(Y, "__dataframe__") or (
        hasattr(Y, "__arrow_c_stream__") and hasattr(Y, "schema")
    )


def _as_columns(df: pd.DataFrame, arg, what: str):
    """A weights or offset array becomes a column of the (internal) frame, so that subsets
    of rows carry it along; a column name is kept."""
    if arg is None or isinstance(arg, str):
        return arg
    name = f"lmmfast_{what}_"
    values = np.asarray(arg)
    if values.ndim != 1 or len(values) != len(df):
        raise DataError(f"{what} must have one value per row of the data ({len(df)})")
    df[name] = values
    return name
