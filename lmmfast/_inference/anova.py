"""anova(): lmerTest's per-term F tests of one fit (anova(fit, type, ddf)) and lme4's
likelihood-ratio tests of several nested fits (anova(fit0, fit1, ...))."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy import stats

from .._errors import ArgumentError, RefitWarning
from .contest import F_COLUMNS, ddf_method, f_test
from .contrasts import _type, hypothesis_matrices

if TYPE_CHECKING:
    from .._result import LmerFit


def anova(
    *fits: LmerFit, refit: bool = True, type: int = 3, ddf: str = "satterthwaite"
) -> pd.DataFrame:
    """With one fit: lmerTest's anova(fit, type, ddf), an F test per fixed-effect term.
    With several: likelihood-ratio tests of nested models, as lme4's anova(fit0, fit1, ...).

    One fit: one row per term of the fixed-effects formula, columns Sum Sq, Mean Sq, NumDF,
    DenDF, F value, Pr(>F); type 1 (sequential), 2 or 3 (the default, lmerTest's: the same
    for any contrast coding) hypotheses; ddf "satterthwaite" (default) or "kenward-roger"
    (REML fits only).  The table's attrs["heading"] is lmerTest's heading.

    Several fits: ordered by their number of parameters.  REML fits are refitted by maximum
    likelihood first (with a message), since REML criteria of models with different fixed
    effects are not comparable; pass refit=False to compare REML fits of models that
    differ only in their random effects.
    """
    if len(fits) == 1:
        return _f_table(fits[0], type, ddf)
    if len(fits) < 2:
        raise ArgumentError("anova() needs a fit: anova(fit), or anova(f0, f1) to compare fits")
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


def _f_table(fit, type, ddf) -> pd.DataFrame:
    """lmerTest's single_anova: contestMD of each term's hypothesis matrix."""
    method = ddf_method(ddf)
    Ls = hypothesis_matrices(fit, type)
    rows, names, empty = [], [], []
    for label, L in Ls.items():
        if L.shape[0] == 0:
            empty.append(label)  # lmerTest appends these as rows of NA
            continue
        rows.append(f_test(fit, L, np.zeros(L.shape[0]), method))
        names.append(label)
    rows += [(np.nan,) * len(F_COLUMNS)] * len(empty)
    out = pd.DataFrame(rows, index=names + empty, columns=F_COLUMNS)
    roman = {1: "I", 2: "II", 3: "III"}[_type(type)]
    name = "Satterthwaite's" if method == "satterthwaite" else "Kenward-Roger's"
    out.attrs["heading"] = f"Type {roman} Analysis of Variance Table with {name} method"
    out.attrs["hypotheses"] = Ls
    return out
