"""R's rules for printing numbers and names, enough to lay out lme4's summary exactly.

* ``format(x, digits = d)`` on a numeric vector: every element is shown with the same
  number of decimals, the fewest that give each element up to d significant digits
  (trailing zeros of an element do not count), right-justified to a common width.
* ``zapsmall(x, d)`` (R 4.2, the R of lme4 1.1-31 on Debian bookworm): round to
  ``max(0, d - log10(max |x|))`` decimals, R's round() taking the nearest integer.
* ``abbreviate(s, minlength)``: drop lower-case vowels from the right, then lower-case
  letters from the right (never a word's first character) until short enough.
* Printing a named vector: names and values right-justified to one common width,
  each followed by a space.
"""

from __future__ import annotations

import math

import numpy as np


def decimals_needed(x: float, digits: int) -> int:
    """Decimals R shows for x with at most `digits` significant digits, trailing zeros dropped."""
    if not math.isfinite(x) or x == 0:
        return 0
    e = math.floor(math.log10(abs(x)))
    scaled = round(abs(x) / 10.0 ** (e - digits + 1))
    if scaled >= 10**digits:  # rounding carried into a new digit (9.9996 -> 10.00)
        e += 1
        scaled = round(abs(x) / 10.0 ** (e - digits + 1))
    sig = digits
    while sig > 1 and scaled % 10 == 0:
        scaled //= 10
        sig -= 1
    return max(0, sig - 1 - e)


def format_num(xs, digits: int = 7, nsmall: int = 0) -> list[str]:
    """R's format(xs, digits = digits, nsmall = nsmall): common decimals, common width."""
    xs = [float(x) for x in np.atleast_1d(xs)]
    dec = max([nsmall] + [decimals_needed(x, digits) for x in xs])
    out = [_fixed(x, dec) for x in xs]
    width = max(len(s) for s in out)
    return [s.rjust(width) for s in out]


def _fixed(x: float, dec: int) -> str:
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "Inf" if x > 0 else "-Inf"
    s = f"{x:.{dec}f}"
    return s[1:] if s.startswith("-") and float(s) == 0 else s  # R prints -0.00 as 0.00


def zapsmall(x, digits: int) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    mx = np.max(np.abs(x)) if x.size else 0.0
    dec = max(0, math.floor(digits - math.log10(mx) + 0.5)) if mx > 0 else digits
    return np.round(x, dec)


def abbreviate(name: str, minlength: int) -> str:
    """R's abbreviate(name, minlength) (method "left.kept")."""
    chars = list(name)
    if len(chars) <= minlength:
        return name

    def first_of_word(i: int) -> bool:
        return i == 0 or chars[i - 1].isspace()

    for drop in (lambda c: c in "aeiou", lambda c: c.islower()):
        i = len(chars) - 1
        while i > 0 and len(chars) > minlength:
            if drop(chars[i]) and not first_of_word(i):
                del chars[i]
            i -= 1
        if len(chars) <= minlength:
            break
    return "".join(chars)


def named_vector(names: list[str], values: list[str]) -> list[str]:
    """print() of a named vector: two lines, every cell right-justified to one width + ' '."""
    width = max(len(s) for s in [*names, *values])
    return ["".join(s.rjust(width) + " " for s in row) for row in (names, values)]


def char_matrix(header: list[str], rows: list[list[str]], right: bool = False) -> list[str]:
    """print() of a character matrix with quote = FALSE; the first column is the row names.

    Row names are left-justified; the other columns are left-justified (right = FALSE) or
    right-justified (right = TRUE), each to the widest of its header and cells.
    """
    ncol = len(header)
    widths = [max(len(r[k]) for r in [header, *rows]) for k in range(ncol)]
    lines = []
    for r in [header, *rows]:
        cells = [r[0].ljust(widths[0])]
        for k in range(1, ncol):
            cells.append(r[k].rjust(widths[k]) if right else r[k].ljust(widths[k]))
        lines.append(" ".join(cells))
    return lines


def format_sci(xs, digits: int) -> list[str]:
    """R's scientific format of a vector: common mantissa digits (trailing zeros dropped),
    two-digit exponent: 7.77e-06, 9.9e-08."""
    xs = [float(x) for x in xs]
    sig = 1
    for x in xs:
        m = f"{abs(x):.{digits - 1}e}".split("e")[0].replace(".", "").rstrip("0")
        sig = max(sig, len(m))
    out = []
    for x in xs:
        mant, exp = f"{x:.{sig - 1}e}".split("e")
        out.append(f"{mant}e{int(exp):+03d}")
    width = max(len(s) for s in out)
    return [s.rjust(width) for s in out]


def format_pval(pv, digits: int = 3, eps: float = 2.220446e-16) -> list[str]:
    """R's format.pval: fixed notation down to 1e-4 (one group), scientific below (another),
    '<2e-16' under eps."""
    pv = np.asarray(pv, dtype=float)
    out = [""] * len(pv)
    is0 = pv < eps
    expo = np.floor(np.log10(np.where(pv > 0, pv, 1.0)))
    fixp = ~is0 & ((expo >= -3) | ((expo == -4) & (digits > 1)))
    sci = ~is0 & ~fixp
    for mask, fmt in (
        (fixp, lambda v: format_num(v, digits)),
        (sci, lambda v: format_sci(v, digits)),
    ):
        idx = np.flatnonzero(mask)
        if len(idx):
            for i, s in zip(idx, fmt(pv[idx])):
                out[i] = s.strip()
    if is0.any():  # "<2e-16", or "< 2e-16" beside wider p-values
        nc = max((len(out[i]) for i in np.flatnonzero(~is0)), default=0)
        sep = "" if nc <= 6 else " "
        for i in np.flatnonzero(is0):
            out[i] = "<" + sep + "2e-16"
    return out


def signif_stars(pv) -> list[str]:
    """R's significance stars: *** <= 0.001 < ** <= 0.01 < * <= 0.05 < . <= 0.1."""
    cuts = [(0.001, "***"), (0.01, "**"), (0.05, "*"), (0.1, ".")]
    stars = [next((s for c, s in cuts if p <= c), " ") for p in pv]
    width = max(len(s) for s in stars)
    return [s.ljust(width) for s in stars]
