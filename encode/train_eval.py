"""Exhaustive MaxSim evaluation of a head on cached backbone states (nDCG@10 etc.).

Projecting cached states with a head is exact (the backbone is frozen), so this gives the
scores an index built with the same head and pool factor would reach with exhaustive search.
"""
from __future__ import annotations

import logging
import math

import numpy as np
import torch

from xtrieve.encode.crisp import maxsim, ward_labels
from xtrieve.encode.train_data import StateCache, TrainSet

log = logging.getLogger(__name__)


@torch.no_grad()
def project_corpus(head, cache: StateCache, texts: list[str], pool_factor: int, batch: int = 256,
                   method: str = "ward") -> tuple[torch.Tensor, torch.Tensor, int]:
    """Padded doc vectors [N, K, dim], mask [N, K], and the number of stored vectors."""
    vecs: list[torch.Tensor] = []
    for s in range(0, len(texts), batch):
        for t in texts[s:s + batch]:
            st = torch.from_numpy(np.asarray(cache.states(t, False), dtype=np.float32))
            v = head(st)
            if pool_factor > 1 and len(v) > 1:
                k = max(1, math.ceil(len(v) / pool_factor))
                if method == "ward":
                    labels = torch.from_numpy(np.asarray(ward_labels(v.numpy(), k), dtype=np.int64))
                else:
                    from xtrieve.encode.crisp import kmeans_labels

                    labels = kmeans_labels(v[None], torch.ones(1, len(v), dtype=torch.bool), torch.tensor([k]))[0]
                m = int(labels.max()) + 1
                sums = torch.zeros(m, v.shape[1]).index_add_(0, labels, v)
                v = torch.nn.functional.normalize(sums, dim=-1)
            vecs.append(v)
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
    all_scores = []
    for s in range(0, len(queries), qbatch):
        arrays = [np.asarray(cache.states(t, True), dtype=np.float32) for t in queries[s:s + qbatch]]
        width = max(len(a) for a in arrays)
        q = torch.zeros(len(arrays), width, d.shape[-1])
        qm = torch.zeros(len(arrays), width, dtype=torch.bool)
        for i, a in enumerate(arrays):
            q[i, : len(a)] = head(torch.from_numpy(a))
            qm[i, : len(a)] = True
        all_scores.append(maxsim(q, qm, d, dm, normalize_by_length=False, doc_chunk=128))
    scores = torch.cat(all_scores)
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
             method: str = "ward") -> dict[str, float]:
    """nDCG@10 / Recall@100 ×100 of exhaustive MaxSim over the whole corpus, plus vectors stored."""
    doc_ids = list(data.corpus)
    texts = [data.corpus[i] for i in doc_ids]
    d, dm, nvec = project_corpus(head, cache, texts, pool_factor, method=method)
    vals, idx = rank(head, cache, [data.queries[q] for q in qids], (d, dm))
    run = {q: {doc_ids[int(j)]: float(v) for v, j in zip(vals[qi], idx[qi])} for qi, q in enumerate(qids)}
    out = ndcg_at(run, {q: data.positives[q] for q in qids})
    out["vectors"] = nvec
    out["tokens"] = int(sum(len(cache.states(t, False)) for t in texts))
    return out
