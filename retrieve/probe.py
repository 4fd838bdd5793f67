"""Token retrieval over one segment's FAISS index: top-k' stored vectors per query token.

For an inner-product IVF index the coarse step (query tokens against the list
centroids) runs as one torch matmul and the lists are scanned with FAISS's
``search_preassigned``: for a single query's handful of tokens FAISS's own coarse search
takes its non-BLAS path, which measured ~2x slower on 20 tokens x 2,048 centroids. The
result is identical; other index types go through ``index.search``, with the parameters
``faiss_build.search_params`` picks for them (the ones it checks every new index with).
Segments trained from one IVF template share their centroids, and the Searcher runs their
coarse step once.
"""
from __future__ import annotations

import copy
import dataclasses
import math

import numpy as np
import torch

from xtrieve.faiss_loader import load_faiss
from xtrieve.index.faiss_build import search_params

# the probed IVF lists hold at least this many stored vectors per vector retrieved (on average):
# XTR imputes a missing similarity with the lowest one retrieved, which is only near the missing
# ones while k' leaves most of the probed vectors out. With k' past the probed vectors it turned
# into the lowest similarity probed: top-10 agreement with exhaustive MaxSim fell from 99.7% at
# k' = 384 to 97.8% at k' = 768 (80K vectors, 8 of 1,024 lists probed: ~630 vectors)
PROBED_PER_RETRIEVED = 2
# a filter widens the probe by the share of vectors it leaves, up to this factor
MAX_FILTER_WIDENING = 8


@dataclasses.dataclass
class Coarse:
    """The coarse step of some query vectors [n, dim] against one set of IVF centroids: every
    centroid's similarity [nlist, n] and the nprobe best lists per vector, as FAISS wants them."""

    sims: torch.Tensor
    dist: np.ndarray
    lists: np.ndarray

    def narrowed(self, nprobe: int) -> "Coarse":
        """The same step keeping each vector's ``nprobe`` best lists (the lists are sorted best
        first, so the best few of a wider step are a narrower step's)."""
        if nprobe >= self.lists.shape[1]:
            return self
        return Coarse(self.sims, np.ascontiguousarray(self.dist[:, :nprobe]),
                      np.ascontiguousarray(self.lists[:, :nprobe]))


class TokenProbe:
    """Searches one segment's token index; safe to share between threads (read-only).

    ``centroids`` (the IVF centroids [nlist, dim], None when there is no torch coarse step) may
    be replaced by an equal tensor that other probes share: :meth:`coarse` then serves them all.
    """

    def __init__(self, index) -> None:
        faiss = load_faiss()

        self._faiss = faiss  # kept: search() is on the hot path
        self.index = index
        self.ivf = faiss.try_extract_index_ivf(index)
        self._params = search_params(index)  # (nprobe, selector) -> this index's SearchParameters
        self.centroids: torch.Tensor | None = None
        # an exact inner-product scan of every vector (rows numbered as the segment stores them)
        self.flat = (self.ivf is None and isinstance(faiss.downcast_index(index), faiss.IndexFlat)
                     and index.metric_type == faiss.METRIC_INNER_PRODUCT)
        if (self.ivf is not None and hasattr(index, "search_preassigned_c")
                and self.ivf.metric_type == faiss.METRIC_INNER_PRODUCT
                and isinstance(faiss.downcast_index(self.ivf.quantizer), faiss.IndexFlat)):
            flat = self.ivf.quantizer.reconstruct_n(0, self.ivf.nlist)
            self.centroids = torch.from_numpy(np.ascontiguousarray(flat, dtype=np.float32))

    def sharing(self, centroids: torch.Tensor) -> "TokenProbe":
        """This probe (same FAISS index) with ``centroids``, an equal tensor that other probes
        share; a copy, as searches of an earlier snapshot may still be reading this one."""
        probe = copy.copy(self)
        probe.centroids = centroids
        return probe

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def search(self, queries: np.ndarray, k: int, nprobe: int, selector=None) -> tuple[np.ndarray, np.ndarray]:
        """(similarities, vector ids) [n, k] for C-contiguous float32 queries [n, dim]."""
        dist, ids, _ = self.search_with_centroid_scores(queries, k, nprobe, selector)
        return dist, ids

    def nprobe_for(self, k: int, nprobe: int, allowed: float = 1.0) -> int:
        """``nprobe``, raised where needed so the probed lists hold PROBED_PER_RETRIEVED x ``k``
        vectors on average (capped at every list), counting only the ``allowed`` fraction of
        them that a filter (or deletes) lets through, up to MAX_FILTER_WIDENING x the lists
        an unfiltered search probes (a segment a filter leaves a few documents of is not
        scanned whole)."""
        if self.ivf is None or self.ivf.nlist == 0:
            return nprobe
        def lists(share: float) -> int:
            mean_list = max(1.0, self.ivf.ntotal * share / self.ivf.nlist)
            return max(nprobe, math.ceil(PROBED_PER_RETRIEVED * k / mean_list))

        widest = lists(1.0) * (MAX_FILTER_WIDENING if allowed < 1.0 else 1)
        return int(min(self.ivf.nlist, lists(allowed), widest))

    def coarse(self, queries: np.ndarray, nprobe: int) -> Coarse | None:
        """The coarse step (None when this index has no torch coarse step: not IVF, or not
        inner product over flat centroids)."""
        if self.centroids is None:
            return None
        nprobe = max(1, min(int(nprobe), int(self.ivf.nlist)))
        # [nlist, n]: MKL is faster with the many centroids on the left (search p50 -12% on
        # nfcorpus's short queries, -4% on scifact, processes taking turns)
        sims = self.centroids @ torch.from_numpy(queries).T
        dist, lists = torch.topk(sims, nprobe, dim=0)
        return Coarse(sims, np.ascontiguousarray(dist.T.numpy()), np.ascontiguousarray(lists.T.numpy(), dtype=np.int64))

    def search_with_centroid_scores(self, queries: np.ndarray, k: int, nprobe: int, selector=None,
                                    coarse: Coarse | None = None) -> tuple[np.ndarray, np.ndarray, torch.Tensor | None]:
        """``search``, plus the similarities of every IVF centroid to every query vector
        [nlist, n] when the coarse step computed them (None otherwise). ``coarse``: this
        index's coarse step for these queries, already computed (by a probe with the same
        centroids)."""
        faiss = self._faiss
        if self.ivf is not None:
            nprobe = max(1, min(int(nprobe), int(self.ivf.nlist)))
        params = self._params(nprobe, selector)
        if self.centroids is None:
            return (*self.index.search(queries, k, params=params), None)
        if coarse is None:
            coarse = self.coarse(queries, nprobe)
        n = queries.shape[0]
        out_d = np.empty((n, k), dtype=np.float32)
        out_i = np.empty((n, k), dtype=np.int64)
        self.index.search_preassigned_c(n, faiss.swig_ptr(queries), k, faiss.swig_ptr(coarse.lists),
                                        faiss.swig_ptr(coarse.dist), faiss.swig_ptr(out_d), faiss.swig_ptr(out_i),
                                        False, params)
        return out_d, out_i, coarse.sims
