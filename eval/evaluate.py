"""``xtrieve eval``: build (or open) an index over a BEIR corpus, search every query, score.

Latency is measured on sequential single-query calls of ``Index.search`` with the query
text, so it includes encoding the query: what a user of the API waits for. One untimed
warm-up query first loads the encoder and the searcher.
"""
from __future__ import annotations

import dataclasses
import logging
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from xtrieve.config import IndexConfig, SearchConfig
from xtrieve.eval.beir_data import BeirDataset, resolve_dataset, searchable
from xtrieve.eval.metrics import (Results, check_trec_id, drop_identical_ids, evaluate, hits_to_results,
                                  latency_summary, top_k, write_trec_run)

log = logging.getLogger(__name__)

DEFAULT_K = 100
# What an eval index stores: the text is not needed to score a run, and leaving it out
# makes index_bytes the size of what retrieval reads.
EVAL_INDEX_CONFIG = IndexConfig(store_text=False)


@dataclasses.dataclass
class EvalReport:
    """What one evaluation measured; :meth:`summary` is the JSON the CLI prints."""

    dataset: str
    split: str
    n_queries: int
    n_docs: int
    n_skipped_docs: int
    metrics: dict[str, float]
    latency: dict[str, float]
    build_s: float | None
    index_bytes: int
    n_vectors: int
    pool_factor: int | None
    vector_storage: str | None
    index_path: str | None
    index_reused: bool
    exhaustive: bool
    search_config: dict[str, Any]
    k: int
    n_identical_dropped: int
    model: str | None
    results: Results = dataclasses.field(repr=False, default_factory=dict)
    precision: str | None = None  # the documents' encoding precision when this run built the index
    query_precision: str | None = None  # the queries' encoding precision
    device: str = "cpu"  # where the model encoded (latency includes query encoding)

    def summary(self) -> dict[str, Any]:
        m = self.metrics
        return {
            "dataset": self.dataset,
            "split": self.split,
            "n_queries": self.n_queries,
            "ndcg@10": m.get("ndcg@10"),
            "recall@100": m.get("recall@100"),
            "map@100": m.get("map@100"),
            "mrr@10": m.get("mrr@10"),
            "p50_ms": round(self.latency["p50_ms"], 3),
            "p95_ms": round(self.latency["p95_ms"], 3),
            "qps_single": round(self.latency["qps_single"], 3),
            "index_bytes": self.index_bytes,
            "n_vectors": self.n_vectors,
            "pool_factor": self.pool_factor,
            "vector_storage": self.vector_storage,
            "bytes_per_vector": round(self.index_bytes / self.n_vectors, 2) if self.n_vectors else None,
            "build_s": None if self.build_s is None else round(self.build_s, 3),
            "index_reused": self.index_reused,
            "n_docs": self.n_docs,
            "n_skipped_docs": self.n_skipped_docs,
            "n_identical_dropped": self.n_identical_dropped,
            "exhaustive": self.exhaustive,
            "search_config": self.search_config,
            "k": self.k,
            "model": self.model,
            "precision": self.precision,
            "query_precision": self.query_precision,
            "device": self.device,
        }


def search_queries(search: Callable[[Any, int], Sequence[Any]], items: Sequence[tuple[str, Any]], k: int,
                   ignore_identical_ids: bool = True, doc_ids: Any = None, warmup: bool = True,
                   progress: bool | None = None) -> tuple[Results, list[float], int]:
    """Run ``search(query, k)`` once per query, timing each call.

    Returns (results with at most k docs per query, latencies in seconds, number of
    queries whose own id was dropped from their results). When ``ignore_identical_ids``
    and some query id is also a document id (``doc_ids``: a container), every query asks
    for k + 1 hits so that k remain after dropping its own document.
    """
    from tqdm.auto import tqdm

    ask = k
    if ignore_identical_ids and doc_ids is not None and any(qid in doc_ids for qid, _ in items):
        ask = k + 1
    if warmup and items:
        search(items[0][1], ask)
    qids, hits_lists, latencies = [], [], []
    for qid, query in tqdm(items, desc="search", disable=None if progress is None else not progress, leave=False):
        t0 = time.perf_counter()
        hits = search(query, ask)
        latencies.append(time.perf_counter() - t0)
        qids.append(qid)
        hits_lists.append(hits)
    results = hits_to_results(qids, hits_lists)
    dropped = 0
    if ignore_identical_ids:
        results, dropped = drop_identical_ids(results)
    return top_k(results, k), latencies, dropped


def is_index_folder(path: str | Path) -> bool:
    from xtrieve.index.manifest import MANIFEST

    return (Path(path) / MANIFEST).is_file()


def open_or_build(path: str | Path, docs: list[dict[str, Any]], model: str | None = None,
                  index_config: IndexConfig | None = None, show_progress: bool | None = None,
                  precision: str = "float32", encoder_config: Mapping[str, Any] | None = None, device: str = "cpu"):
    """(Index, build seconds or None when reused, reused?) for ``path``.

    An existing index is opened (``model``, when given, must match its encoder) and must hold
    exactly the documents of ``docs`` (InputError otherwise: it was built from another corpus);
    an empty or missing folder gets a new index over ``docs``. Build time covers encoding the
    documents and writing the index, not loading the model. ``precision``: the encoder's
    (``xtrieve.encode.precision``), on the documents of a build and on the queries;
    ``encoder_config``: EncoderConfig fields to change (``Encoder.load(config=)``); ``device``:
    where the encoder runs ("cpu", "cuda", ...).
    """
    import xtrieve

    wanted = model is not None or encoder_config or not is_index_folder(path)
    encoder = xtrieve.Encoder.load(model, config=encoder_config, precision=precision, device=device) if wanted else None
    if is_index_folder(path):
        idx = xtrieve.Index.open(path, encoder=encoder, precision=None if encoder is not None else precision,
                                 device=None if encoder is not None else device)
        check_same_documents(path, idx.snapshot.live_ids(), [d["id"] for d in docs])
        if encoder is not None:
            pool, built = getattr(encoder.config, "pool_factor", None), idx.info().pool_factor
            if pool is not None and int(pool) != int(built):
                log.warning("index %s was built with pool factor %d; --model's pool factor %d is not applied "
                            "to a reused index (the report measures the index's own vectors)", path, built, pool)
        return idx, None, True
    t0 = time.perf_counter()
    idx = xtrieve.Index.build(path, docs, encoder=encoder, config=index_config or EVAL_INDEX_CONFIG,
                              show_progress=show_progress)
    build_s = time.perf_counter() - t0
    log.info("built %s in %.1f s", path, build_s)
    return idx, build_s, False


def check_same_documents(path: str | Path, index_ids: set[str], corpus_ids: Sequence[str]) -> None:
    """InputError unless the index at ``path`` holds exactly the corpus's documents."""
    corpus = set(corpus_ids)
    if index_ids == corpus:
        return
    missing, extra = corpus - index_ids, index_ids - corpus
    parts = []
    if missing:
        parts.append(f"{len(missing)} corpus document id(s) are not in it (e.g. {min(missing)!r})")
    if extra:
        parts.append(f"it holds {len(extra)} id(s) the corpus lacks (e.g. {min(extra)!r})")
    from xtrieve.errors import InputError

    raise InputError(f"--index {path} was built from another corpus: {' and '.join(parts)}; "
                     "give an empty or new --index folder to build one for this corpus")


def evaluate_index(index: Any, dataset: BeirDataset, k: int = DEFAULT_K, exhaustive: bool = False,
                   config: SearchConfig | None = None, ignore_identical_ids: bool = True,
                   max_queries: int | None = None, progress: bool | None = None) -> tuple[Results, dict, dict, int]:
    """Search ``dataset``'s queries in ``index`` one by one and score the run.

    Returns (results, metrics, latency summary, number of identical ids dropped).
    ``index`` needs only ``search(query, k=, exhaustive=, config=)`` returning hits.
    """
    items, blank = searchable(dataset.query_items(max_queries))
    if not items:
        from xtrieve.errors import InputError

        raise InputError(f"{dataset.name}/{dataset.split}: no queries to evaluate")
    if blank:
        log.warning("%d judged query(ies) have an empty text (e.g. %r): they retrieve nothing and score 0",
                    len(blank), blank[0])
    config = config or SearchConfig()

    def search(query: Any, n: int):
        return index.search(query, k=n, exhaustive=exhaustive, config=config)

    results, latencies, dropped = search_queries(search, items, k, ignore_identical_ids, dataset.corpus,
                                                 progress=progress)
    if dropped:
        log.info("dropped %d query's own document(s) from the results (ignore_identical_ids)", dropped)
    results.update((qid, {}) for qid in blank)
    metrics = evaluate(dataset.qrels, results, k_values=(1, 3, 5, 10, 100), mrr_k=(10, 100))
    return results, metrics, latency_summary(latencies), dropped


def run_eval(data_dir: str | Path | None = None, dataset: str | None = None, split: str = "test",
             model: str | None = None, index_dir: str | Path | None = None, k: int = DEFAULT_K,
             search_config: SearchConfig | None = None, exhaustive: bool = False,
             run_file: str | Path | None = None, cache: str | Path | None = None,
             index_config: IndexConfig | None = None, max_queries: int | None = None,
             ignore_identical_ids: bool = True, progress: bool | None = None,
             precision: str = "float32", encoder_config: Mapping[str, Any] | None = None,
             device: str = "cpu") -> EvalReport:
    """Load a BEIR split, open or build its index (documents encoded in ``precision`` on
    ``device``), search every query (encoded the same way) and score the run."""
    ds = resolve_dataset(data_dir, dataset, split, cache)
    judged = ds.query_items(max_queries)
    if not searchable(judged)[0]:  # (before building an index for nothing)
        from xtrieve.errors import InputError

        raise InputError(f"{ds.name}/{ds.split}: no query to evaluate: " + (
            f"none of the {len(judged)} judged queries has a text (BEIR's queries.jsonl rows are "
            '{"_id": ..., "text": ...})' if judged else "no judged query (qrels and queries share no id)"))
    docs, skipped = ds.documents()
    if not docs:
        from xtrieve.errors import InputError

        raise InputError(f"{ds.path}: every document has an empty title and text")
    if run_file is not None:  # refuse ids a TREC run cannot hold before building or searching
        for qid, _ in ds.query_items(max_queries):
            check_trec_id("query", qid)
        for doc in docs:
            check_trec_id("doc", doc["id"])
    config = search_config or SearchConfig()
    with ExitStack() as stack:
        path = Path(index_dir) if index_dir is not None else Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="xtrieve-eval-"))) / "index"
        idx, build_s, reused = open_or_build(path, docs, model, index_config, progress, precision, encoder_config,
                                             device)
        info = idx.info()
        results, metrics, latency, dropped = evaluate_index(idx, ds, k, exhaustive, config, ignore_identical_ids,
                                                            max_queries, progress)
        model_name = info.model
        del idx
    if run_file is not None:
        write_trec_run(run_file, results, tag="xtrieve-exhaustive" if exhaustive else "xtrieve")
    return EvalReport(
        dataset=ds.name, split=split, n_queries=len(results), n_docs=len(docs), n_skipped_docs=len(skipped),
        metrics=metrics, latency=latency, build_s=build_s, index_bytes=int(info.bytes), n_vectors=int(info.n_vectors),
        pool_factor=int(info.pool_factor), vector_storage=info.vector_storage,
        index_path=str(index_dir) if index_dir is not None else None, index_reused=reused, exhaustive=exhaustive,
        search_config=config.to_dict(), k=k, n_identical_dropped=dropped, model=model_name or model, results=results,
        precision=None if reused else precision, query_precision=precision, device=str(device),
    )
