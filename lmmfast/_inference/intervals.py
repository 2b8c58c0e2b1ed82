"""Confidence intervals after the fit: Wald and parametric bootstrap, as lme4's
confint(method = "Wald" | "boot"); the parameter vector lme4 names in confint()."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from .._errors import ArgumentError


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
    # all refits in one lmer_many pass (each as fit.refit would do it); failures are NaN
    draws = fit.refit_many(sims).parameters().to_numpy()
    lo, hi = 0.5 - level / 2, 0.5 + level / 2
    return pd.DataFrame(
        {_pct(lo): np.nanquantile(draws, lo, axis=0), _pct(hi): np.nanquantile(draws, hi, axis=0)},
        index=parameters(fit).index,
    )


def _check_level(level: float) -> None:
    if not 0 < level < 1:
        raise ArgumentError(f"level must be between 0 and 1, not {level}")


def _pct(p: float) -> str:
    """R's column names for interval limits: '2.5 %', '97.5 %'."""
    return f"{100 * p:.3g} %"
