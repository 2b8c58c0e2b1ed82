"""ManyFits: the results of lmer_many(), one row per response, and each full fit on demand."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from ._errors import ArgumentError
from ._lmer import _package
from ._pls import ProfiledDeviance
from ._result import LmerFit
from ._sources.crossprod import RowData
from ._sources.frame import ModelFrame


@dataclass(eq=False)
class ResponseDesign:
    """The design one group of responses shares (all rows, or those a missing pattern
    leaves): its frame, kept fixed-effects columns, and the responses' values on its rows."""

    frame: ModelFrame
    keep: np.ndarray
    dropped: list
    column: dict  # response index -> column of Y
    Y: np.ndarray  # (n, G) the responses on the frame's rows (before any offset)
    reml: bool
    optimizer: str
    compiled: bool = False  # the objective was the compiled scalar-terms kernel

    @property
    def theta_names(self) -> list[str]:
        return [n for t in self.frame.terms for n in t.theta_names()]

    @property
    def xnames(self) -> list[str]:
        return [self.frame.xnames[j] for j in self.keep]


class ManyFits:
    """The fits of one mixed model to many responses (:func:`lmmfast.lmer_many`).

    Per response (rows of DataFrames, entries of Series, indexed by the response names):
    ``fixef``, ``se``, ``theta``, ``sigma``, ``objective`` (REML criterion or deviance, as
    ``LmerFit.objective``), ``converged``, ``is_singular``, ``nobs`` (rows used: the rows
    where the response and the design are observed).  Long tidy tables with a ``response``
    column: ``varcorr`` and ``coef_table()``.  ``fits[name]`` is the full :class:`LmerFit`
    of one response; ``errors`` maps the responses that could not be fitted to the reason
    (their results are NaN).
    """

    def __init__(self, rhs, reml, names, results, designs, n_data, frame=None):
        self.formula, self.reml, self.names = rhs, reml, pd.Index(names, name="response")
        self._r, self._designs, self.n_data = results, designs, n_data
        first = next((d for d in designs if d is not None), None)
        frame = frame if frame is not None else first.frame
        self.theta_names = [n for t in frame.terms for n in t.theta_names()]
        self.xnames = list(frame.xnames)
        self._terms = frame.terms
        self.fits = _Fits(self)

    def __len__(self) -> int:
        return len(self.names)

    def __repr__(self) -> str:
        return (
            f"<ManyFits '~ {self.formula}': {len(self)} responses, "
            f"{int(self.converged.sum())} converged, {len(self.errors)} not fitted>"
        )

    # ----- per response ------------------------------------------------------------------
    def _table(self, values: list, names_of, columns: list[str]) -> pd.DataFrame:
        out = np.full((len(self), len(columns)), np.nan)
        where = {c: k for k, c in enumerate(columns)}
        for g, v in enumerate(values):
            if v is not None:
                out[g, [where[c] for c in names_of(g)]] = v
        return pd.DataFrame(out, index=self.names, columns=columns)

    @property
    def fixef(self) -> pd.DataFrame:
        """Fixed-effects estimates, responses x coefficients (NaN where a column was dropped)."""
        return self._table(self._r.beta, lambda g: self._designs[g].xnames, self.xnames)

    @property
    def se(self) -> pd.DataFrame:
        """Standard errors of the fixed effects, responses x coefficients."""
        return self._table(self._r.se, lambda g: self._designs[g].xnames, self.xnames)

    @property
    def theta(self) -> pd.DataFrame:
        """The relative covariance parameters, responses x theta (lme4's getME(, "theta"))."""
        return self._table(self._r.theta, lambda g: self._designs[g].theta_names,
                           self.theta_names)  # fmt: skip

    @property
    def sigma(self) -> pd.Series:
        return pd.Series(self._r.sigma, index=self.names, name="sigma")

    @property
    def objective(self) -> pd.Series:
        return pd.Series(self._r.objective, index=self.names, name="objective")

    @property
    def converged(self) -> pd.Series:
        """The optimizer converged and the optimum check passed (no ConvergenceWarning)."""
        return pd.Series(self._r.converged, index=self.names, name="converged")

    @property
    def is_singular(self) -> pd.Series:
        """A variance parameter on its boundary (lme4's isSingular, tol 1e-4)."""
        return pd.Series(self._r.singular, index=self.names, name="is_singular")

    @property
    def nobs(self) -> pd.Series:
        """Rows used for each response (rows with a missing value dropped for it alone)."""
        return pd.Series(self._r.nobs, index=self.names, name="nobs")

    @property
    def errors(self) -> dict[str, str]:
        """Responses that could not be fitted, and why."""
        return {self.names[g]: msg for g, msg in sorted(self._r.errors.items())}

    # ----- long tables ---------------------------------------------------------------------
    def coef_table(self, ddf: str | None = None) -> pd.DataFrame:
        """Estimate, Std. Error, t value per response and coefficient (LmerFit.coef_table);
        ddf="satterthwaite" adds df and Pr(>|t|) (lmerTest), computed per response."""
        if ddf is not None and str(ddf).lower() != "satterthwaite":
            raise ArgumentError(f"ddf must be None or 'satterthwaite', not {ddf!r}")
        frames = []
        for g, name in enumerate(self.names):
            if self._r.beta[g] is None:
                continue
            if ddf is None:
                est, se = self._r.beta[g], self._r.se[g]
                tab = pd.DataFrame({"Estimate": est, "Std. Error": se, "t value": est / se},
                                   index=self._designs[g].xnames)  # fmt: skip
            else:
                tab = self.fits[name].coef_table(ddf)
            frames.append(tab.rename_axis("term").reset_index().assign(response=name))
        if not frames:
            return pd.DataFrame(columns=["response", "term", "Estimate", "Std. Error", "t value"])
        out = pd.concat(frames, ignore_index=True)
        return out[["response", *[c for c in out.columns if c != "response"]]]

    @property
    def varcorr(self) -> pd.DataFrame:
        """Variances and SDs, covariances and correlations per response, as LmerFit.varcorr
        (as.data.frame(VarCorr)) with a response column."""
        frames = []
        for g, name in enumerate(self.names):
            if self._r.theta[g] is None:
                continue
            point = _Point(self._designs[g].frame.terms, self._r.theta[g], self._r.sigma[g])
            frames.append(LmerFit.varcorr.func(point).assign(response=name))
        cols = ["response", "grp", "var1", "var2", "vcov", "sdcor"]
        return pd.concat(frames, ignore_index=True)[cols] if frames else pd.DataFrame(columns=cols)

    def parameters(self) -> pd.DataFrame:
        """lme4's confint parameters per response (sd_..|g, cor_..|g, sigma, fixed effects),
        responses x parameters: what a bootstrap summarizes."""
        from ._inference.intervals import parameters

        rows, index = [], None
        for g in range(len(self)):
            if self._r.beta[g] is None:
                rows.append(None)
                continue
            d = self._designs[g]
            point = _Point(d.frame.terms, self._r.theta[g], self._r.sigma[g], self._r.beta[g],
                           d.xnames)  # fmt: skip
            s = parameters(point)
            index = s.index if index is None else index
            rows.append(s)
        if index is None:
            return pd.DataFrame(index=self.names)
        out = pd.DataFrame([r if r is not None else pd.Series(dtype=float) for r in rows],
                           index=self.names)  # fmt: skip
        return out.reindex(columns=index)

    # ----- one response in full ----------------------------------------------------------------
    def fit(self, name) -> LmerFit:
        """The full LmerFit of response `name` (by name or position), at the optimum found."""
        g = _position(self.names, name)
        if self._r.opt[g] is None:
            why = self._r.errors.get(g, "it was not fitted")
            raise ArgumentError(f"response {self.names[g]!r} has no fit: {why}")
        d = self._designs[g]
        frame = replace(d.frame, y=d.Y[:, d.column[g]].copy())
        frame.n_dropped = self.n_data - frame.n
        y = frame.y if frame.offset is None else frame.y - frame.offset
        rows = RowData(frame.terms, frame.Xcols, frame.xnames, y)
        cp = rows.cross_products(frame.weights)
        if d.dropped:
            cp = cp.select(d.keep)
        ldW = 0.0 if frame.weights is None else float(np.sum(np.log(frame.weights)))
        dev = ProfiledDeviance(cp, frame.terms, frame.n, d.reml, ldW)
        opt = replace(self._r.opt[g])
        fit = _package(f"{self.names[g]} ~ {self.formula}", d.reml, frame, rows, d.keep, dev,
                       opt, d.dropped, None)  # fmt: skip
        fit._frame, fit._optimizer = frame, d.optimizer
        fit._fixed_spec, fit._dev = frame.fixed_spec, dev
        return fit


class _Fits(Mapping):
    """fits[name]: each response's LmerFit, built when asked for (not kept)."""

    def __init__(self, many: ManyFits):
        self._many = many

    def __getitem__(self, name) -> LmerFit:
        return self._many.fit(name)

    def __iter__(self):
        return iter(self._many.names)

    def __len__(self) -> int:
        return len(self._many)


class _Point:
    """The few fields of an LmerFit that varcorr and the confint parameters read."""

    def __init__(self, terms, theta, sigma, beta=None, xnames=None):
        self.terms = [_TermView(t) for t in terms]
        self.theta, self.sigma, self.beta, self.xnames = theta, sigma, beta, xnames
        self._terms = terms

    def _Ts(self) -> list[np.ndarray]:
        out, start = [], 0
        for t in self._terms:
            out.append(t.T(self.theta[start : start + t.ntheta]))
            start += t.ntheta
        return out


class _TermView:
    def __init__(self, t):
        self.group, self.cnames, self.q = t.group, t.cnames, t.q


def _position(names: pd.Index, name) -> int:
    if isinstance(name, (int, np.integer)) and not isinstance(name, bool):
        if not -len(names) <= name < len(names):
            raise ArgumentError(f"response position {name} is out of range ({len(names)})")
        return int(name) % len(names)
    key = str(name)
    if key not in names:
        raise ArgumentError(f"no response named {name!r}; the responses are {list(names[:5])}...")
    return int(names.get_loc(key))
