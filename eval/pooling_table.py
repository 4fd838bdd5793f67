"""Pooling table: nDCG@10 (fast path), vectors stored and index bytes per (model, pool factor).

Issue 7's table: the untrained head with and without post-hoc pooling against CRISP-trained
heads. Token states come from the training cache (one backbone pass per text, shared by every
row), each head projects them, documents are Ward-pooled as ``Index.build`` pools them, and a
real index is built from those vectors (``build_from_embeddings``) and searched with the
default SearchConfig. Scores are MaxSim only: an index built from embeddings has no model, so
no dense score is added (``xtrieve eval`` measures a model's full score).

    python -m xtrieve.eval.pooling_table --data-dir DIR --model NAME=FOLDER:1,2,3 ... [--json OUT]
"""
from __future__ import annotations

import argparse
import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import click

from xtrieve.config import SearchConfig
from xtrieve.errors import XtrieveError
from xtrieve.eval.beir_data import find_beir_folder, load_beir, searchable
from xtrieve.eval.evaluate import EVAL_INDEX_CONFIG
from xtrieve.eval.metrics import drop_identical_ids, evaluate, hits_to_results, top_k

log = logging.getLogger(__name__)

K = 100


def table_rows(data_dir: str | Path, models: list[tuple[str, str, list[int]]], cache_dir: str | None = None,
               split: str = "test") -> list[dict[str, Any]]:
    """One row per (label, model folder, pool factor)."""
    import xtrieve
    from xtrieve.encode.train import TrainModel
    from xtrieve.encode.train_data import StateCache, default_cache
    from xtrieve.encode.train_eval import cached_vectors

    ds = load_beir(data_dir, split)
    docs, _ = ds.documents()
    items, blank = searchable(ds.query_items())
    items = [(q, t) for q, t in items if q in ds.qrels]
    if blank:
        log.warning("%d judged query(ies) have an empty text (e.g. %r): left out, where eval scores them 0",
                    len(blank), blank[0])
    texts, queries = [d["text"] for d in docs], [t for _, t in items]
    doc_ids = {d["id"] for d in docs}
    rows = []
    for label, folder, factors in models:
        enc = xtrieve.Encoder.load(folder)
        cache = StateCache(cache_dir or default_cache(), enc)
        cache.ensure(texts, False)
        cache.ensure(queries, True, progress=False)
        model = TrainModel(enc).eval()
        q_vectors = [v.numpy() for v in cached_vectors(model, cache, queries, True)]
        n_tokens = sum(len(cache.states(t, False)) for t in texts)
        for pf in factors:
            d_vectors = [v.numpy() for v in cached_vectors(model, cache, texts, False, pf,
                                                           min_vectors=enc.config.pool_min_vectors)]
            with tempfile.TemporaryDirectory(prefix="xtrieve-pooling-") as tmp:
                idx = xtrieve.Index.build_from_embeddings(Path(tmp) / "ix", [d["id"] for d in docs], d_vectors,
                                                          config=EVAL_INDEX_CONFIG, show_progress=False)
                ask = K + 1 if any(q in doc_ids for q, _ in items) else K  # (a query's own document is dropped)
                hits = idx.search_batch(q_vectors, k=ask, config=SearchConfig())
                info = idx.info()
            results, _ = drop_identical_ids(hits_to_results([q for q, _ in items], hits))  # as eval and bench do
            metrics = evaluate(ds.qrels, top_k(results, K))
            rows.append({"dataset": ds.name, "model": label, "pool_factor": pf, "ndcg@10": metrics["ndcg@10"],
                         "recall@100": metrics["recall@100"], "n_tokens": n_tokens,
                         "n_vectors": int(info.n_vectors), "index_bytes": int(info.bytes)})
            log.info("%s", rows[-1])
    return rows


def _model_arg(text: str) -> tuple[str, str, list[int]]:
    label, _, rest = text.partition("=")
    folder, _, factors = rest.rpartition(":")
    if not label or not folder or not factors:
        raise argparse.ArgumentTypeError(f"--model wants NAME=FOLDER:1,2,3, got {text!r}")
    try:
        pool_factors = [int(x) for x in factors.split(",")]
    except ValueError:
        pool_factors = []
    if not pool_factors or min(pool_factors) < 1:
        raise argparse.ArgumentTypeError(f"--model {text!r}: pool factors must be integers >= 1 (1 = no pooling)")
    return label, folder, pool_factors


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", action="append", required=True)
    p.add_argument("--model", action="append", type=_model_arg, required=True,
                   help="NAME=FOLDER:POOL_FACTORS (FOLDER 'default' = the packaged model)")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--split", default="test", help="the qrels split to score (default: test)")
    p.add_argument("--json", default=None, help="also write the rows here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    models = [(label, None if folder == "default" else folder, pfs) for label, folder, pfs in args.model]
    from xtrieve.encode.loaders import load_spec

    try:  # usage errors before any encoding: every data folder and model must be there
        for d in args.data_dir:
            find_beir_folder(d)
        for label, folder, _ in models:
            load_spec(folder)
    except XtrieveError as exc:
        p.error(str(exc))
    try:
        rows = [r for d in args.data_dir for r in table_rows(d, models, args.cache_dir, args.split)]
    except XtrieveError as exc:
        p.exit(1, f"{p.prog}: error: {exc}\n")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    click.echo(markdown_table(rows))


def markdown_table(rows: list[dict]) -> str:
    """The rows of :func:`table_rows` as a Markdown table."""
    lines = ["| dataset | model | pool | nDCG@10 | R@100 | vectors | tokens / vectors | index MB |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['dataset']} | {r['model']} | x{r['pool_factor']} | {100 * r['ndcg@10']:.2f} | "
                     f"{100 * r['recall@100']:.2f} | {r['n_vectors']:,} | {r['n_tokens'] / r['n_vectors']:.2f} | "
                     f"{r['index_bytes'] / 1e6:.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
