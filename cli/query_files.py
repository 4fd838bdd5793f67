"""`xtrieve search --queries FILE`: JSONL ({"_id"|"id", "text"}, or other names of ID_NAMES /
TEXT_NAMES such as "query_id", "query"), a JSON list of such objects or
a JSON object {id: text}, TSV (id<TAB>text), CSV (id,text), or plain text (.txt: one query per
line); ``-`` reads standard input (JSON Lines when it starts as a JSON object does, ``{"``, a
JSON list when it starts as one does, ``[{``, ``["`` or a lone ``[``; else TSV lines, a line
without a tab being a query without an id, so "[citation needed] ..." is a question)."""
from __future__ import annotations

import csv
import io
import json
import re
import sys
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

from xtrieve.errors import InputError, check_unicode

# names of a query's id and text: JSON keys, and a first TSV/CSV line naming them is a header
ID_NAMES = ("id", "_id", "qid", "query-id", "query_id", "queryid")
TEXT_NAMES = ("text", "query", "question", "query-text", "query_text")
STDIN = "-"
JSON_START = re.compile(r'([{[])\s*(["{}\]]|$)')  # how a JSON object or list of queries begins
Row = tuple[int, Optional[str], str]  # line (or record) number, id (None: not given), text


def read_queries(path: Path) -> list[tuple[str, str]]:
    """(id, text) pairs; errors name the file and line. A query without an id gets its line
    number, made unique against every id in the file; a repeated id is an error."""
    if str(path) == STDIN:
        rows = list(_stdin_rows(_stdin_lines()))
        where = "<stdin>"
    else:
        suffix, where = path.suffix.lower(), str(path)
        if suffix in (".jsonl", ".json"):
            rows = list(_json_rows(path))
        else:
            lines = _lines(path)
            rows = list(_csv_rows(lines, where) if suffix == ".csv" else _text_rows(lines, where) if suffix == ".txt"
                        else _tsv_rows(lines, where))
    if not rows:
        raise InputError(f"{where}: no queries in the file")
    return _with_ids(rows, where)


def _lines(path: Path) -> list[str]:
    from xtrieve.index.corpus import ENCODING

    try:
        with open(path, encoding=ENCODING, newline="\n") as f:  # a line is a record: no quoting
            return [line.rstrip("\r\n") for line in f]
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc.reason})") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc})") from None


def _stdin_lines() -> list[str]:
    """Standard input's lines, read as UTF-8 whatever the locale's encoding (Windows: cp1252)."""
    try:
        if hasattr(sys.stdin, "buffer"):
            lines = sys.stdin.buffer.read().decode("utf-8-sig").split("\n")  # (splitlines would cut at U+2028 too)
            return [line.rstrip("\r") for line in (lines[:-1] if lines[-1] == "" else lines)]
        lines = [line.rstrip("\r\n") for line in sys.stdin]
    except UnicodeDecodeError as exc:
        raise InputError(f"<stdin>: not UTF-8 text ({exc.reason})") from None
    if lines and lines[0].startswith("\ufeff"):  # a byte-order mark
        lines[0] = lines[0][1:]
    return lines


def _stdin_rows(lines: list[str]) -> Iterator[Row]:
    first = next((line.strip() for line in lines if line.strip()), "")
    start = JSON_START.match(first)
    if start is None:
        yield from _tsv_rows(lines, "<stdin>", loose=True)
    elif start.group(1) == "{":
        from xtrieve.index.corpus import json_lines

        for n, row in json_lines(lines, "<stdin>"):
            yield _json_row(n, row, f"<stdin>:{n}")
    else:
        try:
            records = json.loads("\n".join(lines))
        except json.JSONDecodeError as exc:
            raise InputError(f"<stdin>: not valid JSON ({exc.msg})") from None
        if not isinstance(records, list):
            raise InputError("<stdin>: expected a JSON list of query objects")
        for n, row in enumerate(records, 1):
            yield _json_row(n, row, f"<stdin>[{n - 1}]")


def _json_rows(path: Path) -> Iterator[Row]:
    """JSON Lines, or (a ``.json`` file) a JSON list of query objects or one object {id: text}."""
    from xtrieve.index.corpus import ENCODING, iter_json_records, iter_jsonl_lines

    if path.suffix.lower() == ".json":
        mapping = _one_object(path, ENCODING)
        if mapping is not None:
            for n, (qid, value) in enumerate(mapping.items(), 1):
                text = value.get("text") if isinstance(value, dict) else value
                yield n, str(qid), _text(text, f"{path}[{qid!r}]")
            return
    records = iter_json_records(path) if path.suffix.lower() == ".json" else \
        ((n, f"{path}:{n}", row) for n, row in iter_jsonl_lines(path))
    for n, where, row in records:
        yield _json_row(n, row, where)


def _one_object(path: Path, encoding: str) -> dict | None:
    """The JSON object a ``.json`` file holds whole, when it holds one (None otherwise)."""
    try:
        text = path.read_text(encoding=encoding)
        if not text.lstrip().startswith("{"):
            return None
        value = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
        return None  # JSON Lines, or an error the record reader names
    if not isinstance(value, dict) or any(key in value for key in ID_NAMES + TEXT_NAMES):
        return None  # one query object, not a mapping of them: the record reader says what is wrong
    return value


def _json_row(n: int, row: Any, where: str) -> Row:
    if not isinstance(row, dict):
        raise InputError(f"{where}: expected a JSON object, got {type(row).__name__}")
    text_key = next((key for key in TEXT_NAMES if key in row), None)
    if text_key is None:
        raise InputError(f"{where}: query has no text (a key named {', '.join(TEXT_NAMES)}); it has "
                         f"{', '.join(map(repr, row)) or 'no keys'}")
    return n, _json_id(row, where), _text(row[text_key], where)


def _json_id(row: dict[str, Any], where: str) -> str | None:
    key = next((key for key in ID_NAMES if key in row), None)
    if key is None:
        return None
    qid = row[key]
    if qid is None:
        raise InputError(f"{where}: query id is null")
    if isinstance(qid, bool) or not isinstance(qid, (str, int)):
        raise InputError(f"{where}: query id must be a string or an integer, got {type(qid).__name__}")
    return str(qid)


def _tsv_rows(lines: Iterable[str], where: str, loose: bool = False) -> Iterator[Row]:
    """id<TAB>text lines (``loose``: a line without a tab is a text without an id)."""
    for n, line in enumerate(lines, 1):
        cells = line.split("\t")
        if not line.strip() or (n == 1 and _is_header(cells)):
            continue
        if loose and len(cells) == 1:
            yield n, None, _text(line, f"{where}:{n}")
            continue
        if len(cells) != 2:
            raise InputError(f"{where}:{n}: expected 'id<TAB>text', got {len(cells)} column(s)"
                             + (" (a qrels or run file?)" if len(cells) > 2 else
                                " (a file of one query per line: name it .txt)"))
        yield n, cells[0], _text(cells[1], f"{where}:{n}")


def _text_rows(lines: Iterable[str], where: str) -> Iterator[Row]:
    """One query per line, ids their line numbers."""
    for n, line in enumerate(lines, 1):
        if line.strip():
            yield n, None, _text(line, f"{where}:{n}")


def _csv_rows(lines: list[str], where: str) -> Iterator[Row]:
    """id,text rows (quoting as in CSV; a header as TSV's), or one column of texts; a header
    whose first name is empty (pandas' to_csv writes its index so) drops that column."""
    try:
        records = list(csv.reader(io.StringIO("\n".join(lines))))
    except csv.Error as exc:
        raise InputError(f"{where}: cannot read as CSV ({exc})") from None
    if records and len(records[0]) > 1 and not records[0][0].strip() and _is_header(records[0][1:]):
        records = [cells[1:] for cells in records]
    for n, cells in enumerate(records, 1):
        if not any(c.strip() for c in cells) or (n == 1 and _is_header(cells)):
            continue
        if len(cells) == 1:
            yield n, None, _text(cells[0], f"{where}:{n}")
        elif len(cells) == 2:
            yield n, cells[0], _text(cells[1], f"{where}:{n}")
        else:
            raise InputError(f"{where}:{n}: expected 'id,text', got {len(cells)} columns")


def _is_header(cells: list[str]) -> bool:
    """Whether a first row names the columns: an id column then a text one, or a text one alone."""
    names = [c.strip().lower() for c in cells]
    if len(names) == 1:
        return names[0] in TEXT_NAMES
    return len(names) == 2 and names[0] in ID_NAMES and names[1] in TEXT_NAMES


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise InputError(f"{where}: query text must be a string, got {'null' if value is None else type(value).__name__}")
    if not value.strip():
        raise InputError(f"{where}: empty query text")
    return value


def _with_ids(rows: list[Row], where: str) -> list[tuple[str, str]]:
    taken: dict[str, int] = {}
    for n, qid, _ in rows:
        if qid is not None:
            if not qid.strip():
                raise InputError(f"{where}:{n}: empty query id (leave the id out and the line number is used)")
            check_unicode(qid, f"{where}:{n}: query id")
            if qid in taken:
                raise InputError(f"{where}:{n}: duplicate query id {qid!r} (also on line {taken[qid]})")
            taken[qid] = n
    out = []
    for n, qid, text in rows:
        if qid is None:
            qid = _free_id(str(n), taken)
            taken[qid] = n
        out.append((qid, text))
    return out


def _free_id(base: str, taken: dict[str, int]) -> str:
    qid, i = base, 0
    while qid in taken:
        i += 1
        qid = f"{base}-{i}"
    return qid
