"""lmer_many: the multi-response kernel against a dense oracle, and every response's result
against lmer() fitted to that response alone (objective 1e-10 relative, beta and theta 1e-8)."""

import warnings

import numpy as np
import pandas as pd
import pytest
from dense import central_gradient, dense_Lambda, dense_Z, marginal_objective

import lmmfast
from lmmfast import _assemble_many
from lmmfast._inference.intervals import parameters
from lmmfast._many_scalar import ScalarDesign, ScalarDeviance
from lmmfast._sources.crossprod import RowData
from lmmfast._sources.formula import parse_formula
from lmmfast._sources.frame import build_frame

OBJ_RTOL, PAR_TOL = 1e-10, 1e-8  # the identity tolerances


def _design(kind: str, n: int, rng) -> pd.DataFrame:
    g = rng.integers(0, 12, n)
    df = pd.DataFrame(
        {
            "g": [f"g{k}" for k in g],
            "h": [f"h{k}" for k in rng.integers(0, 5, n)],
            "x": rng.normal(size=n),
            "cond": rng.choice(["a", "b", "c"], n),
        }
    )
    if kind == "nested":
        df["s"] = [f"s{k % 3}" for k in g]
    return df


MODELS = {
    "crossed": "~ cond + (1 | g) + (1 | h)",
    "slope": "~ x + (1 + x | g)",
    "uncorrelated": "~ x + cond + (x || g)",
    "crossed_slope": "~ x + (1 + x | g) + (1 | h)",
    "nested": "~ x + (1 | s/g)",
}


def _responses(df, rng, G, nan=True):
    n = len(df)
    codes = pd.factorize(df["g"])[0]
    Y = (rng.normal(size=(codes.max() + 1, G)) * rng.uniform(0, 1.0, G))[codes]
    Y += np.outer(df["x"].to_numpy(), rng.normal(size=G)) + rng.normal(size=(n, G))
    Y[:, 1] *= 1e3  # a response on another scale
    if nan:
        Y[rng.integers(0, n, 6), 2] = np.nan
        Y[:10, 3] = np.nan
        Y[:10, 4] = np.nan  # the same pattern as response 3
    return pd.DataFrame(Y, columns=[f"r{k}" for k in range(G)])


def _single(formula_rhs, df, y, **kw):
    d = df.assign(resp_=y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return lmmfast.lmer(f"resp_ {formula_rhs}", d, **kw)


def _assert_same(many, name, fit):
    assert many.nobs[name] == fit.nobs
    obj = many.objective[name]
    assert abs(obj - fit.objective) <= OBJ_RTOL * abs(fit.objective)
    np.testing.assert_allclose(many.theta.loc[name].to_numpy(), fit.theta, rtol=0, atol=PAR_TOL)
    np.testing.assert_allclose(many.fixef.loc[name, fit.xnames].to_numpy(), fit.beta,
                               rtol=PAR_TOL, atol=PAR_TOL)  # fmt: skip
    np.testing.assert_allclose(many.se.loc[name, fit.xnames].to_numpy(), fit.se.to_numpy(),
                               rtol=1e-7)  # fmt: skip
    np.testing.assert_allclose(many.sigma[name], fit.sigma, rtol=1e-8)
    assert many.is_singular[name] == fit.is_singular


@pytest.mark.parametrize("reml", [True, False])
@pytest.mark.parametrize("kind", list(MODELS))
def test_identical_to_single_fits(kind, reml):
    rng = np.random.default_rng(len(kind) + 7 * reml)
    df = _design(kind, 160, rng)
    Y = _responses(df, rng, 7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        many = lmmfast.lmer_many(MODELS[kind], df, Y, REML=reml, threads=2)
    assert not many.errors
    for name in Y.columns:
        _assert_same(many, name, _single(MODELS[kind], df, Y[name].to_numpy(), REML=reml))


def test_weights_and_offset_as_lmer():
    rng = np.random.default_rng(3)
    df = _design("slope", 120, rng)
    df["w"] = rng.uniform(0.5, 2.0, len(df))
    off = rng.normal(size=len(df))
    Y = _responses(df, rng, 5)
    many = lmmfast.lmer_many("~ x + (1 + x | g)", df, Y, weights="w", offset=off)
    for name in Y.columns:
        fit = _single("~ x + (1 + x | g)", df, Y[name].to_numpy(), weights="w", offset=off)
        _assert_same(many, name, fit)


def test_missing_values_drop_rows_for_that_response_only():
    rng = np.random.default_rng(5)
    df = _design("crossed", 100, rng)
    df.loc[df.index[:3], "cond"] = None  # a missing design value: dropped for all
    Y = _responses(df, rng, 5)
    many = lmmfast.lmer_many(MODELS["crossed"], df, Y)
    expect = [97 - int(Y[c].iloc[3:].isna().sum()) for c in Y.columns]
    assert many.nobs.tolist() == expect
    assert expect[2] < 97 and expect[3] == expect[4] == 90
    for name in ("r2", "r3", "r4"):
        fit = _single(MODELS["crossed"], df, Y[name].to_numpy())
        _assert_same(many, name, fit)
        full = many.fits[name]
        assert full.n_dropped_rows == fit.n_dropped_rows
        assert full.row_index.equals(fit.row_index)


def test_results_do_not_depend_on_threads():
    rng = np.random.default_rng(11)
    df = _design("crossed_slope", 150, rng)
    Y = _responses(df, rng, 9)
    runs = [lmmfast.lmer_many(MODELS["crossed_slope"], df, Y, threads=t) for t in (1, 2, 4)]
    for other in runs[1:]:
        for attr in ("fixef", "se", "theta"):
            pd.testing.assert_frame_equal(getattr(runs[0], attr), getattr(other, attr),
                                          check_exact=True)  # fmt: skip
        pd.testing.assert_series_equal(runs[0].objective, other.objective, check_exact=True)


def test_fits_give_the_full_lmer_fit():
    rng = np.random.default_rng(2)
    df = _design("slope", 140, rng)
    Y = _responses(df, rng, 3, nan=False)
    many = lmmfast.lmer_many("~ x + (1 + x | g)", df, Y)
    fit = _single("~ x + (1 + x | g)", df, Y["r0"].to_numpy())
    full = many.fits["r0"]
    assert isinstance(full, lmmfast.LmerFit) and list(many.fits) == ["r0", "r1", "r2"]
    assert full.formula == "r0 ~ x + (1 + x | g)"
    np.testing.assert_allclose(full.fitted_values, fit.fitted_values, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(full.ranef["g"].to_numpy(), fit.ranef["g"].to_numpy(), atol=1e-8)
    pd.testing.assert_frame_equal(full.varcorr, fit.varcorr, rtol=1e-7)
    assert full.fixef.equals(many.fixef.loc["r0"].rename("Estimate"))
    np.testing.assert_allclose(full.residuals().to_numpy(), fit.residuals().to_numpy(), atol=1e-8)


def test_long_tables():
    rng = np.random.default_rng(4)
    df = _design("crossed", 120, rng)
    Y = _responses(df, rng, 3, nan=False)
    many = lmmfast.lmer_many(MODELS["crossed"], df, Y)
    ct = many.coef_table()
    assert list(ct.columns) == ["response", "term", "Estimate", "Std. Error", "t value"]
    st = many.coef_table("satterthwaite")
    vc = many.varcorr
    for name in Y.columns:
        fit = _single(MODELS["crossed"], df, Y[name].to_numpy())
        mine = st[st.response == name].set_index("term").drop(columns="response")
        pd.testing.assert_frame_equal(mine, fit.coef_table("satterthwaite"), rtol=1e-6,
                                      check_names=False)  # fmt: skip
        mine = vc[vc.response == name].drop(columns="response").reset_index(drop=True)
        pd.testing.assert_frame_equal(mine, fit.varcorr, rtol=1e-7)
        np.testing.assert_allclose(many.parameters().loc[name].to_numpy(),
                                   parameters(fit).to_numpy(), rtol=1e-7)  # fmt: skip
    with pytest.raises(lmmfast.ArgumentError):
        many.coef_table("nonsense")


def test_response_blocks_match_dense_products():
    rng = np.random.default_rng(8)
    n, G = 90, 13
    df = _design("crossed_slope", n, rng)
    frame = build_frame(parse_formula("x ~ cond + (1 + x | g) + (1 | h)"), df)
    rows = RowData(frame.terms, frame.Xcols, frame.xnames, frame.y)
    Z, X = dense_Z(frame.terms), frame.X
    Y = rng.normal(size=(n, G))
    w = rng.uniform(0.3, 2.0, n)
    sizes = [t.nlevels * t.q for t in frame.terms]
    zrow = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    for weighted in (False, True):
        W = w if weighted else np.ones(n)
        outs = []
        for threads in (1, 3):
            ZY, XY, yy = np.zeros((sum(sizes), G)), np.zeros((X.shape[1], G)), np.zeros(G)
            _assemble_many.assemble_responses(
                rows.codes, rows.zoff, rows.qs, zrow, rows.cols, rows.zcol, rows.xcol, w,
                weighted, Y, ZY, XY, yy, threads,
            )  # fmt: skip
            np.testing.assert_allclose(ZY, Z.T @ (W[:, None] * Y), rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(XY, X.T @ (W[:, None] * Y), rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(yy, np.einsum("i,ig,ig->g", W, Y, Y), rtol=1e-12)
            outs.append((ZY, XY, yy))
        for a, b in zip(*outs):
            assert np.array_equal(a, b)  # the split over threads changes nothing


def test_bad_input_is_named_and_nothing_is_modified():
    rng = np.random.default_rng(9)
    df = _design("crossed", 80, rng)
    Y = _responses(df, rng, 5)
    before_df, before_Y = df.copy(), Y.copy()
    f = MODELS["crossed"]
    with pytest.raises(lmmfast.ArgumentError, match="no response"):
        lmmfast.lmer_many("y " + f, df, Y)
    with pytest.raises(lmmfast.DataError, match="rows"):
        lmmfast.lmer_many(f, df, Y.to_numpy()[:-1])
    with pytest.raises(lmmfast.DataError, match="infinite"):
        lmmfast.lmer_many(f, df, np.where(Y.isna(), np.inf, Y.to_numpy()))
    with pytest.raises(lmmfast.DataError, match="index"):
        lmmfast.lmer_many(f, df, Y.set_axis(Y.index + 1))
    with pytest.raises(lmmfast.DataError, match="numeric"):
        lmmfast.lmer_many(f, df, np.full((80, 2), "a"))
    Z = Y.to_numpy().copy()
    Z[:, 1] = 2.5  # constant: lmer refuses it; here it is reported and the rest are fitted
    Z[5:, 2] = np.nan  # too few rows left
    many = lmmfast.lmer_many(f, df, Z)
    assert set(many.errors) == {"y2", "y3"} and "constant" in many.errors["y2"]
    assert np.isnan(many.fixef.loc["y2"]).all() and many.converged["y1"]
    with pytest.raises(lmmfast.ArgumentError, match="no fit"):
        many.fits["y2"]
    pd.testing.assert_frame_equal(df, before_df)
    pd.testing.assert_frame_equal(Y, before_Y)


def test_bootstrap_uses_the_many_refits():
    """confint(method="boot") equals the percentiles of one refit per simulated response."""
    fit = lmmfast.lmer("Reaction ~ Days + (Days | Subject)", lmmfast.datasets.load("sleepstudy"))
    ci = fit.confint("boot", nsim=12, seed=4)
    sims = fit.simulate(12, seed=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        draws = np.array([parameters(fit.refit(sims[c].to_numpy())).to_numpy() for c in sims])
    np.testing.assert_allclose(ci.iloc[:, 0], np.nanquantile(draws, 0.025, axis=0), rtol=1e-7)
    np.testing.assert_allclose(ci.iloc[:, 1], np.nanquantile(draws, 0.975, axis=0), rtol=1e-7)
    many = fit.refit_many(sims)
    assert list(many.names) == list(sims.columns)
    np.testing.assert_allclose(many.parameters().to_numpy(), draws, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("reml", [True, False])
@pytest.mark.parametrize(
    "formula",
    ["y ~ x + (1 | a)", "y ~ x + (1 | a) + (1 | b)", "y ~ 1 + (1 | a) + (1 | b) + (1 | c)"],
)
def test_scalar_kernel_matches_the_dense_likelihood_and_finite_differences(formula, reml):
    """src/_scalar_crossed.pyx: the objective against V = Z Lambda Lambda'Z' + W^{-1} built
    densely, the gradient against central differences, beta against the dense GLS fit."""
    rng = np.random.default_rng(21)
    n = 120
    df = pd.DataFrame({k: rng.integers(0, m, n).astype(str) for k, m in zip("abc", (15, 4, 3))})
    df = df.assign(x=rng.normal(size=n), y=rng.normal(size=n))
    w = rng.uniform(0.5, 2.0, n)
    frame = build_frame(parse_formula(formula), df, weights=w)
    cp = RowData(frame.terms, frame.Xcols, frame.xnames, frame.y).cross_products(w)
    design = ScalarDesign(cp, frame.terms)
    ldW = float(np.sum(np.log(w)))
    dev = ScalarDeviance(design.kernel(cp.XtXy.shape[0]), cp, frame.terms, n, reml, ldW, True)
    Z = dense_Z(frame.terms)
    K = len(frame.terms)
    signs = np.where(np.arange(K) % 2 == 0, -1.0, 1.0)  # the compiled fit crosses theta = 0
    for theta in (rng.uniform(0.2, 1.5, K), np.full(K, 0.6), signs * rng.uniform(0.2, 1.5, K)):
        Lam = dense_Lambda(frame.terms, [np.array([[t]]) for t in theta])
        want, beta = marginal_objective(frame.y, frame.X, Z, Lam, w, reml)
        value, grad = dev.value_and_gradient(theta)
        assert abs(value - want) <= 1e-10 * abs(want)
        np.testing.assert_allclose(dev.decompose(theta).beta, beta, rtol=1e-9, atol=1e-12)
        h = 1e-6
        fd = central_gradient(dev, theta, h)
        np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-5)


def test_compiled_path_matches_lmer_on_many_responses_with_singular_fits():
    """The compiled scalar-terms objective (another evaluation of the same function) ends at
    lmer()'s optimum for every response, including boundary fits (theta = 0)."""
    rng = np.random.default_rng(17)
    n, G = 240, 36
    ind, batch = np.repeat(np.arange(40), 6), rng.integers(0, 6, n)
    df = pd.DataFrame({"ind": ind.astype(str), "batch": batch.astype(str),
                       "cond": rng.choice(["c", "t"], n)})  # fmt: skip
    Y = (rng.normal(size=(40, G)) * rng.uniform(0, 0.6, G))[ind]
    Y += (rng.normal(size=(6, G)) * rng.uniform(0, 0.5, G))[batch] + rng.normal(size=(n, G))
    f = "~ cond + (1 | ind) + (1 | batch)"
    many = lmmfast.lmer_many(f, df, Y)
    assert many._designs[0].compiled and 3 <= many.is_singular.sum() < G
    assert many._r.compiled.mean() >= 0.9  # the whole fit in C, few fall back to Python
    assert many.fits[many.names[0]].optsummary.optimizer == "newton (compiled)"
    for g, name in enumerate(many.names):
        _assert_same(many, name, _single(f, df, Y[:, g]))


def test_polars_and_pyarrow_frames_for_data_and_responses():
    """data and Y as polars or pyarrow tables give the pandas fit (Y's column names kept)."""
    pl = pytest.importorskip("polars")
    pa = pytest.importorskip("pyarrow")
    rng = np.random.default_rng(31)
    df = _design("crossed", 90, rng)
    Y = _responses(df, rng, 5)
    want = lmmfast.lmer_many(MODELS["crossed"], df, Y)
    for data, resp in [(pl.from_pandas(df), pl.from_pandas(Y)),
                       (pa.Table.from_pandas(df), pa.Table.from_pandas(Y))]:  # fmt: skip
        got = lmmfast.lmer_many(MODELS["crossed"], data, resp)
        assert list(got.names) == list(Y.columns)
        pd.testing.assert_frame_equal(got.fixef, want.fixef)
        pd.testing.assert_frame_equal(got.theta, want.theta)
        pd.testing.assert_series_equal(got.objective, want.objective)
        pd.testing.assert_series_equal(got.nobs, want.nobs)


def _genes(rng, n_ind=40, per=6, G=24):
    ind = np.repeat(np.arange(n_ind), per)
    n = len(ind)
    batch = rng.integers(0, 6, n)
    df = pd.DataFrame({"ind": ind.astype(str), "batch": batch.astype(str),
                       "cond": rng.choice(["c", "t"], n), "x": rng.normal(size=n)})  # fmt: skip
    Y = (rng.normal(size=(n_ind, G)) * rng.uniform(0, 0.6, G))[ind]
    Y += (rng.normal(size=(6, G)) * rng.uniform(0, 0.5, G))[batch] + rng.normal(size=(n, G))
    return df, Y


def test_compiled_fit_does_not_depend_on_threads():
    rng = np.random.default_rng(23)
    df, Y = _genes(rng, G=17)
    f = "~ cond + (1 | ind) + (1 | batch)"
    runs = [lmmfast.lmer_many(f, df, Y, threads=t) for t in (1, 2, 3)]
    assert runs[0]._r.compiled.all()
    for other in runs[1:]:
        for attr in ("fixef", "se", "theta"):
            pd.testing.assert_frame_equal(getattr(runs[0], attr), getattr(other, attr),
                                          check_exact=True)  # fmt: skip
        pd.testing.assert_series_equal(runs[0].objective, other.objective, check_exact=True)
        pd.testing.assert_series_equal(runs[0].sigma, other.sigma, check_exact=True)


@pytest.mark.parametrize("reml", [True, False])
def test_compiled_fit_against_the_dense_likelihood(reml):
    """fit_range's optimum: no point of a dense grid-and-polish search of the marginal
    likelihood (V built densely) is lower, and beta, sigma, se are the dense GLS ones there."""
    from scipy.optimize import minimize

    rng = np.random.default_rng(29 + reml)
    df, Y = _genes(rng, n_ind=15, per=5, G=4)
    f = "~ x + (1 | ind) + (1 | batch) + (1 | cond)"
    many = lmmfast.lmer_many(f, df, Y, REML=reml, threads=1)
    frame = build_frame(parse_formula("y" + f), df.assign(y=Y[:, 0]))
    Z, X = dense_Z(frame.terms), frame.X
    w = np.ones(len(df))
    assert many._r.compiled.all()
    for g, name in enumerate(many.names):
        y = Y[:, g]

        def obj(th, y=y):
            Lam = dense_Lambda(frame.terms, [np.array([[t]]) for t in np.abs(th)])
            return marginal_objective(y, X, Z, Lam, w, reml)[0]

        opts = {"xatol": 1e-10, "fatol": 1e-12, "maxiter": 4000}
        starts = ([1.0, 1.0, 1.0], [0.3, 0.3, 0.3], [1.0, 0.05, 0.05])
        best = min(minimize(obj, s, method="Nelder-Mead", options=opts).fun for s in starts)
        theta = many.theta.loc[name].to_numpy()
        ours = many.objective[name]
        assert ours <= best + 1e-9 * abs(best)
        assert abs(ours - obj(theta)) <= 1e-10 * abs(ours)
        Lam = dense_Lambda(frame.terms, [np.array([[t]]) for t in theta])
        V = Z @ Lam @ Lam.T @ Z.T + np.eye(len(y))
        Vi = np.linalg.inv(V)
        beta = np.linalg.solve(X.T @ Vi @ X, X.T @ Vi @ y)
        r = y - X @ beta
        s2 = (r @ Vi @ r) / (len(y) - (X.shape[1] if reml else 0))
        np.testing.assert_allclose(many.fixef.loc[name].to_numpy(), beta, rtol=1e-9, atol=1e-11)
        np.testing.assert_allclose(many.sigma[name] ** 2, s2, rtol=1e-9)
        se = np.sqrt(np.diag(s2 * np.linalg.inv(X.T @ Vi @ X)))
        np.testing.assert_allclose(many.se.loc[name].to_numpy(), se, rtol=1e-8)


def test_responses_the_compiled_fit_leaves_go_the_python_way(monkeypatch):
    """Where fit_range does not converge the response is fitted as before (here: all)."""
    from lmmfast import _many_scalar

    real = _many_scalar.fit_compiled

    def none_converge(ctx, todo, bounds, cols, out):
        real(ctx, todo, bounds, cols, out)
        out.compiled[:] = False
        return todo.copy()

    monkeypatch.setattr(_many_scalar, "fit_compiled", none_converge)
    rng = np.random.default_rng(37)
    df, Y = _genes(rng, G=5)
    f = "~ cond + (1 | ind) + (1 | batch)"
    many = lmmfast.lmer_many(f, df, Y)
    assert not many._r.compiled.any()
    for g, name in enumerate(many.names):
        assert many.fits[name].optsummary.optimizer == "L-BFGS-B"
        _assert_same(many, name, _single(f, df, Y[:, g]))
