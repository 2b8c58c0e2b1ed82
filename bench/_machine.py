"""Describe the machine and the libraries for the results header; prints one JSON line.

Run by run.py in its own process (it imports numpy, which run.py must not).
"""

from __future__ import annotations

import json
import os
import platform
import sys
from importlib import metadata


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def mem_gib() -> float:
    try:
        with open("/proc/meminfo") as f:
            kib = int(f.readline().split()[1])
        return round(kib / 2**20, 1)
    except (OSError, ValueError, IndexError):
        return float("nan")


def numpy_blas() -> str:
    try:
        import numpy as np

        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return f"{blas.get('name', '?')} {blas.get('version', '')}".strip()
    except Exception as e:  # show_config's layout differs between numpy versions
        return f"? ({type(e).__name__})"


def system_blas() -> str:
    """What libblas.so.3 resolves to: the BLAS of CHOLMOD (and of R, unless R bundles one)."""
    for d in ("/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib"):
        path = os.path.join(d, "libblas.so.3")
        if os.path.exists(path):
            return os.path.realpath(path)
    return "?"


def version(pkg: str) -> str:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return "not installed"


def main() -> None:
    info = {
        "nproc": os.cpu_count(),
        "mem_gib": mem_gib(),
        "cpu": cpu_model(),
        "python": sys.version.split()[0],
        "numpy_blas": numpy_blas(),
        "system_blas": system_blas(),
        "loadavg": os.getloadavg()[0],
        "versions": {
            p: version(p) for p in ("lmmfast", "numpy", "pandas", "mixedlm", "statsmodels")
        },
    }
    print(json.dumps(info))


if __name__ == "__main__":
    main()
