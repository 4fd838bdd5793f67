"""`xtrieve eval` and `xtrieve bench`: argument parsing and printing only."""
from __future__ import annotations

import os
from pathlib import Path

import click

from xtrieve.cli.commands_index import DEVICE_OPTION, ENCODER_CONFIG_OPTION, PRECISION_OPTION, parse_encoder_config
from xtrieve.cli.formats import json_safe, to_json
from xtrieve.cli.search_options import search_config, search_config_options
from xtrieve.config import SearchConfig

DATA_DIR = click.Path(file_okay=False, path_type=Path)


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


@click.command("eval")
@click.option("--data-dir", type=DATA_DIR, default=None,
              help="Local BEIR folder (corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv), or its parent with --dataset.")
@click.option("--dataset", default=None, help="BEIR dataset name; downloaded into the cache when no --data-dir.")
@click.option("--split", default="test", show_default=True, help="Qrels split (qrels/SPLIT.tsv).")
@click.option("--model", default=None, help="Model name or folder (default: the offline default model).")
@click.option("--index", "index_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Reuse the index in this folder, or build it there, without stored text (default: a temporary folder).")
@click.option("--run-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the run in TREC format (qid Q0 docid rank score tag).")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("-k", "--top-k", "k", type=click.IntRange(min=1), default=100, show_default=True, help="Hits per query.")
@search_config_options
@click.option("--exhaustive", is_flag=True,
              help="Score every document (that --filter allows) exactly over its stored vectors (int8 by default): "
                   "MaxSim, plus the model's dense term where it has one; slow, the ground truth.")
@click.option("--max-queries", type=click.IntRange(min=1), default=None, help="Evaluate only the first N queries.")
@click.option("--keep-identical-ids", is_flag=True,
              help="Keep a query's own document in its results (BEIR drops it by default).")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where --dataset downloads go (default $XTRIEVE_CACHE/beir or ~/.cache/xtrieve/beir).")
@ENCODER_CONFIG_OPTION
@PRECISION_OPTION
@DEVICE_OPTION
def eval_command(data_dir, dataset, split, model, index_dir, run_file, fmt, k, k_prime, n_rerank, nprobe, imputation,
                 exhaustive, max_queries, keep_identical_ids, cache_dir, encoder_config, precision, device):
    """Evaluate retrieval on a BEIR dataset: nDCG@10, Recall@100, MAP@100, MRR@10, latency."""
    from xtrieve.eval.evaluate import run_eval

    if data_dir is None and dataset is None:
        raise click.UsageError("give --data-dir DIR (a local BEIR folder) or --dataset NAME")
    if run_file is not None:  # (a place that cannot take the file fails now, not after the search)
        try:
            run_file.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise click.UsageError(f"--run-file {run_file}: cannot make its folder ({exc.strerror})") from None
        if run_file.is_dir() or not os.access(run_file.parent, os.W_OK):
            raise click.UsageError(f"--run-file {run_file}: cannot write a file there")
    report = run_eval(data_dir=data_dir, dataset=dataset, split=split, model=model, index_dir=index_dir, k=k,
                      search_config=search_config(k_prime, n_rerank, nprobe, imputation), exhaustive=exhaustive,
                      run_file=run_file, cache=cache_dir, max_queries=max_queries,
                      ignore_identical_ids=not keep_identical_ids, precision=precision, device=device,
                      encoder_config=parse_encoder_config(encoder_config))
    s = report.summary()
    if fmt == "json":
        click.echo(to_json(s))
        return
    cfg = s["search_config"]
    k_prime = SearchConfig.from_dict(cfg).scaled_k_prime(s["n_vectors"])
    mode = "exhaustive MaxSim" if s["exhaustive"] else \
        f"k'={k_prime} n_rerank={cfg['n_rerank']} nprobe={cfg['nprobe']} imputation={cfg['imputation']}"
    build = "reused" if s["build_s"] is None else f"{s['build_s']:.1f} s"
    lines = [
        f"dataset     {s['dataset']} ({s['split']}): {s['n_queries']} queries, {s['n_docs']} documents"
        + (f" ({s['n_skipped_docs']} empty skipped)" if s["n_skipped_docs"] else ""),
        f"search      {mode}, k={s['k']}",
        f"nDCG@10     {_pct(s['ndcg@10'])}",
        f"Recall@100  {_pct(s['recall@100'])}",
        f"MAP@100     {_pct(s['map@100'])}",
        f"MRR@10      {_pct(s['mrr@10'])}",
        f"latency     p50 {s['p50_ms']:.1f} ms, p95 {s['p95_ms']:.1f} ms per query (incl. query encoding"
        + ("" if s["device"] == "cpu" else f" on {s['device']}") + "), "
        f"{s['qps_single']:.1f} queries/s",
        f"index       {s['index_bytes'] / 1e6:.1f} MB, {s['n_vectors']} vectors"
        + (f", {s['bytes_per_vector']} B/vector" if s["bytes_per_vector"] else "") + f"; build {build}",
    ]
    if s["n_identical_dropped"]:
        lines.append(f"note        dropped {s['n_identical_dropped']} query's own document(s) (ignore_identical_ids)")
    if s["k"] < 100:
        cut = "@10 and @100" if s["k"] < 10 else "@100"
        lines.append(f"note        the run holds {s['k']} hits per query: the {cut} figures count those only")
    if run_file is not None:
        lines.append(f"run file    {run_file}")
    click.echo("\n".join(lines))


@click.command("bench")
@click.option("--data-dir", type=DATA_DIR, default=None, help="Local BEIR folder (or its parent with --dataset).")
@click.option("--dataset", default=None, help="BEIR dataset name; downloaded into the cache when no --data-dir.")
@click.option("--split", default="test", show_default=True, help="Qrels split.")
@click.option("--model", default=None, help="Model name or folder (default: the offline default model).")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write bench.json, bench.md (and bench.png with matplotlib) here.")
@click.option("--grid", type=click.Choice(["small", "full"]), default="small", show_default=True,
              help="k'/n_rerank settings of the fast path to compare.")
@click.option("--max-queries", type=click.IntRange(min=1), default=None, help="Use only the first N queries.")
@click.option("-k", "--top-k", "k", type=click.IntRange(min=1), default=100, show_default=True, help="Hits per query.")
@click.option("--nprobe", type=click.IntRange(min=1), default=None, help="IVF lists probed (all grid points).")
@click.option("--no-peers", is_flag=True, help="Do not run fast-plaid / xtr-warp-rs / PyLate even if installed.")
@click.option("--peers-python", envvar="XTRIEVE_PEERS_PYTHON", default=None,
              help="Run the peers with this Python (a venv holding them and the torch their wheels need).")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where --dataset downloads go.")
def bench_command(data_dir, dataset, split, model, fmt, out, grid, max_queries, k, nprobe, no_peers, peers_python,
                  cache_dir):
    """Benchmark exhaustive MaxSim, the fast path over a grid, and installed peers on the same vectors."""
    from xtrieve.eval.bench import SCORES_NOTE, run_bench, table_lines, write_outputs
    from xtrieve.eval.peers import PEERS

    if data_dir is None and dataset is None:
        raise click.UsageError("give --data-dir DIR (a local BEIR folder) or --dataset NAME")
    if out is not None:  # (a folder that cannot be made fails now, not after the benchmark)
        try:
            Path(out).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise click.UsageError(f"--out {out}: cannot make the folder ({exc.strerror})") from None
    report = run_bench(data_dir=data_dir, dataset=dataset, split=split, model=model, grid=grid,
                       max_queries=max_queries, k=k, base_config=search_config(None, None, nprobe, None),
                       peers=() if no_peers else PEERS, cache=cache_dir, peers_python=peers_python)
    report = json_safe(report)
    written = write_outputs(report, out) if out is not None else None
    if fmt == "json":
        click.echo(to_json(report))
        return
    t = report["timings"]
    click.echo(f"{report['dataset']} ({report['split']}): {report['n_docs']} documents, {report['n_vectors']} vectors, "
               f"{report['n_queries']} queries; encode {t['encode_s']} s, index {t['index_s']} s; "
               f"index {report['index_bytes'] / 1e6:.1f} MB ({report['bytes_per_vector']} B/vector); "
               f"peak RSS {report['peak_rss_mb']['end']} MiB")
    click.echo("\n".join(table_lines(report, markdown=False)))
    click.echo(SCORES_NOTE)
    for name, why in report["peers_skipped"].items():
        click.echo(f"peer {name} skipped: {why}")
    if written:
        click.echo(f"wrote {written['json']}, {written['md']}"
                   + (f", {written['png']}" if written["png"] else " (no plot: matplotlib not installed)"))
