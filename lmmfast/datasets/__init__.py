"""Small example data sets bundled with lmmfast (exported unchanged from R's lme4 1.1-31).

=============  =====  ============================================================
name           rows   description
=============  =====  ============================================================
rikz           45     species richness on 9 Dutch beaches (Zuur et al. 2009, ch. 5)
sleepstudy     180    reaction time by days of sleep deprivation, 18 subjects
dyestuff       30     yield by batch of dyestuff, 6 batches
dyestuff2      30     simulated yield by batch (a singular fit)
penicillin     144    diameter of growth-inhibition zone, crossed plate x sample
pastes         60     paste strength, cask nested in batch
cake           270    breakage angle by recipe and temperature
=============  =====  ============================================================

Grouping columns that R treats as factors (Beach, Subject, replicate) are read as
strings here, so that they are categorical in formulas, as in R.
"""

from __future__ import annotations

from importlib import resources

import pandas as pd

_FILES = {
    "rikz": ("RIKZ.csv", ["Beach"]),
    "sleepstudy": ("sleepstudy.csv", ["Subject"]),
    "dyestuff": ("Dyestuff.csv", []),
    "dyestuff2": ("Dyestuff2.csv", []),
    "penicillin": ("Penicillin.csv", []),
    "pastes": ("Pastes.csv", []),
    "cake": ("cake.csv", ["replicate"]),
}

__all__ = ["load", "names"]


def names() -> list[str]:
    """The names accepted by :func:`load`."""
    return sorted(_FILES)


def load(name: str) -> pd.DataFrame:
    """Load a bundled data set by name (case-insensitive), e.g. ``load("sleepstudy")``."""
    key = name.lower()
    if key not in _FILES:
        raise KeyError(f"no data set {name!r}; choose one of {', '.join(names())}")
    fname, as_str = _FILES[key]
    with resources.files(__name__).joinpath(fname).open("r") as fh:
        df = pd.read_csv(fh, dtype={c: str for c in as_str})
    return df
