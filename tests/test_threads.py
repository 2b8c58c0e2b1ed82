"""Thread counts (lmmfast/_threads.py): the rule, and results that do not depend on the
caller's thread settings."""

from __future__ import annotations

import threading

import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

import lmmfast
from lmmfast import _threads
from lmmfast._pls import ProfiledDeviance
from lmmfast._sources.formula import parse_formula
from lmmfast._sources.frame import build_frame


def _crossed(n=6000, nu=1500, nv=500, seed=0):
    rng = np.random.default_rng(seed)
    u, v = rng.integers(0, nu, n), rng.integers(0, nv, n)
    x = rng.standard_normal(n)
    y = x + rng.standard_normal(nu)[u] * (1 + 0.3 * x) + 0.5 * rng.standard_normal(nv)[v]
    return pd.DataFrame(
        {"y": y + rng.standard_normal(n), "x": x, "u": u.astype(str), "v": v.astype(str)}
    )


def _fits_agree(a, b):
    assert a.optsummary.feval == b.optsummary.feval
    assert a.objective == b.objective
    np.testing.assert_array_equal(a.theta, b.theta)
    np.testing.assert_array_equal(a.beta, b.beta)


@pytest.mark.parametrize(
    "formula",
    ["y ~ x + (x | u) + (1 | v)", "y ~ x + (1 | u) + (1 | v)", "y ~ x + (x | u)"],
)
def test_results_do_not_depend_on_the_callers_thread_settings(formula):
    """Bit for bit, with the same number of evaluations: default threads, one thread, and
    every BLAS and OpenMP at 2 (a dense Schur complement of order 500 is where OpenBLAS
    threads and rounds differently; without the per-fit limit the evaluation counts of
    the first model differ)."""
    df = _crossed()
    ref = lmmfast.lmer(formula, df)
    with threadpool_limits(1):
        _fits_agree(ref, lmmfast.lmer(formula, df))
    with threadpool_limits(2):
        _fits_agree(ref, lmmfast.lmer(formula, df))


def test_the_callers_limits_are_restored():
    before = [(i["filepath"], i["num_threads"]) for i in threadpool_info()]
    with threadpool_limits(1):
        lmmfast.lmer("y ~ x + (1 | u)", _crossed(n=500, nu=50, nv=10))
        assert all(i["num_threads"] == 1 for i in threadpool_info())
    lmmfast.lmer("y ~ x + (1 | u)", _crossed(n=500, nu=50, nv=10))
    assert [(i["filepath"], i["num_threads"]) for i in threadpool_info()] == before


def test_blas_is_single_threaded_below_the_large_dense_factorizations(monkeypatch):
    monkeypatch.setattr(_threads, "cores", lambda: 16)
    assert _threads.blas_threads(10) == 1
    assert _threads.blas_threads(_threads.BLAS_PARALLEL_ORDER - 1) == 1
    assert _threads.blas_threads(_threads.BLAS_PARALLEL_ORDER) == 2
    assert _threads.blas_threads(10**6) == 16
    assert _threads.kernel_threads(_threads.PARALLEL_ROWS - 1, _threads.PARALLEL_ROWS) == 1
    assert _threads.kernel_threads(_threads.PARALLEL_ROWS, _threads.PARALLEL_ROWS) == 2
    monkeypatch.setattr(_threads, "cores", lambda: 1)
    assert _threads.blas_threads(10**6) == 1
    assert _threads.kernel_threads(10**9, _threads.PARALLEL_ROWS) == 1


def test_dense_order_is_the_largest_dense_block():
    df = _crossed(n=2000, nu=300, nv=40)
    one = build_frame(parse_formula("y ~ x + (x | u)"), df)
    assert _threads.dense_order(one.terms, len(one.xnames)) == 3
    two = build_frame(parse_formula("y ~ x + (1 | u) + (x | v)"), df)
    assert _threads.dense_order(two.terms, len(two.xnames)) == 80  # 40 levels x 2
    same = build_frame(parse_formula("y ~ x + (1 | u) + (0 + x | u)"), df)
    assert _threads.dense_order(same.terms, len(same.xnames)) == 3


def test_evaluations_run_with_one_blas_thread(monkeypatch):
    """Inside the fit, every evaluation sees each BLAS at one thread (default: one per CPU)."""
    seen = []
    real = ProfiledDeviance.decompose

    def spy(self, theta, *rest):
        seen.append({i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"})
        return real(self, theta, *rest)

    monkeypatch.setattr(ProfiledDeviance, "decompose", spy)
    lmmfast.lmer("y ~ x + (1 | u) + (1 | v)", _crossed(n=2000, nu=300, nv=40))
    assert seen and all(s == {1} for s in seen)


def test_the_loaded_libraries_are_scanned_once_per_process(monkeypatch):
    # the scan (threadpoolctl's ThreadpoolController) costs ~35 ms: the fit's thread rule and
    # the optimizer's one-BLAS-thread limit share one controller
    made = []

    class Counting(_threads.ThreadpoolController):
        def __init__(self):
            made.append(1)
            super().__init__()

    monkeypatch.setattr(_threads, "ThreadpoolController", Counting)
    monkeypatch.setattr(_threads, "_controller", None)
    monkeypatch.setattr(_threads, "_split", None)
    for _ in range(2):
        lmmfast.lmer("Reaction ~ Days + (Days | Subject)", lmmfast.datasets.load("sleepstudy"))
    assert made == [1]


def _openblas_counts():
    return [i["num_threads"] for i in threadpool_info() if i["internal_api"] == "openblas"]


def test_a_fit_in_another_thread_keeps_one_blas_thread_when_the_first_fit_ends():
    """OpenBLAS has one thread count per process, and threadpoolctl lets only the first
    thread that set it change it: the first fit's end used to restore the caller's count
    under the fits still running in other threads.  Here fit A starts, B starts, A ends,
    and B must still see one thread; after both the caller's count is back."""
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    seen = {}

    def fit_a():
        with _threads.limit(1):
            a_in.set()
            b_in.wait(10)
        a_out.set()

    def fit_b():
        a_in.wait(10)
        with _threads.limit(1):
            b_in.set()
            a_out.wait(10)
            seen["b"] = _openblas_counts()

    with threadpool_limits(2, user_api="blas"):
        caller = _openblas_counts()
        threads = [threading.Thread(target=fit_a), threading.Thread(target=fit_b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert a_out.is_set() and seen["b"] and set(seen["b"]) == {1}
        assert _openblas_counts() == caller == [2] * len(caller)


def test_a_nested_limit_of_the_only_fit_running_applies_and_is_undone():
    with threadpool_limits(2, user_api="blas"):
        with _threads.limit(2, user_api="blas"):
            assert set(_openblas_counts()) == {2}
            with _threads.limit(1, user_api="blas"):  # the optimizer inside a large fit
                assert set(_openblas_counts()) == {1}
            assert set(_openblas_counts()) == {2}
