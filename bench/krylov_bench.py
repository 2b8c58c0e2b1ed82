"""The MovieLens-shaped bench row of issue 12: rating ~ 1 + (1|user) + (1|movie), ML.

    .venv/bin/python bench/krylov_bench.py --size tenth --methods krylov,exact-dense,exact
    .venv/bin/python bench/krylov_bench.py --size full --methods krylov    # 32M rows, ~4 GB
    .venv/bin/python bench/krylov_bench.py --exact-at bench/results/krylov_tenth.json
    .venv/bin/python bench/krylov_bench.py --verify 1m    # krylov vs a full exact fit
    .venv/bin/python bench/krylov_bench.py --verify 10m --exact-newton   # exact Newton step

--verify: y ~ x + (1|u) + (1|m) on random distinct pairs where the exact method runs:
"1m" 1M rows, 20k x 2k levels (tests/test_krylov.py's generator; the exact fit takes
minutes, too long for the tests); "10m" 10M rows, 100k x 10k (the exact fit: CHOLMOD or a
10k dense Schur complement, an hour or more).  Both fits in this process, ML.

exact: lmer's method="exact" (CHOLMOD for 8.4k movies); exact-dense: the exact crossed
factor (dense Schur complement, analytic gradient) with its 4000-effect limit lifted.
Each method runs in its own process (peak RSS of that process: data generation included,
reported separately as the RSS before the fit).  Prints one JSON line per method and a
comparison; with --out, writes them to that file.  Data: bench/movielens.py, seeded.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent


def child(size: str, method: str, seed: int, genres: bool, reml: bool) -> dict:
    sys.path.insert(0, str(HERE))
    import lmmfast
    import numpy as np

    import movielens

    t0 = time.perf_counter()
    df = (movielens.full if size == "full" else movielens.tenth)(seed=seed, genres=genres)
    gen_s = time.perf_counter() - t0
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if method == "exact-dense":  # the exact crossed factor past its 4000-effect default
        from lmmfast._factor import crossed

        crossed.MAX_DENSE = 10**9
    t0, c0 = time.perf_counter(), time.process_time()
    fit = lmmfast.lmer("rating ~ 1 + (1 | user) + (1 | movie)", df, REML=reml,
                       method="exact" if method.startswith("exact") else method)  # fmt: skip
    fit_s, cpu_s = time.perf_counter() - t0, time.process_time() - c0
    out = {
        "size": size, "method": method, "genres": genres, "reml": reml, "seed": seed,
        "rows": len(df), "users": int(df.user.cat.categories.size),
        "movies": int(df.movie.cat.categories.size), "generate_s": round(gen_s, 1),
        "fit_s": round(fit_s, 1), "fit_cpu_s": round(cpu_s, 1), "peak_rss_mb": round(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "rss_before_fit_mb": round(rss_before), "factorization": fit.factorization,
        "theta": fit.theta.tolist(), "beta": fit.beta.tolist(), "sigma": fit.sigma,
        "objective": fit.objective, "evaluations": fit.optsummary.feval,
        "converged": bool(fit.optsummary.converged),
        "load_average_after_fit": [round(x, 2) for x in os.getloadavg()],
    }  # fmt: skip
    rep = fit.optsummary.krylov
    if rep is not None:
        out.update(
            objective_fresh=rep.objective, objective_se=rep.objective_se,
            theta_se_approx=rep.theta_se_approx.tolist(),
            theta_se_stat=rep.theta_se_stat.tolist(), pwrss_bound=rep.pwrss_bound,
            factor_evaluations=rep.evaluations, cg_per_eval=rep.cg_iterations,
            lanczos_per_eval=rep.lanczos_steps, deflated=rep.deflated, probes=rep.probes,
            tolerance=rep.tolerance, fit_probes=rep.fit_probes,
            logdet_bracket=list(rep.logdet_bracket),
        )  # fmt: skip
    out["ranef_movie_first"] = np.asarray(fit.ranef["movie"].iloc[:3, 0]).tolist()
    return out


def exact_at(size: str, seed: int, genres: bool, reml: bool, theta) -> dict:
    """One exact evaluation (dense Schur complement, analytic gradient) at the Krylov fit's
    theta: the exact objective there, beta and sigma, and the Newton step to the exact
    optimum, -H^{-1} g (a full exact fit at this size takes over an hour on the shared
    machine)."""
    sys.path.insert(0, str(HERE))
    import numpy as np
    from lmmfast._factor import crossed
    from lmmfast._pls import ProfiledDeviance
    from lmmfast._sources.crossprod import RowData
    from lmmfast._sources.formula import parse_formula
    from lmmfast._sources.frame import build_frame

    import movielens

    crossed.MAX_DENSE = 10**9
    df = (movielens.full if size == "full" else movielens.tenth)(seed=seed, genres=genres)
    frame = build_frame(parse_formula("rating ~ 1 + (1 | user) + (1 | movie)"), df, None, None)
    cp = RowData(frame.terms, frame.Xcols, frame.xnames, frame.y).cross_products(None)
    dev = ProfiledDeviance(cp, frame.terms, frame.n, reml, 0.0, method="exact")
    t0 = time.perf_counter()
    theta = np.asarray(theta)
    value, g = dev.value_and_gradient(theta)
    one = time.perf_counter() - t0
    dec = dev.decompose(theta)
    h = 1e-4 * theta
    H = np.zeros((2, 2))
    for i in range(2):
        e = h[i] * np.eye(2)[i]
        H[:, i] = dev.value_and_gradient(theta + e)[1] - dev.value_and_gradient(theta - e)[1]
        H[:, i] /= 2 * h[i]
    H = 0.5 * (H + H.T)
    step = -np.linalg.solve(H, g)
    return {"method": "exact-at-krylov", "factorization": dev.factorization,
            "objective_at_krylov_theta": value, "gradient": g.tolist(),
            "newton_step_to_exact_optimum": step.tolist(),
            "theta_exact_estimate": (theta + step).tolist(),
            "objective_decrease_to_optimum": float(0.5 * g @ -step),
            "beta": dec.beta.tolist(), "sigma": dev.sigma(dec),
            "seconds_per_exact_evaluation": round(one, 1)}  # fmt: skip


VERIFY = {"1m": (1_000_000, 20_000, 2_000), "10m": (10_000_000, 100_000, 10_000)}


def verify(case: str, seed: int) -> dict:
    """Krylov and exact fits of one design; theta, sigma, beta relative differences and the
    fresh objective's distance from the exact optimum in its reported SEs."""
    sys.path.insert(0, str(HERE.parent / "tests"))
    import lmmfast
    import numpy as np
    from test_krylov import crossed

    n, nu, nm = VERIFY[case]
    df = crossed(n, nu, nm, seed=11 + seed, distinct=True)
    out = {"verify": case, "rows": n, "levels": [nu, nm]}
    fits = {}
    for method in ("krylov", "exact"):
        t0 = time.perf_counter()
        fits[method] = fit = lmmfast.lmer("y ~ x + (1 | u) + (1 | m)", df, REML=False,
                                          method=method)  # fmt: skip
        out[method] = {"fit_s": round(time.perf_counter() - t0, 1),
                       "factorization": fit.factorization, "theta": fit.theta.tolist(),
                       "sigma": fit.sigma, "beta": fit.beta.tolist(),
                       "objective": fit.objective}  # fmt: skip
    k, e = fits["krylov"], fits["exact"]
    rep = k.optsummary.krylov
    out["krylov"].update(
        objective_fresh=rep.objective,
        objective_se=rep.objective_se,
        logdet_bracket=list(rep.logdet_bracket),
        evaluations=rep.evaluations,
    )
    out["relative_difference"] = {
        "theta": float(np.max(np.abs(k.theta / e.theta - 1))),
        "sigma": abs(k.sigma / e.sigma - 1),
        "beta": float(np.max(np.abs(k.beta / e.beta - 1))),
    }
    out["objective_fresh_minus_exact_in_se"] = (rep.objective - e.objective) / rep.objective_se
    return out


def verify_newton(case: str, seed: int) -> dict:
    """--verify CASE --exact-newton: the Krylov fit, then the exact objective and gradient
    at its theta (dense Schur complement), one Newton step there with the Krylov fit's
    Hessian (opt.hessian, from gradient differences under common probes) and the exact
    objective and gradient at that point: an exact fit started at the Krylov optimum, two
    exact evaluations instead of a whole fit (the 10M case: an hour or more)."""
    sys.path.insert(0, str(HERE.parent / "tests"))
    import lmmfast
    import numpy as np
    from lmmfast._factor import crossed as crossed_factor
    from lmmfast._pls import ProfiledDeviance
    from lmmfast._sources.crossprod import RowData
    from lmmfast._sources.formula import parse_formula
    from lmmfast._sources.frame import build_frame
    from test_krylov import crossed

    n, nu, nm = VERIFY[case]
    df = crossed(n, nu, nm, seed=11 + seed, distinct=True)
    formula = "y ~ x + (1 | u) + (1 | m)"
    t0 = time.perf_counter()
    k = lmmfast.lmer(formula, df, REML=False, method="krylov")
    rep = k.optsummary.krylov
    out = {"verify": case, "rows": n, "levels": [nu, nm], "mode": "exact Newton step from krylov",
           "krylov": {"fit_s": round(time.perf_counter() - t0, 1), "theta": k.theta.tolist(),
                      "sigma": k.sigma, "beta": k.beta.tolist(), "objective": k.objective,
                      "objective_fresh": rep.objective, "objective_se": rep.objective_se,
                      "evaluations": rep.evaluations, "cg_per_eval": rep.cg_iterations,
                      "lanczos_per_eval": rep.lanczos_steps}}  # fmt: skip
    H = np.asarray(k.optsummary.hessian)
    crossed_factor.MAX_DENSE = 10**9
    frame = build_frame(parse_formula(formula), df, None, None)
    cp = RowData(frame.terms, frame.Xcols, frame.xnames, frame.y).cross_products(None)
    del df, k
    dev = ProfiledDeviance(cp, frame.terms, frame.n, False, 0.0, method="exact")
    theta = np.asarray(out["krylov"]["theta"])
    t0 = time.perf_counter()
    v0, g0 = dev.value_and_gradient(theta)
    per = time.perf_counter() - t0
    step = -np.linalg.solve(H, g0)
    v1, g1 = dev.value_and_gradient(theta + step)
    dec = dev.decompose(theta + step)
    ex = {"factorization": dev.factorization, "seconds_per_evaluation": round(per, 1),
          "objective_at_krylov_theta": v0, "gradient_at_krylov_theta": g0.tolist(),
          "theta": (theta + step).tolist(), "objective": v1, "gradient": g1.tolist(),
          "newton_decrement_after": float(0.5 * g1 @ np.linalg.solve(H, g1)),
          "sigma": dev.sigma(dec), "beta": dec.beta.tolist()}  # fmt: skip
    out["exact"] = ex
    kr = out["krylov"]
    out["relative_difference"] = {
        "theta": float(np.max(np.abs(theta / (theta + step) - 1))),
        "sigma": abs(kr["sigma"] / ex["sigma"] - 1),
        "beta": float(np.max(np.abs(np.asarray(kr["beta"]) / dec.beta - 1))),
    }
    out["objective_fresh_minus_exact_in_se"] = (rep.objective - v1) / rep.objective_se
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", choices=["tenth", "full"], default="tenth")
    ap.add_argument("--methods", default="krylov,exact")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--genres", action="store_true", help="add a user x genre taste term")
    ap.add_argument("--reml", action="store_true")
    ap.add_argument("--out", help="write the JSON records here")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--exact-at", help="JSON file of a krylov run: one exact evaluation there")
    ap.add_argument("--verify", choices=sorted(VERIFY), help="krylov vs exact, both fitted")
    ap.add_argument(
        "--exact-newton",
        action="store_true",
        help="with --verify: exact Newton step from the krylov optimum, no exact fit",
    )
    a = ap.parse_args(argv)
    if a.verify and a.exact_newton:
        rec = verify_newton(a.verify, a.seed)
        print(json.dumps(rec))
        if a.out:
            Path(a.out).write_text(json.dumps(rec, indent=1) + "\n")
        return
    if a.verify:
        print(json.dumps(verify(a.verify, a.seed)))
        return
    if a.exact_at:
        rec = next(
            r for r in json.loads(Path(a.exact_at).read_text()) if r.get("method") == "krylov"
        )
        out = exact_at(rec["size"], rec["seed"], rec["genres"], rec["reml"], rec["theta"])
        step = out["newton_step_to_exact_optimum"]
        k = {"objective_fresh_minus_exact_in_se":
             (rec["objective_fresh"] - out["objective_at_krylov_theta"]) / rec["objective_se"],
             "theta_relative_to_exact_optimum": [
                 abs(d / (t + d)) for t, d in zip(rec["theta"], step)],
             "beta_relative": abs(rec["beta"][0] / out["beta"][0] - 1),
             "sigma_relative": abs(rec["sigma"] / out["sigma"] - 1)}  # fmt: skip
        out["comparison"] = k
        print(json.dumps(out))
        Path(a.exact_at).with_suffix(".exact.json").write_text(json.dumps(out, indent=1) + "\n")
        return
    if a.child:
        print(json.dumps(child(a.size, a.child, a.seed, a.genres, a.reml)))
        return
    records = []
    for method in a.methods.split(","):
        cmd = [sys.executable, __file__, "--size", a.size, "--seed", str(a.seed), "--child", method]
        cmd += ["--genres"] * a.genres + ["--reml"] * a.reml
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            records.append({"method": method, "error": res.stderr[-2000:]})
        else:
            records.append(json.loads(res.stdout.strip().splitlines()[-1]))
        print(json.dumps(records[-1]), flush=True)
    ok = {r["method"]: r for r in records if "error" not in r}
    for name in ("exact-dense", "exact"):
        if "krylov" not in ok or name not in ok:
            continue
        k, e = ok["krylov"], ok[name]
        rel = {
            "theta": max(abs(x / y - 1) for x, y in zip(k["theta"], e["theta"])),
            "beta": max(abs(x / y - 1) for x, y in zip(k["beta"], e["beta"])),
            "sigma": abs(k["sigma"] / e["sigma"] - 1),
        }
        z = (k["objective_fresh"] - e["objective"]) / k["objective_se"]
        cmp = {"against": name, "relative_difference": rel, "objective_fresh_minus_exact_in_se": z,
               "objective_fit_minus_exact": k["objective"] - e["objective"],
               "speedup": e["fit_s"] / k["fit_s"]}  # fmt: skip
        records.append({"comparison": cmp})
        print(json.dumps(records[-1]))
    if a.out:
        Path(a.out).write_text(json.dumps(records, indent=1) + "\n")


if __name__ == "__main__":
    main()
