"""Dropped fixed-effect columns (lmmfast/_rank.py): lme4's choice, in one factorization."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import lmmfast
from lmmfast._rank import BLOCK, independent_columns

REF = Path(__file__).parent / "reference"
CASES = json.loads((REF / "rank_drop.json").read_text())  # made by reference/rank_drop.R


def by_column(XtX: np.ndarray, tol: float = 1e-7) -> np.ndarray:
    """The method before (one dense solve per column): the oracle for the blocked one."""
    kept: list[int] = []
    L = np.zeros_like(XtX)
    for j in range(len(XtX)):
        if XtX[j, j] <= 0:
            continue
        k = len(kept)
        lj = np.linalg.solve(L[:k, :k], XtX[kept, j]) if k else np.zeros(0)
        resid = XtX[j, j] - lj @ lj
        if resid <= tol**2 * XtX[j, j]:
            continue
        L[k, :k], L[k, k] = lj, np.sqrt(resid)
        kept.append(j)
    return np.array(kept, dtype=np.int64)


@pytest.mark.parametrize("case", sorted(CASES))
def test_dropped_columns_are_lme4s(case):
    """lme4 1.1-31 (rank_drop.R): names(fixef(fit)) and the dropped columns, exactly."""
    ref = CASES[case]
    df = pd.read_csv(REF / "rank_drop.csv")
    formula = ref["formula"].replace("\n", " ")
    with pytest.warns(lmmfast.RankDeficiencyWarning):
        fit = lmmfast.lmer(formula, df)
    assert list(fit.xnames) == ref["kept"]
    assert sorted(fit.dropped_columns) == sorted(ref["dropped"])


def _deficient_design(rng, n: int, p: int, ndep: int, zero: int = 0) -> np.ndarray:
    X = rng.standard_normal((n, p))
    X[:, 0] = 1.0
    X[:, rng.choice(np.arange(1, p), zero, replace=False)] = 0.0
    for j in np.sort(rng.choice(np.arange(2, p), ndep, replace=False)):  # of earlier columns
        X[:, j] = X[:, rng.choice(j, 3)] @ rng.standard_normal(3)
    return X


@pytest.mark.parametrize("seed", range(6))
def test_blocked_factorization_matches_the_per_column_method(seed):
    """Dependencies inside a block and across block boundaries, zero columns, scales far apart."""
    rng = np.random.default_rng(seed)
    p = int(rng.integers(BLOCK // 2, 3 * BLOCK + 7))
    X = _deficient_design(rng, 2 * p + 10, p, ndep=p // 5, zero=2) * np.exp(rng.uniform(-6, 6, p))
    kept = independent_columns(X.T @ X)
    np.testing.assert_array_equal(kept, by_column(X.T @ X))
    assert len(kept) == np.linalg.matrix_rank(X) < p


def test_many_level_factor_keeps_the_first_columns():
    """A 200-level indicator block with the intercept: the last level of the factor that
    makes the intercept a combination of the others is the one dropped (as dqrdc2 does)."""
    rng = np.random.default_rng(5)
    n, k = 2000, 200
    g = np.arange(n) % k
    X = np.column_stack([np.ones(n), rng.standard_normal(n), np.eye(k)[g]])
    kept = independent_columns(X.T @ X)
    np.testing.assert_array_equal(kept, np.arange(k + 1))
    np.testing.assert_array_equal(kept, by_column(X.T @ X))


@pytest.mark.parametrize("seed", range(4))
def test_few_columns_in_python_floats_decide_as_the_arrays(seed):
    """_small (p <= SMALL, Python floats) against the array path (_factor_block) on near-
    dependent, zero, exactly dependent and badly scaled columns: the same columns kept."""
    from lmmfast._rank import SMALL, _factor_block, _small

    rng = np.random.default_rng(seed)
    for _ in range(200):
        p = int(rng.integers(1, SMALL + 1))
        X = rng.standard_normal((30, p)) * 10.0 ** rng.integers(-6, 7, p)
        if p > 1 and rng.random() < 0.6:  # a column (nearly) a combination of the others
            j = int(rng.integers(1, p))
            X[:, j] = X[:, :j] @ rng.standard_normal(j) + rng.choice([0, 1e-9, 1e-7, 1e-5]) * X[
                :, 0
            ] * rng.standard_normal(30)
        if rng.random() < 0.2:
            X[:, int(rng.integers(p))] = 0.0
        XtX = X.T @ X
        d = np.sqrt(np.diag(XtX).clip(min=0.0))
        inv = np.divide(1.0, d, out=np.zeros(p), where=d > 0)
        arrays = _factor_block(XtX * inv[:, None] * inv[None, :], (d > 0).astype(float), 1e-7)
        assert _small(XtX.tolist(), 1e-7) == arrays.tolist()
