"""Small segments of one IVF template, searched through one merged FAISS index."""
from __future__ import annotations

import numpy as np
import pytest

import xtrieve
from helpers import unit_token_docs
from xtrieve.retrieve import segment_groups

DIM = 32
N_DOCS = 300
CFG = {"flat_max_vectors": 800, "nlist": 16, "docs_per_segment": 100}
SEARCH = {"k_prime": 200, "n_rerank": 100, "nprobe": 16, "exact_filter_vectors": 0}  # filters: the fast path too


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    rng = np.random.default_rng(11)
    docs = unit_token_docs(rng, N_DOCS, DIM, 8, 12)
    meta = [{"year": 2000 + i % 10} for i in range(N_DOCS)]
    path = tmp_path_factory.mktemp("groups") / "ix"
    idx = xtrieve.Index.build_from_embeddings(path, [f"d{i}" for i in range(N_DOCS)], docs, metadata=meta, config=CFG)
    assert len(idx.snapshot.segments) == 3
    return idx, docs


def one_by_one(idx):
    """A fresh searcher of the same snapshot that searches every segment alone."""
    from xtrieve.retrieve.searcher import Searcher

    s = Searcher(idx.snapshot)
    s._groups = ([], frozenset())
    return s


def assert_same_hits(grouped, single):
    assert grouped[0].doc_id == single[0].doc_id
    got = {h.doc_id: h.score for h in grouped}
    assert len(got.keys() & {h.doc_id for h in single}) >= len(single) - 1  # a tie at the k' boundary at most
    for h in single:
        if h.doc_id in got:
            assert got[h.doc_id] == pytest.approx(h.score, rel=1e-6)


def test_segments_of_one_template_are_searched_as_one_index_with_the_same_hits(index):
    idx, docs = index
    s = idx._get_searcher()
    sizes = [p.ntotal for p in (s._probe(no) for no in range(3))]
    groups, grouped = s._segment_groups()
    assert [g.members for g in groups] == [[0, 1, 2]] and grouped == {0, 1, 2}
    assert groups[0].probe.ntotal == sum(sizes) and groups[0].probe.centroids is s._probes[0].centroids
    assert [p.ntotal for p in s._probes] == sizes  # the segments' own indexes keep their vectors
    single = one_by_one(idx)
    for i in (3, 120, 250, 299):
        q = docs[i][:6]
        hits = s.search([q], k=10, config=xtrieve.SearchConfig(**SEARCH))[0]
        assert hits[0].doc_id == f"d{i}"
        assert_same_hits(hits, single.search([q], k=10, config=xtrieve.SearchConfig(**SEARCH))[0])


def test_a_group_honours_deletes_and_filters(index, tmp_path):
    import shutil

    idx, docs = index
    shutil.copytree(idx.path, tmp_path / "ix")  # the module's index stays as built
    idx = xtrieve.Index.open(tmp_path / "ix")
    gone = ["d5", "d150", "d151", "d260"]
    idx.delete(gone)
    s = idx._get_searcher()
    assert s._segment_groups()[0]
    single = one_by_one(idx)
    cfg = xtrieve.SearchConfig(**SEARCH)
    for i in (5, 150, 260):
        hits = idx.search(docs[i][:6], k=20, config=cfg)
        assert not {h.doc_id for h in hits} & set(gone)
        assert_same_hits(hits, single.search([docs[i][:6]], k=20, config=cfg)[0])
        broad = idx.search(docs[i][:6], k=20, filter="year >= 2002", config=cfg)
        assert broad and all(h.metadata["year"] >= 2002 for h in broad) and not {h.doc_id for h in broad} & set(gone)
        assert_same_hits(broad, single.search([docs[i][:6]], k=20, filter="year >= 2002", config=cfg)[0])
    idx.add_embeddings(["d5"], [docs[5]], metadata=[{"year": 2005}])  # back, in a new segment
    assert idx.search(docs[5][:6], k=1, config=cfg)[0].doc_id == "d5"


def test_large_segments_are_searched_alone(index, monkeypatch):
    idx, docs = index
    monkeypatch.setattr(segment_groups, "MAX_SEGMENT_VECTORS", 10)
    s = one_by_one(idx)
    s._groups = None
    assert s._segment_groups() == ([], frozenset())
    assert s.search([docs[42][:6]], k=5, config=xtrieve.SearchConfig(**SEARCH))[0][0].doc_id == "d42"


def test_indexes_of_other_templates_do_not_merge():
    import faiss

    rng = np.random.default_rng(3)
    x = rng.standard_normal((2000, DIM)).astype(np.float32)
    a = faiss.index_factory(DIM, "IVF8,PQ16x4fs", faiss.METRIC_INNER_PRODUCT)
    b = faiss.index_factory(DIM, "IVF8,PQ16x4fs", faiss.METRIC_INNER_PRODUCT)
    a.train(x)
    b.train(x[::-1].copy())
    assert segment_groups.trained_state(a) != segment_groups.trained_state(b)
    assert segment_groups.trained_state(faiss.clone_index(a)) == segment_groups.trained_state(a)
    assert segment_groups.trained_state(faiss.IndexFlatIP(DIM)) is None


def test_segments_whose_merge_would_overrun_faiss_buffers_are_left_out():
    import faiss

    rng = np.random.default_rng(0)
    x = rng.standard_normal((3000, DIM)).astype(np.float32)
    template = faiss.index_factory(DIM, "IVF16,PQ8x4fs", faiss.METRIC_INNER_PRODUCT)
    template.train(x[:1000])
    parts = []
    for start in range(0, 3000, 650):
        part = faiss.clone_index(template)
        part.add(x[start:start + 650])
        parts.append(part)
    block = faiss.downcast_InvertedLists(faiss.extract_index_ivf(parts[0]).invlists).block_size
    chosen = segment_groups.safe_to_merge(parts, list(range(len(parts))))
    assert chosen[0] == 0 and len(chosen) < len(parts)  # this data has lists that would overrun
    total = np.zeros(16, dtype=np.int64)
    for no in chosen:  # no append lands on a list whose length is a non-zero multiple of the block
        sizes = segment_groups.list_sizes(parts[no])
        assert not np.any((total > 0) & (total % block == 0) & (sizes > 0))
        total += sizes
    merged = segment_groups.merged_probe([parts[no] for no in chosen], None)
    assert merged is None or merged.ntotal == int(total.sum())
    plain = faiss.index_factory(DIM, "IVF4,Flat", faiss.METRIC_INNER_PRODUCT)
    assert segment_groups.safe_to_merge([plain, plain], [3, 5]) == [3, 5]  # plain inverted lists: no such case


def test_a_refresh_keeps_unchanged_groups_and_groups_as_a_fresh_reader_does(tmp_path):
    rng = np.random.default_rng(12)
    docs = unit_token_docs(rng, 320, DIM, 8, 12)
    idx = xtrieve.Index.build_from_embeddings(tmp_path / "ix", [f"d{i}" for i in range(300)], docs[:300], config=CFG)
    first = idx._get_searcher()
    (group,), _ = first._segment_groups()
    old_centroids = group.probe.centroids
    idx.delete(["d7"])
    after_delete = idx._get_searcher()
    assert after_delete is not first
    (same,), _ = after_delete._segment_groups()
    assert same.probe.index is group.probe.index and same.members == group.members  # no merge on a delete
    # the earlier snapshot's probe is left as it was: its searches may still be running
    assert group.probe.centroids is old_centroids and same.probe.centroids is after_delete._probe(0).centroids
    assert "d7" not in {h.doc_id for h in idx.search(docs[7][:6], k=10)}
    idx.delete(["d9"])
    idx._get_searcher()  # a searcher that never searches hands the groups on as it got them
    idx.delete(["d10"])
    assert idx._get_searcher()._segment_groups()[0][0].probe.index is group.probe.index
    def members(index):
        return [g.members for g in index._get_searcher()._segment_groups()[0]]

    for i in (300, 301, 302):  # a reader that refreshed after each add groups as one opened afresh
        idx.add_embeddings([f"n{i}"], [docs[i]])
        with xtrieve.Index.open(tmp_path / "ix") as fresh:
            assert members(idx) == members(fresh)
            for j in (i, 42):
                assert [(h.doc_id, h.score) for h in idx.search(docs[j][:6], k=5, config=SEARCH)] == \
                    [(h.doc_id, h.score) for h in fresh.search(docs[j][:6], k=5, config=SEARCH)]
    assert idx.search(docs[301][:6], k=1, config=SEARCH)[0].doc_id == "n301"


def test_threads_searching_a_fresh_snapshot_agree(index):
    import threading

    idx, docs = index
    queries = [docs[i][:6] for i in range(0, N_DOCS, 25)]
    want = [[h.doc_id for h in hits] for hits in one_by_one(idx).search(queries, k=5, config=xtrieve.SearchConfig(**SEARCH))]
    fresh = xtrieve.Index.open(idx.path)  # groups get built by whichever thread searches first
    got, errors = {}, []

    def work(t):
        try:
            got[t] = [[h.doc_id for h in fresh.search(q, k=5, config=SEARCH)] for q in queries]
        except Exception as exc:  # reported below: a thread's failure must fail the test
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(got) == 4
    for results in got.values():
        assert [r[0] for r in results] == [w[0] for w in want]
