"""Exact MaxSim: for each query token the best dot product with any document token, summed.

Stored vectors (float16, or int8 with a per-vector scale) are gathered and widened with
torch, whose half/int8 conversions and small matmuls are much faster than numpy's.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch

CHUNK_VECTORS = 1 << 16


class SegmentVectors:
    """Torch views (no copies) of one segment's stored vectors, for fast gathers."""

    def __init__(self, segment) -> None:
        self.offsets = np.asarray(segment.offsets, dtype=np.int64)
        with warnings.catch_warnings():  # read-only mmap: we never write through these views
            warnings.simplefilter("ignore", UserWarning)
            self.codes = torch.from_numpy(np.asarray(segment.vectors_raw))
            scales = getattr(segment, "scales", None)
            self.scales = None if scales is None else torch.from_numpy(np.asarray(scales, dtype=np.float32))
            dense = getattr(segment, "dense", None)
            self.dense = None if dense is None else torch.from_numpy(np.asarray(dense))

    def gather(self, docs: np.ndarray) -> tuple[torch.Tensor, torch.Tensor | None, np.ndarray]:
        """Float32 codes of the given local docs, concatenated, their int8 scales (None for
        float16 storage) and the docs' boundaries."""
        starts, ends = self.offsets[docs], self.offsets[docs + 1]
        lengths = ends - starts
        bounds = np.zeros(len(docs) + 1, dtype=np.int64)
        np.cumsum(lengths, out=bounds[1:])
        rows = torch.from_numpy(np.arange(bounds[-1]) + np.repeat(starts - bounds[:-1], lengths))
        codes = self.codes.index_select(0, rows).float()
        scales = None if self.scales is None else self.scales.index_select(0, rows)
        return codes, scales, bounds

    def maxsim(self, query: torch.Tensor, docs: np.ndarray) -> np.ndarray:
        """Exact MaxSim of one query [n_q, dim] against the given local docs."""
        scores = np.empty(len(docs), dtype=np.float32)
        lengths = self.offsets[docs + 1] - self.offsets[docs]
        start = 0
        while start < len(docs):
            # chunk the docs so one similarity matrix stays around CHUNK_VECTORS columns
            stop = start + max(1, int(np.searchsorted(np.cumsum(lengths[start:]), CHUNK_VECTORS)))
            codes, scales, bounds = self.gather(docs[start:stop])
            scores[start:stop] = chunk_maxsim(query, codes, scales, bounds)
            start = stop
        return scores

    def scores(self, query: torch.Tensor, docs: np.ndarray, dense_query: torch.Tensor | None,
               dense_weight: float) -> np.ndarray:
        """MaxSim, plus ``dense_weight`` x n_q x the dense cosine when both sides have a dense embedding."""
        out = self.maxsim(query, docs)
        if dense_query is not None and dense_weight > 0 and self.dense is not None:
            cos = self.dense.index_select(0, torch.from_numpy(docs)).float() @ dense_query
            out += (dense_weight * query.shape[0]) * cos.numpy()
        return out


# a query with at least this many tokens gets its similarities as [n_q, rows]; shorter ones
# as [rows, n_q] (processes taking turns, 2 cores, MKL: scifact's ~21-token queries search
# 7% faster and score exhaustively 15% faster as [n_q, rows], where the per-doc max runs along
# contiguous rows; nfcorpus's ~4-token queries are 5-10% slower that way)
WIDE_QUERY_TOKENS = 10


def chunk_maxsim(query: torch.Tensor, codes: torch.Tensor, scales: torch.Tensor | None,
                  bounds: np.ndarray) -> np.ndarray:
    """MaxSim of one query against gathered codes (int8 scales applied to the products)."""
    if query.shape[0] >= WIDE_QUERY_TOKENS:
        sims = query @ codes.T
        if scales is not None:  # scale the similarities, not the wider codes
            sims *= scales[None, :]
        return maxsim_from_sims(sims.numpy(), bounds, axis=1)
    sims = codes @ query.T
    if scales is not None:
        sims *= scales[:, None]
    return maxsim_from_sims(sims.numpy(), bounds, axis=0)


def maxsim_from_sims(sims: np.ndarray, bounds: np.ndarray, axis: int = 0) -> np.ndarray:
    """Similarities between query tokens and stored rows ([n_rows, n_q] for axis 0, [n_q,
    n_rows] for axis 1) + doc boundaries -> MaxSim score per doc (-inf if empty)."""
    n_docs = len(bounds) - 1
    scores = np.full(n_docs, -np.inf, dtype=np.float32)
    nonempty = bounds[1:] > bounds[:-1]
    if nonempty.any():
        best = np.maximum.reduceat(sims, bounds[:-1][nonempty], axis=axis)
        scores[nonempty] = best.sum(axis=1 - axis)
    return scores
