"""lmer's arguments as lme4 users expect them: type-checked arguments, one Control object
(lmerControl), verbose output and the "lmmfast" logger, lme4's confint default, typed
warnings (duplicated random terms, the anova refit)."""

import ast
import inspect
import logging
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import load_reference_data

import lmmfast

SS = load_reference_data("sleepstudy")
F = "Reaction ~ Days + (Days | Subject)"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"REML": "FALSE"},  # used to fit by REML and store the string
        {"REML": 0},
        {"REML": None},
        {"optimizer": 1},
        {"optimizer": "nelder-mead"},
        {"control": {"optimizer": "bobyqa"}},
        {"weights": np.ones((180, 2))},
        {"offset": np.zeros((180, 1))},
        {"optimizer": "lbfgs", "control": lmmfast.Control(optimizer="bobyqa")},
    ],
    ids=str,
)
def test_lmer_arguments_are_type_checked(kwargs):
    with pytest.raises(lmmfast.ArgumentError):
        lmmfast.lmer(F, SS, **kwargs)


def test_a_numpy_bool_is_a_bool():
    assert not lmmfast.lmer(F, SS, REML=np.False_).reml


@pytest.mark.parametrize(
    "kwargs",
    [{"optimizer": "x"}, {"maxeval": 0}, {"maxeval": 1.5}, {"ftol_rel": -1},
     {"xtol_rel": float("nan")}, {"verbose": "yes"}, {"check_conv": "maybe"}],
    ids=str,
)  # fmt: skip
def test_control_checks_its_settings(kwargs):
    with pytest.raises(lmmfast.ArgumentError):
        lmmfast.Control(**kwargs)


def test_control_chooses_the_optimizer_and_its_limits():
    auto = lmmfast.lmer(F, SS)
    bob = lmmfast.lmer(F, SS, control=lmmfast.Control(optimizer="bobyqa"))
    assert bob.optsummary.optimizer == "LN_BOBYQA" and auto.optsummary.optimizer == "L-BFGS-B"
    assert bob.objective == pytest.approx(auto.objective, rel=1e-9)
    short = lmmfast.Control(optimizer="bobyqa", maxeval=5)
    with pytest.warns(lmmfast.ConvergenceWarning, match="did not converge"):
        fit = lmmfast.lmer(F, SS, control=short)
    assert fit.optsummary.feval == 5 and not fit.optsummary.converged
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lmmfast.lmer(F, SS, control=lmmfast.Control(optimizer="bobyqa", maxeval=5,
                                                    check_conv=False))  # fmt: skip
    with pytest.raises(lmmfast.ConvergenceError):
        lmmfast.lmer(F, SS, control=lmmfast.Control(optimizer="bobyqa", maxeval=5,
                                                    check_conv="stop"))  # fmt: skip
    with pytest.warns(lmmfast.ConvergenceWarning, match="Newton step"):  # stopped early
        loose = lmmfast.lmer(F, SS, control=lmmfast.Control(optimizer="bobyqa", xtol_rel=1e-2))
    assert loose.optsummary.feval < bob.optsummary.feval  # the tolerance reaches nlopt


def test_verbose_prints_each_evaluation(capsys):
    control = lmmfast.Control(optimizer="bobyqa", maxeval=7, verbose=True, check_conv="ignore")
    fit = lmmfast.lmer(F, SS, control=control)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == fit.optsummary.feval == 7
    assert lines[0].startswith("    1: objective ") and "theta [1., 0., 1.]" in lines[0]
    assert all("objective" in line and "theta" in line for line in lines)


def test_the_lmmfast_logger(caplog):
    with caplog.at_level(logging.DEBUG, logger="lmmfast"):
        fit = lmmfast.lmer(F, SS)
    records = [r for r in caplog.records if r.name == "lmmfast"]
    debug = [r for r in records if r.levelno == logging.DEBUG]
    info = [r for r in records if r.levelno == logging.INFO]
    assert len(debug) >= 5 and "objective" in debug[0].getMessage()
    assert len(info) == 1 and f"{fit.objective:.6g}"[:6] in info[0].getMessage()


def test_duplicated_random_terms_warn():
    with pytest.warns(lmmfast.DuplicateTermWarning, match=r"\(\(Intercept\) \| Subject\)"):
        lmmfast.lmer("Reaction ~ Days + (1 | Subject) + (1 | Subject)", SS)
    with warnings.catch_warnings():
        warnings.simplefilter("error", lmmfast.DuplicateTermWarning)
        lmmfast.lmer("Reaction ~ Days + (1 | Subject) + (0 + Days | Subject)", SS)


def test_confint_defaults_to_profile_as_lme4():
    fit = lmmfast.lmer("Richness ~ NAP + (1 | Beach)", load_reference_data("rikz"))
    assert inspect.signature(fit.confint).parameters["method"].default == "profile"
    default = fit.confint()
    assert "sd_(Intercept)|Beach" in default.index  # wald would give the fixed effects only
    assert default.equals(fit.confint("profile"))


def test_anova_refit_warning_is_typed():
    f0 = lmmfast.lmer("Reaction ~ 1 + (1 | Subject)", SS)
    f1 = lmmfast.lmer("Reaction ~ Days + (1 | Subject)", SS)
    with pytest.warns(lmmfast.RefitWarning, match="refitting model"):
        lmmfast.anova(f0, f1)


def _warn_calls():
    root = Path(lmmfast.__file__).parent
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "warn"
                    and getattr(node.func.value, "id", None) == "warnings"):  # fmt: skip
                cat = (
                    node.args[1]
                    if len(node.args) > 1
                    else next((k.value for k in node.keywords if k.arg == "category"), None)
                )
                yield f"{path.name}:{node.lineno}", cat


@pytest.mark.parametrize("where,category", list(_warn_calls()), ids=lambda x: str(x)[:30])
def test_every_warning_lmmfast_raises_is_typed_and_exported(where, category):
    assert isinstance(category, ast.Name), f"{where}: no category"
    cls = getattr(lmmfast, category.id, None)
    assert category.id in lmmfast.__all__ and issubclass(cls, Warning), where
    assert cls is not UserWarning and cls.__module__.startswith("lmmfast"), where
