"""The small language of a stage's ``when`` condition.

    when: <+pipeline.variables.env> == "prod" && <+pipeline.stages.build.output.changed> != "false"

Operands are expressions (``<+…>``), quoted strings, numbers, ``true`` and ``false``;
operators are ``==``, ``!=``, ``&&``, ``||``, ``!`` and parentheses. Expression values are
substituted as values, never spliced into the text, so a runtime input cannot change the
condition's shape. Values compare as numbers when both sides are numbers, else as text. A lone
operand is true unless it is empty, ``false``, ``0``, ``no`` or ``null``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

TOKEN_RE = re.compile(
    r"""\s*(?:
        (?P<expr><\+[^<>]*>)
      | (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
      | (?P<op>==|!=|&&|\|\||!|\(|\))
      | (?P<word>[A-Za-z0-9_.\-]+)
    )""",
    re.VERBOSE,
)
FALSY = {"", "false", "0", "no", "null", "none"}


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        match = TOKEN_RE.match(text, pos)
        if not match or match.end() == pos:
            raise ValueError(f"cannot read the condition at '{text[pos:pos + 20]}'")
        kind = match.lastgroup or ""
        value = match.group(kind)
        if kind == "str":
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        tokens.append((kind, value))
        pos = match.end()
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return tokens


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]]):
        self.tokens = tokens
        self.pos = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> tuple[str, str]:
        token = self.peek()
        if token is None:
            raise ValueError("the condition ends too early")
        self.pos += 1
        return token

    def parse(self) -> Any:
        if not self.tokens:
            raise ValueError("the condition is empty")
        node = self.or_expr()
        if self.peek() is not None:
            raise ValueError(f"unexpected '{self.peek()[1]}' in the condition")
        return node

    def or_expr(self) -> Any:
        node = self.and_expr()
        while self.peek() == ("op", "||"):
            self.take()
            node = ("or", node, self.and_expr())
        return node

    def and_expr(self) -> Any:
        node = self.comparison()
        while self.peek() == ("op", "&&"):
            self.take()
            node = ("and", node, self.comparison())
        return node

    def comparison(self) -> Any:
        node = self.unary()
        token = self.peek()
        if token in (("op", "=="), ("op", "!=")):
            self.take()
            node = (token[1], node, self.unary())
        return node

    def unary(self) -> Any:
        token = self.take()
        if token == ("op", "!"):
            return ("not", self.unary())
        if token == ("op", "("):
            node = self.or_expr()
            if self.take() != ("op", ")"):
                raise ValueError("a '(' is not closed in the condition")
            return node
        if token[0] == "expr":
            return ("expr", token[1][2:-1].strip())
        if token[0] in ("str", "word"):
            return ("lit", token[1])
        raise ValueError(f"unexpected '{token[1]}' in the condition")


def parse_condition(text: str) -> Any:
    """Parse a condition; raise ``ValueError`` with the reason when it is malformed."""
    return _Parser(_tokenize(text)).parse()


def _value(node: Any, resolve: Callable[[str], str]) -> str:
    kind = node[0]
    if kind == "expr":
        return str(resolve(node[1]))
    if kind == "lit":
        return node[1]
    return "true" if _truth(node, resolve) else "false"


def _equal(left: str, right: str) -> bool:
    try:
        return float(left) == float(right)
    except ValueError:
        return left == right


def _truth(node: Any, resolve: Callable[[str], str]) -> bool:
    kind = node[0]
    if kind == "or":
        return _truth(node[1], resolve) or _truth(node[2], resolve)
    if kind == "and":
        return _truth(node[1], resolve) and _truth(node[2], resolve)
    if kind == "not":
        return not _truth(node[1], resolve)
    if kind in ("==", "!="):
        same = _equal(_value(node[1], resolve), _value(node[2], resolve))
        return same if kind == "==" else not same
    return _value(node, resolve).strip().lower() not in FALSY


def evaluate_condition(text: str, resolve: Callable[[str], str]) -> bool:
    """Evaluate ``text`` with ``resolve(expression) -> value`` for each ``<+expression>``."""
    return _truth(parse_condition(text), resolve)
