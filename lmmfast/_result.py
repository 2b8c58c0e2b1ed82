"""The fitted model: every field declared here, the expensive ones computed lazily."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd

from ._optimize import OptSummary

SINGULAR_TOL = 1e-4  # lme4's isSingular(tol = 1e-4)


@dataclass(eq=False)
class TermInfo:
    """What a fit keeps of a random-effects term (no per-row arrays)."""

    group: str
    cnames: list[str]
    levels: np.ndarray  # labels in R's factor order
    b: np.ndarray  # (l, q) conditional modes, rows in `levels` order
    theta_lower: np.ndarray

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
        lower = np.concatenate([t.theta_lower for t in self.terms])
        return bool(np.any(self.theta[lower == 0] < SINGULAR_TOL))

    def _Ts(self) -> list[np.ndarray]:
        out, start = [], 0
        for t in self.terms:
            k = t.q * (t.q + 1) // 2
            T = np.zeros((t.q, t.q))
            r, c = np.tril_indices(t.q)
            order = np.lexsort((r, c))
            T[r[order], c[order]] = self.theta[start : start + k]
            out.append(T)
            start += k
        return out

    # ----- residuals -------------------------------------------------------------------
    @property
    def scaled_residuals(self) -> np.ndarray:
        """Pearson residuals over sigma (lme4's residuals(fit, "pearson", scaled = TRUE))."""
        r = self.response - self.fitted_values
        if self.weights is not None:
            r = r * np.sqrt(self.weights)
        return r / self.sigma

    def summary(self):
        """An object whose str() is laid out as lme4's summary()."""
        from ._summary import LmerSummary

        return LmerSummary(self)

    def __repr__(self) -> str:
        crit = "REML criterion" if self.reml else "deviance"
        return (
            f"<LmerFit {self.formula!r}: {crit} {self.objective:.4f}, nobs {self.nobs}, "
            f"groups {self.ngroups}>"
        )
