"""Design.terms() and the grid evaluation the ANOVA hypotheses use (design.py), against the
model columns the Design builds on the data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lmmfast._sources.design import Design, _variable, build_design
from lmmfast._sources.rfunctions import Env
from lmmfast._sources.rterms import r_terms
from lmmfast._sources.rvalues import Factor

RNG = np.random.default_rng(3)
DATA = pd.DataFrame({
    "x": RNG.uniform(1, 2, 60), "f": np.tile(list("abc"), 20), "g": np.repeat(list("uv"), 30),
    "z": RNG.normal(size=60),
})  # fmt: skip


@pytest.mark.parametrize("rhs", [
    "f * g", "0 + f * x", "f / g", "x + f:x", "poly(x, 2) * f", "0 + g + f:g", "scale(z) + f",
    "f:g", "x",
])  # fmt: skip
def test_terms_own_the_columns_model_matrix_builds(rhs):
    cols, names, design = build_design(rhs, DATA, "y ~ " + rhs)
    intercept, terms = design.terms()
    owned = [j for t in terms for j in t.columns]
    assert owned == list(range(int(intercept), len(names)))  # every column, once, in order
    for t in terms:
        assert t.label == ":".join(t.variables)
        for j in t.columns:  # a column's name lists the term's variables, first fastest
            parts = names[j].split(":")
            assert len(parts) == len(t.variables)
            assert all(p.startswith(v) for p, v in zip(parts, t.variables))
    # the same columns from the variables' values (as the type III grid passes them)
    rt = r_terms(rhs)
    env = Env(DATA, design.state, fitting=False)
    values = {lab: _variable(v, lab, env, design.kinds[lab])
              for v, lab in zip(rt.variables, rt.labels)}  # fmt: skip
    again, again_names = design.columns_of(values)
    assert again_names == names
    assert np.allclose(np.column_stack(again), np.column_stack(cols))


def test_factors_attribute_is_r_terms_coding():
    # R: attr(terms(~ f/g + f:x), "factors"): f:g codes f 2, g 1; f:x codes f 2, x 1
    _, _, design = build_design("f/g + f:x", DATA, "y ~ f/g + f:x")
    by = {t.label: dict(zip(t.variables, t.by_contrasts)) for t in design.terms()[1]}
    assert by == {"f": {"f": True}, "f:g": {"f": False, "g": True},
                  "f:x": {"f": False, "x": True}}  # fmt: skip


def test_treatment_recoding_and_overparameterized_design():
    cols, names, design = build_design("f * x", DATA, "y ~ f * x", {"f": "sum"})
    assert names == ["(Intercept)", "f1", "f2", "x", "f1:x", "f2:x"]
    tr = design.with_contrasts("treatment")
    assert design.kinds["f"]["contrast"] == "sum"  # the fit's own Design is not changed
    values = {"f": _factor(design), "x": np.array([1.0, 2.0, 3.0])}
    assert tr.columns_of(values)[1] == ["(Intercept)", "fb", "fc", "x", "fb:x", "fc:x"]
    rd, rdnames = design.overparameterized(values)
    assert rdnames == ["(Intercept)", "fa", "fb", "fc", "x", "fa:x", "fb:x", "fc:x"]
    assert np.allclose(np.column_stack(rd)[:, 5:], np.diag([1.0, 2.0, 3.0]))


def _factor(design: Design):
    return Factor(np.arange(3), design.levels("f"))


def test_plain_columns_design():
    d = Design.of_columns(False, ["x", "z"])
    intercept, terms = d.terms()
    assert not intercept and [t.columns for t in terms] == [(0,), (1,)]
    assert np.allclose(np.column_stack(d.columns(DATA)), DATA[["x", "z"]].to_numpy())
