"""Token retrieval over Flat segments from the stored int8 / int4 codes (``code_scan``)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import xtrieve
import xtrieve.retrieve.searcher as searcher_module
from helpers import unit_token_docs
from xtrieve.config import IndexConfig
from xtrieve.index.codecs import INT4_CENTER, unpack_int4
from xtrieve.retrieve import code_scan, int8_products

DIM = 64
needs_int8 = pytest.mark.skipif(not int8_products.available(DIM), reason="no VNNI int8 products on this CPU/torch")


def _index(tmp_path, storage, n_docs=300, name="ix", seed=0):
    docs = unit_token_docs(np.random.default_rng(seed), n_docs, DIM, 3, 30)
    ids = [f"d{i}" for i in range(n_docs)]
    meta = [{"year": 2000 + i % 20} for i in range(n_docs)]
    return xtrieve.Index.build_from_embeddings(tmp_path / name, ids, docs, metadata=meta,
                                               config=IndexConfig(vector_storage=storage, faiss_factory="Flat"))


def _decoded(vectors) -> np.ndarray:
    """The segment's stored vectors as the codes say (no base: Flat segments have no centroids)."""
    scales = vectors.scales.numpy()[:, None]
    if vectors.int4:
        return (unpack_int4(vectors.codes.numpy()).astype(np.float32) - INT4_CENTER) * scales
    return vectors.codes.numpy().astype(np.float32) * scales


def _queries(seed, n=21):
    q = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return np.ascontiguousarray(q / np.linalg.norm(q, axis=1, keepdims=True))


@needs_int8
@pytest.mark.parametrize("storage", ["int8", "int4"])
def test_top_rows_are_the_best_stored_vectors(tmp_path, storage, monkeypatch):
    vectors = _index(tmp_path, storage)._get_searcher()._vectors[0]
    assert code_scan.scans_codes(vectors)
    q = _queries(1)
    sims = q @ _decoded(vectors).T
    allowed = np.random.default_rng(2).random(len(sims[0])) < 0.3
    for mask in (None, allowed):
        want = np.where(mask, sims, -np.inf) if mask is not None else sims
        for block in (code_scan.BLOCK_SIMILARITIES, 1):  # one block; blocks of MIN_BLOCK_ROWS rows
            monkeypatch.setattr(code_scan, "BLOCK_SIMILARITIES", block)
            monkeypatch.setattr(code_scan, "MIN_BLOCK_ROWS", 1000)
            dist, ids = code_scan.top_rows(vectors, q, 50, mask)
            assert np.all(np.diff(dist, axis=1) <= 0)
            assert np.allclose(dist, np.take_along_axis(want, ids, axis=1), atol=2e-4)
            assert np.allclose(dist, -np.sort(-want, axis=1)[:, :50], atol=2e-4)
            if mask is not None:
                assert mask[ids].all()


@needs_int8
def test_past_the_allowed_rows_come_minus_one_and_minus_inf(tmp_path):
    vectors = _index(tmp_path, "int8", n_docs=20)._get_searcher()._vectors[0]
    n_rows = int(vectors.codes.shape[0])
    mask = np.zeros(n_rows, dtype=bool)
    mask[[3, 7, 11]] = True
    dist, ids = code_scan.top_rows(vectors, _queries(3, 4), n_rows + 5, mask)
    assert dist.shape == ids.shape == (4, n_rows + 5)
    assert sorted(ids[0, :3]) == [3, 7, 11] and (ids[:, 3:] == -1).all() and np.isneginf(dist[:, 3:]).all()


@needs_int8
@pytest.mark.parametrize("storage", ["int8", "int4"])
def test_flat_segments_search_alike_from_codes_and_from_faiss(tmp_path, storage, monkeypatch):
    idx = _index(tmp_path, storage, n_docs=400)
    idx.delete([f"d{i}" for i in range(0, 400, 7)])
    queries = [_queries(s, n) for s, n in ((4, 3), (5, 12), (6, 32))]
    scanned = []
    monkeypatch.setattr(searcher_module, "top_rows", lambda *a: scanned.append(1) or code_scan.top_rows(*a))
    ours = [idx.search_batch(queries, k=20), idx.search_batch(queries, k=20, filter="year >= 2010")]
    assert scanned
    monkeypatch.setattr(searcher_module, "scans_codes", lambda *a: False)
    theirs = [idx.search_batch(queries, k=20), idx.search_batch(queries, k=20, filter="year >= 2010")]
    for a, b in zip(ours, theirs):
        for hits_a, hits_b in zip(a, b):
            top_a, top_b = [h.doc_id for h in hits_a[:10]], [h.doc_id for h in hits_b[:10]]
            assert len(set(top_a) & set(top_b)) >= 9  # the same retrieval, to int8's rounding
            assert all(int(h.doc_id[1:]) % 7 for h in hits_a)
    assert all(h.metadata["year"] >= 2010 for hits in ours[1] for h in hits)


def test_segments_whose_codes_take_no_integer_products_are_scanned_by_faiss(tmp_path, monkeypatch):
    for storage in ("float16", "int8"):
        vectors = _index(tmp_path, storage, n_docs=30, name=storage)._get_searcher()._vectors[0]
        if storage == "float16":
            assert not code_scan.scans_codes(vectors)
    monkeypatch.setattr(int8_products, "available", lambda dim: False)
    assert not code_scan.scans_codes(vectors)
    idx = xtrieve.Index.open(tmp_path / "int8")
    calls = []
    monkeypatch.setattr(searcher_module, "top_rows", lambda *a: calls.append(1))
    assert len(idx.search(_queries(7, 5), k=5)) == 5 and not calls


def test_ivf_int4_residuals_are_not_scanned_from_codes(tmp_path):
    docs = unit_token_docs(np.random.default_rng(8), 400, DIM, 20, 30)
    idx = xtrieve.Index.build_from_embeddings(tmp_path / "ivf", [f"d{i}" for i in range(400)], docs,
                                              config=IndexConfig(vector_storage="int4", faiss_factory="IVF16,Flat"))
    searcher = idx._get_searcher()
    assert not searcher._probe(0).flat
    assert searcher._vectors[0].lists is not None and not code_scan.scans_codes(searcher._vectors[0])
    assert torch.is_tensor(searcher._vectors[0].codes)


@needs_int8
def test_a_filter_passing_few_vectors_is_left_to_faiss(tmp_path, monkeypatch):
    idx = _index(tmp_path, "int8", n_docs=400)
    calls = []
    monkeypatch.setattr(searcher_module, "top_rows", lambda *a: calls.append(1) or code_scan.top_rows(*a))
    q, token_retrieval = _queries(9, 12), {"exact_filter_vectors": 0}  # (not the exact scoring of a small filter)
    narrow = idx.search(q, k=10, filter="year >= 2015", config=token_retrieval)  # a quarter of the documents
    assert not calls and narrow and all(h.metadata["year"] >= 2015 for h in narrow)
    wide = idx.search(q, k=10, filter="year >= 2005", config=token_retrieval)  # three quarters
    assert calls and all(h.metadata["year"] >= 2005 for h in wide)
