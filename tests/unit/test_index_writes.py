"""Index stage: add, delete, compact, tiered merges, streaming segments."""
from __future__ import annotations

import json

import numpy as np
import pytest

import xtrieve
from helpers import unit_token_docs
from xtrieve.config import IndexConfig
from xtrieve.index.manifest import SegmentEntry
from xtrieve.index.merge_policy import plan_merge

DIM = 8


def rand_docs(n, rng, lo=2, hi=6):
    return unit_token_docs(rng, n, DIM, lo, hi)


def manifest(path):
    return json.loads((path / "manifest.json").read_text())


def seg_files(path):
    return {p.relative_to(path).as_posix(): p.stat().st_mtime_ns for p in path.glob("seg-*/*")}


@pytest.fixture
def built(tmp_path):
    rng = np.random.default_rng(0)
    docs = rand_docs(40, rng)
    idx = xtrieve.Index.build_from_embeddings(tmp_path / "ix", [f"d{i}" for i in range(40)], docs,
                                              [{"n": i} for i in range(40)], config={"merge_factor": 4})
    return idx, docs, rng


def test_add_makes_a_new_segment_without_rewriting(built, tmp_path):
    idx, _, rng = built
    before = seg_files(tmp_path / "ix")
    idx.add_embeddings(["a1", "a2"], rand_docs(2, rng))
    after = seg_files(tmp_path / "ix")
    assert all(after[k] == v for k, v in before.items())  # old files untouched
    assert len(after) == len(before) + 3
    assert idx.info().n_segments == 2 and len(idx) == 42
    assert manifest(tmp_path / "ix")["generation"] == 2


def test_delete_tombstones_then_compact(built, tmp_path):
    idx, docs, _ = built
    assert idx.delete(["d3", "d5", "d3"]) == 2
    info = idx.info()
    assert (info.n_docs, info.n_deleted) == (38, 2)
    hits = idx.search(docs[3], k=40, exhaustive=True)
    assert "d3" not in {h.doc_id for h in hits} and len(hits) == 38
    m = manifest(tmp_path / "ix")
    tomb = m["segments"][0]["tombstones"]
    assert len(tomb) == 1 and next(iter(tomb)).endswith("deleted-g000002.arrow")
    idx.delete(["d7"])  # a new tombstone file, the old one becomes garbage
    tomb2 = manifest(tmp_path / "ix")["segments"][0]["tombstones"]
    assert set(tomb2) != set(tomb)
    idx.compact()
    info = idx.info()
    assert (info.n_docs, info.n_deleted, info.n_segments) == (37, 0, 1)
    assert not list((tmp_path / "ix").glob("seg-*/deleted-*"))
    assert len(list((tmp_path / "ix").glob("seg-*"))) == 1
    assert idx.search(docs[10], k=1, exhaustive=True)[0].doc_id == "d10"
    assert idx.search(docs[10], k=1)[0].metadata == {"n": 10}


def test_deleted_id_can_be_added_again(built):
    idx, _, rng = built
    idx.delete(["d1"])
    idx.add_embeddings(["d1"], rand_docs(1, rng))
    assert len(idx) == 40


def test_delete_whole_segment_drops_it(built):
    idx, _, rng = built
    idx.add_embeddings(["z1", "z2"], rand_docs(2, rng))
    idx.delete(["z1", "z2"])
    assert idx.info().n_segments == 1 and len(idx) == 40


def test_delete_unknown_ids_changes_nothing(built, tmp_path):
    idx, _, _ = built
    gen = manifest(tmp_path / "ix")["generation"]
    with pytest.raises(xtrieve.InputError, match="not in the index: 'nope'"):
        idx.delete(["d1", "nope"])
    assert manifest(tmp_path / "ix")["generation"] == gen and len(idx) == 40
    assert idx.delete(["d1", "nope"], missing_ok=True) == 1 and len(idx) == 39
    assert idx.delete(["d1", "nope"], missing_ok=True) == 0  # nothing live: nothing written
    assert idx.delete([], missing_ok=True) == 0  # an empty list of ids to remove: nothing to do
    with pytest.raises(xtrieve.InputError, match="no ids to delete"):
        idx.delete([])
    assert manifest(tmp_path / "ix")["generation"] == gen + 1


def test_tiered_merge_after_adds(built, tmp_path):
    idx, _, rng = built
    for r in range(3):  # 3 small segments + the first big one: different tiers
        idx.add_embeddings([f"s{r}-{i}" for i in range(3)], rand_docs(3, rng, 3, 4))
    assert idx.info().n_segments == 4
    idx.add_embeddings(["s3-0", "s3-1", "s3-2"], rand_docs(3, rng, 3, 4))  # 4th small one: merge
    info = idx.info()
    assert info.n_segments == 2 and len(idx) == 52
    assert all(idx.snapshot.lookup(f"s{r}-{i}") for r in range(4) for i in range(3))


def test_plan_merge():
    def seg(i, n_vectors, n_docs=10, deleted=0):
        return SegmentEntry(name=f"seg-{i}", n_docs=n_docs, n_tokens=n_vectors, n_vectors=n_vectors, faiss="Flat",
                            files={}, n_deleted=deleted)

    assert plan_merge([seg(0, 100), seg(1, 120), seg(2, 5000)], 3, 1000) is None
    assert plan_merge([seg(0, 100), seg(1, 120), seg(2, 5000), seg(3, 110)], 3, 1000) == [0, 1, 3]
    assert plan_merge([seg(0, 100), seg(1, 120), seg(3, 110)], 3, 25) is None  # too many docs together
    assert plan_merge([seg(0, 50), seg(1, 40), seg(2, 60)], 2, 1000) == [0, 1]
    assert plan_merge([seg(0, 30), seg(1, 40), seg(2, 50)], 2, 1000) == [0, 1]  # of about one size
    assert plan_merge([seg(0, 10), seg(1, 40), seg(2, 50)], 2, 1000) == [1, 2]  # 10 is a level lower
    # segments of one size on both sides of 8^4 vectors are one group (fixed tiers split them in two)
    assert plan_merge([seg(i, 4096 + (-1) ** i * (10 + i)) for i in range(8)], 8, 1000) == list(range(8))
    assert plan_merge([seg(i, 4096 + (-1) ** i * (10 + i)) for i in range(7)] + [seg(7, 60)], 8, 1000) is None
    # a segment with over a third of its documents deleted and no full tier is rewritten alone
    assert plan_merge([seg(0, 5000, 100, deleted=30), seg(1, 100)], 8, 1000) is None
    assert plan_merge([seg(0, 5000, 100, deleted=40), seg(1, 100), seg(2, 900, 30, deleted=20)], 8, 1000) == [0]
    assert plan_merge([seg(0, 12, 3, deleted=2), seg(1, 100)], 8, 1000) is None  # small ones wait for their tier


def test_streaming_build_splits_segments(tmp_path):
    rng = np.random.default_rng(1)
    cfg = IndexConfig(batch_size=7, docs_per_segment=25, merge_factor=50)
    idx = xtrieve.Index.build_from_embeddings(tmp_path / "ix", [str(i) for i in range(60)], rand_docs(60, rng), config=cfg)
    assert [s.n_docs for s in idx.snapshot.segments] == [25, 25, 10]
    assert [s.doc_ids[0] for s in idx.snapshot.segments] == ["0", "25", "50"]
    idx.compact()  # compact never exceeds docs_per_segment
    assert [s.n_docs for s in idx.snapshot.segments] == [25, 25, 10]




def test_add_with_replace_swaps_documents_in_one_commit(built, tmp_path):
    idx, docs, rng = built
    gen = manifest(tmp_path / "ix")["generation"]
    new = rand_docs(2, rng)
    assert idx.add_embeddings(["d3", "n1"], new, [{"n": 103}, {"n": 200}], replace=True) == ["d3", "n1"]
    assert manifest(tmp_path / "ix")["generation"] == gen + 1  # tombstone and new segment: one commit
    assert len(idx) == 41 and idx.info().n_deleted == 1
    top = idx.search(new[0], k=1, exhaustive=True)[0]
    assert (top.doc_id, top.metadata) == ("d3", {"n": 103})
    assert "d3" not in [h.doc_id for h in idx.search(docs[3], k=1, exhaustive=True)]  # the old version is gone
    reopened = xtrieve.Index.open(tmp_path / "ix")
    assert reopened.get("d3")["n"] == 103 and len(reopened) == 41


def test_add_of_a_live_id_without_replace_changes_nothing(built, tmp_path):
    idx, _, rng = built
    gen = manifest(tmp_path / "ix")["generation"]
    with pytest.raises(xtrieve.InputError, match=r"already in the index: 'd3'.*replace=True"):
        idx.add_embeddings(["n1", "d3"], rand_docs(2, rng))
    with pytest.raises(xtrieve.InputError, match="duplicate id.*in the input"):
        idx.add_embeddings(["d3", "d3"], rand_docs(2, rng), replace=True)
    with pytest.raises(xtrieve.InputError, match="replace must be True or False"):
        idx.add_embeddings(["d3"], rand_docs(1, rng), replace="yes")
    assert manifest(tmp_path / "ix")["generation"] == gen and len(idx) == 40


def test_replace_that_fails_to_commit_keeps_the_old_documents(built, tmp_path, monkeypatch):
    import xtrieve.index.writer as writer

    idx, docs, rng = built

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(writer, "write_manifest", full_disk)
    with pytest.raises(OSError):
        idx.add_embeddings(["d3"], rand_docs(1, rng), [{"n": 103}], replace=True)
    monkeypatch.undo()
    reopened = xtrieve.Index.open(tmp_path / "ix")
    assert len(reopened) == 40 and reopened.get("d3")["n"] == 3
    assert reopened.search(docs[3], k=1, exhaustive=True)[0].doc_id == "d3"
    reopened.add_embeddings(["n1"], rand_docs(1, rng))  # the next writer removes the orphaned files
    assert not [p for p in (tmp_path / "ix").glob("seg-*/deleted-*")]


def test_contains_filters_search_and_delete_across_segments(tmp_path):
    rng = np.random.default_rng(3)
    docs = rand_docs(30, rng)
    meta = [{"tags": ["a", "b"] if i % 3 == 0 else ["c"], "title": f"note {i}"} for i in range(30)]
    idx = xtrieve.Index.build_from_embeddings(tmp_path / "ix", [f"d{i}" for i in range(20)], docs[:20], metadata=meta[:20])
    idx.add_embeddings([f"d{i}" for i in range(20, 30)], docs[20:], meta[20:])  # a second segment
    for exhaustive in (False, True):
        hits = idx.search(docs[0], k=30, filter="tags contains 'a' and not title contains 'note 2'", exhaustive=exhaustive)
        assert sorted(h.doc_id for h in hits) == ["d0", "d12", "d15", "d18", "d3", "d6", "d9"]
    assert idx.delete(filter="tags contains 'c'") == 20 and len(idx) == 10
    with pytest.raises(xtrieve.FilterError, match="column 'title' holds string values: 'contains' looks for a text in it, not 1.5"):
        idx.search(docs[0], k=3, filter="doc_id is null or title contains 1.5")


def test_delete_by_filter(built, tmp_path):
    idx, docs, rng = built
    idx.add_embeddings(["x1", "x2"], rand_docs(2, rng), [{"n": 5, "tag": "a"}, {"n": 50, "tag": "b"}])
    assert idx.delete(filter="n < 5 or tag == 'b'") == 6  # d0..d4 and x2
    assert len(idx) == 36 and idx.get("d4") is None and idx.get("x2") is None and idx.get("x1") is not None
    import pyarrow.compute as pc

    assert idx.delete(filter=pc.field("n") >= 39) == 1 and idx.get("d39") is None
    gen = manifest(tmp_path / "ix")["generation"]
    assert idx.delete(filter="n > 1000") == 0  # nothing matched: nothing written
    assert manifest(tmp_path / "ix")["generation"] == gen
    with pytest.raises(xtrieve.FilterError, match="nope"):
        idx.delete(filter="nope == 1")
    with pytest.raises(xtrieve.InputError, match="ids or a filter, not both"):
        idx.delete(["d10"], filter="n == 10")
    with pytest.raises(xtrieve.InputError, match="iterable of ids.*filter="):
        idx.delete()
    assert len(idx) == 35 and manifest(tmp_path / "ix")["generation"] == gen
    idx.delete(filter="n >= 0 or n is null")
    assert len(idx) == 0
    with pytest.raises(xtrieve.FilterError, match="nope"):  # an empty index still checks the filter
        idx.delete(filter="nope == 1")


def test_segments_a_commit_drops_close_their_files(tmp_path):
    """A token index file stays open for the readers of a segment, and is closed with the last
    of them (no ResourceWarning for code that runs with warnings as errors)."""
    import gc
    import warnings

    from helpers import WordHashEncoder

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        idx = xtrieve.Index.build(tmp_path / "ix", ["moon tides", "vaccines"], encoder=WordHashEncoder(8))
        idx.search("moon", k=1)
        idx.add(["glaciers carve valleys"])
        idx.compact()
        assert idx.search("glaciers", k=1)[0].doc_id == "2"
        del idx
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]


def test_a_long_lived_reader_remembers_only_the_files_it_still_reads(tmp_path):
    """A verifying reader keeps a note of the files it has checked; commits that replace them
    (a sync job's small updates, merges) do not make that note grow."""
    rng = np.random.default_rng(0)
    ids = [f"d{i}" for i in range(40)]
    writer = xtrieve.Index.build_from_embeddings(tmp_path / "ix", ids, [rng.standard_normal((3, 8)) for _ in ids],
                                                 config={"docs_per_segment": 10})
    reader = xtrieve.Index.open(tmp_path / "ix")
    for step in range(30):
        pick = [ids[step % 40], ids[(7 * step + 3) % 40]]
        writer.add_embeddings(pick, [rng.standard_normal((3, 8)) for _ in pick], replace=True)
        reader.refresh()
        assert len(reader.search(rng.standard_normal((2, 8)), k=40)) == 40
    named = set(reader.snapshot.manifest.files().items())
    assert set(reader._store._verified) <= named  # (the 30 commits named ~150 files over time)


@pytest.mark.parametrize("storage", ["int8", "int4"])
def test_compact_retrains_a_template_the_collection_has_outgrown(tmp_path, storage):
    """Built small, grown 16x: compact() trains an IVF template with the lists the collection
    now calls for (int4 codes then find their nearest new centroid); search stays exact."""
    rng = np.random.default_rng(5)
    cfg = {"flat_max_vectors": 500, "vector_storage": storage}
    first = unit_token_docs(rng, 200, 16, 4, 5)
    idx = xtrieve.Index.build_from_embeddings(tmp_path / "ix", [f"a{i}" for i in range(200)], first, config=cfg)
    assert idx.info().faiss == ["IVF128,PQ8x4fs"]
    more = unit_token_docs(rng, 3000, 16, 4, 5)
    idx.add_embeddings([f"b{i}" for i in range(3000)], more)
    assert manifest(tmp_path / "ix")["faiss_template"]["factory"] == "IVF128,PQ8x4fs"  # adds keep the template
    idx.compact()
    assert manifest(tmp_path / "ix")["faiss_template"]["factory"] == "IVF512,PQ8x4fs"
    assert idx.info().faiss == ["IVF512,PQ8x4fs"] and len(idx) == 3200
    assert len(list((tmp_path / "ix").glob("ivf_template*"))) == 1  # the old one is gone
    if storage == "int4":
        seg = idx.snapshot.segments[0]
        assert int(seg.lists.max()) >= 128 and seg.bases.shape == (512, 16)
    q = more[7][:3]
    exact = idx.search(q, k=10, exhaustive=True)
    assert exact[0].doc_id == "b7"
    assert idx.search(q, k=1, config={"k_prime": 256, "nprobe": 64})[0].doc_id == "b7"
    idx.compact()  # grown no further: nothing to retrain or rewrite
    assert manifest(tmp_path / "ix")["faiss_template"]["factory"] == "IVF512,PQ8x4fs"


def _search_in_worker(idx, query):
    return [h.doc_id for h in idx.search(query, k=3, exhaustive=True)]


def test_an_index_pickles_as_the_way_to_open_it_again(tmp_path):
    """A worker process (multiprocessing's spawn, joblib) gets an Index reopened by path."""
    import multiprocessing
    import pickle

    rng = np.random.default_rng(4)
    docs = rand_docs(12, rng)
    idx = xtrieve.Index.build_from_embeddings(tmp_path / "ix", [f"d{i}" for i in range(12)], docs)
    copy = pickle.loads(pickle.dumps(idx))
    assert copy.path == idx.path and copy is not idx
    assert [h.doc_id for h in copy.search(docs[3], k=3)] == [h.doc_id for h in idx.search(docs[3], k=3)]
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        assert pool.apply(_search_in_worker, (idx, docs[5])) == _search_in_worker(idx, docs[5])
    idx.close()
    with pytest.raises(xtrieve.InputError, match="is closed"):
        pickle.dumps(idx)


def test_equal_scores_rank_by_doc_id_whatever_merges_and_compaction_did(tmp_path):
    """Ties used to follow the documents' place in the index, which a tiered merge changes."""
    rng = np.random.default_rng(6)
    twin = rand_docs(1, rng)[0]
    idx = xtrieve.Index.build_from_embeddings(tmp_path / "ix", ["m-early"], [twin],
                                              config={"docs_per_segment": 4, "merge_factor": 2})
    for i in range(6):  # small adds: merges move segments around
        idx.add_embeddings([f"x{i}"], rand_docs(1, rng))
    idx.add_embeddings(["b-late"], [twin])
    for i in range(6, 12):
        idx.add_embeddings([f"x{i}"], rand_docs(1, rng))
    ranked = []
    for step in ("after adds", "after compact"):
        for exhaustive in (False, True):
            ranked.append([h.doc_id for h in idx.search(twin, k=2, exhaustive=exhaustive)])
        idx.compact()
    assert ranked == [["b-late", "m-early"]] * 4
