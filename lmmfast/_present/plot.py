"""lme4's diagnostic plots as matplotlib Figures: fit.plot.ranef(), .resid(), .qq(), .profile().

matplotlib is an optional dependency (pip install lmmfast[plot]), imported only when a plot
is drawn.  What each draws, as lme4 (lattice) does:

* ranef: dotplot(ranef(fit, condVar = TRUE)), a caterpillar plot per grouping factor: one
  panel per term, levels sorted by the first term's mode, points at the conditional modes,
  bars to +-1.96 conditional SDs;
* resid: plot(fit), Pearson residuals against fitted values, with R's lowess smoother;
* qq: qqmath, the sorted Pearson residuals (or each term's modes) against normal quantiles
  at R's ppoints(n);
* profile: xyplot(profile(fit)), zeta against each parameter (sd_, cor_, sigma, fixed
  effects, lme4's names), with the interval limits of confint(method = "profile") marked.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from .._errors import ArgumentError
from .lowess import lowess

Z95 = 1.959963984540054  # qnorm(0.975): lme4's dotplot bars


def _pyplot():
    try:
        from matplotlib.figure import Figure  # no pyplot: no backend, no global state
    except ImportError:
        raise ImportError(
            "plots need matplotlib: pip install 'lmmfast[plot]' (or pip install matplotlib)"
        ) from None
    return Figure


def ppoints(n: int) -> np.ndarray:
    """R's ppoints(n): (i - a) / (n + 1 - 2a), a = 3/8 for n <= 10, else 1/2."""
    a = 3 / 8 if n <= 10 else 0.5
    return (np.arange(1, n + 1) - a) / (n + 1 - 2 * a)


class FitPlots:
    """The plots of one fit (``fit.plot``); each method returns a matplotlib Figure."""

    def __init__(self, fit):
        self._fit = fit

    def ranef(self, group: str | None = None, width: float = 3.2):
        """Caterpillar plot of the conditional modes: a row of panels (one per term) for
        each grouping factor, or only for `group`."""
        Figure = _pyplot()
        fit = self._fit
        groups = list(fit.ranef) if group is None else [group]
        for g in groups:
            if g not in fit.ranef:
                raise ArgumentError(f"no grouping factor {g!r}; the fit has {list(fit.ranef)}")
        ncol = max(fit.ranef[g].shape[1] for g in groups)
        height = sum(0.9 + 0.16 * len(fit.ranef[g]) for g in groups)
        fig = Figure(figsize=(width * ncol + 1.0, max(2.5, height)), layout="constrained")
        ratios = [len(fit.ranef[g]) + 4 for g in groups]
        axes = fig.subplots(len(groups), ncol, squeeze=False, gridspec_kw={"height_ratios": ratios})
        for r, g in enumerate(groups):
            modes = fit.ranef[g]
            sd = np.sqrt(np.diagonal(fit.cond_var[g], axis1=1, axis2=2))
            order = np.argsort(modes.iloc[:, 0].to_numpy(), kind="stable")
            labels = [str(v) for v in modes.index[order]]
            y = np.arange(len(order))
            for k in range(ncol):
                ax = axes[r, k]
                if k >= modes.shape[1]:
                    ax.set_visible(False)
                    continue
                m, s = modes.iloc[order, k].to_numpy(), sd[order, k]
                ax.axvline(0.0, color="0.6", lw=0.8, ls="--")
                ax.hlines(y, m - Z95 * s, m + Z95 * s, color="tab:blue", lw=1.2)
                ax.plot(m, y, "o", color="tab:blue", ms=4)
                ax.set_title(f"{g}: {modes.columns[k]}", fontsize=10)
                ax.set_yticks(y, labels if k == 0 else [""] * len(y), fontsize=8)
                ax.set_ylim(-0.7, len(y) - 0.3)
                ax.grid(axis="y", color="0.92")
        return fig

    def resid(self):
        """Pearson residuals against fitted values (lme4's plot(fit)) with a lowess smoother."""
        Figure = _pyplot()
        fit = self._fit
        x, r = fit.fitted_values, fit.residuals("pearson").to_numpy()
        fig = Figure(figsize=(6, 4.5), layout="constrained")
        ax = fig.subplots()
        ax.axhline(0.0, color="0.6", lw=0.8, ls="--")
        ax.scatter(x, r, s=12, color="tab:blue", alpha=0.7)
        sx, sy = lowess(x, r)
        ax.plot(sx, sy, color="tab:red", lw=1.5)
        ax.set_xlabel("Fitted values")
        ax.set_ylabel("Pearson residuals")
        ax.set_title(fit.formula, fontsize=9)
        return fig

    def qq(self, which: str = "resid"):
        """Normal QQ plot of the Pearson residuals (which="resid") or, one panel per term, of
        the conditional modes (which="ranef")."""
        Figure = _pyplot()
        fit = self._fit
        if which == "resid":
            fig = Figure(figsize=(5, 5), layout="constrained")
            ax = fig.subplots()
            r = np.sort(fit.residuals("pearson", scaled=True).to_numpy())
            q = stats.norm.ppf(ppoints(len(r)))
            ax.plot(q, r, "o", ms=3, color="tab:blue")
            q1, q3 = stats.norm.ppf([0.25, 0.75])
            y1, y3 = np.quantile(r, [0.25, 0.75])
            slope = (y3 - y1) / (q3 - q1)  # R's qqline through the quartiles
            ax.axline((q1, y1), slope=slope, color="0.5", lw=1)
            ax.set_xlabel("Standard normal quantiles")
            ax.set_ylabel("Scaled Pearson residuals")
            return fig
        if which != "ranef":
            raise ArgumentError(f"which must be 'resid' or 'ranef', not {which!r}")
        panels = [(g, c) for g, m in fit.ranef.items() for c in m.columns]
        fig = Figure(figsize=(3.2 * len(panels), 3.4), layout="constrained")
        axes = fig.subplots(1, len(panels), squeeze=False)[0]
        for ax, (g, c) in zip(axes, panels):
            b = np.sort(fit.ranef[g][c].to_numpy())
            ax.plot(stats.norm.ppf(ppoints(len(b))), b, "o", ms=3, color="tab:blue")
            ax.set_title(f"{g}: {c}", fontsize=10)
            ax.set_xlabel("Standard normal quantiles")
        return fig

    def profile(self, level: float = 0.95, npoints: int = 9):
        """zeta against each parameter (lme4's xyplot(profile(fit))): the profile evaluated
        at `npoints` values across and beyond the profile interval, the interval's limits
        as vertical lines and +-z as horizontal ones."""
        Figure = _pyplot()
        curves = profile_curves(self._fit, level, npoints)
        z = stats.norm.ppf(0.5 + level / 2)
        ncol = min(4, len(curves))
        nrow = -(-len(curves) // ncol)
        fig = Figure(figsize=(3.0 * ncol, 2.6 * nrow), layout="constrained")
        axes = fig.subplots(nrow, ncol, squeeze=False).ravel()
        for ax, (name, c) in zip(axes, curves.items()):
            ax.plot(c["x"], c["zeta"], "-o", ms=3, color="tab:blue")
            for lim in (c["lower"], c["upper"]):
                if np.isfinite(lim):
                    ax.axvline(lim, color="tab:red", lw=0.8, ls="--")
            ax.axhline(z, color="0.6", lw=0.8)
            ax.axhline(-z, color="0.6", lw=0.8)
            ax.set_title(name, fontsize=9)
            ax.set_ylabel("ζ")
        for ax in axes[len(curves) :]:
            ax.set_visible(False)
        return fig


def profile_curves(fit, level: float = 0.95, npoints: int = 9) -> dict[str, dict]:
    """Per parameter: x (values), zeta (the signed root deviance at them), the estimate and
    the profile limits.  The zeta functions are lmmfast._inference.profile's own."""
    from .._inference import profile as prof
    from .._inference.intervals import parameters

    limits = fit.confint("profile", level)
    ml = fit.refit_ml()
    dev = ml._dev
    est = parameters(ml)
    nv = len(est) - len(ml.beta)
    lower, upper = prof._lower_bounds(ml), prof._upper_bounds(ml)
    base = prof._varpar_deviance(dev, ml, est.to_numpy()[:nv])
    out = {}
    for w, name in enumerate(est.index):
        if w < nv:
            args = (prof._VarianceProfile, dev, ml, est.to_numpy()[:nv], w, lower, upper, base)
        else:
            args = (prof._FixedProfile, dev, ml, w - nv, base)
        x0 = float(est.iloc[w])
        lo, hi = (float(v) for v in limits.loc[name])
        bound_lo = lower[w] + (1e-6 if lower[w] == -1 else 0.0)  # |cor| < 1
        bound_hi = upper[w] - (1e-6 if upper[w] == 1 else 0.0)
        half = npoints // 2
        xs, zs = [x0], [0.0]
        for lim, sign in ((lo, -1), (hi, 1)):
            span = abs(lim - x0) if np.isfinite(lim) else max(abs(x0), 1.0)
            grid = x0 + sign * 1.1 * span * np.linspace(0, 1, half + 1)[1:]
            grid = np.unique(np.r_[grid, [lim] if np.isfinite(lim) else []])
            grid = np.clip(grid, bound_lo, bound_hi)
            for x in np.unique(grid)[::sign]:
                try:  # a fresh search from the estimate at each point: no path dependence
                    z = args[0](*args[1:])(float(x))
                except (FloatingPointError, ArithmeticError, ValueError):
                    break  # the profile's search failed out there: stop this side
                xs.append(float(x))
                zs.append(z)
        o = np.argsort(xs)
        out[name] = {"x": np.array(xs)[o], "zeta": np.array(zs)[o], "estimate": x0,
                     "lower": lo, "upper": hi}  # fmt: skip
    return out
