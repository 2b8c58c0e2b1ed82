"""R's lowess(x, y, f = 2/3, iter = 3, delta = 0.01 * diff(range(x))): Cleveland's (1979)
locally weighted regression, as R's clowess (src/library/stats/src/lowess.c), for the
smoother of the residual plot.

For each x_i (sorted), a weighted straight-line fit to its ns = f n nearest neighbours,
tricube weights in the distance scaled by the farthest neighbour; points within delta of
the last fitted one are interpolated.  Then `iter` robustness passes reweight each point
by the bisquare of its residual over 6 median |residual|.
"""

from __future__ import annotations

import numpy as np


def lowess(x, y, f: float = 2 / 3, iter: int = 3, delta: float | None = None):
    """(sorted x, smoothed y), as R's lowess()."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    o = np.argsort(x, kind="stable")
    x, y = x[o], y[o]
    n = len(x)
    if delta is None:
        delta = 0.01 * (x[-1] - x[0]) if n else 0.0
    ys = np.empty(n)
    if n < 2:
        ys[:] = y
        return x, ys
    ns = max(min(int(f * n + 1e-7), n), 2)
    rw = np.ones(n)
    res = np.zeros(n)
    for it in range(1, iter + 2):
        nleft, nright, last, i = 0, ns - 1, -1, 0
        while True:
            if nright < n - 1:
                if x[i] - x[nleft] > x[nright + 1] - x[i]:
                    nleft += 1
                    nright += 1
                    continue
            val = _lowest(x, y, x[i], nleft, nright, rw if it > 1 else None)
            ys[i] = y[i] if val is None else val
            if last < i - 1:
                denom = x[i] - x[last]
                for j in range(last + 1, i):
                    alpha = (x[j] - x[last]) / denom
                    ys[j] = alpha * ys[i] + (1 - alpha) * ys[last]
            last = i
            cut = x[last] + delta
            i = last + 1
            while i < n:
                if x[i] > cut:
                    break
                if x[i] == x[last]:
                    ys[i] = ys[last]
                    last = i
                i += 1
            i = max(last + 1, i - 1)
            if last >= n - 1:
                break
        res = y - ys
        sc = np.sum(np.abs(res)) / n
        if it > iter:
            break
        r = np.abs(res)
        s = np.sort(r)
        m1 = n // 2
        cmad = 3.0 * (s[m1] + s[n - m1 - 1]) if n % 2 == 0 else 6.0 * s[m1]
        if cmad < 1e-7 * sc:
            break
        c9, c1 = 0.999 * cmad, 0.001 * cmad
        rw = np.where(r <= c1, 1.0, np.where(r <= c9, (1 - (r / cmad) ** 2) ** 2, 0.0))
    return x, ys


def _lowest(x, y, xs, nleft, nright, rw):
    """The local weighted straight-line fit at xs (R's lowest()); None if all weights vanish."""
    n = len(x)
    rng = x[-1] - x[0]
    h = max(xs - x[nleft], x[nright] - xs)
    h9, h1 = 0.999 * h, 0.001 * h
    j = nleft
    while j < n:  # the window: up to the first point beyond xs outside h9
        if abs(x[j] - xs) > h9 and x[j] > xs:
            break
        j += 1
    idx = np.arange(nleft, j)
    r = np.abs(x[idx] - xs)
    w = np.where(r <= h9, np.where(r <= h1, 1.0, (1 - (r / h) ** 3) ** 3), 0.0)
    if rw is not None:
        w = w * rw[idx]
    a = w.sum()
    if a <= 0:
        return None
    w = w / a
    if h > 0:
        a = np.sum(w * x[idx])
        b = xs - a
        c = np.sum(w * (x[idx] - a) ** 2)
        if np.sqrt(c) > 0.001 * rng:
            w = w * (b / c * (x[idx] - a) + 1)
    return float(np.sum(w * y[idx]))
