"""Documents as users give them (str or dict) -> (id, text to encode, stored columns)."""
from __future__ import annotations

import base64
import re
import sys
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from xtrieve.errors import InputError, check_unicode

ID_KEYS = ("id", "_id")
PANDAS_INDEX = re.compile(r"__index_level_\d+__")  # the columns pandas writes its index to
ARROW_TYPE = "arrow:"  # a manifest's type name for a type pyarrow cannot name (see type_name)
MAX_LISTED = 10
MAX_VALUE = 65000  # |x| of a stored or query vector value: float16 holds it


def short_list(items: list[str]) -> str:
    """'a, b, c' truncated to MAX_LISTED items with a count of the rest."""
    shown = ", ".join(repr(x) for x in items[:MAX_LISTED])
    return shown + (f" (and {len(items) - MAX_LISTED} more)" if len(items) > MAX_LISTED else "")


def check_id(value: Any, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, np.integer)):
        raise InputError(f"{where}: id must be a string or an int, got {type(value).__name__}")
    doc_id = str(value)
    if not doc_id.strip():
        raise InputError(f"{where}: empty id")
    return check_unicode(doc_id, f"{where}: id {doc_id!r}")


def explicit_ids(docs: Sequence[Any]) -> set[str]:
    """The ids that the dict documents of ``docs`` give (unusable ones are left to :func:`normalize`)."""
    ids = set()
    for doc in docs:
        key = next((k for k in ID_KEYS if k in doc), None) if isinstance(doc, dict) else None
        value = doc[key] if key is not None else None
        if isinstance(value, (str, int, np.integer)) and not isinstance(value, bool):
            ids.add(str(value))
    return ids


class AutoIds:
    """Ids "0", "1", ... from ``start`` for documents given as plain strings, skipping every id
    ``taken`` says is in use; ``next`` is where the counter stands, ``given`` what it handed out."""

    def __init__(self, taken: Callable[[str], bool], start: int = 0) -> None:
        self.taken, self.next, self.given = taken, start, set()

    def __call__(self) -> str:
        while self.taken(str(self.next)):
            self.next += 1
        doc_id = str(self.next)
        self.next += 1
        self.given.add(doc_id)
        return doc_id


def is_missing(value: Any) -> bool:
    """Whether ``value`` is numpy's or pandas' mark of a missing value (NaN, NaT, pd.NA): stored as null."""
    if isinstance(value, (float, np.floating)):
        return bool(np.isnan(value))
    if isinstance(value, (np.datetime64, np.timedelta64)):
        return bool(np.isnat(value))
    return type(value).__name__ in ("NAType", "NaTType")


def as_records(rows: Any) -> Any:
    """A pandas DataFrame or a pyarrow Table / RecordBatch as a list of row dicts (one per
    document; an index named id or _id becomes that column, pandas' own index columns are
    dropped); anything else as it is."""
    if isinstance(rows, (pa.Table, pa.RecordBatch)):
        names = [n for n in rows.schema.names if PANDAS_INDEX.fullmatch(n)]
        return (rows.drop_columns(names) if names else rows).to_pylist()
    pandas = sys.modules.get("pandas")  # (not imported here: a DataFrame means it is loaded)
    if pandas is not None and isinstance(rows, pandas.DataFrame):
        if rows.index.name in ID_KEYS and rows.index.name not in rows.columns:
            rows = rows.reset_index()  # df.set_index("id")
        return rows.to_dict("records")
    return rows


def _flatten(prefix: str, value: Any, out: dict[str, Any], where: str) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}", v, out, where)
    elif prefix in out:
        raise InputError(f"{where}: metadata field {prefix!r} is given twice (nested metadata is "
                         "stored flattened, so {'a': {'b': ...}} and 'a.b' name the same column)")
    else:
        out[prefix] = None if is_missing(value) else value


def normalize(doc: Any, position: int, auto_id: Callable[[], str],
              title_separator: str = " ") -> tuple[str, str, dict[str, Any]]:
    """(doc_id, text for the encoder: title, ``title_separator``, text; stored columns:
    title/text/metadata) of one document."""
    if isinstance(doc, str):
        if not doc.strip():
            raise InputError(f"document {position}: empty text")
        return auto_id(), doc, {"text": doc}
    if not isinstance(doc, dict):
        raise InputError(f"document {position}: expected a string or a dict, got {type(doc).__name__}")
    id_key = next((k for k in ID_KEYS if k in doc), None)
    if id_key is None:
        raise InputError(f"document {position}: missing 'id' (or '_id') field")
    doc_id = check_id(doc[id_key], f"document {position}")
    if all(k in doc for k in ID_KEYS) and check_id(doc["_id"], f"document {position}") != doc_id:
        raise InputError(f"document {position}: both 'id' ({doc_id!r}) and '_id' ({str(doc['_id'])!r}) are given")
    if "text" not in doc:
        raise InputError(f"document {doc_id!r}: missing 'text' field")
    text, title = doc["text"], doc.get("title")
    title = None if is_missing(title) else title
    if text is None or is_missing(text):
        text = ""
    if not isinstance(text, str) or not (title is None or isinstance(title, str)):
        raise InputError(f"document {doc_id!r}: 'text' and 'title' must be strings")
    full = f"{title}{title_separator}{text}" if title and title.strip() else text
    if not full.strip():
        raise InputError(f"document {doc_id!r}: empty text")
    check_unicode(full, f"document {doc_id!r}: its title or text")
    stored: dict[str, Any] = {"text": text}
    if title is not None:
        stored["title"] = title
    for key, value in doc.items():
        if key not in ID_KEYS and key not in ("text", "title"):
            add_metadata(stored, key, value, f"document {doc_id!r}")
    return doc_id, full, stored


def add_metadata(row: dict[str, Any], key: Any, value: Any, where: str) -> None:
    """Store one metadata field in ``row``; a dict value becomes columns ``key.sub`` (flattened).
    ``where`` starts an error's message ("document 'd1'")."""
    if not isinstance(key, str) or not key or key == "doc_id" or key.startswith("__"):
        raise InputError(f"{where}: metadata key {key!r} is reserved or invalid")
    _flatten(key, value, row, where)


# stored columns that hold the encoded text: an update cannot change them
ENCODED_KEYS = frozenset({"text", "title"})


def check_metadata_updates(updates: Any) -> dict[str, dict[str, Any]]:
    """``updates`` ({id: {column: value}}) with checked ids, or an InputError naming the problem:
    not a dict, an id given twice, or new values :func:`check_new_metadata` refuses."""
    if not isinstance(updates, Mapping):
        raise InputError(f"updates must be a dict of id -> {{column: value}}, got {type(updates).__name__}")
    out: dict[str, dict[str, Any]] = {}
    for n, (raw_id, values) in enumerate(updates.items()):
        doc_id = check_id(raw_id, f"update {n}")
        if doc_id in out:
            raise InputError(f"update {n}: id {doc_id!r} is given twice")
        out[doc_id] = check_new_metadata(values, f"document {doc_id!r}")
    if not out:
        raise InputError("no documents to update (empty updates)")
    return out


def check_new_metadata(values: Any, where: str) -> dict[str, Any]:
    """``values`` as a dict, or an InputError starting with ``where``: not a dict, or a key that
    is not metadata (a reserved one, one given twice, or one of the encoded title and text)."""
    if not isinstance(values, Mapping):
        raise InputError(f"{where}: new metadata must be a dict of column -> value, got {type(values).__name__}")
    if not values:
        raise InputError(f"{where}: no new values (a dict of column -> value; None clears one)")
    for key in values:
        if key in ID_KEYS or key == "doc_id":
            raise InputError(f"{where}: {key!r} names the document; an update cannot change it (delete the "
                             "document and add it under the new id)")
        if key in ENCODED_KEYS:
            raise InputError(f"{where}: {key!r} is not metadata an update can change (the vectors encode the "
                             "title and text): add the document again with replace=True")
    row: dict[str, Any] = {}
    for key, value in values.items():
        add_metadata(row, key, value, where)
    return dict(values)


def rows_table(ids: list[str], rows: list[dict[str, Any]], store_text: bool) -> pa.Table:
    """A table with ``doc_id`` then every column seen in ``rows`` (missing = null)."""
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row))
    if not store_text:
        names.pop("text", None)
        names.pop("title", None)
    columns = {"doc_id": pa.array(ids, type=pa.string())}
    for name in names:
        values = [row.get(name) for row in rows]
        check_unicode(name, f"metadata column {name!r}")
        try:
            columns[name] = pa.array(values)
        except UnicodeEncodeError as exc:
            for doc_id, value in zip(ids, values):
                for text in _strings(value):
                    check_unicode(text, f"document {doc_id!r}: metadata column {name!r}")
            raise InputError(f"metadata column {name!r}: text that is not valid Unicode ({exc})") from None
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError) as exc:
            raise InputError(f"metadata column {name!r}: values of mixed or unsupported types{_odd_one(ids, values)} "
                             f"({exc})") from None
    return pa.table(columns)


def without_null_parents(table: pa.Table, known: Iterable[str] = ()) -> pa.Table:
    """``table`` without a column of nulls only named as the parent of a nested column (``a``
    beside ``a.b``, here or in ``known``): a document whose nested field is null (a null struct)
    has only null children, not a column of its own that filters would find null everywhere."""
    names = set(table.column_names).union(known)
    parents = {".".join(parts[:i]) for parts in (name.split(".") for name in names) for i in range(1, len(parts))}
    drop = [f.name for f in table.schema if pa.types.is_null(f.type) and f.name in parents]
    return table.drop_columns(drop) if drop else table


def _strings(value: Any) -> Iterator[str]:
    """The strings in a metadata value, inside lists and dicts too."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings(item)


def _odd_one(ids: list[str], values: list[Any]) -> str:
    """', e.g. document 'x' has type str where 'a' has type int': the first value whose column
    up to it Arrow cannot hold ('' when none is found)."""
    def holds(n: int) -> bool:
        try:
            pa.array(values[:n])
            return True
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
            return False

    lo, hi = 1, len(values)  # the shortest failing prefix, by bisection (a longer one fails too)
    if holds(hi):
        return ""
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (mid + 1, hi) if holds(mid) else (lo, mid)
    odd = lo - 1
    first = next((i for i, v in enumerate(values[:odd]) if v is not None), None)
    where = f" where {ids[first]!r} has type {type(values[first]).__name__}" if first is not None else ""
    return f", e.g. document {ids[odd]!r} has type {type(values[odd]).__name__}{where}"


def as_index_types(schema: pa.Schema | None, table: pa.Table) -> pa.Table:
    """``table`` with each column whose type clashes with the index's (``schema``) read as that
    type where nothing is lost: whole numbers and dates into a text column (a CSV's 10001), and
    text that parses into another type ("2022-01-01" into a date column, "2.5" into a float
    one), into an int or bool column only when it reads back as the same text ("7", "true";
    not "007" or "1"), never "nan" or "inf". Other columns are left for :func:`unify` (types
    that widen) or to name the clash."""
    if schema is None:
        return table
    for i, name in enumerate(table.column_names):
        want, have = name_type(schema, name), table.column(i).type
        if want is None or want == have or pa.types.is_null(want) or pa.types.is_null(have):
            continue
        if pa.types.is_string(want):
            readable = pa.types.is_integer(have) or pa.types.is_date(have)
        else:
            readable = pa.types.is_string(have)
        if not readable or _widens(want, have):
            continue
        try:
            cast = table.column(i).cast(want)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            continue  # some value does not convert: unify names the clash
        exact = pa.types.is_integer(want) or pa.types.is_boolean(want)
        if pa.types.is_string(have) and exact and not cast.cast(pa.string()).equals(table.column(i)):
            continue  # "007" would be 7, "1" true: not the text it was
        if pa.types.is_floating(want) and pc.all(pc.is_finite(cast)).as_py() is False:
            continue  # "nan", "inf": not numbers a filter can compare
        table = table.set_column(i, name, cast)
    return table


def _widens(a: pa.DataType, b: pa.DataType) -> bool:
    """Whether columns of types ``a`` and ``b`` unify into one type (as :func:`unify` does)."""
    try:
        pa.unify_schemas([pa.schema([("c", a)]), pa.schema([("c", b)])], promote_options="permissive")
        return True
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return False


def type_name(kind: pa.DataType) -> str:
    """How a manifest records a column's type: its name where pyarrow reads that back ("int64",
    "timestamp[us]"), else ARROW_TYPE + an Arrow schema holding it, base64 (lists, zoned
    timestamps, structs)."""
    name = str(kind)
    try:
        if pa.type_for_alias(name) == kind:
            return name
    except ValueError:
        pass
    return ARROW_TYPE + base64.b64encode(pa.schema([("c", kind)]).serialize().to_pybytes()).decode("ascii")


def column_type(name: str | None) -> pa.DataType:
    """The Arrow type a manifest's ``columns`` names (:func:`type_name`; null for a name it
    cannot read back, as older indexes wrote for lists and zoned timestamps)."""
    if name and name.startswith(ARROW_TYPE):
        try:
            return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(name[len(ARROW_TYPE):], validate=True))).field(0).type
        except (ValueError, pa.ArrowInvalid, IndexError):
            return pa.null()
    try:
        return pa.type_for_alias(name) if name else pa.null()
    except ValueError:
        return pa.null()


def name_type(schema: pa.Schema, name: str) -> pa.DataType | None:
    """The type of column ``name`` in ``schema``, None without one."""
    return schema.field(name).type if name in schema.names else None


def widened_type_name(recorded: str | None, new: pa.DataType) -> str:
    """The type name a manifest records for a column of ``recorded`` type that a segment of
    ``new`` type joins: the two unified, never narrowed to null by an all-null segment."""
    old = column_type(recorded)
    if recorded is None or pa.types.is_null(old):
        return type_name(new)
    if pa.types.is_null(new):
        return recorded
    try:
        return type_name(unify(pa.schema([("c", old)]), pa.schema([("c", new)]).empty_table()).field("c").type)
    except InputError:  # (the add checked the types against the index's before this)
        return type_name(new)


def unify(schema: pa.Schema | None, table: pa.Table, index_columns: Sequence[str] = ()) -> pa.Schema:
    """The schema widened by a new batch; InputError naming a column whose types clash (with
    the advice to rebuild when it is one of the index's own ``index_columns``)."""
    if schema is None:
        return table.schema
    try:
        return pa.unify_schemas([schema, table.schema], promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        clash = next((f for f in table.schema if f.name in schema.names and not _widens(schema.field(f.name).type, f.type)),
                     None)
        if clash is None:
            raise InputError(f"metadata types clash: {exc}") from None
        old = schema.field(clash.name).type
        if clash.name in index_columns:
            raise InputError(f"metadata column {clash.name!r} holds {old} values in the index, these documents give "
                             f"{clash.type} (a column keeps its type, even once its documents are deleted: build the "
                             "index anew to change it)") from None
        raise InputError(f"metadata column {clash.name!r}: {old} and {clash.type} values do not mix") from None


def check_one_type_per_column(tables: list[pa.Table], columns: set[str] | None = None) -> None:
    """InputError naming the column when the tables' columns (or those of them in ``columns``)
    cannot take one type each: types that unify (int with float, int with decimal) whose values
    do not all convert (2**60 + 1 as a float64, 1.25 in a decimal sized for ints)."""
    schema = None
    for table in tables:
        schema = unify(schema, table)
    for field in schema or []:
        if columns is not None and field.name not in columns:
            continue
        for table in tables:
            if field.name in table.column_names and table.column(field.name).type != field.type:
                try:
                    table.column(field.name).cast(field.type)
                except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
                    raise InputError(f"metadata column {field.name!r}: its values cannot all take one type "
                                     f"({table.column(field.name).type} as {field.type}: {exc})") from None


def batched(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def numpy_readable(x: Any) -> Any:
    """A torch tensor detached, on the CPU and widened from bfloat16 (numpy has no such type);
    anything else as it is."""
    if type(x).__module__.startswith("torch") and hasattr(x, "detach"):
        x = x.detach().cpu()
        if str(x.dtype) == "torch.bfloat16":
            x = x.float()
    return x


def check_embedding(x: Any, dim: int | None, where: str) -> np.ndarray:
    """A float32 [n, dim] array with n >= 1 and finite, float16-representable values."""
    x = numpy_readable(x)
    if np.iscomplexobj(x):  # (a cast would keep the real part, with only a warning)
        raise InputError(f"{where}: embedding holds complex numbers, not real vectors")
    try:
        with np.errstate(over="ignore"):  # (a float64 beyond float32 becomes inf: refused below by name)
            arr = np.asarray(x, dtype=np.float32)
    except (TypeError, ValueError):
        raise InputError(f"{where}: embedding is not an array of numbers") from None
    if arr.ndim != 2:
        raise InputError(f"{where}: embedding must be 2-D [n_tokens, dim], got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise InputError(f"{where}: embedding has 0 rows")
    if dim is not None and arr.shape[1] != dim:
        raise InputError(f"{where}: embedding has dim {arr.shape[1]}, the index has dim {dim}")
    if arr.shape[1] == 0:
        raise InputError(f"{where}: embedding has dim 0")
    if not np.isfinite(arr).all():
        if not np.isfinite(np.asarray(x, dtype=np.float64)).all():
            raise InputError(f"{where}: embedding contains NaN or infinite values")
    if not np.abs(arr).max() <= MAX_VALUE:
        raise InputError(f"{where}: embedding values too large to store (|x| > {MAX_VALUE})")
    return arr
