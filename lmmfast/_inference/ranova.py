"""ranova(): likelihood-ratio tests of the random-effects terms, as lmerTest's ranova(fit).

Each random-effects term of the formula in turn is reduced or removed and the model
refitted (with the fit's REML or ML criterion, as lmerTest: no refit by ML): a term with
covariates loses each covariate that no other covariate of the term contains, one at a
time ("Days in (Days | Subject)", the reduced term (1 | Subject)); an intercept-only term is
removed ("(1 | Subject)").  With no random term left the model is the linear model, whose
(restricted) log-likelihood is R's logLik.lm(, REML): from the cross-products of [X y],
as everything else.  LRT = 2 (logLik_full - logLik_reduced) on npar_full - npar_reduced df.
The refits reuse the fit's model frame (its rows are not read again).
"""

from __future__ import annotations

import warnings
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy import stats

from .._errors import ArgumentError, NeedsDataError

if TYPE_CHECKING:
    from .._result import LmerFit
from .._sources.formula import _split_plus, parse_formula
from .._sources.frame import lme4_order
from .._sources.rexpr import deparse, parse

COLUMNS = ["npar", "logLik", "AIC", "LRT", "Df", "Pr(>Chisq)"]


def ranova(fit: LmerFit, reduce_terms: bool = True, data: Any = None) -> pd.DataFrame:
    """lmerTest's ranova table: a row "<none>" for the fit, then one per reduced model.
    The reduced models are refits with other random terms, so a loaded or unpickled fit
    needs `data`, the rows it was fitted to."""
    if fit._frame is None:
        if data is None:
            raise NeedsDataError(
                "ranova() refits the model with other random terms, which needs the rows; a "
                "loaded or unpickled fit does not keep them: pass data=<the data it was fitted to>"
            )
        fit = fit._with_data(data, "ranova()")
    frame = fit._frame
    parsed = parse_formula(fit.formula)
    matched = _match_terms(parsed.random, frame.terms)
    rows = [(fit.npar, fit.loglik)]
    names = ["<none>"]
    for k, rt in enumerate(parsed.random):
        term = matched[k]
        lhs = _display(rt.expr)
        label = f"({lhs} | {rt.label})"
        pieces = _pieces(rt.expr)
        others = [t for j, t in enumerate(matched) if j != k]
        if not reduce_terms or not pieces:
            variants = [(label, others)]
        else:
            variants = []
            for piece in _scope(pieces):
                reduced = _reduce(term, piece, frame.n)
                duplicate = any(t.group == reduced.group and t.cnames == reduced.cnames
                                for t in others)  # fmt: skip
                # R's formula drops a term that is already there: (Days || g) less Days
                variants.append(
                    (f"{piece} in {label}", others if duplicate else [*others, reduced])
                )
        for name, terms in variants:
            rows.append(_refit(fit, frame, terms))
            names.append(name)
    npar = np.array([r[0] for r in rows], dtype=float)
    ll = np.array([r[1] for r in rows])
    out = pd.DataFrame({"npar": npar.astype(int), "logLik": ll, "AIC": -2 * ll + 2 * npar},
                       index=names)  # fmt: skip
    lrt = 2 * (ll[0] - ll[1:])
    df = npar[0] - npar[1:]
    out["LRT"] = np.r_[np.nan, lrt]
    out["Df"] = np.r_[np.nan, df]
    p = np.where(df > 0, stats.chi2.sf(lrt, np.where(df > 0, df, 1)), np.nan)
    out["Pr(>Chisq)"] = np.r_[np.nan, p]
    out.attrs["heading"] = "ANOVA-like table for random-effects: Single term deletions"
    return out


def _refit(fit, frame, terms) -> tuple[int, float]:
    from .._lmer import _fit

    if not terms:
        return len(fit.beta) + 1, _lm_loglik(fit)
    new = replace(frame, terms=lme4_order(terms))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # singular reduced models are expected
        f = _fit(fit.formula, new, fit.reml, fit._optimizer)
    return f.npar, f.loglik


def _lm_loglik(fit) -> float:
    """R's logLik.lm(REML = fit.reml) of the fixed-effects model, from X'WX, X'Wy, y'Wy."""
    dev = fit._dev
    R = np.linalg.cholesky(dev.cp.XtXy).T
    d = np.diag(R)
    rss = d[-1] ** 2
    n, p = dev.n, len(d) - 1
    if not fit.reml:
        return 0.5 * (dev.ldW - n * (np.log(2 * np.pi) + 1 - np.log(n) + np.log(rss)))
    N = n - p
    val = 0.5 * (dev.ldW - N * (np.log(2 * np.pi) + 1 - np.log(N) + np.log(rss)))
    return val - float(np.sum(np.log(np.abs(d[:-1]))))


def _match_terms(random, terms) -> list:
    """The frame's term (lme4's order) for each random term of the formula (its order)."""
    left = list(terms)
    out = []
    for rt in random:
        cands = [t for t in left if t.group == rt.label]
        if len(cands) > 1:
            cands = [t for t in cands if _expr_matches(rt.expr, t.cnames)] or cands
        if not cands:
            raise ArgumentError(f"cannot find the random-effects term ({rt.expr} | {rt.label})")
        out.append(cands[0])
        left.remove(cands[0])
    return out


def _intercept(expr: str) -> bool:
    pieces = [p.strip() for _, p in _split_plus(expr, 0, len(expr))]
    return not any(p in ("0", "-1") or p.replace(" ", "").endswith("-1") for p in pieces)


def _pieces(expr: str) -> list[str]:
    """The covariate terms of a left-hand side (not 1, 0, -1)."""
    out = []
    for _, p in _split_plus(expr, 0, len(expr)):
        p = p.strip()
        if p.replace(" ", "").endswith("-1"):
            p = p.replace(" ", "")[:-2]
        if p and p not in ("0", "1", "-1"):
            out.append(_display(p))
    return out


def _expr_matches(expr: str, cnames) -> bool:
    has_int = "(Intercept)" in cnames
    if has_int != _intercept(expr):
        return False
    pieces = _pieces(expr)
    rest = [c for c in cnames if c != "(Intercept)"]
    return all(any(c == p or c.startswith(p) for p in pieces) for c in rest)


def _scope(pieces: list[str]) -> list[str]:
    """R's drop.scope: the pieces no other piece contains (a is in a:b)."""
    sets = [set(p.split(":")) for p in pieces]
    return [p for p, s in zip(pieces, sets) if not any(s < o for o in sets)]


def _reduce(term, piece: str, n: int):
    """The term without the columns of `piece`; (1 | g) if nothing else is left."""
    keep = [
        j for j, c in enumerate(term.cnames)
        if c == "(Intercept)" or not (c == piece or c.startswith(piece))
    ]  # fmt: skip
    if all(term.cnames[j] == "(Intercept)" for j in keep) or not keep:
        cnames, Zcols = ["(Intercept)"], [np.broadcast_to(np.float64(1.0), (n,))]
    else:
        cnames = [term.cnames[j] for j in keep]
        Zcols = [term.Zcols[j] for j in keep]
    return replace(term, cnames=cnames, Zcols=Zcols, spec=None)


def _display(expr: str) -> str:
    """R's spelling of a term's expression, as R deparses it: "0+g" -> "0 + g", ** -> ^."""
    return deparse(parse(expr))
