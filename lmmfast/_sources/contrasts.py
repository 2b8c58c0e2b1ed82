"""R's contrast matrices: contr.treatment, contr.SAS, contr.sum, contr.helmert, contr.poly.

Each returns (k x (k-1) matrix, column names as model.matrix appends them to the variable
name): treatment ``recipeB``, sum and helmert ``recipe1``, poly ``o.L o.Q o.C o^4``.
"""

from __future__ import annotations

import numpy as np

from .._errors import ArgumentError

NAMES = ("treatment", "sum", "helmert", "poly", "SAS")


def contrast_name(value, variable: str) -> str:
    """'contr.sum' or 'sum' -> 'sum'; ArgumentError for anything else."""
    name = value.removeprefix("contr.") if isinstance(value, str) else None
    if name not in NAMES:
        raise ArgumentError(
            f"contrasts for {variable!r} must be one of {list(NAMES)} (or 'contr.' + one of "
            f"them), not {value!r}"
        )
    return name


def contrast_matrix(name: str, levels: list[str]) -> tuple[np.ndarray, list[str]]:
    k = len(levels)
    if name == "treatment":
        return np.eye(k)[:, 1:], list(levels[1:])
    if name == "SAS":
        return np.eye(k)[:, :-1], list(levels[:-1])
    index_names = [str(j) for j in range(1, k)]
    if name == "sum":
        return np.vstack([np.eye(k - 1), -np.ones(k - 1)]), index_names
    if name == "helmert":
        C = np.zeros((k, k - 1))
        for j in range(1, k):
            C[:j, j - 1] = -1.0
            C[j, j - 1] = j
        return C, index_names
    if name == "poly":
        return _poly(k)
    raise ValueError(name)


def _poly(k: int) -> tuple[np.ndarray, list[str]]:
    """contr.poly(k): orthonormal polynomials on the scores 1..k (R's make.poly)."""
    y = np.arange(1.0, k + 1) - (k + 1) / 2
    X = np.vander(y, k, increasing=True)
    Q, R = np.linalg.qr(X)
    Z = Q * np.diag(R)
    Z = Z / np.sqrt((Z**2).sum(axis=0))
    names = [".L", ".Q", ".C"] + [f"^{j}" for j in range(4, k)]
    return Z[:, 1:], names[: k - 1]
