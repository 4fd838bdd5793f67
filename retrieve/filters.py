"""Metadata filters: a small safe grammar parsed into a pyarrow compute expression.

Grammar (case-insensitive keywords)::

    expr    := term ("or" term)*
    term    := factor ("and" factor)*
    factor  := "not" factor | "(" expr ")" | compare
    compare := NAME OP literal | NAME ["not"] "in" "(" literal ("," literal)* ")"
             | NAME "is" ["not"] "null"
    OP      := == | = | != | < | <= | > | >=
    literal := number | 'text' | "text" | true | false

No ``eval``: the string is tokenised and parsed by hand.
"""
from __future__ import annotations

import re
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from xtrieve.errors import FilterError

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<num>-?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)
      | (?P<str>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
      | (?P<op>==|!=|<=|>=|=|<|>)
      | (?P<punct>[(),])
      | (?P<name>[A-Za-z_][A-Za-z0-9_.]*)
    )""",
    re.VERBOSE,
)
_KEYWORDS = {"and", "or", "not", "in", "is", "null", "true", "false"}


def _tokens(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise FilterError(f"filter {text!r}: cannot parse near {text[pos:pos + 15]!r}")
        kind = m.lastgroup
        value = m.group(kind)
        if kind == "name" and value.lower() in _KEYWORDS:
            kind, value = "kw", value.lower()
        out.append((kind, value))
        pos = m.end()
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return out


class _Parser:
    def __init__(self, text: str, columns: set[str]) -> None:
        self.text, self.columns = text, columns
        self.toks = _tokens(text)
        self.i = 0
        self.used: set[str] = set()

    def fail(self, what: str) -> FilterError:
        return FilterError(f"filter {self.text!r}: {what}")

    def peek(self) -> tuple[str, str] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, kind: str | None = None, value: str | None = None) -> tuple[str, str]:
        tok = self.peek()
        if tok is None or (kind and tok[0] != kind) or (value and tok[1] != value):
            want = value or kind or "more input"
            raise self.fail(f"expected {want}, got {tok[1] if tok else 'end of filter'}")
        self.i += 1
        return tok

    def accept(self, kind: str, value: str | None = None) -> bool:
        tok = self.peek()
        if tok and tok[0] == kind and (value is None or tok[1] == value):
            self.i += 1
            return True
        return False

    def parse(self) -> pc.Expression:
        if not self.toks:
            raise self.fail("empty filter")
        expr = self.expr()
        if self.peek() is not None:
            raise self.fail(f"unexpected {self.peek()[1]!r}")
        return expr

    def expr(self) -> pc.Expression:
        out = self.term()
        while self.accept("kw", "or"):
            out = out | self.term()
        return out

    def term(self) -> pc.Expression:
        out = self.factor()
        while self.accept("kw", "and"):
            out = out & self.factor()
        return out

    def factor(self) -> pc.Expression:
        if self.accept("kw", "not"):
            return ~self.factor()
        if self.accept("punct", "("):
            out = self.expr()
            self.take("punct", ")")
            return out
        return self.compare()

    def literal(self) -> Any:
        kind, value = self.take()
        if kind == "num":
            return float(value) if any(c in value for c in ".eE") else int(value)
        if kind == "str":
            return re.sub(r"\\(.)", r"\1", value[1:-1])
        if kind == "kw" and value in ("true", "false"):
            return value == "true"
        raise self.fail(f"expected a value, got {value!r}")

    def compare(self) -> pc.Expression:
        kind, name = self.take()
        if kind != "name":
            raise self.fail(f"expected a column name, got {name!r}")
        if name not in self.columns:
            known = ", ".join(sorted(self.columns)) or "none"
            raise self.fail(f"unknown column {name!r} (metadata columns: {known})")
        self.used.add(name)
        field = pc.field(name)
        if self.accept("kw", "is"):
            negate = self.accept("kw", "not")
            self.take("kw", "null")
            return ~field.is_null() if negate else field.is_null()
        negate = self.accept("kw", "not")
        if self.accept("kw", "in"):
            self.take("punct", "(")
            values = [self.literal()]
            while self.accept("punct", ","):
                values.append(self.literal())
            self.take("punct", ")")
            try:
                out = field.isin(values)
            except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
                raise self.fail(f"the values of 'in' must share one type ({exc})") from None
            return ~out if negate else out
        if negate:
            raise self.fail("'not' after a column name must be followed by 'in'")
        _, op = self.take("op")
        value = self.literal()
        return {
            "==": field == value, "=": field == value, "!=": field != value,
            "<": field < value, "<=": field <= value, ">": field > value, ">=": field >= value,
        }[op]


def parse_filter(text: str, columns: set[str]) -> pc.Expression:
    """Parse a filter string over the given metadata columns into a pyarrow Expression."""
    if not isinstance(text, str):
        raise FilterError(f"a filter must be a string or a pyarrow Expression, got {type(text).__name__}")
    return _Parser(text, columns).parse()


def as_expression(filter: str | pc.Expression, columns: set[str]) -> pc.Expression:
    """A filter string or Expression as an Expression, checked against the columns."""
    if isinstance(filter, pc.Expression):
        return filter
    return parse_filter(filter, columns)


def allowed_rows(table: pa.Table, expr: pc.Expression) -> "pa.BooleanArray":
    """Evaluate the expression over a table: True where the row passes (nulls fail)."""
    import pyarrow.dataset as ds

    try:
        mask = ds.dataset(table).to_table(columns={"keep": expr}).column("keep")
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        raise FilterError(f"filter cannot be applied: {exc}") from None
    return pc.fill_null(mask, False).combine_chunks()
