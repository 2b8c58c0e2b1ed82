"""What the Python runners share: their command line, loading the data, timing, the JSON line.

Every runner is called as

    python bench/_<system>_runner.py DATA FORMULA REML REPEATS GROUPS [--factors F] [--budget S]

DATA is a parquet file, REML 1 or 0, GROUPS and F comma-separated column names.  It
prints one JSON line (the last line of its stdout) with the fit times in seconds, their
median, the objective (REML criterion or ML deviance) and the number of evaluations.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings

import numpy as np
import pandas as pd


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("formula")
    ap.add_argument("reml", type=int, choices=(0, 1))
    ap.add_argument("repeats", type=int)
    ap.add_argument("groups", help="random-effect grouping columns, comma-separated")
    ap.add_argument("--factors", default="", help="categorical fixed-effect columns")
    ap.add_argument(
        "--budget", type=float, default=30.0, help="no further repeat once this many s are spent"
    )
    a = ap.parse_args(argv)
    a.groups = [c for c in a.groups.split(",") if c]
    a.factors = [c for c in a.factors.split(",") if c]
    return a


def load_raw(path: str) -> pd.DataFrame:
    """The cached data as stored: generated grouping columns are int32 codes."""
    return pd.read_parquet(path)


def as_labels(df: pd.DataFrame, cols) -> pd.DataFrame:
    """Categorical columns as strings, the way a user's DataFrame carries them."""
    out = df.copy()
    for c in cols:
        if not pd.api.types.is_string_dtype(out[c]):
            out[c] = "L" + out[c].astype(str)
    return out


def int32_codes(col: pd.Series) -> np.ndarray:
    if pd.api.types.is_integer_dtype(col):
        return col.to_numpy().astype(np.int32, copy=False)
    return pd.factorize(col)[0].astype(np.int32)


def timed(fit, repeats: int, budget: float):
    """Call fit() up to `repeats` times, stopping once `budget` seconds are spent.

    Returns the list of wall times and the last result.
    """
    times, result = [], None
    while len(times) < repeats:
        t0 = time.perf_counter()
        result = fit()
        times.append(time.perf_counter() - t0)
        if sum(times) + times[-1] > budget:
            break
    return times, result


def summary(times) -> dict:
    return {"times": [round(t, 6) for t in times], "time": statistics.median(times)}


def emit(record: dict) -> None:
    """The runner's answer: one JSON line, last on stdout."""
    sys.stdout.write(json.dumps(record, default=_jsonable) + "\n")
    sys.stdout.flush()


def _jsonable(v):
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    return str(v)


def collect_warnings():
    """Record warnings instead of printing them; the runner reports the distinct ones."""
    catcher = warnings.catch_warnings(record=True)
    caught = catcher.__enter__()
    warnings.simplefilter("always")
    return caught


def distinct_warnings(caught, limit: int = 3) -> list[str]:
    seen = []
    for w in caught:
        text = f"{w.category.__name__}: {str(w.message).splitlines()[0][:160]}"
        if text not in seen:
            seen.append(text)
    return seen[:limit]
