"""Tidy tables with broom.mixed's names and semantics: tidy(), glance(), augment().

As broom.mixed 0.2.9's methods for lme4 fits (tidy.merMod, glance.merMod, augment.merMod):

* tidy: one row per estimate; columns effect, group, level, term, estimate, std.error,
  statistic (and df, p.value with ddf=, conf.low, conf.high with conf_int=True), only those
  the chosen effects have.  "fixed": coef(summary(fit)) (lmerTest's with ddf); "ran_pars":
  as.data.frame(VarCorr(fit), order = "lower.tri") on the sd/cor scale, terms sd__x,
  cor__x.y and sd__Observation for the residual; "ran_vals": the conditional modes,
  std.error = conditional SD; "ran_coefs": coef(fit), fixed plus random, per level.
  Intervals come from confint(method = conf_method) ("wald" gives none for ran_pars, as
  lme4's NA); for ran_vals they are estimate -+ z std.error (Wald only, as broom.mixed).
* glance: nobs, sigma, logLik, AIC, BIC, deviance (REMLcrit for REML fits: broom.mixed
  renames the column, since deviance() of a REML fit is the REML criterion), df.residual.
* augment: .fitted, .resid, .hat, .cooksd, .fixed for the rows used (lme4's fitted(),
  residuals(), hatvalues(), cooks.distance(), predict(re.form = NA)); .fitted and .fixed
  for new data.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from .._errors import ArgumentError

EFFECTS = ("fixed", "ran_pars", "ran_vals", "ran_coefs")
ORDER = ["effect", "group", "level", "term", "estimate", "std.error", "statistic", "df",
         "p.value", "conf.low", "conf.high"]  # fmt: skip


def tidy(fit, effects=("fixed", "ran_pars"), conf_int=False, conf_level=0.95,
         conf_method="wald", ddf=None) -> pd.DataFrame:  # fmt: skip
    if isinstance(effects, str):
        effects = (effects,)
    unknown = [e for e in effects if e not in EFFECTS]
    if unknown:
        raise ArgumentError(f"unknown effects {unknown}; choose from {list(EFFECTS)}")
    method = str(conf_method).lower()
    if method not in ("wald", "profile", "boot"):
        raise ArgumentError(f"conf_method must be 'wald', 'profile' or 'boot', not {conf_method!r}")
    if not 0 < conf_level < 1:
        raise ArgumentError(f"conf_level must be between 0 and 1, not {conf_level}")
    ci = _intervals(fit, conf_level, method) if conf_int and _needs_ci(effects) else None
    parts = []
    for e in EFFECTS:  # broom.mixed binds them in this order
        if e not in effects:
            continue
        if e == "fixed":
            parts.append(_fixed(fit, ddf, ci))
        elif e == "ran_pars":
            parts.append(_ran_pars(fit, ci))
        elif e == "ran_vals":
            parts.append(_ran_vals(fit, conf_int, conf_level, method))
        else:
            parts.append(_ran_coefs(fit, conf_int))
    out = pd.concat(parts, ignore_index=True)
    return out[[c for c in ORDER if c in out.columns]]


def _needs_ci(effects) -> bool:
    return "fixed" in effects or "ran_pars" in effects


def _intervals(fit, level, method) -> pd.DataFrame:
    """confint() of the fit: rows sd_../cor_../sigma and the fixed effects, two columns."""
    if method == "wald":
        return fit.confint("wald", level)
    return fit.confint(method, level)


def _fixed(fit, ddf, ci) -> pd.DataFrame:
    ct = fit.coef_table(ddf)
    out = pd.DataFrame(
        {"effect": "fixed", "group": None, "term": list(fit.xnames),
         "estimate": ct["Estimate"].to_numpy(), "std.error": ct["Std. Error"].to_numpy(),
         "statistic": ct["t value"].to_numpy()}
    )  # fmt: skip
    if ddf is not None:
        out["df"] = ct["df"].to_numpy()
        out["p.value"] = ct["Pr(>|t|)"].to_numpy()
    if ci is not None:
        lim = ci.loc[list(fit.xnames)].to_numpy()
        out["conf.low"], out["conf.high"] = lim[:, 0], lim[:, 1]
    return out


def ran_pars_table(fit) -> pd.DataFrame:
    """group, term, estimate of each sd and correlation (lower-triangle order per term, as
    as.data.frame(VarCorr(fit), order = "lower.tri")), then the residual SD."""
    rows = []
    seen: dict[str, int] = {}
    for t, T in zip(fit.terms, fit._Ts()):
        k = seen.get(t.group, 0)
        seen[t.group] = k + 1
        grp = t.group if k == 0 else f"{t.group}.{k}"  # R's make.unique, as varcorr
        S = fit.sigma**2 * T @ T.T
        sd = np.sqrt(np.diag(S))
        for j in range(t.q):
            for i in range(j, t.q):
                if i == j:
                    rows.append((grp, f"sd__{t.cnames[i]}", sd[i]))
                else:
                    r = S[i, j] / (sd[i] * sd[j]) if sd[i] * sd[j] > 0 else np.nan
                    rows.append((grp, f"cor__{t.cnames[j]}.{t.cnames[i]}", r))
    rows.append(("Residual", "sd__Observation", fit.sigma))
    return pd.DataFrame(rows, columns=["group", "term", "estimate"])


def _ran_pars(fit, ci) -> pd.DataFrame:
    out = ran_pars_table(fit)
    out.insert(0, "effect", "ran_pars")
    if ci is not None:
        nv = len(out)  # confint's variance parameters: the same order, sigma last
        if len(ci) >= nv and ci.index[nv - 1] == "sigma":
            lim = ci.iloc[:nv].to_numpy()
        else:  # Wald: lme4 gives NA for the variance parameters
            lim = np.full((nv, 2), np.nan)
        out["conf.low"], out["conf.high"] = lim[:, 0], lim[:, 1]
    return out


def _ran_vals(fit, conf_int, level, method) -> pd.DataFrame:
    rt = fit.ranef_table()
    out = pd.DataFrame(
        {"effect": "ran_vals", "group": rt["grpvar"], "level": rt["grp"], "term": rt["term"],
         "estimate": rt["condval"], "std.error": rt["condsd"]}
    )  # fmt: skip
    if conf_int:
        if method != "wald":
            raise ArgumentError("only Wald intervals are available for conditional modes")
        z = stats.norm.ppf(0.5 + level / 2)
        out["conf.low"] = out["estimate"] - z * out["std.error"]
        out["conf.high"] = out["estimate"] + z * out["std.error"]
    return out


def _ran_coefs(fit, conf_int) -> pd.DataFrame:
    frames = []
    for g, df in fit.coef().items():
        for term in df.columns:  # gather(term, estimate, -level): term-major
            frames.append(
                pd.DataFrame({"effect": "ran_coefs", "group": g, "level": df.index.astype(str),
                              "term": term, "estimate": df[term].to_numpy()})
            )  # fmt: skip
    out = pd.concat(frames, ignore_index=True)
    if conf_int:  # broom.mixed warns and returns NA
        out["conf.low"] = out["conf.high"] = np.nan
    return out


def glance(fit) -> pd.DataFrame:
    crit = "REMLcrit" if fit.reml else "deviance"
    return pd.DataFrame(
        [{"nobs": fit.nobs, "sigma": fit.sigma, "logLik": fit.loglik, "AIC": fit.aic,
          "BIC": fit.bic, crit: fit.objective, "df.residual": fit.df_resid}]
    )  # fmt: skip


def augment(fit, data=None, newdata=None) -> pd.DataFrame:
    from .._inference.influence import cooks_distance, hat_values

    if newdata is not None:
        out = newdata.copy()
        out[".fitted"] = fit.predict(newdata).to_numpy()
        out[".fixed"] = fit.predict(newdata, re_form="~0").to_numpy()
        return out
    if data is not None:
        if not isinstance(data, pd.DataFrame):
            raise ArgumentError("data must be the DataFrame the model was fitted to")
        try:
            out = data.loc[fit.row_index].copy()
        except KeyError:
            raise ArgumentError(
                "data does not hold the rows the model was fitted to (its index labels differ)"
            ) from None
    else:
        from .._sources.formula import parse_formula

        out = pd.DataFrame({parse_formula(fit.formula).response: fit.response},
                           index=fit.row_index)  # fmt: skip
    h = hat_values(fit)
    out[".fitted"] = fit.fitted_values
    out[".resid"] = fit.residuals().to_numpy()
    out[".hat"] = h
    out[".cooksd"] = cooks_distance(fit, h)
    out[".fixed"] = fit.fitted_marginal
    return out
