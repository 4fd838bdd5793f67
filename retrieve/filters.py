"""Metadata filters: a small safe grammar parsed into a pyarrow compute expression.

Grammar (case-insensitive keywords)::

    expr    := term ("or" term)*
    term    := factor ("and" factor)*
    factor  := "not" factor | "(" expr ")" | compare
    compare := NAME OP literal | NAME ["not"] "in" "(" [literal ("," literal)* [","]] ")"
             | NAME ["not"] "contains" literal | NAME "is" ["not"] "null"
             | NAME                                (a boolean column: NAME == true)
    NAME    := letters (any script), digits, "_" and "." | `any name` in backticks
    OP      := == | = | != | < | <= | > | >=
    literal := number | 'text' | "text" | true | false   (text against a date/time column: a date/time,
               see _as_type_of; a text without an offset against a zoned timestamp is in that zone)

In a quoted text (or a backticked name) a backslash escapes the quote and a backslash; any
other backslash is kept as written (``path == 'C:\\data'``). ``in [...]`` reads as ``in (...)``, and
a bare column name as ``== true`` (``archived and not draft``). ``in ()`` matches no value (a null
still gives null, so ``not in ()`` keeps every non-null value). ``contains`` tests a list
column's elements (``tags contains 'x'``: any element equal) or a text column's substrings
(case-sensitive); a list column takes no other test but ``is [not] null``. ``contains`` is a
keyword only right after a column name, so a column may still be called so.

No ``eval``: the string is tokenised and parsed by hand, into a :class:`Condition`: the
pyarrow Expression (:func:`parse_filter`) and the same test as direct ``pyarrow.compute``
calls, which is how a search evaluates it (only these read a text literal against a date or
time column as a date/time: the Expression is built before the column's type is known; a
literal of the wrong type is a FilterError naming the column). Evaluating an Expression
needs ``pyarrow.dataset``, and literals made with ``pa.scalar`` import pandas: together ~0.25 s of the first filtered
search. Literals here are built from buffers (``arrow_literals``); an Expression passed in by
the caller still goes through ``pyarrow.dataset``.
"""
from __future__ import annotations

import dataclasses
import datetime
import re
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from xtrieve.errors import FilterError, InputError, check_unicode
from xtrieve.index.arrow_numpy import arrow_literals

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<num>-?[0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?)
      | (?P<str>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
      | (?P<op>==|!=|<=|>=|=|<|>)
      | (?P<punct>[(),\[\]])
      | (?P<name>[^\W\d][\w.]*)
      | (?P<quoted>`(?:[^`\\]|\\.)*`)
    )""",
    re.VERBOSE,
)
_KEYWORDS = {"and", "or", "not", "in", "is", "null", "true", "false"}
QUOTE_HINT = "(a column name with spaces, '-' or a keyword goes in backticks: `pub-year`)"
# parentheses nest at most this deep (deeper ones are a FilterError, not a RecursionError)
MAX_DEPTH = 64


class _Digits(int):
    """An integer literal that keeps its text (``02134``), which a text column compares with."""

    def __new__(cls, text: str) -> "_Digits":
        out = super().__new__(cls, int(text))
        out.text = text
        return out


def _as_text(value: Any) -> Any:
    """An integer literal as it was written; any other literal as it is."""
    return value.text if isinstance(value, _Digits) else value


def _shown(text: str, limit: int = 300) -> str:
    """A filter's text for an error message (a long one cut)."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


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
            raise FilterError(f"filter {_shown(text)}: cannot parse near {text[pos:pos + 15]!r}{hint}")
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

    expression: pc.Expression | None  # None: a test with no Expression form (``contains``)
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
        # a balanced tree: pyarrow frees and prints an Expression recursively, and a chain as deep
        # as a long "or" list crashed the process
        level = [part.expression for part in parts]
        whole = all(e is not None for e in level)  # ('in' would compare Expressions with ==)
        while whole and len(level) > 1:
            paired = [join(a, b) for a, b in zip(level[::2], level[1::2])]
            level = paired + level[len(paired) * 2:]
        expression = level[0] if whole else None

        def evaluate(table: pa.Table):
            out = parts[0].evaluate(table)
            for part in parts[1:]:
                out = join(out, part.evaluate(table))
            return out

        return Condition(expression, evaluate)

    def __invert__(self) -> "Condition":
        return Condition(None if self.expression is None else ~self.expression, lambda t: pc.invert(self.evaluate(t)))

    @staticmethod
    def of_expression(expr: pc.Expression) -> "Condition":
        """A caller's own Expression, evaluated through ``pyarrow.dataset``. Nested metadata is
        stored flattened (column ``meta.author``); a nested path, ``pc.field("meta", "author")``,
        finds it through a struct view of those columns."""
        def evaluate(table: pa.Table):
            import pyarrow.dataset as ds

            try:
                return ds.dataset(_with_struct_views(table)).to_table(columns={"keep": expr}).column("keep")
            except pa.ArrowInvalid as exc:
                missing = re.match(r"No match for (.*?) in ", str(exc))
                if not missing:
                    raise
                known = ", ".join(sorted(table.column_names)) or "none"
                nested = ("; nested metadata is stored flattened: pc.field('meta.author') or "
                          "pc.field('meta', 'author') name column meta.author") if "Nested" in missing.group(1) else ""
                raise FilterError(f"filter {str(expr)!r}: no column {missing.group(1)} "
                                  f"(metadata columns: {known}){nested}") from None

        return Condition(expr, evaluate)


def _with_struct_views(table: pa.Table) -> pa.Table:
    """The table plus, for flattened columns ``a.b`` (nested metadata), a struct column ``a``
    holding them as field ``b``; a top-level name that is already a column is left alone, and
    of ``a.b`` and ``a.b.c`` (a value that was nested in some documents only) ``a.b`` wins."""
    tree: dict[str, Any] = {}
    for name in sorted(table.column_names):
        parts = name.split(".")
        if len(parts) < 2 or "" in parts or parts[0] in table.column_names:
            continue
        node = tree
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                break
        else:
            node.setdefault(parts[-1], name)
    if not tree:
        return table

    def build(node: dict[str, Any]) -> pa.StructArray:
        children = [table.column(v).combine_chunks() if isinstance(v, str) else build(v) for v in node.values()]
        return pa.StructArray.from_arrays(children, names=list(node))

    try:
        for top, node in tree.items():
            table = table.append_column(top, build(node))
    except RecursionError:
        raise FilterError("metadata nested too deep (a column name of thousands of dotted parts) to view as "
                          "structs for a pyarrow Expression: use a filter string") from None
    return table


_COMPARE = {"==": pc.equal, "!=": pc.not_equal, "<": pc.less, "<=": pc.less_equal,
            ">": pc.greater, ">=": pc.greater_equal}


class _Parser:
    def __init__(self, text: str, columns: set[str]) -> None:
        self.text, self.columns = text, columns
        self.toks = _tokens(text)
        self.i = 0
        self.used: set[str] = set()

    def fail(self, what: str) -> FilterError:
        return FilterError(f"filter {_shown(self.text)}: {what}")

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
            try:
                return float(value) if any(c in value for c in ".eE") else _Digits(value)
            except ValueError:  # (Python reads at most 4,300 digits)
                raise self.fail(f"the number {value[:20]}... is too long") from None
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
        tok = self.peek()
        if tok and tok[0] == "name" and tok[1].lower() == "contains":
            self.i += 1
            literal = self.literal()
            out = Condition(None, _column_test(self.text, name, "contains", literal, arrow_literals([literal]), _contains))
            return ~out if negate else out
        if self.accept("kw", "in"):
            # null where the value is null, as ==, != and SQL's IN: "x not in (...)" keeps no null x
            null = pa.nulls(1, pa.bool_())[0]
            close = "]"
            if not self.accept("punct", "["):
                self.take("punct", "(")
                close = ")"
            values = []
            while not self.accept("punct", close):  # a trailing comma is allowed: ('en',)
                values.append(self.literal())
                if not self.accept("punct", ","):
                    self.take("punct", close)
                    break
            if not values:
                false = arrow_literals([False])[0]
                out = Condition(pc.if_else(field.is_valid(), false, null),
                                _column_test(self.text, name, "in", None, None,
                                             lambda column, _: pc.if_else(pc.is_valid(column), false, null)))
                return ~out if negate else out
            if {type(v) for v in values} == {str, _Digits}:  # doc_id in ('d1', 2): ints read as written
                values = [_as_text(v) for v in values]
            try:
                value_set = arrow_literals(values)
            except TypeError as exc:
                raise self.fail(f"the values of 'in' must share one type ({exc})") from None
            out = Condition(pc.if_else(field.is_valid(), field.isin(value_set), null),
                            _column_test(self.text, name, "in", tuple(values), value_set,
                                         lambda column, typed: _in_set(column, typed, null)))
            return ~out if negate else out
        if negate:
            raise self.fail("'not' after a column name must be followed by 'in' or 'contains'")
        if self.peek() in (None, ("kw", "and"), ("kw", "or"), ("punct", ")")):
            return self._bare_column(name)
        _, op = self.take("op")
        op = "==" if op == "=" else op
        literal = self.literal()
        try:
            value = arrow_literals([literal])
        except TypeError as exc:
            raise self.fail(str(exc)) from None
        compare = _COMPARE[op]
        return Condition(compare(field, value[0]),
                         _column_test(self.text, name, op, literal, value,
                                      lambda column, typed: compare(column, typed[0])))

    def _bare_column(self, name: str) -> Condition:
        """A column named alone: ``name == true``, for a boolean column only (an integer column
        would otherwise read true as 1)."""
        value = arrow_literals([True])
        test = _column_test(self.text, name, "==", True, value, lambda column, typed: pc.equal(column, typed[0]))
        text = self.text

        def evaluate(table: pa.Table):
            column_type = table.column(name).type
            if not pa.types.is_boolean(column_type):
                raise FilterError(f"filter {_shown(text)}: column {name!r} holds {column_type} values; a column named "
                                  "alone must hold booleans (compare it with a value instead)")
            return test(table)

        return Condition(pc.equal(pc.field(name), value[0]), evaluate)


class _Unreadable(Exception):
    """A text literal that does not read as the column's date/time type: (text, reason)."""


def _column_test(text: str, name: str, op: str, shown: Any, values: "pa.Array | None",
                 test: Callable[[Any, Any], Any]) -> Callable[[pa.Table], Any]:
    """``evaluate(table)`` running ``test(column, values read as the column's type)``; a list
    column, an unreadable date/time or a type clash is a FilterError naming the filter, the
    column, its type and the literal."""
    def evaluate(table: pa.Table):
        column = table.column(name)

        def holds() -> str:  # (built only for an error: a long filter has many tests)
            return f"filter {_shown(text)}: column {name!r} holds {column.type} values"

        tested_type = column.type
        if op == "contains" and _is_list(column.type) and not pa.types.is_nested(column.type.value_type):
            tested_type = column.type.value_type  # the elements
        elif op == "contains" and not pa.types.is_string(column.type) and not pa.types.is_large_string(column.type):
            raise FilterError(f"{holds()}: 'contains' tests a list column's elements or a text column's substrings")
        elif op == "contains" and not (pa.types.is_string(values.type) or pa.types.is_integer(values.type)):
            raise FilterError(f"{holds()}: 'contains' looks for a text in it, not {shown!r}")
        elif pa.types.is_nested(column.type):
            raise FilterError(f"{holds()}: a list (or other nested) column cannot be tested with {op!r}, "
                              "only with 'contains' (a list's elements), 'is null' or 'is not null'")
        typed = values
        if (values is not None and op in ("==", "!=", "in", "contains") and pa.types.is_integer(values.type)
                and (pa.types.is_string(tested_type) or pa.types.is_large_string(tested_type))):
            # doc_id == 31715818, zip == 02134: ids (and other text) as written
            typed = arrow_literals([str(_as_text(v)) for v in (shown if isinstance(shown, tuple) else (shown,))])
        elif values is not None:
            try:
                typed = _as_type_of(tested_type, values)
            except _Unreadable as exc:
                bad, reason = exc.args
                raise FilterError(f"{holds()}; {bad!r} is not one ({reason})") from None
        try:
            return test(column, typed)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
            reason = f" ({exc})" if isinstance(exc, pa.ArrowInvalid) else ""
            raise FilterError(f"filter {_shown(text)}: cannot be applied: column {name!r} holds {column.type} values, "
                              f"which {op!r} cannot compare with {shown!r}{reason}") from None

    return evaluate


def _in_set(column, value_set, null):
    """Whether each value is in ``value_set``: null for a null value (all null for a column of
    nulls only, which pyarrow cannot look up in a typed set)."""
    if pa.types.is_null(column.type):
        return pa.nulls(len(column), pa.bool_())
    pc.equal(column.slice(0, 0), value_set[0])  # a type '==' cannot compare fails here too (is_in would cast it)
    if pa.types.is_floating(column.type):  # is_in hashes -0.0 apart from 0.0, which '==' finds equal
        column, value_set = _positive_zeros(column), _positive_zeros(value_set)
    return pc.if_else(pc.is_valid(column), pc.is_in(column, value_set=value_set), null)


def _is_list(column_type: pa.DataType) -> bool:
    return (pa.types.is_list(column_type) or pa.types.is_large_list(column_type)
            or pa.types.is_fixed_size_list(column_type))


def _contains(column, typed):
    """A text column: whether each value holds the text; a list column: whether any element
    equals the value. Null for a null value (a null element equals nothing)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if not _is_list(column.type):
        return pc.match_substring(column, typed[0].as_py())
    # every value the lists span, with its row (a null list may span values too: its row is null)
    if pa.types.is_fixed_size_list(column.type):
        offsets = (np.arange(len(column) + 1) + column.offset) * column.type.list_size
    else:
        offsets = column.offsets.to_numpy()
    values = column.values.slice(int(offsets[0]), int(offsets[-1] - offsets[0]))
    rows = np.repeat(np.arange(len(column)), np.diff(offsets))
    hit = pc.fill_null(pc.equal(values, typed[0]), False).to_numpy(zero_copy_only=False)
    found = np.zeros(len(column), dtype=bool)
    found[rows[hit]] = True
    return pc.if_else(pc.is_valid(column), pa.array(found), pa.nulls(1, pa.bool_())[0])


def _positive_zeros(values):
    """Numbers with -0.0 read as 0.0."""
    if not pa.types.is_floating(values.type):
        return values
    return pc.if_else(pc.equal(values, arrow_literals([0.0])[0]), pc.abs(values), values)


def _as_type_of(column_type: pa.DataType, values: pa.Array) -> pa.Array:
    """Text literals compared with a date or time column, read as that type (``day >= '2020-01-31'``,
    ``at < '2021-06-01T12:00'``, ``t >= '09:30'``); anything else as it is.

    A time of day is read by ``datetime.time.fromisoformat``; a timestamp with a zone by
    ``datetime.datetime.fromisoformat``, where a text without an offset is a wall time in the
    column's zone (pyarrow's ``assume_timezone``; one that zone skips or repeats is refused:
    give an offset). Dates, timestamps without a zone and durations use pyarrow's cast.
    Raises :class:`_Unreadable` naming the first text that does not read."""
    if not (pa.types.is_temporal(column_type) and pa.types.is_string(values.type)):
        return values
    texts = values.to_pylist()
    if pa.types.is_time(column_type):
        return _times(texts, column_type)
    if pa.types.is_timestamp(column_type) and column_type.tz is not None:
        return _zoned_timestamps(texts, column_type)
    try:
        return values.cast(column_type)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        for text in texts:  # name the text that does not read
            try:
                arrow_literals([text]).cast(column_type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as one:
                raise _Unreadable(text, str(one)) from None
        raise _Unreadable(texts[0], str(exc)) from None


def _read_each(texts: list[str], parse: Callable[[str], Any]) -> list[tuple[str, Any]]:
    """(text, parse(text)) for each text; :class:`_Unreadable` names the first that does not parse."""
    out = []
    for text in texts:
        try:
            out.append((text, parse(_iso_for_python(text))))
        except ValueError as exc:
            raise _Unreadable(text, str(exc)) from None
    return out


_FRACTION = re.compile(r"(\d{2}:\d{2}:\d{2})\.(\d+)")
_FIXED_OFFSET = re.compile(r"([+-])(\d{2}):(\d{2})")


def _iso_for_python(text: str) -> str:
    """An ISO 8601 text in the forms Python 3.10's ``fromisoformat`` reads too: a ``Z`` zone as
    ``+00:00`` and fractional seconds as exactly six digits (3.11 reads either way)."""
    text = text.strip()
    if text[-1:] in ("Z", "z"):
        text = text[:-1] + "+00:00"
    return _FRACTION.sub(lambda m: f"{m.group(1)}.{(m.group(2) + '000000')[:6]}", text)


def _times(texts: list[str], column_type: pa.DataType) -> pa.Array:
    """Times of day as ``time64`` (microseconds, or nanoseconds for such a column)."""
    scale = 1000 if column_type.unit == "ns" else 1
    ticks = []
    for text, when in _read_each(texts, datetime.time.fromisoformat):
        if when.tzinfo is not None:
            raise _Unreadable(text, "a time of day has no zone offset here")
        ticks.append((((when.hour * 60 + when.minute) * 60 + when.second) * 10**6 + when.microsecond) * scale)
    return arrow_literals(ticks).cast(pa.time64("ns" if scale > 1 else "us"))


def _zoned_timestamps(texts: list[str], column_type: pa.DataType) -> pa.Array:
    """Instants as timestamps in the column's zone; a text without an offset is read in that zone."""
    unit = "ns" if column_type.unit == "ns" else "us"
    scale = 1000 if unit == "ns" else 1
    ticks = []
    for text, when in _read_each(texts, datetime.datetime.fromisoformat):
        epoch = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc if when.tzinfo else None)
        tick = (when - epoch) // datetime.timedelta(microseconds=1) * scale
        if not -2**63 <= tick < 2**63:
            raise _Unreadable(text, f"beyond the range of {column_type}")
        fixed = _FIXED_OFFSET.fullmatch(column_type.tz)
        if when.tzinfo is None and fixed:  # a zone such as +05:00 (which pyarrow < 19 cannot look up)
            minutes = int(fixed.group(2)) * 60 + int(fixed.group(3))
            tick -= (-minutes if fixed.group(1) == "-" else minutes) * 60 * 10**6 * scale
        elif when.tzinfo is None:
            try:
                wall = arrow_literals([tick]).cast(pa.timestamp(unit))
                tick = pc.assume_timezone(wall, timezone=column_type.tz).cast(pa.int64())[0].as_py()
            except pa.ArrowInvalid as exc:
                reason = " ".join(str(exc).split())
                raise _Unreadable(text, f"read in the column's zone {column_type.tz}: {reason}; "
                                        "give the time an offset, such as +01:00") from None
        ticks.append(tick)
    return arrow_literals(ticks).cast(pa.timestamp(unit, tz=column_type.tz))


def parse_filter(text: str, columns: set[str]) -> pc.Expression:
    """Parse a filter string over the given metadata columns into a pyarrow Expression."""
    expression = compile_filter(text, columns).expression
    if expression is None:
        raise FilterError(f"filter {_shown(text)}: 'contains' has no pyarrow Expression form "
                          "(it needs the column's type); search with the filter string")
    return expression


def compile_filter(text: str, columns: set[str]) -> Condition:
    """Parse a filter string over the given metadata columns into a :class:`Condition`."""
    if not isinstance(text, str):
        raise FilterError(f"a filter must be a string or a pyarrow Expression, got {type(text).__name__}")
    try:
        check_unicode(text, "filter")
    except InputError as exc:
        raise FilterError(str(exc)) from None
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
        shown = "" if condition.expression is None else f" {str(condition.expression)[:200]}"
        raise FilterError(f"filter{shown} cannot be applied: {exc}") from None
    if not pa.types.is_boolean(mask.type):
        raise FilterError(f"a filter must be a true/false test, but this one gives {mask.type} values")
    mask = pc.fill_null(mask, arrow_literals([False])[0])
    return mask.combine_chunks() if isinstance(mask, pa.ChunkedArray) else mask
