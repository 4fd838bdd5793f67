"""The Searcher: token retrieval over every segment, XTR scoring, exact MaxSim rerank."""
from __future__ import annotations

import threading
from collections import OrderedDict
from functools import cached_property
from typing import Any, Iterator, Sequence

import numpy as np
import pyarrow as pa
import torch

from xtrieve.config import SearchConfig
from xtrieve.errors import InputError
from xtrieve.index.arrow_numpy import arrow_indices, as_numpy
from xtrieve.index.docs import MAX_VALUE, column_type, numpy_readable
from xtrieve.retrieve.code_scan import scans_codes, top_rows
from xtrieve.retrieve.filters import allowed_rows, as_condition
from xtrieve.retrieve.maxsim import SegmentVectors, token_maxima_across
from xtrieve.retrieve.probe import Coarse, TokenProbe
from xtrieve.retrieve.segment_groups import SegmentGroup, core_of, form_groups, row_selector
from xtrieve.retrieve.threads import idle_core_threads
from xtrieve.retrieve.xtr import RetrievedTable, global_top, top_indices
from xtrieve.types import Hit, make_hits


KEY_SHIFT = 32
FILTER_CACHE_SIZE = 16
# a batch's token retrieval runs on slices of about this many query tokens: its memory grows with
# them (times k' times segments), and larger slices are no faster
BATCH_TOKENS = 1024
# a query whose token retrieval found fewer than k documents searches again with k' and nprobe
# scaled by up to this much (then exactly, if it still falls short)
MAX_WIDENING = 16
# the share of the candidates to rerank that is picked before the missing similarities' gap is
# measured (on those candidates)
MEASURED_FRACTION = 0.25


def _key(segment_no: int, local: np.ndarray) -> np.ndarray:
    return (np.int64(segment_no) << KEY_SHIFT) | local.astype(np.int64)


def _split_keys(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Keys as (segment numbers, local doc numbers), int64 arrays."""
    return (keys >> KEY_SHIFT).astype(np.int64), (keys & ((1 << KEY_SHIFT) - 1)).astype(np.int64)


class _Allowed:
    """Which docs of one segment may be returned, plus (made when first asked for) a FAISS
    selector over its vectors: grouped segments are searched with their group's instead."""

    def __init__(self, segment, docs_mask: np.ndarray) -> None:
        self.docs_mask = docs_mask
        self.n_allowed = int(docs_mask.sum())
        self.all_allowed = self.n_allowed == segment.n_docs
        self._segment = segment

    @cached_property
    def n_vectors(self) -> int:
        """The stored vectors of the allowed docs."""
        if self.all_allowed:
            return int(self._segment.n_vectors)
        return int(self._segment.vector_counts[self.docs_mask].sum())

    @cached_property
    def rows(self) -> np.ndarray:
        """The allowed docs' vector rows (a bool mask over the segment's rows)."""
        return self.docs_mask[self._segment.vec_to_doc]

    @cached_property
    def selector(self):
        """None when every doc (or none) is allowed; two threads may both build it: equal ones."""
        if self.all_allowed or not self.n_allowed:
            return None
        return row_selector(self.rows)


class _AllowedList(list):
    """One ``_Allowed`` per segment, plus the FAISS selectors of segment groups built for them."""

    def __init__(self, items) -> None:
        super().__init__(items)
        self.group_selectors: dict[int, tuple] = {}


def check_k(k: object) -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0:
        raise InputError(f"k must be a positive integer, got {k!r}")


def check_query(q: object, dim: int, i: int, against: str = "the index has") -> np.ndarray:
    """A query as a C-contiguous float32 [n_q, dim] array, or a clear InputError (``against``:
    what the dimension is compared with, as the message says it)."""
    if q is None or isinstance(q, (bytes, dict, bool, int, float)):
        raise InputError(f"query {i}: expected a text or a [n_tokens, {dim}] array, got {type(q).__name__}")
    if isinstance(q, (tuple, list)) and any(isinstance(x, str) for x in q):
        raise InputError(f"query {i}: a {type(q).__name__} holding texts; a query is one text or a [n_tokens, {dim}] "
                         "array (of (id, text) pairs, pass the texts)")
    q = numpy_readable(q)
    try:
        raw = np.asarray(q)
        arr = None if raw.dtype.kind == "c" else np.ascontiguousarray(raw, dtype=np.float32)
    except (TypeError, ValueError):
        raise InputError(f"query {i}: not an array of numbers") from None
    if arr is None:
        raise InputError(f"query {i}: complex numbers, not real vectors")
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise InputError(f"query {i}: expected a [n_tokens, {dim}] array, got shape {arr.shape}")
    if arr.shape[1] != dim:
        raise InputError(f"query {i}: vectors have dimension {arr.shape[1]}, {against} {dim}")
    if not np.isfinite(arr).all():
        raise InputError(f"query {i}: contains NaN or infinite values")
    if np.abs(arr).max() > MAX_VALUE:  # the documents' bound: far from overflowing a float32 score
        raise InputError(f"query {i}: values too large (|x| > {MAX_VALUE})")
    return arr


def check_dense(d: object, hidden: int, i: int) -> torch.Tensor | None:
    """A query's dense embedding as a float32 [hidden] tensor (None stays None), or an InputError."""
    if d is None:
        return None
    try:
        arr = np.ascontiguousarray(d, dtype=np.float32).reshape(-1)
    except (TypeError, ValueError):
        raise InputError(f"query {i}: dense embedding is not an array of numbers") from None
    if arr.shape[0] != hidden or not np.isfinite(arr).all():
        raise InputError(f"query {i}: dense embedding must be {hidden} finite numbers, got shape {np.shape(d)}")
    return torch.from_numpy(arr)


class Searcher:
    """Searches one immutable snapshot of an index; safe to share between threads.

    When the index's model fuses a dense embedding (``dense_weight`` > 0), exact scores of
    queries given with one are MaxSim + dense_weight x n_q x cosine(dense embeddings).
    """

    def __init__(self, snapshot, encoder=None, reuse: list[tuple[tuple, TokenProbe]] | None = None) -> None:
        self.snapshot = snapshot
        self.segments = list(snapshot.segments)
        self.encoder = encoder
        self.dim = int(snapshot.dim)
        self._lock = threading.Lock()
        self._filter_cache: OrderedDict[Any, tuple[Any, list[_Allowed]]] = OrderedDict()
        self._vectors = [SegmentVectors(s) for s in self.segments]
        self.dense_weight = float(snapshot.dense_weight)
        self.dense_dim = next((v.dense.shape[1] for v in self._vectors if v.dense is not None), 0)
        self._probes: list[TokenProbe | None] = [None] * len(self.segments)  # built on first use
        self._id_arrays: list[np.ndarray | None] = [None] * len(self.segments)  # doc ids, for ties
        self._centroid_sets: list[torch.Tensor] = []  # the distinct IVF centroids of the probes
        self._live = _AllowedList(_Allowed(s, ~np.asarray(s.deleted, dtype=bool)) for s in self.segments)
        self.n_live = sum(a.n_allowed for a in self._live)
        self.n_vectors = sum(int(v.offsets[-1]) for v in self._vectors)
        self._groups: tuple[list[SegmentGroup], frozenset[int]] | None = None  # built on first use
        self._reusable = list(reuse or [])  # an earlier snapshot's merged_groups()
        self.columns = self._metadata_columns()
        self._meta_tables = [s.table.select([c for c in s.table.column_names if c not in ("doc_id", "text")])
                             for s in self.segments]

    @cached_property
    def mean_doc_vectors(self) -> float:
        """Stored vectors per live document (the fast path's rerank depth follows it)."""
        return sum(a.n_vectors for a in self._live) / max(self.n_live, 1)

    def warm_up(self) -> None:
        """Load every segment's FAISS index and probe now rather than in the first search."""
        for no in range(len(self.segments)):
            self._probe(no)
        self._segment_groups()

    def _probe(self, no: int) -> TokenProbe:
        """Segment ``no``'s probe, built on first use; probes with equal IVF centroids (one
        trained template) share one tensor, so one coarse step serves them all."""
        probe = self._probes[no]
        if probe is None:  # two threads may both build it: same result, last one kept
            probe = TokenProbe(self.segments[no].faiss_index)
            if probe.centroids is not None:
                with self._lock:
                    same = next((c for c in self._centroid_sets
                                 if c.shape == probe.centroids.shape and torch.equal(c, probe.centroids)), None)
                    if same is None:
                        self._centroid_sets.append(probe.centroids)
                    else:
                        probe.centroids = same
            self._probes[no] = probe
        return probe

    def _segment_groups(self) -> tuple[list[SegmentGroup], frozenset[int]]:
        """Groups of small segments trained from one IVF template, each merged into one FAISS
        index (``segment_groups.form_groups``), and the segment numbers they cover; built once."""
        with self._lock:
            built = self._groups
        if built is not None:
            return built
        probes = [self._probe(no) for no in range(len(self.segments))]
        cores = [core_of(seg) for seg in self.segments]
        groups = [self._group(members, probe) for members, probe in form_groups(cores, probes, self._reusable)]
        built = (groups, frozenset(no for g in groups for no in g.members))
        with self._lock:
            if self._groups is None:
                self._groups = built
                self._reusable = []
            return self._groups

    def _group(self, members: list[int], probe: TokenProbe) -> SegmentGroup:
        keys = np.concatenate([_key(no, self.segments[no].vec_to_doc) for no in members])
        return SegmentGroup(members, probe, keys)

    def merged_groups(self) -> list[tuple[tuple, TokenProbe]]:
        """The built groups as (their segments' cores, merged probe), for a later snapshot's
        searcher (``reuse``), which keeps a group whose segments it all still has."""
        with self._lock:
            built, pending = self._groups, list(self._reusable)
        if built is None:
            return pending
        return [(tuple(core_of(self.segments[no]) for no in g.members), g.probe) for g in built[0]]

    def _group_selector(self, gi: int, group: SegmentGroup, allowed: _AllowedList):
        """(selector, any row allowed) of group ``gi`` under ``allowed``, cached with it."""
        found = allowed.group_selectors.get(gi)
        if found is None:
            found = group.selector([allowed[no] for no in group.members],
                                   [self.segments[no].vec_to_doc for no in group.members])
            allowed.group_selectors[gi] = found
        return found

    def _metadata_columns(self) -> set[str]:
        """The segments' columns (less the text) and every column the manifest says documents
        brought: a filter may name one whose documents are all deleted (it matches nothing)."""
        cols = set(self._manifest_columns)
        for s in self.segments:
            cols.update(c for c in s.table.column_names if c not in ("text",))
        return cols

    @property
    def _manifest_columns(self) -> dict[str, str]:
        return getattr(getattr(self.snapshot, "manifest", None), "columns", {})

    def _filter_table(self, table: pa.Table) -> pa.Table:
        """A segment's table with a null column of the type the index knows for each column it
        lacks or holds only nulls of (its typed documents deleted), so literals stay type-checked."""
        for name in sorted(self.columns.difference(table.column_names)):
            table = table.append_column(name, pa.nulls(table.num_rows, column_type(self._manifest_columns.get(name))))
        for i, field in enumerate(table.schema):
            kind = column_type(self._manifest_columns.get(field.name))
            if pa.types.is_null(field.type) and not pa.types.is_null(kind):
                table = table.set_column(i, field.name, pa.nulls(table.num_rows, kind))
        return table

    # -- allowed documents --------------------------------------------------------------

    def allowed(self, filter) -> list[_Allowed]:
        """Per segment, the live documents ``filter`` (None: all) allows; the latest filters are cached."""
        if filter is None:
            return self._live
        # an Expression's printed form abbreviates long value sets, so two different ones can
        # print alike: a cached entry keeps its Expression and must equal the one asked for
        key = filter if isinstance(filter, str) else ("expression", str(filter))
        with self._lock:
            hit = self._filter_cache.get(key)
            if hit is not None and (isinstance(filter, str) or hit[0].equals(filter)):
                self._filter_cache.move_to_end(key)
                return hit[1]
        condition = as_condition(filter, self.columns)
        if not self.segments:  # nothing to evaluate: a typed empty table still checks the literals' types
            allowed_rows(self._filter_table(pa.schema([pa.field("doc_id", pa.string())]).empty_table()), condition)
        out = _AllowedList([])
        for seg, live in zip(self.segments, self._live):
            mask = as_numpy(allowed_rows(self._filter_table(seg.table), condition))
            out.append(_Allowed(seg, mask & live.docs_mask))
        with self._lock:
            self._filter_cache[key] = (filter, out)
            while len(self._filter_cache) > FILTER_CACHE_SIZE:
                self._filter_cache.popitem(last=False)
        return out

    # -- search -------------------------------------------------------------------------

    def search(self, queries: Sequence[np.ndarray], k: int = 10, filter=None, exhaustive: bool = False,
               config: SearchConfig | None = None, dense: Sequence[np.ndarray | None] | None = None) -> list[list[Hit]]:
        """Top-k hits for each query array [n_q, dim] (and its dense embedding, if given)."""
        check_k(k)
        config = config or SearchConfig()
        qs = [check_query(q, self.dim, i) for i, q in enumerate(queries)]
        if not qs:
            return []
        if dense is not None and len(dense) != len(qs):
            raise InputError(f"{len(qs)} queries but {len(dense)} dense embeddings")
        fuse = dense is not None and self.dense_weight > 0 and self.dense_dim > 0
        qd = [check_dense(d, self.dense_dim, i) for i, d in enumerate(dense)] if fuse else [None] * len(qs)
        allowed = self.allowed(filter)
        n_allowed = sum(a.n_allowed for a in allowed)
        if n_allowed == 0:
            return [[] for _ in qs]
        # a filter allowing few vectors is scored exactly: no worse than token retrieval in time, and exact
        selective = filter is not None and (sum(a.n_vectors for a in allowed) <= config.exact_filter_vectors
                                            or n_allowed <= config.selective_filter_fraction * max(self.n_live, 1))
        if exhaustive or selective or n_allowed <= config.rerank_depth(k, self.mean_doc_vectors):
            with idle_core_threads():  # FAISS and torch on the cores other processes leave idle
                return [self._exact(q, d, allowed, k) for q, d in zip(qs, qd)]
        return self._fast(qs, qd, allowed, k, config)

    def _exact(self, q: np.ndarray, qd: torch.Tensor | None, allowed: list[_Allowed], k: int) -> list[Hit]:
        keys, scores = [], []
        qt = torch.from_numpy(q)
        for no, (vectors, a) in enumerate(zip(self._vectors, allowed)):
            docs = np.nonzero(a.docs_mask)[0]
            if len(docs):
                keys.append(_key(no, docs))
                scores.append(vectors.scores(qt, docs, qd, self.dense_weight))
        return self._top(np.concatenate(keys), np.concatenate(scores), k)

    def _retrieve(self, qs: list[np.ndarray], allowed: list[_Allowed], k_prime: int, nprobe: int):
        """One FAISS call per segment (or merged group) for all query tokens: [n_tokens, k']
        arrays, and per segment number the IVF centroid similarities [nlist, n_tokens] if computed.
        Probes of one centroid set share one coarse step, as wide as the widest of them needs."""
        stacked = np.ascontiguousarray(np.concatenate(qs))
        # (probe, selector, segment numbers, FAISS row ids -> document keys, scan the stored codes)
        searches = []
        groups, grouped = self._segment_groups() if len(self.segments) > 1 else ([], frozenset())
        for gi, group in enumerate(groups):
            selector, any_allowed = self._group_selector(gi, group, allowed)
            if any_allowed:
                searches.append((group.probe, selector, group.members, group.keys.__getitem__, False))
        for no, (seg, a) in enumerate(zip(self.segments, allowed)):
            if a.n_allowed and no not in grouped:
                probe = self._probe(no)
                # (code_scan: faster than FAISS's float32 scan)
                scan = probe.flat and scans_codes(self._vectors[no], a.n_vectors / max(seg.n_vectors, 1))
                searches.append((probe, None if scan else a.selector, [no],
                                 lambda rows, no=no, v=seg.vec_to_doc: _key(no, v[rows]), scan))
        sizes = []  # (k', lists to probe) per search
        widest: dict[int, int] = {}  # per centroid set: the most lists any of its probes scans
        for probe, selector, members, _, _ in searches:
            k = min(k_prime, probe.ntotal)
            # a filter (or deletes) leaves fewer vectors per list: probe more lists for the same k'
            passed = 1.0 if selector is None else sum(allowed[no].n_vectors for no in members) / max(probe.ntotal, 1)
            probed = probe.nprobe_for(k, nprobe, passed)
            sizes.append((k, probed))
            if probe.centroids is not None:
                widest[id(probe.centroids)] = max(widest.get(id(probe.centroids), 0), probed)
        coarse_steps: dict[int, Coarse] = {}
        all_scores, all_keys, centroid_sims = [], [], {}
        for (probe, selector, members, to_keys, scan), (k, probed) in zip(searches, sizes):
            coarse = None
            if probe.centroids is not None:
                step = coarse_steps.get(id(probe.centroids))
                if step is None:
                    step = coarse_steps[id(probe.centroids)] = probe.coarse(stacked, widest[id(probe.centroids)])
                coarse = step.narrowed(probed)
            if scan:
                a = allowed[members[0]]
                dist, ids = top_rows(self._vectors[members[0]], stacked, k, None if a.all_allowed else a.rows)
                sims = None
            else:
                dist, ids, sims = probe.search_with_centroid_scores(stacked, k, probed, selector, coarse)
            valid = ids >= 0
            all_scores.append(np.where(valid, dist, -np.inf).astype(np.float32))
            all_keys.append(np.where(valid, to_keys(np.where(valid, ids, 0)), -1))
            if sims is not None:
                centroid_sims.update(dict.fromkeys(members, sims))
        scores = np.concatenate(all_scores, axis=1)
        keys = np.concatenate(all_keys, axis=1)
        return (*global_top(scores, keys, k_prime), centroid_sims)

    def _fast(self, qs: list[np.ndarray], qd: list[torch.Tensor | None], allowed: list[_Allowed], k: int,
              config: SearchConfig) -> list[list[Hit]]:
        # one FAISS call per group of queries searched alike (per slice of BATCH_TOKENS): short
        # queries search wider, and a batch should not make every token as wide as its widest
        groups: dict[tuple[int, int], list[int]] = {}
        for i, q in enumerate(qs):
            groups.setdefault(config.widened(len(q), self.n_vectors), []).append(i)
        out: list[list[Hit]] = [[] for _ in qs]
        self._fast_groups(groups, qs, qd, allowed, k, config, out)
        # a large k can outnumber the documents token retrieval brings back: such queries search
        # again with k' and nprobe widened to match, and exactly if that still falls short
        want = min(k, sum(a.n_allowed for a in allowed))
        short = [i for i, hits in enumerate(out) if len(hits) < want]
        if short:
            wider: dict[tuple[int, int], list[int]] = {}
            for i in short:
                factor = min(MAX_WIDENING, -(-2 * want // max(len(out[i]), 1)))
                k_prime, nprobe = config.widened(len(qs[i]), self.n_vectors)
                wider.setdefault((k_prime * factor, nprobe * factor), []).append(i)
            self._fast_groups(wider, qs, qd, allowed, k, config, out)
            for i in short:
                if len(out[i]) < want:
                    with idle_core_threads():
                        out[i] = self._exact(qs[i], qd[i], allowed, k)
        return out

    def _fast_groups(self, groups: dict[tuple[int, int], list[int]], qs: list[np.ndarray],
                     qd: list[torch.Tensor | None], allowed: list[_Allowed], k: int, config: SearchConfig,
                     out: list[list[Hit]]) -> None:
        """Search each group of queries with its (k', nprobe), writing their hits into ``out``;
        a large group in slices of about BATCH_TOKENS query tokens (a FAISS call's result arrays
        grow with its tokens times k' times segments)."""
        for (k_prime, nprobe), members in groups.items():
            for part in _token_slices(members, [len(q) for q in qs], BATCH_TOKENS):
                group = [qs[i] for i in part]
                with idle_core_threads():
                    scores, keys, centroid_sims = self._retrieve(group, allowed, k_prime, nprobe)
                    reranked = self._rerank_all(group, [qd[i] for i in part], scores, keys, centroid_sims, k, config)
                for i, hits in zip(part, reranked):
                    out[i] = hits

    def _rerank_all(self, qs, qd, scores, keys, centroid_sims, k: int, config: SearchConfig) -> list[list[Hit]]:
        out, start = [], 0
        for q, d in zip(qs, qd):
            stop = start + q.shape[0]
            views: dict[int, torch.Tensor] = {}  # segments sharing centroids keep sharing one view
            own = {no: views.setdefault(id(sims), sims[:, start:stop]) for no, sims in centroid_sims.items()}
            out.append(self._rerank(q, d, scores[start:stop], keys[start:stop], own, k, config))
            start = stop
        return out

    def _rerank(self, q: np.ndarray, qd: torch.Tensor | None, scores: np.ndarray, keys: np.ndarray,
                centroid_sims: dict[int, torch.Tensor], k: int, config: SearchConfig) -> list[Hit]:
        """XTR-score one query's retrieved tokens, then MaxSim the best candidates exactly.

        With ``imputation="measured"`` the first quarter of the candidates to rerank is picked
        with XTR's imputation; their exact per-token similarities show how far below the floor
        the missing ones lie, and the rest are picked with that gap imputed."""
        table = RetrievedTable(scores, keys)
        cand = table.cand
        n = min(len(cand), config.rerank_depth(k, self.mean_doc_vectors))
        if n == len(cand):
            return self._top(cand, self._exact_scores(q, qd, cand, centroid_sims)[0], k)
        n_first = max(1, int(n * MEASURED_FRACTION)) if config.imputation == "measured" else n
        first = top_indices(table.scores(), n_first)
        exact, maxima = self._exact_scores(q, qd, cand[first], centroid_sims)
        if n_first == n:
            return self._top(cand[first], exact, k)
        approx = table.scores(table.missing_gap(first, maxima))
        approx[first] = -np.inf
        second = top_indices(approx, n - n_first)
        exact_second, _ = self._exact_scores(q, qd, cand[second], centroid_sims)
        return self._top(np.concatenate([cand[first], cand[second]]), np.concatenate([exact, exact_second]), k)

    def _exact_scores(self, q: np.ndarray, qd: torch.Tensor | None, cand: np.ndarray,
                      centroid_sims: dict[int, torch.Tensor]) -> tuple[np.ndarray, np.ndarray]:
        """Exact scores of candidate keys (MaxSim, plus the dense term where it applies) and
        their per-token similarities [n_q, n_cand]."""
        seg_nos, local = _split_keys(cand)
        qt = torch.from_numpy(q)
        if len(cand) and seg_nos.min() == seg_nos.max():  # one segment: no regrouping
            no = int(seg_nos[0])
            maxima = self._vectors[no].token_maxima(qt, local, centroid_sims.get(no))
            exact = maxima.sum(axis=0)
            self._vectors[no].add_dense(exact, qt, local, qd, self.dense_weight)
            return exact, maxima
        maxima = np.empty((q.shape[0], len(cand)), dtype=np.float32)
        groups = [(no, seg_nos == no) for no in np.unique(seg_nos).tolist()]  # (segment number, its candidates)
        joint = None
        if len(groups) > 1:  # one similarity matrix over all the segments, where it applies
            sims = {id(centroid_sims.get(no)) for no, _ in groups}
            shared = centroid_sims.get(groups[0][0]) if len(sims) == 1 else None
            joint = token_maxima_across(qt, [(self._vectors[no], local[sel]) for no, sel in groups], shared)
        for i, (no, sel) in enumerate(groups):
            maxima[:, sel] = joint[i] if joint is not None else \
                self._vectors[no].token_maxima(qt, local[sel], centroid_sims.get(no))
        exact = maxima.sum(axis=0)
        for no, sel in groups:
            part = exact[sel]
            self._vectors[no].add_dense(part, qt, local[sel], qd, self.dense_weight)
            exact[sel] = part
        return exact, maxima

    def _top(self, keys: np.ndarray, scores: np.ndarray, k: int) -> list[Hit]:
        if len(keys) == 0:
            return []
        n = min(k, len(keys))
        top = np.arange(len(keys))
        if n < len(keys):  # documents tied with the n-th score all compete, so a smaller k is a prefix
            top = np.flatnonzero(scores >= scores[np.argpartition(-scores, n - 1)[n - 1]])
        top = top[np.lexsort((keys[top], -scores[top]))]
        ranked = scores[top]
        if len(top) > 1 and bool(np.any(ranked[1:] == ranked[:-1])):
            # equal scores rank by doc id: not by place in the index, which merges and compaction change
            top = top[np.lexsort((self._doc_ids_of(keys[top]), -ranked))]
        top = top[:n]
        seg_nos, local = _split_keys(keys[top])
        doc_ids = [seg.doc_ids for seg in self.segments]
        metadata: list[dict] = [{} for _ in range(n)]
        for no in np.unique(seg_nos):
            table = self._meta_tables[int(no)]
            if table.num_columns == 0:
                continue
            where = np.nonzero(seg_nos == no)[0]
            for i, row in zip(where.tolist(), table.take(arrow_indices(local[where])).to_pylist()):
                metadata[i] = row
        return make_hits([doc_ids[s][d] for s, d in zip(seg_nos.tolist(), local.tolist())], scores[top].tolist(), metadata)

    def _doc_ids_of(self, keys: np.ndarray) -> np.ndarray:
        """The doc ids of ``keys`` as an object array (each segment's made once, when first asked)."""
        seg_nos, local = _split_keys(keys)
        out = np.empty(len(keys), dtype=object)
        for no in np.unique(seg_nos).tolist():
            if self._id_arrays[no] is None:
                self._id_arrays[no] = np.array(self.segments[no].doc_ids, dtype=object)
            where = seg_nos == no
            out[where] = self._id_arrays[no][local[where]]
        return out


def _token_slices(members: list[int], lengths: list[int], budget: int) -> Iterator[list[int]]:
    """``members`` in order, in slices of at most ``budget`` tokens (a longer query alone)."""
    part, tokens = [], 0
    for i in members:
        if part and tokens + lengths[i] > budget:
            yield part
            part, tokens = [], 0
        part.append(i)
        tokens += lengths[i]
    if part:
        yield part
