"""Searcher on random token vectors: fast path vs brute-force MaxSim, filters, deletes, threads."""
from __future__ import annotations

import dataclasses
import threading

import faiss
import numpy as np
import pyarrow as pa
import pytest
import torch

from helpers import unit_token_docs
from xtrieve.config import SearchConfig
from xtrieve.errors import FilterError, InputError
from xtrieve.retrieve import maxsim
from xtrieve.retrieve.maxsim import WIDE_QUERY_TOKENS, Gathered, chunk_maxsim
from xtrieve.retrieve.searcher import Searcher
from xtrieve.types import Hit, make_hits

DIM = 32


class MemorySegment:
    """An in-memory stand-in with the SegmentReader interface."""

    def __init__(self, name, ids, docs, meta, factory="Flat"):
        self.name, self.doc_ids, self.n_docs, self.dim = name, list(ids), len(ids), DIM
        self.vector_counts = np.array([len(d) for d in docs], dtype=np.int64)
        self.offsets = np.zeros(len(docs) + 1, dtype=np.int64)
        np.cumsum([len(d) for d in docs], out=self.offsets[1:])
        vectors = np.concatenate(docs).astype(np.float32)
        self.n_vectors = len(vectors)
        self.vectors_raw = vectors.astype(np.float16)
        self.scales = None
        self.vec_to_doc = np.repeat(np.arange(len(docs), dtype=np.int32), [len(d) for d in docs])
        self.faiss_index = faiss.index_factory(DIM, factory, faiss.METRIC_INNER_PRODUCT)
        if not self.faiss_index.is_trained:
            self.faiss_index.train(vectors)
        self.faiss_index.add(vectors)
        self.table = pa.table({"doc_id": self.doc_ids, **meta})
        self.deleted = np.zeros(len(docs), dtype=bool)

    def metadata(self, local):
        return {c: self.table.column(c)[local].as_py() for c in self.table.column_names if c != "doc_id"}


@dataclasses.dataclass
class Snap:
    segments: list
    dim: int = DIM
    dense_weight: float = 0.0


def random_docs(rng, n, lo=5, hi=40):
    return unit_token_docs(rng, n, DIM, lo, hi)


def brute(query, docs):
    return np.array([(query @ d.astype(np.float16).astype(np.float32).T).max(axis=1).sum() for d in docs])


@pytest.fixture(scope="module")
def corpus():
    rng = np.random.default_rng(0)
    docs = random_docs(rng, 400)
    segs = [
        MemorySegment("a", [f"d{i}" for i in range(250)], docs[:250], {"year": [2000 + i % 30 for i in range(250)]}),
        MemorySegment("b", [f"d{i}" for i in range(250, 400)], docs[250:], {"year": [2000 + i % 30 for i in range(250, 400)]}, factory="IVF16,Flat"),
    ]
    # queries near documents so that top hits are meaningful
    queries = []
    for i in rng.choice(400, 12, replace=False):
        q = docs[i][:8] + 0.3 * rng.standard_normal((min(8, len(docs[i])), DIM)).astype(np.float32)
        queries.append(q / np.linalg.norm(q, axis=1, keepdims=True))
    return docs, segs, queries


def test_exhaustive_matches_brute_force(corpus):
    docs, segs, queries = corpus
    s = Searcher(Snap(segs))
    for q in queries:
        truth = brute(q, docs)
        hits = s.search([q], k=10, exhaustive=True)[0]
        assert [h.doc_id for h in hits] == [f"d{i}" for i in np.argsort(-truth, kind="stable")[:10]]
        assert np.allclose([h.score for h in hits], np.sort(truth)[::-1][:10], atol=1e-3)


def test_exhaustive_scores_are_the_same_in_small_chunks(corpus, monkeypatch):
    from xtrieve.retrieve import maxsim

    _, segs, queries = corpus
    s = Searcher(Snap(segs))
    whole = s.search(queries[:3], k=20, exhaustive=True)
    monkeypatch.setattr(maxsim, "CHUNK_VECTORS", 50)  # a few documents per similarity matrix
    chunked = s.search(queries[:3], k=20, exhaustive=True)
    for a, b in zip(whole, chunked):
        assert [h.doc_id for h in a] == [h.doc_id for h in b]
        assert np.allclose([h.score for h in a], [h.score for h in b], rtol=1e-6)


@pytest.mark.parametrize("float_rows_first", [False, True])
def test_exhaustive_matches_brute_force_for_long_queries(corpus, monkeypatch, float_rows_first):
    # queries of >= WIDE_QUERY_TOKENS tokens take the [n_q, rows] similarity layout, unless this
    # machine's BLAS is faster the other way (both forced here)
    monkeypatch.setattr(maxsim, "float_rows_first", lambda dim: float_rows_first)
    docs, segs, _ = corpus
    s = Searcher(Snap(segs))
    rng = np.random.default_rng(1)
    for n_q in (WIDE_QUERY_TOKENS, 24):
        q = rng.standard_normal((n_q, DIM)).astype(np.float32)
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        truth = brute(q, docs)
        hits = s.search([q], k=10, exhaustive=True)[0]
        assert [h.doc_id for h in hits] == [f"d{i}" for i in np.argsort(-truth, kind="stable")[:10]]
        assert np.allclose([h.score for h in hits], np.sort(truth)[::-1][:10], atol=1e-3)


@pytest.mark.parametrize("float_rows_first", [False, True])
def test_both_similarity_layouts_give_the_same_int8_maxsim(monkeypatch, float_rows_first):
    monkeypatch.setattr(maxsim, "float_rows_first", lambda dim: float_rows_first)
    rng = np.random.default_rng(2)
    lengths = np.array([3, 0, 7, 1, 12])
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    codes = torch.from_numpy(rng.integers(-127, 128, (int(bounds[-1]), DIM)).astype(np.float32))
    scales = torch.from_numpy(rng.uniform(0.001, 0.01, int(bounds[-1])).astype(np.float32))
    full = (codes * scales[:, None]).numpy()
    for n_q in (WIDE_QUERY_TOKENS - 1, WIDE_QUERY_TOKENS + 3):
        q = torch.from_numpy(rng.standard_normal((n_q, DIM)).astype(np.float32))
        got = chunk_maxsim(q, Gathered(codes, scales, None, bounds))
        want = [(q.numpy() @ full[a:b].T).max(axis=1).sum() if b > a else -np.inf for a, b in zip(bounds[:-1], bounds[1:])]
        assert np.allclose(got, want, rtol=1e-5, atol=1e-5)
        assert got[1] == -np.inf


def test_fast_path_agrees_with_exhaustive(corpus):
    docs, segs, queries = corpus
    s = Searcher(Snap(segs))
    cfg = SearchConfig(k_prime=64, n_rerank=50, nprobe=16)
    overlap = []
    for q in queries:
        fast = [h.doc_id for h in s.search([q], k=10, config=cfg)[0]]
        exact = [h.doc_id for h in s.search([q], k=10, exhaustive=True)[0]]
        assert fast[0] == exact[0]
        overlap.append(len(set(fast) & set(exact)) / 10)
    assert np.mean(overlap) >= 0.8


def test_batch_equals_single(corpus):
    _, segs, queries = corpus
    s = Searcher(Snap(segs))
    batch = s.search(queries, k=5)
    for q, hits in zip(queries, batch):
        assert [h.doc_id for h in s.search([q], k=5)[0]] == [h.doc_id for h in hits]


def test_a_large_batch_is_searched_in_slices_of_query_tokens(corpus, monkeypatch):
    from xtrieve.retrieve import searcher

    assert list(searcher._token_slices([0, 1, 2, 3], [5, 5, 20, 1], 10)) == [[0, 1], [2], [3]]
    _, segs, queries = corpus
    s = Searcher(Snap(segs))
    whole = s.search(queries, k=5)
    monkeypatch.setattr(searcher, "BATCH_TOKENS", 2 * max(len(q) for q in queries))
    for a, b in zip(s.search(queries, k=5), whole):
        assert [h.doc_id for h in a] == [h.doc_id for h in b]


def test_warm_up_loads_every_probe_and_changes_no_result(corpus):
    _, segs, queries = corpus
    cold, warm = Searcher(Snap(segs)), Searcher(Snap(segs))
    warm.warm_up()
    assert all(p is not None for p in warm._probes) and all(p is None for p in cold._probes)
    for a, b in zip(warm.search(queries, k=5), cold.search(queries, k=5)):  # (threads follow the machine's
        assert [h.doc_id for h in a] == [h.doc_id for h in b]                # load: scores to float rounding)
        assert [h.score for h in a] == pytest.approx([h.score for h in b], abs=1e-4)


def test_token_maxima_across_segments_equal_per_segment_ones(corpus, monkeypatch):
    from xtrieve.retrieve import maxsim

    _, segs, queries = corpus
    s = Searcher(Snap(segs))
    q = torch.from_numpy(queries[0])
    parts = [(s._vectors[0], np.array([3, 17, 200])), (s._vectors[1], np.array([0, 5, 149, 60]))]
    joint = maxsim.token_maxima_across(q, parts)
    for (vectors, docs), got in zip(parts, joint):
        np.testing.assert_allclose(got, vectors.token_maxima(q, docs), rtol=1e-5)
        np.testing.assert_allclose(got.sum(axis=0), vectors.scores(q, docs, None, 0.0), rtol=1e-5)
    monkeypatch.setattr(maxsim, "CHUNK_VECTORS", 20)  # too many vectors for one matrix: per segment
    assert maxsim.token_maxima_across(q, parts) is None


@pytest.mark.parametrize("storage", ["int8", "int4"])
def test_segments_of_one_template_share_one_coarse_step_and_one_rerank(tmp_path, storage, monkeypatch):
    import xtrieve
    from xtrieve.retrieve import searcher as searcher_module

    rng = np.random.default_rng(5)
    docs = unit_token_docs(rng, 300, DIM, 8, 12)
    cfg = {"flat_max_vectors": 800, "nlist": 16, "docs_per_segment": 100, "vector_storage": storage}
    idx = xtrieve.Index.build_from_embeddings(tmp_path / "ix", [f"d{i}" for i in range(300)], docs, config=cfg)
    assert len(idx.snapshot.segments) == 3
    joint = []
    real = searcher_module.token_maxima_across
    monkeypatch.setattr(searcher_module, "token_maxima_across", lambda *a, **kw: joint.append(real(*a, **kw)) or joint[-1])
    for i, n_q in ((7, 5), (142, 5), (251, 5), (42, WIDE_QUERY_TOKENS + 2)):  # both similarity layouts
        q = np.concatenate([docs[i], docs[i]])[:n_q]
        fast = idx.search(q, k=10, config={"k_prime": 200, "n_rerank": 100, "nprobe": 16, "rerank_reference_vectors": 0})
        exact = idx.search(q, k=10, exhaustive=True)  # per segment: the reference
        assert fast[0].doc_id == f"d{i}"
        got = {h.doc_id: h.score for h in fast}
        assert len(set(got) & {h.doc_id for h in exact}) >= 9
        for h in exact:
            if h.doc_id in got:
                assert got[h.doc_id] == pytest.approx(h.score, rel=1e-5, abs=1e-5)
    assert joint and all(j is not None for j in joint)
    s = idx._get_searcher()
    assert len(s._centroid_sets) == 1 and len({id(p.centroids) for p in s._probes}) == 1


def test_segments_of_one_template_probing_different_widths_share_one_coarse_step(tmp_path, monkeypatch):
    """Unmerged segments of one template whose sizes call for different nprobe: one coarse step
    as wide as the widest, each segment scanning its own best lists of it, same hits as separate
    coarse steps."""
    import xtrieve
    from xtrieve.retrieve import probe as probe_module
    from xtrieve.retrieve import segment_groups

    monkeypatch.setattr(segment_groups, "MAX_SEGMENT_VECTORS", 0)  # every segment searched alone
    rng = np.random.default_rng(8)
    docs = unit_token_docs(rng, 260, DIM, 8, 12)
    cfg = {"flat_max_vectors": 800, "nlist": 16, "docs_per_segment": 200}
    idx = xtrieve.Index.build_from_embeddings(tmp_path / "ix", [f"d{i}" for i in range(260)], docs, config=cfg)
    assert len(idx.snapshot.segments) == 2
    s = idx._get_searcher()
    search_cfg = SearchConfig(k_prime=150, n_rerank=40, nprobe=2, rerank_reference_vectors=0)  # (a fixed depth)
    probes = [s._probe(no) for no in range(2)]
    assert probes[0].centroids is probes[1].centroids
    assert len({p.nprobe_for(min(150, p.ntotal), 2) for p in probes}) == 2  # different widths
    widths = []
    real = probe_module.TokenProbe.coarse
    monkeypatch.setattr(probe_module.TokenProbe, "coarse", lambda self, q, n: widths.append(n) or real(self, q, n))
    queries = [np.concatenate([docs[i], docs[i + 1]])[:9] for i in (3, 90, 230)]
    shared = s.search(queries, k=10, config=search_cfg)
    assert len(widths) == 1 and widths[0] == max(p.nprobe_for(min(150, p.ntotal), 2) for p in probes)
    probes[1].centroids = probes[1].centroids.clone()  # no longer shared: a coarse step each
    assert s.search(queries, k=10, config=search_cfg) == shared
    assert len(widths) == 3


def test_short_queries_search_wider_alone_and_in_a_batch(corpus):
    docs, _, _ = corpus
    rng = np.random.default_rng(3)
    seg = MemorySegment("ivf", [f"d{i}" for i in range(400)], docs, {"year": [2000] * 400}, factory="IVF32,Flat")
    s = Searcher(Snap([seg]))
    narrow, wide = SearchConfig(k_prime=4, n_rerank=8, nprobe=1, short_query_tokens=0), SearchConfig(k_prime=4, n_rerank=8, nprobe=1)
    found = {"narrow": 0, "wide": 0}
    singles = [docs[i][:1] + 0.2 * rng.standard_normal((1, DIM)).astype(np.float32) for i in rng.choice(400, 20, replace=False)]
    singles = [q / np.linalg.norm(q, axis=1, keepdims=True) for q in singles]
    for q in singles:
        truth = f"d{int(np.argmax(brute(q, docs)))}"
        found["narrow"] += s.search([q], k=1, config=narrow)[0][0].doc_id == truth
        found["wide"] += s.search([q], k=1, config=wide)[0][0].doc_id == truth
    assert found["wide"] == len(singles) and found["wide"] > found["narrow"]
    # a batch mixing 1-token and 8-token queries gives each query its own single-query result
    mixed = [x for pair in zip(singles[:6], corpus[2][:6]) for x in pair]
    batch = s.search(mixed, k=5, config=wide)
    for q, hits in zip(mixed, batch):
        assert [h.doc_id for h in s.search([q], k=5, config=wide)[0]] == [h.doc_id for h in hits]


def test_a_large_k_gets_k_hits_with_exact_scores(corpus, monkeypatch):
    """Token retrieval that brings back fewer than k documents searches again wider, then
    exactly; every hit keeps its exact MaxSim score."""
    import xtrieve.retrieve.searcher as searcher_module

    docs, _, queries = corpus
    seg = MemorySegment("ivf", [f"d{i}" for i in range(400)], docs, {"year": [2000] * 400}, factory="IVF32,Flat")
    s = Searcher(Snap([seg]))
    narrow = SearchConfig(k_prime=2, n_rerank=8, nprobe=1)
    truth = {f"d{i}": score for i, score in enumerate(brute(queries[0], docs))}
    calls = []
    exact = s._exact
    monkeypatch.setattr(s, "_exact", lambda *a: calls.append(1) or exact(*a))
    for k, max_widening in ((150, 16), (150, 1)):  # widened enough; not widened at all
        monkeypatch.setattr(searcher_module, "MAX_WIDENING", max_widening)
        hits = s.search([queries[0]], k=k, config=narrow)[0]
        assert len(hits) == k and len({h.doc_id for h in hits}) == k
        assert all(abs(h.score - truth[h.doc_id]) < 1e-3 for h in hits)
    assert len(calls) == 1  # only the unwidened search fell back to scoring every document
    assert [h.doc_id for h in hits] == [h.doc_id for h in s.search([queries[0]], k=k, exhaustive=True)[0]]


def test_filters_and_deletes(corpus):
    docs, segs, queries = corpus
    segs = [MemorySegment(s.name, s.doc_ids, docs[:250] if s.name == "a" else docs[250:], {"year": s.table.column("year").to_pylist()}) for s in segs]
    top = Searcher(Snap(segs)).search([queries[0]], k=3, exhaustive=True)[0][0].doc_id
    n = int(top[1:])
    seg = segs[0] if n < 250 else segs[1]
    seg.deleted[n if n < 250 else n - 250] = True
    s = Searcher(Snap(segs))
    for exhaustive in (False, True):
        assert top not in [h.doc_id for h in s.search([queries[0]], k=50, exhaustive=exhaustive)[0]]
        hits = s.search([queries[0]], k=10, filter="year >= 2025", exhaustive=exhaustive,
                        config=SearchConfig(exact_filter_vectors=0))[0]  # (the fast path, through a selector)
        assert hits and all(h.metadata["year"] >= 2025 for h in hits)
    # a selective filter (one year of 30, one doc) is scored directly
    hits = s.search([queries[1]], k=10, filter="year == 2003 and doc_id == 'd3'")[0]
    assert [h.doc_id for h in hits] == ["d3"]
    with pytest.raises(FilterError, match="unknown column"):
        s.search([queries[0]], k=5, filter="colour == 'red'")


def test_filters_allowing_few_vectors_are_scored_exactly(corpus, monkeypatch):
    docs, segs, queries = corpus
    s = Searcher(Snap(segs))
    n_vectors = sum(len(d) for i, d in enumerate(docs) if 2000 + i % 30 >= 2020)  # a third of the docs
    want = s.search([queries[0]], k=10, filter="year >= 2020", exhaustive=True)[0]
    paths = []
    real_fast, real_exact = Searcher._fast, Searcher._exact
    monkeypatch.setattr(Searcher, "_fast", lambda self, *a, **kw: paths.append("fast") or real_fast(self, *a, **kw))
    monkeypatch.setattr(Searcher, "_exact", lambda self, *a, **kw: paths.append("exact") or real_exact(self, *a, **kw))

    def path(**config):
        paths.clear()
        hits = s.search([queries[0]], k=10, filter="year >= 2020", config=SearchConfig(rerank_reference_vectors=0, **config))[0]
        return paths[0], hits

    assert path(exact_filter_vectors=n_vectors) == ("exact", want)
    assert path(exact_filter_vectors=n_vectors - 1)[0] == "fast"
    assert path(exact_filter_vectors=0, selective_filter_fraction=0.5)[0] == "exact"


def test_expression_filters_that_print_alike_are_not_confused(corpus):
    import pyarrow.compute as pc

    docs, segs, queries = corpus
    s = Searcher(Snap(segs))
    ids = [f"d{i}" for i in range(60)]
    first, second = ids[:50], ids[:10] + ids[50:60] + ids[40:50]  # same first and last ten: print alike
    for allow in (first, second):
        expr = pc.field("doc_id").isin(allow)
        hits = s.search([queries[0]], k=100, filter=expr, exhaustive=True)[0]
        assert sorted(h.doc_id for h in hits) == sorted(allow)


def test_bad_queries(corpus):
    _, segs, queries = corpus
    s = Searcher(Snap(segs))
    with pytest.raises(InputError, match="dimension"):
        s.search([np.ones((3, DIM + 1), np.float32)])
    with pytest.raises(InputError, match="shape"):
        s.search([np.ones((0, DIM), np.float32)])
    with pytest.raises(InputError, match="k must be"):
        s.search([queries[0]], k=0)
    with pytest.raises(InputError, match="NaN"):
        s.search([np.full((2, DIM), np.nan, np.float32)])
    with pytest.raises(InputError, match="complex"):
        s.search([queries[0].astype(np.complex64)])
    with pytest.raises(InputError, match="too large"):  # its scores would overflow float32
        s.search([queries[0] * 1e37])
    grad = torch.from_numpy(queries[0]).requires_grad_()  # a tensor from a model: used as its values
    assert s.search([grad], k=3)[0] == s.search([queries[0]], k=3)[0]
    for wrong in (None, 3.5, b"bytes"):
        with pytest.raises(InputError, match=f"expected a text or a .*got {type(wrong).__name__}"):
            s.search([wrong])


@pytest.mark.parametrize("exhaustive", [True, False])
def test_tied_documents_keep_one_order_whatever_k(exhaustive):
    rng = np.random.default_rng(5)
    doc = random_docs(rng, 1)[0]
    seg = MemorySegment("a", [f"d{i:03d}" for i in range(300)], [doc] * 300, {})
    s = Searcher(Snap([seg]))
    ranked = {k: [h.doc_id for h in s.search([doc[:4]], k=k, exhaustive=exhaustive)[0]] for k in (5, 17, 64)}
    assert ranked[5] == ranked[17][:5] == ranked[64][:5] and ranked[17] == ranked[64][:17]
    if exhaustive:  # ties go by order of insertion (the fast path: among the candidates it found)
        assert ranked[5] == [f"d{i:03d}" for i in range(5)]


def test_threads_share_a_searcher(corpus):
    _, segs, queries = corpus
    s = Searcher(Snap(segs))
    expected = [[h.doc_id for h in s.search([q], k=5)[0]] for q in queries]
    errors = []

    def work():
        for q, want in zip(queries, expected):
            if [h.doc_id for h in s.search([q], k=5, filter="year >= 2000")[0]] != want:
                errors.append("mismatch")

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_make_hits_builds_the_same_frozen_hits_as_the_constructor():
    hits = make_hits(["a", "b"], [2.0, 1.0], [{"year": 2020}, {}])
    assert hits == [Hit("a", 2.0, {"year": 2020}), Hit(doc_id="b", score=1.0)]
    assert repr(hits[0]) == repr(Hit("a", 2.0, {"year": 2020}))
    with pytest.raises(dataclasses.FrozenInstanceError):
        hits[0].score = 3.0


def test_a_filter_widens_the_probe_of_the_segments_it_thins(corpus, monkeypatch):
    from xtrieve.retrieve.probe import TokenProbe

    _, segs, queries = corpus
    s = Searcher(Snap([segs[1]]))  # IVF16: ~220 vectors a list
    probed = []
    real = TokenProbe.search_with_centroid_scores
    monkeypatch.setattr(TokenProbe, "search_with_centroid_scores",
                        lambda self, q, k, nprobe, *a, **kw: probed.append(nprobe) or real(self, q, k, nprobe, *a, **kw))
    config = SearchConfig(exact_filter_vectors=0, k_prime=200, nprobe=1, n_rerank=10)
    s.search([queries[0]], k=10, config=config)
    s.search([queries[0]], k=10, filter="year < 2008", config=config)  # 8 years of 30
    assert probed[0] >= 2 and probed[1] >= 3 * probed[0]


def test_float_layout_probe_answers_once_per_dimension_and_thread_count():
    maxsim._measured_rows_first.cache_clear()
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        first = maxsim.float_rows_first(DIM)
        assert isinstance(first, bool)
        assert maxsim.float_rows_first(DIM) is first  # measured once: searches keep one layout
        assert maxsim._measured_rows_first.cache_info().misses == 1
        torch.set_num_threads(2)  # a search on more threads measures again
        assert isinstance(maxsim.float_rows_first(DIM), bool)
        assert maxsim._measured_rows_first.cache_info().misses == 2
    finally:
        torch.set_num_threads(before)
