"""Jupyter's _repr_html_ of a fit and its summary: lme4's blocks as HTML tables whose cells
are the text summary's, digit for digit (the text is tested against lme4's printouts in
test_summary.py)."""

from __future__ import annotations

import warnings
from html.parser import HTMLParser

import pytest

import lmmfast


class _Tables(HTMLParser):
    """The cell texts of every <table>, row by row; and the text outside the tables."""

    def __init__(self):
        super().__init__()
        self.tables, self.text, self._cell = [], [], None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = ""

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.tables[-1][-1].append(self._cell)
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data
        else:
            self.text.append(data)


def _fits():
    load = lmmfast.datasets.load
    s = load("sleepstudy")
    slope = "Reaction ~ Days + (Days | Subject)"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "slope": (lmmfast.lmer(slope, s), None),
            "satterthwaite": (lmmfast.lmer(slope, s), "satterthwaite"),
            "ml": (lmmfast.lmer("Richness ~ NAP + (1 | Beach)", load("rikz"), REML=False), None),
            "singular": (lmmfast.lmer("Yield ~ 1 + (1 | Batch)", load("dyestuff2")), None),
            "cake": (
                lmmfast.lmer("angle ~ recipe * temp + (1 | recipe:replicate)", load("cake")),
                "kenward-roger",
            ),
        }


FITS = _fits()


@pytest.mark.parametrize("name", sorted(FITS))
def test_html_tables_hold_the_text_summarys_cells(name):
    fit, ddf = FITS[name]
    summary = fit.summary(ddf=ddf)
    text = str(summary)
    p = _Tables()
    p.feed(summary._repr_html_())
    lines = text.split("\n")
    # every table row is a line of the printout: the same cells in the same order
    for table in p.tables:
        for row in table:
            cells = " ".join(c for c in row if c.strip()).split()
            assert any(line.split() == cells for line in lines), (row, text)
    n_rows = sum(len(t) for t in p.tables)
    nfix = len(fit.xnames)
    expected = 2 + (1 + sum(t.q for t in fit.terms) + 1) + (1 + nfix)  # residuals, random, fixed
    expected += nfix if nfix > 1 else 0  # the correlation block
    if fit.reml is False:
        expected += 2  # AIC BIC logLik deviance df.resid
    assert n_rows == expected
    outside = " ".join(p.text)
    assert "Number of obs" in outside
    if fit.is_singular:
        assert "boundary (singular) fit" in outside
    assert fit._repr_html_() == fit.summary()._repr_html_()


def test_html_escapes_names():
    fit, _ = FITS["slope"]
    h = fit.summary(ddf="satterthwaite")._repr_html_()
    assert "Pr(&gt;|t|)" in h and "&lt; 2e-16" in h
