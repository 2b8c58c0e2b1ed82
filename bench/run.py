"""Benchmark lmmfast against lme4 (R), mixedlm and statsmodels; write the table to README.md.

    python bench/run.py [--quick | --new] [--cases a,b] [--repeats N] [--budget S]
                        [--no-lme4] [--no-mixedlm] [--no-statsmodels] [--no-skip]
                        [--load] [--no-readme] [--scaling]

Each system fits each case in its own subprocess (bench/_<system>_runner.py or
bench/lme4_runner.R) on the same cached data file; the runner times the lmer call on
data already in memory and prints one JSON line; this script reads the subprocess's peak
RSS from os.wait4 and prints the table.  This process imports neither numpy nor pandas,
and never holds the data: a child started with vfork inherits its parent's peak RSS.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _report
from cases import CASES, DATA, HERE, SCALING_N, SYSTEMS, Case, by_name, scaling_case

ROOT = HERE.parent
README = HERE / "README.md"
DEFAULT_TIMEOUT = 600.0
RUNNERS = {s: HERE / f"_{s}_runner.py" for s in ("lmmfast", "mixedlm", "statsmodels")}
R_RUNNER = HERE / "lme4_runner.R"
NEVER_WHY = "the model has crossed grouping factors; MixedLM takes one"
SKIP_WHY = "skipped by default (minutes); --no-skip runs it"


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="the small cases only")
    ap.add_argument("--new", action="store_true", help="issue 8's cases only (with --load)")
    ap.add_argument(
        "--load", action="store_true", help="also time two fits at once (two processes)"
    )
    ap.add_argument("--cases", default="", help="comma-separated case names")
    ap.add_argument("--repeats", type=int, default=3, help="fits per system (median reported)")
    ap.add_argument(
        "--budget",
        type=float,
        default=30.0,
        help="seconds of fitting per system and case after which no further repeat starts",
    )
    for s in SYSTEMS[1:]:
        ap.add_argument(f"--no-{s}", action="store_true", help=f"do not run {s}")
    ap.add_argument("--no-skip", action="store_true", help="also run the default-skipped peers")
    ap.add_argument("--no-readme", action="store_true", help="do not write bench/README.md")
    ap.add_argument("--scaling", action="store_true", help="lmmfast per-evaluation scaling")
    a = ap.parse_args(argv)
    a.load = a.load or a.new
    return a


def selected_cases(a) -> list[Case]:
    cases = by_name()
    if a.cases:
        unknown = [c for c in a.cases.split(",") if c not in cases]
        if unknown:
            sys.exit(f"unknown case(s) {unknown}; known: {', '.join(cases)}")
        return [cases[c] for c in a.cases.split(",")]
    if a.new:
        return [c for c in CASES if c.issue8]
    return [c for c in CASES if c.quick or not a.quick]


def plan(case: Case, a) -> tuple[list[str], list[tuple[str, str, str]]]:
    """The systems to run on case, and (case, system, why) for those not run."""
    run, not_run = [], []
    for s in SYSTEMS:
        if s != "lmmfast" and getattr(a, f"no_{s}"):
            continue
        if s in case.never:
            not_run.append((case.name, s, NEVER_WHY))
        elif s in case.skip and not a.no_skip:
            not_run.append((case.name, s, SKIP_WHY))
        else:
            run.append(s)
    return run, not_run


def prepare(case: Case, csv: bool) -> None:
    """Write the case's cached data files in a separate process (see the module doc)."""
    cmd = [sys.executable, str(HERE / "_prepare.py"), case.name, case.source]
    subprocess.run(cmd + (["--csv"] if csv else []), check=True, cwd=HERE)


def command(system: str, case: Case, a) -> list[str]:
    groups, factors = ",".join(case.groups), ",".join(case.factors)
    reml, reps, budget = str(int(case.reml)), str(a.repeats), str(a.budget)
    if system == "lme4":
        csv = str(case.csv)
        return ["Rscript", str(R_RUNNER), csv, case.formula, reml, reps, groups, factors, budget]
    base = [sys.executable, str(RUNNERS[system]), str(case.parquet), case.formula, reml, reps]
    return base + [groups, "--factors", factors, "--budget", budget]


def measured(cmd: list[str], timeout: float) -> dict:
    """Run cmd; its exit status, stdout, stderr, peak RSS (MB, from wait4) and timeout flag."""
    return measured_together(cmd, timeout, copies=1)[0]


def measured_together(cmd: list[str], timeout: float, copies: int) -> list[dict]:
    """Run `copies` instances of cmd at the same time; measured() of each."""
    with contextlib.ExitStack() as stack:
        files = [
            (
                stack.enter_context(tempfile.TemporaryFile()),
                stack.enter_context(tempfile.TemporaryFile()),
            )
            for _ in range(copies)
        ]
        procs = [
            subprocess.Popen(cmd, stdout=o, stderr=e, cwd=ROOT, start_new_session=True)
            for o, e in files
        ]
        t0 = time.monotonic()
        done: dict[int, tuple] = {}
        while len(done) < copies:
            for k, p in enumerate(procs):
                if k in done:
                    continue
                pid, status, usage = os.wait4(p.pid, os.WNOHANG)
                if pid:
                    done[k] = (status, usage, False, time.monotonic() - t0)
                elif time.monotonic() - t0 > timeout:
                    os.killpg(p.pid, signal.SIGKILL)  # the runner's own process group
                    pid, status, usage = os.wait4(p.pid, 0)
                    done[k] = (status, usage, True, time.monotonic() - t0)
            time.sleep(0.05)
        out = []
        for k, (o, e) in enumerate(files):
            status, usage, timed_out, wall = done[k]
            o.seek(0)
            e.seek(0)
            out.append(
                {
                    "rc": os.waitstatus_to_exitcode(status),
                    "stdout": o.read().decode(errors="replace"),
                    "stderr": e.read().decode(errors="replace"),
                    "peak_mb": usage.ru_maxrss / 1024.0,  # KiB on Linux
                    "timed_out": timed_out,
                    "wall_s": wall,
                }
            )
        return out


def last_json(text: str):
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                return None
    return None


def failure_reason(m: dict, timeout: float) -> str:
    if m["timed_out"]:
        return f"killed after {timeout:.0f} s"
    lines = [ln.strip() for ln in m["stderr"].splitlines() if ln.strip()]
    errors = [i for i, ln in enumerate(lines) if ln.startswith("Error")]  # R's error lines
    if errors:
        lines = [" ".join(lines[errors[-1] : errors[-1] + 2])]
    return f"exit {m['rc']}: " + (lines[-1][:200] if lines else "no output")


def run_one(system: str, case: Case, a) -> dict:
    timeout = case.timeouts.get(system, DEFAULT_TIMEOUT)
    m = measured(command(system, case, a), timeout)
    rec = last_json(m["stdout"]) if m["rc"] == 0 else None
    result = {"case": case.name, "system": system, "peak_mb": m["peak_mb"], "rec": rec}
    if rec is None or "objective" not in rec:
        status = "timeout" if m["timed_out"] else "failed"
        result.update(status=status, error=failure_reason(m, timeout))
    else:
        result.update(status="ok", error="")
    if a.load and (system == "lmmfast" or case.load_peers) and result["status"] == "ok":
        result["load"] = under_load(system, case, a, timeout)
    return result


def under_load(system: str, case: Case, a, timeout: float) -> dict:
    """The same runner twice at once: each one's median fit time, and their mean."""
    runs = measured_together(command(system, case, a), timeout, copies=2)
    recs = [last_json(m["stdout"]) if m["rc"] == 0 else None for m in runs]
    if any(r is None or "time" not in r for r in recs):
        bad = next(m for m, r in zip(runs, recs) if r is None or "time" not in r)
        return {"status": "failed", "error": failure_reason(bad, timeout)}
    times = [r["time"] for r in recs]
    return {"status": "ok", "times": times, "time": sum(times) / len(times),
            "objectives": [r["objective"] for r in recs]}  # fmt: skip


def progress(r: dict) -> None:
    rec = r["rec"] or {}
    if r["status"] == "ok":
        what = f"{rec['time']:.3f} s  obj {rec['objective']:.6f}  evals {rec.get('evals')}"
        load = r.get("load")
        if load:
            what += (
                f"  under load {load['time']:.3f} s"
                if load["status"] == "ok"
                else "  load run failed"
            )
    else:
        what = f"{r['status']}: {r['error']}"
    print(f"  {r['system']:<12} {what}  peak {r['peak_mb']:.0f} MB", flush=True)


def run_suite(a) -> tuple[list[dict], list[tuple[str, str, str]]]:
    results, not_run = [], []
    for case in selected_cases(a):
        systems, skipped = plan(case, a)
        not_run += skipped
        print(f"{case.name}: {case.formula}", flush=True)
        prepare(case, csv="lme4" in systems)
        for s in systems:
            results.append(run_one(s, case, a))
            progress(results[-1])
    return results, not_run


def machine() -> dict:
    """Machine and versions, from a subprocess (numpy is imported there, not here)."""
    m = measured([sys.executable, str(HERE / "_machine.py")], 120)
    info = last_json(m["stdout"]) or {}
    info["git"] = git_state()
    return info


def git_state() -> str:
    try:
        run = lambda *c: subprocess.run(  # noqa: E731
            ["git", *c], cwd=ROOT, capture_output=True, text=True, timeout=30
        ).stdout.strip()
        head = run("rev-parse", "--short", "HEAD")
        dirty = run("status", "--porcelain", "--", "lmmfast", "src")
        return head + (" + uncommitted changes in lmmfast/ or src/" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "?"


def now() -> str:
    return dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")


def header(info: dict, results: list[dict], argv: list[str], started: str) -> str:
    v = info.get("versions", {})
    lme4 = next((r["rec"] for r in results if r["system"] == "lme4" and r["rec"]), None)
    lme4_text = f"lme4 {lme4['version']} ({lme4.get('r', 'R')})" if lme4 else "lme4 not run"
    r_blas = f"; R: {lme4['blas']}" if lme4 and lme4.get("blas") else ""
    return "\n".join(
        [
            f"- Command: `{' '.join(['python bench/run.py', *argv])}`, started {started}.",
            f"- Load average (1 min) when the table was made: {os.getloadavg()[0]:.2f}: the "
            "machine's other jobs ran beside the benchmark.",
            f"- Machine: {info.get('nproc', '?')} CPUs ({info.get('cpu', '?')}), "
            f"{info.get('mem_gib', '?')} GiB memory, load average at start "
            f"{info.get('loadavg', float('nan')):.2f}.",
            f"- BLAS: numpy: {info.get('numpy_blas', '?')}; libblas.so.3 (CHOLMOD's): "
            f"{info.get('system_blas', '?')}{r_blas}.",
            f"- Versions: lmmfast {v.get('lmmfast', '?')} (git {info.get('git', '?')}), "
            f"{lme4_text}, mixedlm {v.get('mixedlm', '?')}, statsmodels "
            f"{v.get('statsmodels', '?')}, numpy {v.get('numpy', '?')}, pandas "
            f"{v.get('pandas', '?')}, Python {info.get('python', '?')}.",
        ]
    )


def save_json(path: Path, info: dict, results: list, not_run: list) -> None:
    """The raw records, for a closer look than the table gives (git-ignored)."""
    path.write_text(json.dumps({"machine": info, "results": results, "not_run": not_run}))


def suite(a, argv) -> None:
    started = now()
    info = machine()
    results, not_run = run_suite(a)
    save_json(DATA / "results-latest.json", info, results, not_run)
    body = "\n\n".join(
        [
            header(info, results, argv, started),
            _report.table(results),
            "\n".join(_report.notes(results, not_run)),
        ]
    )
    print("\n" + body)
    if not a.no_readme:
        _report.replace_block(README, "issue8" if a.new else "results", body)
        print(f"\nwritten to {README}")


def scaling(a, argv) -> None:
    started = now()
    info = machine()
    results = []
    for n in SCALING_N:
        case = scaling_case(n)
        print(f"{case.name}: n = {n:,}", flush=True)
        prepare(case, csv=False)
        r = run_one("lmmfast", case, a)
        r.update(n=n, groups=int(case.source.split(",")[-1]))
        progress(r)
        results.append(r)
    body = "\n\n".join([header(info, [], argv, started), _report.scaling_table(results)])
    print("\n" + body)
    if not a.no_readme:
        _report.replace_block(README, "scaling", body)
        print(f"\nwritten to {README}")


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    a = parse_args(argv)
    (scaling if a.scaling else suite)(a, argv)


if __name__ == "__main__":
    main()
