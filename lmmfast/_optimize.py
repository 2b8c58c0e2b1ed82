"""The optimizers and their record: L-BFGS-B with the analytic gradient, and BOBYQA.

Every factorization provides the gradient of the profiled objective (_factor/gradient.py);
L-BFGS-B (scipy) on phi / |phi(theta0)| (ftol 1e-13, projected gradient 1e-8)
needs 5-25 evaluations where BOBYQA needs 20-110, and ends level with lme4's optimum
(within 1e-14 relative on the reference models).  Otherwise, or if it fails, BOBYQA
through nlopt, lme4's default derivative-free method.

Bounds as lme4: the diagonal elements of each T are >= 0, the rest are free; but
L-BFGS-B runs a scalar term's theta unbounded and reports |theta| (the objective
depends on theta^2 only, and a bound at 0 made it stop where the slope is 0 by symmetry).  The
stopping rule is stricter than lme4's nloptwrap defaults (stop when either ftol_abs or
xtol_abs = 1e-8 is met): only a step in theta below 1e-9 stops, since a tolerance on
the objective stopped BOBYQA ~5e-9 short of lme4's optimum on sleepstudy.  On the 12
reference models this never ends worse than lme4 (at most 5e-15 relative).

A fit that ends singular is restarted from leave_singular() (a false optimum of the
Cholesky parametrization, see there) until that stops improving, unless one gradient
proves the end point optimal in Sigma (optimal_in_sigma); minimize_theta is the
whole strategy, run on one BLAS thread.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import nlopt
import numpy as np
from scipy.optimize import minimize

from . import _threads
from ._lbfgsb import minimize_lbfgsb
from ._polish import gradient_hessian

_RESULTS = {
    nlopt.SUCCESS: "success",
    nlopt.STOPVAL_REACHED: "stopval reached",
    nlopt.FTOL_REACHED: "ftol reached",
    nlopt.XTOL_REACHED: "xtol reached",
    nlopt.MAXEVAL_REACHED: "maximum number of evaluations reached",
    nlopt.MAXTIME_REACHED: "maximum time reached",
}


@dataclass
class OptSummary:
    """What the optimizer did (MixedModels.jl's OptSummary, lme4's @optinfo)."""

    optimizer: str
    theta0: np.ndarray
    lower: np.ndarray
    theta: np.ndarray = field(default_factory=lambda: np.zeros(0))
    fmin: float = np.inf
    feval: int = 0
    converged: bool = False
    message: str = ""
    gradient: np.ndarray | None = None  # of the objective at theta (diagnostics)
    hessian: np.ndarray | None = None
    newton_decrement: float = 0.0  # predicted improvement of the objective, deviance units
    ftol_rel: float = 0.0  # 0: not used
    ftol_abs: float = 0.0
    xtol_abs: float = 1e-9
    maxeval: int = 100_000
    xtol_rel: float = 0.0
    krylov: object = None  # method="krylov": its error report (lmmfast._factor.krylov)
    # (theta, f) where hessian was taken from the analytic gradient (the polish reuses it)
    hessian_at: tuple | None = field(default=None, repr=False, compare=False)
    # (theta, f, g) at theta as L-BFGS-B evaluated it there (the optimum check reuses it)
    fg_at: tuple | None = field(default=None, repr=False, compare=False)

    def to_theta_scale(self, scale: np.ndarray) -> None:
        """The optimizer worked in eta = theta / scale: express the record in theta."""
        self.theta0, self.theta = self.theta0 * scale, self.theta * scale
        if self.gradient is not None:
            self.gradient = self.gradient / scale
            self.hessian = self.hessian / np.outer(scale, scale)
        self.hessian_at = self.fg_at = None


def bobyqa(f, theta0: np.ndarray, lower: np.ndarray, **tol) -> OptSummary:
    """Minimize f over theta >= lower (elementwise) from theta0."""
    s = OptSummary("LN_BOBYQA", np.array(theta0, dtype=float), np.array(lower, dtype=float), **tol)
    best = {"f": np.inf, "x": s.theta0.copy()}

    def objective(x, grad):
        s.feval += 1
        val = float(f(x))
        if val < best["f"]:
            best["f"], best["x"] = val, x.copy()
        return val

    opt = nlopt.opt(nlopt.LN_BOBYQA, len(theta0))
    opt.set_lower_bounds(s.lower)
    opt.set_min_objective(objective)
    opt.set_ftol_rel(s.ftol_rel)
    opt.set_ftol_abs(s.ftol_abs)
    opt.set_xtol_abs(s.xtol_abs)
    opt.set_xtol_rel(s.xtol_rel)
    opt.set_maxeval(s.maxeval)
    opt.set_initial_step(0.2 * np.maximum(np.abs(s.theta0), 1.0))
    try:
        opt.optimize(s.theta0.copy())
        code = opt.last_optimize_result()
        s.message = _RESULTS.get(code, f"nlopt code {code}")
        s.converged = code in (nlopt.SUCCESS, nlopt.FTOL_REACHED, nlopt.XTOL_REACHED)
    except nlopt.RoundoffLimited:
        s.message, s.converged = "roundoff limited", True  # at the precision floor: an optimum
    except (ValueError, RuntimeError) as e:
        s.message, s.converged = f"optimizer failed: {e}", False
    s.theta, s.fmin = best["x"], best["f"]
    return s


def lbfgs(
    fg, theta0: np.ndarray, lower: np.ndarray, maxeval: int = 100_000, even=None, **options
) -> OptSummary:
    """Minimize with value and gradient fg(theta) -> (f, g), theta >= lower (options:
    scipy's L-BFGS-B options over the defaults below; method="krylov" sets its own).

    even: a mask of the entries in which fg is even (scalar terms' theta): those run
    unbounded and the answer is |theta| (a bound at 0 only adds stops where the slope is 0
    by symmetry; InstEval 56 -> 42 evaluations); one that ends exactly at 0 is probed as
    at a bound (_leave_boundary), since 0 is then a stationary point, maybe a maximum."""
    s = OptSummary(
        "L-BFGS-B", np.array(theta0, dtype=float), np.array(lower, dtype=float), maxeval=maxeval
    )
    best = {"f": np.inf, "x": s.theta0.copy()}
    scale = [1.0]

    # (f, g) at each point evaluated: L-BFGS-B asks again for theta0 (taken for the scale)
    # and, after a failed line search, for the iterate it returns to
    seen = {}

    def objective(x):
        key = np.asarray(x, dtype=np.float64).tobytes()
        if key in seen:
            f, g = seen[key]
        else:
            s.feval += 1
            f, g = fg(x)
            g = np.array(g, dtype=float)
            seen[key] = (f, g)
        if f < best["f"]:
            best["f"], best["x"] = f, x.copy()
        return f / scale[0], g / scale[0]

    f0, g0 = fg(s.theta0)
    s.feval += 1
    seen[np.asarray(s.theta0, dtype=np.float64).tobytes()] = (f0, np.array(g0, dtype=float))
    scale[0] = max(abs(f0), 1.0)
    even = np.zeros(len(s.lower), bool) if even is None else np.asarray(even, bool)
    line = np.where(even, -np.inf, s.lower)
    options = {"ftol": 1e-13, "gtol": 1e-8, "maxiter": 1000, "maxfun": s.maxeval, **options}
    start = s.theta0.copy()
    try:
        for _ in range(4):  # a start, and up to 3 restarts away from a false boundary stop
            r = _lbfgsb(objective, start, line, options)
            s.message = str(r.message)
            # a line search that cannot improve at the precision floor is an optimum too
            pg = np.where((r.x <= line) & (r.jac > 0), 0.0, r.jac)
            s.converged = bool(r.success) or bool(np.max(np.abs(pg), initial=0.0) < 1e-5)
            best["x"] = np.where(even, np.abs(best["x"]), best["x"])
            start = _leave_boundary(fg, best, s)
            if start is None:
                break
    except (ValueError, FloatingPointError, np.linalg.LinAlgError) as e:
        s.message, s.converged = f"optimizer failed: {e}", False
    s.theta, s.fmin = np.where(even, np.abs(best["x"]), best["x"]), best["f"]
    at = seen.get(np.asarray(s.theta, dtype=np.float64).tobytes())
    if at is not None and at[0] == s.fmin:
        s.fg_at = (s.theta.copy(), at[0], at[1].copy())
    return s


def _lbfgsb(objective, start: np.ndarray, line: np.ndarray, options: dict):
    """scipy's L-BFGS-B on objective(x) -> (f, g) over x >= line: its own loop around
    setulb (_lbfgsb.py: the same iterates without scipy's wrappers), or
    scipy.optimize.minimize where that loop cannot drive this scipy."""
    r = minimize_lbfgsb(objective, start, line, np.full(len(line), np.inf), **options)
    if r is None:
        bounds = [(lo if np.isfinite(lo) else None, None) for lo in line]
        r = minimize(objective, start, jac=True, method="L-BFGS-B", bounds=bounds,
                     options=options)  # fmt: skip
    return r


AT_ZERO = 1e-10  # a bounded theta this close to 0 is probed as at 0


def _leave_boundary(fg, best: dict, s: OptSummary):
    """The objective is even in a scalar term's theta, so its derivative at theta = 0 is 0
    and L-BFGS-B can stop there when a step was clipped to the bound, though the optimum
    is inside.  Probe each diagonal theta at 0: a start away from it if that is lower."""
    x = best["x"]
    at_zero = np.flatnonzero((s.lower == 0) & (x <= AT_ZERO))
    for i in at_zero:
        for step in (1e-3, 0.05):
            probe = x.copy()
            probe[i] = step
            s.feval += 1
            f, _ = fg(probe)
            if f < best["f"]:
                best["f"], best["x"] = f, probe.copy()
                return probe
    return None


def _lower_index(q: int) -> list[tuple[int, int]]:
    """(row, column) of a q x q lower-triangular T's entries in theta's (lme4's) order."""
    return [(i, j) for j in range(q) for i in range(j, q)]


def _factors(theta: np.ndarray, qs: list[int]):
    """(offset, q, T) for each vector-valued term (q > 1) of theta."""
    o = 0
    for q in qs:
        if q > 1:
            T = np.zeros((q, q))
            for (i, j), v in zip(_lower_index(q), theta[o : o + q * (q + 1) // 2]):
                T[i, j] = v
            yield o, q, T
        o += q * (q + 1) // 2


def _with_factor(theta: np.ndarray, o: int, C: np.ndarray) -> np.ndarray:
    out = theta.copy()
    out[o : o + len(C) * (len(C) + 1) // 2] = [C[i, j] for i, j in _lower_index(len(C))]
    return out


def _is_singular(T: np.ndarray) -> bool:
    d = np.diag(T)
    return bool(np.any(d <= 1e-6 * np.max(d, initial=0.0)) and np.max(d) > 0)


def leave_singular(theta: np.ndarray, qs: list[int], rel: float = 1e-3) -> np.ndarray | None:
    """A start away from a false optimum of the Cholesky parametrization, or None.

    Where a diagonal element T[k, k] of a vector-valued term is 0 while column k below it
    is not, the point can satisfy the optimality conditions in theta (the slope in
    T[k, k] is positive) though it is not an optimum in Sigma = T T': more variance in
    effect k needs column k to turn at the same time, which no small step in theta does.
    Such a stop ended 0.07-5 deviance units above lme4's optimum (kb07-shaped designs,
    lme4's Arabidopsis).  The start returned is the Cholesky factor of Sigma + eps I
    (eps = rel * the largest variance of the term): the same covariance, nearly, in the
    parametrization in which every direction of Sigma is a first-order step again."""
    out = None
    for o, q, T in _factors(theta, qs):
        if _is_singular(T):
            S = T @ T.T
            C = np.linalg.cholesky(S + rel * np.max(np.diag(S)) * np.eye(q))
            out = _with_factor(theta if out is None else out, o, C)
    return out


def sigma_gradient(T: np.ndarray, gT: np.ndarray) -> np.ndarray:
    """G = d phi / d Sigma (symmetric) at Sigma = T T' from the gradient in T's lower
    triangle (theta's order), for a non-singular lower-triangular T: d phi / d T = 2 G T,
    whose lower triangle determines G (the Cholesky map is a diffeomorphism there)."""
    q = len(T)
    idx = _lower_index(q)
    A = np.zeros((len(idx), len(idx)))
    for c, (i, j) in enumerate(idx):  # the lower triangle of 2 E T for each basis E of G
        E = np.zeros((q, q))
        E[i, j] = E[j, i] = 1.0
        A[:, c] = [2.0 * (E @ T)[a, b] for a, b in idx]
    vals = np.linalg.solve(A, gT)
    G = np.zeros((q, q))
    for (i, j), v in zip(idx, vals):
        G[i, j] = G[j, i] = v
    return G


KKT_REL = 1e-6  # the point where G is taken: chol(Sigma + KKT_REL * max variance * I)
KKT_MARGIN = 1e-3  # the null-space slope v'Gv must exceed this share of |G|_F
KKT_RANGE = 1e-4  # and |G Sigma|_F at most this share of |G|_F |Sigma|_F (~1e-6 from eps)


def optimal_in_sigma(fg, theta: np.ndarray, qs: list[int], fmin: float):
    """Whether the first-order optimality conditions in Sigma (not theta) prove a singular
    end point optimal, so that leave_singular's descent cannot improve on it.

    On the cone of positive semi-definite Sigma the conditions are G Sigma = 0 (met where
    L-BFGS-B is stationary in theta) and v'G v >= 0 for every v in Sigma's null space:
    no more variance in a degenerate direction lowers the objective.  G is taken from one
    gradient at chol(Sigma + eps I) (sigma_gradient; eps a millionth of the largest
    variance, so G differs from its value at Sigma by ~eps); the test passes only where
    the smallest v'G v clears KKT_MARGIN of G's scale, G Sigma is 0 to KKT_RANGE (seen:
    1e-6 where the descent gained nothing, 2e-3 to 1e-2 where it gained 0.008-1.3 deviance
    units: L-BFGS-B stops short on the range of Sigma too), and the objective there is
    not below fmin.  Returns (proved, evaluations)."""
    start, blocks = theta.copy(), []
    for o, q, T in _factors(theta, qs):
        if _is_singular(T):
            S = T @ T.T
            w, V = np.linalg.eigh(S)
            N = V[:, w <= 1e-8 * w[-1]]
            C = np.linalg.cholesky(S + KKT_REL * w[-1] * np.eye(q))
            start = _with_factor(start, o, C)
            blocks.append((o, q, C, N, S))
    if not blocks:
        return True, 0
    f, g = fg(start)
    if not np.isfinite(f) or f < fmin:
        return False, 1
    g = np.asarray(g, dtype=float)
    for o, q, C, N, S in blocks:
        G = sigma_gradient(C, g[o : o + q * (q + 1) // 2])
        if N.shape[1] == 0:
            return False, 1
        curv = np.linalg.eigvalsh(N.T @ G @ N)
        scale = np.linalg.norm(G)
        if not (
            curv[0] > KKT_MARGIN * scale
            and np.linalg.norm(G @ S) <= KKT_RANGE * scale * np.linalg.norm(S)
        ):
            return False, 1
    return True, 1


def minimize_theta(
    f, fg, theta0, lower, qs, optimizer: str = "auto", maxeval: int = 100_000,
    tolerances: dict | None = None, lbfgs_options: dict | None = None, check=None,
) -> tuple[OptSummary, bool]:  # fmt: skip
    """The fit's optimizer strategy; returns the record and whether the optimum is doubtful.

    L-BFGS-B with the analytic gradient where fg is given (BOBYQA otherwise, or if
    L-BFGS-B does not converge); a BOBYQA polish where the optimum looks doubtful; then,
    at a singular optimum, restarts from leave_singular() until they stop improving.
    tolerances: BOBYQA's (Control.tolerances); lbfgs_options: scipy's L-BFGS-B options;
    check(opt) -> doubtful (default: check_optimum_fg from the gradient where fg is given,
    else check_optimum by differences of f)."""
    tol = tolerances or {}

    def by_differences(opt):
        return check_optimum(f, opt)

    def by_gradient(opt):
        return check_optimum_fg(fg, opt)

    # after the BOBYQA polish: from the gradient unless the caller's check replaces it
    recheck = by_gradient if fg is not None and check is None else by_differences
    check = check or recheck

    even = _scalar_entries(qs) if lbfgs_options is None else None

    def run(start):
        opt = None
        if optimizer in ("auto", "lbfgs") and fg is not None:
            opt = lbfgs(fg, start, lower, maxeval, even=even, **(lbfgs_options or {}))
        if opt is None or (optimizer == "auto" and not opt.converged):
            opt = bobyqa(f, start if opt is None else opt.theta, lower, **tol)
        return opt

    def fit():
        opt = with_restarts(run, theta0, qs, fg)
        doubtful = opt.converged and check(opt)
        if doubtful and optimizer == "auto" and opt.optimizer == "L-BFGS-B":
            # L-BFGS-B can stop on a stalled line search with the slope still large (seen
            # on a badly scaled model): polish with BOBYQA and keep the better optimum
            polished = bobyqa(f, opt.theta, lower, **tol)
            polished.feval += opt.feval
            if polished.fmin <= opt.fmin:
                opt = polished
            doubtful = opt.converged and recheck(opt)
        return opt, doubtful

    with _one_blas_thread():
        return fit()


def _scalar_entries(qs) -> np.ndarray:
    """Which entries of theta are scalar terms' (q = 1): the objective is even in those."""
    return np.concatenate([[q == 1] * (q * (q + 1) // 2) for q in qs]).astype(bool)


def _one_blas_thread():
    """Every evaluation on one BLAS thread: the dense pieces are small, other threads only
    spin on a busy machine, and the optimizer's path (evaluations, result) then does not
    depend on the BLAS thread settings."""
    return _threads.limit(1, user_api="blas")


def with_restarts(run, theta0, qs, fg=None) -> OptSummary:
    """run(start) from theta0, then from leave_singular() while that improves; then, at a
    rank-deficient vector term, from the covariance with the degenerate effect's sign
    flipped (flipped_starts), keeping the best end point."""
    opt = _descend(run, run(np.asarray(theta0, dtype=float)), qs, fg)
    for start in flipped_starts(opt.theta, qs):
        new = _descend(run, run(start), qs, fg)
        new.feval += opt.feval
        new.theta0 = opt.theta0
        if new.fmin < opt.fmin - 1e-12 * abs(opt.fmin):
            opt = new
        else:
            opt.feval = new.feval
    return opt


def _descend(run, opt: OptSummary, qs, fg=None) -> OptSummary:
    """From opt, restarts from leave_singular() while they improve; none where the
    gradient fg proves opt optimal in Sigma (optimal_in_sigma)."""
    for _ in range(MAX_RESTARTS):
        start = leave_singular(opt.theta, qs)
        if start is None:
            break
        if fg is not None and opt.converged:
            proved, k = optimal_in_sigma(fg, opt.theta, qs, opt.fmin)
            opt.feval += k
            if proved:
                break
        new = run(start)
        new.feval += opt.feval
        new.theta0 = opt.theta0
        if not new.fmin < opt.fmin - 1e-12 * abs(opt.fmin):
            opt.feval = new.feval
            break
        opt = new
    return opt


def flipped_starts(theta: np.ndarray, qs: list[int], rel: float = 1e-3) -> list[np.ndarray]:
    """Starts in the other basin of a (nearly) singular optimum: where T[k, k]^2 is a small
    part of effect k's variance (FLIP_R2; 0 at a singular fit), effect k is nearly a fixed
    combination of the effects before it (a correlation near +-1 for q = 2), and with
    that combination's sign reversed lies another local optimum, which no path through
    the boundary reaches (seen: fits 2.25 and 2.35 units above the dense brute-force
    optimum, tests/test_properties.py).  One start per such k: chol(D Sigma D + eps I), D
    flipping the sign of effect k; the other terms as they are."""
    starts = []
    for o, q, T in _factors(theta, qs):
        d = np.diag(T)
        S = T @ T.T
        for m in range(1, q):
            if not (S[m, m] > 0 and d[m] ** 2 <= FLIP_R2 * S[m, m]):
                continue  # a zero variance (nothing to flip), or far from +-1
            D = np.ones(q)
            D[m] = -1.0
            C = np.linalg.cholesky(D[:, None] * S * D + rel * np.max(np.diag(S)) * np.eye(q))
            starts.append(_with_factor(theta, o, C))
    return starts


MAX_RESTARTS = 4
FLIP_R2 = 0.05  # T[k, k]^2 / Sigma[k, k] below this: also start from the flipped sign
FORWARD_HESSIAN = True  # the check's Hessian by forward differences of the gradient
DECREMENT_TOL = 1e-3  # deviance units: below this the optimum cannot be improved usefully


def check_optimum(f, s: OptSummary) -> bool:
    """Gradient and Hessian of the objective at the optimum (central differences of f, as
    lme4's checkConv; 2k + k(k-1)/2 evaluations), then decrement(): True if the optimum
    is doubtful.  Where the analytic gradient exists, check_optimum_fg does this in 2k + 1."""
    x = s.theta
    k = len(x)
    h = 1e-4 * np.maximum(np.abs(x), 0.1)
    fx = s.fmin
    E = np.eye(k)
    fp = np.array([f(x + h[i] * E[i]) for i in range(k)])
    fm = np.array([f(np.maximum(x - h[i] * E[i], s.lower)) for i in range(k)])
    dm = x - np.maximum(x - h * 1.0, s.lower)  # the backward step actually taken
    g = np.where(dm >= h, (fp - fm) / (2 * h), (fp - fx) / h)
    H = np.diag(np.where(dm >= h, (fp - 2 * fx + fm) / h**2, np.nan))
    for i in range(k):
        for j in range(i):
            fij = f(x + h[i] * E[i] + h[j] * E[j])
            H[i, j] = H[j, i] = (fij - fp[i] - fp[j] + fx) / (h[i] * h[j])
    for i in range(k):  # at a bound: forward second difference
        if np.isnan(H[i, i]):
            H[i, i] = (f(x + 2 * h[i] * E[i]) - 2 * fp[i] + fx) / h[i] ** 2
    s.feval += 2 * k + k * (k - 1) // 2
    s.gradient, s.hessian = g, H
    return decrement(s, h)


def check_optimum_fg(fg, s: OptSummary) -> bool:
    """check_optimum from the analytic gradient: g = fg(theta) and H by forward differences
    of the gradient (FORWARD_HESSIAN; else central ones where the step stays inside the
    bounds), symmetrized: k + 1 evaluations instead of 2k + k(k-1)/2 (20 theta: 21 instead
    of 230).  H is then accurate to ~1e-5 relative, ample for the decrement's 1e-3 test and
    for the polish's Newton steps (each cuts the gradient by ~1e-5 or more).  The record
    keeps where H was taken (s.hessian_at, with f there): the Newton polish reuses it."""
    x = np.array(s.theta, dtype=float)
    if s.fg_at is not None and np.array_equal(s.fg_at[0], x):  # evaluated there already
        fx, g, nevals = s.fg_at[1], s.fg_at[2].copy(), 0
    else:
        fx, g = fg(x)
        g, nevals = np.asarray(g, dtype=float), 1
    H, k = gradient_hessian(fg, x, g, s.lower, forward=FORWARD_HESSIAN)
    s.feval += nevals + k
    s.gradient, s.hessian = g, H
    s.hessian_at = (x, float(fx))
    return decrement(s, 1e-4 * np.maximum(np.abs(x), 0.1))  # check_optimum's steps


def decrement(s: OptSummary, h: np.ndarray) -> bool:
    """The Newton decrement g'H^{-1}g / 2 over the parameters not held at a bound (s.gradient,
    s.hessian): the improvement a Newton step would predict, in deviance units.  Unlike
    lme4's absolute gradient test this does not grow with n, so large fits raise no false
    alarms.  Returns True if the optimum is doubtful (decrement above DECREMENT_TOL)."""
    x, g, H = s.theta, s.gradient, s.hessian
    free = ~((x <= s.lower) & (g >= 0))
    if not free.any():
        s.newton_decrement = 0.0
        return False
    gf, Hf = g[free], H[np.ix_(free, free)]
    try:
        step = np.linalg.solve(Hf, gf)
        s.newton_decrement = (
            float(0.5 * gf @ step) if np.all(np.linalg.eigvalsh(Hf) > 0) else np.inf
        )
    except np.linalg.LinAlgError:
        s.newton_decrement = np.inf
    # a non-positive-definite Hessian with a tiny gradient is a flat direction, not a failure
    if not np.isfinite(s.newton_decrement):
        s.newton_decrement = float(np.max(np.abs(gf)) * np.max(h))
    return s.newton_decrement > DECREMENT_TOL
