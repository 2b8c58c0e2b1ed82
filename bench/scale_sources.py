"""Scaling figures for the batched sources (issue 11): Parquet streamed, Dask LocalCluster.

    python bench/scale_sources.py parquet --rows 100_000_000 --groups 1_000_000
    python bench/scale_sources.py dask --rows 10_000_000 --groups 100_000

`parquet` writes seeded data (bench/data.py's slope model, y ~ x + (x|g), float64 y and x,
int32 g, rows in random group order) once under --dir, then fits it in a fresh process
that streams the files: end-to-end time, stages and the process's peak RSS.  `dask` fits
the same kind of data (a folder of Parquet files) in memory (pandas.read_parquet + lmer)
and on a distributed.LocalCluster of 2 worker processes (dask.dataframe.read_parquet +
lmer), with the stages, and measures one partition's partial cross-products (bytes, time)
for the paper estimate in bench/README.md.  Each prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import pickle
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
ROOT = HERE.parent
CHUNK = 5_000_000  # rows generated and written at a time
FORMULA = "y ~ x + (x | g)"


def write_parquet(folder: Path, rows: int, groups: int, files: int, seed: int = 1) -> Path:
    """Seeded slope data in `files` Parquet files (row groups of 1M rows), made once."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = folder / f"slope_{rows}_{groups}_{files}"
    done = folder / "_done"
    if done.exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    b = rng.multivariate_normal([0, 0], [[1.0, 0.15], [0.15, 0.25]], size=groups)
    per_file = -(-rows // files)
    for f in range(files):
        lo, hi = f * per_file, min(rows, (f + 1) * per_file)
        with pq.ParquetWriter(folder / f"part{f:04d}.parquet", _schema(pa)) as w:
            for a in range(lo, hi, CHUNK):
                m = min(CHUNK, hi - a)
                g = rng.integers(0, groups, m, dtype=np.int32)
                x = rng.standard_normal(m)
                y = 1 + 0.5 * x + b[g, 0] + b[g, 1] * x + rng.standard_normal(m)
                w.write_table(pa.table({"y": y, "x": x, "g": g}), row_group_size=1 << 20)
    done.write_text("")
    return folder


def _schema(pa):
    return pa.schema([("y", pa.float64()), ("x", pa.float64()), ("g", pa.int32())])


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def fit_parquet(path: str) -> dict:
    """In this process: lmer on the Parquet folder, streamed."""
    sys.path.insert(0, str(ROOT))
    import lmmfast

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = lmmfast.lmer(FORMULA, path)
    total = time.perf_counter() - t0
    st = fit._frame.stages
    return {"source": "parquet (streamed)", "rows": fit.nobs, "groups": fit.ngroups["g"],
            "seconds": total, "levels_pass": st["levels"], "cross_product_pass": st["pass"],
            "pass_in_kernels": st["pass_in_kernels"],
            "optimize_and_package": total - st["levels"] - st["pass"],
            "evaluations": fit.optsummary.feval, "peak_rss_mb": _rss_mb(),
            "cpu_seconds": _cpu_seconds(),
            "objective": fit.objective, "theta": fit.theta.tolist()}  # fmt: skip


def run_parquet(args) -> dict:
    t0 = time.perf_counter()
    folder = write_parquet(Path(args.dir), args.rows, args.groups, args.files)
    made = time.perf_counter() - t0
    out = subprocess.run([sys.executable, __file__, "fit-parquet", str(folder)],
                         capture_output=True, text=True, check=True)  # fmt: skip
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["data_mb_on_disk"] = sum(p.stat().st_size for p in folder.glob("*.parquet")) / 2**20
    res["generate_seconds (not in the fit)"] = made
    return res


def run_dask(args) -> dict:
    import dask.dataframe as dd
    import lmmfast
    import pandas as pd
    from distributed import Client, LocalCluster
    from lmmfast._sources.batched import Layout, Plan, merge_scans
    from lmmfast._sources.formula import parse_formula
    from lmmfast._sources.parquet import ParquetSource

    folder = write_parquet(Path(args.dir), args.rows, args.groups, args.partitions)
    warnings.simplefilter("ignore")
    res = {"rows": args.rows, "groups": args.groups, "partitions": args.partitions}
    t0 = time.perf_counter()
    df = pd.read_parquet(folder)
    t1 = time.perf_counter()
    mem = lmmfast.lmer(FORMULA, df)
    t2 = time.perf_counter()
    res["in_memory"] = {"read_parquet": t1 - t0, "fit": t2 - t1, "objective": mem.objective}
    del df
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, memory_limit="4GiB",
                      dashboard_address=None) as cluster, Client(cluster) as client:  # fmt: skip
        client.run(lambda: __import__("lmmfast"))  # workers import lmmfast before the clock
        ddf = dd.read_parquet(str(folder))
        t0 = time.perf_counter()
        fit = lmmfast.lmer(FORMULA, ddf)
        total = time.perf_counter() - t0
        st = fit._frame.stages
        res["dask_2_workers"] = {
            "seconds": total, "levels_pass": st["levels"], "cross_product_pass": st["pass"],
            "pass_in_kernels (sum over tasks)": st["pass_in_kernels"],
            "optimize_and_package": total - st["levels"] - st["pass"],
            "objective": fit.objective,
            "objective_rel_diff_vs_memory": abs(fit.objective - mem.objective)
            / abs(mem.objective),
        }  # fmt: skip
    # one partition's partial, measured here: its bytes (what a worker sends up the tree),
    # the pass time and the time of one merge
    src = ParquetSource.open(folder / "part0000.parquet")
    src.batch_rows = args.rows  # the whole file: one partition
    parsed = parse_formula(FORMULA)
    layout = Layout(parsed, src.meta, None, None)
    scan = src.reduce(layout.scan, merge_scans, layout.used)
    plan = Plan(layout, scan)
    part_df = next(src.batches(layout.used))
    t0 = time.perf_counter()
    part = plan.partial(part_df)
    t1 = time.perf_counter()
    part.add(part)
    t2 = time.perf_counter()
    res["per_partition"] = {
        "rows": len(part_df), "pass_seconds": t1 - t0, "merge_seconds": t2 - t1,
        "partial_bytes": len(pickle.dumps(part, protocol=5)),
        "levels_scan_bytes": len(pickle.dumps(scan, protocol=5)),
        "plan_bytes": len(pickle.dumps(plan, protocol=5)),
        "input_bytes": int(part_df.memory_usage(index=False).sum()),
    }  # fmt: skip
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("parquet")
    p.add_argument("--rows", type=int, default=100_000_000)
    p.add_argument("--groups", type=int, default=1_000_000)
    p.add_argument("--files", type=int, default=10)
    p.add_argument("--dir", default="/tmp/lmmfast-scale")
    d = sub.add_parser("dask")
    d.add_argument("--rows", type=int, default=10_000_000)
    d.add_argument("--groups", type=int, default=100_000)
    d.add_argument("--partitions", type=int, default=10)
    d.add_argument("--dir", default="/tmp/lmmfast-scale")
    f = sub.add_parser("fit-parquet")
    f.add_argument("path")
    args = ap.parse_args()
    if args.cmd == "fit-parquet":
        print(json.dumps(fit_parquet(args.path)))
        return
    res = run_parquet(args) if args.cmd == "parquet" else run_dask(args)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
