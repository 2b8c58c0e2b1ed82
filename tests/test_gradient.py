"""The analytic gradient of the profiled objective against central finite differences."""

import numpy as np
import pandas as pd
import pytest
from dense import central_gradient

from lmmfast._pls import ProfiledDeviance
from lmmfast._sources.crossprod import cross_products
from lmmfast._sources.formula import parse_formula
from lmmfast._sources.frame import build_frame


def _data(seed, n=150):
    rng = np.random.default_rng(seed)
    g = rng.integers(0, 12, n)
    x, z = rng.normal(size=n), rng.uniform(-1, 1, n)
    y = 2 + x + rng.normal(size=12)[g] + 0.5 * rng.normal(size=12)[g] * x + rng.normal(size=n)
    return pd.DataFrame({"y": y, "x": x, "z": z, "g": g.astype(str), "w": rng.uniform(0.5, 2, n)})


def _deviance(formula, reml, weighted, seed):
    df = _data(seed)
    frame = build_frame(parse_formula(formula), df, weights="w" if weighted else None)
    cp = cross_products(frame.terms, frame.X, frame.y, frame.weights)
    ldW = float(np.sum(np.log(frame.weights))) if weighted else 0.0
    return ProfiledDeviance(cp, frame.terms, frame.n, reml, ldW), frame


@pytest.mark.parametrize("reml", [True, False])
@pytest.mark.parametrize(
    "formula,weighted",
    [
        ("y ~ x + (1 | g)", False),
        ("y ~ x + (x | g)", False),
        ("y ~ x + z + (x + z | g)", True),
        ("y ~ x + (x || g)", False),
        ("y ~ 1 + (x | g)", True),
    ],
)
def test_gradient_matches_finite_differences(formula, weighted, reml):
    dev, frame = _deviance(formula, reml, weighted, 4)
    assert dev.has_gradient
    lower = np.concatenate([t.theta_lower() for t in frame.terms])
    rng = np.random.default_rng(9)
    for _ in range(3):
        theta = np.where(lower == 0, rng.uniform(0.2, 1.5, len(lower)), rng.normal(size=len(lower)))
        value, grad = dev.value_and_gradient(theta)
        assert value == pytest.approx(dev(theta), rel=1e-13)
        h = 1e-6
        fd = central_gradient(dev, theta, h)
        np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-5 * max(1.0, np.abs(fd).max()))


def test_gradient_on_the_boundary_is_one_sided_correct():
    # at theta = 0 (a singular fit) the derivative from the right is what the optimizer needs
    dev, _ = _deviance("y ~ x + (1 | g)", True, False, 6)
    value, grad = dev.value_and_gradient(np.array([0.0]))
    h = 1e-7
    assert grad[0] == pytest.approx((dev(np.array([h])) - value) / h, rel=1e-3, abs=1e-4)


def test_two_chunks_of_levels_give_the_same_value_and_gradient(monkeypatch):
    from lmmfast._factor import blocked as _blocked

    one, _ = _deviance("y ~ x + (x | g)", True, True, 8)
    monkeypatch.setattr(_blocked, "PARALLEL_LEVELS", 0)
    two, _ = _deviance("y ~ x + (x | g)", True, True, 8)
    assert (one.factor.threads, two.factor.threads) == (1, 2)
    theta = np.array([0.9, -0.2, 0.4])
    v1, g1 = one.value_and_gradient(theta)
    v2, g2 = two.value_and_gradient(theta)
    assert v1 == pytest.approx(v2, rel=1e-13)
    np.testing.assert_allclose(g1, g2, rtol=1e-11, atol=1e-11)


def _crossed_data(seed, n=300):
    rng = np.random.default_rng(seed)
    u, v, w3 = rng.integers(0, 25, n), rng.integers(0, 8, n), rng.integers(0, 4, n)
    x = rng.normal(size=n)
    y = 1 + x + rng.normal(size=25)[u] + 0.7 * rng.normal(size=8)[v] + 0.3 * rng.normal(size=4)[w3]
    cols = {"u": u, "v": v, "w3": w3}
    return pd.DataFrame(
        {"y": y + rng.normal(size=n), "x": x, "wt": rng.uniform(0.5, 2, n)}
        | {k: c.astype(str) for k, c in cols.items()}
    )


@pytest.mark.parametrize("reml", [True, False])
@pytest.mark.parametrize(
    "formula,weighted",
    [("y ~ x + (1 | u) + (1 | v)", False), ("y ~ x + (1 | u) + (1 | v) + (1 | w3)", True),
     ("y ~ 1 + (1 | u) + (1 | v)", False)],
)  # fmt: skip
def test_crossed_gradient_matches_finite_differences(formula, weighted, reml):
    df = _crossed_data(3)
    frame = build_frame(parse_formula(formula), df, weights="wt" if weighted else None)
    cp = cross_products(frame.terms, frame.X, frame.y, frame.weights)
    ldW = float(np.sum(np.log(frame.weights))) if weighted else 0.0
    dev = ProfiledDeviance(cp, frame.terms, frame.n, reml, ldW)
    assert dev.factorization == "crossed" and dev.has_gradient
    for theta in (np.array([0.8, 1.3, 0.4])[: len(frame.terms)], np.full(len(frame.terms), 0.2)):
        value, grad = dev.value_and_gradient(theta)
        h = 1e-6
        fd = central_gradient(dev, theta, h)
        np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-5 * max(1.0, np.abs(fd).max()))


def test_gradient_path_does_not_stop_on_a_false_boundary():
    # InstEval: a clipped L-BFGS-B step put dept's theta at 0, where the profiled deviance
    # (even in theta) has zero slope, and the fit stopped 9.7 above lme4's optimum.
    # Reference: lme4 1.1-31 REML criterion 237733.834129 (bench/, lme4_runner.R).
    from pathlib import Path

    import lmmfast

    path = Path(__file__).parents[1] / "bench" / "data" / "InstEval.csv"
    ie = pd.read_csv(path, dtype={c: str for c in ("s", "d", "dept", "service")})
    fit = lmmfast.lmer("y ~ service + (1 | s) + (1 | d) + (1 | dept)", ie)
    assert fit.optsummary.optimizer == "L-BFGS-B"
    assert fit.objective <= 237733.834129 * (1 + 1e-10)
    assert np.all(fit.theta > 0.01)


def _slopes_data(seed, nu=20, nv=9, n=400):
    rng = np.random.default_rng(seed)
    u, v = rng.integers(0, nu, n), rng.integers(0, nv, n)
    x, z = rng.normal(size=n), rng.uniform(-1, 1, n)
    y = 1 + x + rng.normal(size=nu)[u] * (1 + 0.4 * x) + rng.normal(size=nv)[v] * (1 - 0.3 * z)
    return pd.DataFrame(
        {"y": y + rng.normal(size=n), "x": x, "z": z, "wt": rng.uniform(0.5, 2, n),
         "u": u.astype(str), "v": v.astype(str), "g": (u // 4).astype(str)}
    )  # fmt: skip


def _fd_check(dev, frame, rng, points=2):
    lower = np.concatenate([t.theta_lower() for t in frame.terms])
    for _ in range(points):
        theta = np.where(lower == 0, rng.uniform(0.2, 1.2, len(lower)), rng.normal(size=len(lower)))
        theta *= 0.7
        value, grad = dev.value_and_gradient(theta)
        assert value == pytest.approx(dev(theta), rel=1e-12)
        h = 1e-6
        fd = central_gradient(dev, theta, h)
        np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-5 * max(1.0, np.abs(fd).max()))


# crossed vector-valued terms, both layouts of L21 (dense: syrk; sparse: per-level kernel),
# and the same designs through CHOLMOD and (for a nested design) the per-cluster factor
VECTOR_FORMULAS = [
    ("y ~ x + (1 + x | u) + (1 + z | v)", True),
    ("y ~ x + z + (1 + x + z | u) + (1 | v)", False),
    ("y ~ x + (1 | u) + (x + z | v)", False),
    ("y ~ x + (x || u) + (1 + z | v)", True),
    ("y ~ x + (1 + x | u) + (1 + z | v) + (1 | g)", True),  # pairs of two later terms
]


@pytest.mark.parametrize("reml", [True, False])
@pytest.mark.parametrize("formula,weighted", VECTOR_FORMULAS)
@pytest.mark.parametrize("layout", ["dense", "sparse", "cholmod"])
def test_crossed_vector_gradient_matches_finite_differences(formula, weighted, reml, layout,
                                                            monkeypatch):  # fmt: skip
    from lmmfast._factor import crossed as _crossed

    if layout == "sparse":
        monkeypatch.setattr(_crossed, "DENSE_FILL", 2.0)
    if layout == "cholmod":
        monkeypatch.setattr(_crossed, "MAX_DENSE", 0)
    df = _slopes_data(5)
    frame = build_frame(parse_formula(formula), df, weights="wt" if weighted else None)
    cp = cross_products(frame.terms, frame.X, frame.y, frame.weights)
    ldW = float(np.sum(np.log(frame.weights))) if weighted else 0.0
    dev = ProfiledDeviance(cp, frame.terms, frame.n, reml, ldW)
    assert dev.factorization == ("cholmod" if layout == "cholmod" else "crossed")
    if layout != "cholmod":
        assert dev.factor.dense == (layout == "dense")
    assert dev.has_gradient
    _fd_check(dev, frame, np.random.default_rng(11))


NESTED_FORMULAS = [
    "y ~ x + (1 + x | g/u)",
    "y ~ x + (1 + x | g) + (1 + z || g:u)",
    "y ~ x + (1 | g/u)",
]


@pytest.mark.parametrize("reml", [True, False])
@pytest.mark.parametrize("formula", NESTED_FORMULAS)
@pytest.mark.parametrize("layout", ["nested", "cholmod"])
def test_nested_gradient_matches_finite_differences(formula, reml, layout, monkeypatch):
    dev, frame = _weighted_deviance(formula, reml, layout, 6, monkeypatch)
    assert dev.has_gradient
    _fd_check(dev, frame, np.random.default_rng(12))


def _weighted_deviance(formula, reml, layout, seed, monkeypatch):
    """The weighted deviance on _slopes_data(seed), CHOLMOD forced for layout "cholmod"
    (by monkeypatch, unused otherwise); asserts that the factorization is layout."""
    from lmmfast._factor import blocked as _blocked
    from lmmfast._factor import crossed as _crossed

    if layout == "cholmod":
        monkeypatch.setattr(_blocked, "MAX_CLUSTER", 0)
        monkeypatch.setattr(_crossed, "MAX_DENSE", 0)
    df = _slopes_data(seed)
    frame = build_frame(parse_formula(formula), df, weights="wt")
    cp = cross_products(frame.terms, frame.X, frame.y, frame.weights)
    dev = ProfiledDeviance(cp, frame.terms, frame.n, reml, float(np.sum(np.log(frame.weights))))
    assert dev.factorization == layout
    return dev, frame


@pytest.mark.parametrize("layout", ["dense", "sparse", "cholmod", "nested"])
def test_selected_inverse_and_solve_match_the_dense_inverse(layout, monkeypatch):
    # the kernels behind the gradient (_schur.selinv_first, lt_times_first, first_factors,
    # _selinv.takahashi, the per-cluster inverses) against inv(Lambda'Z'WZ Lambda + I)
    from dense import dense_Lambda, dense_Z

    from lmmfast._factor import crossed as _crossed

    formula = "y ~ x + (1 + x | u) + (1 + z | v)"
    if layout == "sparse":
        monkeypatch.setattr(_crossed, "DENSE_FILL", 2.0)
    if layout == "cholmod":
        monkeypatch.setattr(_crossed, "MAX_DENSE", 0)
    if layout == "nested":
        formula = "y ~ x + (1 + x | g/u)"
    df = _slopes_data(7)
    frame = build_frame(parse_formula(formula), df, weights="wt")
    cp = cross_products(frame.terms, frame.X, frame.y, frame.weights)
    dev = ProfiledDeviance(cp, frame.terms, frame.n, False, 0.0)
    assert dev.factorization == ("crossed" if layout in ("dense", "sparse") else layout)
    theta = np.array([0.9, -0.3, 0.6, 1.1, 0.2, 0.4])
    Ts = dev.Ts(theta)
    dev.factor.update(Ts)
    Z, Lam = dense_Z(frame.terms), dense_Lambda(frame.terms, Ts)
    ZL = Z @ Lam
    Ainv = np.linalg.inv(ZL.T @ (frame.weights[:, None] * ZL) + np.eye(Z.shape[1]))
    off = np.cumsum([0] + [t.nlevels * t.q for t in frame.terms])
    Zd, Zp = dev.factor.selected_inverse()
    for k, t in enumerate(frame.terms):
        r = off[k] + np.arange(t.nlevels)[:, None] * t.q + np.arange(t.q)
        np.testing.assert_allclose(Zd[k], Ainv[r[:, :, None], r[:, None, :]], atol=1e-12)
    for pr, block in zip(cp.pairs, Zp):
        qt, qu = frame.terms[pr.t].q, frame.terms[pr.u].q
        rt = off[pr.t] + pr.levels[:, 0][:, None] * qt + np.arange(qt)
        ru = off[pr.u] + pr.levels[:, 1][:, None] * qu + np.arange(qu)
        np.testing.assert_allclose(block, Ainv[rt[:, :, None], ru[:, None, :]], atol=1e-12)
    if layout in ("dense", "sparse"):  # L^{-T} L^{-1} Lambda'Z'W[X y] = A^{-1} Lambda'Z'W[X y]
        XY = np.column_stack([frame.X, frame.y])
        want = Ainv @ ZL.T @ (frame.weights[:, None] * XY)
        got = dev.factor.back_solve(dev.factor.c1, dev.factor.c2)
        np.testing.assert_allclose(np.vstack([g.reshape(-1, XY.shape[1]) for g in got]), want,
                                   atol=1e-10)  # fmt: skip


# the optimizer runs scalar terms' theta over the whole line (lmmfast/_optimize.py,
# minimize_theta): the objective must be even in each of them and the gradient right below 0
@pytest.mark.parametrize("reml", [True, False])
@pytest.mark.parametrize(
    "formula,layout",
    [("y ~ x + (1 | u) + (1 | v)", "crossed"), ("y ~ x + (1 | u) + (1 | v)", "cholmod"),
     ("y ~ x + (x || u) + (1 + z | v)", "crossed"), ("y ~ x + (1 | g/u)", "nested"),
     ("y ~ x + (1 | g/u)", "cholmod"), ("y ~ x + (x || g)", "blocked")],
)  # fmt: skip
def test_objective_is_even_in_scalar_thetas_and_its_gradient_right_below_zero(
    formula, layout, reml, monkeypatch
):
    dev, frame = _weighted_deviance(formula, reml, layout, 7, monkeypatch)
    scalar = np.concatenate([[t.q == 1] * (t.q * (t.q + 1) // 2) for t in frame.terms])
    rng = np.random.default_rng(13)
    theta = rng.uniform(0.3, 1.2, len(scalar)) * np.where(scalar, -1.0, 1.0)
    value, grad = dev.value_and_gradient(theta)
    mirror, gm = dev.value_and_gradient(np.where(scalar, -theta, theta))
    assert value == pytest.approx(mirror, rel=1e-13)
    np.testing.assert_allclose(grad, np.where(scalar, -gm, gm), rtol=1e-9, atol=1e-9)
    h = 1e-6
    fd = central_gradient(dev, theta, h)
    np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-5 * max(1.0, np.abs(fd).max()))


@pytest.mark.parametrize("reml", [True, False])
@pytest.mark.parametrize("formula", [f for f, _ in VECTOR_FORMULAS])
def test_dense_crossed_gradient_matches_the_selected_inverse_route(formula, reml):
    # CrossedFactor._dense_logdet_gradient (S^{-1} L21 by one dsymm, no pair blocks) and the
    # dense G12 products against the selected inverse (itself checked against inv(A) above)
    # summed pair by pair with GradientAssembly's sparse G
    dev, _ = _weighted_deviance(formula, reml, "crossed", 5, None)
    f = dev.factor
    assert f.dense
    theta = np.random.default_rng(14).uniform(0.2, 1.2, dev.slices[-1].stop)
    Ts = dev.Ts(theta)
    dec = dev.decompose(theta, Ts)
    P = np.linalg.inv(dec.RX.T @ dec.RX)
    got = f.gradient(Ts, dec.beta, P, 1.7, reml)
    Zd, Zp = f.selected_inverse()
    want = f.assembly.gradient(Ts, Zd, Zp, f.back_solve(f.c1, f.c2), dec.beta, P, 1.7, reml)
    np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-11 * np.abs(want).max())
