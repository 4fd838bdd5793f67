"""`xtrieve search`: one query or a file of queries against an index."""
from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import click

from xtrieve.cli.search_options import search_config, search_config_options
from xtrieve.errors import InputError


def read_queries(path: Path) -> list[tuple[str, str]]:
    """(id, text) pairs from JSONL ({"_id"|"id", "text"}) or TSV (id<TAB>text)."""
    from xtrieve.index.corpus import iter_jsonl

    out: list[tuple[str, str]] = []
    with open(path, encoding="utf-8") as f:
        if path.suffix.lower() in (".jsonl", ".json"):
            for n, row in enumerate(iter_jsonl(path), 1):
                if "text" not in row:
                    raise InputError(f"{path}: query {n} has no 'text' field")
                out.append((str(row.get("id", n)), row["text"]))
        else:
            for n, row in enumerate(csv.reader(f, delimiter="\t"), 1):
                if not row or (n == 1 and [c.lower() for c in row[:2]] in (["id", "text"], ["query-id", "text"], ["_id", "text"])):
                    continue
                if len(row) < 2:
                    raise InputError(f"{path}:{n}: expected 'id<TAB>text'")
                out.append((row[0], row[1]))
    if not out:
        raise InputError(f"{path}: no queries in the file")
    return out


def format_hits(qid: str, query: str, hits, fmt: str) -> str:
    if fmt == "json":
        return json.dumps({"query_id": qid, "query": query, "hits": [
            {"rank": r, "doc_id": h.doc_id, "score": round(h.score, 6), "metadata": h.metadata} for r, h in enumerate(hits, 1)
        ]}, default=str)
    if fmt == "trec":
        return "\n".join(f"{qid} Q0 {h.doc_id} {r} {h.score:.6f} xtrieve" for r, h in enumerate(hits, 1))
    lines = [f"query: {query}"] if query else []
    lines.append(f"{'rank':>4}  {'score':>8}  {'doc_id':<20}  title")
    for r, h in enumerate(hits, 1):
        title = str(h.metadata.get("title") or "")[:60]
        lines.append(f"{r:>4}  {h.score:>8.3f}  {h.doc_id:<20}  {title}")
    return "\n".join(lines)


@click.command("search")
@click.argument("index", type=click.Path(file_okay=False))
@click.argument("query", required=False)
@click.option("-k", "k", default=10, show_default=True, help="Number of hits per query.")
@click.option("--filter", "filter_", default=None, help="Metadata filter, e.g. \"year >= 2020 and lang == 'en'\".")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "trec"]), default="table", show_default=True)
@click.option("--queries", "queries_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="JSONL or TSV file of queries (instead of QUERY).")
@click.option("--exhaustive", is_flag=True, help="Score every document exactly (slow, ground truth).")
@search_config_options
def search_command(index, query, k, filter_, fmt, queries_file, exhaustive, k_prime, n_rerank, nprobe, imputation):
    """Search INDEX for QUERY (or every query in --queries)."""
    import xtrieve

    if (query is None) == (queries_file is None):
        raise click.UsageError("give either QUERY or --queries FILE")
    config = search_config(k_prime, n_rerank, nprobe, imputation)
    idx = xtrieve.Index.open(index)
    pairs = [("q1", query)] if query is not None else read_queries(queries_file)
    idx.warm_up()  # load FAISS and the model and run it once before timing the search
    start = time.perf_counter()
    results = idx.search_batch([t for _, t in pairs], k=k, filter=filter_, exhaustive=exhaustive, config=config)
    elapsed = time.perf_counter() - start
    for (qid, text), hits in zip(pairs, results):
        click.echo(format_hits(qid, text if fmt != "trec" else "", hits, fmt))
    if fmt == "table":
        click.echo(f"{len(pairs)} quer{'y' if len(pairs) == 1 else 'ies'} in {1000 * elapsed:.1f} ms", err=True)
