"""summary() against lme4's own printouts.

Source: tests/reference/summaries/<id>.txt, written by tests/reference/refs_extra.R
(print(summary(fit)) from lme4 1.1-31, R 4.2.2, Debian bookworm), and the lecture notes'
RIKZ printout (shared/seed).  Lines must be identical, except that a number may differ by
one unit in its last printed digit where lme4's optimum and ours straddle a rounding tie
(ours is never the worse optimum: see test_lme4_reference.py).  The "Control:" line
(lme4's control argument, which lmer() here does not take) is not compared.
"""

import re
from pathlib import Path

import numpy as np
import pytest
from conftest import load_reference_data

import lmmfast

SUMMARIES = Path(__file__).parent / "reference" / "summaries"
NUMBER = re.compile(r"-?\d+\.?\d*")


def test_rikz_summary_is_the_lecture_notes_printout():
    # lecture_notes_rikz.txt: the lme4 printout in shared/seed (TMA4315, module 7), verbatim
    RIKZ = lmmfast.datasets.load("rikz")
    fit = lmmfast.lmer("Richness ~ NAP + (1 | Beach)", data=RIKZ)
    assert str(fit.summary()) == (SUMMARIES / "lecture_notes_rikz.txt").read_text().rstrip("\n")


def _fits():
    RIKZ = load_reference_data("rikz")
    sleepstudy = load_reference_data("sleepstudy")
    i = np.arange(1, len(sleepstudy) + 1)
    sleepstudy["w"] = 0.5 + (i % 4) / 2  # as refs_extra.R
    sleepstudy["o"] = (i % 5) - 2
    Dyestuff = load_reference_data("dyestuff")
    Dyestuff2 = load_reference_data("dyestuff2")
    Penicillin = load_reference_data("penicillin")
    Pastes = load_reference_data("pastes")
    cake = load_reference_data("cake")
    lmer = lmmfast.lmer
    return {
        "rikz_int_reml": lambda: lmer("Richness ~ NAP + (1 | Beach)", RIKZ),
        "rikz_int_ml": lambda: lmer("Richness ~ NAP + (1 | Beach)", RIKZ, REML=False),
        "rikz_slope_ml": lambda: lmer("Richness ~ NAP + (NAP | Beach)", RIKZ, REML=False),
        "sleep_slope_reml": lambda: lmer("Reaction ~ Days + (Days | Subject)", sleepstudy),
        "sleep_uncorr_reml": lambda: lmer("Reaction ~ Days + (Days || Subject)", sleepstudy),
        "dyestuff_reml": lambda: lmer("Yield ~ 1 + (1 | Batch)", Dyestuff),
        "dyestuff2_singular_reml": lambda: lmer("Yield ~ 1 + (1 | Batch)", Dyestuff2),
        "penicillin_crossed_reml": lambda: lmer(
            "diameter ~ 1 + (1 | plate) + (1 | sample)", Penicillin
        ),
        "pastes_nested_reml": lambda: lmer("strength ~ 1 + (1 | batch/cask)", Pastes),
        "cake_interaction_reml": lambda: lmer(
            "angle ~ recipe * temp + (1 | recipe:replicate)", cake
        ),
        "sleep_weights_reml": lambda: lmer(
            "Reaction ~ Days + (Days | Subject)", sleepstudy, weights="w"
        ),
        "sleep_weights_ml": lambda: lmer(
            "Reaction ~ Days + (1 | Subject)", sleepstudy, weights="w", REML=False
        ),
        "sleep_offset_reml": lambda: lmer(
            "Reaction ~ Days + (Days | Subject)", sleepstudy, offset="o"
        ),
    }


FITS = _fits()


def _same_up_to_last_digit(expected: str, got: str, rel: float = 1e-7) -> bool:
    if NUMBER.sub("#", expected) != NUMBER.sub("#", got):
        return False
    for a, b in zip(NUMBER.findall(expected), NUMBER.findall(got)):
        if a == b:
            continue
        dec = len(a.split(".")[1]) if "." in a else 0
        # one unit in the last digit, or 1e-7 relative (Satterthwaite's df are shown with up
        # to 9 digits; lme4's and lmmfast's optima agree to ~1e-8, which moves them that much)
        tol = max(1.01 * 10.0**-dec, rel * abs(float(a)))
        if len(a) != len(b) or abs(float(a) - float(b)) > tol:
            return False
    return True


@pytest.mark.parametrize("key", sorted(FITS))
def test_summary_matches_lme4_printout(key):
    expected = (SUMMARIES / f"{key}.txt").read_text().splitlines()
    expected = [line for line in expected if not line.startswith("Control:")]
    got = str(FITS[key]().summary()).splitlines()
    if key == "sleep_uncorr_reml":
        # lme4 echoes its expansion of (Days || Subject); lmmfast shows what the user wrote
        assert got[1] == "Formula: Reaction ~ Days + (Days || Subject)"
        got[1] = expected[1]
    opt = FITS[key]().optsummary.optimizer
    if opt != "LN_BOBYQA":  # lme4 names its optimizer; lmmfast names the one it used
        tag = f"optimizer ({opt}) convergence code"
        got = [g.replace(tag, "optimizer (bobyqa) convergence code") for g in got]
    assert len(got) == len(expected)
    exact = sum(e == g for e, g in zip(expected, got))
    for e, g in zip(expected, got):
        assert e == g or _same_up_to_last_digit(e, g), f"\nlme4:    {e!r}\nlmmfast: {g!r}"
    assert exact >= len(expected) - 1  # at most one line may show a rounding tie


def test_summary_reports_dropped_rows():
    ss = lmmfast.datasets.load("sleepstudy")
    ss.loc[[0, 1], "Reaction"] = np.nan
    text = str(lmmfast.lmer("Reaction ~ Days + (1 | Subject)", ss).summary())
    assert "(2 observations deleted due to missingness)" in text


def test_many_fixed_effects_hide_the_correlation_matrix():
    rng = np.random.default_rng(1)
    df = {"y": rng.normal(size=300), "g": rng.integers(0, 10, 300).astype(str)}
    df.update({f"x{k}": rng.normal(size=300) for k in range(13)})
    formula = "y ~ " + " + ".join(f"x{k}" for k in range(13)) + " + (1 | g)"
    text = str(lmmfast.lmer(formula, df).summary())
    assert "Correlation matrix not shown by default, as p = 14 > 12." in text


@pytest.mark.parametrize(
    "key",
    ["rikz_int_reml", "sleep_slope_reml", "penicillin_crossed_reml", "cake_interaction_reml",
     "rikz_slope_ml"],
)  # fmt: skip
def test_satterthwaite_summary_matches_lmertest_printout(key):
    # summaries/<id>_satterthwaite.txt: lmerTest 3.1-3's summary(fit, ddf = "Satterthwaite")
    expected = (SUMMARIES / f"{key}_satterthwaite.txt").read_text().splitlines()
    expected = [line for line in expected if not line.startswith("Control:")]
    fit = FITS[key]()
    got = str(fit.summary(ddf="satterthwaite")).splitlines()
    opt = fit.optsummary.optimizer
    got = [
        g.replace(f"optimizer ({opt}) convergence", "optimizer (bobyqa) convergence") for g in got
    ]
    assert len(got) == len(expected)
    for e, g in zip(expected, got):
        # Satterthwaite's df agree with lmerTest to 1.5e-6 relative (test_postfit): lmerTest
        # differentiates numerically. On cake, temp's df is 222 exactly (balanced, within
        # replicate); lmerTest prints 221.999986, lmmfast 222.000020.
        same = _same_up_to_last_digit(e, g, rel=1.5e-6)
        assert e == g or same, f"\nlmerTest: {e!r}\nlmmfast:  {g!r}"
