"""Corpus files -> document dicts: BEIR JSONL, JSON, CSV/TSV, Parquet, a folder of .txt or a BEIR folder."""
from __future__ import annotations

import json
import logging
import threading
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from xtrieve.errors import InputError
from xtrieve.index.docs import PANDAS_INDEX, short_list

TEXT_COLUMNS = ("id", "_id", "text", "title")
CSV_BLOCK = 1 << 24
ENCODING = "utf-8-sig"  # UTF-8; a byte-order mark at the start is dropped
BEIR_CORPUS_FILES = ("corpus.jsonl", "corpus.jsonl.gz")

log = logging.getLogger(__name__)


def read_corpus(path: str | Path) -> "CorpusFile":
    """The documents of a corpus file or folder; InputError if unreadable or empty.

    The path and format are checked at once; emptiness when a reading ends. JSON Lines,
    Parquet, BEIR and .txt folders also give their number of documents (``len``).
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"corpus not found: {path}")
    if path.is_dir():
        reader, count = _folder(path)
    else:
        suffix = "".join(path.suffixes[-2:]).lower() if path.suffix.lower() == ".gz" else path.suffix.lower()
        readers = {".jsonl": iter_jsonl, ".jsonl.gz": iter_jsonl, ".ndjson": iter_jsonl, ".json": _json, ".csv": _csv,
                   ".tsv": _csv, ".parquet": _parquet, ".pq": _parquet}
        if suffix not in readers:
            raise InputError(f"unknown corpus format {path.name!r}: use .jsonl, .json, .csv, .tsv, .parquet, a folder of .txt or a BEIR folder")
        reader = partial(readers[suffix], path)
        count = _line_count(path) if suffix in (".jsonl", ".ndjson") else _row_count(path) if suffix in (".parquet", ".pq") else None
    return CorpusFile(path, reader, count)


class CorpusFile:
    """The documents of a corpus file or folder, read afresh by each iteration (so that an add
    can check them all before it encodes one; once a reading has finished, later ones do not
    repeat its log lines). ``len``: their number where the format gives it (a progress bar's
    total; a line or file that holds no document may make it a little high), else a TypeError."""

    def __init__(self, path: Path, reader: Callable[[], Iterator[dict[str, Any]]], count: int | None) -> None:
        self.path, self._reader, self._count, self._read_whole = path, reader, count, False

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return _unlogged(self._reading()) if self._read_whole else self._reading()

    def _reading(self) -> Iterator[dict[str, Any]]:
        yield from _nonempty(self._reader(), self.path)
        self._read_whole = True

    def first(self) -> dict[str, Any]:
        """The first document, read without logging (InputError for an empty corpus)."""
        return next(_unlogged(_nonempty(self._reader(), self.path)))

    def __len__(self) -> int:
        if self._count is None:
            raise TypeError(f"{self.path.name}: the number of documents is known only once it is read")
        return self._count


def _unlogged(docs: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """``docs`` without the log records this module makes in this thread while reading them."""
    thread = threading.get_ident()
    mute = logging.Filter()
    mute.filter = lambda record: record.thread != thread  # type: ignore[method-assign]
    while True:
        log.addFilter(mute)  # (only while reading: a reading left unfinished mutes nothing)
        try:
            doc = next(docs)
        except StopIteration:
            return
        finally:
            log.removeFilter(mute)
        yield doc


def _line_count(path: Path) -> int:
    """Non-blank lines of an uncompressed JSON Lines file (a 1 GB file in a few seconds)."""
    with open(path, "rb") as f:
        return sum(1 for line in f if not line.isspace())


def _row_count(path: Path) -> int | None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(str(path)).metadata.num_rows
    except (pa.ArrowInvalid, OSError):
        return None  # the reader names the problem


def _nonempty(reader: Iterator[dict[str, Any]], path: Path) -> Iterator[dict[str, Any]]:
    n = 0
    for doc in reader:
        n += 1
        yield doc
    if n == 0:
        raise InputError(f"corpus {path} is empty (no documents)")


def _open_text(path: Path):
    if path.suffix.lower() == ".gz":
        import gzip

        return gzip.open(path, "rt", encoding=ENCODING)
    return open(path, encoding=ENCODING)


def _row(obj: Any, where: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise InputError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    if "_id" in obj and "id" not in obj:
        obj = {"id": obj.pop("_id"), **obj}
    if "metadata" in obj and isinstance(obj["metadata"], dict) and not obj["metadata"]:
        del obj["metadata"]  # BEIR's usual empty {}
    return obj


def iter_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """JSON objects of a JSONL file (blank lines skipped; "_id" read as "id"), clear errors."""
    for n, obj in iter_jsonl_lines(path):
        if "id" not in obj:  # (the writer would name it by its position, not its line)
            raise InputError(f"{path}:{n}: missing 'id' (or '_id') field")
        yield obj


def iter_jsonl_lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each JSON object of a JSONL file, as :func:`iter_jsonl`."""
    try:
        with _open_text(path) as f:
            yield from json_lines(f, str(path))
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc.reason})") from None
    except (OSError, EOFError) as exc:  # unreadable, or a bad or truncated .gz
        raise InputError(f"{path}: cannot read ({exc})") from None


def json_lines(lines: Iterable[str], where: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each JSON object of JSON Lines text (blank lines skipped; "_id"
    read as "id"); errors name ``where`` and the line."""
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{where}:{n}: not valid JSON ({exc.msg})") from None
        yield n, _row(obj, f"{where}:{n}")


def iter_json_records(path: Path) -> Iterator[tuple[int, str, dict[str, Any]]]:
    """(number, where, object) for each record of a ``.json`` file: a JSON list of objects
    (numbered from 1), or JSON Lines under that suffix (numbered by line; told apart by the
    first character)."""
    try:
        with _open_text(path) as f:
            head = f.read(4096).lstrip()
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc.reason})") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc})") from None
    if not head.startswith("["):
        try:
            for n, obj in iter_jsonl_lines(path):
                yield n, f"{path}:{n}", obj
        except InputError:
            if head.startswith("{") and _is_one_json_value(path):
                raise InputError(f"{path}: one JSON object; expected a JSON list of objects or JSON Lines") from None
            raise
        return
    for n, obj in enumerate(_load_json(path)):
        yield n + 1, f"{path}[{n}]", _row(obj, f"{path}[{n}]")


def _load_json(path: Path) -> Any:
    """The one JSON value a file holds, or an InputError saying why not."""
    try:
        return json.loads(path.read_text(encoding=ENCODING))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc})") from None


def _is_one_json_value(path: Path) -> bool:
    try:
        _load_json(path)
        return True
    except InputError:
        return False


def _json(path: Path) -> Iterator[dict[str, Any]]:
    for _, _, obj in iter_json_records(path):
        yield obj


def _csv(path: Path) -> Iterator[dict[str, Any]]:
    import pyarrow as pa
    import pyarrow.csv as pcsv

    if path.stat().st_size == 0:
        return
    if path.suffix.lower() == ".tsv":  # one line, one record: a '"' is text, not quoting
        parse = pcsv.ParseOptions(delimiter="\t", quote_char=False, newlines_in_values=False)
    else:
        parse = pcsv.ParseOptions(delimiter=",", newlines_in_values=True)
    column_names = _headerless_columns(path, parse.delimiter)

    read = pcsv.ReadOptions(block_size=CSV_BLOCK, column_names=column_names)

    def convert(types, include):
        return pcsv.ConvertOptions(column_types=types, strings_can_be_null=False, include_columns=include)

    def open_csv(types, include=None):
        return pcsv.open_csv(str(path), read_options=read, parse_options=parse, convert_options=convert(types, include))

    try:
        text = {c: pa.string() for c in TEXT_COLUMNS}
        reader = open_csv(text)
        names = reader.schema.names
        if not {"id", "_id"} & set(names):
            example = "id<TAB>text" if parse.delimiter == "\t" else "id,text"
            raise InputError(f"{path}: its first line, read as the header, names no id column ({short_list(names)}); "
                             f"give it a header line such as '{example}' (a file without one is read as id, text"
                             "[, title] when its first cell is a whole number)")
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise InputError(f"{path}: column {repeated[0]!r} appears {names.count(repeated[0])} times in the header")
        metadata = [n for n in names if n not in TEXT_COLUMNS and n]
        types = _metadata_types(path, pcsv.read_csv(str(path), read_options=read, parse_options=parse,
                                                    convert_options=convert({}, metadata))) if metadata else {}
        whole = [name for name, t in types.items() if pa.types.is_integer(t)]
        if whole:  # "007" would read as 7: such a column stays text
            types.update(dict.fromkeys(_leading_zero_columns(open_csv(dict.fromkeys(whole, pa.string()), whole)),
                                       pa.string()))
        reader = open_csv({**text, **types, **({"": pa.string()} if "" in names else {})})
        if "" in names:
            log.warning("%s: a column has no name in the header (a pandas index written by to_csv without "
                        "index=False?): it is not stored", path)
        for batch in reader:
            for row in batch.to_pylist():
                row.pop("", None)
                # an empty cell is null in every metadata column (a number column reads it so already)
                yield _row({k: None if v == "" and k not in TEXT_COLUMNS else v for k, v in row.items()}, str(path))
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise InputError(f"{path}: cannot read as CSV ({exc})") from None
    except UnicodeDecodeError as exc:  # a header pyarrow cannot name its columns from
        raise InputError(f"{path}: not UTF-8 text ({exc.reason})") from None


def _headerless_columns(path: Path, delimiter: str) -> list[str] | None:
    """id, text (and title) for a file without a header, such as ColBERT's and MS MARCO's
    collection.tsv (pid<TAB>passage[<TAB>title]): a first line of 2 or 3 cells that names no
    id, text or title column and starts with a whole number, not all of its cells numbers. None:
    the first line is the header."""
    import csv

    try:
        with open(path, encoding=ENCODING, newline="") as f:
            first = next(csv.reader(f, delimiter=delimiter,
                                    quoting=csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL), [])
    except (UnicodeDecodeError, csv.Error):
        return None  # the reader names the problem
    if (not 2 <= len(first) <= 3 or any(c.strip().lower() in TEXT_COLUMNS for c in first)
            or not first[0].strip().isdigit() or all(c.strip().isdigit() for c in first)):
        return None  # (pandas names unnamed columns 0, 1, ...: a header)
    log.info("%s has no header: its columns are read as id, text%s", path, ", title" if len(first) == 3 else "")
    return ["id", "text", "title"][:len(first)]


def _metadata_types(path: Path, table: Any) -> dict[str, Any]:
    """The Arrow type of each column of ``table``, a CSV file's metadata columns read whole (a
    streaming reader takes the types from its first block: a column empty there would fail on a
    later value); a column with no value is text, one that is not UTF-8 an InputError."""
    import pyarrow as pa

    types = {}
    for field in table.schema:
        if pa.types.is_binary(field.type) or pa.types.is_large_binary(field.type):
            raise InputError(f"{path}: column {field.name!r} holds text that is not UTF-8")
        types[field.name] = pa.string() if pa.types.is_null(field.type) else field.type
    return types


def _leading_zero_columns(reader) -> list[str]:
    """Columns of a CSV read as text whose values include an integer written with a leading zero."""
    import pyarrow.compute as pc

    found: set[str] = set()
    for batch in reader:
        for name, column in zip(batch.schema.names, batch.columns):
            if name not in found and pc.any(pc.match_substring_regex(column, r"^\s*[+-]?0[0-9]")).as_py():
                found.add(name)
    return sorted(found)


def _parquet(path: Path) -> Iterator[dict[str, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        f = pq.ParquetFile(str(path))
        # the index pandas writes along (to_parquet of a DataFrame with a named or moved index) is not metadata
        index_columns = [c for c in f.schema_arrow.names if PANDAS_INDEX.fullmatch(c)]
        if index_columns:
            log.info("%s: not storing pandas' index column(s) %s", path, ", ".join(index_columns))
        for batch in f.iter_batches(batch_size=4096):
            for row in batch.to_pylist():
                for c in index_columns:
                    del row[c]
                yield _row(row, str(path))
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"{path}: cannot read as Parquet ({exc})") from None


def _folder(path: Path) -> tuple[Callable[[], Iterator[dict[str, Any]]], int | None]:
    """A BEIR dataset folder (its corpus.jsonl), or else a folder of .txt files (one document
    each, subfolders included: the id is the path under ``path`` without .txt): its reader, with
    the number of documents where it is known."""
    files = sorted((p for p in path.rglob("*") if p.suffix.lower() == ".txt" and p.is_file()
                    and not any(part.startswith(".") for part in p.relative_to(path).parts)),  # .git, checkpoints
                   key=lambda p: p.relative_to(path).as_posix())
    for name in BEIR_CORPUS_FILES:
        if (path / name).is_file():
            if files:
                log.warning("%s is a BEIR folder: reading %s, not its %d .txt file(s)", path, name, len(files))
            log.info("reading the BEIR corpus %s", path / name)
            return partial(iter_jsonl, path / name), None if name.endswith(".gz") else _line_count(path / name)
    if files:
        return partial(_txt_files, path, files), sum(1 for p in files if p.stat().st_size)
    raise InputError(f"corpus folder {path} has no .txt files and no {' or '.join(BEIR_CORPUS_FILES)}")


def _txt_files(root: Path, files: list[Path]) -> Iterator[dict[str, Any]]:
    empty = []
    for p in files:
        try:
            text = p.read_text(encoding=ENCODING)
        except UnicodeDecodeError as exc:
            raise InputError(f"{p}: not UTF-8 text ({exc.reason})") from None
        if not text.strip():
            empty.append(p.relative_to(root).as_posix())
            continue
        yield {"id": p.relative_to(root).with_suffix("").as_posix(), "text": text}
    if empty:
        log.warning("%s: skipped %d empty .txt file(s): %s", root, len(empty), ", ".join(empty[:10]))
