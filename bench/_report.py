"""Turn run.py's results into markdown tables and write them into bench/README.md.

Pure Python (no numpy), as run.py.  A result is a dict: case, system, status ("ok",
"failed", "timeout"), rec (the runner's JSON record), peak_mb, error.
"""

from __future__ import annotations

import re
from pathlib import Path

TOL = 1e-6  # relative difference in the objective that counts as disagreement

HEADER = (
    "| case | system | fit s | from arrays s | runs | peak MB | objective | evals "
    "| lmmfast / peer | objective vs lmmfast |"
)
RULE = "|---|---|--:|--:|--:|--:|--:|--:|--:|---|"

SCALING_HEADER = (
    "| n | groups | fit s | from arrays s | runs | evals | one evaluation (ms) "
    "| fit s / eval (ms) | arrays s / eval (ms) | peak MB |"
)
SCALING_RULE = "|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"


def fmt_time(t) -> str:
    if t is None:
        return ""
    return f"{t:.3f}" if t < 10 else f"{t:.1f}"


def fmt_ratio(r: float) -> str:
    return f"{r:.2f}" if r >= 0.1 else f"{r:.2g}"


def fmt_obj(v) -> str:
    return "" if v is None else f"{v:.6f}"


def cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def objective_check(obj: float, ref: float | None, ref_name: str = "lmmfast") -> str:
    """Agreement with the reference objective (lmmfast's); says which is lower if not."""
    if ref is None or obj is None:
        return "no objective to compare with"
    rel = (obj - ref) / max(abs(ref), 1e-300)
    against = "" if ref_name == "lmmfast" else f" with {ref_name} (lmmfast failed)"
    if abs(rel) <= TOL:
        return f"agrees{against} (rel {abs(rel):.1e})"
    side = "peer lower" if rel < 0 else f"{ref_name} lower"
    return f"**DIFFERS**{against} by {abs(rel):.1e} rel: {side}"


def ok_rec(results, case: str, system: str):
    for r in results:
        if r["case"] == case and r["system"] == system and r["status"] == "ok":
            return r["rec"]
    return None


def reference(results, case: str) -> tuple[str, dict | None]:
    """lmmfast's fit, or lme4's where lmmfast failed, as the objective to compare with."""
    for system in ("lmmfast", "lme4"):
        rec = ok_rec(results, case, system)
        if rec is not None:
            return system, rec
    return "", None


def row(r, results) -> str:
    """One table row; failures keep their row, with the reason in the last column."""
    name = f"{r['case']} | {r['system']}"
    peak = f"{r['peak_mb']:.0f}" if r.get("peak_mb") else ""
    if r["status"] != "ok":
        return f"| {name} | {r['status']} | | | {peak} | | | | {cell(r['error'])[:120]} |"
    rec = r["rec"]
    runs = n_runs(rec)
    lmm = ok_rec(results, r["case"], "lmmfast")
    ref_name, ref = reference(results, r["case"])
    if r["system"] == "lmmfast":
        arrays = fmt_time(rec.get("arrays_time"))
        ratio, check = "—", lmmfast_self_check(rec)
    else:
        arrays = ""
        ratio = fmt_ratio(lmm["time"] / rec["time"]) if lmm else ""
        if r["system"] == ref_name:
            check = "reference (lmmfast failed)"
        else:
            check = objective_check(rec["objective"], ref and ref["objective"], ref_name)
    cols = [
        fmt_time(rec["time"]),
        arrays,
        str(runs),
        peak,
        fmt_obj(rec["objective"]),
        str(rec.get("evals", "")),
        ratio,
        check,
    ]
    return f"| {name} | " + " | ".join(cols) + " |"


def lmmfast_self_check(rec) -> str:
    """lmmfast's own row: the arrays fit must reach the DataFrame fit's objective."""
    a = rec.get("arrays_objective")
    if a is None:
        return "reference"
    rel = abs(a - rec["objective"]) / max(abs(rec["objective"]), 1e-300)
    return "reference" if rel <= TOL else f"**arrays fit differs** by {rel:.1e} rel"


def n_runs(rec) -> int:
    times = rec.get("times", [])
    return len(times) if isinstance(times, list) else 1


LOAD_HEADER = " under load s | lmmfast / peer under load |"
LOAD_RULE = "--:|--:|"


def table(results) -> str:
    """The results table; with load columns where a run under load (--load) is present."""
    if not any("load" in r for r in results):
        return "\n".join([HEADER, RULE] + [row(r, results) for r in results])
    lines = [HEADER + LOAD_HEADER, RULE + LOAD_RULE]
    for r in results:
        lines.append(row(r, results) + " " + " | ".join(load_cells(r, results)) + " |")
    return "\n".join(lines)


def load_cells(r, results) -> list[str]:
    """Under load: the mean of the two concurrent runners' median fit times, and lmmfast's
    time under load over the peer's under load."""
    load = r.get("load")
    if not load:
        return ["", ""]
    if load["status"] != "ok":
        return [cell(load["error"])[:60], ""]
    if r["system"] == "lmmfast":
        return [fmt_time(load["time"]), "—"]
    mine = next(
        (x.get("load") for x in results if x["case"] == r["case"] and x["system"] == "lmmfast"),
        None,
    )
    ratio = fmt_ratio(mine["time"] / load["time"]) if mine and mine["status"] == "ok" else ""
    return [fmt_time(load["time"]), ratio]


def details(r) -> list[str]:
    rec = r.get("rec") or {}
    out = []
    if rec.get("optimizer") and r["system"] != "lmmfast":
        out.append(f"optimizer {rec['optimizer']}")
    if rec.get("factorization"):
        out.append(f"factorization {rec['factorization']}")
    out += [f"warning: {w}" for w in rec.get("warnings", [])]
    return [f"{r['system']} {cell(x)}" for x in out]


def notes(results, not_run) -> list[str]:
    """Per case: optimizers, warnings the fits raised, and the systems not run."""
    cases = list(dict.fromkeys([r["case"] for r in results] + [c for c, _, _ in not_run]))
    out = []
    for case in cases:
        items = [x for r in results if r["case"] == case for x in details(r)]
        items += [f"{s} not run: {why}" for c, s, why in not_run if c == case]
        if items:
            out.append(f"- {case}: " + "; ".join(items) + ".")
    return out


def scaling_table(results) -> str:
    lines = [SCALING_HEADER, SCALING_RULE]
    for r in results:
        if r["status"] != "ok":
            lines.append(f"| {r['n']:,} | {r['groups']:,} | {r['status']} | | | | | | | |")
            continue
        rec = r["rec"]
        ev = max(int(rec.get("evals") or 0), 1)
        per = 1e3 * rec["time"] / ev
        aper = 1e3 * rec["arrays_time"] / ev if rec.get("arrays_time") else None
        cols = [
            f"{r['n']:,}",
            f"{r['groups']:,}",
            fmt_time(rec["time"]),
            fmt_time(rec.get("arrays_time")),
            str(n_runs(rec)),
            str(rec.get("evals", "")),
            f"{rec['eval_ms']:.2f}" if rec.get("eval_ms") is not None else "",
            f"{per:.1f}",
            "" if aper is None else f"{aper:.1f}",
            f"{r['peak_mb']:.0f}",
        ]
        lines.append("| " + " | ".join(cols) + " |")
    return "\n".join(lines)


def replace_block(readme: Path, tag: str, body: str) -> None:
    """Put body between <!-- tag:start --> and <!-- tag:end --> (appended if absent)."""
    start, end = f"<!-- {tag}:start -->", f"<!-- {tag}:end -->"
    text = readme.read_text() if readme.exists() else ""
    block = f"{start}\n{body.strip()}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    readme.write_text(text)
