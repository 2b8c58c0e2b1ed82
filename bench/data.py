"""Seeded data for the benchmarks: random intercept + slope, and crossed random intercepts.

    slope(n, groups):   y = 1 + 0.5 x + b0[g] + b1[g] x + e,
                        (b0, b1) ~ N(0, [[1, .15], [.15, .25]])
    crossed(n, nu, nv): y = 1 + 0.5 x + a[u] + c[v] + e,      a ~ N(0, 1), c ~ N(0, 0.5^2)

with e ~ N(0, 1), x ~ N(0, 1) and groups drawn uniformly.  Grouping columns are int32
codes; `as_strings` turns them into labels as a user's data would carry them.

    kb07(nsubj, nitem): MixedModels.jl's kb07 design, simulated: every subject sees every
        item; three two-level factors s, p, l effect-coded -0.5 / +0.5, each varying
        within subjects and within items (condition (subj + item) mod 8, a Latin square);
        rt = 2000 + 60 s + 120 p - 40 l + 20 s p + 10 s l + b_subj' z + b_item' z + e,
        z = (1, s, p, l), b_subj ~ N(0, S_subj), b_item ~ N(0, S_item) (sd 300, 60, 40, 30
        and 200, 50, 30, 20, all correlations 0.3), e ~ N(0, 600^2)
    fixed_factor(n, ng, nh): y = 1 + 0.5 x + a[g] + c[h] + e, a ~ N(0, 0.5^2), c ~ N(0, 1):
        a fixed factor g with ng levels and a random intercept for h (nh levels)
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


def kb07(nsubj: int, nitem: int, seed: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    subj, item = np.divmod(np.arange(nsubj * nitem), nitem)
    cond = (subj + item) % 8
    s, p, l = (((cond >> k) & 1) - 0.5 for k in range(3))
    z = np.column_stack([np.ones_like(s), s, p, l])
    rt = 2000 + 60 * s + 120 * p - 40 * l + 20 * s * p + 10 * s * l
    for sd, levels, codes in (([300, 60, 40, 30], nsubj, subj), ([200, 50, 30, 20], nitem, item)):
        sd = np.array(sd, dtype=float)
        cov = 0.3 * np.outer(sd, sd) + 0.7 * np.diag(sd**2)
        b = rng.multivariate_normal(np.zeros(4), cov, size=levels)
        rt += np.einsum("ij,ij->i", z, b[codes])
    rt += 600 * rng.standard_normal(len(rt))
    return pd.DataFrame(
        {
            "rt": rt,
            "s": s,
            "p": p,
            "l": l,
            "subj": subj.astype(np.int32),
            "item": item.astype(np.int32),
        }
    )


def fixed_factor(n: int, ng: int, nh: int, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    g = rng.integers(0, ng, n, dtype=np.int32)
    h = rng.integers(0, nh, n, dtype=np.int32)
    x = rng.standard_normal(n)
    y = 1 + 0.5 * x + 0.5 * rng.standard_normal(ng)[g] + rng.standard_normal(nh)[h]
    return pd.DataFrame({"y": y + rng.standard_normal(n), "x": x, "g": g, "h": h})
