"""Scoring runs with beir's EvaluateRetrieval, plus the run plumbing around it.

A *run* (``results``) is BEIR's shape: ``{query_id: {doc_id: score}}``. Metrics come back
as fractions in 0..1 (like beir), keyed in lower case: ``ndcg@10``, ``recall@100``,
``map@100``, ``mrr@10`` (and the other cut-offs asked for).
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from xtrieve.errors import InputError, check_unicode

log = logging.getLogger(__name__)

Results = dict[str, dict[str, float]]
Qrels = Mapping[str, Mapping[str, int]]

def hits_to_results(qids: Sequence[str], hits_lists: Sequence[Sequence[Any]]) -> Results:
    """BEIR results from per-query lists of hits (objects with doc_id/score, or pairs)."""
    out: Results = {}
    for qid, hits in zip(qids, hits_lists):
        run: dict[str, float] = {}
        for h in hits:
            doc_id, score = (h.doc_id, h.score) if hasattr(h, "doc_id") else (h[0], h[1])
            doc_id = str(doc_id)
            if doc_id not in run:  # keep the first (best ranked) score of a doc
                run[doc_id] = float(score)
        out[str(qid)] = run
    return out


def drop_identical_ids(results: Results) -> tuple[Results, int]:
    """Remove each query's own id from its results (BEIR's ``ignore_identical_ids``).

    Datasets such as ArguAna use a document as the query; finding it is no success.
    Returns a new run and how many hits were dropped.
    """
    out: Results = {}
    dropped = 0
    for qid, run in results.items():
        if qid in run:
            run = {d: s for d, s in run.items() if d != qid}
            dropped += 1
        out[qid] = dict(run)
    return out, dropped


def top_k(results: Results, k: int) -> Results:
    """Each query's k best documents (by score, ties by first seen)."""
    return {qid: dict(sorted(run.items(), key=lambda kv: -kv[1])[:k]) for qid, run in results.items()}


def evaluate(qrels: Qrels, results: Results, k_values: Iterable[int] = (10, 100),
             mrr_k: Iterable[int] = (10,)) -> dict[str, float]:
    """nDCG/Recall/MAP/P at ``k_values`` (EvaluateRetrieval.evaluate) and MRR (evaluate_custom).

    Only queries present in both ``qrels`` (with at least one judgement) and ``results`` count,
    for every metric (beir's MRR would otherwise divide by all judged queries while nDCG averages
    over the run); a searched query that retrieved nothing counts, as 0. Identical query/doc ids
    are NOT dropped here: call :func:`drop_identical_ids` first.
    """
    from beir.retrieval.evaluation import EvaluateRetrieval

    k_values = sorted({int(k) for k in k_values} | {int(k) for k in mrr_k})
    judged = {str(q): {str(d): int(s) for d, s in docs.items()} for q, docs in qrels.items() if docs}
    # documents of one score in trec_eval's order (id descending), which pytrec_eval applies for
    # nDCG/MAP/Recall: beir's MRR keeps the run's order, and the two disagreed on tied copies
    run = {str(q): dict(sorted(((str(d), float(s)) for d, s in docs.items()), key=lambda ds: (ds[1], ds[0]),
                               reverse=True))
           for q, docs in results.items() if str(q) in judged}
    if not run:
        return {f"{name}@{k}": 0.0 for k in k_values for name in ("ndcg", "recall", "map", "p", "mrr")} | {"n_scored": 0}
    ndcg, _map, recall, precision = EvaluateRetrieval.evaluate(judged, run, k_values, ignore_identical_ids=False)
    mrr = EvaluateRetrieval.evaluate_custom({q: judged[q] for q in run}, run, sorted(set(mrr_k)), metric="mrr")
    out: dict[str, float] = {}
    for block in (ndcg, _map, recall, precision, mrr):
        for key, value in block.items():
            out[key.lower()] = float(value)
    out["n_scored"] = len(run)
    return out


def percentile_ms(latencies_s: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) of latencies given in seconds, in milliseconds."""
    if len(latencies_s) == 0:
        return float("nan")
    return float(np.percentile(np.asarray(latencies_s, dtype=np.float64), q) * 1000.0)


def latency_summary(latencies_s: Sequence[float]) -> dict[str, float]:
    """p50/p95/mean in ms and single-query throughput (queries/s) of sequential calls."""
    total = float(np.sum(latencies_s)) if len(latencies_s) else 0.0
    return {
        "p50_ms": percentile_ms(latencies_s, 50),
        "p95_ms": percentile_ms(latencies_s, 95),
        "mean_ms": total / len(latencies_s) * 1000.0 if len(latencies_s) else float("nan"),
        "qps_single": len(latencies_s) / total if total > 0 else float("nan"),
    }


def agreement(results: Results, reference: Results, k: int = 10) -> float:
    """Mean fraction of the reference's top-k that ``results`` also has in its top-k."""
    ref_top, top = top_k(reference, k), top_k(results, k)
    fractions = []
    for qid, ref in ref_top.items():
        if not ref:
            continue
        fractions.append(len(set(ref) & set(top.get(qid, {}))) / len(ref))
    return float(np.mean(fractions)) if fractions else float("nan")


def check_trec_id(kind: str, value: str) -> None:
    """InputError unless ``value`` is one non-empty field without whitespace or control
    characters (which terminals and C readers such as trec_eval take as commands or ends), as a
    TREC run needs."""
    if value.split() != [value] or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise InputError(f"{kind} id {value!r} cannot be written in TREC format (it is empty or contains whitespace "
                         "or control characters)")
    check_unicode(value, f"{kind} id")


def write_trec_run(path: str | Path, results: Results, tag: str = "xtrieve") -> Path:
    """Write a TREC run file: ``qid Q0 docid rank score tag``, best first per query.

    Every id is checked first (:func:`check_trec_id`): an id that is empty or holds whitespace
    is refused with InputError before the file is touched.
    """
    for qid, run in results.items():
        check_trec_id("query", str(qid))
        for doc_id in run:
            check_trec_id("doc", str(doc_id))
    path = Path(path)
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    tag = "_".join(str(tag).split()) or "xtrieve"
    with open(path, "w", encoding="utf-8") as f:
        for qid, run in results.items():
            for rank, (doc_id, score) in enumerate(sorted(run.items(), key=lambda kv: -kv[1]), 1):
                s = score if math.isfinite(score) else 0.0
                f.write(f"{qid} Q0 {doc_id} {rank} {s:.6f} {tag}\n")
    return path


def read_trec_run(path: str | Path) -> Results:
    """Read a TREC run file back into BEIR's results shape."""
    out: Results = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 5:
                out.setdefault(parts[0], {})[parts[2]] = float(parts[4])
    return out
