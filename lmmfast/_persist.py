"""Safe persistence: fit.save(path) / lmmfast.load(path), data only, never code.

One .npz file: every array of the fit, plus a JSON document (stored as bytes) with the
scalars, names and the format version.  Loading uses numpy's allow_pickle=False, so a
file can not execute anything.  How to build model columns on new data is kept as data
too: plain column lists, or a formula with the categories of each categorical factor,
from which formulaic's ModelSpec is rebuilt on a tiny frame (formulas with stateful
transforms such as center() or poly() cannot be rebuilt so; predict(newdata) then says so).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import fields

import numpy as np
import pandas as pd

from ._control import Control
from ._errors import DataError, LMMError, NeedsDataError
from ._optimize import OptSummary
from ._result import LmerFit, TermInfo
from ._sources.design import Design
from ._stored import StoredObjective

FORMAT = "lmmfast-fit"
VERSION = 2  # 2: the objective's cross-products A and the control settings are stored
_STATEFUL = re.compile(r"\b(center|scale|standardize|poly|bs|cr|cs|cc|te|lag|hashed|split_by)\(")


class PersistenceError(LMMError, ValueError):
    """A file is not an lmmfast fit, or was written by an incompatible version."""


def save(fit: LmerFit, path: str | os.PathLike) -> None:
    if fit.fitted_values is None or fit._objective is None:
        raise NeedsDataError(
            "this fit was refitted from stored cross-products without its rows; save the fit "
            "it came from, or refit with data=<the data> first"
        )
    for name in fit._LAZY:  # compute what needs the data or the factorization
        getattr(fit, name)
    arrays = {
        "theta": fit.theta, "beta": fit.beta, "RX": fit.RX, "fitted_values": fit.fitted_values,
        "response": fit.response, "fitted_marginal": fit.fitted_marginal,
        "keep": np.asarray(fit._keep), "row_index": _index_values(fit.row_index),
        "opt_theta0": fit.optsummary.theta0, "opt_lower": fit.optsummary.lower,
        "opt_theta": fit.optsummary.theta,
    }  # fmt: skip
    if fit.weights is not None:
        arrays["weights"] = fit.weights
    if fit.offset_name == "(array)" and fit._offset is not None:
        arrays["offset"] = np.asarray(fit._offset, dtype=np.float64)
    objective_arrays, objective_meta = fit._objective.to_arrays()
    arrays.update({f"obj_{k}": v for k, v in objective_arrays.items()})
    if fit.optsummary.gradient is not None:
        arrays["opt_gradient"] = fit.optsummary.gradient
        arrays["opt_hessian"] = fit.optsummary.hessian
    terms = []
    for k, t in enumerate(fit.terms):
        arrays[f"term{k}_levels"] = np.array(t.levels, dtype=str)
        arrays[f"term{k}_b"] = t.b
        arrays[f"term{k}_lower"] = t.theta_lower
        arrays[f"term{k}_order"] = t.order
        terms.append({"group": t.group, "cnames": t.cnames, "factors": list(t.factors),
                      "spec": _spec_to_json(t.spec)})  # fmt: skip
    for g, v in fit.cond_var.items():
        arrays[f"condvar_{len(terms)}_{list(fit.cond_var).index(g)}"] = v
    opt = fit.optsummary
    meta = {
        "format": FORMAT, "version": VERSION, "formula": fit.formula, "reml": fit.reml,
        "xnames": fit.xnames, "sigma": fit.sigma, "objective": fit.objective, "nobs": fit.nobs,
        "terms": terms, "cond_var_groups": list(fit.cond_var),
        "dropped_columns": fit.dropped_columns, "n_dropped_rows": fit.n_dropped_rows,
        "data_name": fit.data_name, "factorization": fit.factorization,
        "theta_names": fit.theta_names, "weights_name": fit.weights_name,
        "offset_name": fit.offset_name, "fixed_spec": _spec_to_json(fit._fixed_spec),
        "objective_record": objective_meta, "control": _control_to_json(fit._optimizer),
        "optimizer": {"optimizer": opt.optimizer, "fmin": opt.fmin, "feval": opt.feval,
                      "converged": opt.converged, "message": opt.message,
                      "newton_decrement": opt.newton_decrement},
    }  # fmt: skip
    if getattr(opt, "krylov", None) is not None:  # method="krylov": its error report
        meta["krylov"] = opt.krylov.to_json()
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    with open(path, "wb") as fh:
        np.savez_compressed(fh, **{k: np.asarray(v) for k, v in arrays.items()})


def load(path: str | os.PathLike) -> LmerFit:
    """Read a fit written by fit.save(); no code is executed (numpy allow_pickle=False)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            a = {k: z[k] for k in z.files}
    except (ValueError, OSError) as e:
        raise PersistenceError(f"{path} is not an lmmfast fit file: {e}") from None
    if "meta" not in a:
        raise PersistenceError(f"{path} is not an lmmfast fit file (no metadata)")
    meta = json.loads(a.pop("meta").tobytes().decode("utf-8"))
    if meta.get("format") != FORMAT:
        raise PersistenceError(f"{path} is not an lmmfast fit file")
    if meta.get("version") != VERSION:
        raise PersistenceError(
            f"{path} has format version {meta.get('version')}; this lmmfast reads version "
            f"{VERSION}. Refit the model, or load it with the lmmfast version that wrote it."
        )
    terms = [
        TermInfo(
            d["group"],
            d["cnames"],
            a[f"term{k}_levels"].astype(object),
            a[f"term{k}_b"],
            a[f"term{k}_lower"],
            a[f"term{k}_order"],
            _spec_from_json(d["spec"]),
            tuple(d["factors"]),
        )  # fmt: skip
        for k, d in enumerate(meta["terms"])
    ]
    o = meta["optimizer"]
    stored = StoredObjective.from_arrays(
        {k[4:]: v for k, v in a.items() if k.startswith("obj_")}, meta["objective_record"]
    )
    opt = OptSummary(
        o["optimizer"], a["opt_theta0"], a["opt_lower"], theta=a["opt_theta"],
        fmin=o["fmin"], feval=o["feval"], converged=o["converged"], message=o["message"],
        gradient=a.get("opt_gradient"), hessian=a.get("opt_hessian"),
        newton_decrement=o["newton_decrement"],
    )  # fmt: skip
    if meta.get("krylov") is not None:
        from ._factor.krylov import KrylovReport

        opt.krylov = KrylovReport.from_json(meta["krylov"])
    fit = LmerFit(
        formula=meta["formula"], reml=meta["reml"], theta=a["theta"], beta=a["beta"],
        xnames=meta["xnames"], sigma=meta["sigma"], objective=meta["objective"], RX=a["RX"],
        nobs=meta["nobs"], terms=terms, fitted_values=a["fitted_values"],
        response=a["response"], weights=a.get("weights"), optsummary=opt,
        dropped_columns=meta["dropped_columns"], n_dropped_rows=meta["n_dropped_rows"],
        data_name=meta["data_name"], factorization=meta["factorization"],
        theta_names=meta["theta_names"], weights_name=meta["weights_name"],
        offset_name=meta["offset_name"], row_index=pd.Index(a["row_index"]),
        _keep=a["keep"], _fixed_spec=_spec_from_json(meta["fixed_spec"]),
        _offset=a.get("offset"), _objective=stored, _optimizer=Control(**meta["control"]),
    )  # fmt: skip
    groups = meta["cond_var_groups"]
    fit.__dict__["cond_var"] = {
        g: a[f"condvar_{len(terms)}_{i}"] for i, g in enumerate(groups)
    }  # the cached_property's value
    fit.__dict__["fitted_marginal"] = a["fitted_marginal"]
    fit._restore_objective()
    return fit


def _control_to_json(control) -> dict:
    c = control if isinstance(control, Control) else Control(optimizer=control)
    return {f.name: getattr(c, f.name) for f in fields(c)}


def _index_values(index) -> np.ndarray:
    v = np.asarray(index)
    return v if v.dtype.kind in "iuf" else v.astype(str)


def _spec_to_json(spec) -> dict:
    if isinstance(spec, tuple) and spec[0] == "columns":
        return {"kind": "columns", "intercept": bool(spec[1]), "names": list(spec[2])}
    if isinstance(spec, Design):  # R's model.matrix with its fitted state, as plain data
        return spec.to_json()
    formula = str(spec.formula)
    if spec.transform_state or _STATEFUL.search(formula):
        return {"kind": "unavailable", "formula": formula}
    categorical = {}
    for key, (kind, state) in spec.encoder_state.items():
        if "categor" in str(kind).lower():
            m = re.fullmatch(r"C\((.+)\)", key)
            var = m.group(1).strip() if m else key
            categorical[var] = [_plain(c) for c in state["categories"]]
    return {"kind": "formulaic", "formula": formula, "categorical": categorical,
            "variables": sorted(str(v) for v in spec.required_variables)}  # fmt: skip


def _spec_from_json(d: dict):
    if d["kind"] == "columns":
        return ("columns", d["intercept"], d["names"])
    if d["kind"] == "r":
        return Design.from_json(d)
    if d["kind"] == "unavailable":
        return _Unavailable(d["formula"])
    from formulaic import model_matrix

    cats = d["categorical"]
    m = max([len(v) for v in cats.values()] + [1])
    tiny = pd.DataFrame(
        {
            v: np.resize(np.array(cats[v], dtype=object), m) if v in cats else np.ones(m)
            for v in d["variables"]
        }  # fmt: skip
    )
    for v in cats:  # the saved categories, typed as they were
        if v in tiny:
            tiny[v] = pd.Series(list(np.resize(np.array(cats[v], dtype=object), m)))
    return model_matrix(d["formula"], tiny, na_action="ignore").model_spec


def _plain(x):
    return x.item() if hasattr(x, "item") else x


class _Unavailable:
    """A spec that could not be stored (stateful transforms): new data cannot be evaluated."""

    def __init__(self, formula: str):
        self.formula = formula
        self.required_variables = set()

    def get_model_matrix(self, *args, **kwargs):
        raise DataError(
            f"this fit was loaded from disk and its formula {self.formula!r} uses stateful "
            "transforms, whose state is not stored; predict on new data with the original fit"
        )
