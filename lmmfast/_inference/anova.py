"""Likelihood-ratio tests of nested models, as lme4's anova(fit0, fit1, ...)."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy import stats

from .._errors import ArgumentError, RefitWarning

if TYPE_CHECKING:
    from .._result import LmerFit


def anova(*fits: LmerFit, refit: bool = True) -> pd.DataFrame:
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
        warnings.warn("refitting model(s) with ML (instead of REML)", RefitWarning, stacklevel=2)
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
