"""The small fit's short paths (lmmfast/_pls.py's blocked evaluation, mirror_lower) give the
general paths' numbers bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

import lmmfast
from lmmfast._sources.crossprod import mirror_lower

SLEEP = lmmfast.datasets.load("sleepstudy")


@pytest.mark.parametrize(
    "formula, reml",
    [
        ("Reaction ~ Days + (Days | Subject)", True),
        ("Reaction ~ Days + (Days | Subject)", False),
        ("Reaction ~ Days + (1 | Subject) + (0 + Days | Subject)", True),
        ("Reaction ~ 1 + (1 | Subject)", True),
        ("Reaction ~ 0 + Days + (Days | Subject)", True),
    ],
)
def test_the_blocked_evaluation_is_the_general_one_bit_for_bit(formula, reml):
    dev = lmmfast.lmer(formula, SLEEP, REML=reml)._dev
    assert dev._blocked
    rng = np.random.default_rng(0)
    k = sum(t.ntheta for t in dev.terms)
    for _ in range(20):
        theta = np.abs(rng.standard_normal(k)) + 0.01
        dev._blocked = True
        f1, g1 = dev.value_and_gradient(theta)
        d1 = dev.decompose(theta)
        dev._blocked = False  # the general path: update()'s mirrored C, Ts, gradient()
        f0, g0 = dev.value_and_gradient(theta)
        d0 = dev.decompose(theta)
        assert f1 == f0 and np.array_equal(g1, g0)
        assert np.array_equal(d1.R, d0.R) and np.array_equal(d1.beta, d0.beta)
        assert (d1.ldL2, d1.ldRX2, d1.pwrss) == (d0.ldL2, d0.ldRX2, d0.pwrss)
    dev._blocked = True
    g = dev.value_and_gradient(theta)[1]
    assert g is not dev.value_and_gradient(theta)[1]  # a new gradient array at every call


def test_mirror_lower_is_tril_plus_its_transpose():
    rng = np.random.default_rng(1)
    for n in (1, 2, 3, 7):
        A = rng.standard_normal((n, n))
        A[rng.random((n, n)) < 0.3] = -0.0
        ref = np.tril(A) + np.tril(A, -1).T
        out = mirror_lower(A)
        assert np.array_equal(out, ref) and np.array_equal(np.signbit(out), np.signbit(ref))
