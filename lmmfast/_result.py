"""The fitted model: every field declared here, the expensive ones computed lazily."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from ._errors import ArgumentError, DataError, NeedsDataError
from ._optimize import OptSummary
from ._sources.batched import StreamFrame

if TYPE_CHECKING:
    from ._many_result import ManyFits
    from ._present.plot import FitPlots
    from ._present.summary import LmerSummary

SINGULAR_TOL = 1e-4  # lme4's isSingular(tol = 1e-4)


def _require_rows(fit, what: str) -> None:
    """A typed error where a method needs the rows in memory and the fit streamed them."""
    if fit._streamed:
        raise DataError(
            f"{what} needs the rows in memory; this fit streamed them (Parquet or Dask). Fit "
            "the data in memory (a pandas or polars frame) to use it"
        )


def _require_source(fit, what: str) -> None:
    if fit._frame is None:
        raise DataError(
            f"{what} of a Parquet or Dask fit streams its rows again, which a pickled or loaded "
            "fit no longer has; call it on the fit lmer() returned"
        )


def _blockdiag_stack(blocks: list[np.ndarray]) -> np.ndarray:
    """Per level, the block-diagonal matrix of several terms' (l, q_k, q_k) blocks."""
    n = blocks[0].shape[0]
    Q = sum(b.shape[1] for b in blocks)
    out = np.zeros((n, Q, Q))
    k = 0
    for b in blocks:
        out[:, k : k + b.shape[1], k : k + b.shape[1]] = b
        k += b.shape[1]
    return out


@dataclass(eq=False)
class TermInfo:
    """What a fit keeps of a random-effects term (no per-row arrays)."""

    group: str
    cnames: list[str]
    levels: np.ndarray  # labels in R's factor order
    b: np.ndarray  # (l, q) conditional modes, rows in `levels` order
    theta_lower: np.ndarray
    order: np.ndarray  # internal level order -> R's order (levels = internal[order])
    spec: object = None  # to evaluate the term's columns on new data
    factors: tuple = ()  # grouping columns

    @property
    def q(self) -> int:
        return len(self.cnames)


@dataclass(eq=False)
class LmerFit:
    """A linear mixed model fitted by :func:`lmmfast.lmer`.

    Attributes mirror lme4's accessors: ``fixef`` (``fixef()``), ``se``, ``vcov``
    (``vcov()``), ``theta`` (``getME(, "theta")``), ``sigma`` (``sigma()``),
    ``objective`` (REML criterion for REML fits, deviance -2 logLik for ML fits),
    ``loglik``, ``aic``, ``bic``, ``nobs``, ``ngroups`` (``ngrps()``), ``varcorr``
    (``as.data.frame(VarCorr())``), ``ranef`` (``ranef()``), ``is_singular``
    (``isSingular()``), ``reml``, ``formula``; ``summary()`` prints as lme4's.
    """

    formula: str
    reml: bool
    theta: np.ndarray
    beta: np.ndarray
    xnames: list[str]
    sigma: float
    objective: float
    RX: np.ndarray = field(repr=False)  # upper Cholesky factor of the fixed-effects block
    nobs: int
    terms: list[TermInfo] = field(repr=False)
    fitted_values: np.ndarray = field(repr=False)
    response: np.ndarray = field(repr=False)
    weights: np.ndarray | None = field(repr=False)
    optsummary: OptSummary = field(repr=False)
    dropped_columns: list[str] = field(default_factory=list)
    n_dropped_rows: int = 0
    data_name: str | None = None
    factorization: str = "blocked"  # blocked (one factor), nested, or cholmod
    theta_names: list[str] = field(default_factory=list)
    weights_name: str | None = None  # shown in summary() as lme4's "Weights:" line
    offset_name: str | None = None
    row_index: object = None  # the data's index labels of the rows used
    # private: what lazily computed fields need; dropped (after computing them) on pickling
    _factor: object = field(default=None, repr=False)
    _rows: object = field(default=None, repr=False)
    _keep: object = field(default=None, repr=False)
    _offset: object = field(default=None, repr=False)
    _frame: object = field(default=None, repr=False)
    _optimizer: object = field(default="auto", repr=False)  # a Control (or its optimizer)
    _fixed_spec: object = field(default=None, repr=False)
    _dev: object = field(default=None, repr=False)  # the objective (Satterthwaite's df)
    _objective: object = field(default=None, repr=False)  # its data: A and the terms' layout

    _LAZY = ("cond_var", "fitted_marginal")

    def __getstate__(self):
        for name in self._LAZY:  # compute what needs the factorization or the rows
            if name != "fitted_marginal" or self._rows is not None:
                getattr(self, name)
        state = self.__dict__.copy()
        state.update(_factor=None, _rows=None, _frame=None, _dev=None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._restore_objective()

    def _restore_objective(self) -> None:
        """Rebuild the objective and its factorization (at theta) from the stored A."""
        if self._objective is not None and self._dev is None:
            self._dev = self._objective.deviance(self.reml)
            self._dev.decompose(self.theta)
            self._factor = self._dev.factor

    def _with_data(self, data, what: str) -> LmerFit:
        """This fit with its rows: itself if it has them, else a copy given them by `data`
        (a loaded or unpickled fit), checked to be the rows it was fitted to."""
        if self._frame is not None:
            return self
        if data is None:
            raise NeedsDataError(
                f"{what} needs the rows, which a loaded, unpickled or refitted-from-A fit does "
                "not keep; pass data=<the data it was fitted to>"
            )
        from ._lmer import _rows_of

        frame, rows = _rows_of(self, data)
        out = object.__new__(type(self))
        out.__dict__.update(self.__dict__)
        out._frame, out._rows, out._offset = frame, rows, frame.offset
        return out

    # ----- persistence ---------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write the fit to `path` in lmmfast's data-only format (a .npz of arrays and a JSON
        document with a format version); read it back with lmmfast.load(path).  Loading
        never executes code, unlike pickle."""
        from ._persist import save

        _require_rows(self, "save()")  # the format stores fitted values and the response
        save(self, path)

    # ----- prediction ----------------------------------------------------------------------
    def predict(
        self, newdata: Any = None, re_form: str | None = None, allow_new_levels: bool = False
    ) -> pd.Series:
        """Predictions, as lme4's predict(fit, newdata, re.form, allow.new.levels).

        re_form: None uses every random-effects term; "~0" (or "NA") none, i.e. the
        population level X beta; a formula such as "~(1 | Subject)" the terms it names.
        Rows of newdata at levels the fit has not seen raise NewLevelsError unless
        allow_new_levels, when they get the population-level prediction for that term.
        Rows with missing values predict NaN.
        """
        from ._predict import predict
        from ._sources.lazy import lazy_predict

        lazy = lazy_predict(self, newdata, re_form, allow_new_levels)
        if lazy is not None:  # a Dask or Parquet fit, or Dask newdata: computed by the source
            return lazy
        if newdata is None and re_form is not None and self._rows is None:
            from ._predict import _selected_terms

            if 0 < len(_selected_terms(self, re_form)) < len(self.terms):
                raise NeedsDataError(
                    "predict(re_form=...) with some of the terms, on the fitted rows of a "
                    "loaded or unpickled fit, needs the rows: pass newdata=<the data>"
                )
        return predict(self, newdata, re_form, allow_new_levels)

    # ----- refitting and inference -------------------------------------------------------
    def refit_ml(self, data: Any = None) -> LmerFit:
        """The same model fitted by maximum likelihood (what anova() compares).  A loaded or
        unpickled fit refits from its stored cross-products; the result then has no
        row-level values (fitted values, residuals) unless `data` (the rows it was fitted
        to) is given."""
        if not self.reml:
            return self
        from ._lmer import _fit, _refit_stored

        if self._frame is None and data is None:
            return _refit_stored(self, False)
        src = self._with_data(data, "refit_ml()")
        fit = _fit(self.formula, src._frame, False, self._optimizer)
        fit.data_name, fit.weights_name = self.data_name, self.weights_name
        fit.offset_name = self.offset_name
        return fit

    def refit(self, y: ArrayLike, data: Any = None) -> LmerFit:
        """The same model fitted to another response (one value per row used), reusing the
        grouping structure and CHOLMOD's analysis: the fast path for bootstrap and power.
        A loaded or unpickled fit needs `data`, the rows it was fitted to."""
        _require_rows(self, "refit()")
        src = self._with_data(data, "refit()")
        from dataclasses import replace

        from ._errors import DataError
        from ._lmer import _fit

        y = np.array(y, dtype=np.float64).ravel()
        if y.shape != (self.nobs,):
            raise DataError(f"refit() needs {self.nobs} responses (one per row used), not {y.size}")
        if not np.all(np.isfinite(y)):
            raise DataError("refit() needs finite responses")
        fit = _fit(self.formula, replace(src._frame, y=y), self.reml, self._optimizer,
                   like=self._factor)  # fmt: skip
        fit.data_name, fit.weights_name = self.data_name, self.weights_name
        fit.offset_name = self.offset_name
        return fit

    def refit_many(self, Y: ArrayLike, threads: int | None = None, data: Any = None) -> ManyFits:
        """The same model fitted to many responses at once (the columns of Y, n x G, one row
        per row used; e.g. simulate(nsim)): a ManyFits, each response as refit() would fit
        it, sharing one pass over the design. The fast path for bootstrap and power.
        A loaded or unpickled fit needs `data`, the rows it was fitted to."""
        _require_rows(self, "refit_many()")
        src = self._with_data(data, "refit_many()")
        from ._many import fit_responses

        rhs = self.formula.partition("~")[2].strip()
        opt = self._optimizer
        name = getattr(opt, "optimizer", opt)  # a Control, or (older fits) its name
        return fit_responses(rhs, src._frame, Y, self.reml, name, threads)

    def simulate(self, nsim: int = 1, seed: Any = None, data: Any = None) -> pd.DataFrame:
        """Responses simulated from the fitted model (lme4's simulate()): new random effects
        b ~ N(0, sigma^2 Lambda Lambda') and errors e ~ N(0, sigma^2 / w); columns sim_1..
        A loaded or unpickled fit needs `data`, the rows it was fitted to."""
        _require_rows(self, "simulate()")
        src = self._with_data(data, "simulate()")
        rng = np.random.default_rng(seed)
        out = {}
        for k in range(nsim):
            bs = [rng.standard_normal(t.b.shape) * self.sigma @ T.T
                  for t, T in zip(self.terms, self._Ts())]  # fmt: skip
            y = src._rows.fitted(self._keep, self.beta, bs, src._offset)
            e = rng.standard_normal(self.nobs) * self.sigma
            out[f"sim_{k + 1}"] = y + (e if self.weights is None else e / np.sqrt(self.weights))
        return pd.DataFrame(out, index=self.row_index)

    def coef_table(self, ddf: str | None = None, data: Any = None) -> pd.DataFrame:
        """Estimate, Std. Error, t value; with ddf="satterthwaite" or "kenward-roger" also
        df and Pr(>|t|), as lmerTest's summary(fit, ddf = ...) (Kenward-Roger's Std. Error
        is the adjusted one, as pbkrtest's vcovAdj).  Kenward-Roger reads the rows: a loaded
        or unpickled fit needs `data`, the rows it was fitted to."""
        if ddf is None:
            est, se = self.fixef.to_numpy(), self.se.to_numpy()
            return pd.DataFrame(
                {"Estimate": est, "Std. Error": se, "t value": est / se}, index=self.xnames
            )
        if str(ddf).lower() == "satterthwaite":
            from ._inference.satterthwaite import satterthwaite_table

            return satterthwaite_table(self)
        if str(ddf).lower().replace("_", "-") in ("kenward-roger", "kr"):
            from ._inference.kenward_roger import kenward_roger_table

            _require_rows(self, "Kenward-Roger df")
            return kenward_roger_table(self._with_data(data, "Kenward-Roger df"))
        raise ArgumentError(f"ddf must be None, 'satterthwaite' or 'kenward-roger', not {ddf!r}")

    def confint(
        self,
        method: str = "profile",
        level: float = 0.95,
        nsim: int = 500,
        seed: Any = None,
        data: Any = None,
    ) -> pd.DataFrame:
        """Confidence intervals, as lme4's confint() with oldNames = FALSE: "profile" (the
        default, as lme4's: likelihood profiles of the ML deviance, every parameter: sd_..,
        cor_.., sigma, fixed effects), "wald" (fixed effects) or "boot" (parametric
        bootstrap percentile intervals of every parameter; nsim refits from simulate(); a
        loaded or unpickled fit needs `data`, the rows it was fitted to)."""
        from ._inference.intervals import confint_boot, confint_wald
        from ._inference.profile import confint_profile

        if not isinstance(method, str):
            raise ArgumentError(f"method must be 'profile', 'wald' or 'boot', not {method!r}")
        if method.lower() == "wald":
            return confint_wald(self, level)
        if method.lower() == "boot":
            return confint_boot(self._with_data(data, "a bootstrap"), level, nsim, seed)
        if method.lower() == "profile":
            return confint_profile(self, level)
        raise ArgumentError(f"method must be 'profile', 'wald' or 'boot', not {method!r}")

    def contest(
        self,
        L: ArrayLike | pd.DataFrame,
        rhs: ArrayLike = 0.0,
        ddf: str = "satterthwaite",
        joint: bool = True,
        level: float = 0.95,
    ) -> pd.DataFrame:
        """Test of the linear hypothesis L beta = rhs, as lmerTest's contest(fit, L, rhs, joint,
        ddf): joint=True gives one row (Sum Sq, Mean Sq, NumDF, DenDF, F value, Pr(>F)); joint=
        False a t test per row of L (Estimate, Std. Error, df, t value, lower, upper, Pr(>|t|)).
        L: a vector or a matrix with one column per fixed effect (or a DataFrame with those
        column names); ddf "satterthwaite" or "kenward-roger"."""
        from ._inference.contest import contest

        return contest(self, L, rhs, ddf, joint, level)

    # ----- fixed effects -------------------------------------------------------------
    @property
    def fixef(self) -> pd.Series:
        """Estimates of the fixed effects, named as lme4 names them."""
        return pd.Series(self.beta, index=self.xnames, name="Estimate")

    @cached_property
    def vcov(self) -> pd.DataFrame:
        """sigma^2 (R_X' R_X)^{-1}, the covariance of the fixed-effects estimates."""
        Rinv = np.linalg.inv(self.RX) if len(self.RX) else self.RX
        return pd.DataFrame(self.sigma**2 * Rinv @ Rinv.T, index=self.xnames, columns=self.xnames)

    @property
    def se(self) -> pd.Series:
        """Standard errors of the fixed effects."""
        return pd.Series(np.sqrt(np.diag(self.vcov.to_numpy())), index=self.xnames, name="SE")

    @property
    def corr_fixef(self) -> pd.DataFrame:
        """Correlation of the fixed-effects estimates."""
        V = self.vcov.to_numpy()
        s = np.sqrt(np.diag(V))
        return pd.DataFrame(V / np.outer(s, s), index=self.xnames, columns=self.xnames)

    # ----- likelihood ------------------------------------------------------------------
    @property
    def npar(self) -> int:
        """Parameters counted by logLik's df: fixed effects, theta, sigma."""
        return len(self.beta) + len(self.theta) + 1

    @property
    def loglik(self) -> float:
        """Log-likelihood (the REML log-likelihood for REML fits, as lme4's logLik)."""
        return -0.5 * self.objective

    @property
    def aic(self) -> float:
        return self.objective + 2 * self.npar

    @property
    def bic(self) -> float:
        return self.objective + np.log(self.nobs) * self.npar

    @property
    def df_resid(self) -> int:
        return self.nobs - self.npar

    # ----- random effects --------------------------------------------------------------
    @property
    def ngroups(self) -> dict[str, int]:
        """Number of levels of each grouping factor."""
        return {t.group: len(t.levels) for t in self.terms}

    @cached_property
    def varcorr(self) -> pd.DataFrame:
        """Variances, covariances (vcov) and SDs, correlations (sdcor), as.data.frame(VarCorr)."""
        rows = []
        seen: dict[str, int] = {}
        for t, T in zip(self.terms, self._Ts()):
            k = seen.get(t.group, 0)
            seen[t.group] = k + 1
            grp = t.group if k == 0 else f"{t.group}.{k}"  # R's make.unique
            S = self.sigma**2 * T @ T.T
            sd = np.sqrt(np.diag(S))
            for i, name in enumerate(t.cnames):
                rows.append((grp, name, None, S[i, i], sd[i]))
            for j in range(t.q):
                for i in range(j + 1, t.q):
                    corr = S[i, j] / (sd[i] * sd[j]) if sd[i] * sd[j] > 0 else np.nan
                    rows.append((grp, t.cnames[j], t.cnames[i], S[i, j], corr))
        rows.append(("Residual", None, None, self.sigma**2, self.sigma))
        return pd.DataFrame(rows, columns=["grp", "var1", "var2", "vcov", "sdcor"])

    @cached_property
    def ranef(self) -> dict[str, pd.DataFrame]:
        """Conditional modes of the random effects: factor -> DataFrame (levels x terms)."""
        out: dict[str, pd.DataFrame] = {}
        for t in self.terms:
            df = pd.DataFrame(t.b, index=pd.Index(t.levels, name=t.group), columns=t.cnames)
            out[t.group] = pd.concat([out[t.group], df], axis=1) if t.group in out else df
        return out

    @property
    def is_singular(self) -> bool:
        """True if a variance parameter is on its boundary (lme4's isSingular, tol 1e-4)."""
        lower = [b for t in self.terms for b in np.asarray(t.theta_lower).tolist()]
        theta = np.asarray(self.theta).tolist()
        return any(v < SINGULAR_TOL for v, b in zip(theta, lower) if b == 0)

    def _Ts(self) -> list[np.ndarray]:
        """Each term's relative covariance factor T from theta (as ReTerm.T)."""
        from ._terms import _lower_flat

        out, start = [], 0
        for t in self.terms:
            k = t.q * (t.q + 1) // 2
            T = np.zeros(t.q * t.q)
            T[_lower_flat(t.q)] = self.theta[start : start + k]
            out.append(T.reshape(t.q, t.q))
            start += k
        return out

    @cached_property
    def cond_var(self) -> dict[str, np.ndarray]:
        """Conditional covariance of the random effects per level, Var(b_j | y) =
        sigma^2 T (A^{-1})_jj T': factor -> (levels, q, q) in `ranef` order (lme4's
        attr(ranef(fit, condVar = TRUE)[[g]], "postVar"); terms of one factor stacked)."""
        blocks = self._factor.inverse_blocks()
        out: dict[str, list[np.ndarray]] = {}
        for t, T, Ainv in zip(self.terms, self._Ts(), blocks):
            V = self.sigma**2 * (T @ Ainv @ T.T)[t.order]
            out.setdefault(t.group, []).append(V)
        return {g: v[0] if len(v) == 1 else _blockdiag_stack(v) for g, v in out.items()}

    def ranef_table(self) -> pd.DataFrame:
        """Conditional modes with conditional SDs, as R's as.data.frame(ranef(fit, condVar =
        TRUE)): columns grpvar, term, grp, condval, condsd."""
        frames = []
        for g, modes in self.ranef.items():
            sd = np.sqrt(np.diagonal(self.cond_var[g], axis1=1, axis2=2))
            for k, term in enumerate(modes.columns):
                frames.append(
                    pd.DataFrame(
                        {"grpvar": g, "term": term, "grp": modes.index.astype(str),
                         "condval": modes[term].to_numpy(), "condsd": sd[:, k]}
                    )
                )  # fmt: skip
        return pd.concat(frames, ignore_index=True)

    def coef(self) -> dict[str, pd.DataFrame]:
        """Per-level coefficients, fixed plus random (lme4's coef()): factor -> DataFrame."""
        out = {}
        for g, modes in self.ranef.items():
            df = pd.DataFrame(
                np.tile(self.beta, (len(modes), 1)), index=modes.index, columns=self.xnames
            )
            for col in modes.columns:
                df[col] = (df[col] if col in df else 0.0) + modes[col].to_numpy()
            out[g] = df[[*self.xnames, *[c for c in modes.columns if c not in self.xnames]]]
        return out

    def icc(self) -> pd.Series:
        """Intra-class correlation of each random intercept: tau_k^2 / (sum tau^2 + sigma^2),
        the correlation of two observations that share only a level of factor k (with one
        random intercept, tau^2 / (tau^2 + sigma^2), as in the lecture notes).  With random
        slopes it is the correlation at covariate value 0."""
        vc = self.varcorr
        ints = vc[(vc["var1"] == "(Intercept)") & vc["var2"].isna() & (vc["grp"] != "Residual")]
        total = ints["vcov"].sum() + self.sigma**2
        return pd.Series(ints["vcov"].to_numpy() / total, index=ints["grp"].to_numpy(), name="ICC")

    # ----- fitted values and residuals ----------------------------------------------------
    def fitted(self, out: str | os.PathLike | None = None) -> pd.Series:
        """Conditional fitted values X beta + Z b (+ offset), indexed as the rows used.

        A fit of a Dask DataFrame gives a lazy Dask Series; of Parquet data, the values
        computed by streaming the rows again, or written to the Parquet file `out`."""
        if self._streamed:  # a batched source: from its rows
            _require_source(self, "fitted()")
            return self._frame.values(self, "fitted", out=out)
        self._need_fitted()
        return pd.Series(self.fitted_values, index=self.row_index, name="fitted")

    @cached_property
    def fitted_marginal(self) -> np.ndarray:
        """Population-level fitted values X beta (+ offset), lme4's predict(re.form = NA)."""
        if self._rows is None:
            raise NeedsDataError(
                "fitted_marginal of a fit refitted from its stored cross-products needs the "
                "rows; refit with data=<the data it was fitted to>"
            )
        zeros = [np.zeros_like(t.b) for t in self.terms]  # b = 0: in any level order
        return self._rows.fitted(self._keep, self.beta, zeros, self._offset)

    def residuals(
        self,
        type: str = "response",
        scaled: bool = False,
        marginal: bool = False,
        out: str | os.PathLike | None = None,
    ) -> pd.Series:
        """Residuals, as lme4's residuals(fit, type, scaled).

        type "response": y - fitted; "pearson": sqrt(w) (y - fitted).  scaled: divided by
        sigma.  marginal=True gives y - X beta (the marginal residuals, with the random
        effects not subtracted) instead of the conditional y - X beta - Z b.  Dask and
        Parquet fits: as fitted() (lazy, streamed, or written to `out`).
        """
        if type not in ("response", "pearson"):
            raise ArgumentError(f"type must be 'response' or 'pearson', not {type!r}")
        if self._streamed:  # a batched source (as fitted)
            from ._sources.lazy import lazy_residuals

            _require_source(self, "residuals()")
            return lazy_residuals(self, type, scaled, marginal, out)
        self._need_fitted()
        fit = self.fitted_marginal if marginal else self.fitted_values
        r = self.response - fit
        if type == "pearson" and self.weights is not None:
            r = r * np.sqrt(self.weights)
        if scaled:
            r = r / self.sigma
        return pd.Series(r, index=self.row_index, name="residuals")

    @property
    def _streamed(self) -> bool:
        """Fitted to a batched source (Parquet, Dask): the rows are read again when needed."""
        return isinstance(self._frame, StreamFrame)

    def _need_fitted(self) -> None:
        if self.fitted_values is None:
            raise NeedsDataError(
                "this fit keeps no fitted values or residuals: it was refitted from its stored "
                "cross-products without the rows (call refit_ml(data=<the data>)), or it streamed "
                "its rows (Parquet, Dask) and was then pickled or loaded, which streams its rows "
                "again no more (call fitted() on the fit lmer() returned)"
            )

    @property
    def scaled_residuals(self) -> np.ndarray:
        """Pearson residuals over sigma (lme4's residuals(fit, "pearson", scaled = TRUE))."""
        return self.residuals("pearson", scaled=True).to_numpy()

    def summary(self, ddf: str | None = None, data: Any = None) -> LmerSummary:
        """An object whose str() is laid out as lme4's summary(); ddf="satterthwaite" adds
        df and p-values as lmerTest's summary(fit, ddf = "Satterthwaite").  A loaded or
        unpickled fit needs `data` (its rows) for ddf="kenward-roger"."""
        from ._present.summary import LmerSummary

        return LmerSummary(self if data is None else self._with_data(data, "summary()"), ddf)

    # ----- tidy tables, plots, notebooks (broom.mixed, lme4's plots) ------------------------
    def tidy(
        self,
        effects: str | tuple[str, ...] = ("fixed", "ran_pars"),
        conf_int: bool = False,
        conf_level: float = 0.95,
        conf_method: str = "wald",
        ddf: str | None = None,
    ) -> pd.DataFrame:
        """One row per estimate, as broom.mixed's tidy(fit): effects any of "fixed",
        "ran_pars" (sd__x, cor__x.y, sd__Observation), "ran_vals" (conditional modes, std.error
        the conditional SD), "ran_coefs"; ddf adds df and p.value (lmerTest); conf_int adds
        conf.low/conf.high by confint(method=conf_method)."""
        from ._present.tidy import tidy

        return tidy(self, effects, conf_int, conf_level, conf_method, ddf)

    def glance(self) -> pd.DataFrame:
        """One row: nobs, sigma, logLik, AIC, BIC, deviance (REMLcrit for REML fits, as
        broom.mixed), df.residual."""
        from ._present.tidy import glance

        return glance(self)

    def augment(self, data: Any = None, newdata: Any = None) -> pd.DataFrame:
        """The rows used with .fitted, .resid, .hat, .cooksd, .fixed (broom.mixed's augment;
        lme4's hatvalues and cooks.distance); `data`: the DataFrame fitted, to keep its
        columns.  With newdata: newdata with .fitted and .fixed."""
        from ._present.tidy import augment

        fit = self if newdata is not None or data is None else self._with_data(data, "augment()")
        return augment(fit, data, newdata)

    @property
    def plot(self) -> FitPlots:
        """lme4's diagnostic plots as matplotlib Figures (needs lmmfast[plot]):
        fit.plot.ranef(), .resid(), .qq(which="resid"|"ranef"), .profile()."""
        from ._present.plot import FitPlots

        return FitPlots(self)

    def _repr_html_(self) -> str:
        from ._present.html import fit_html

        return fit_html(self)

    def __repr__(self) -> str:
        crit = "REML criterion" if self.reml else "deviance"
        return (
            f"<LmerFit {self.formula!r}: {crit} {self.objective:.4f}, nobs {self.nobs}, "
            f"groups {self.ngroups}>"
        )
