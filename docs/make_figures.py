"""Make the README's figures: python docs/make_figures.py  ->  docs/img/*.png.

Each is one of fit.plot's methods on a bundled data set, drawn with matplotlib's Agg canvas."""

from __future__ import annotations

import warnings
from pathlib import Path

import lmmfast

OUT = Path(__file__).parent / "img"


def main() -> None:
    OUT.mkdir(exist_ok=True)
    sleep = lmmfast.datasets.load("sleepstudy")
    fit = lmmfast.lmer("Reaction ~ Days + (Days | Subject)", sleep)
    figures = {
        "ranef.png": fit.plot.ranef(),
        "resid.png": fit.plot.resid(),
        "qq.png": fit.plot.qq(),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the ML refit for the profile
        figures["profile.png"] = fit.plot.profile()
    for name, fig in figures.items():
        fig.savefig(OUT / name, dpi=72)
        print("wrote", OUT / name)


if __name__ == "__main__":
    main()
