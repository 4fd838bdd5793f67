"""Index stage: building from embeddings, storage layout, FAISS choice, documents via a fake encoder."""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

import xtrieve
from helpers import unit_token_docs
from xtrieve.config import IndexConfig
from xtrieve.errors import ConfigError
from xtrieve.index.segment import DOCS, VECTORS
from xtrieve.index.store import IndexStore
from helpers import WordHashEncoder

DIM = 16


def rand_docs(n, rng, lo=2, hi=12, dim=DIM):
    return unit_token_docs(rng, n, dim, lo, hi)


def FakeEncoder(dim=DIM, name="fake", head="0" * 64):
    return WordHashEncoder(dim, name, head)


def test_build_from_embeddings_roundtrip(tmp_path):
    rng = np.random.default_rng(0)
    docs = rand_docs(50, rng)
    ids = [f"d{i}" for i in range(50)]
    meta = [{"year": 2000 + i, "lang": "en" if i % 2 else "fr"} for i in range(50)]
    idx = xtrieve.Index.build_from_embeddings(tmp_path / "ix", ids, docs, meta)
    info = idx.info()
    assert (info.n_docs, info.dim, info.n_segments, info.model, info.pool_min_vectors) == (50, DIM, 1, None, None)
    assert info.n_vectors == info.n_tokens == sum(len(d) for d in docs)
    assert info.vector_storage == "int8" and info.faiss == ["Flat"]
    seg = xtrieve.Index.open(tmp_path / "ix").snapshot.segments[0]
    assert seg.doc_ids == ids
    for i in (0, 17, 49):
        np.testing.assert_allclose(seg.doc_vectors(i), docs[i], atol=1e-2)
        assert seg.metadata(i) == meta[i]
    assert seg.vectors_raw.dtype == np.int8 and seg.vectors_raw.shape == (info.n_vectors, DIM)
    assert seg.vec_to_doc[seg.offsets[17]] == 17
    assert seg.faiss_index.ntotal == info.n_vectors
    # exact search finds the document a query was cut from
    hits = idx.search(docs[17][:3], k=3, exhaustive=True)
    assert hits[0].doc_id == "d17" and hits[0].metadata == meta[17]
    assert idx.search_batch([docs[3], docs[4]], k=1)[1][0].doc_id == "d4"


def test_arrow_layout_is_mmap_zero_copy(tmp_path):
    rng = np.random.default_rng(1)
    xtrieve.Index.build_from_embeddings(tmp_path / "ix", ["a", "b"], rand_docs(2, rng), config={"vector_storage": "float16"})
    seg_dir = next((tmp_path / "ix").glob("seg-*"))
    with pa.memory_map(str(seg_dir / VECTORS)) as f:
        reader = pa.ipc.open_file(f)
        assert reader.num_record_batches == 1
        col = reader.get_batch(0).column("vector")
        assert col.type == pa.list_(pa.float16(), DIM)
    docs = pa.ipc.open_file(pa.memory_map(str(seg_dir / DOCS))).read_all()
    assert {"doc_id", "__offset", "__n_vectors", "__n_tokens"} <= set(docs.column_names)
    manifest = json.loads((tmp_path / "ix" / "manifest.json").read_text())
    assert manifest["format_version"] == 3 and manifest["encoder"] is None and manifest["dim"] == DIM
    assert set(manifest["segments"][0]["files"]) == {f"{seg_dir.name}/{n}" for n in ("docs.arrow", "vectors.arrow", "tokens.faiss")}
    assert not list((tmp_path / "ix").rglob("*.tmp"))


def test_int8_storage(tmp_path):
    rng = np.random.default_rng(2)
    docs = rand_docs(20, rng)
    idx = xtrieve.Index.build_from_embeddings(tmp_path / "ix", [str(i) for i in range(20)], docs,
                                              config={"vector_storage": "int8"})
    seg = idx.snapshot.segments[0]
    assert seg.vectors_raw.dtype == np.int8 and seg.scales is not None and seg.scales.dtype == np.float32
    np.testing.assert_allclose(seg.doc_vectors(5), docs[5], atol=0.02)
    assert idx.search(docs[5], k=1, exhaustive=True)[0].doc_id == "5"
    assert idx.info().vector_storage == "int8"


@pytest.mark.parametrize("storage", ["float16", "int8", "int4"])
def test_flat_token_index_is_written_empty_and_read_from_the_codes(tmp_path, storage):
    """A Flat segment's tokens.faiss keeps no float32 copy of the vectors (512 B per 128-d
    vector beside 132 B of int8 codes): reading it decodes the stored codes into it."""
    rng = np.random.default_rng(4)
    docs = rand_docs(60, rng)
    idx = xtrieve.Index.build_from_embeddings(tmp_path / "ix", [f"d{i}" for i in range(60)], docs,
                                              config={"vector_storage": storage})
    seg = idx.snapshot.segments[0]
    assert idx.snapshot.manifest.segments[0].faiss == "Flat"
    assert (tmp_path / "ix" / seg.name / "tokens.faiss").stat().st_size < 200  # a header, no vectors
    index = seg.faiss_index
    assert index.ntotal == seg.n_vectors
    np.testing.assert_array_equal(index.reconstruct_n(0, seg.n_vectors), seg.decode(slice(None)))
    for i in (0, 31):  # token retrieval from FAISS finds the document a query was cut from
        assert idx.search(docs[i][:2], k=1, config={"n_rerank": 4})[0].doc_id == f"d{i}"


def test_an_index_of_format_version_2_with_float_copies_reads_alike(tmp_path):
    import faiss

    from xtrieve.index.fsio import sha256_file
    from xtrieve.index.manifest import _checksum

    rng = np.random.default_rng(6)
    docs = rand_docs(40, rng)
    path = tmp_path / "ix"
    idx = xtrieve.Index.build_from_embeddings(path, [f"d{i}" for i in range(40)], docs)
    queries = [d[:3] for d in docs[:5]]
    before = [[(h.doc_id, h.score) for h in hits] for hits in idx.search_batch(queries, k=5)]
    idx.close()
    body = json.loads((path / "manifest.json").read_text())
    seg = body["segments"][0]
    full = faiss.IndexFlatIP(DIM)  # what version 2 wrote: the vectors in float32
    full.add(np.concatenate(docs).astype(np.float32))
    (path / seg["name"] / "tokens.faiss").write_bytes(faiss.serialize_index(full).tobytes())
    seg["files"][f"{seg['name']}/tokens.faiss"] = sha256_file(path / seg["name"] / "tokens.faiss")
    body["format_version"] = 2
    body["checksum"] = _checksum(body)
    (path / "manifest.json").write_text(json.dumps(body))
    with xtrieve.Index.open(path) as old:
        assert old.snapshot.segments[0].faiss_index.ntotal == sum(len(d) for d in docs)
        after = [[h.doc_id for h in hits] for hits in old.search_batch(queries, k=5)]
    assert after == [[d for d, _ in hits] for hits in before]


def test_auto_faiss_trains_one_template_and_reuses_it(tmp_path):
    rng = np.random.default_rng(3)
    docs = rand_docs(300, rng, 8, 12)
    cfg = IndexConfig(flat_max_vectors=800, nlist=16, docs_per_segment=100, merge_factor=10)
    idx = xtrieve.Index.build_from_embeddings(tmp_path / "ix", [f"d{i}" for i in range(300)], docs, config=cfg)
    m = json.loads((tmp_path / "ix" / "manifest.json").read_text())
    assert m["faiss_template"]["factory"] == "IVF16,PQ8x4fs"
    assert idx.info().faiss == ["IVF16,PQ8x4fs"] * 3
    template_file = m["faiss_template"]["file"]
    idx.add_embeddings([f"e{i}" for i in range(100)], rand_docs(100, rng, 8, 12))
    m2 = json.loads((tmp_path / "ix" / "manifest.json").read_text())
    assert m2["faiss_template"]["file"] == template_file  # not retrained
    assert len(list((tmp_path / "ix").glob("ivf_template*"))) == 1
    # once trained, even a segment under flat_max_vectors stores 4-bit codes, not floats
    idx.add_embeddings([f"s{i}" for i in range(3)], rand_docs(3, rng, 8, 12))
    assert set(idx.info().faiss) == {"IVF16,PQ8x4fs"} and idx.info().n_segments == 5
    hits = idx.search(docs[42][:4], k=5)
    assert hits[0].doc_id == "d42"


def test_forced_factory_and_small_segments_flat(tmp_path):
    rng = np.random.default_rng(4)
    idx = xtrieve.Index.build_from_embeddings(tmp_path / "ix", ["a", "b", "c"], rand_docs(3, rng),
                                              config={"faiss_factory": "HNSW8"})
    assert idx.info().faiss == ["HNSW8"]
    assert idx.snapshot.segments[0].faiss_index.ntotal == idx.info().n_vectors


def test_documents_with_fake_encoder(tmp_path):
    enc = FakeEncoder()
    docs = [
        {"_id": "x1", "title": "Cats", "text": "the cat sat on the mat", "year": 2020},
        {"id": 7, "text": "a dog barked", "tags": ["pets", "noise"], "info": {"lang": "en"}},
        {"id": "x3", "text": "late interaction search"},
    ]
    idx = xtrieve.Index.build(tmp_path / "ix", docs, encoder=enc)
    seg = idx.snapshot.segments[0]
    assert seg.doc_ids == ["x1", "7", "x3"]
    assert seg.metadata(0)["title"] == "Cats" and seg.metadata(0)["year"] == 2020
    assert seg.metadata(1)["tags"] == ["pets", "noise"] and seg.metadata(1)["info.lang"] == "en"
    assert seg.n_tokens.tolist() == [7, 3, 3]  # title prepended to the text for encoding
    assert idx.get("x1")["text"] == "the cat sat on the mat"
    assert (tmp_path / "ix" / "encoder" / "fake.json").exists()
    assert idx.search("cat mat", k=1)[0].doc_id == "x1"
    assert idx.search_batch(["dog", "interaction"], k=1)[1][0].doc_id == "x3"
    # plain strings get sequential ids unique in the index
    new = idx.add(["first plain text", "second plain text"])
    assert new == ["0", "1"] and len(idx) == 5
    assert idx.add(["third one"]) == ["2"]
    assert idx.info().model == "fake" and idx.info().pool_min_vectors == enc.config.pool_min_vectors
    reopened = xtrieve.Index.open(tmp_path / "ix", encoder=enc)
    assert reopened.search("third one", k=1)[0].doc_id == "2"


def test_pool_factor_and_store_text(tmp_path):
    enc = FakeEncoder()
    idx = xtrieve.Index.build(tmp_path / "ix", [{"id": "a", "text": "one two three four five six", "k": 1}], encoder=enc,
                              config={"pool_factor": 2, "store_text": False})
    info = idx.info()
    assert (info.n_tokens, info.n_vectors, info.pool_factor) == (6, 3, 2)
    assert "text" not in idx.snapshot.segments[0].table.column_names
    assert idx.get("a") == {"doc_id": "a", "k": 1}


def test_metadata_types_promote_across_batches(tmp_path):
    rng = np.random.default_rng(5)
    meta = [{"score": i} for i in range(5)] + [{"score": 1.5}, {"score": None}, {"other": "x"}]
    idx = xtrieve.Index.build_from_embeddings(tmp_path / "ix", [str(i) for i in range(8)], rand_docs(8, rng), meta,
                                              config={"batch_size": 3})
    seg = idx.snapshot.segments[0]
    assert pa.types.is_floating(seg.table.schema.field("score").type)
    assert seg.metadata(5) == {"score": 1.5, "other": None}
    idx.add_embeddings(["n1"], rand_docs(1, rng), [{"score": 3}])
    hits = idx.search(rand_docs(1, rng)[0], k=10, exhaustive=True, filter="score >= 3")
    assert sorted(h.doc_id for h in hits) == ["3", "4", "n1"]


def test_snapshot_lookup_and_store(tmp_path):
    rng = np.random.default_rng(6)
    xtrieve.Index.build_from_embeddings(tmp_path / "ix", ["a", "b"], rand_docs(2, rng))
    snap = IndexStore.open(tmp_path / "ix").snapshot()
    assert snap.lookup("b") == (0, 1) and snap.lookup("zz") is None
    assert snap.generation == 1 and snap.encoder_identity is None and snap.dim == DIM


def test_segments_share_one_schema(tmp_path):
    rng = np.random.default_rng(7)
    idx = xtrieve.Index.build_from_embeddings(tmp_path / "ix", ["a", "b"], rand_docs(2, rng), [{"year": 1}, {"year": 2}])
    idx.add_embeddings(["c", "d"], rand_docs(2, rng), [{"year": 2020.5, "lang": "en"}, {"lang": "fr"}])
    schemas = {str(s.table.schema) for s in idx.snapshot.segments}
    assert len(schemas) == 1 and "lang" in schemas.pop()
    assert idx.snapshot.segments[0].metadata(0) == {"year": 1.0, "lang": None}
    q = rand_docs(1, rng)[0]
    assert [h.doc_id for h in idx.search(q, k=5, filter="lang == 'en'", exhaustive=True)] == ["c"]
    assert sorted(h.doc_id for h in idx.search(q, k=5, filter="lang is null")) == ["a", "b"]


# factories the searcher can use as it searches (top-k' per query token, nprobe, a row selector
# for deletes and broad filters) and ones it cannot, refused at build before anything is written
SEARCHABLE_FACTORIES = ["Flat", "IVF16,Flat", "IVF16,PQ8x4fs", "HNSW16", "IVF16,Flat,RFlat",
                        "IVF16,PQ4x4,Refine(Flat)", "Flat,RFlat", "PCA8,IVF16,Flat"]


def _factory_corpus(n=300, seed=11):
    rng = np.random.default_rng(seed)
    return [f"d{i}" for i in range(n)], rand_docs(n, rng, 5, 9), [{"g": i % 2} for i in range(n)]


@pytest.mark.parametrize("factory", SEARCHABLE_FACTORIES)
def test_forced_factories_search_with_deletes_and_filters(tmp_path, factory):
    ids, docs, meta = _factory_corpus()
    idx = xtrieve.Index.build_from_embeddings(tmp_path / "ix", ids, docs, meta, config={"faiss_factory": factory})
    assert idx.info().faiss == [factory]
    q = docs[42]
    hits = idx.search(q, k=5)
    assert len(hits) == 5
    if "PCA" not in factory:  # a PCA to 8 of 16 dims may rank another document first
        assert hits[0].doc_id == "d42"
    # a filter allowing half the documents restricts FAISS with a row selector
    assert all(h.metadata["g"] == 0 for h in idx.search(q, k=5, filter="g == 0"))
    assert all(h.metadata["g"] == 1 for h in idx.search(q, k=5, filter="g == 1"))
    idx.delete(["d42"])
    hits = idx.search(q, k=5)
    assert len(hits) == 5 and "d42" not in {h.doc_id for h in hits}


@pytest.mark.parametrize("factory, reason", [
    ("PQ4x4", "ID selector"),                  # IndexPQ takes no search parameters
    ("PQ8x4fs", "ID selector"),
    ("PQ4x4,RFlat", "ID selector"),            # a refine index over an IndexPQ
    ("NSG16,Flat", "ID selector"),
    ("IDMap,Flat", "IDMap is not supported"),  # its ids would not be vector rows
    ("IDMap2,Flat", "IDMap is not supported"),
    ("HNSW16_PQ4", "metric METRIC_L2"),        # the factory ignores the inner-product metric
    ("IVF16777216,Flat", "asks for 16,777,216 IVF lists: at most 1,048,576"),  # FAISS allocates them (4 GB) at once
])
def test_unsearchable_factories_rejected_at_build(tmp_path, factory, reason):
    ids, docs, meta = _factory_corpus()
    with pytest.raises(ConfigError, match=reason) as err:
        xtrieve.Index.build_from_embeddings(tmp_path / "ix", ids, docs, meta, config={"faiss_factory": factory})
    # the message names the factory (or, where the writer does not pass it on, its FAISS class)
    assert "FAISS factory" in str(err.value) or "FAISS index Index" in str(err.value)
    assert not (tmp_path / "ix").exists()


def test_unsearchable_factory_leaves_replaced_index_as_it_was(tmp_path):
    ids, docs, meta = _factory_corpus()
    root = tmp_path / "ix"
    xtrieve.Index.build_from_embeddings(root, ids, docs, meta)
    before = sorted(p.name for p in root.iterdir())
    with pytest.raises(ConfigError, match="ID selector"):
        xtrieve.Index.build_from_embeddings(root, ids[:100], docs[:100], meta[:100], overwrite=True,
                                            config={"faiss_factory": "PQ4x4"})
    assert sorted(p.name for p in root.iterdir()) == before  # no template or segment left over
    idx = xtrieve.Index.open(root)
    assert len(idx) == 300 and idx.search(docs[7], k=1, filter="g == 1")[0].doc_id == "d7"


def test_faiss_errors_while_training_become_config_errors(tmp_path):
    # 8-bit PQ wants 256 training vectors; 20 documents hold far fewer
    ids, docs, meta = _factory_corpus(20)
    with pytest.raises(ConfigError, match=r"'PQ8' failed to train on \d+ vectors: Number of training points"):
        xtrieve.Index.build_from_embeddings(tmp_path / "ix", ids, docs, meta, config={"faiss_factory": "PQ8"})
    assert not (tmp_path / "ix").exists()


def test_fill_index_names_the_factory_it_refuses():
    from xtrieve.index import faiss_build

    x = np.concatenate(rand_docs(100, np.random.default_rng(3), 5, 9))
    empty = faiss_build.train_template("PQ4x4", DIM, len(x), lambda rows: x[rows])
    with pytest.raises(ConfigError, match=r"FAISS factory 'PQ4x4' cannot search with an ID selector.*invalid search params"):
        faiss_build.fill_index(empty, [x], factory="PQ4x4")
    assert faiss_build.fill_index(faiss_build.new_index("Flat", DIM), [x], factory="Flat").ntotal == len(x)


@pytest.mark.parametrize("dim, want", [(128, 64), (100, 50), (130, 65), (97, 97), (127, 127), (121, 121), (1, 1)])
def test_auto_pq_subquantizers_never_collapse_for_odd_dims(dim, want):
    from xtrieve.index.faiss_build import pq_subquantizers

    m = pq_subquantizers(dim, None)
    assert dim % m == 0 and m == want  # a prime dim took PQ1x4fs: 4 bits per vector
    assert pq_subquantizers(97, 16) == 97 and pq_subquantizers(130, 16) == 26  # pq_bytes: the nearest divisor


def test_template_segments_leave_centroids_to_the_template(tmp_path):
    """A segment built from the IVF template stores no copy of its centroids (a one-document add
    wrote the template's nlist x dim floats again); it reads and searches as before, also for a
    reader whose snapshot outlives the compaction that retrains (and removes) the template."""
    rng = np.random.default_rng(5)
    docs = rand_docs(300, rng, 8, 12)
    cfg = IndexConfig(flat_max_vectors=800, docs_per_segment=100_000, merge_factor=10)
    idx = xtrieve.Index.build_from_embeddings(tmp_path / "ix", [f"d{i}" for i in range(300)], docs, config=cfg)
    idx.add_embeddings(["one"], rand_docs(1, rng, 3, 4))
    m = json.loads((tmp_path / "ix" / "manifest.json").read_text())
    template_size = (tmp_path / "ix" / m["faiss_template"]["file"]).stat().st_size
    small = next(s for s in m["segments"] if s["n_docs"] == 1)
    assert small["faiss"] == m["faiss_template"]["factory"]
    assert (tmp_path / "ix" / small["name"] / "tokens.faiss").stat().st_size < template_size / 2
    more = rand_docs(1200, rng, 8, 12)
    idx.add_embeddings([f"g{i}" for i in range(1200)], more)
    reader = xtrieve.Index.open(tmp_path / "ix")  # its token indexes are read on its first search
    idx.compact()
    m2 = json.loads((tmp_path / "ix" / "manifest.json").read_text())
    assert m2["faiss_template"]["file"] != m["faiss_template"]["file"]
    assert not (tmp_path / "ix" / m["faiss_template"]["file"]).exists()
    for index in (reader, idx, xtrieve.Index.open(tmp_path / "ix")):
        for q, want in ((docs[7][:4], "d7"), (more[50][:4], "g50")):
            assert index.search(q, k=5)[0].doc_id == want
            assert index.search(q, k=5, exhaustive=True)[0].doc_id == want


def test_small_adds_train_the_template_once_the_collection_outgrows_flat(tmp_path):
    """Grown by small adds, an index trains its IVF template once its live vectors pass
    flat_max_vectors, as a build of the same documents would (it stayed Flat until the merge
    policy made one segment that large: with merge_factor 8, about twice the threshold)."""
    rng = np.random.default_rng(6)
    cfg = IndexConfig(flat_max_vectors=800, docs_per_segment=100_000, merge_factor=8)
    idx = xtrieve.Index.build_from_embeddings(tmp_path / "ix", ["d0"], rand_docs(1, rng, 10, 11), config=cfg)
    n = 1
    while idx.info().n_vectors <= 800:
        idx.add_embeddings([f"d{n}", f"d{n + 1}"], rand_docs(2, rng, 10, 11))
        n += 2
    info = idx.info()
    assert info.faiss[0].startswith("IVF") and info.n_segments == 1
    assert json.loads((tmp_path / "ix" / "manifest.json").read_text())["faiss_template"] is not None


def test_a_snapshot_reads_its_segments_after_its_own_index_retrained_the_template(tmp_path):
    """A search thread may still hold the snapshot from before a compaction made through the
    same Index (whose writer shares its store): segments of that snapshot read their token
    indexes later, against the template of their own commit."""
    rng = np.random.default_rng(7)
    cfg = IndexConfig(flat_max_vectors=800, docs_per_segment=100_000, merge_factor=10)
    xtrieve.Index.build_from_embeddings(tmp_path / "ix", [f"d{i}" for i in range(300)], rand_docs(300, rng, 8, 12),
                                        config=cfg)
    grown = xtrieve.Index.open(tmp_path / "ix")
    grown.add_embeddings([f"g{i}" for i in range(1200)], rand_docs(1200, rng, 8, 12))
    idx = xtrieve.Index.open(tmp_path / "ix")
    old = idx.snapshot
    before = old.manifest.template["file"]
    idx.compact()
    assert idx.snapshot.manifest.template["file"] != before and not (tmp_path / "ix" / before).exists()
    for seg in old.segments:  # (none read before the compaction)
        assert seg.faiss_index.ntotal == seg.n_vectors


def test_the_first_template_merge_is_not_repeated_when_its_segments_stay_flat(tmp_path, monkeypatch):
    """The first-template merge fires only when a segment it writes passes flat_max_vectors: an
    average over docs_per_segment documents named merges whose segments all stayed Flat (no
    template), and every following add rewrote the whole index again."""
    from xtrieve.index import writer as writer_module

    rng = np.random.default_rng(8)
    cfg = IndexConfig(flat_max_vectors=800, docs_per_segment=100, merge_factor=8)
    idx = xtrieve.Index.build_from_embeddings(tmp_path / "ix", [f"d{i}" for i in range(100)],
                                              rand_docs(100, rng, 8, 9), config=cfg)  # 800 vectors: Flat
    merged = []
    real = writer_module.WriteSession.merge
    monkeypatch.setattr(writer_module.WriteSession, "merge", lambda self, picks: (merged.append(picks), real(self, picks)))
    for j in range(3):
        idx.add_embeddings([f"a{j}"], rand_docs(1, rng, 70, 71))  # 100 x 8 + 70 x (j + 1): each output segment <= 800
    assert merged == [] and idx.info().faiss == ["Flat"] * 4


def test_faiss_builds_use_threads_for_large_work_only(monkeypatch):
    from xtrieve.faiss_loader import load_faiss
    from xtrieve.index import faiss_build

    faiss = load_faiss()
    monkeypatch.delenv(faiss_build.THREADS_ENV, raising=False)
    own = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(2)
    try:
        with faiss_build.build_threads(1000):
            assert faiss.omp_get_max_threads() == 1
        with faiss_build.build_threads(faiss_build.PARALLEL_WORK):
            assert faiss.omp_get_max_threads() == 2
        monkeypatch.setenv(faiss_build.THREADS_ENV, "1")
        with faiss_build.build_threads(faiss_build.PARALLEL_WORK):
            assert faiss.omp_get_max_threads() == 1
        assert faiss.omp_get_max_threads() == 2
    finally:
        faiss.omp_set_num_threads(own)
