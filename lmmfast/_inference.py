"""Inference after the fit: confidence intervals and likelihood-ratio tests, as lme4's
confint(method = "Wald") and anova()."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy import stats

from ._errors import ArgumentError


def confint_wald(fit, level: float = 0.95) -> pd.DataFrame:
    """Wald intervals beta +- z_{(1+level)/2} SE for the fixed effects (lme4 gives NA for the
    variance parameters with method = "Wald"; they are left out here)."""
    _check_level(level)
    z = stats.norm.ppf(0.5 + level / 2)
    est, se = fit.fixef.to_numpy(), fit.se.to_numpy()
    return pd.DataFrame(
        {_pct(0.5 - level / 2): est - z * se, _pct(0.5 + level / 2): est + z * se},
        index=fit.xnames,
    )


def parameters(fit) -> pd.Series:
    """The parameters as lme4's confint(oldNames = FALSE) names them: per term sd_x|g and
    cor_x.y|g (column-major, as theta), then sigma, then the fixed effects."""
    names, values = [], []
    seen: dict[str, int] = {}
    for t, T in zip(fit.terms, fit._Ts()):
        k = seen.get(t.group, 0)
        seen[t.group] = k + 1
        S = fit.sigma**2 * T @ T.T
        sd = np.sqrt(np.diag(S))
        for j in range(t.q):
            for i in range(j, t.q):
                if i == j:
                    names.append(f"sd_{t.cnames[i]}|{t.group}")
                    values.append(sd[i])
                else:
                    names.append(f"cor_{t.cnames[i]}.{t.cnames[j]}|{t.group}")
                    values.append(S[i, j] / (sd[i] * sd[j]) if sd[i] * sd[j] > 0 else np.nan)
    names.append("sigma")
    values.append(fit.sigma)
    return pd.Series(values + list(fit.beta), index=names + list(fit.xnames))


def confint_boot(fit, level: float, nsim: int, seed) -> pd.DataFrame:
    """Parametric bootstrap: refit to nsim simulated responses, percentile intervals."""
    _check_level(level)
    if nsim < 2:
        raise ArgumentError("a bootstrap needs nsim >= 2 simulations")
    sims = fit.simulate(nsim, seed)
    draws = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # singular or hard refits of simulated data
        for col in sims:
            draws.append(parameters(fit.refit(sims[col].to_numpy())).to_numpy())
    draws = np.array(draws)
    lo, hi = 0.5 - level / 2, 0.5 + level / 2
    return pd.DataFrame(
        {_pct(lo): np.nanquantile(draws, lo, axis=0), _pct(hi): np.nanquantile(draws, hi, axis=0)},
        index=parameters(fit).index,
    )


def anova(*fits, refit: bool = True) -> pd.DataFrame:
    """Likelihood-ratio tests of nested models, as lme4's anova(fit0, fit1, ...).

    Models are ordered by their number of parameters.  REML fits are refitted by maximum
    likelihood first (with a message), since REML criteria of models with different fixed
    effects are not comparable; pass refit=False to compare REML fits of models that
    differ only in their random effects.
    """
    if len(fits) < 2:
        raise ArgumentError("anova() compares two or more fits; pass them all, e.g. anova(f0, f1)")
    nobs = {f.nobs for f in fits}
    if len(nobs) > 1:
        raise ArgumentError(f"the models were fitted to different numbers of rows ({sorted(nobs)})")
    if refit and any(f.reml for f in fits):
        warnings.warn("refitting model(s) with ML (instead of REML)", UserWarning, stacklevel=2)
        fits = [f.refit_ml() if f.reml else f for f in fits]
    fits = sorted(fits, key=lambda f: f.npar)
    rows = []
    for k, f in enumerate(fits):
        row = {"npar": f.npar, "AIC": f.aic, "BIC": f.bic, "logLik": f.loglik,
               "deviance": f.objective if not f.reml else -2 * f.loglik}  # fmt: skip
        if k == 0:
            row.update({"Chisq": np.nan, "Df": np.nan, "Pr(>Chisq)": np.nan})
        else:
            prev = fits[k - 1]
            chisq = max(0.0, 2 * (f.loglik - prev.loglik))
            df = f.npar - prev.npar
            p = stats.chi2.sf(chisq, df) if df > 0 else np.nan
            row.update({"Chisq": chisq, "Df": df, "Pr(>Chisq)": p})
        rows.append(row)
    return pd.DataFrame(rows, index=[f.formula for f in fits])


def _check_level(level: float) -> None:
    if not 0 < level < 1:
        raise ArgumentError(f"level must be between 0 and 1, not {level}")


def _pct(p: float) -> str:
    """R's column names for interval limits: '2.5 %', '97.5 %'."""
    return f"{100 * p:.3g} %"
