"""A model that adds a dense score: embeddings stored per document, fused into exact scores."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

import xtrieve
from helpers import WordHashEncoder
from xtrieve.errors import InputError

DIM = 8
W = 0.5
DOCS = [{"id": f"d{i}", "text": t} for i, t in enumerate([
    "red apple pie", "green apple tree", "blue sky and sea", "apple apple juice", "stone wall garden",
    "red red wine", "sea salt crystals", "pie crust recipe", "tree house plans", "juice box straw",
    "wall clock face", "garden hose green", "sky blue paint", "wine glass red", "salt and pepper",
])]


def brute(enc: WordHashEncoder, query: str, weight: float) -> dict[str, float]:
    """MaxSim (float16 storage) + weight x n_q x cosine of the mean-word dense embeddings."""
    q = enc.encode([query], True)
    d = enc.encode([x["text"] for x in DOCS], False)
    out = {}
    for doc, vec, dense in zip(DOCS, d.vectors, d.dense):
        vec = vec.astype(np.float16).astype(np.float32)
        cos = float(q.dense[0] @ dense.astype(np.float16).astype(np.float32))
        out[doc["id"]] = float((q.vectors[0] @ vec.T).max(axis=1).sum()) + weight * len(q.vectors[0]) * cos
    return out


@pytest.fixture
def fused(tmp_path):
    enc = WordHashEncoder(DIM, dense_weight=W)
    idx = xtrieve.Index.build(tmp_path / "ix", DOCS, encoder=enc,
                              config={"docs_per_segment": 6, "batch_size": 4, "vector_storage": "float16"})
    return enc, idx


def test_dense_embeddings_are_stored_and_fused_into_exact_scores(fused):
    enc, idx = fused
    assert idx.info().dense_weight == W and all(s.dense is not None for s in idx.snapshot.segments)
    want = brute(enc, "red apple", W)
    for exhaustive in (True, False):
        hits = idx.search("red apple", k=5, exhaustive=exhaustive)
        assert [h.doc_id for h in hits] == sorted(want, key=lambda d: -want[d])[:5]
        for h in hits:
            assert h.score == pytest.approx(want[h.doc_id], abs=1e-3)
    # token vectors alone are scored by MaxSim alone
    arrays = enc.encode(["red apple"], True).vectors[0]
    plain = brute(enc, "red apple", 0.0)
    for h in idx.search(arrays, k=5, exhaustive=True):
        assert h.score == pytest.approx(plain[h.doc_id], abs=1e-3)


def test_dense_embeddings_survive_delete_and_compact(fused):
    enc, idx = fused
    idx.delete(["d0"])
    idx.compact()
    segs = idx.snapshot.segments
    assert sum(s.n_deleted if hasattr(s, "n_deleted") else int(s.deleted.sum()) for s in segs) == 0
    assert sum(s.dense.shape[0] for s in segs) == len(DOCS) - 1
    want = brute(enc, "apple juice", W)
    want.pop("d0")
    hits = idx.search("apple juice", k=3, exhaustive=True)
    assert [h.doc_id for h in hits] == sorted(want, key=lambda d: -want[d])[:3]
    assert hits[0].score == pytest.approx(want[hits[0].doc_id], abs=1e-3)


def test_embeddings_without_dense_are_refused_by_a_fused_index(fused):
    _, idx = fused
    before = idx.snapshot.generation
    with pytest.raises(InputError, match="dense"):
        idx.add_embeddings(["x"], [np.ones((2, DIM), dtype=np.float32)])
    assert idx.refresh().snapshot.generation == before and idx.get("x") is None


def test_a_model_without_fusion_stores_no_dense_column(tmp_path):
    idx = xtrieve.Index.build(tmp_path / "ix", DOCS[:4], encoder=WordHashEncoder(DIM))
    seg = idx.snapshot.segments[0]
    docs = pa.ipc.open_file(pa.memory_map(str(tmp_path / "ix" / seg.name / "docs.arrow"))).read_all()
    assert seg.dense is None and "__dense" not in docs.column_names and idx.info().dense_weight == 0.0


def test_bad_dense_query_is_an_input_error(fused):
    enc, idx = fused
    searcher = idx._get_searcher()
    q = enc.encode(["red apple"], True)
    with pytest.raises(InputError, match="dense embedding"):
        searcher.search(q.vectors, k=3, dense=[np.ones(DIM + 1, dtype=np.float32)])
    with pytest.raises(InputError, match="dense"):
        searcher.search(q.vectors, k=3, dense=[q.dense[0], q.dense[0]])


def test_batch_of_text_queries_equals_single_searches(fused):
    _, idx = fused
    queries = ["red apple", "sea salt", "garden wall clock"]
    for exhaustive in (True, False):
        batch = idx.search_batch(queries, k=4, exhaustive=exhaustive)
        for q, hits in zip(queries, batch):
            single = idx.search(q, k=4, exhaustive=exhaustive)
            assert [(h.doc_id, round(h.score, 5)) for h in hits] == [(h.doc_id, round(h.score, 5)) for h in single]
