"""Kenward-Roger with prior weights against a dense brute-force oracle.

pbkrtest (0.5.2) and lmmfast disagree on weighted fits (sleepstudy with weights: df 19.25
and 18.10 in pbkrtest, 17.00 and 17.00 in lmmfast).  The oracle below settles it from the
definitions of Kenward & Roger (1997), independently of lmmfast's code:

- the model is lme4's: y ~ N(X beta, V), V = Z (I (x) S) Z' + sigma^2 W^{-1}, S the
  random-effects covariance, W = diag(prior weights) (residual variance sigma^2 / w_i);
  the oracle's REML criterion and sigma at lme4's theta equal lme4's (so this is the V
  lme4 fits);
- the variance parameters gamma are the elements of each S and sigma^2 (pbkrtest's choice);
  V is linear in gamma, its derivatives V_r = dV/dgamma_r are checked by central differences;
- Phi = (X' V^{-1} X)^{-1}, P_r = -X' V^{-1} V_r V^{-1} X,
  Q_rs = X' V^{-1} V_r V^{-1} V_s V^{-1} X, the REML expected information
  I_rs = tr(Pi V_r Pi V_s) / 2 with Pi = V^{-1} - V^{-1} X Phi X' V^{-1}, W = I^{-1};
- Phi_A = Phi + 2 Phi {sum_rs W_rs (Q_rs - P_r Phi P_s)} Phi (R_rs = 0: V is linear);
- for a contrast L (l x p): A1, A2, B, g, c1..c3, E* = 1 / (1 - A2 / l),
  V* = (2 / l) (1 + c1 B) / ((1 - c2 B)^2 (1 - c3 B)), rho = V* / (2 E*^2),
  m = 4 + (l + 2) / (l rho - 1), lambda = m / (E* (m - 2)).

Findings the tests pin down: the oracle reproduces pbkrtest on unweighted fits; on the
weighted fit it agrees with lmmfast; and pbkrtest's weighted numbers are exactly what the
oracle gives when the weights are dropped from V (pbkrtest's get_SigmaG uses an identity
matrix for the residual term) while Phi is lme4's weighted vcov: a pbkrtest limitation.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from attheta import at_theta

import lmmfast

REF = json.loads((Path(__file__).parent / "reference" / "refs_present.json").read_text())["broom"]


# --- the oracle -------------------------------------------------------------------------


class DenseLMM:
    """Dense V(gamma) of an LMM: terms are (codes, [z columns]); w the prior weights."""

    def __init__(self, X, y, terms, w=None):
        self.X, self.y = np.asarray(X, float), np.asarray(y, float)
        n = len(self.y)
        self.Rmat = np.diag(1.0 / np.asarray(w, float)) if w is not None else np.eye(n)
        self.blocks = []  # per term: list of n x nlevels indicator-times-covariate matrices
        for codes, zs in terms:
            nl = int(codes.max()) + 1
            Zs = []
            for z in zs:
                Za = np.zeros((n, nl))
                Za[np.arange(n), codes] = z
                Zs.append(Za)
            self.blocks.append(Zs)

    def pack(self, Ss, sigma2):
        """gamma: the lower triangle of each S (column by column), then sigma^2."""
        g = [S[a, b] for S in Ss for b in range(len(S)) for a in range(b, len(S))]
        return np.array([*g, sigma2])

    def V(self, gamma, residual=None):
        R = self.Rmat if residual is None else residual
        out, i = np.zeros_like(R), 0
        for Zs in self.blocks:
            q = len(Zs)
            for b in range(q):
                for a in range(b, q):
                    M = Zs[a] @ Zs[b].T
                    out += gamma[i] * (M if a == b else M + M.T)
                    i += 1
        return out + gamma[i] * R

    def from_theta(self, theta):
        """(Ss, sigma2) at lme4's theta, sigma^2 its REML estimate given theta."""
        Lams, i = [], 0
        for Zs in self.blocks:
            q = len(Zs)
            Lam = np.zeros((q, q))
            for b in range(q):
                for a in range(b, q):
                    Lam[a, b] = theta[i]
                    i += 1
            Lams.append(Lam)
        V1 = self.V(self.pack([La @ La.T for La in Lams], 1.0))
        n, p = self.X.shape
        r = self.y - self.X @ self.gls(V1)
        sigma2 = r @ np.linalg.solve(V1, r) / (n - p)
        return [sigma2 * La @ La.T for La in Lams], sigma2

    def gls(self, V):
        Vi = np.linalg.inv(V)
        return np.linalg.solve(self.X.T @ Vi @ self.X, self.X.T @ Vi @ self.y)

    def reml_criterion(self, V):
        """-2 REML log-likelihood (lme4's REMLcrit)."""
        n, p = self.X.shape
        Vi = np.linalg.inv(V)
        r = self.y - self.X @ self.gls(V)
        return (np.linalg.slogdet(V)[1] + np.linalg.slogdet(self.X.T @ Vi @ self.X)[1]
                + r @ Vi @ r + (n - p) * np.log(2 * np.pi))  # fmt: skip

    def derivatives(self, gamma, residual=None, h=None):
        """dV/dgamma_r: exact (V is linear in gamma: V at the unit vector), or central
        differences of step h * max(1, |gamma_r|)."""
        k = len(gamma)
        if h is None:
            return [self.V(np.eye(k)[r], residual) for r in range(k)]
        out = []
        for r in range(k):
            e = h * max(1.0, abs(gamma[r])) * np.eye(k)[r]
            out.append((self.V(gamma + e, residual) - self.V(gamma - e, residual)) / (2 * e[r]))
        return out


def kenward_roger(model, gamma, L, residual=None, Phi=None):
    """Kenward & Roger (1997): (df m, scaling lambda, Phi_A) for the l x p contrast L.
    residual / Phi override the residual matrix and Phi (to mimic pbkrtest)."""
    X = model.X
    V = model.V(gamma, residual)
    Vi = np.linalg.inv(V)
    if Phi is None:
        Phi = np.linalg.inv(X.T @ Vi @ X)
    dV = model.derivatives(gamma, residual)
    k = len(dV)
    P = [-X.T @ Vi @ D @ Vi @ X for D in dV]
    Q = [[X.T @ Vi @ Dr @ Vi @ Ds @ Vi @ X for Ds in dV] for Dr in dV]
    Pi = Vi - Vi @ X @ Phi @ X.T @ Vi
    info = np.array([[0.5 * np.trace(Pi @ Dr @ Pi @ Ds) for Ds in dV] for Dr in dV])
    W = np.linalg.inv(info)
    U = sum(W[r, s] * (Q[r][s] - P[r] @ Phi @ P[s]) for r in range(k) for s in range(k))
    PhiA = Phi + 2 * Phi @ U @ Phi
    L = np.atleast_2d(L)
    ell = L.shape[0]
    Theta = L.T @ np.linalg.solve(L @ Phi @ L.T, L)
    M = [Theta @ Phi @ Pr @ Phi for Pr in P]
    A1 = sum(W[r, s] * np.trace(M[r]) * np.trace(M[s]) for r in range(k) for s in range(k))
    A2 = sum(W[r, s] * np.trace(M[r] @ M[s]) for r in range(k) for s in range(k))
    B = (A1 + 6 * A2) / (2 * ell)
    g = ((ell + 1) * A1 - (ell + 4) * A2) / ((ell + 2) * A2)
    den = 3 * ell + 2 * (1 - g)
    c1, c2, c3 = g / den, (ell - g) / den, (ell + 2 - g) / den
    E = 1 / (1 - A2 / ell)
    Vstar = (2 / ell) * (1 + c1 * B) / ((1 - c2 * B) ** 2 * (1 - c3 * B))
    rho = Vstar / (2 * E**2)
    m = 4 + (ell + 2) / (ell * rho - 1)
    return m, m / (E * (m - 2)), PhiA


# --- the models -------------------------------------------------------------------------


def _sleep(weighted):
    s = lmmfast.datasets.load("sleepstudy")
    s["w"] = 0.5 + (np.arange(1, len(s) + 1) % 4) / 2  # refs_present.R's weights
    d = s["Days"].to_numpy(float)
    codes = s["Subject"].astype("category").cat.codes.to_numpy()
    model = DenseLMM(np.column_stack([np.ones(len(s)), d]), s["Reaction"],
                     [(codes, [np.ones(len(s)), d])], s["w"] if weighted else None)  # fmt: skip
    return s, model


def _lmm_fit(formula, data, theta=None, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = lmmfast.lmer(formula, data, **kw)
        return fit if theta is None else at_theta(fit, theta)


SLEEP = "Reaction ~ Days + (Days | Subject)"


@pytest.mark.parametrize("name", ["sleep_slope", "sleep_weights"])
def test_oracle_model_is_lme4s(name):
    """At lme4's theta the oracle's sigma and REML criterion are lme4's: V holds the weights
    as lme4 does (residual variance sigma^2 / w_i)."""
    _, model = _sleep(name == "sleep_weights")
    ref = REF[name]
    Ss, sigma2 = model.from_theta(ref["theta"])
    V = model.V(model.pack(Ss, sigma2))
    assert np.sqrt(sigma2) == pytest.approx(ref["glance"]["sigma"], rel=1e-9)
    assert model.reml_criterion(V) == pytest.approx(ref["glance"]["deviance"], rel=1e-12)
    assert model.gls(V) == pytest.approx(ref["fixed"]["Estimate"], rel=1e-9)
    if name == "sleep_weights":  # the weights matter: without them the criterion is off
        Vu = model.V(model.pack(Ss, sigma2), np.eye(len(model.y)))
        assert abs(model.reml_criterion(Vu) - ref["glance"]["deviance"]) > 1.0


def test_oracle_derivatives_match_central_differences():
    _, model = _sleep(True)
    gamma = model.pack(*model.from_theta(REF["sleep_weights"]["theta"]))
    for exact, numeric in zip(model.derivatives(gamma), model.derivatives(gamma, h=1e-3)):
        assert np.max(np.abs(exact - numeric)) <= 1e-7 * max(1.0, np.max(np.abs(exact)))


def test_oracle_reproduces_pbkrtest_without_weights():
    """The oracle itself against pbkrtest where both should agree (no weights)."""
    _, model = _sleep(False)
    ref = REF["sleep_slope"]
    gamma = model.pack(*model.from_theta(ref["theta"]))
    for i in range(2):
        m, _, PhiA = kenward_roger(model, gamma, np.eye(2)[i])
        assert m == pytest.approx(ref["fixed_kr"]["df"][i], rel=1e-7)
        assert np.sqrt(PhiA[i, i]) == pytest.approx(ref["fixed_kr"]["Std. Error"][i], rel=1e-7)


def test_pbkrtest_weighted_numbers_are_the_oracle_with_weights_dropped_from_V():
    """pbkrtest's weighted df / SE are the oracle's with an identity residual matrix in V
    (and lme4's weighted vcov as Phi): the discrepancy is pbkrtest's, not lmmfast's."""
    _, model = _sleep(True)
    ref = REF["sleep_weights"]
    gamma = model.pack(*model.from_theta(ref["theta"]))
    Phi = np.linalg.inv(model.X.T @ np.linalg.solve(model.V(gamma), model.X))  # lme4's vcov
    eye = np.eye(len(model.y))
    for i in range(2):
        m, _, PhiA = kenward_roger(model, gamma, np.eye(2)[i], residual=eye, Phi=Phi)
        assert m == pytest.approx(ref["fixed_kr"]["df"][i], rel=1e-7)
        assert np.sqrt(PhiA[i, i]) == pytest.approx(ref["fixed_kr"]["Std. Error"][i], rel=1e-7)
        m_right, _, _ = kenward_roger(model, gamma, np.eye(2)[i])
        assert abs(m - m_right) > 1.0


def test_kenward_roger_with_weights_matches_the_oracle():
    """lmmfast's t tests (coef_table, tidy) on the weighted sleepstudy fit at lme4's theta."""
    s, model = _sleep(True)
    fit = _lmm_fit(SLEEP, s, REF["sleep_weights"]["theta"], weights="w")
    gamma = model.pack(*model.from_theta(REF["sleep_weights"]["theta"]))
    ct = fit.coef_table(ddf="kenward-roger")
    td = fit.tidy(effects="fixed", ddf="kenward-roger")
    for i in range(2):
        m, _, PhiA = kenward_roger(model, gamma, np.eye(2)[i])
        for table, df, se in [(ct, "df", "Std. Error"), (td, "df", "std.error")]:
            assert table[df].iloc[i] == pytest.approx(m, rel=1e-7)
            assert table[se].iloc[i] == pytest.approx(np.sqrt(PhiA[i, i]), rel=1e-7)


@pytest.mark.parametrize("which", ["sleep", "penicillin"])
def test_kenward_roger_f_test_with_weights_matches_the_oracle(which):
    """The joint F test (l = 2 or a 1-row contrast) with weights, at lmmfast's own optimum:
    a correlated term (sleepstudy) and two crossed scalar terms (penicillin, random
    weights, an extra covariate)."""
    if which == "sleep":
        s, model = _sleep(True)
        fit = _lmm_fit(SLEEP, s, weights="w")
        L = np.eye(2)
    else:
        s = lmmfast.datasets.load("penicillin").copy()
        rng = np.random.default_rng(7)
        s["w"] = rng.uniform(0.3, 3.0, len(s))
        s["x"] = rng.normal(size=len(s))
        fit = _lmm_fit("diameter ~ x + (1 | plate) + (1 | sample)", s, weights="w")
        n = len(s)
        codes = [s[g].astype("category").cat.codes.to_numpy() for g in ("plate", "sample")]
        model = DenseLMM(np.column_stack([np.ones(n), s["x"]]), s["diameter"],
                         [(c, [np.ones(n)]) for c in codes], s["w"])  # fmt: skip
        L = np.array([[0.0, 1.0], [1.0, 1.0]])
    Ss, sigma2 = model.from_theta(fit.theta)
    assert np.sqrt(sigma2) == pytest.approx(fit.sigma, rel=1e-9)
    m, lam, PhiA = kenward_roger(model, model.pack(Ss, sigma2), L)
    diff = L @ model.gls(model.V(model.pack(Ss, sigma2)))
    F = lam * diff @ np.linalg.solve(L @ PhiA @ L.T, diff) / L.shape[0]
    row = fit.contest(L, ddf="kenward-roger").iloc[0]
    assert row["DenDF"] == pytest.approx(m, rel=1e-7)
    assert row["F value"] == pytest.approx(F, rel=1e-7)
