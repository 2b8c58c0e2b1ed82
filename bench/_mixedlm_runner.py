"""Time mixedlm.lmer (PyPI mixedlm, an lme4 port with a Rust core) on one case.

Categorical columns are strings, as mixedlm takes grouping factors; its default
optimizer is kept (it picks one itself: L-BFGS-B or COBYQA, reported as "optimizer").
Usage as every runner (see _runner_common.py); prints one JSON line.
"""

from __future__ import annotations

import mixedlm

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


def objective(res, reml: bool) -> float:
    """REML criterion or ML deviance; REMLcrit is a method in mixedlm 1.3."""
    crit = res.REMLcrit if reml else res.deviance
    return float(crit() if callable(crit) else crit)


def main() -> None:
    a = parse_args()
    caught = collect_warnings()
    df = as_labels(load_raw(a.data), a.groups + a.factors)
    reml = bool(a.reml)
    times, res = timed(lambda: mixedlm.lmer(a.formula, df, REML=reml), a.repeats, a.budget)
    record = {"system": "mixedlm", "version": getattr(mixedlm, "__version__", "?")}
    record.update(summary(times))
    record.update(
        objective=objective(res, reml),
        evals=int(res.function_evals),
        theta=list(map(float, res.theta)),
        optimizer=str(getattr(res, "optimizer", "?")),
        converged=bool(getattr(res, "converged", True)),
        warnings=distinct_warnings(caught),
    )
    emit(record)


if __name__ == "__main__":
    main()
