"""fit.plot: the drawn data are the fit's numbers (matplotlib's Agg canvas, no display).

The smoother is R's lowess, tested against R's output in refs_present.json (made by
tests/reference/refs_present.R, 1e-10 relative) and on data with ties and an outlier."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from attheta import at_theta
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection, PathCollection
from matplotlib.figure import Figure
from scipy import stats

import lmmfast
from lmmfast._errors import ArgumentError
from lmmfast._present.lowess import lowess
from lmmfast._present.plot import Z95, ppoints, profile_curves

REF = json.loads((Path(__file__).parent / "reference" / "refs_present.json").read_text())["broom"]


@pytest.fixture(scope="module")
def fit():
    f = lmmfast.lmer("Reaction ~ Days + (Days | Subject)", lmmfast.datasets.load("sleepstudy"))
    return at_theta(f, REF["sleep_slope"]["theta"])


@pytest.fixture(scope="module")
def crossed():
    return lmmfast.lmer(
        "diameter ~ 1 + (1 | plate) + (1 | sample)", lmmfast.datasets.load("penicillin")
    )


def _draw(fig):
    assert isinstance(fig, Figure)
    FigureCanvasAgg(fig).draw()  # renders: raises if anything drawn is malformed
    return [ax for ax in fig.axes if ax.get_visible()]


def test_caterpillar_points_are_the_modes_and_bars_196_conditional_sds(fit):
    axes = _draw(fit.plot.ranef())
    assert len(axes) == 2  # one panel per term
    modes = fit.ranef["Subject"]
    sd = np.sqrt(np.diagonal(fit.cond_var["Subject"], axis1=1, axis2=2))
    order = np.argsort(modes["(Intercept)"].to_numpy())
    labels = [t.get_text() for t in axes[0].get_yticklabels()]
    assert labels == [str(v) for v in modes.index[order]]  # levels sorted by the first term
    for k, ax in enumerate(axes):
        (points,) = [ln for ln in ax.lines if ln.get_marker() == "o"]
        x, y = points.get_xdata(), points.get_ydata()
        assert len(x) == 18
        assert np.allclose(x, modes.iloc[order, k].to_numpy(), rtol=1e-12)
        assert np.all(np.diff(x) >= 0) if k == 0 else True
        (bars,) = [c for c in ax.collections if isinstance(c, LineCollection)]
        seg = np.array(bars.get_segments())  # (levels, 2 ends, xy)
        assert np.allclose(seg[:, 0, 0], x - Z95 * sd[order, k], rtol=1e-12)
        assert np.allclose(seg[:, 1, 0], x + Z95 * sd[order, k], rtol=1e-12)
        assert np.allclose(seg[:, 0, 1], y) and np.allclose(seg[:, 1, 1], y)
    # the conditional SDs are lme4's (condsd of as.data.frame(ranef(condVar = TRUE)))
    ref = REF["sleep_slope"]["ran_vals"]
    lme4_sd = np.array(ref["std.error"])[np.array(ref["term"]) == "Days"]
    assert np.allclose(np.sort(sd[:, 1]), np.sort(lme4_sd), rtol=1e-6)


def test_caterpillar_of_crossed_factors_has_a_panel_per_factor(crossed):
    axes = _draw(crossed.plot.ranef())
    assert [ax.get_title() for ax in axes] == ["plate: (Intercept)", "sample: (Intercept)"]
    assert [len(ax.lines[-1].get_xdata()) for ax in axes] == [24, 6]
    axes = _draw(crossed.plot.ranef(group="sample"))
    assert len(axes) == 1
    with pytest.raises(ArgumentError, match="grouping factor"):
        crossed.plot.ranef(group="plates")


def test_residual_plot_draws_the_residuals_and_rs_lowess(fit):
    (ax,) = _draw(fit.plot.resid())
    (pts,) = [c for c in ax.collections if isinstance(c, PathCollection)]
    xy = pts.get_offsets()
    assert xy.shape == (180, 2)
    assert np.allclose(xy[:, 0], fit.fitted_values)
    assert np.allclose(xy[:, 1], fit.residuals("pearson").to_numpy())
    smooth = [ln for ln in ax.lines if len(ln.get_xdata()) == 180]
    (line,) = smooth
    ref = REF["sleep_slope"]["lowess"]
    assert np.allclose(line.get_xdata(), ref["x"], rtol=1e-6)
    assert np.allclose(line.get_ydata(), ref["y"], rtol=1e-4, atol=1e-6 * np.ptp(ref["y"]))


def test_lowess_is_rs_on_exact_data():
    # the fitted values and residuals of R's fit, through R's lowess: same to rounding
    for name in ("sleep_slope", "penicillin_crossed", "pastes_nested", "cake_numeric"):
        aug = REF[name]["augment"]  # unweighted: Pearson residuals = response residuals
        sx, sy = lowess(np.array(aug[".fitted"]), np.array(aug[".resid"]))
        assert np.allclose(sx, REF[name]["lowess"]["x"], rtol=1e-12)
        assert np.allclose(sy, REF[name]["lowess"]["y"], rtol=1e-10, atol=1e-10)
    # a straight line is reproduced; a single point is returned as is
    x = np.linspace(0, 1, 30)
    assert np.allclose(lowess(x, 2 * x + 1)[1], 2 * x + 1)
    assert np.allclose(lowess([1.0], [3.0])[1], [3.0])


def test_qq_plots_are_sorted_values_at_rs_ppoints(fit, crossed):
    (ax,) = _draw(fit.plot.qq())
    (pts,) = [ln for ln in ax.lines if ln.get_marker() == "o"]
    r = np.sort(fit.residuals("pearson", scaled=True).to_numpy())
    assert np.allclose(pts.get_ydata(), r)
    assert np.allclose(pts.get_xdata(), stats.norm.ppf((np.arange(1, 181) - 0.5) / 180))
    axes = _draw(crossed.plot.qq("ranef"))
    assert len(axes) == 2
    b = np.sort(crossed.ranef["sample"]["(Intercept)"].to_numpy())
    (pts,) = axes[1].lines
    assert np.allclose(pts.get_ydata(), b)
    assert np.allclose(pts.get_xdata(), stats.norm.ppf((np.arange(1, 7) - 3 / 8) / (6 + 1 / 4)))
    assert np.allclose(ppoints(6), (np.arange(1, 7) - 0.375) / 6.25)
    with pytest.raises(ArgumentError, match="which"):
        fit.plot.qq("fitted")


def test_profile_plot_marks_the_limits_where_zeta_crosses_z():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f = lmmfast.lmer("Yield ~ 1 + (1 | Batch)", lmmfast.datasets.load("dyestuff"))
        ci = f.confint("profile")
        axes = _draw(f.plot.profile(npoints=7))
        curves = profile_curves(f, npoints=7)
    assert [ax.get_title() for ax in axes] == list(ci.index)
    for ax, (name, c) in zip(axes, curves.items()):
        (curve,) = [ln for ln in ax.lines if ln.get_marker() == "o"]
        x, z = curve.get_xdata(), curve.get_ydata()
        assert np.all(np.diff(x) > 0) and np.all(np.diff(z) > 0)  # zeta increases
        assert np.isclose(z[np.argmin(np.abs(x - c["estimate"]))], 0.0)
        vlines = sorted(ln.get_xdata()[0] for ln in ax.lines if ln.get_linestyle() == "--")
        lims = [v for v in ci.loc[name] if np.isfinite(v)]
        assert np.allclose(vlines, lims)
        for lim, target in zip(ci.loc[name], (-1.959964, 1.959964)):
            if np.isfinite(lim) and lim > 0:  # not a limit at the sd's bound 0
                assert np.isclose(z[np.argmin(np.abs(x - lim))], target, atol=2e-3)


def test_plots_without_matplotlib_say_how_to_install_it(fit, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # as if not installed
    with pytest.raises(ImportError, match=r"lmmfast\[plot\]"):
        fit.plot.resid()
