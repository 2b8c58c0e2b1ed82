"""Seeded generator of the crossed-random-slopes reference designs (issue 8).

usage (from the repository root): python tests/reference/crossed_slopes/make_data.py
writes one CSV per design into tests/reference/crossed_slopes/data/ (arabidopsis.csv is
lme4's Arabidopsis data, exported by refs_crossed_slopes.R, not generated here); the R script
refs_crossed_slopes.R beside it fits them with lme4.  The models are listed in
designs.tsv (id, csv, formula, REML); numbers are written with 17 significant digits
so Python and R read identical values.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent


def _cov(sd, corr):
    sd = np.asarray(sd, dtype=float)
    return np.outer(sd, sd) * np.asarray(corr, dtype=float)


def _exch(k, r):
    return np.full((k, k), r) + (1 - r) * np.eye(k)


def _draw(rng, n, cov):
    """n draws from N(0, cov); cov may be singular (eigen square root)."""
    w, V = np.linalg.eigh(cov)
    return rng.normal(size=(n, len(w))) @ (V * np.sqrt(np.clip(w, 0, None))).T


def crossed(seed, nsubj, nitem, cov_subj, cov_item, sigma=1.0, reps=1, fill=1.0):
    """Every subject sees every item (`reps` times, a fraction `fill` of the pairs kept);
    s, p, l: within-subject and within-item factors coded +-0.5 by a Latin square."""
    rng = np.random.default_rng(seed)
    subj, item = np.meshgrid(np.arange(nsubj), np.arange(nitem), indexing="ij")
    subj, item = np.repeat(subj.ravel(), reps), np.repeat(item.ravel(), reps)
    if fill < 1:
        keep = rng.uniform(size=len(subj)) < fill
        subj, item = subj[keep], item[keep]
    cond = (subj + item + np.arange(len(subj)) // (nsubj * nitem)) % 8
    s, p, ll = ((cond >> k) & 1 for k in range(3))
    X = np.column_stack([np.ones(len(subj)), s - 0.5, p - 0.5, ll - 0.5])
    beta = np.array([2.0, 0.3, -0.2, 0.1])
    bs = _draw(rng, nsubj, cov_subj)
    bi = _draw(rng, nitem, cov_item)
    qs, qi = len(cov_subj), len(cov_item)
    y = X @ beta + 0.05 * X[:, 1] * X[:, 2] + np.sum(X[:, :qs] * bs[subj], axis=1)
    y += np.sum(X[:, :qi] * bi[item], axis=1) + sigma * rng.normal(size=len(subj))
    return pd.DataFrame(
        {"rt": y, "s": X[:, 1], "p": X[:, 2], "l": X[:, 3],
         "subj": [f"S{k:03d}" for k in subj], "item": [f"I{k:03d}" for k in item]}
    )  # fmt: skip


def nested(seed, nschool=30, nclass=4, nper=8):
    """Pupils in classes in schools, a slope x varying at both levels."""
    rng = np.random.default_rng(seed)
    school = np.repeat(np.arange(nschool), nclass * nper)
    klass = np.repeat(np.arange(nschool * nclass), nper)
    x = rng.normal(size=len(school))
    bs = _draw(rng, nschool, _cov([0.8, 0.4], [[1, 0.3], [0.3, 1]]))
    bc = _draw(rng, nschool * nclass, _cov([0.5, 0.3], [[1, -0.4], [-0.4, 1]]))
    y = 1 + 0.5 * x + bs[school, 0] + bs[school, 1] * x + bc[klass, 0] + bc[klass, 1] * x
    y += rng.normal(size=len(x))
    return pd.DataFrame(
        {"y": y, "x": x, "school": [f"sc{k}" for k in school],
         "class": [f"c{k % nclass}" for k in klass]}
    )  # fmt: skip


def ecology(seed, npop=9, ngen=24, n=625):
    """Partly crossed: genotypes nested-ish in populations, a 2x2 treatment a*b varying by
    both (two 4-column terms)."""
    rng = np.random.default_rng(seed)
    gen = rng.integers(0, ngen, n)
    home = gen % npop
    popu = np.where(rng.uniform(size=n) < 0.7, home, rng.integers(0, npop, n))
    a, b = rng.integers(0, 2, n), rng.integers(0, 2, n)
    X = np.column_stack([np.ones(n), a, b, a * b])
    bp = _draw(rng, npop, _cov([0.6, 0.3, 0.2, 0.1], _exch(4, 0.5)))
    bg = _draw(rng, ngen, _cov([0.4, 0.2, 0.05, 0.05], _exch(4, 0.8)))
    y = X @ [1.0, 0.5, -0.3, 0.2] + np.sum(X * bp[popu], 1) + np.sum(X * bg[gen], 1)
    y += 0.7 * rng.normal(size=n)
    return pd.DataFrame(
        {"y": y, "a": a.astype(float), "b": b.astype(float),
         "popu": [f"p{k}" for k in popu], "gen": [f"g{k:02d}" for k in gen]}
    )  # fmt: skip


def random_covs(seed, q=4):
    """Two q x q covariances of random rank 1..q (the fuzzing that found the stalls)."""
    rng = np.random.default_rng(1000 + seed)
    out = []
    for _ in range(2):
        r = rng.integers(1, q + 1)
        A = rng.normal(size=(q, r)) * np.array([0.8, 0.3, 0.25, 0.2])[:q, None]
        out.append(A @ A.T)
    return out


KB_SUBJ = _cov([0.9, 0.25, 0.2, 0.15], _exch(4, 0.6))  # full rank
KB_ITEM_SINGULAR = _cov([0.7, 0.3, 0.0, 0.2], [[1, 0.99, 0, 0.5], [0.99, 1, 0, 0.5],
                                                 [0, 0, 1, 0], [0.5, 0.5, 0, 1]])  # fmt: skip
NEAR = _cov([0.8, 0.4, 0.3, 0.2], _exch(4, 0.97))  # near singular

DATA = {
    "kb07": lambda: crossed(807, 56, 32, KB_SUBJ, KB_ITEM_SINGULAR),
    "kb07_near": lambda: crossed(808, 56, 32, NEAR, NEAR),
    "kb07_full": lambda: crossed(809, 56, 32, KB_SUBJ, _cov([0.6, 0.3, 0.3, 0.25], _exch(4, 0.2))),
    # random low-rank covariances on which the BOBYQA fit stalled 5.17 and 0.073 above lme4
    "kb07_rank_s2": lambda: crossed(2, 56, 32, *random_covs(2)),
    "kb07_rank_s8": lambda: crossed(8, 56, 32, *random_covs(8)),
    "large": lambda: crossed(810, 150, 80, KB_SUBJ, KB_ITEM_SINGULAR, fill=0.5),
    "nested": lambda: nested(811),
    "ecology": lambda: ecology(812),
}

if __name__ == "__main__":
    out = HERE / "data"
    out.mkdir(exist_ok=True)
    for name, make in DATA.items():
        make().to_csv(out / f"{name}.csv", index=False, float_format="%.17g")
