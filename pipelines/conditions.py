"""The small language of a stage's ``when`` condition.

    when: <+pipeline.variables.env> == "prod" && <+pipeline.stages.build.output.changed> != "false"

Operands are expressions (``<+…>``), quoted strings (``"…"`` or ``'…'``, with ``\\`` escaping
the next character), numbers (the one grammar of ``stageline.numbers``: ``12``, ``-3.5``),
``true`` and ``false``; any other bare word is refused, so a typo such as ``prod`` for
``"prod"`` (or ``1_000`` for ``1000``) is caught when the pipeline is saved. Operators, from
the loosest to the tightest: ``||``, ``&&``, ``==`` / ``!=`` (not chained), ``!``, and
parentheses (at most ``MAX_NESTING`` deep).

Expression values are substituted as values, never spliced into the text, so a runtime input
cannot change the condition's shape: an input ``" || true`` is only ever that text.

Two values compare as numbers when both are numbers by that grammar (``3 == 3.0``), else as
exact text (``1_000``, ``1e3``, ``" 3"`` and ``.5`` are text, as everywhere in Stageline). A
lone operand is true unless, ignoring case and surrounding spaces, it is empty, ``false``,
``no``, ``null``, ``none``, or a number equal to zero (``0``, ``0.0``, ``-0``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from stageline.numbers import NUMBER_HINT, NumberError, is_number, parse_number

TOKEN_RE = re.compile(
    r"""
        (?P<expr><\+[^<>]*>)
      | (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
      | (?P<op>==|!=|&&|\|\||!|\(|\))
      | (?P<word>[A-Za-z0-9_.+\-]+)
    """,
    re.VERBOSE | re.DOTALL,
)
FALSY = {"", "false", "no", "null", "none"}
MAX_NESTING = 32
WORD_HINTS = {"and": "&&", "or": "||", "not": "!"}


def _snippet(text: str, pos: int) -> str:
    return text[pos : pos + 20].split("\n", 1)[0]


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            return tokens
        match = TOKEN_RE.match(text, pos)
        if not match:
            char = text[pos]
            if text.startswith("<+", pos):
                raise ValueError(
                    f"the expression at '{_snippet(text, pos)}' is not closed with '>'"
                )
            if char in "\"'":
                raise ValueError(f"the text at '{_snippet(text, pos)}' has no closing {char}")
            if char in "=&|":
                raise ValueError(f"'{char}' alone is not an operator (use ==, !=, && or ||)")
            raise ValueError(f"cannot read the condition at '{_snippet(text, pos)}'")
        kind = match.lastgroup or ""
        value = match.group(kind)
        if kind == "str":
            value = re.sub(r"\\(.)", r"\1", value[1:-1], flags=re.DOTALL)
        elif kind == "word":
            lowered = value.lower()
            if lowered in WORD_HINTS:
                raise ValueError(f"'{value}' is not an operator here: use {WORD_HINTS[lowered]}")
            if lowered not in ("true", "false") and not is_number(value):
                if value[0] in "0123456789+-.":
                    raise ValueError(
                        f"'{value[:40]}' is not {NUMBER_HINT}; quote it if it is text, "
                        f'as in "{value[:40]}"'
                    )
                raise ValueError(
                    f"'{value[:40]}' is not a value: quote text, as in \"{value[:40]}\""
                )
        tokens.append((kind, value))
        pos = match.end()


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]]):
        self.tokens = tokens
        self.pos = 0
        self.depth = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> tuple[str, str]:
        token = self.peek()
        if token is None:
            after = f" after '{self.tokens[-1][1]}'" if self.tokens else ""
            raise ValueError(f"the condition ends too early{after}")
        self.pos += 1
        return token

    def parse(self) -> Any:
        if not self.tokens:
            raise ValueError("the condition is empty")
        node = self.or_expr()
        token = self.peek()
        if token is not None:
            if token in (("op", "=="), ("op", "!=")):
                raise ValueError(
                    f"comparisons cannot be chained: combine them with && or || (at '{token[1]}')"
                )
            if token == ("op", ")"):
                raise ValueError("a ')' has no matching '('")
            raise ValueError(f"unexpected '{token[1][:40]}' in the condition (missing && or ||?)")
        return node

    def or_expr(self) -> Any:
        terms = [self.and_expr()]
        while self.peek() == ("op", "||"):
            self.take()
            terms.append(self.and_expr())
        return terms[0] if len(terms) == 1 else ("or", tuple(terms))

    def and_expr(self) -> Any:
        terms = [self.comparison()]
        while self.peek() == ("op", "&&"):
            self.take()
            terms.append(self.comparison())
        return terms[0] if len(terms) == 1 else ("and", tuple(terms))

    def comparison(self) -> Any:
        node = self.unary()
        token = self.peek()
        if token in (("op", "=="), ("op", "!=")):
            self.take()
            node = (token[1], node, self.unary())
        return node

    def unary(self) -> Any:
        token = self.take()
        if token == ("op", "!") or token == ("op", "("):
            self.depth += 1
            if self.depth > MAX_NESTING:
                raise ValueError(f"the condition nests deeper than {MAX_NESTING} levels")
            try:
                if token == ("op", "!"):
                    return ("not", self.unary())
                node = self.or_expr()
                if self.peek() != ("op", ")"):
                    raise ValueError("a '(' is not closed in the condition")
                self.take()
                return node
            finally:
                self.depth -= 1
        if token[0] == "expr":
            return ("expr", token[1][2:-1].strip())
        if token[0] in ("str", "word"):
            return ("lit", token[1])
        raise ValueError(f"unexpected '{token[1]}' in the condition (a value is missing)")


def parse_condition(text: str) -> Any:
    """Parse a condition; raise ``ValueError`` with the reason when it is malformed."""
    if not isinstance(text, str):
        raise ValueError("the condition must be text")
    return _Parser(_tokenize(text)).parse()


def _number(text: str) -> Decimal | None:
    """``text`` as a number by the one grammar, or None when it is text."""
    try:
        return parse_number(text, "a condition's value")
    except NumberError:
        return None


def _value(node: Any, resolve: Callable[[str], str]) -> str:
    kind = node[0]
    if kind == "expr":
        value = resolve(node[1])
        return "" if value is None else str(value)
    if kind == "lit":
        return node[1]
    return "true" if _truth(node, resolve) else "false"


def _equal(left: str, right: str) -> bool:
    left_number, right_number = _number(left), _number(right)
    if left_number is not None and right_number is not None:
        return left_number == right_number
    return left == right


def is_truthy(value: str) -> bool:
    """The truthiness rule of the module docstring, for one value."""
    text = value.strip().lower()  # the truthiness words and zero, ignoring surrounding spaces
    if text in FALSY:
        return False
    number = _number(text)
    return number is None or number != 0


def _truth(node: Any, resolve: Callable[[str], str]) -> bool:
    kind = node[0]
    if kind == "or":
        return any(_truth(term, resolve) for term in node[1])
    if kind == "and":
        return all(_truth(term, resolve) for term in node[1])
    if kind == "not":
        return not _truth(node[1], resolve)
    if kind in ("==", "!="):
        same = _equal(_value(node[1], resolve), _value(node[2], resolve))
        return same if kind == "==" else not same
    return is_truthy(_value(node, resolve))


def evaluate_condition(text: str, resolve: Callable[[str], str]) -> bool:
    """Evaluate ``text`` with ``resolve(expression) -> value`` for each ``<+expression>``."""
    return _truth(parse_condition(text), resolve)
