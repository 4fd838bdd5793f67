"""Metadata filters: a small safe grammar parsed into a pyarrow compute expression.

Grammar (case-insensitive keywords)::

    expr    := term ("or" term)*
    term    := factor ("and" factor)*
    factor  := "not" factor | "(" expr ")" | compare
    compare := NAME OP literal | NAME ["not"] "in" "(" literal ("," literal)* ")"
             | NAME "is" ["not"] "null"
    NAME    := letters (any script), digits, "_" and "." | `any name` in backticks
    OP      := == | = | != | < | <= | > | >=
    literal := number | 'text' | "text" | true | false   (text against a date/time column: a date/time)

In a quoted text (or a backticked name) a backslash escapes the quote and a backslash; any
other backslash is kept as written (``path == 'C:\\data'``).

No ``eval``: the string is tokenised and parsed by hand, into a :class:`Condition`: the
pyarrow Expression (:func:`parse_filter`) and the same test as direct ``pyarrow.compute``
calls, which is how a search evaluates it (only these read a text literal against a date or
time column as a date/time: the Expression is built before the column's type is known). Evaluating an Expression needs ``pyarrow.dataset``,
and literals made with ``pa.scalar`` import pandas: together ~0.25 s of the first filtered
search. Literals here are built from buffers (``arrow_literals``); an Expression passed in by
the caller still goes through ``pyarrow.dataset``.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable

import pyarrow as pa
import pyarrow.compute as pc

from xtrieve.errors import FilterError
from xtrieve.index.arrow_numpy import arrow_literals

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<num>-?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)
      | (?P<str>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
      | (?P<op>==|!=|<=|>=|=|<|>)
      | (?P<punct>[(),])
      | (?P<name>[^\W\d][\w.]*)
      | (?P<quoted>`(?:[^`\\]|\\.)*`)
    )""",
    re.VERBOSE,
)
_KEYWORDS = {"and", "or", "not", "in", "is", "null", "true", "false"}
QUOTE_HINT = "(a column name with spaces, '-' or a keyword goes in backticks: `pub-year`)"
# parentheses nest at most this deep (deeper ones are a FilterError, not a RecursionError)
MAX_DEPTH = 64


def _unquote(text: str) -> str:
    """A quoted token's content: ``\\`` and a backslashed quote lose their backslash."""
    return re.sub(r"\\([\\'\"`])", r"\1", text[1:-1])


def _tokens(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            hint = f" {QUOTE_HINT}" if out and out[-1][0] == "name" else ""
            raise FilterError(f"filter {text!r}: cannot parse near {text[pos:pos + 15]!r}{hint}")
        kind = m.lastgroup
        value = m.group(kind)
        if kind == "name" and value.lower() in _KEYWORDS:
            kind, value = "kw", value.lower()
        elif kind == "quoted":
            kind, value = "name", _unquote(value)
        out.append((kind, value))
        pos = m.end()
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return out


@dataclasses.dataclass(frozen=True)
class Condition:
    """A parsed filter: its pyarrow ``expression`` and ``evaluate(table)`` -> a boolean array
    (null where the expression is null) from ``pyarrow.compute`` calls, with Kleene and/or."""

    expression: pc.Expression
    evaluate: Callable[[pa.Table], Any]

    @staticmethod
    def all_of(parts: list["Condition"]) -> "Condition":
        """The conditions joined by "and" (evaluated in one loop: a long chain recurses nowhere)."""
        return Condition._joined(parts, pc.and_kleene)

    @staticmethod
    def any_of(parts: list["Condition"]) -> "Condition":
        """The conditions joined by "or"."""
        return Condition._joined(parts, pc.or_kleene)

    @staticmethod
    def _joined(parts: list["Condition"], join) -> "Condition":
        if len(parts) == 1:
            return parts[0]
        expression = parts[0].expression
        for part in parts[1:]:
            expression = join(expression, part.expression)

        def evaluate(table: pa.Table):
            out = parts[0].evaluate(table)
            for part in parts[1:]:
                out = join(out, part.evaluate(table))
            return out

        return Condition(expression, evaluate)

    def __invert__(self) -> "Condition":
        return Condition(~self.expression, lambda t: pc.invert(self.evaluate(t)))

    @staticmethod
    def of_expression(expr: pc.Expression) -> "Condition":
        """A caller's own Expression, evaluated through ``pyarrow.dataset``."""
        def evaluate(table: pa.Table):
            import pyarrow.dataset as ds

            return ds.dataset(table).to_table(columns={"keep": expr}).column("keep")

        return Condition(expr, evaluate)


_COMPARE = {"==": pc.equal, "=": pc.equal, "!=": pc.not_equal, "<": pc.less, "<=": pc.less_equal,
            ">": pc.greater, ">=": pc.greater_equal}


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

    def parse(self) -> Condition:
        if not self.toks:
            raise self.fail("empty filter")
        expr = self.expr()
        if self.peek() is not None:
            raise self.fail(f"unexpected {self.peek()[1]!r}")
        return expr

    def expr(self, depth: int = 0) -> Condition:
        parts = [self.term(depth)]
        while self.accept("kw", "or"):
            parts.append(self.term(depth))
        return Condition.any_of(parts)

    def term(self, depth: int) -> Condition:
        parts = [self.factor(depth)]
        while self.accept("kw", "and"):
            parts.append(self.factor(depth))
        return Condition.all_of(parts)

    def factor(self, depth: int) -> Condition:
        negate = False
        while self.accept("kw", "not"):
            negate = not negate
        if self.accept("punct", "("):
            if depth >= MAX_DEPTH:
                raise self.fail(f"parentheses nest deeper than {MAX_DEPTH}")
            out = self.expr(depth + 1)
            self.take("punct", ")")
        else:
            out = self.compare()
        return ~out if negate else out

    def literal(self) -> Any:
        kind, value = self.take()
        if kind == "num":
            return float(value) if any(c in value for c in ".eE") else int(value)
        if kind == "str":
            return _unquote(value)
        if kind == "kw" and value in ("true", "false"):
            return value == "true"
        raise self.fail(f"expected a value, got {value!r}")

    def compare(self) -> Condition:
        kind, name = self.take()
        if kind != "name":
            raise self.fail(f"expected a column name, got {name!r} {QUOTE_HINT}")
        if name not in self.columns:
            known = ", ".join(sorted(self.columns)) or "none"
            raise self.fail(f"unknown column {name!r} (metadata columns: {known}) {QUOTE_HINT}")
        self.used.add(name)
        field = pc.field(name)
        if self.accept("kw", "is"):
            negate = self.accept("kw", "not")
            self.take("kw", "null")
            out = Condition(field.is_null(), lambda t: pc.is_null(t.column(name)))
            return ~out if negate else out
        negate = self.accept("kw", "not")
        if self.accept("kw", "in"):
            self.take("punct", "(")
            values = [self.literal()]
            while self.accept("punct", ","):
                values.append(self.literal())
            self.take("punct", ")")
            try:
                value_set = arrow_literals(values)
            except TypeError as exc:
                raise self.fail(f"the values of 'in' must share one type ({exc})") from None
            # null where the value is null, as ==, != and SQL's IN: "x not in (...)" keeps no null x
            null = pa.nulls(1, pa.bool_())[0]
            out = Condition(pc.if_else(field.is_valid(), field.isin(value_set), null),
                            lambda t: _in_set(t.column(name), value_set, null))
            return ~out if negate else out
        if negate:
            raise self.fail("'not' after a column name must be followed by 'in'")
        _, op = self.take("op")
        try:
            value = arrow_literals([self.literal()])[0]
        except TypeError as exc:
            raise self.fail(str(exc)) from None
        compare = _COMPARE[op]
        return Condition(compare(field, value), lambda t: compare(t.column(name), _as_type_of(t.column(name), value)))


def _in_set(column, value_set, null):
    """Whether each value is in ``value_set``: null for a null value (all null for a column of
    nulls only, which pyarrow cannot look up in a typed set)."""
    if pa.types.is_null(column.type):
        return pa.nulls(len(column), pa.bool_())
    return pc.if_else(pc.is_valid(column), pc.is_in(column, value_set=_as_type_of(column, value_set)), null)


def _as_type_of(column, value):
    """A text literal compared with a date or time column, read as one (``day >= '2020-01-31'``,
    ``at < '2021-06-01T12:00'``); anything else as it is."""
    if pa.types.is_temporal(column.type) and pa.types.is_string(value.type):
        try:
            return value.cast(column.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            shown = value.to_pylist() if isinstance(value, pa.Array) else value.as_py()
            raise FilterError(f"{shown!r}: not all {column.type} values ({exc})") from None
    return value


def parse_filter(text: str, columns: set[str]) -> pc.Expression:
    """Parse a filter string over the given metadata columns into a pyarrow Expression."""
    return compile_filter(text, columns).expression


def compile_filter(text: str, columns: set[str]) -> Condition:
    """Parse a filter string over the given metadata columns into a :class:`Condition`."""
    if not isinstance(text, str):
        raise FilterError(f"a filter must be a string or a pyarrow Expression, got {type(text).__name__}")
    return _Parser(text, columns).parse()


def as_condition(filter: str | pc.Expression, columns: set[str]) -> Condition:
    """A filter string or Expression as a Condition, a string checked against the columns."""
    if isinstance(filter, pc.Expression):
        return Condition.of_expression(filter)
    return compile_filter(filter, columns)


def allowed_rows(table: pa.Table, condition: Condition | pc.Expression) -> "pa.BooleanArray":
    """Evaluate a filter over a table: True where the row passes (nulls fail)."""
    if isinstance(condition, pc.Expression):
        condition = Condition.of_expression(condition)
    try:
        mask = condition.evaluate(table)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, KeyError) as exc:
        raise FilterError(f"filter cannot be applied: {exc}") from None
    if not pa.types.is_boolean(mask.type):
        raise FilterError(f"a filter must be a true/false test, but this one gives {mask.type} values")
    mask = pc.fill_null(mask, arrow_literals([False])[0])
    return mask.combine_chunks() if isinstance(mask, pa.ChunkedArray) else mask
