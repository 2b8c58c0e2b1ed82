"""summary(): the blocks of lme4's print(summary(fit)), laid out and rounded as lme4 1.1 does.

Digits as lme4's print.summary.merMod with R's default options(digits = 7):
``digits = max(3, 7 - 3) = 4`` for the residual quantiles, the variance components and
the coefficient table; correlations with 2 decimals (random effects) and 3 (fixed).
"""

from __future__ import annotations

import numpy as np

from .rformat import (
    abbreviate,
    char_matrix,
    format_num,
    format_pval,
    named_vector,
    signif_stars,
    zapsmall,
)

DIGITS = 4
MAX_CORR_P = 12  # lme4 prints the correlation of fixed effects only for p <= 12
LEGEND = "---\nSignif. codes:  0 ‘***’ 0.001 ‘**’ 0.01 ‘*’ 0.05 ‘.’ 0.1 ‘ ’ 1"  # noqa: E501


class LmerSummary:
    """lme4's summary of a fit; ``str()`` gives the printout.  With ddf="satterthwaite",
    lmerTest's: df and Pr(>|t|) in the coefficient table."""

    def __init__(self, fit, ddf: str | None = None):
        self.fit = fit
        self.coefficients = fit.coef_table(ddf)  # raises for an unknown ddf
        self.ddf = ddf

    def __str__(self) -> str:
        blocks = [
            self._title(),
            self._criterion(),
            self._residuals(),
            self._random(),
            self._fixed(),
        ]
        corr = self._correlation()
        if corr:
            blocks.append(corr)
        text = "\n\n".join(blocks)
        warn = self._warnings()
        return text + ("\n" + warn if warn else "")

    __repr__ = __str__

    def _repr_html_(self) -> str:
        from .html import summary_html

        return summary_html(self)

    # the printout's cells pass through these two (lmmfast._present.html records them)
    def _table(self, header, rows, right=False) -> list[str]:
        return char_matrix(header, rows, right)

    def _vector(self, names, cells) -> list[str]:
        return named_vector(names, cells)

    def _title(self) -> str:
        fit = self.fit
        method = "REML" if fit.reml else "maximum likelihood "
        if self.ddf is None:
            title = [f"Linear mixed model fit by {method} ['lmerMod']"]
        else:  # lmerTest's title, wrapped by strwrap(78) + cat(fill = TRUE)
            name = "Satterthwaite's" if "satt" in self.ddf.lower() else "Kenward-Roger's"
            if fit.reml:
                title = [
                    f"Linear mixed model fit by REML. t-tests use {name} method [",
                    "lmerModLmerTest]",
                ]
            else:
                title = [
                    f"Linear mixed model fit by maximum likelihood . t-tests use {name}",
                    "  method [lmerModLmerTest]",
                ]
        lines = [*title, f"Formula: {fit.formula}"]
        if fit.data_name:
            lines.append(f"   Data: {fit.data_name}")
        if fit.weights_name:
            lines.append(f"Weights: {fit.weights_name}")
        if fit.offset_name:
            lines.append(f" Offset: {fit.offset_name}")
        return "\n".join(lines)

    def _criterion(self) -> str:
        fit = self.fit
        krylov = getattr(fit.optsummary, "krylov", None)  # method="krylov": its error line
        extra = "" if krylov is None else "\n" + krylov.line()
        if fit.reml:
            crit = f"REML criterion at convergence: {format_num(round(fit.objective, 1))[0]}"
            return crit + extra
        names = ["AIC", "BIC", "logLik", "deviance", "df.resid"]
        vals = [fit.aic, fit.bic, fit.loglik, fit.objective, fit.df_resid]
        cells = [format_num(round(v, 1))[0] for v in vals]
        return "\n".join(line for line in self._vector(names, cells)) + extra

    def _residuals(self) -> str:
        q = np.quantile(self.fit.scaled_residuals, [0, 0.25, 0.5, 0.75, 1])
        cells = format_num(zapsmall(q, DIGITS + 1), DIGITS)
        return "Scaled residuals: \n" + "\n".join(
            self._vector(["Min", "1Q", "Median", "3Q", "Max"], cells)
        )

    def _random(self) -> str:
        fit = self.fit
        vc = fit.varcorr
        groups, names, var, sd, corr_rows = [], [], [], [], []
        maxq = 0
        k = 0
        for t in fit.terms:
            block = vc.iloc[k : k + t.q * (t.q + 1) // 2]
            k += len(block)
            sds = block["sdcor"].to_numpy()[: t.q]
            C = np.eye(t.q)
            for _, r in block.iloc[t.q :].iterrows():
                i, j = t.cnames.index(r["var2"]), t.cnames.index(r["var1"])
                C[i, j] = r["sdcor"]
            for i in range(t.q):
                groups.append(block["grp"].iloc[0] if i == 0 else "")
                names.append(t.cnames[i])
                var.append(block["vcov"].iloc[i])
                sd.append(sds[i])
                corr_rows.append(list(C[i, :i]))
            maxq = max(maxq, t.q)
        groups.append("Residual")
        names.append("")
        var.append(fit.sigma**2)
        sd.append(fit.sigma)
        corr_rows.append([])
        ncorr = maxq - 1
        header = ["", "Groups", "Name", "Variance", "Std.Dev."] + (
            ["Corr"] + [""] * (ncorr - 1) if ncorr else []
        )
        corr_cols = []
        for c in range(ncorr):
            vals = [row[c] if c < len(row) else None for row in corr_rows]
            present = [v for v in vals if v is not None]
            cells = iter(format_num(np.round(present, 2), 2, nsmall=2)) if present else iter(())
            corr_cols.append([next(cells) if v is not None else "" for v in vals])
        vs, ss = format_num(var, DIGITS), format_num(sd, DIGITS)
        rows = [
            ["", groups[i], names[i], vs[i], ss[i], *[col[i] for col in corr_cols]]
            for i in range(len(groups))
        ]
        lines = self._table(header, rows)
        ng = "; ".join(f"{g}, {n}" for g, n in fit.ngroups.items())
        lines.append(f"Number of obs: {fit.nobs}, groups:  {ng}")
        if fit.n_dropped_rows:
            lines.append(f"({fit.n_dropped_rows} observations deleted due to missingness)")
        return "Random effects:\n" + "\n".join(lines)

    def _fixed(self) -> str:
        fit, ct = self.fit, self.coefficients
        est, se, tval = (ct[c].to_numpy() for c in ("Estimate", "Std. Error", "t value"))
        if self.ddf is None:
            return "Fixed effects:\n" + "\n".join(
                coef_table(
                    list(fit.xnames),
                    [est, se],
                    [tval],
                    ["Estimate", "Std. Error", "t value"],
                    table=self._table,
                )
            )
        p = ct["Pr(>|t|)"].to_numpy()
        lines = coef_table(
            list(fit.xnames), [est, se, ct["df"].to_numpy()], [tval],
            ["Estimate", "Std. Error", "df", "t value", "Pr(>|t|)"], pvalues=p,
            table=self._table,
        )  # fmt: skip
        text = "Fixed effects:\n" + "\n".join(lines)
        return text + ("\n" + LEGEND if np.any(p < 0.1) else "")

    def _correlation(self) -> str | None:
        fit = self.fit
        p = len(fit.xnames)
        if p <= 1:
            return None
        if p > MAX_CORR_P:
            return (
                f"Correlation matrix not shown by default, as p = {p} > {MAX_CORR_P}.\n"
                "Use fit.corr_fixef or fit.vcov if you need it"
            )
        R = fit.corr_fixef.to_numpy()
        cells = format_num(np.round(R.ravel(), 3), 7, nsmall=3)
        cells = np.array(cells, dtype=object).reshape(p, p)
        rn = [abbreviate(n, 11) for n in fit.xnames]
        cn = [abbreviate(n, 6) for n in fit.xnames]
        rows = [[rn[i]] + [cells[i, j] if j < i else "" for j in range(p - 1)] for i in range(1, p)]
        return "Correlation of Fixed Effects:\n" + "\n".join(self._table([""] + cn[:-1], rows))

    def _warnings(self) -> str:
        fit = self.fit
        lines = []
        if fit.is_singular or not fit.optsummary.converged:
            code = 0 if fit.optsummary.converged else 1
            status = "OK" if fit.optsummary.converged else fit.optsummary.message
            name = {"LN_BOBYQA": "bobyqa"}.get(fit.optsummary.optimizer, fit.optsummary.optimizer)
            lines.append(f"optimizer ({name}) convergence code: {code} ({status})")
        if fit.is_singular:
            lines.append("boundary (singular) fit: see help('isSingular')")
        return "\n".join(lines) + "\n\n" if lines else ""  # lme4 ends the block with a blank line


def coef_table(names, coef_cols, test_cols, header, pvalues=None, table=char_matrix) -> list[str]:
    """R's printCoefmat: estimate/SE(/df) columns formatted jointly, test statistics, and
    optionally p-values (format.pval) with significance stars."""
    digits = DIGITS
    cs = np.column_stack(coef_cols)
    acs = np.abs(cs[np.isfinite(cs) & (cs != 0)])
    digmin = 1 + np.floor(np.log10([acs.min(), acs.max()])) if acs.size else np.zeros(2)
    dec = int(max(1, *(digits - digmin)))
    formatted = format_num(np.round(cs.ravel(), dec), digits)
    cols = [formatted[k :: cs.shape[1]] for k in range(cs.shape[1])]
    dig_tst = max(1, min(5, digits - 1))
    for t in test_cols:
        cols.append(format_num(np.round(t, dig_tst), digits))
    if pvalues is not None:
        cols.append(format_pval(pvalues))
        if np.any(np.asarray(pvalues) < 0.1):
            cols.append(signif_stars(pvalues))
            header = [*header, ""]
    rows = [[names[i]] + [c[i] for c in cols] for i in range(len(names))]
    return table([""] + header, rows, right=True)
