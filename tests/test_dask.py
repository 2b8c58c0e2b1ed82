"""Dask DataFrames: the pass on the workers of a LocalCluster (issue 11, item 1).

One cluster (2 worker processes, 1 thread each, 1 GiB) for the module, closed at the end.
"""

import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from batched_cases import MODELS, assert_same_cross_products, assert_same_fit, make_data

import lmmfast
from lmmfast._sources.formula import parse_formula
from lmmfast._sources.sources import batched_source, stream_frame

dd = pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def client():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cluster = distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, memory_limit="1GiB",
            dashboard_address=None,
        )  # fmt: skip
    client = distributed.Client(cluster)
    yield client
    client.close()
    cluster.close()


@pytest.fixture(scope="module")
def data():
    return make_data()


@pytest.fixture(scope="module")
def ddf(data):
    return dd.from_pandas(data, npartitions=6, sort=False)


@pytest.mark.parametrize("formula,kw", MODELS)
def test_dask_fit_equals_in_memory(client, data, ddf, formula, kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", lmmfast.SingularFitWarning)
        ref = lmmfast.lmer(formula, data, **kw)
        got = lmmfast.lmer(formula, ddf, **kw)
    assert_same_fit(got, ref)
    frame = stream_frame(parse_formula(formula), batched_source(ddf), **kw)
    assert_same_cross_products(frame, data, formula, kw)


def test_post_fit_values_are_lazy_dask_series(client, data, ddf):
    kw = {"weights": "w", "offset": "o"}
    ref = lmmfast.lmer("y ~ x + f + (x | g)", data, **kw)
    got = lmmfast.lmer("y ~ x + f + (x | g)", ddf, **kw)
    fitted, resid, pred = got.fitted(), got.residuals(), got.predict(ddf)
    for s in (fitted, resid, pred):
        assert isinstance(s, dd.Series)
    f = fitted.compute()
    pd.testing.assert_index_equal(f.index, ref.fitted().index)
    np.testing.assert_allclose(f, ref.fitted(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(resid.compute(), ref.residuals(), rtol=1e-5, atol=1e-6)
    # the lazy values are exactly what the in-memory code computes from the same fit
    kept = data.loc[f.index]
    np.testing.assert_allclose(f, got.predict(kept), rtol=1e-12)
    np.testing.assert_allclose(pred.compute(), got.predict(data), rtol=1e-12)
    # an in-memory fit predicts Dask new data lazily too
    np.testing.assert_allclose(ref.predict(ddf).compute(), ref.predict(data), rtol=1e-12)
    np.testing.assert_allclose(got.residuals(type="pearson", scaled=True).compute(),
                               ref.residuals(type="pearson", scaled=True), rtol=1e-4,
                               atol=1e-6)  # fmt: skip


def _partition(i: int, data: pd.DataFrame, marker: str) -> pd.DataFrame:
    """Partition i of data; partition 3 kills its worker process the second time it is
    computed (the first is the levels pass): the loss happens during the main pass."""
    if i == 3:
        calls = Path(marker)
        count = int(calls.read_text()) if calls.exists() else 0
        calls.write_text(str(count + 1))
        if count == 1:
            os._exit(1)  # the worker dies mid-task; its nanny starts a new one
    return data.iloc[i * 200 : (i + 1) * 200]


def test_killed_worker_is_retried_and_gives_the_identical_fit(client, data, tmp_path):
    import dask

    def frame(marker):
        parts = [dask.delayed(_partition)(i, data, str(marker)) for i in range(6)]
        return dd.from_delayed(parts, meta=data.iloc[:0], verify_meta=False)

    clean = lmmfast.lmer("y ~ x + f + (x | g)", frame(tmp_path / "none"))
    marker = tmp_path / "calls"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        killed = lmmfast.lmer("y ~ x + f + (x | g)", frame(marker))
    assert int(marker.read_text()) == 3  # computed, lost with its worker, recomputed
    np.testing.assert_array_equal(killed.theta, clean.theta)
    np.testing.assert_array_equal(killed.beta, clean.beta)
    assert killed.objective == clean.objective


def _bad(i, data, column, value):
    part = data.iloc[i * 200 : (i + 1) * 200].copy()
    if i == 4:
        if isinstance(value, str):  # strings in a numeric column: the partition is object
            part[column] = part[column].astype(object)
        part.iloc[7, part.columns.get_loc(column)] = value
    return part


@pytest.mark.parametrize("column,value,match", [("x", np.inf, "infinite values in 'x'"),
                                                ("x", -np.inf, "infinite values in 'x'"),
                                                ("y", "oops", "'y'")])  # fmt: skip
def test_bad_partition_raises_the_in_memory_error(client, data, column, value, match):
    import dask

    parts = [dask.delayed(_bad)(i, data, column, value) for i in range(6)]
    ddf = dd.from_delayed(parts, meta=data.iloc[:0], verify_meta=False)
    whole = pd.concat([_bad(i, data, column, value) for i in range(6)])
    with pytest.raises(lmmfast.DataError, match=match) as mem:
        lmmfast.lmer("y ~ x + (1 | g)", whole)
    with pytest.raises(lmmfast.DataError, match=match) as got:
        lmmfast.lmer("y ~ x + (1 | g)", ddf)
    assert type(got.value) is type(mem.value)


def test_any_active_scheduler_gives_the_same_fit(client, data, ddf):
    """The local threaded scheduler (no cluster) runs the same graph: the identical fit."""
    import dask

    on_cluster = lmmfast.lmer("y ~ x + (1 | g) + (1 | h)", ddf)
    with dask.config.set(scheduler="threads"):
        local = lmmfast.lmer("y ~ x + (1 | g) + (1 | h)", ddf)
    np.testing.assert_array_equal(local.theta, on_cluster.theta)
    assert local.objective == on_cluster.objective
