"""Per-evaluation cost of the profiled objective (and its gradient) on the kb07-shaped
maximal model (issue 8): rt ~ 1 + s*p*l + (1+s+p+l|subj) + (1+s+p+l|item), 56 x 32,
352 random effects.

usage: .venv/bin/python bench/per_eval.py [evaluations] [ml|reml] [kb07|insteval|crossed_1m]
Prints wall and process-CPU milliseconds per evaluation (the median and the best of 20
batches): on a machine shared with other work, CPU time is the better measure of the cost
itself, wall time of what a user waits.  crossed_1m: y ~ x + (1|u) + (1|v) on 1M simulated
rows, 20,000 x 2,000 levels (bench/data.py), by the crossed factor (a dense 2,000^2 Schur
complement); use few evaluations (~0.5 s each).  insteval: lme4's InstEval,
y ~ service + (1|s) + (1|d) + (1|dept) (bench/data/InstEval.csv; m = 1,142).
"""

from __future__ import annotations

import itertools
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from lmmfast._factor.crossed import CrossedFactor
from lmmfast._pls import ProfiledDeviance
from lmmfast._sources.crossprod import RowData
from lmmfast._sources.formula import parse_formula
from lmmfast._sources.frame import build_frame
from threadpoolctl import threadpool_limits

import data

DATA = Path(__file__).parents[1] / "tests" / "reference" / "crossed_slopes" / "data" / "kb07.csv"
INSTEVAL = Path(__file__).parent / "data" / "InstEval.csv"
FORMULA = "rt ~ 1 + s*p*l + (1+s+p+l|subj) + (1+s+p+l|item)"


def _objective(reml: bool, case: str = "kb07") -> ProfiledDeviance:
    if case == "kb07":
        frame = build_frame(parse_formula(FORMULA), pd.read_csv(DATA), None, None)
    elif case == "insteval":
        df = data.as_strings(pd.read_csv(INSTEVAL), ("s", "d", "dept", "service"))
        frame = build_frame(parse_formula("y ~ service + (1|s) + (1|d) + (1|dept)"), df, None, None)
    else:  # crossed_1m (bench/cases.py)
        df = data.as_strings(data.crossed(1_000_000, 20_000, 2_000), ("u", "v"))
        frame = build_frame(parse_formula("y ~ x + (1|u) + (1|v)"), df, None, None)
    rows = RowData(frame.terms, frame.Xcols, frame.xnames, frame.y)
    cp = rows.cross_products(None)
    dev = ProfiledDeviance(cp, frame.terms, frame.n, reml, 0.0)
    if case != "kb07":
        dev.factor = CrossedFactor(cp, frame.terms)  # the exact factor, not the iterative one
    return dev


def _time(f, n: int) -> tuple[np.ndarray, np.ndarray]:
    wall, cpu = [], []
    for _ in range(20 if n > 5 else 3):
        w0, c0 = time.perf_counter(), time.process_time()
        for _ in range(n):
            f()
        wall.append((time.perf_counter() - w0) / n * 1e3)
        cpu.append((time.process_time() - c0) / n * 1e3)
    return np.array(wall), np.array(cpu)


def main(n: int = 50, reml: bool = False, case: str = "kb07") -> None:
    threadpool_limits(1, user_api="blas")  # as in a fit (lmmfast/_optimize.py)
    dev = _objective(reml, case)
    theta = np.abs(np.concatenate([t.theta_init() for t in dev.terms]))
    theta += 0.1 * np.random.default_rng(1).uniform(size=len(theta))
    # alternately theta and 1 ulp above: the crossed factor reuses a repeated theta
    at = itertools.cycle([theta, np.nextafter(theta, np.inf)])
    vg = dev.value_and_gradient
    for name, f in (("objective", lambda: dev(next(at))),
                    ("objective + gradient", lambda: vg(next(at)))):  # fmt: skip
        f()
        wall, cpu = _time(f, n)
        print(
            f"{name:22s} wall {np.median(wall):.3f} ms (best {wall.min():.3f}), "
            f"cpu {np.median(cpu):.3f} ms (best {cpu.min():.3f})"
        )


if __name__ == "__main__":
    args = sys.argv[1:]
    main(int(args[0]) if args else 50, len(args) > 1 and args[1] == "reml",
         args[2] if len(args) > 2 else "kb07")  # fmt: skip
