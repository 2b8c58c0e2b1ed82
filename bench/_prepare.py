"""Make a case's cached data files: bench/data/<case>.parquet (Python) and a CSV (R).

    python bench/_prepare.py NAME SOURCE [--csv]

SOURCE is as in cases.Case.source ("rdata:package:name": exported from R by Rscript).
Files already there are kept (the generators are seeded, so a cached file is the same
data).  Run by run.py in its own process, so that run.py never holds the data itself.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
from pathlib import Path

import pandas as pd

import data as gen
from cases import DATA, SHARED_INSTEVAL


def make_frame(source: str) -> pd.DataFrame:
    kind, _, arg = source.partition(":")
    if kind == "dataset":
        import lmmfast

        return lmmfast.datasets.load(arg)
    if kind == "csv":
        path = DATA / arg
        if not path.exists():
            shutil.copyfile(SHARED_INSTEVAL.parent / arg, path)
        return pd.read_csv(path)
    if kind == "rdata":
        return r_dataset(arg)
    sizes = [int(v) for v in arg.split(",")]
    if kind == "slope":
        return gen.slope(*sizes)
    if kind == "crossed":
        return gen.crossed(*sizes)
    if kind == "kb07":
        return gen.kb07(*sizes)
    if kind == "fixedfactor":
        return gen.fixed_factor(*sizes)
    raise ValueError(f"unknown data source {source!r}")


def r_dataset(spec: str) -> pd.DataFrame:
    """An R package's data set ("mlmRev:Chem97"), exported once by Rscript to a CSV."""
    package, name = spec.split(":")
    path = DATA / f"{name}.r.csv"
    if not path.exists():
        tmp = path.with_name(path.name + ".tmp")
        code = f"data({name}, package = '{package}'); write.csv({name}, '{tmp}', row.names = FALSE)"
        subprocess.run(["Rscript", "-e", code], check=True)
        os.replace(tmp, path)
    return pd.read_csv(path)


def write_atomic(path: Path, writer) -> None:
    tmp = path.with_name(path.name + ".tmp")
    writer(tmp)
    os.replace(tmp, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("name")
    ap.add_argument("source")
    ap.add_argument("--csv", action="store_true", help="also write the CSV that R reads")
    a = ap.parse_args()
    DATA.mkdir(exist_ok=True)
    parquet = DATA / f"{a.name}.parquet"
    csv = DATA / (a.source[4:] if a.source.startswith("csv:") else f"{a.name}.csv")
    need_csv = a.csv and not csv.exists()
    if parquet.exists() and not need_csv:
        return
    df = make_frame(a.source)
    if not parquet.exists():
        write_atomic(parquet, lambda p: df.to_parquet(p, index=False))
    if need_csv:
        write_atomic(csv, lambda p: df.to_csv(p, index=False))


if __name__ == "__main__":
    main()
