"""R's terms(): the right-hand side of a formula as an ordered list of terms.

A term is a set of variables (a bit set over the formula's variables, numbered in order
of first appearance, as R's ``terms.formula``).  The operators, as in R's model.c:

* ``a + b``  both;   ``a - b``  a without b's terms (``- 1`` drops the intercept)
* ``a:b``    every union of a term of a with a term of b
* ``a * b``  ``a + b + a:b``
* ``a / b``  ``a + (union of a's terms):b`` (``a/b`` is ``a + a:b``)
* ``b %in% a``  every term of b joined with all of a's variables (``b:a``)
* ``(a + b)^n`` all interactions up to order n
* ``1``, ``0``, ``-1``: the intercept

Terms are then sorted by order (main effects, two-way interactions, ...), stably, and a
term's label lists its variables in variable order: ``Sector:cSES`` after ``cSES +
Sector`` is labelled ``cSES:Sector``, as R labels it.  Anything else (a call such as
``log(x)``, a comparison, ``I(x^2)``) is a variable, named by its deparsed text.

Each variable of a term is coded by contrasts or by indicator columns as R's TermCode
decides: by contrasts if the term without it is empty or contained in an earlier term.
"""

from __future__ import annotations

from dataclasses import dataclass

from .._errors import FormulaError
from .rexpr import Binary, Call, Num, Paren, Sym, Unary, deparse, parse

_FORMULA_OPS = {"+", "-", "*", "/", ":", "^", "%in%"}


@dataclass(frozen=True)
class Terms:
    """The terms of a formula's right-hand side, as R's terms object."""

    variables: tuple  # syntax trees of the variables, in order of first appearance
    labels: tuple[str, ...]  # deparsed variable names
    terms: tuple[frozenset, ...]  # each a set of variable indices, in R's term order
    intercept: bool

    def term_label(self, term) -> str:
        return ":".join(self.labels[i] for i in sorted(term))

    def contrast_codes(self) -> list[dict[int, bool]]:
        """Per term: variable -> True if coded by contrasts, False by indicators (TermCode)."""
        out = []
        for k, term in enumerate(self.terms):
            codes = {}
            for v in term:
                rest = term - {v}
                codes[v] = not rest or any(rest <= prev for prev in self.terms[:k])
            out.append(codes)
        return out


def r_terms(rhs: str, formula: str | None = None) -> Terms:
    """terms() of the right-hand side text `rhs` (e.g. "recipe * temp")."""
    tree = parse(rhs)  # positions in error messages are in rhs, which they show
    variables: list = []
    labels: list[str] = []

    def var(node) -> int:
        if isinstance(node, Sym) and node.name == ".":
            raise FormulaError(
                "'.' (all other columns) is not supported in an lmmfast formula; list the "
                "columns, e.g. y ~ a + b + (1 | g)",
                rhs,
                0,
            )
        if isinstance(node, Num):
            raise FormulaError(
                f"invalid model formula: the term {deparse(node)!r} is a number; only 0 and 1 "
                "(the intercept) may stand as terms",
                rhs,
                0,
            )
        label = deparse(node)
        if label not in labels:
            labels.append(label)
            variables.append(node)
        return labels.index(label)

    def collect(node):  # ExtractVars: variables in order of appearance
        if isinstance(node, Paren):
            collect(node.x)
        elif isinstance(node, Binary) and node.op in _FORMULA_OPS:
            collect(node.left)
            if node.op != "^":
                collect(node.right)
        elif isinstance(node, Unary) and node.op in "+-":
            collect(node.x)
        elif not _is_intercept(node):
            var(node)

    collect(tree)
    state = {"intercept": True}

    def encode(node) -> list[frozenset]:
        if isinstance(node, Paren):
            return encode(node.x)
        if _is_intercept(node):
            state["intercept"] = node.value == 1
            return []
        if isinstance(node, Unary) and node.op in "+-":
            if node.op == "-":
                if _is_intercept(node.x):
                    state["intercept"] = node.x.value == 0
                    return []
                encode(node.x)
                return []  # R: "-a" alone removes a from nothing
            return encode(node.x)
        if isinstance(node, Binary) and node.op in _FORMULA_OPS:
            op = node.op
            if op == "-":
                left = encode(node.left)
                if _is_intercept(node.right):
                    state["intercept"] = node.right.value == 0
                    return left
                drop = set(encode(node.right))
                return [t for t in left if t not in drop]
            if op == "^":
                return _power(encode(node.left), node.right, rhs)
            left, right = encode(node.left), encode(node.right)
            if op == "+":
                return _unique(left + right)
            if op == ":":
                return _unique([a | b for a in left for b in right])
            if op == "*":
                return _unique(left + right + [a | b for a in left for b in right])
            if op == "/":
                whole = frozenset().union(*left) if left else frozenset()
                return _unique(left + [whole | b for b in right])
            if op == "%in%":
                whole = frozenset().union(*right) if right else frozenset()
                return _unique([a | whole for a in left])
        if isinstance(node, Call) and node.fn == "offset":
            raise FormulaError("offset() must be a term of its own, added with '+'", rhs, 0)
        return [frozenset([var(node)])]

    terms = [t for t in encode(tree) if t]
    terms = sorted(_unique(terms), key=len)  # stable: R's SortTerms by order
    return Terms(tuple(variables), tuple(labels), tuple(terms), state["intercept"])


def _is_intercept(node) -> bool:
    return isinstance(node, Num) and node.value in (0, 1)


def _unique(terms: list) -> list:
    out = []
    for t in terms:
        if t and t not in out:
            out.append(t)
    return out


def _power(left: list, exponent, formula: str) -> list:
    if isinstance(exponent, Paren):
        exponent = exponent.x
    if not (isinstance(exponent, Num) and exponent.value >= 1 and exponent.value % 1 == 0):
        raise FormulaError(
            f"the power in a formula, (a + b)^n, must be a positive whole number, not "
            f"{deparse(exponent)!r}",
            formula,
            0,
        )
    right = left
    for _ in range(int(exponent.value) - 1):
        right = _unique([a | b for a in left for b in right])
    return right
