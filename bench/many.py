"""Many responses, one design (issue 13): lmmfast.lmer_many against a loop of lmmfast.lmer
and a loop of lme4::lmer (R) on a subset of the responses, extrapolated.

    .venv/bin/python bench/many.py                 # both cases
    .venv/bin/python bench/many.py --cases genes   # one of: genes, slopes
    .venv/bin/python bench/many.py --quick         # 1/10 of the responses

Cases (REML, seeded data made here):
  genes   20,000 responses x 500 rows, ~ condition + (1 | individual) + (1 | batch):
          100 individuals x 5 samples, 10 batches assigned at random, 2 conditions
  slopes  2,000 responses x 5,000 rows, ~ time + (1 + time | subject): 100 subjects x 50 times

lmer_many fits all responses (wall-clock, threads = CPUs); the loops fit the first
`subset` responses (each: set the column, call lmer(); R: the same in a loop inside one
Rscript process, timed with proc.time around the loop only), and their time is scaled to
all responses.  Every looped response's objective is checked against lmer_many's.
Without Rscript (or without lme4 in R) the lme4 loop is skipped, with a note saying so.
Prints a markdown table, with the load average (the machine may be shared) and lmer_many's
objective evaluations per response (load-independent: factorizations, mean and max).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import lmmfast
import numpy as np
import pandas as pd

CASES = {
    "genes": dict(
        formula="~ condition + (1 | individual) + (1 | batch)", G=20_000, subset=(100, 100)
    ),  # fmt: skip
    "slopes": dict(formula="~ time + (1 + time | subject)", G=2_000, subset=(20, 20)),
}


def make(case: str, G: int, seed: int = 13):
    rng = np.random.default_rng(seed)
    if case == "genes":
        ind = np.repeat(np.arange(100), 5)
        n = len(ind)
        batch = rng.integers(0, 10, n)
        cond = rng.integers(0, 2, n)
        df = pd.DataFrame({"individual": [f"i{k}" for k in ind], "batch": [f"b{k}" for k in batch],
                           "condition": np.where(cond, "treated", "control")})  # fmt: skip
        sd_i, sd_b = rng.uniform(0, 0.8, G), rng.uniform(0, 0.5, G)
        Y = (rng.normal(size=(100, G)) * sd_i)[ind] + (rng.normal(size=(10, G)) * sd_b)[batch]
        Y += np.outer(cond, rng.normal(0, 0.3, G)) + rng.normal(size=(n, G))
    else:
        subj = np.repeat(np.arange(100), 50)
        t = np.tile(np.linspace(0, 1, 50), 100)
        df = pd.DataFrame({"subject": [f"s{k}" for k in subj], "time": t})
        b0, b1 = rng.normal(size=(100, G)), rng.normal(size=(100, G)) * 0.5
        Y = b0[subj] + b1[subj] * t[:, None] + np.outer(t, rng.normal(size=G))
        Y += rng.normal(size=(len(t), G))
    return df, pd.DataFrame(Y, columns=[f"r{g + 1}" for g in range(G)])


def time_many(formula, df, Y):
    t0 = time.perf_counter()
    many = lmmfast.lmer_many(formula, df, Y)
    return time.perf_counter() - t0, many


def time_lmer_loop(formula, df, Y, k):
    d = df.copy()
    objs = []
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for g in range(k):
            d["y"] = Y.iloc[:, g].to_numpy()
            objs.append(lmmfast.lmer("y " + formula, d).objective)
    return time.perf_counter() - t0, np.array(objs)


R_LOOP = r"""
suppressPackageStartupMessages({library(lme4); library(jsonlite)})
a <- commandArgs(TRUE)
d <- read.csv(a[1]); Y <- as.matrix(read.csv(a[2]))
for (c in strsplit(a[4], ",")[[1]]) d[[c]] <- factor(d[[c]])
f <- as.formula(paste("y", a[3]))
obj <- numeric(ncol(Y))
t0 <- proc.time()[["elapsed"]]
for (g in seq_len(ncol(Y))) {
  d$y <- Y[, g]
  m <- suppressMessages(suppressWarnings(lmer(f, data = d)))
  obj[g] <- REMLcrit(m)
}
el <- proc.time()[["elapsed"]] - t0
cat(toJSON(list(seconds = el, objective = obj), digits = NA, auto_unbox = TRUE), "\n")
"""


def time_lme4_loop(formula, df, Y, k, factors):
    with tempfile.TemporaryDirectory() as tmp:
        dpath, ypath, rpath = (Path(tmp) / n for n in ("d.csv", "y.csv", "loop.R"))
        df.to_csv(dpath, index=False)
        Y.iloc[:, :k].to_csv(ypath, index=False)
        rpath.write_text(R_LOOP)
        out = subprocess.run(
            ["Rscript", str(rpath), str(dpath), str(ypath), formula, ",".join(factors)],
            capture_output=True, text=True, timeout=1800, check=True,
        )  # fmt: skip
        res = json.loads(out.stdout.strip().splitlines()[-1])
        return res["seconds"], np.array(res["objective"])


def lme4_missing() -> str | None:
    """Why the lme4 loop cannot run here, or None."""
    if shutil.which("Rscript") is None:
        return "Rscript not found"
    r = subprocess.run(["Rscript", "-e", "library(lme4); library(jsonlite)"],
                       capture_output=True, text=True)  # fmt: skip
    return None if r.returncode == 0 else "R lacks lme4 or jsonlite"


def evaluations(many) -> tuple[float, int]:
    """Mean and max objective evaluations per fitted response."""
    n = [o.feval for o in many._r.opt if o is not None]
    return (float(np.mean(n)), int(np.max(n))) if n else (float("nan"), 0)


def run(case: str, scale: float, lme4: bool):
    spec = CASES[case]
    G = int(spec["G"] * scale)
    df, Y = make(case, G)
    k_py, k_r = (max(5, int(s * min(1.0, scale * 2))) for s in spec["subset"])
    t_many, many = time_many(spec["formula"], df, Y)
    t_py, obj_py = time_lmer_loop(spec["formula"], df, Y, k_py)
    gap = np.max(np.abs(obj_py - many.objective.to_numpy()[:k_py]) / np.abs(obj_py))
    row = dict(case=case, responses=G, rows=len(df), formula=spec["formula"],
               lmer_many=t_many, per_response_ms=1e3 * t_many / G,
               lmer_loop=t_py / k_py * G, lmer_subset=k_py, lmer_gap=gap,
               converged=int(many.converged.sum()),
               singular=int(many.is_singular.sum()), compiled=int(many._r.compiled.sum()),
               evals_mean=evaluations(many)[0], evals_max=evaluations(many)[1])  # fmt: skip
    if lme4:
        factors = [c for c in df.columns if df[c].dtype == object]
        t_r, obj_r = time_lme4_loop(spec["formula"], df, Y, k_r, factors)
        row.update(lme4_loop=t_r / k_r * G, lme4_subset=k_r,
                   lme4_gap=float(np.max((obj_r - many.objective.to_numpy()[:k_r])
                                         / np.abs(obj_r))))  # fmt: skip
    return row


def table(rows) -> str:
    out = [
        "| case | responses x rows | lmer_many | per response | evaluations per response | "
        "loop of lmmfast.lmer | loop of lme4 | lme4 objective - ours (max, rel.) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lme4 = (f"{r['lme4_loop']:.0f} s (from {r['lme4_subset']})" if "lme4_loop" in r
                else "-")  # fmt: skip
        gap = f"{r['lme4_gap']:.1e}" if "lme4_gap" in r else "-"
        out.append(
            f"| {r['case']} `{r['formula']}` | {r['responses']:,} x {r['rows']:,} | "
            f"{r['lmer_many']:.1f} s | {r['per_response_ms']:.2f} ms | "
            f"{r['evals_mean']:.1f} (max {r['evals_max']}) | "
            f"{r['lmer_loop']:.0f} s (from {r['lmer_subset']}) | {lme4} | "
            f"{gap} |"
        )
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="genes,slopes")
    ap.add_argument("--quick", action="store_true", help="1/10 of the responses")
    ap.add_argument("--no-lme4", action="store_true")
    args = ap.parse_args(argv)
    why = None if args.no_lme4 else lme4_missing()
    if why:
        print(f"lme4 loop skipped: {why}", file=sys.stderr)
    load0 = os.getloadavg()[0]
    rows = []
    for case in args.cases.split(","):
        rows.append(run(case, 0.1 if args.quick else 1.0, not args.no_lme4 and why is None))
        print(json.dumps(rows[-1]), file=sys.stderr)
    skipped = f"; lme4 loop skipped: {why}" if why else ""
    print(
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPUs, "
        f"lmmfast {lmmfast.__version__}, load average (1 min) {load0:.2f} at start, "
        f"{os.getloadavg()[0]:.2f} at end{skipped}"
    )
    print(table(rows))


if __name__ == "__main__":
    main()
