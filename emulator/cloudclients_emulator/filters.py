"""The Pub/Sub subscription filter language, on message attributes.

Grammar (as documented for the service)::

    expr    := and_expr { "OR" and_expr }
    and_expr:= unary { "AND" unary }
    unary   := ("NOT" | "-") unary | "(" expr ")" | test
    test    := "attributes." KEY ("=" | "!=") STRING
             | "attributes:" KEY
             | "hasPrefix(" "attributes." KEY "," STRING ")"

KEY is an identifier or a double-quoted string; STRING is double-quoted with
backslash escapes. :func:`compile_filter` raises :class:`FilterError` (the
service answers INVALID_ARGUMENT) for anything else.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

__all__ = ["MAX_FILTER_LENGTH", "FilterError", "Predicate", "compile_filter"]

Predicate = Callable[[Mapping[str, str]], bool]
MAX_FILTER_LENGTH = 256  # the service's limit on filter length

_TOKEN = re.compile(
    r'\s*(?:(?P<string>"(?:[^"\\]|\\.)*")|(?P<op>!=|=|\(|\)|,|:|-|\.)|(?P<word>[A-Za-z_][A-Za-z0-9_\-]*))'
)


class FilterError(ValueError):
    """The filter is not valid in the Pub/Sub filter language."""


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if not m:
            raise FilterError(f"unexpected character {text[pos:].strip()[0]!r} at position {pos}")
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


def _either(a: Predicate, b: Predicate) -> Predicate:
    return lambda attrs: a(attrs) or b(attrs)


def _both(a: Predicate, b: Predicate) -> Predicate:
    return lambda attrs: a(attrs) and b(attrs)


def _unquote(token: str) -> str:
    return re.sub(r"\\(.)", r"\1", token[1:-1])


class _Parser:
    def __init__(self, text: str) -> None:
        self.toks = _tokens(text)
        self.i = 0

    def peek(self) -> tuple[str, str] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, value: str | None = None, kind: str | None = None) -> str:
        tok = self.peek()
        if tok is None:
            raise FilterError(f"unexpected end of filter, expected {value or kind}")
        if (value is not None and tok[1] != value) or (kind is not None and tok[0] != kind):
            raise FilterError(f"expected {value or kind}, found {tok[1]!r}")
        self.i += 1
        return tok[1]

    def at_word(self, word: str) -> bool:
        tok = self.peek()
        return tok is not None and tok == ("word", word)

    def expr(self) -> Predicate:
        left = self.and_expr()
        while self.at_word("OR"):
            self.i += 1
            right = self.and_expr()
            left = _either(left, right)
        return left

    def and_expr(self) -> Predicate:
        left = self.unary()
        while self.at_word("AND"):
            self.i += 1
            right = self.unary()
            left = _both(left, right)
        return left

    def unary(self) -> Predicate:
        tok = self.peek()
        if tok in (("word", "NOT"), ("op", "-")):
            self.i += 1
            inner = self.unary()
            return lambda attrs: not inner(attrs)
        if tok == ("op", "("):
            self.i += 1
            inner = self.expr()
            self.take(")")
            return inner
        return self.test()

    def key(self) -> str:
        tok = self.peek()
        if tok is not None and tok[0] == "string":
            self.i += 1
            return _unquote(tok[1])
        return self.take(kind="word")

    def test(self) -> Predicate:
        if self.at_word("hasPrefix"):
            self.i += 1
            self.take("(")
            self.take("attributes", "word")
            self.take(".")
            key = self.key()
            self.take(",")
            prefix = _unquote(self.take(kind="string"))
            self.take(")")
            return lambda attrs: key in attrs and attrs[key].startswith(prefix)
        self.take("attributes", "word")
        sep = self.take(kind="op")
        if sep == ":":
            key = self.key()
            return lambda attrs: key in attrs
        if sep != ".":
            raise FilterError(f"expected '.' or ':' after 'attributes', found {sep!r}")
        key = self.key()
        op = self.take(kind="op")
        if op not in ("=", "!="):
            raise FilterError(f"expected '=' or '!=' after attributes.{key}, found {op!r}")
        value = _unquote(self.take(kind="string"))
        if op == "=":
            return lambda attrs: attrs.get(key) == value
        return lambda attrs: attrs.get(key) != value


def compile_filter(text: str) -> Predicate | None:
    """Compile *text*; ``None`` for the empty filter (everything matches).

    :raises FilterError: for a filter the service would refuse.
    """
    if not text.strip():
        return None
    size = len(text.encode("utf-8"))  # the limit is in bytes, not characters
    if size > MAX_FILTER_LENGTH:
        raise FilterError(f"filter is {size} bytes long; the maximum is {MAX_FILTER_LENGTH} bytes")
    parser = _Parser(text)
    predicate = parser.expr()
    if parser.peek() is not None:
        raise FilterError(f"unexpected {parser.peek()[1]!r} after a complete expression")  # type: ignore[index]
    return predicate
