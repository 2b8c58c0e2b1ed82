"""Long-running and concurrent use: inputs untouched, threads deterministic, no leaks."""

import gc
import resource
import threading
import tracemalloc
import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import load_reference_data

import lmmfast


def test_nothing_the_caller_passed_is_modified(tmp_path):
    df = load_reference_data("sleepstudy").assign(w=np.linspace(0.5, 2, 180), o=0.1)
    df.loc[3, "Reaction"] = np.nan
    arrays = {"y": df.Reaction.fillna(0).to_numpy(), "x": df.Days.to_numpy(dtype=float),
              "g": df.Subject.astype(int).to_numpy()}  # fmt: skip
    w = df.w.to_numpy().copy()
    before_df, before_arrays, before_w = (
        df.copy(deep=True),
        {k: v.copy() for k, v in arrays.items()},
        w.copy(),
    )
    formula = "Reaction ~ Days + (Days | Subject)"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = lmmfast.lmer(formula, df, weights=w, offset="o")
        fit2 = lmmfast.lmer("y ~ x + (1 | g)", arrays)
        new = df.head(20)
        fit.predict(new)
        fit.predict(new, re_form="~0")
        fit.residuals("pearson", scaled=True)
        fit.ranef_table(), fit.coef(), fit.icc(), fit.cond_var
        fit.confint("wald"), fit.confint("boot", nsim=3, seed=1)
        fit.coef_table("satterthwaite"), str(fit.summary(ddf="satterthwaite"))
        fit.simulate(2, seed=1), fit.refit(fit.response)
        lmmfast.anova(fit2, lmmfast.lmer("y ~ x + (x | g)", arrays))
        fit.save(tmp_path / "f.npz")
        lmmfast.load(tmp_path / "f.npz").predict(new)
    pd.testing.assert_frame_equal(df, before_df)
    for k in arrays:
        np.testing.assert_array_equal(arrays[k], before_arrays[k])
    np.testing.assert_array_equal(w, before_w)
    assert formula == "Reaction ~ Days + (Days | Subject)"


MODELS = [
    ("Reaction ~ Days + (Days | Subject)", "sleepstudy"),
    ("diameter ~ 1 + (1 | plate) + (1 | sample)", "penicillin"),
    ("strength ~ 1 + (1 | batch/cask)", "pastes"),
    ("angle ~ recipe * temp + (1 | recipe:replicate)", "cake"),
]


def _signature(fit):
    return (fit.objective, fit.theta.tobytes(), fit.beta.tobytes(), fit.fitted_values.tobytes())


def test_fits_from_two_threads_equal_sequential_fits_to_rounding():
    data = {d: load_reference_data(d) for _, d in MODELS}
    sequential = [_signature(lmmfast.lmer(f, data[d])) for f, d in MODELS]
    results = [None] * (2 * len(MODELS))
    big = pd.DataFrame(
        {
            "y": np.random.default_rng(0).normal(size=300_000),
            "x": np.random.default_rng(1).normal(size=300_000),
            "g": np.arange(300_000) % 30_000,
        }
    )  # fmt: skip  (2 threads inside)
    big_seq = _signature(lmmfast.lmer("y ~ x + (x | g)", big))

    def work(k):
        f, d = MODELS[k % len(MODELS)]
        results[k] = _signature(lmmfast.lmer(f, data[d]))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(len(results))]
    big_thread = threading.Thread(target=lambda: results.append(_signature(
        lmmfast.lmer("y ~ x + (x | g)", big))))  # fmt: skip
    for t in [*threads, big_thread]:
        t.start()
    for t in [*threads, big_thread]:
        t.join()
    # the same fits to rounding: on an Intel Xeon about 1 run in 4 differed in the last bits
    # (penicillin's objective by 3e-14 relative).  A cause found since: threadpoolctl 3.8
    # lets only one thread set OpenBLAS's process-wide count, so the first fit's end put
    # the fits still running on one thread per CPU (now held by lmmfast/_threads.py, tested
    # in test_threads.py); not reproduced on the AMD EPYC where that was fixed, so the
    # comparison stays to rounding
    for k in range(2 * len(MODELS)):
        _assert_same_fit(results[k], sequential[k % len(MODELS)])
    _assert_same_fit(results[-1], big_seq)


def _assert_same_fit(a, b):
    assert a[0] == pytest.approx(b[0], rel=1e-11)
    for x, y in zip(a[1:], b[1:]):
        np.testing.assert_allclose(np.frombuffer(x), np.frombuffer(y), rtol=1e-6, atol=1e-8)


def _rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() / 2**20


def test_one_thousand_fits_and_predictions_leave_memory_flat():
    ss = load_reference_data("sleepstudy")
    for _ in range(30):  # warm caches and pools
        lmmfast.lmer("Reaction ~ Days + (Days | Subject)", ss).predict(ss)
    gc.collect()
    tracemalloc.start()
    base_traced = tracemalloc.get_traced_memory()[0]
    base_rss = _rss_mib()
    for _ in range(1000):
        fit = lmmfast.lmer("Reaction ~ Days + (Days | Subject)", ss)
        fit.predict(ss)
    del fit
    gc.collect()
    grown = (tracemalloc.get_traced_memory()[0] - base_traced) / 2**20
    tracemalloc.stop()
    assert grown < 2.0, f"{grown:.1f} MiB still allocated after 1000 fits"
    assert _rss_mib() - base_rss < 40


def test_cholmod_factors_are_freed(monkeypatch):
    from lmmfast._factor import blocked as _blocked
    from lmmfast._factor import crossed as _crossed

    monkeypatch.setattr(_blocked, "MAX_CLUSTER", 0)
    monkeypatch.setattr(_crossed, "MAX_DENSE", 0)
    pen = load_reference_data("penicillin")
    for _ in range(20):
        lmmfast.lmer("diameter ~ 1 + (1 | plate) + (1 | sample)", pen)
    gc.collect()
    base = _rss_mib()
    for _ in range(300):
        fit = lmmfast.lmer("diameter ~ 1 + (1 | plate) + (1 | sample)", pen)
        assert fit.factorization == "cholmod"
    del fit
    gc.collect()
    assert _rss_mib() - base < 30
