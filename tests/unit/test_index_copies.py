"""Index stage: copies (merges, compactions, metadata updates) take stored and IVF codes as they are."""
from __future__ import annotations

import json
from types import SimpleNamespace

import faiss
import numpy as np
import pyarrow as pa
import pytest

import xtrieve
from xtrieve.index import faiss_build, faiss_copy
from xtrieve.index.segment import SegmentCore, SegmentReader, SegmentWriter
from xtrieve.index.vector_source import Copied, vector_rows

DIM = 16


def unit(rng, n, dim=DIM):
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def filled(template, x):
    index = faiss.clone_index(template)
    index.add(x)
    return index


def source(index):
    return SimpleNamespace(n_vectors=int(index.ntotal), faiss_index=index)


@pytest.mark.parametrize("factory", ["IVF16,PQ8x4fs", "IVF16,Flat", "IVF16,PQ4", "IVF16,SQ8"])
def test_copied_codes_equal_an_add_of_the_kept_vectors_byte_for_byte(factory, monkeypatch):
    monkeypatch.setattr(faiss_copy, "copying_pays", lambda *a: True)
    rng = np.random.default_rng(0)
    x = unit(rng, 3000)
    template = faiss.index_factory(DIM, factory, faiss.METRIC_INNER_PRODUCT)
    template.train(x[:1000])
    a, b = source(filled(template, x[:1800])), source(filled(template, x[1800:]))
    keep_a, keep_b = np.nonzero(rng.random(1800) < 0.7)[0], np.nonzero(rng.random(1200) < 0.6)[0]
    # parts in several pieces, as merge batches come: new rows follow the parts' order
    parts = [(a, keep_a[:500]), (b, keep_b[:100]), (a, keep_a[500:]), (b, keep_b[100:])]
    n = len(keep_a) + len(keep_b)
    copied = faiss_copy.copied_index(template, parts, n)
    order = np.concatenate([x[:1800][keep_a[:500]], x[1800:][keep_b[:100]], x[:1800][keep_a[500:]],
                            x[1800:][keep_b[100:]]])
    expected = filled(template, order)
    assert copied is not None and copied.ntotal == n
    assert np.array_equal(faiss.serialize_index(copied), faiss.serialize_index(expected))
    assert a.faiss_index.ntotal == 1800 and b.faiss_index.ntotal == 1200  # sources untouched


def test_sources_of_another_template_or_class_are_added_again(monkeypatch):
    monkeypatch.setattr(faiss_copy, "copying_pays", lambda *a: True)
    rng = np.random.default_rng(1)
    x = unit(rng, 2000)
    template = faiss.index_factory(DIM, "IVF16,PQ8x4fs", faiss.METRIC_INNER_PRODUCT)
    template.train(x)
    other = faiss.index_factory(DIM, "IVF16,PQ8x4fs", faiss.METRIC_INNER_PRODUCT)
    other.train(x[::-1].copy())  # same factory, other centroids
    rows = np.arange(500)
    assert faiss_copy.copied_index(template, [(source(filled(other, x[:500])), rows)], 500) is None
    assert faiss_copy.copied_index(template, [(source(filled(template, x[:500])), rows)], 500) is not None
    assert faiss_copy.copied_index(template, [(source(filled(template, x[:500])), rows)], 499) is None
    refined = faiss.index_factory(DIM, "IVF16,PQ4,RFlat", faiss.METRIC_INNER_PRODUCT)
    refined.train(x)
    assert faiss_copy.copied_index(refined, [(source(filled(refined, x[:500])), rows)], 500) is None


def test_copying_pays_for_many_vectors_per_list_only():
    assert faiss_copy.copying_pays(2048, 200_000, [100_000, 100_000])
    assert not faiss_copy.copying_pays(16384, 40, [5] * 8)  # eight one-document segments


def build_two_segments(path, storage, rng):
    """An IVF index of two segments from one template, a third of each deleted."""
    docs = [rng.standard_normal((int(rng.integers(20, 40)), DIM)).astype(np.float16).astype(np.float32)
            for _ in range(400)]
    config = {"flat_max_vectors": 2000, "nlist": 32, "vector_storage": storage, "merge_factor": 50}
    idx = xtrieve.Index.build_from_embeddings(path, [f"d{i}" for i in range(200)], docs[:200], config=config)
    idx.add_embeddings([f"d{i}" for i in range(200, 400)], docs[200:])
    idx.delete([f"d{i}" for i in range(0, 400, 3)])
    return idx, docs


@pytest.mark.parametrize("storage", ["float16", "int8", "int4"])
def test_a_compaction_copies_codes_and_searches_as_before(tmp_path, storage, monkeypatch):
    rng = np.random.default_rng(2)
    calls = []
    real = faiss_copy.copied_index
    monkeypatch.setattr(faiss_copy, "copying_pays", lambda *a: True)
    monkeypatch.setattr(faiss_copy, "copied_index", lambda *a: calls.append(real(*a)) or calls[-1])
    idx, docs = build_two_segments(tmp_path / "ix", storage, rng)
    queries = [docs[i][:4] for i in range(1, 400, 37)]
    before = [[(h.doc_id, h.score) for h in idx.search(q, k=10)] for q in queries]
    idx.compact()
    assert idx.info().n_segments == 1 and len(calls) == 1 and calls[0] is not None
    after = [[(h.doc_id, h.score) for h in idx.search(q, k=10)] for q in queries]
    assert after == before  # the stored codes are copied too: the same scores to the bit


def test_copying_writes_the_token_index_an_add_would_write(tmp_path, monkeypatch):
    # float16 storage of float16-exact vectors: an add again sees the original vectors, so
    # both ways must write the same tokens.faiss
    written = {}
    for copy in (True, False):
        monkeypatch.setattr(faiss_copy, "copying_pays", lambda *a, copy=copy: copy)
        idx, _ = build_two_segments(tmp_path / f"ix{copy}", "float16", np.random.default_rng(3))
        idx.compact()
        (segment,) = json.loads((tmp_path / f"ix{copy}" / "manifest.json").read_text())["segments"]
        written[copy] = (tmp_path / f"ix{copy}" / segment["name"] / "tokens.faiss").read_bytes()
        idx.close()
    assert written[True] == written[False]


def test_vector_rows_of_documents():
    offsets = np.array([0, 3, 3, 7, 9])
    assert vector_rows(offsets, np.array([2, 0, 3])).tolist() == [3, 4, 5, 6, 0, 1, 2, 7, 8]
    assert vector_rows(offsets, np.array([1])).tolist() == [] and vector_rows(offsets, np.array([], int)).tolist() == []


@pytest.mark.parametrize("storage", ["float16", "int8"])
def test_a_segment_of_copied_and_new_documents_keeps_their_order(tmp_path, storage):
    """Copied documents' vectors are read from their segment only when new ones follow them."""
    rng = np.random.default_rng(4)
    docs = [rng.standard_normal((3, DIM)).astype(np.float16).astype(np.float32) for _ in range(6)]
    idx = xtrieve.Index.build_from_embeddings(tmp_path / "ix", [f"d{i}" for i in range(6)], docs,
                                              config={"vector_storage": storage})
    seg = idx.snapshot.segments[0]
    new = rng.standard_normal((4, DIM)).astype(np.float16).astype(np.float32)

    def flat(n, rows, chunks, origins):
        return faiss_build.fill_index(faiss_build.new_index("Flat", DIM), chunks()), "Flat"

    def one_doc(doc_id):
        return pa.table({"doc_id": [doc_id]})

    for order in ("copied first", "new first"):
        writer = SegmentWriter(tmp_path, f"seg-{order.split()[0]}", DIM, storage)
        steps = [lambda: writer.append(one_doc("d4"), None, np.array([3]), np.array([3]), copied=Copied(seg, np.array([4]))),
                 lambda: writer.append(one_doc("n"), new, np.array([4]), np.array([4]))]
        for step in steps if order == "copied first" else steps[::-1]:
            step()
        entry = writer.finish(flat)
        core = SegmentCore(tmp_path, entry, DIM)
        reader = SegmentReader(core, np.zeros(2, dtype=bool))
        got = {reader.doc_ids[i]: reader.doc_vectors(i) for i in range(2)}
        np.testing.assert_allclose(got["d4"], seg.doc_vectors(4), rtol=0, atol=0)
        np.testing.assert_allclose(got["n"], new, rtol=0, atol=0.01 if storage == "int8" else 0)
        core.close()


def test_flat_segments_merged_into_the_first_template_are_added(tmp_path, monkeypatch):
    """The merge that trains the IVF template reads Flat segments: nothing to copy from them."""
    monkeypatch.setattr(faiss_copy, "copying_pays", lambda *a: True)
    rng = np.random.default_rng(5)
    config = {"flat_max_vectors": 1500, "merge_factor": 50}
    idx = xtrieve.Index.build_from_embeddings(tmp_path / "ix", [f"a{i}" for i in range(40)],
                                              [unit(rng, 25) for _ in range(40)], config=config)
    idx.add_embeddings([f"b{i}" for i in range(40)], [unit(rng, 25) for _ in range(40)])  # 2,000 vectors
    segments = json.loads((tmp_path / "ix" / "manifest.json").read_text())["segments"]
    assert [s["faiss"].startswith("IVF") for s in segments] == [True] and len(idx) == 80


@pytest.mark.parametrize("storage", ["float16", "int8", "int4"])
def test_a_compaction_the_index_close_overtakes_still_commits(tmp_path, storage, monkeypatch):
    """A service shutting down closes the Index while another thread compacts: the segments'
    token index files close, so the copy falls back to adding the (still mapped) vectors."""
    from xtrieve.index import segment

    monkeypatch.setattr(faiss_copy, "copying_pays", lambda *a: True)
    rng = np.random.default_rng(6)
    config = {"faiss_factory": "IVF16,PQ8x4fs", "merge_factor": 50, "vector_storage": storage}
    xtrieve.Index.build_from_embeddings(tmp_path / "ix", [f"a{i}" for i in range(60)], [unit(rng, 20) for _ in range(60)],
                                        config=config).add_embeddings([f"b{i}" for i in range(60)],
                                                                      [unit(rng, 20) for _ in range(60)])
    idx = xtrieve.Index.open(tmp_path / "ix")  # no search yet: no token index read
    finish = segment.SegmentWriter.finish
    monkeypatch.setattr(segment.SegmentWriter, "finish", lambda self, build: (idx.close(), finish(self, build))[1])
    idx.compact()
    reopened = xtrieve.Index.open(tmp_path / "ix")
    assert reopened.info().n_segments == 1 and len(reopened) == 120
    assert reopened.search(unit(rng, 3), k=5)
