"""Exact MaxSim: for each query token the best dot product with any document token, summed.

Stored vectors (float16, int8 with a per-vector scale, or int4 residuals: see
``xtrieve.index.codecs``) are gathered and widened with torch, whose half/int8 conversions
and small matmuls are much faster than numpy's; int8 and int4 codes skip the widening on CPUs
with integer dot-product units (``xtrieve.retrieve.int8_products``). Scales, the int4 level
offset and the int4 bases (IVF centroids) are applied to the [n_q, rows] similarities, never
to the wider codes: q.v = q.base + scale * (q.n - 7.5 * sum(q)).
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import time
import warnings

import numpy as np
import torch

from xtrieve.index.codecs import INT4_CENTER
from xtrieve.retrieve import int8_products

log = logging.getLogger(__name__)

# rows per similarity matrix: a chunk's float32 copy of its codes (8 MiB at 128-d) stays under
# glibc's 32 MiB mmap ceiling, so it is reused from the heap; 1 << 16 rows were mapped afresh for
# each chunk (~9,000 page faults per exhaustive scifact search: 59-67 -> 40-43 ms p50)
CHUNK_VECTORS = 1 << 14
# sorted docs are scored over the whole run of rows from the first to the last (views, no copy)
# while it holds at most this many times their own rows: copying a chunk's rows cost ~14% of
# exhaustive search, scoring a row ~1 / CHUNK_VECTORS of it
SPAN_SLACK = 1.1


@dataclasses.dataclass
class Gathered:
    """Some docs' stored vectors, concatenated: codes [rows, dim] (as stored, or float32 once
    :meth:`widened`; packed int4 holds dim / 2 bytes per row), per-row scales (None for
    float16), IVF list per row (int4 residuals only) and the docs' boundaries. codes and
    scales may be views of the read-only stored files: never write into them."""

    codes: torch.Tensor
    scales: torch.Tensor | None
    lists: torch.Tensor | None
    bounds: np.ndarray
    int4: bool = False

    def widened(self) -> "Gathered":
        """The same vectors with float32 codes (from stored float16, int8 or packed int4).

        Packed int4 (low nibble: dimension j, high nibble: j + dim/2) widens *folded*: the
        first half holds each whole byte (low + 16 x high), the second the high nibble, which
        skips masking the low nibbles out (a third of the widening). :func:`fold_query` turns
        a query into the one whose products with folded codes equal the plain ones."""
        if self.codes.dtype is torch.float32:
            return self
        if self.int4:
            half = self.codes.shape[1]
            codes = torch.empty(self.codes.shape[0], 2 * half)
            codes[:, :half] = self.codes
            codes[:, half:] = self.codes >> 4
        else:
            codes = self.codes.float()
        return dataclasses.replace(self, codes=codes)

    @staticmethod
    def joined(parts: list["Gathered"]) -> "Gathered":
        """Several gathers of one codec as one (docs in order)."""
        first = parts[0]
        bounds = [first.bounds]
        for g in parts[1:]:
            bounds.append(g.bounds[1:] + bounds[-1][-1])
        return Gathered(
            torch.cat([g.codes for g in parts]),
            None if first.scales is None else torch.cat([g.scales for g in parts]),
            None if first.lists is None else torch.cat([g.lists for g in parts]),
            np.concatenate(bounds), first.int4,
        )


class SegmentVectors:
    """Torch views (no copies) of one segment's stored vectors, for fast gathers."""

    def __init__(self, segment) -> None:
        self.segment = segment
        self.offsets = np.asarray(segment.offsets, dtype=np.int64)
        self.int4 = getattr(segment, "codec", None) == "int4"
        self.lists = getattr(segment, "lists", None)  # numpy: torch lacks uint16 gathers
        self._bases: torch.Tensor | None = None
        with warnings.catch_warnings():  # read-only mmap: we never write through these views
            warnings.simplefilter("ignore", UserWarning)
            self.codes = torch.from_numpy(np.asarray(segment.vectors_raw))
            scales = getattr(segment, "scales", None)
            self.scales = None if scales is None else torch.from_numpy(np.asarray(scales, dtype=np.float32))
            dense = getattr(segment, "dense", None)
            self.dense = None if dense is None else torch.from_numpy(np.asarray(dense))

    @property
    def bases(self) -> torch.Tensor:
        """The IVF centroids int4 residuals are relative to (read on first use)."""
        if self._bases is None:  # two threads may both read them: same result
            self._bases = torch.from_numpy(self.segment.bases)
        return self._bases

    def gather_stored(self, docs: np.ndarray) -> Gathered:
        """The given local docs' vectors as stored (``codes`` not yet widened to float32)."""
        starts, ends = self.offsets[docs], self.offsets[docs + 1]
        lengths = ends - starts
        bounds = np.zeros(len(docs) + 1, dtype=np.int64)
        np.cumsum(lengths, out=bounds[1:])
        if len(docs) > 1 and docs[-1] - docs[0] == len(docs) - 1 and bool((docs[1:] > docs[:-1]).all()):
            # a run of consecutive docs (exhaustive search without deletes or filters) is one
            # run of rows: views instead of copies (exhaustive scifact: the gathers took ~14%)
            first, last = int(starts[0]), int(ends[-1])
            lists = None if self.lists is None else torch.from_numpy(self.lists[first:last].astype(np.int64))
            scales = None if self.scales is None else self.scales[first:last]
            return Gathered(self.codes[first:last], scales, lists, bounds, self.int4)
        rows_np = np.arange(bounds[-1]) + np.repeat(starts - bounds[:-1], lengths)
        rows = torch.from_numpy(rows_np)
        scales = None if self.scales is None else self.scales.index_select(0, rows)
        lists = None if self.lists is None else torch.from_numpy(self.lists[rows_np].astype(np.int64))
        return Gathered(self.codes.index_select(0, rows), scales, lists, bounds, self.int4)

    def _chunks(self, docs: np.ndarray):
        """(start, stop) runs of ``docs`` holding around CHUNK_VECTORS vectors each."""
        lengths = self.offsets[docs + 1] - self.offsets[docs]
        ends = np.cumsum(lengths)
        if len(docs) and ends[-1] <= CHUNK_VECTORS:
            yield 0, len(docs)
            return
        start = 0
        while start < len(docs):
            stop = start + max(1, int(np.searchsorted(ends[start:] - (ends[start - 1] if start else 0), CHUNK_VECTORS)))
            yield start, stop
            start = stop

    def _base_sims(self, query: torch.Tensor, centroid_sims: torch.Tensor | None) -> torch.Tensor | None:
        if self.lists is None:
            return None
        return centroid_sims if centroid_sims is not None else self.bases @ query.T

    def maxsim(self, query: torch.Tensor, docs: np.ndarray, centroid_sims: torch.Tensor | None = None) -> np.ndarray:
        """Exact MaxSim of one query [n_q, dim] against the given local docs. ``centroid_sims``:
        this segment's IVF centroids @ query.T [nlist, n_q], if the caller has them."""
        return self._chunked(query, docs, centroid_sims, per_token=False)

    def token_maxima(self, query: torch.Tensor, docs: np.ndarray,
                     centroid_sims: torch.Tensor | None = None) -> np.ndarray:
        """Each query token's best similarity in each of the given docs [n_q, n_docs] (MaxSim
        before the sum over query tokens; -inf for a doc without vectors)."""
        return self._chunked(query, docs, centroid_sims, per_token=True)

    def _chunked(self, query: torch.Tensor, docs: np.ndarray, centroid_sims: torch.Tensor | None,
                 per_token: bool) -> np.ndarray:
        """:func:`chunk_maxsim` over the docs, CHUNK_VECTORS rows at a time; the query's int8
        digits, where the codes take them, are made once for all the chunks."""
        out = np.empty((query.shape[0], len(docs)) if per_token else len(docs), dtype=np.float32)
        base_sims = self._base_sims(query, centroid_sims)
        digits = int8_products.QueryDigits(query) if takes_integer_products(self.codes, self.int4) else None
        for start, stop in self._chunks(docs):
            out[..., start:stop] = self._chunk_scores(query, docs[start:stop], base_sims, per_token, digits)
        return out

    def _chunk_scores(self, query: torch.Tensor, docs: np.ndarray, base_sims: torch.Tensor | None,
                      per_token: bool, digits: int8_products.QueryDigits | None) -> np.ndarray:
        """:func:`chunk_maxsim` of some docs. Sorted docs that leave out few of the rows between
        the first and the last (deletes, a broad filter) are scored over that whole run, as
        views of the stored rows, and their own columns kept."""
        first, last = int(docs[0]), int(docs[-1])
        if len(docs) > 1 and last - first + 1 > len(docs) and bool((docs[1:] > docs[:-1]).all()):
            span_rows = self.offsets[last + 1] - self.offsets[first]
            if span_rows <= SPAN_SLACK * (self.offsets[docs + 1] - self.offsets[docs]).sum():
                run = np.arange(first, last + 1)
                return chunk_maxsim(query, self.gather_stored(run), base_sims, per_token, digits)[..., docs - first]
        return chunk_maxsim(query, self.gather_stored(docs), base_sims, per_token, digits)

    def scores(self, query: torch.Tensor, docs: np.ndarray, dense_query: torch.Tensor | None,
               dense_weight: float, centroid_sims: torch.Tensor | None = None) -> np.ndarray:
        """MaxSim, plus ``dense_weight`` x n_q x the dense cosine when both sides have a dense embedding."""
        out = self.maxsim(query, docs, centroid_sims)
        self.add_dense(out, query, docs, dense_query, dense_weight)
        return out

    def add_dense(self, out: np.ndarray, query: torch.Tensor, docs: np.ndarray, dense_query: torch.Tensor | None,
                  dense_weight: float) -> None:
        """Add ``dense_weight`` x n_q x the dense cosine to the docs' scores ``out`` (in place)
        when both sides have a dense embedding."""
        if dense_query is not None and dense_weight > 0 and self.dense is not None:
            cos = self.dense.index_select(0, torch.from_numpy(docs)).float() @ dense_query
            out += (dense_weight * query.shape[0]) * cos.numpy()

    def codec(self) -> tuple[bool, bool, bool]:
        """What a Gathered of this segment holds: (int4, scales, lists)."""
        return self.int4, self.scales is not None, self.lists is not None


def token_maxima_across(query: torch.Tensor, parts: list[tuple[SegmentVectors, np.ndarray]],
                        centroid_sims: torch.Tensor | None = None) -> list[np.ndarray] | None:
    """``SegmentVectors.token_maxima`` of several segments' docs through one similarity matrix
    (one matmul and one max-reduce instead of one per segment), or None when it does not apply:
    the segments store their vectors differently, int4 residuals lack one shared set of centroid
    scores, or the docs hold more than CHUNK_VECTORS vectors."""
    codecs = {vectors.codec() for vectors, _ in parts}
    if len(codecs) != 1:
        return None
    if next(iter(codecs))[2] and centroid_sims is None:
        return None
    n_rows = sum(int((v.offsets[d + 1] - v.offsets[d]).sum()) for v, d in parts)
    if n_rows > CHUNK_VECTORS:
        return None
    joint = Gathered.joined([vectors.gather_stored(docs) for vectors, docs in parts])
    out = chunk_maxsim(query, joint, centroid_sims, per_token=True)
    return np.split(out, np.cumsum([len(d) for _, d in parts])[:-1], axis=1)


# a query with at least this many tokens gets its similarities as [n_q, rows]; shorter ones
# as [rows, n_q] (processes taking turns, 2 cores, MKL: scifact's ~21-token queries search
# 7% faster and score exhaustively 15% faster as [n_q, rows], where the per-doc max runs along
# contiguous rows; nfcorpus's ~4-token queries are 5-10% slower that way)
WIDE_QUERY_TOKENS = 10
# the float32 path (codes widened) lays out every query's similarities as [rows, n_q] where this
# machine's BLAS multiplies that way at least this much faster (:func:`float_rows_first`)
ROWS_FIRST_MARGIN = 0.9


def float_rows_first(dim: int) -> bool:
    """Whether float32 similarities of a wide query are faster as [rows, n_q] on this machine
    with torch's current thread count (a search's, see ``threads``): measured once per process
    and count on a chunk of 4,096 rows (64 per doc) and 20 query tokens, multiply and per-doc
    max, both layouts taking turns, best of 5 each (~5 ms in all).

    It differs by CPU: MKL on 2 AMD EPYC (AVX2) cores searched scifact's ~19-token queries
    12-16% faster as [rows, n_q] (5.5 against 6.4 ms p50); on 2 Xeon (Sapphire Rapids) cores
    [n_q, rows] had been 7% faster (WIDE_QUERY_TOKENS)."""
    return _measured_rows_first(dim, torch.get_num_threads())


@functools.lru_cache(maxsize=None)
def _measured_rows_first(dim: int, threads: int) -> bool:
    gen = torch.Generator().manual_seed(0)
    codes = torch.randn(4096, dim, generator=gen)
    query = torch.randn(20, dim, generator=gen)
    bounds = np.arange(0, 4096 + 1, 64)  # 64 docs of 64 rows
    best = {True: np.inf, False: np.inf}
    for _ in range(5):
        for rows_first in (True, False):
            start = time.perf_counter()
            sims = codes @ query.T if rows_first else query @ codes.T
            token_maxima_from_sims(sims.numpy(), bounds, axis=0 if rows_first else 1)
            best[rows_first] = min(best[rows_first], time.perf_counter() - start)
    faster = best[True] < ROWS_FIRST_MARGIN * best[False]
    log.debug("float32 similarities on %d threads: [rows, n_q] %.3f ms, [n_q, rows] %.3f ms: %s", threads,
              1e3 * best[True], 1e3 * best[False], "[rows, n_q]" if faster else "by query length")
    return faster


def fold_query(query: torch.Tensor) -> torch.Tensor:
    """The query [n_q, dim] whose products with folded int4 codes (see :meth:`Gathered.widened`)
    equal its products with the nibbles: with byte b = low + 16 high, q_low.low + q_high.high =
    q_low.b + (q_high - 16 q_low).high."""
    half = query.shape[1] // 2
    low = query[:, :half]
    return torch.cat([low, query[:, half:] - 16 * low], dim=1)


def takes_integer_products(codes: torch.Tensor, int4: bool) -> bool:
    """Whether stored codes (int8 with scales, or packed int4) are multiplied on the CPU's
    integer units (``int8_products``) rather than widened to float32."""
    if int4:
        return codes.dtype is torch.uint8 and int8_products.available(2 * codes.shape[1])
    return codes.dtype is torch.int8 and int8_products.available(codes.shape[1])


def chunk_maxsim(query: torch.Tensor, g: Gathered, base_sims: torch.Tensor | None = None,
                 per_token: bool = False, digits: int8_products.QueryDigits | None = None) -> np.ndarray:
    """MaxSim of one query against gathered vectors (as stored or widened), or with
    ``per_token`` each query token's best similarity per doc [n_q, n_docs]; ``base_sims``:
    bases @ query.T [nlist, n_q] when the codes are int4 residuals against IVF centroids.
    int8 and int4 codes are multiplied on the CPU's integer units where it has them, with the
    query's ``digits`` (made here if not given)."""
    rows_first = query.shape[0] < WIDE_QUERY_TOKENS
    if takes_integer_products(g.codes, g.int4):
        axis = 0 if rows_first else 1
        digits = digits if digits is not None else int8_products.QueryDigits(query)
        if g.int4:
            return _int4_maxsim(query, g, base_sims, rows_first, per_token, digits)
        sims = digits.scaled_products(g.codes, g.scales, rows_first)
        best = token_maxima_from_sims(sims.numpy(), g.bounds, axis=axis) * digits.token_scale[:, None]
        return best if per_token else best.sum(axis=0)
    g = g.widened()
    rows_first = rows_first or float_rows_first(query.shape[1])
    axis = 0 if rows_first else 1
    offset = None
    if g.int4:
        offset = INT4_CENTER * query.sum(dim=1)
        query = fold_query(query)
    sims = g.codes @ query.T if rows_first else query @ g.codes.T  # [rows, n_q] or [n_q, rows]
    if offset is not None:
        sims -= offset[None, :] if rows_first else offset[:, None]
    best = token_maxima_from_sims(_scaled_with_bases(sims, g, base_sims, rows_first).numpy(), g.bounds, axis=axis)
    return best if per_token else best.sum(axis=0)


def _scaled_with_bases(sims: torch.Tensor, g: Gathered, bases: torch.Tensor | None, rows_first: bool) -> torch.Tensor:
    """``sims`` (float, [rows, n_q] when ``rows_first``, else [n_q, rows]) times the rows' scales,
    plus each row's IVF base term from ``bases`` [nlist, n_q] for int4 residuals; in place."""
    if g.scales is not None:
        sims *= g.scales[:, None] if rows_first else g.scales[None, :]
    if g.lists is not None:  # gathered as [n_q, rows]: adding a transposed [rows, n_q] is 2x slower
        sims += bases.index_select(0, g.lists) if rows_first else bases.T.contiguous().index_select(1, g.lists)
    return sims


def _int4_maxsim(query: torch.Tensor, g: Gathered, base_sims: torch.Tensor | None, rows_first: bool,
                 per_token: bool, digits: int8_products.QueryDigits) -> np.ndarray:
    """:func:`chunk_maxsim` of int4 residuals on the integer units: q.v = q.base + scale x (q.n -
    7.5 sum(q)), with q.n and sum(q) both from the query's int8 digits (the digits' rounding
    then meets the centred levels n - 7.5, as small as int8's). Everything before the max is
    kept in units of each query token's ``token_scale`` (bases divided by it), so one
    multiplication of the [n_q, n_docs] maxima restores them."""
    unit = torch.from_numpy(digits.token_scale)
    bases = None if g.lists is None else base_sims / unit[None, :]  # [nlist, n_q]
    sims = _scaled_with_bases(int4_level_products(digits, g.codes, rows_first), g, bases, rows_first)
    best = token_maxima_from_sims(sims.numpy(), g.bounds, axis=0 if rows_first else 1) * digits.token_scale[:, None]
    return best if per_token else best.sum(axis=0)


def int4_level_products(digits: int8_products.QueryDigits, codes: torch.Tensor, rows_first: bool) -> torch.Tensor:
    """The query's products (its int8 digits, in units of ``token_scale``) with packed int4 codes'
    centred levels n - 7.5, as float: [rows, n_q] when ``rows_first``, else [n_q, rows]."""
    products = digits.products(int8_products.int4_levels(codes), rows_first)
    offset = torch.from_numpy(INT4_CENTER * digits.digit_sums)
    return torch.sub(products, offset[None, :] if rows_first else offset[:, None])


def token_maxima_from_sims(sims: np.ndarray, bounds: np.ndarray, axis: int = 0) -> np.ndarray:
    """Similarities between query tokens and stored rows ([n_rows, n_q] for axis 0, [n_q,
    n_rows] for axis 1) + doc boundaries -> each query token's best per doc [n_q, n_docs]
    (-inf for an empty doc)."""
    n_docs = len(bounds) - 1
    n_q = sims.shape[1 - axis]
    nonempty = bounds[1:] > bounds[:-1]
    if nonempty.all():
        best = np.maximum.reduceat(sims, bounds[:-1], axis=axis)
        return best if axis == 1 else best.T
    out = np.full((n_q, n_docs), -np.inf, dtype=np.float32)
    if nonempty.any():
        best = np.maximum.reduceat(sims, bounds[:-1][nonempty], axis=axis)
        out[:, nonempty] = best if axis == 1 else best.T
    return out
