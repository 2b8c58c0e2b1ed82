"""R expressions: parse the text of a formula as R's parser does, deparse it as R prints it.

A formula is an R expression: ``log(1 + total.fruits) ~ nutrient * amd + (1 | gen)``.
The parser follows R's grammar for the operators a formula can hold, with R's
precedence (highest first)::

    ^ (right)   unary - +   :   %any%   * /   binary + -   < > <= >= == !=   !   & &&   | ||   ~

so ``-x^2`` is ``-(x^2)``, ``a:b*c`` is ``(a:b)*c`` and names may contain dots
(``total.fruits``).  ``deparse`` writes a node back as R's ``deparse()`` does, which is
how R names a model-frame variable: spaces around ``+ - * == < & | ~ %in%``, none
around ``/ ^ : %% %/%``, numbers with 15 significant digits in the shorter of fixed and
scientific notation (``1e+05``, ``0.5``), strings in double quotes.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from .._errors import FormulaError


@dataclass(frozen=True)
class Num:
    value: float
    integer: bool = False  # written with an L suffix (2L)


@dataclass(frozen=True)
class Str:
    value: str


@dataclass(frozen=True)
class Sym:
    name: str


@dataclass(frozen=True)
class Call:
    fn: str
    args: tuple  # of (name or None, node)


@dataclass(frozen=True)
class Unary:
    op: str
    x: object


@dataclass(frozen=True)
class Binary:
    op: str
    left: object
    right: object


@dataclass(frozen=True)
class Paren:
    x: object


# binary operators: precedence (higher binds tighter) and right-associativity
_BINARY = {
    "^": (14, True), ":": (12, False), "%": (11, False), "*": (10, False), "/": (10, False),
    "+": (9, False), "-": (9, False), "<": (8, False), ">": (8, False), "<=": (8, False),
    ">=": (8, False), "==": (8, False), "!=": (8, False), "&": (6, False), "&&": (6, False),
    "|": (5, False), "||": (5, False), "~": (3, False),
}  # fmt: skip
_UNARY_MINUS = 13
_NOT = 7
_TOKEN = re.compile(
    r"""\s*(?:
      (?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?L?)
    | (?P<name>(?:[A-Za-z]|\.(?![0-9]))[A-Za-z0-9._]*|\.)
    | (?P<bq>`[^`]*`)
    | (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
    | (?P<op>%[^%]*%|:::?|\*\*|<=|>=|==|!=|&&|\|\||<-|->|\|>|[-+*/^:<>!&|~(),=\[\]$@?{};])
    )""",
    re.VERBOSE,
)
_CONSTANTS = {"TRUE", "FALSE", "T", "F", "NA", "NULL", "Inf", "NaN", "pi"}


def parse(text: str, formula: str | None = None, at: int = 0):
    """The syntax tree of one R expression; FormulaError (with the position) if malformed."""
    return _Parser(text, formula if formula is not None else text, at).parse()


class _Parser:
    def __init__(self, text: str, formula: str, at: int):
        self.text, self.formula, self.at = text, formula, at
        self.tokens = []  # (kind, value, position)
        pos = 0
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if m is None or m.end() == pos:
                if text[pos:].strip() == "":
                    break
                self.fail(f"unexpected character {text[pos:].lstrip()[0]!r}", pos)
            kind = m.lastgroup
            value = m.group(kind)
            self.tokens.append((kind, "^" if value == "**" else value, m.start(kind)))
            pos = m.end()
        self.i = 0

    def fail(self, message: str, pos: int | None = None):
        if pos is None:
            pos = self.tokens[self.i][2] if self.i < len(self.tokens) else len(self.text)
        raise FormulaError(message, self.formula, self.at + pos)

    def peek(self):
        return self.tokens[self.i] if self.i < len(self.tokens) else (None, None, len(self.text))

    def take(self, value=None):
        tok = self.peek()
        if tok[0] is None or (value is not None and tok[1] != value):
            self.fail(f"expected {value!r}" if value else "unexpected end of the expression")
        self.i += 1
        return tok

    def parse(self):
        node = self.expr(0)
        if self.i < len(self.tokens):
            self.fail(f"unexpected {self.tokens[self.i][1]!r}")
        return node

    def expr(self, min_prec: int):
        left = self.prefix()
        while True:
            kind, value, _ = self.peek()
            if kind != "op":
                if kind is not None:
                    self.fail(f"unexpected {value!r}: an operator is missing")
                return left
            key = "%" if value.startswith("%") else value
            if key in ("::", ":::"):
                self.fail(
                    f"R's {value!r} is not supported: write the function without its package "
                    f"(bs(x), not splines::bs(x)); lmmfast evaluates only the functions it lists"
                )
            if key in ("<-", "->", "=", "|>", "$", "@", "[", "?", "{", ";"):
                self.fail(f"R's {value!r} is not supported in a formula")
            if key not in _BINARY:
                return left
            prec, right_assoc = _BINARY[key]
            if prec < min_prec:
                return left
            self.i += 1
            right = self.expr(prec if right_assoc else prec + 1)
            left = Binary(value, left, right)

    def prefix(self):
        kind, value, pos = self.take()
        if kind == "num":
            integer = value.endswith("L")
            return Num(float(value.rstrip("L")), integer)
        if kind == "str":
            return Str(_unescape(value[1:-1]))
        if kind in ("name", "bq"):
            name = value.strip("`") if kind == "bq" else value
            if self.peek()[1] == "(":
                return self.call(name)
            return Sym(name)
        if value == "(":
            inner = self.expr(0)
            self.take(")")
            return Paren(inner)
        if value in ("-", "+"):
            return Unary(value, self.expr(_UNARY_MINUS))
        if value == "!":
            return Unary("!", self.expr(_NOT))
        if value == "~":
            return Unary("~", self.expr(_BINARY["~"][0] + 1))
        self.fail(f"unexpected {value!r}", pos)

    def call(self, fn: str):
        self.take("(")
        args = []
        while self.peek()[1] != ")":
            name = None
            kind, value, _ = self.peek()
            nxt = self.tokens[self.i + 1] if self.i + 1 < len(self.tokens) else (None, None, 0)
            if kind in ("name", "bq", "str") and nxt[1] == "=":
                name = value.strip("`\"'")
                self.i += 2
            args.append((name, self.expr(0)))
            if self.peek()[1] == ",":
                self.i += 1
            elif self.peek()[1] != ")":
                self.fail("expected ',' or ')' in the arguments of " + fn + "()")
        self.take(")")
        return Call(fn, tuple(args))


def _unescape(s: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), s)


# ---- deparse ------------------------------------------------------------------------------

_TIGHT = {"/", "^", ":", "%%", "%/%"}  # R deparses these without spaces
_SYNTACTIC = re.compile(r"^((?:[A-Za-z]|\.(?![0-9]))[A-Za-z0-9._]*|\.)$")


def deparse(node) -> str:
    """The text R's deparse() gives for the node."""
    if isinstance(node, Num):
        return format_number(node.value) + ("L" if node.integer else "")
    if isinstance(node, Str):
        return '"' + node.value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(node, Sym):
        return node.name if _SYNTACTIC.match(node.name) else f"`{node.name}`"
    if isinstance(node, Paren):
        return f"({deparse(node.x)})"
    if isinstance(node, Unary):
        return node.op + deparse(node.x)
    if isinstance(node, Binary):
        sep = node.op if node.op in _TIGHT else f" {node.op} "
        return deparse(node.left) + sep + deparse(node.right)
    if isinstance(node, Call):
        args = ", ".join(deparse(a) if k is None else f"{k} = {deparse(a)}" for k, a in node.args)
        fn = node.fn if _SYNTACTIC.match(node.fn) else f"`{node.fn}`"
        return f"{fn}({args})"
    raise TypeError(node)


def format_number(x: float) -> str:
    """A double as R prints it with 15 significant digits (deparse, as.character)."""
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "Inf" if x > 0 else "-Inf"
    if x == 0:
        return "0"
    sci = f"{x:.14e}"
    mant, exp = sci.split("e")
    digits = mant.replace("-", "").replace(".", "").rstrip("0") or "0"
    nsig, kp = len(digits), int(exp)
    neg = x < 0
    if kp >= 0:
        rgt = max(0, nsig - kp - 1)
        fixed_width = neg + kp + 1 + (rgt + 1 if rgt else 0)
    else:
        rgt = nsig - kp - 1
        fixed_width = neg + 2 + rgt
    sci_width = neg + (nsig + 1 if nsig > 1 else nsig) + (4 if abs(kp) < 100 else 5)
    if fixed_width <= sci_width:
        return f"{x:.{rgt}f}"
    m = f"{float(mant):.{nsig - 1}f}"
    return f"{m}e{'-' if kp < 0 else '+'}{abs(kp):02d}"


def symbols(node, call_args=None) -> list[str]:
    """The symbols of an expression, in order of appearance (function names excluded);
    call_args(call) -> the arguments of a call to look into (default: all of them)."""
    out: list[str] = []

    def walk(n):
        if isinstance(n, Sym):
            if n.name not in out:
                out.append(n.name)
        elif isinstance(n, (Paren, Unary)):
            walk(n.x)
        elif isinstance(n, Binary):
            walk(n.left)
            walk(n.right)
        elif isinstance(n, Call):
            for _, a in n.args if call_args is None else call_args(n):
                walk(a)

    walk(node)
    return out


def is_constant_name(name: str) -> bool:
    return name in _CONSTANTS
