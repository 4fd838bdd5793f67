"""Rerank a given list of documents for one query with exact MaxSim, no index needed.

What ColBERT users do with a first-stage retriever's candidates (BM25, a dense model): encode
the query and each candidate and sort the candidates by late-interaction score. Texts are
encoded as ``Index.build`` and ``Index.search`` encode them (the model's pool factor for
documents, its dense term when it fuses one), so a document's score is the one an exhaustive
search would give it, up to the index's int8 rounding of the stored vectors.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

import numpy as np
import torch

from xtrieve.errors import InputError
from xtrieve.index.docs import AutoIds, as_records, check_embedding, explicit_ids, normalize, short_list
from xtrieve.retrieve.maxsim import Gathered, chunk_maxsim
from xtrieve.retrieve.searcher import check_query
from xtrieve.types import Encoded, Hit, make_hits

if TYPE_CHECKING:
    from xtrieve.encode.encoder import Encoder


def rerank(query: Any, documents: Iterable[Any], k: int | np.integer | None = None,
           encoder: "Encoder | str | Path | None" = None, pool_factor: int | None = None, batch_size: int = 32) -> list[Hit]:
    """The documents sorted by score for ``query``, best first (the top ``k`` when given).

    ``query``: a text, or its token vectors [n_q, dim]. ``documents``: texts, dicts with an
    "id", a "text", an optional "title" and metadata (as ``Index.build`` takes them), or token
    vectors [n_i, dim] each; texts without an id get "0", "1", ... (their positions when no
    dict gives an id; ids the dicts give are skipped), vectors their positions. ``encoder``: an Encoder, a model
    folder or name (None: the default model; not loaded when everything is vectors).
    ``pool_factor``: None uses the model's own, 1 scores every token vector."""
    if k is not None and (isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0):
        raise InputError(f"k must be a positive integer or None, got {k!r}")
    documents = as_records(documents)  # a DataFrame or pyarrow Table: a row per document, as Index.build reads it
    if isinstance(documents, (str, bytes, Mapping)) or not isinstance(documents, Iterable):
        raise InputError(f"documents must be a list of texts, dicts or token vectors, got {type(documents).__name__}")
    if not isinstance(documents, (Sequence, np.ndarray)):
        documents = list(documents)  # a generator
    if isinstance(query, (list, tuple)) and query and all(isinstance(x, str) for x in query):
        raise InputError("rerank takes one query (a text or its [n, dim] token vectors), got a list of texts: "
                         "call it once per query")
    if isinstance(query, Encoded):
        raise InputError("rerank takes a query's token vectors, not an Encoded batch: pass encoded.vectors[0]")
    if len(documents) == 0:
        return []
    vector_docs = [not isinstance(d, (str, dict)) for d in documents]
    if any(vector_docs) and not all(vector_docs):
        raise InputError("documents must be all texts/dicts or all token vectors, not a mix")
    needs_encoder = isinstance(query, str) or not vector_docs[0]
    enc = _encoder(encoder) if needs_encoder else None
    q, q_dense = _query(query, enc)
    if vector_docs[0]:
        ids = [str(i) for i in range(len(documents))]
        doc_vectors = [check_embedding(d, None, f"document {i}") for i, d in enumerate(documents)]
        metadata: list[dict[str, Any]] = [{} for _ in documents]
        doc_dense = None
    else:
        ids, doc_vectors, metadata, doc_dense = _encoded_documents(documents, enc, pool_factor, batch_size)
    dim = doc_vectors[0].shape[1]
    for i, d in enumerate(doc_vectors):
        if d.shape[1] != dim:
            raise InputError(f"document {i}: vectors have dimension {d.shape[1]}, document 0's have {dim}")
    query_vectors = check_query(q, dim, 0, against="the documents have")
    scores = maxsim_scores(torch.from_numpy(query_vectors), doc_vectors)
    weight = float(getattr(enc.config, "dense_weight", 0.0)) if enc is not None else 0.0
    if weight > 0 and q_dense is not None and doc_dense is not None:
        scores += weight * query_vectors.shape[0] * (np.asarray(doc_dense, np.float32) @ q_dense)
    order = sorted(range(len(ids)), key=lambda i: -scores[i])[:k]  # stable: ties keep input order
    return make_hits([ids[i] for i in order], [float(scores[i]) for i in order], [metadata[i] for i in order])


def maxsim_scores(query: torch.Tensor, docs: list[np.ndarray]) -> np.ndarray:
    """MaxSim of a query [n_q, dim] with each document's vectors [n_i >= 1, dim], in float32."""
    bounds = np.zeros(len(docs) + 1, dtype=np.int64)
    np.cumsum([len(d) for d in docs], out=bounds[1:])
    return chunk_maxsim(query, Gathered(torch.from_numpy(np.concatenate(docs)), None, None, bounds))


def _encoder(encoder: Any) -> Any:
    from xtrieve.encode.encoder import Encoder
    from xtrieve.retrieve.api import as_encoder

    return as_encoder(encoder) if encoder is not None else Encoder.load()


def _query(query: Any, enc: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """The query's token vectors and (text queries of a model that fuses one) dense embedding."""
    if not isinstance(query, str):
        return query, None
    if not query.strip():
        raise InputError("query is empty")
    encoded = enc.encode([query], True)
    dense = encoded.dense[0] if encoded.dense is not None else None
    return encoded.vectors[0], dense


def _encoded_documents(documents: Sequence[Any], enc: Any, pool_factor: int | None, batch_size: int):
    """(ids, pooled token vectors, metadata, dense embeddings or None) of text documents."""
    ids, texts, metadata = [], [], []
    auto_id = AutoIds(explicit_ids(documents).__contains__)  # as Index.build numbers texts
    title_separator = getattr(enc.config, "title_separator", " ")
    for position, doc in enumerate(documents):
        doc_id, text, row = normalize(doc, position, auto_id, title_separator)
        ids.append(doc_id)
        texts.append(text)
        metadata.append({key: value for key, value in row.items() if key != "text"})
    duplicates = sorted(doc_id for doc_id, n in Counter(ids).items() if n > 1)
    if duplicates:
        raise InputError(f"duplicate document id(s): {short_list(duplicates)}")
    if pool_factor is None:
        pool_factor = int(getattr(enc.config, "pool_factor", 1) or 1)
    encoded = enc.encode(texts, False, batch_size=batch_size, pool_factor=pool_factor, show_progress=False)
    return ids, [np.asarray(v, np.float32) for v in encoded.vectors], metadata, encoded.dense
