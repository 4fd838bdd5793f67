"""xtrieve.rerank: a given list of documents sorted by exact MaxSim (fake encoder, random vectors)."""
from __future__ import annotations

import numpy as np
import pytest

import xtrieve
from helpers import WordHashEncoder, unit_token_docs
from xtrieve.errors import InputError

DOCS = [{"id": "tides", "title": "Moon", "text": "tides follow the moon", "year": 2015},
        {"id": "vax", "text": "vaccines train immunity", "year": 2021},
        {"id": "ice", "text": "glaciers carve valleys"}]


def brute_force(q: np.ndarray, docs: list[np.ndarray]) -> np.ndarray:
    return np.array([(q @ d.T).max(axis=1).sum() for d in docs], dtype=np.float32)


def test_vectors_are_sorted_by_maxsim():
    rng = np.random.default_rng(0)
    docs = unit_token_docs(rng, 20, 16)
    q = unit_token_docs(rng, 1, 16, 3, 6)[0]
    expected = brute_force(q, docs)
    hits = xtrieve.rerank(q, docs)
    assert [h.doc_id for h in hits] == [str(i) for i in np.argsort(-expected, kind="stable")]
    assert np.allclose([h.score for h in hits], np.sort(expected)[::-1], atol=1e-5)
    assert [h.doc_id for h in xtrieve.rerank(q, docs, k=3)] == [h.doc_id for h in hits[:3]]


def test_texts_keep_ids_and_metadata_and_score_as_the_index_does(tmp_path):
    enc = WordHashEncoder(8, dense_weight=0.5, pool_factor=2)
    hits = xtrieve.rerank("moon tides", DOCS, encoder=enc)
    assert hits[0].doc_id == "tides" and hits[0].metadata == {"title": "Moon", "year": 2015}
    idx = xtrieve.Index.build(tmp_path / "ix", DOCS, encoder=enc, config={"vector_storage": "float16"})
    exact = {h.doc_id: h.score for h in idx.search("moon tides", k=3, exhaustive=True)}
    assert {h.doc_id: pytest.approx(h.score, abs=2e-3) for h in hits} == exact
    plain = xtrieve.rerank("moon tides", ["tides follow the moon", "glaciers carve valleys"], encoder=enc, k=1)
    assert [h.doc_id for h in plain] == ["0"]


def test_pool_factor_one_scores_every_vector():
    enc = WordHashEncoder(8, pool_factor=3)
    docs = ["a b c d e f", "f e d c b a"]
    pooled = xtrieve.rerank("b e", docs, encoder=enc)
    full = xtrieve.rerank("b e", docs, encoder=enc, pool_factor=1)
    assert full[0].score == pytest.approx(full[1].score) and full[0].score > max(h.score for h in pooled) - 1e-6


@pytest.mark.parametrize("query, documents, k, message", [
    ("moon", DOCS, 0, "k must be a positive integer"),
    ("moon", "one text", None, "must be a list"),
    ("moon", [DOCS[0], np.ones((2, 8), np.float32)], None, "not a mix"),
    ("moon", [DOCS[0], DOCS[0]], None, "duplicate document id"),
    ("   ", DOCS, None, "query is empty"),
    ("moon", [{"id": "x", "text": ""}], None, "empty text"),
    (np.ones((2, 4), np.float32), [np.ones((2, 8), np.float32)], None, "dimension 4"),
    (np.ones((2, 8), np.float32), [np.ones((2, 8), np.float32), np.ones((2, 4), np.float32)], None, "dimension 4"),
    (["moon", "tides"], DOCS, None, "call it once per query"),
])
def test_bad_input_is_a_clear_error(query, documents, k, message):
    with pytest.raises(InputError, match=message):
        xtrieve.rerank(query, documents, k=k, encoder=WordHashEncoder(8))


def test_texts_without_ids_skip_the_ids_dicts_give():
    hits = xtrieve.rerank("moon", [{"id": "1", "text": "tides moon"}, "glaciers valleys"], encoder=WordHashEncoder(8))
    assert sorted(h.doc_id for h in hits) == ["0", "1"]
    with pytest.raises(InputError, match="the documents have 8"):
        xtrieve.rerank(np.ones((2, 4), np.float32), ["glaciers valleys"], encoder=WordHashEncoder(8))


def test_no_documents_is_no_hits():
    assert xtrieve.rerank("moon", [], encoder=WordHashEncoder(8)) == []


def test_documents_come_as_index_build_takes_them_frames_tables_and_generators_too():
    pd = pytest.importorskip("pandas")
    import pyarrow as pa

    enc = WordHashEncoder(8)
    frame = pd.DataFrame({"id": ["a", "b"], "text": ["cats purr", "dogs bark"], "year": [1, 2]})
    rerank = xtrieve.rerank
    want = rerank("cats", frame.to_dict("records"), encoder=enc)
    assert rerank("cats", frame, encoder=enc) == want == rerank("cats", pa.Table.from_pandas(frame), encoder=enc)
    assert [h.doc_id for h in rerank("dogs", (t for t in ["cats purr", "dogs bark"]), encoder=enc)] == ["1", "0"]
