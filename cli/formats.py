"""How the CLI writes hits: a table, JSON lines or a TREC run."""
from __future__ import annotations

import datetime
import json
import math
import unicodedata
from typing import Any, Sequence

from xtrieve.eval.metrics import check_trec_id


def json_safe(obj: Any) -> Any:
    """``obj`` with every NaN or infinite float (in nested dicts, lists, tuples) as None."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def to_json(obj: Any) -> str:
    """One line of valid JSON: non-finite floats as null, dates and times in ISO 8601, bytes as
    hex, other types as their str()."""
    return json.dumps(json_safe(obj), default=_json_default, allow_nan=False)


def _json_default(value: Any) -> Any:
    if isinstance(value, (datetime.date, datetime.time)):  # (datetime too): 2021-01-02T03:04:05+05:30
        return value.isoformat()
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    return str(value)


def check_trec_query_ids(qids: Sequence[str]) -> None:
    """Check every query id for a TREC run (before searching)."""
    for qid in qids:
        check_trec_id("query", qid)


def check_trec_doc_ids(results: Sequence[Sequence[Any]]) -> None:
    """Check every hit's doc id for a TREC run (before any line is written)."""
    for hits in results:
        for h in hits:
            check_trec_id("doc", str(h.doc_id))


TABLE_TEXT_CHARS = 160
BIDI_CONTROLS = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"


def shown(value: Any) -> str:
    """``value`` as one line for a terminal: runs of whitespace as one space, control characters
    (escape sequences that would drive the terminal) and bidi overrides written as escapes."""
    text = " ".join(str(value).split())
    if text.isprintable():
        return text
    return "".join(c.encode("unicode_escape").decode() if c in BIDI_CONTROLS or unicodedata.category(c) == "Cc"
                   else c for c in text)


def format_hits(qid: str, query: str, hits: Sequence[Any], fmt: str,
                texts: Sequence[str | None] | None = None) -> str:
    """One query's hits as ``fmt`` (table, json or trec); a TREC query without hits is ''.
    ``texts``: each hit's stored text, shown with it (json: whole; table: its start)."""
    if fmt == "json":
        rows = [{"rank": r, "doc_id": h.doc_id, "score": round(h.score, 6), "metadata": h.metadata}
                for r, h in enumerate(hits, 1)]
        for row, text in zip(rows, texts or ()):
            row["text"] = text
        return to_json({"query_id": qid, "query": query, "hits": rows})
    if fmt == "trec":
        return "\n".join(f"{qid} Q0 {h.doc_id} {r} {h.score:.6f} xtrieve" for r, h in enumerate(hits, 1))
    lines = [f"query: {shown(query)}"] if query else []
    lines.append(f"{'rank':>4}  {'score':>8}  {'doc_id':<20}  title")
    for r, h in enumerate(hits, 1):
        title = shown(h.metadata.get("title") or "")[:60]
        lines.append(f"{r:>4}  {h.score:>8.3f}  {shown(h.doc_id):<20}  {title}")
        if texts is not None:
            stored = texts[r - 1]
            text = "(no text stored)" if stored is None else shown(stored)
            lines.append(" " * 16 + (text if len(text) <= TABLE_TEXT_CHARS else text[:TABLE_TEXT_CHARS - 3] + "..."))
    return "\n".join(lines)
