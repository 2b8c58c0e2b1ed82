r"""The profiled deviance of a linear mixed model, as a function of theta alone.

Notation of Bates, Maechler, Bolker & Walker (2015), "Fitting linear mixed-effects
models using lme4", JSS 67(1), section 3.  With prior weights W, relative covariance
factor Lambda(theta) and spherical random effects u (b = Lambda u):

    L L'        = P (Lambda' Z'WZ Lambda + I) P'           sparse Cholesky factor
    R_ZX        = L^{-1} P Lambda' Z'W X,   c_u = L^{-1} P Lambda' Z'W y
    R_X' R_X    = X'WX - R_ZX' R_ZX                        dense Schur complement
    beta        = R_X^{-1} R_X'^{-1} (X'Wy - R_ZX' c_u)
    pwrss       = ||W^(1/2)(y - X beta - Z b)||^2 + ||u||^2
    ldL2        = log|L|^2,   ldRX2 = log|R_X|^2,   ldW = sum log w_i

    ML  deviance:  ldL2 + n (1 + log(2 pi pwrss / n)) - ldW
    REML criterion: ldL2 + ldRX2 + (n-p)(1 + log(2 pi pwrss / (n-p))) - ldW

X and y are kept side by side, so one Cholesky factor R of the (p+1) x (p+1) Schur
complement of [X y] holds R_X in its leading block and sqrt(pwrss) in its last
diagonal element (MixedModels.jl's layout).  Each evaluation reads only the
cross-product blocks of [Z X y]'W[Z X y], never the rows.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import partial

import numpy as np
from scipy.linalg import block_diag, solve_triangular
from scipy.linalg.lapack import dgesv as _gesv
from scipy.linalg.lapack import dpotrf as _potrf
from scipy.linalg.lapack import dtrtrs as _trtrs

from . import _eliminate
from ._errors import DataError
from ._factor import blocked as _blocked
from ._factor import crossed as _crossed
from ._factor import krylov as _krylov
from ._factor.blocked import BlockedFactor, ClusteredFactor, is_block_diagonal, nesting_maps
from ._factor.crossed import CrossedFactor
from ._factor.krylov import KrylovFactor
from ._factor.sparse import SparseFactor
from ._sources.crossprod import CrossProducts
from ._terms import ReTerm, _lower_flat


@dataclass(eq=False)
class Decomposition:
    """The pieces of the objective at one theta."""

    ldL2: float
    ldRX2: float
    pwrss: float
    R: np.ndarray  # (p+1, p+1) upper Cholesky factor of the Schur complement of [X y]

    @property
    def RX(self) -> np.ndarray:
        return self.R[:-1, :-1]

    @property
    def beta(self) -> np.ndarray:
        if len(self.R) == 1:
            return np.zeros(0)
        # LAPACK's trtrs directly (what solve_triangular calls, without its checks: 4x less
        # overhead on a small fit's 30 evaluations); a singular R_X falls back to it
        x, info = _trtrs(self.RX, self.R[:-1, -1])
        if info != 0:
            return solve_triangular(self.RX, self.R[:-1, -1], check_finite=False)
        return x


class ProfiledDeviance:
    """phi(theta): the REML criterion or the ML deviance, profiled over beta and sigma."""

    def __init__(
        self,
        cp: CrossProducts,
        terms: list[ReTerm],
        n: int,
        reml: bool,
        ldW: float,
        like=None,
        factor=None,
        method: str = "auto",
    ):
        self.terms, self.n, self.reml, self.ldW, self.cp = terms, n, reml, ldW, cp
        self.p = cp.XtXy.shape[0] - 1
        self.XtXy = cp.XtXy
        # factor: one built by the caller (a fit rebuilt from its stored cross-products)
        self.factor = (
            factor if factor is not None else _choose_factorization(cp, terms, like, method)
        )
        # a many-level fixed factor beside one grouping factor: its indicators eliminated
        # first, no p x p factorization per evaluation (lmmfast/_eliminate.py)
        self.elim = _eliminate.plan(cp, self.factor)
        cuts = [0, *itertools.accumulate(t.ntheta for t in terms)]
        self.slices = [slice(a, b) for a, b in zip(cuts[:-1], cuts[1:])]
        self.nevals = 0
        self._nmp = self.n - self.p if reml else self.n
        # one grouping factor and a narrow X (the common small fit): an evaluation in its few
        # steps (T built once, the Schur complement's lower half, the factor's own buffers),
        # the same arithmetic as the general path, bit for bit
        f = self.factor
        self._blocked = type(f) is BlockedFactor and self.elim is None and not f.wide
        self._Tbuf = None  # one term: its T written in place (ReTerm.T's values)
        if self._blocked and len(terms) == 1:
            q = terms[0].q
            self._Tflat, self._Tpos = np.zeros(q * q), _lower_flat(q)
            self._Tbuf = self._Tflat.reshape(q, q)

    def Ts(self, theta: np.ndarray) -> list[np.ndarray]:
        """Each term's relative covariance factor T (Lambda repeats it once per level)."""
        return [t.T(theta[s]) for t, s in zip(self.terms, self.slices)]

    def _T(self, theta: np.ndarray) -> np.ndarray:
        """blockdiag(T_1, ..., T_K) at theta (a blocked factor's per-level factor of Lambda)."""
        theta = np.asarray(theta, dtype=np.float64)
        if self._Tbuf is not None:  # read by the kernels of this evaluation only
            self._Tflat[self._Tpos] = theta
            return self._Tbuf
        return self.factor._T(self.Ts(theta))

    def _decompose_blocked(self, T: np.ndarray) -> Decomposition:
        ldL2, C = self.factor.update_lower(T)  # potrf reads the lower half only
        R = self._cholesky(self.XtXy - C)
        d = R.diagonal()
        return Decomposition(ldL2, 2.0 * np.log(d[:-1]).sum(), d[-1] ** 2, R)

    def decompose(self, theta: np.ndarray, Ts: list[np.ndarray] | None = None) -> Decomposition:
        if self._blocked:
            return self._decompose_blocked(self._T(theta) if Ts is None else self.factor._T(Ts))
        if Ts is None:
            Ts = self.Ts(np.asarray(theta, dtype=np.float64))
        if self.elim is not None:
            ldL2, _ = self.factor.update(Ts, schur=False)
            T = Ts[0] if len(Ts) == 1 else block_diag(*Ts)
            return self._positive(lambda: self.elim.decompose(T, ldL2, lambda: self._R(Ts)))
        ldL2, C = self.factor.update(Ts)
        R = self._cholesky(self.XtXy - C)
        d = R.diagonal()
        return Decomposition(ldL2, 2.0 * np.log(d[:-1]).sum(), d[-1] ** 2, R)

    def _R(self, Ts: list[np.ndarray]) -> np.ndarray:
        """The dense R at Ts (an eliminated fit's R_X, when it is asked for)."""
        _, C = self.factor.update(Ts)
        return self._cholesky(self.XtXy - C)

    def _cholesky(self, S: np.ndarray) -> np.ndarray:
        """Upper R with R'R = S, by LAPACK's potrf directly (numpy's cholesky, bit for bit,
        without 4x its work in overhead on a small fit's 3 x 3)."""
        L, info = _potrf(S, lower=1, clean=1)
        if info > 0:
            raise _exact_fit()
        return L.T

    @staticmethod
    def _positive(factorize):
        try:
            return factorize()
        except np.linalg.LinAlgError:
            raise _exact_fit() from None

    def __call__(self, theta: np.ndarray) -> float:
        self.nevals += 1
        return self.objective(self.decompose(theta))

    @property
    def has_gradient(self) -> bool:
        return bool(getattr(self.factor, "has_gradient", hasattr(self.factor, "gradient")))

    def value_and_gradient(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        """phi(theta) and its gradient (Bates & DebRoy 2004: the log-determinant, pwrss by
        the envelope theorem, and for REML log|X'V^{-1}X|), from the cross-products only."""
        self.nevals += 1
        if self._blocked:
            T = self._T(theta)
            dec = self._decompose_blocked(T)
            RX = dec.RX
            P = _inverse(RX.T @ RX) if len(RX) else np.zeros((0, 0))
            grad = self.factor.gradient_T(T, dec.beta, P, self._nmp / dec.pwrss, self.reml)
            return self.objective(dec), grad
        Ts = self.Ts(np.asarray(theta, dtype=np.float64))
        dec = self.decompose(theta, Ts)
        nmp = self._nmp
        if self.elim is not None:  # the eliminated indicators: P by their block system
            hph = partial(self.elim.reml_hph, dec)
            grad = self.factor.gradient(Ts, dec.beta, None, nmp / dec.pwrss, self.reml, hph=hph)
            return self.objective(dec), grad
        RX = dec.RX
        if getattr(self.factor, "wide", False):  # many fixed effects: R_X, not its p x p inverse
            grad = self.factor.gradient(Ts, dec.beta, None, nmp / dec.pwrss, self.reml, RX=RX)
            return self.objective(dec), grad
        P = _inverse(RX.T @ RX) if len(RX) else np.zeros((0, 0))
        grad = self.factor.gradient(Ts, dec.beta, P, nmp / dec.pwrss, self.reml)
        return self.objective(dec), grad

    def objective(self, dec: Decomposition) -> float:
        if self.reml:
            nmp = self.n - self.p
            return dec.ldL2 + dec.ldRX2 + nmp * (1 + np.log(2 * np.pi * dec.pwrss / nmp)) - self.ldW
        return dec.ldL2 + self.n * (1 + np.log(2 * np.pi * dec.pwrss / self.n)) - self.ldW

    @property
    def factorization(self) -> str:
        """Which factorization of Lambda'Z'WZ Lambda + I: blocked, nested, crossed or cholmod."""
        return self.factor.kind

    def sigma(self, dec: Decomposition) -> float:
        return float(np.sqrt(dec.pwrss / (self.n - self.p if self.reml else self.n)))


def _exact_fit() -> DataError:
    return DataError(
        "the fixed effects fit the response exactly (zero residual sum of squares); "
        "a mixed model needs residual variation"
    )


def _inverse(A: np.ndarray) -> np.ndarray:
    """inv(A) as numpy's (LAPACK's gesv on the identity), called directly: numpy's inv costs
    4x the work on a small fit's 3 x 3."""
    eye = _EYE.get(len(A))
    if eye is None:
        eye = _EYE.setdefault(len(A), np.eye(len(A)))
    _, _, x, info = _gesv(A, eye, overwrite_b=0)  # gesv solves in a copy of the identity
    return x if info == 0 else np.linalg.inv(A)


_EYE: dict[int, np.ndarray] = {}  # identities by order, for _inverse


def _choose_factorization(cp: CrossProducts, terms: list[ReTerm], like=None, method="auto"):
    """One grouping factor: per-level blocks; nested factors with small clusters: per-cluster
    blocks; crossed factors whose smaller factors have few effects: blocked with a dense
    Schur complement; anything else: CHOLMOD.  `like`: a factorization of the same design
    (a refit with another response), whose choice and CHOLMOD analysis are reused.
    method "krylov" (or "auto" where the exact crossed factor would be too large or too
    slow, see _factor/krylov.py): the iterative method; "exact": never it."""
    if method == "krylov" or isinstance(like, KrylovFactor):
        return KrylovFactor(cp, terms)
    if method == "auto" and _krylov.supports(terms) and _krylov.exact_too_costly(terms):
        if nesting_maps(terms) is None:
            return KrylovFactor(cp, terms)
    if isinstance(like, SparseFactor):
        return SparseFactor(cp, terms, analysis=like.chol)
    if is_block_diagonal(terms):
        return BlockedFactor(cp, terms)
    maps = nesting_maps(terms)
    if maps is not None:
        factor = ClusteredFactor(cp, terms, maps)
        if factor.max_size <= _blocked.MAX_CLUSTER:
            return factor
    if sum(t.nlevels * t.q for t in terms[1:]) <= _crossed.MAX_DENSE:
        return CrossedFactor(cp, terms)
    return SparseFactor(cp, terms)
