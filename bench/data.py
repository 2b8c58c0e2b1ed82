"""Seeded data for the benchmarks: random intercept + slope, and crossed random intercepts.

    slope(n, groups):   y = 1 + 0.5 x + b0[g] + b1[g] x + e,
                        (b0, b1) ~ N(0, [[1, .15], [.15, .25]])
    crossed(n, nu, nv): y = 1 + 0.5 x + a[u] + c[v] + e,      a ~ N(0, 1), c ~ N(0, 0.5^2)

with e ~ N(0, 1), x ~ N(0, 1) and groups drawn uniformly.  Grouping columns are int32
codes; `as_strings` turns them into labels as a user's data would carry them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).parent
CACHE = HERE / "data"


def slope(n: int, groups: int, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    g = rng.integers(0, groups, n, dtype=np.int32)
    x = rng.standard_normal(n)
    b = rng.multivariate_normal([0, 0], [[1.0, 0.15], [0.15, 0.25]], size=groups)
    y = 1 + 0.5 * x + b[g, 0] + b[g, 1] * x + rng.standard_normal(n)
    return pd.DataFrame({"y": y, "x": x, "g": g})


def crossed(n: int, nu: int, nv: int, seed: int = 2) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    u = rng.integers(0, nu, n, dtype=np.int32)
    v = rng.integers(0, nv, n, dtype=np.int32)
    x = rng.standard_normal(n)
    y = 1 + 0.5 * x + rng.standard_normal(nu)[u] + 0.5 * rng.standard_normal(nv)[v]
    return pd.DataFrame({"y": y + rng.standard_normal(n), "x": x, "u": u, "v": v})


def as_strings(df: pd.DataFrame, cols) -> pd.DataFrame:
    return df.assign(**{c: "L" + df[c].astype(str) for c in cols})
