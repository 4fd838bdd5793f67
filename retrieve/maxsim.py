"""Exact MaxSim: for each query token the best dot product with any document token, summed."""
from __future__ import annotations

import numpy as np

CHUNK_VECTORS = 1 << 16


def gather(segment, docs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Decoded float32 vectors of the given local docs, concatenated, and their boundaries."""
    offsets = segment.offsets
    starts, ends = offsets[docs], offsets[docs + 1]
    lengths = ends - starts
    bounds = np.zeros(len(docs) + 1, dtype=np.int64)
    np.cumsum(lengths, out=bounds[1:])
    raw = segment.vectors_raw
    rows = np.concatenate([raw[s:e] for s, e in zip(starts.tolist(), ends.tolist())]) if len(docs) else raw[:0]
    vectors = rows.astype(np.float32)
    if segment.scales is not None and len(docs):
        scales = np.concatenate([segment.scales[s:e] for s, e in zip(starts.tolist(), ends.tolist())])
        vectors *= scales[:, None]
    return vectors, bounds


def maxsim_from_sims(sims: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """[n_q, n_rows] similarities + doc boundaries -> MaxSim score per doc."""
    n_docs = len(bounds) - 1
    if n_docs == 0:
        return np.zeros(0, dtype=np.float32)
    nonempty = bounds[1:] > bounds[:-1]
    scores = np.full(n_docs, -np.inf, dtype=np.float32)
    if nonempty.any():
        best = np.maximum.reduceat(sims, bounds[:-1][nonempty], axis=1)
        scores[nonempty] = best.sum(axis=0)
    return scores


def maxsim_docs(query: np.ndarray, segment, docs: np.ndarray) -> np.ndarray:
    """Exact MaxSim of one query [n_q, dim] against the given local docs of a segment."""
    scores = np.empty(len(docs), dtype=np.float32)
    start = 0
    lengths = segment.offsets[docs + 1] - segment.offsets[docs]
    while start < len(docs):
        # chunk the docs so one similarity matrix stays around CHUNK_VECTORS columns
        stop = start + max(1, int(np.searchsorted(np.cumsum(lengths[start:]), CHUNK_VECTORS)))
        vectors, bounds = gather(segment, docs[start:stop])
        scores[start:stop] = maxsim_from_sims(query @ vectors.T, bounds)
        start = stop
    return scores
