"""Exhaustive MaxSim evaluation of a training model on cached backbone states (nDCG@10 etc.).

Encoding cached states with the model (its top blocks, if any, and head) is exact (the rest of
the backbone is frozen), so this gives the scores an index built with the same model and
pool factor would reach with exhaustive search.
"""
from __future__ import annotations

import logging
import numpy as np
import torch

from xtrieve.encode.crisp import crisp_pool, maxsim
from xtrieve.encode.train_data import StateCache, TrainSet

log = logging.getLogger(__name__)


@torch.no_grad()
def cached_vectors(head, cache: StateCache, texts: list[str], is_query: bool, pool_factor: int = 1,
                   batch: int = 64, method: str = "ward", min_vectors: int = 0) -> list[torch.Tensor]:
    """The model's vectors of each text from cached states (documents pooled by pool_factor,
    keeping at least ``min_vectors``)."""
    order = sorted(range(len(texts)), key=lambda i: len(cache.states(texts[i], is_query)))
    vecs: list[torch.Tensor | None] = [None] * len(texts)
    for s in range(0, len(order), batch):  # length-sorted batches pad little
        part = order[s:s + batch]
        v, m = head.encode_cached(cache, [texts[i] for i in part], is_query)
        if not is_query:
            v, m = crisp_pool(v, m, pool_factor, method, min_vectors=min_vectors)
        for row, i in enumerate(part):
            vecs[i] = v[row][m[row]]
    return vecs  # type: ignore[return-value]


def project_corpus(head, cache: StateCache, texts: list[str], pool_factor: int, batch: int = 64,
                   method: str = "ward", min_vectors: int = 0) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Padded doc vectors [N, K, dim], mask [N, K], and the number of stored vectors."""
    vecs = cached_vectors(head, cache, texts, False, pool_factor, batch, method, min_vectors)
    width = max(len(v) for v in vecs)
    out = torch.zeros(len(vecs), width, vecs[0].shape[1])
    mask = torch.zeros(len(vecs), width, dtype=torch.bool)
    for i, v in enumerate(vecs):
        out[i, : len(v)] = v
        mask[i, : len(v)] = True
    return out, mask, int(mask.sum())


@torch.no_grad()
def rank(head, cache: StateCache, queries: list[str], docs: tuple[torch.Tensor, torch.Tensor], k: int = 100,
         qbatch: int = 32) -> tuple[np.ndarray, np.ndarray]:
    d, dm = docs
    # sort docs by length so each chunk pads little
    order = torch.argsort(dm.sum(1))
    d, dm = d[order], dm[order]
    all_scores = []
    for s in range(0, len(queries), qbatch):
        q, qm = head.encode_cached(cache, queries[s:s + qbatch], True)
        all_scores.append(maxsim(q, qm, d, dm, normalize_by_length=False, doc_chunk=128))
    sorted_scores = torch.cat(all_scores)
    scores = torch.empty_like(sorted_scores)
    scores[:, order] = sorted_scores
    k = min(k, scores.shape[1])
    top = torch.topk(scores, k, dim=1)
    return top.values.numpy(), top.indices.numpy()


def ndcg_at(run: dict[str, dict[str, float]], qrels: dict[str, dict[str, int]], ks=(10,)) -> dict[str, float]:
    import pytrec_eval

    measures = {f"ndcg_cut.{k}" for k in ks} | {"recall.100"}
    ev = pytrec_eval.RelevanceEvaluator({q: qrels[q] for q in run if q in qrels}, measures)
    res = ev.evaluate(run)
    out = {}
    for m in [f"ndcg_cut_{k}" for k in ks] + ["recall_100"]:
        vals = [r[m] for r in res.values()]
        out[m] = 100.0 * float(np.mean(vals)) if vals else 0.0
    return out


def evaluate(head, cache: StateCache, data: TrainSet, qids: list[str], pool_factor: int,
             method: str = "ward", min_vectors: int = 0) -> dict[str, float]:
    """nDCG@10 / Recall@100 ×100 of exhaustive MaxSim over the whole corpus, plus vectors stored."""
    doc_ids = list(data.corpus)
    texts = [data.corpus[i] for i in doc_ids]
    d, dm, nvec = project_corpus(head, cache, texts, pool_factor, method=method, min_vectors=min_vectors)
    vals, idx = rank(head, cache, [data.queries[q] for q in qids], (d, dm))
    run = {q: {doc_ids[int(j)]: float(v) for v, j in zip(vals[qi], idx[qi])} for qi, q in enumerate(qids)}
    out = ndcg_at(run, {q: data.positives[q] for q in qids})
    out["vectors"] = nvec
    out["tokens"] = int(sum(len(cache.states(t, False)) for t in texts))
    return out


def dense_candidates(cache: StateCache, data: TrainSet, qids: list[str], depth: int = 100) -> dict[str, list[str]]:
    """Top ``depth`` documents per query by the cached dense (teacher) embedding: cheap candidates."""
    doc_ids = list(data.corpus)
    dd = np.stack([cache.dense(data.corpus[d], False) for d in doc_ids])
    qd = np.stack([cache.dense(data.queries[q], True) for q in qids])
    scores = qd @ dd.T
    depth = min(depth, len(doc_ids))
    top = np.argpartition(-scores, depth - 1, axis=1)[:, :depth]
    return {q: [doc_ids[j] for j in top[i]] for i, q in enumerate(qids)}


@torch.no_grad()
def evaluate_rerank(head, cache: StateCache, data: TrainSet, candidates: dict[str, list[str]], pool_factor: int,
                    method: str = "ward", dense_weight: float = 0.0, min_vectors: int = 0) -> dict[str, float]:
    """nDCG@10 of MaxSim (+ ``dense_weight`` x dense cosine) reranking fixed candidates.

    For fast model selection on held-out queries.
    """
    docs = sorted({d for c in candidates.values() for d in c})
    pos = {d: i for i, d in enumerate(docs)}
    d, dm, _ = project_corpus(head, cache, [data.corpus[x] for x in docs], pool_factor, method=method,
                              min_vectors=min_vectors)
    # the model's own dense embeddings (a trained backbone's, where it trains)
    dense = torch.cat([head.dense(cache, [data.corpus[x] for x in docs[i:i + 64]], False)
                       for i in range(0, len(docs), 64)]) if dense_weight > 0 else None
    run = {}
    for q, cand in candidates.items():
        qv, qm = head.encode_cached(cache, [data.queries[q]], True)
        idx = torch.tensor([pos[c] for c in cand])
        sc = maxsim(qv, qm, d[idx], dm[idx], normalize_by_length=False)[0]
        if dense is not None:
            sc = sc + dense_weight * int(qm.sum()) * (dense[idx] @ head.dense(cache, [data.queries[q]], True)[0])
        run[q] = {c: float(s) for c, s in zip(cand, sc.tolist())}
    return ndcg_at(run, {q: data.positives[q] for q in candidates})
