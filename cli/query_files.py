"""`xtrieve search --queries FILE`: JSONL ({"_id"|"id", "text"}), a JSON list of such objects, or
TSV (id<TAB>text) queries."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Optional

from xtrieve.errors import InputError

# a first TSV line naming an id column then a text column is a header
TSV_ID_HEADERS = ("id", "_id", "qid", "query-id", "query_id", "queryid")
TSV_TEXT_HEADERS = ("text", "query", "question", "query-text", "query_text")
Row = tuple[int, Optional[str], str]  # line (or record) number, id (None: not given), text


def read_queries(path: Path) -> list[tuple[str, str]]:
    """(id, text) pairs; errors name the file and line. A query without an id gets its line
    number, made unique against every id in the file; a repeated id is an error."""
    suffix = path.suffix.lower()
    rows = list(_json_rows(path) if suffix in (".jsonl", ".json") else _tsv_rows(path))
    if not rows:
        raise InputError(f"{path}: no queries in the file")
    return _with_ids(rows, path)


def _json_rows(path: Path) -> Iterator[Row]:
    """JSON Lines, or (a ``.json`` file) a JSON list of query objects."""
    from xtrieve.index.corpus import iter_json_records, iter_jsonl_lines

    records = iter_json_records(path) if path.suffix.lower() == ".json" else \
        ((n, f"{path}:{n}", row) for n, row in iter_jsonl_lines(path))
    for n, where, row in records:
        if "text" not in row:
            raise InputError(f"{where}: query has no 'text' field")
        yield n, _json_id(row, where), _text(row["text"], where)


def _json_id(row: dict[str, Any], where: str) -> str | None:
    if "id" not in row:  # (BEIR's "_id" reads as "id")
        return None
    qid = row["id"]
    if qid is None:
        raise InputError(f"{where}: query id is null")
    if isinstance(qid, bool) or not isinstance(qid, (str, int)):
        raise InputError(f"{where}: query id must be a string or an integer, got {type(qid).__name__}")
    return str(qid)


def _tsv_rows(path: Path) -> Iterator[Row]:
    from xtrieve.index.corpus import ENCODING

    try:
        with open(path, encoding=ENCODING, newline="\n") as f:  # a line is a record: no quoting
            for n, line in enumerate(f, 1):
                cells = line.rstrip("\r\n").split("\t")
                if not line.strip() or (n == 1 and _is_header(cells)):
                    continue
                if len(cells) != 2:
                    raise InputError(f"{path}:{n}: expected 'id<TAB>text', got {len(cells)} column(s)"
                                     + (" (a qrels or run file?)" if len(cells) > 2 else ""))
                yield n, cells[0], _text(cells[1], f"{path}:{n}")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc.reason})") from None


def _is_header(cells: list[str]) -> bool:
    names = [c.strip().lower() for c in cells[:2]]
    return len(names) == 2 and names[0] in TSV_ID_HEADERS and names[1] in TSV_TEXT_HEADERS


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise InputError(f"{where}: query text must be a string, got {'null' if value is None else type(value).__name__}")
    if not value.strip():
        raise InputError(f"{where}: empty query text")
    return value


def _with_ids(rows: list[Row], path: Path) -> list[tuple[str, str]]:
    taken: dict[str, int] = {}
    for n, qid, _ in rows:
        if qid is not None:
            if qid in taken:
                raise InputError(f"{path}:{n}: duplicate query id {qid!r} (also on line {taken[qid]})")
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
