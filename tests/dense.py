"""Dense NumPy oracles: Z, Lambda, and the marginal (restricted) likelihood, built naively."""

import numpy as np


def dense_Z(terms):
    """Z with lme4's column order (term, then level, then the term's columns)."""
    blocks = []
    for t in terms:
        n = len(t.codes)
        Zt = np.zeros((n, t.nlevels * t.q))
        cols = t.Zt
        for i in range(n):
            j = t.codes[i]
            Zt[i, j * t.q : (j + 1) * t.q] = cols[i]
        blocks.append(Zt)
    return np.hstack(blocks)


def dense_Lambda(terms, Ts):
    return (
        np.kron(np.eye(terms[0].nlevels), Ts[0])
        if len(terms) == 1
        else _blockdiag([np.kron(np.eye(t.nlevels), T) for t, T in zip(terms, Ts)])
    )


def _blockdiag(mats):
    n = sum(m.shape[0] for m in mats)
    out = np.zeros((n, n))
    k = 0
    for m in mats:
        out[k : k + m.shape[0], k : k + m.shape[0]] = m
        k += m.shape[0]
    return out


def marginal_objective(y, X, Z, Lam, w, reml):
    """-2 log L (ML) or -2 log L_R (REML) profiled over beta and sigma, from
    V = sigma^2 (Z Lambda Lambda' Z' + W^{-1}) directly."""
    n, p = X.shape
    V0 = Z @ Lam @ Lam.T @ Z.T + np.diag(1.0 / w)
    Vi = np.linalg.inv(V0)
    beta = np.linalg.solve(X.T @ Vi @ X, X.T @ Vi @ y)
    r = y - X @ beta
    rss = r @ Vi @ r
    ld_V0 = np.linalg.slogdet(V0)[1]
    if reml:
        s2 = rss / (n - p)
        return (
            (n - p) * np.log(s2)
            + ld_V0
            + np.linalg.slogdet(X.T @ Vi @ X)[1]
            + (n - p) * (1 + np.log(2 * np.pi))
        ), beta
    s2 = rss / n
    return n * np.log(s2) + ld_V0 + n * (1 + np.log(2 * np.pi)), beta


def central_gradient(f, x, h=1e-6):
    """The gradient of f at x by central differences of step h in each coordinate."""
    return np.array([(f(x + h * e) - f(x - h * e)) / (2 * h) for e in np.eye(len(x))])
