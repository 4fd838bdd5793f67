"""`xtrieve search`: one query or a file of queries against an index."""
from __future__ import annotations

import time
from pathlib import Path

import click

from xtrieve.cli.commands_index import DEVICE_OPTION, PRECISION_OPTION
from xtrieve.cli.formats import check_trec_doc_ids, check_trec_query_ids, format_hits
from xtrieve.cli.query_files import read_queries
from xtrieve.cli.search_options import search_config, search_config_options


@click.command("search")
@click.argument("index", type=click.Path(file_okay=False))
@click.argument("query", required=False)
@click.option("-k", "--top-k", "k", type=click.IntRange(min=1), default=10, show_default=True,
              help="Number of hits per query.")
@click.option("--filter", "filter_", default=None, help="Metadata filter, e.g. \"year >= 2020 and lang == 'en'\".")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "trec"]), default="table", show_default=True,
              help="json: one object per query and line (JSON Lines: {query_id, query, hits}); trec: a run file.")
@click.option("--queries", "queries_file",
              type=click.Path(exists=True, dir_okay=False, allow_dash=True, path_type=Path),
              help="File of queries (instead of QUERY): JSONL, JSON, TSV (id<TAB>text), CSV (id,text) or .txt (one "
                   "per line); - reads standard input: one query or id<TAB>text per line, or JSON Lines / a JSON "
                   "list when it starts as JSON does.")
@click.option("--exhaustive", is_flag=True,
              help="Score every document (that --filter allows) exactly over its stored vectors (int8 by default): "
                   "MaxSim, plus the model's dense term where it has one; slow, the ground truth.")
@click.option("--with-text", is_flag=True, help="Show each hit's stored text (json: whole; table: its start).")
@click.option("--no-verify", is_flag=True,
              help="Do not check the index files' checksums on opening (reading them all takes ~2.5 s per GB): the files' "
                   "structure is still checked, but damage to stored values then goes unnoticed.")
@PRECISION_OPTION
@DEVICE_OPTION
@search_config_options
def search_command(index, query, k, filter_, fmt, queries_file, exhaustive, with_text, no_verify, precision, device, k_prime,
                   n_rerank, nprobe, imputation):
    """Search INDEX for QUERY (or every query in --queries)."""
    import xtrieve

    if (query is None) == (queries_file is None):
        raise click.UsageError("give either QUERY or --queries FILE")
    if with_text and fmt == "trec":
        raise click.UsageError("--with-text has no place in TREC output (use --format json or table)")
    config = search_config(k_prime, n_rerank, nprobe, imputation)
    pairs = [("q1", query)] if query is not None else read_queries(queries_file)
    if fmt == "trec":
        check_trec_query_ids([qid for qid, _ in pairs])
    idx = xtrieve.Index.open(index, precision=precision, verify=not no_verify, device=device)
    idx.warm_up()  # load FAISS and the model and run it once before timing the search
    start = time.perf_counter()
    results = idx.search_batch([t for _, t in pairs], k=k, filter=filter_, exhaustive=exhaustive, config=config)
    elapsed = time.perf_counter() - start
    if fmt == "trec":
        check_trec_doc_ids(results)
    for (qid, text), hits in zip(pairs, results):
        texts = [(idx.get(h.doc_id) or {}).get("text") for h in hits] if with_text else None
        out = format_hits(qid, text if fmt != "trec" else "", hits, fmt, texts)
        if out:
            click.echo(out)
    if fmt == "table":
        click.echo(f"{len(pairs)} quer{'y' if len(pairs) == 1 else 'ies'} in {1000 * elapsed:.1f} ms", err=True)
