"""Time statsmodels' MixedLM on one case (one grouping factor only: `y ~ x + (x|g)`).

The lme4 formula is translated: fixed part -> formula, `(x|g)` -> groups="g",
re_formula="~x".  Objective = -2 * llf (the REML criterion under reml=True, as lme4's
REMLcrit).  Evaluations = calls of the model's loglike (score calls are not counted).
Usage as every runner (see _runner_common.py); prints one JSON line.
"""

from __future__ import annotations

import re

import statsmodels
import statsmodels.formula.api as smf

from _runner_common import (
    as_labels,
    collect_warnings,
    distinct_warnings,
    emit,
    load_raw,
    parse_args,
    summary,
    timed,
)

BAR = re.compile(r"\(\s*([^|()]+?)\s*\|\s*([^|()]+?)\s*\)")


def translate(formula: str) -> tuple[str, str, str]:
    """lme4 formula with one random term -> (fixed formula, group column, re_formula)."""
    terms = BAR.findall(formula)
    if len(terms) != 1:
        raise ValueError(f"statsmodels MixedLM takes one grouping factor, not {formula!r}")
    expr, group = terms[0]
    fixed = BAR.sub("", formula)
    fixed = re.sub(r"\+\s*$", "", re.sub(r"\+\s*\+", "+", fixed)).strip()
    return fixed, group, "~" + expr


def counting_fit(df, formula: str, reml: bool, counter: list):
    fixed, group, re_formula = translate(formula)
    model = smf.mixedlm(fixed, df, groups=group, re_formula=re_formula)
    loglike = model.loglike

    def counted(*args, **kwargs):
        counter[0] += 1
        return loglike(*args, **kwargs)

    model.loglike = counted
    return model.fit(reml=reml)


def main() -> None:
    a = parse_args()
    caught = collect_warnings()
    df = as_labels(load_raw(a.data), a.groups + a.factors)
    reml = bool(a.reml)
    counter = [0]

    def fit():
        counter[0] = 0
        return counting_fit(df, a.formula, reml, counter)

    times, res = timed(fit, a.repeats, a.budget)
    record = {"system": "statsmodels", "version": statsmodels.__version__}
    record.update(summary(times))
    record.update(
        objective=float(-2.0 * res.llf),
        evals=counter[0],
        converged=bool(res.converged),
        warnings=distinct_warnings(caught),
    )
    emit(record)


if __name__ == "__main__":
    main()
