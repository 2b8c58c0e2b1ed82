"""Time lmmfast.lmer on one case: on a DataFrame (categorical columns as strings) and
"from arrays" (a dict of numpy arrays, grouping columns int32 codes).

Usage as every runner (see _runner_common.py); prints one JSON line.
"""

from __future__ import annotations

import lmmfast

from _runner_common import (
    as_labels,
    collect_warnings,
    distinct_warnings,
    emit,
    int32_codes,
    load_raw,
    parse_args,
    summary,
    timed,
)


def arrays_of(raw, groups, factors) -> dict:
    """{column: numpy array}: grouping columns int32 codes, factors as string arrays."""
    labelled = as_labels(raw[factors], factors) if factors else raw[[]]
    out = {}
    for c in raw.columns:
        if c in groups:
            out[c] = int32_codes(raw[c])
        elif c in factors:
            out[c] = labelled[c].to_numpy()
        else:
            out[c] = raw[c].to_numpy()
    return out


def timed_lmer(a, data):
    reml = bool(a.reml)
    return timed(lambda: lmmfast.lmer(a.formula, data, REML=reml), a.repeats, a.budget)


def eval_ms(fit, repeats: int = 15) -> float:
    """Median time of one evaluation of the profiled objective at the optimum (the work each
    optimizer step does; it reads the cross-products, not the rows)."""
    import time

    import numpy as np

    dev, theta = fit._dev, fit.theta
    # two points 1 ulp apart: a factor that reuses a repeated theta (the crossed one) must
    # not answer the timing from its last result
    thetas = (theta, np.nextafter(theta, np.inf))
    times = []
    for i in range(repeats):
        t0 = time.perf_counter()
        dev(thetas[i % 2])
        times.append(time.perf_counter() - t0)
    return 1e3 * sorted(times)[len(times) // 2]


def main() -> None:
    a = parse_args()
    caught = collect_warnings()
    raw = load_raw(a.data)
    arrays = arrays_of(raw, a.groups, a.factors)
    times, fit = timed_lmer(a, as_labels(raw, a.groups + a.factors))
    del raw
    atimes, afit = timed_lmer(a, arrays)
    record = {"system": "lmmfast", "version": getattr(lmmfast, "__version__", "?")}
    record.update(summary(times))
    arr = summary(atimes)
    record.update(arrays_times=arr["times"], arrays_time=arr["time"])
    record.update(
        objective=float(fit.objective),
        arrays_objective=float(afit.objective),
        evals=int(fit.optsummary.feval),
        theta=list(map(float, fit.theta)),
        factorization=str(getattr(fit, "factorization", "?")),
        eval_ms=eval_ms(fit),
        warnings=distinct_warnings(caught),
    )
    emit(record)


if __name__ == "__main__":
    main()
