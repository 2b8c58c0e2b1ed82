"""lmerTest's anova(fit, type, ddf), ranova(fit) and contest(fit, L) against lmerTest 3.1.

Reference: tests/reference/refs_present.json, made by tests/reference/refs_present.R (lme4
1.1-31, lmerTest, pbkrtest).  The F tests move with theta at first order, and lmmfast's and
lme4's optima differ by up to ~1e-6 in theta (objectives equal to 1e-10: the optimum is that
flat), so the tables are compared (a) at lme4's theta, where the computation itself is
tested to 1e-6 relative, and (b) as fitted, to 1e-5 relative.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from attheta import at_theta

import lmmfast
from lmmfast._errors import ArgumentError

REF = json.loads((Path(__file__).parent / "reference" / "refs_present.json").read_text())
F_COLUMNS = ["Sum Sq", "Mean Sq", "NumDF", "DenDF", "F value", "Pr(>F)"]
TOL_AT_THETA = 1e-6  # lmerTest's numbers at lme4's theta (the issue's tolerance)
TOL_FITTED = 1e-5  # at lmmfast's own optimum (theta differs from lme4's by ~1e-6)


def _data() -> dict[str, pd.DataFrame]:
    """The bundled data with the derived factors refs_present.R defines."""
    s = lmmfast.datasets.load("sleepstudy")
    rank = {k: i for i, k in enumerate(sorted(s["Subject"].unique(), key=int))}
    s["grp"] = np.where(s["Subject"].map(rank) < 9, "a", "b")
    s["period"] = "p" + (s["Days"] // 3).astype(str)
    c = lmmfast.datasets.load("cake")
    c["temperature"] = c["temperature"].astype(str)
    r = lmmfast.datasets.load("rikz")
    r["fExp"] = r["Exposure"].astype(str)
    p = lmmfast.datasets.load("penicillin")
    p["sgrp"] = np.where(p["sample"].isin(["A", "B", "C"]), "s1", "s2")
    p["pgrp"] = np.select([p["plate"].isin(list("abcdefgh")), p["plate"].isin(list("ijklmnop"))],
                          ["p1", "p2"], "p3")  # fmt: skip
    return {"sleepstudy": s, "cake": c, "RIKZ": r, "Pastes": lmmfast.datasets.load("pastes"),
            "Penicillin": p}  # fmt: skip


DATA = _data()


SUM = ', contrasts = list(fExp = "contr.sum")'  # R's sum coding is formulaic's C(, contr.sum)


def _fit(call: str):
    formula = call.replace(SUM, "")
    m = re.match(r"lmer\((.*), data = (\w+)(, REML = FALSE)?, control = ctrl\)", formula)
    formula = m.group(1)
    if SUM in call:
        formula = formula.replace("fExp", "C(fExp, contr.sum)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return lmmfast.lmer(formula, DATA[m.group(2)], REML=not m.group(3))


def _rel(x, y) -> float:
    x, y = np.asarray(x, float), np.atleast_1d(np.array(y, dtype=float))
    return float(np.max(np.abs(x - y) / np.maximum(np.abs(y), 1e-300)))


def _check(table: pd.DataFrame, ref: dict, tol: float, what: str) -> None:
    names = ref["rownames"] if isinstance(ref["rownames"], list) else [ref["rownames"]]
    assert [n.replace("C(fExp, contr.sum)", "fExp") for n in table.index] == names, what
    for col in F_COLUMNS:
        assert _rel(table[col], ref[col]) < tol, (what, col, table[col].tolist(), ref[col])


ANOVA_IDS = sorted(REF["anova"])


@pytest.mark.parametrize("model", ANOVA_IDS)
def test_anova_tables_match_lmertest_at_lme4s_theta(model):
    e = REF["anova"][model]
    fit = at_theta(_fit(e["call"]), e["theta"])
    assert abs(fit.objective - e["objective"]) < 1e-8 * e["objective"]
    for key, ref in e.items():
        if "_" in key and key.rsplit("_", 1)[1] in ("1", "2", "3"):
            ddf, t = key.rsplit("_", 1)
            _check(lmmfast.anova(fit, type=int(t), ddf=ddf), ref, TOL_AT_THETA, (model, key))


@pytest.mark.parametrize("model", ANOVA_IDS)
def test_anova_tables_match_lmertest_as_fitted(model):
    e = REF["anova"][model]
    fit = _fit(e["call"])
    for type in (1, 2, 3):
        _check(lmmfast.anova(fit, type=type), e[f"satterthwaite_{type}"], TOL_FITTED, model)
        if e["REML"]:
            ref = e[f"kenward-roger_{type}"]
            _check(lmmfast.anova(fit, type=type, ddf="kenward-roger"), ref, TOL_FITTED, model)


def test_type3_hypotheses_do_not_depend_on_the_coding_and_types_differ():
    e = REF["anova"]["rikz_exposure"]
    fit = _fit(e["call"])
    a3 = lmmfast.anova(fit, type="III")
    # the same model with another reference level (another contrast coding)
    d = DATA["RIKZ"].copy()
    d["fExp"] = d["fExp"].map({"10": "b10", "11": "c11", "8": "a8"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        other = lmmfast.lmer("Richness ~ NAP * fExp + (1 | Beach)", d)
    assert other.xnames != fit.xnames
    b3 = lmmfast.anova(other, type=3)
    # the hypotheses (so F, sums of squares, NumDF) are the same; the multi-df DenDF combines
    # the df of a basis of contrasts and depends on the basis, in lmerTest as here
    cols = ["Sum Sq", "NumDF", "F value"]
    assert np.allclose(a3[cols].to_numpy(), b3[cols].to_numpy(), rtol=1e-5)
    assert np.allclose(a3["DenDF"].iloc[0], b3["DenDF"].iloc[0], rtol=1e-5)  # 1 df: unique
    # other codings: lmerTest's hypotheses of the treatment-coded design, mapped to their
    # coefficients, so the whole table (DenDF too) is the treatment-coded fit's
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summed = lmmfast.lmer("Richness ~ NAP * C(fExp, contr.sum) + (1 | Beach)", DATA["RIKZ"])
    c3 = lmmfast.anova(at_theta(summed, fit.theta), type=3)
    assert np.allclose(a3.to_numpy(), c3.to_numpy(), rtol=1e-7)
    a1 = lmmfast.anova(fit, type=1)
    assert not np.allclose(a1["F value"], a3["F value"], rtol=1e-3)  # unbalanced: 1 != 3
    assert a3.attrs["heading"] == "Type III Analysis of Variance Table with Satterthwaite's method"


def test_several_fits_keep_the_likelihood_ratio_table():
    s = DATA["sleepstudy"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f0 = lmmfast.lmer("Reaction ~ Days + (Days | Subject)", s, REML=False)
        f1 = lmmfast.lmer("Reaction ~ Days * grp + (Days | Subject)", s, REML=False)
        t = lmmfast.anova(f0, f1)
    assert list(t.columns) == ["npar", "AIC", "BIC", "logLik", "deviance", "Chisq", "Df",
                               "Pr(>Chisq)"]  # fmt: skip
    assert t["Df"].iloc[1] == 2


@pytest.mark.parametrize("model", sorted(REF["ranova"]))
def test_ranova_matches_lmertest(model):
    ref = REF["ranova"][model]
    t = lmmfast.ranova(_fit(REF["anova"][model]["call"]))
    assert list(t.index) == ref["rownames"]
    assert list(t.columns) == ["npar", "logLik", "AIC", "LRT", "Df", "Pr(>Chisq)"]
    for col in t.columns:
        y = np.array([np.nan if v is None else v for v in ref[col]], float)
        ok = ~np.isnan(y)
        assert np.all(np.isnan(t[col].to_numpy()[~ok]))
        assert _rel(t[col].to_numpy()[ok], y[ok]) < 1e-6, (col, t[col].tolist(), ref[col])


CONTESTS = [
    ("L1_joint", "L1", {}),
    ("L2_joint", "L2", {}),
    ("L3_joint", "L3", {}),
    ("L2_rhs", "L2", {"rhs": [10, 5]}),
    ("L2_kr", "L2", {"ddf": "kenward-roger"}),
]


@pytest.mark.parametrize("key,L,kw", CONTESTS)
def test_contest_f_tests_match_lmertest(key, L, kw):
    c = REF["contest"]["sleep_group"]
    fit = at_theta(_fit(REF["anova"]["sleep_group"]["call"]), c["theta"])
    t = fit.contest(np.array(c[L]), **kw)
    for col in F_COLUMNS:
        assert _rel(t[col], c[key][col]) < TOL_AT_THETA, (key, col)


@pytest.mark.parametrize("key,ddf", [("L1_t", "satterthwaite"), ("L1_t_kr", "kenward-roger")])
def test_contest_t_form_matches_lmertest(key, ddf):
    c = REF["contest"]["sleep_group"]
    fit = at_theta(_fit(REF["anova"]["sleep_group"]["call"]), c["theta"])
    t = fit.contest(c["L1"], joint=False, ddf=ddf)
    assert list(t.columns) == ["Estimate", "Std. Error", "df", "t value", "lower", "upper",
                               "Pr(>|t|)"]  # fmt: skip
    for col in t.columns:
        assert _rel(t[col], c[key][col]) < TOL_AT_THETA, (key, col)
    # one row: the F test is the square of the t test
    f = fit.contest(c["L1"], ddf=ddf)
    assert np.isclose(f["F value"].iloc[0], t["t value"].iloc[0] ** 2, rtol=1e-10)


def test_contest_and_anova_refuse_bad_arguments():
    fit = _fit(REF["anova"]["sleep_group"]["call"])
    with pytest.raises(ArgumentError, match="4 columns"):
        fit.contest([1, 0])
    with pytest.raises(ArgumentError, match="ddf"):
        fit.contest([0, 1, 0, 0], ddf="wald")
    with pytest.raises(ArgumentError, match="type"):
        lmmfast.anova(fit, type=4)
    ml = _fit(REF["anova"]["cake_numeric_ml"]["call"])
    with pytest.raises(ArgumentError, match="REML"):
        lmmfast.anova(ml, ddf="kenward-roger")
    L = pd.DataFrame([[0, 1, 0, 0]], columns=fit.xnames)
    assert np.isclose(fit.contest(L)["F value"].iloc[0], fit.contest([0, 1, 0, 0])["F value"][0])


# --- the term structure as R's terms() gives it (lmerTest's reading of it) ---------------------
TERMS_REF = json.loads((Path(__file__).parent / "reference" / "refs_anova_terms.json").read_text())


def _fit_terms(model: str):
    """The models of refs_anova_terms.R; contrasts= as lmer's argument."""
    call = TERMS_REF["anova"][model]["call"]
    m = re.match(r"lmer\((.*), data = (\w+)(?:, contrasts = list\((\w+) = \"contr\.(\w+)\"\))?"
                 r", control = ctrl\)", call)  # fmt: skip
    contrasts = {m.group(3): m.group(4)} if m.group(3) else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return lmmfast.lmer(m.group(1), DATA[m.group(2)], contrasts=contrasts)


@pytest.mark.parametrize("model", sorted(TERMS_REF["anova"]))
def test_anova_term_structure_matches_lmertest(model):
    # recipe/temperature: terms() codes recipe by indicators in recipe:temperature, so recipe
    # is contained in no term (types 2 and 3 differ from a by-variables containment);
    # recipe * poly(temp, 2): a matrix variable is not numeric for lmerTest; helmert coding
    # given as contrasts=: type III is the treatment coding's.  At lme4's theta, 1e-6.
    e = TERMS_REF["anova"][model]
    fit = _fit_terms(model)
    assert fit.xnames == e["xnames"]
    fit = at_theta(fit, e["theta"])
    assert abs(fit.objective - e["objective"]) < 1e-8 * e["objective"]
    for ddf in ("satterthwaite", "kenward-roger"):
        for t in (1, 2, 3):
            if f"{ddf}_{t}" not in e:  # see refs_anova_terms.R (cake_poly, type 1)
                continue
            ref = e[f"{ddf}_{t}"]
            _check(lmmfast.anova(fit, type=t, ddf=ddf), ref, TOL_AT_THETA, (model, ddf, t))


def test_sum_coding_by_the_contrasts_argument_matches_lmertest():
    # the reference's own call: lmer(..., contrasts = list(fExp = "contr.sum"))
    e = REF["anova"]["rikz_exposure_sum"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = lmmfast.lmer("Richness ~ NAP * fExp + (1 | Beach)", DATA["RIKZ"],
                           contrasts={"fExp": "sum"})  # fmt: skip
    fit = at_theta(fit, e["theta"])
    for t in (1, 2, 3):
        _check(lmmfast.anova(fit, type=t), e[f"satterthwaite_{t}"], TOL_AT_THETA, t)


def test_type3_of_a_fit_missing_a_cell_is_refused():
    # no row with recipe C at temperature 225: the fit drops a column; lmerTest's type III
    # hypotheses then come from the data's rows, which the grid does not reproduce
    c = DATA["cake"]
    d = c[~((c["recipe"] == "C") & (c["temperature"] == "225"))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = lmmfast.lmer("angle ~ recipe * temperature + (1 | recipe:replicate)", d)
    assert fit.dropped_columns
    with pytest.raises(ArgumentError, match="rank-deficient"):
        lmmfast.anova(fit, type=3)
    assert lmmfast.anova(fit, type=1).shape[0] == 3  # types 1 and 2 use the data's X'X
