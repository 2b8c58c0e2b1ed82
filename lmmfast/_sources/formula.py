"""lme4 formulas: split ``y ~ fixed + (expr | group)`` into its parts, with R's meaning.

The random-effects terms are expanded as lme4 1.1 does:

* ``(x || g)``   -> ``(1 | g) + (0 + x | g)``   (uncorrelated terms, one per formula term)
* ``(1 | a/b)``  -> ``(1 | b:a) + (1 | a)``      (finest first; the label of a:b within a is "b:a")
* ``(1 | a/b/c)`` -> labels ``c:(b:a)``, ``b:a``, ``a`` (lme4's expandSlash nests the labels)
* ``(1 | a:b)``  -> one term on the interaction factor, labelled "a:b"

The fixed part and each term's left-hand side stay in R's syntax, for R's terms() and
model.matrix (rterms.py, design.py).  ``offset(expr)`` terms are taken out of the fixed
part.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from .._errors import FormulaError, NotMixedModelError

_OPEN = "([{"
_CLOSE = ")]}"
_NAME = re.compile(r"^(`[^`]+`|[A-Za-z_.][A-Za-z0-9_.]*)$")


@dataclass(frozen=True)
class RandomTerm:
    """One random-effects term ``(expr | f1:f2:...)`` after expansion."""

    expr: str  # the left-hand side, R's syntax (e.g. "1 + Days", "0 + Days")
    factors: tuple[str, ...]  # columns whose interaction is the grouping factor
    label: str  # lme4's name of the grouping factor, e.g. "Subject", "cask:batch"


@dataclass(frozen=True)
class ParsedFormula:
    """A mixed-model formula taken apart."""

    formula: str
    response: str
    fixed: str  # right-hand side of the fixed part, R's syntax
    random: tuple[RandomTerm, ...]
    offsets: tuple[str, ...] = ()  # expressions inside offset(...)


def parse_formula(formula: str) -> ParsedFormula:
    """Parse an lme4 formula; raise FormulaError (with the position) if it is malformed."""
    if not isinstance(formula, str):
        raise FormulaError(
            f"the formula must be a string such as 'y ~ x + (1 | g)', not {type(formula).__name__}"
        )
    return _parse(formula)


@lru_cache(maxsize=256)
def _parse(formula: str) -> ParsedFormula:
    """parse_formula, once per formula text (the result is frozen; errors are not cached)."""
    _check_brackets(formula)
    tildes = _top_level(formula, "~")
    if not tildes:
        raise FormulaError(
            "the formula has no '~'; write it as 'response ~ fixed effects + (terms | group)'",
            formula,
            len(formula),
        )
    if len(tildes) > 1:
        raise FormulaError("the formula has more than one '~'", formula, tildes[1])
    cut = tildes[0]
    response = formula[:cut].strip()
    if not response:
        raise FormulaError(
            "the formula has no response before '~'; write 'response ~ ...'", formula, 0
        )
    fixed_parts, random_terms, offsets = [], [], []
    for start, piece in _split_plus(formula, cut + 1, len(formula)):
        text = piece.strip()
        if not text:
            raise FormulaError("empty term: two '+' in a row, or a trailing '+'", formula, start)
        inner = _parenthesized(text)
        if inner is not None and (_top_level(inner, "|") or _top_level(inner, "||")):
            random_terms.extend(_random_term(inner, formula, start + piece.index("(") + 1))
        elif "|" in _strip_quoted(text):
            raise FormulaError(
                "a random-effects term must stand alone in parentheses and be added with '+', "
                "as in 'y ~ x + (1 | g)'",
                formula,
                start + piece.index("|"),
            )
        elif text.startswith("offset(") and text.endswith(")"):
            offsets.append(text[len("offset(") : -1].strip())
        else:
            fixed_parts.append(text)
    if not random_terms:
        raise NotMixedModelError(
            f"{formula!r} has no random-effects term such as (1 | group), so it is not a mixed "
            "model; add one, or use ordinary regression (statsmodels.formula.api.ols) for "
            "fixed effects only"
        )
    fixed = " + ".join(fixed_parts) if fixed_parts else "1"
    return ParsedFormula(formula, response, fixed, tuple(random_terms), tuple(offsets))


def _random_term(inner: str, formula: str, at: int) -> list[RandomTerm]:
    double = _top_level(inner, "||")
    bars = double or _top_level(inner, "|")
    if len(bars) > 1:
        raise FormulaError("a random-effects term has more than one '|'", formula, at + bars[1])
    width = 2 if double else 1
    lhs, rhs = inner[: bars[0]].strip(), inner[bars[0] + width :].strip()
    if not lhs:
        raise FormulaError(
            "nothing before '|' in a random-effects term; write (1 | g) for a random intercept",
            formula,
            at,
        )
    if not rhs:
        raise FormulaError(
            "no grouping factor after '|' in a random-effects term", formula, at + len(inner)
        )
    groups = _grouping(rhs, formula, at + bars[0] + width)
    exprs = _uncorrelated(lhs) if double else [lhs]
    return [RandomTerm(e, factors, label) for factors, label in groups for e in exprs]


def _grouping(rhs: str, formula: str, at: int) -> list[tuple[tuple[str, ...], str]]:
    """'a/b' -> [(('b', 'a'), 'b:a'), (('a',), 'a')]; 'a:b' -> [(('a', 'b'), 'a:b')].

    lme4's labels nest: a/b/c -> 'c:(b:a)', 'b:a', 'a' (the factors are c, b, a)."""
    nests = []
    for part in rhs.split("/"):
        names = [s.strip() for s in part.split(":")]
        for s in names:
            if not _NAME.match(s):
                raise FormulaError(
                    f"the grouping factor {s!r} is not a column name; a grouping factor is a "
                    "column, an interaction a:b, or a nesting a/b",
                    formula,
                    at + max(rhs.find(s), 0),
                )
        nests.append([s.strip("`") for s in names])
    out = []
    for k in range(len(nests), 0, -1):  # finest first, as lme4's expandSlash
        factors = [f for level in reversed(nests[:k]) for f in level]
        label = ":".join(nests[0])
        for j, level in enumerate(nests[1:k], start=1):
            label = ":".join(level) + ":" + (f"({label})" if j > 1 else label)
        out.append((tuple(factors), label))
    return out


def _uncorrelated(lhs: str) -> list[str]:
    """lme4's expandDoubleVerts: (1 + x + z || g) -> (1|g), (0 + x|g), (0 + z|g)."""
    pieces = [p.strip() for _, p in _split_plus(lhs, 0, len(lhs))]
    intercept = True
    terms = []
    for p in pieces:
        if p in ("0", "-1") or p.endswith("- 1") or p.endswith("-1"):
            intercept = False
            p = p.rsplit("-", 1)[0].strip() if p not in ("0", "-1") else ""
        if p and p != "1":
            terms.append(f"0 + {p}")
    return (["1"] if intercept else []) + terms


def _check_brackets(s: str) -> None:
    stack = []
    quote = None
    for i, ch in enumerate(s):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"`":
            quote = ch
        elif ch in _OPEN:
            stack.append((ch, i))
        elif ch in _CLOSE:
            if not stack or _OPEN.index(stack[-1][0]) != _CLOSE.index(ch):
                raise FormulaError(f"unmatched {ch!r} in the formula", s, i)
            stack.pop()
    if quote:
        raise FormulaError("unterminated quote in the formula", s, s.rfind(quote))
    if stack:
        raise FormulaError(f"unclosed {stack[-1][0]!r} in the formula", s, stack[-1][1])


def _depths(s: str):
    """Yield (index, char, depth) outside quotes."""
    depth, quote = 0, None
    for i, ch in enumerate(s):
        if quote:
            if ch == quote:
                quote = None
            continue
        if ch in "'\"`":
            quote = ch
        elif ch in _OPEN:
            depth += 1
        elif ch in _CLOSE:
            depth -= 1
        else:
            yield i, ch, depth


def _top_level(s: str, token: str) -> list[int]:
    """Positions of `token` at bracket depth 0 ('|' does not match inside '||')."""
    hits = []
    skip = -1
    for i, _, depth in _depths(s):
        if depth or i <= skip or not s.startswith(token, i):
            continue
        if token == "|" and (s.startswith("||", i) or (i > 0 and s[i - 1] == "|")):
            skip = i + 1
            continue
        hits.append(i)
        skip = i + len(token) - 1
    return hits


def _split_plus(s: str, lo: int, hi: int):
    """Split s[lo:hi] at depth-0 '+'; yield (absolute start, piece)."""
    sub = s[lo:hi]
    cuts = [i for i, ch, d in _depths(sub) if ch == "+" and d == 0]
    start = 0
    for c in [*cuts, len(sub)]:
        yield lo + start, sub[start:c]
        start = c + 1


def _parenthesized(text: str) -> str | None:
    """'(a | b)' -> 'a | b' if the outer parentheses enclose the whole text."""
    if not (text.startswith("(") and text.endswith(")")):
        return None
    depth = 0
    for i, ch, _ in ((i, c, 0) for i, c in enumerate(text)):
        depth += ch == "("
        depth -= ch == ")"
        if depth == 0 and i < len(text) - 1:
            return None
    return text[1:-1]


def _strip_quoted(text: str) -> str:
    return re.sub(r"(['\"`]).*?\1", "", text)
