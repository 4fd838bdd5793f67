"""TokenProbe: the torch coarse step + search_preassigned gives FAISS's own results."""
from __future__ import annotations

import faiss
import numpy as np
import pytest

from xtrieve.retrieve.probe import TokenProbe

DIM = 16


def _index(factory: str, n: int = 3000, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, DIM)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    index = faiss.index_factory(DIM, factory, faiss.METRIC_INNER_PRODUCT)
    index.train(x)
    index.add(x)
    q = rng.standard_normal((7, DIM)).astype(np.float32)
    return index, q / np.linalg.norm(q, axis=1, keepdims=True), x


@pytest.mark.parametrize("factory", ["IVF32,PQ8x4fs", "IVF32,Flat", "Flat"])
def test_probe_matches_faiss_search(factory):
    index, q, _ = _index(factory)
    probe = TokenProbe(index)
    assert (probe.centroids is not None) == factory.startswith("IVF")
    params = faiss.SearchParametersIVF(nprobe=4) if factory.startswith("IVF") else None
    want_d, want_i = index.search(q, 10, params=params)
    got_d, got_i = probe.search(q, 10, nprobe=4)
    np.testing.assert_array_equal(got_i, want_i)
    np.testing.assert_allclose(got_d, want_d, rtol=1e-5, atol=1e-5)


def test_probe_honours_selector():
    index, q, _ = _index("IVF32,PQ8x4fs")
    allowed = np.zeros(index.ntotal, dtype=bool)
    allowed[::3] = True
    bits = np.packbits(allowed, bitorder="little")
    sel = faiss.IDSelectorBitmap(index.ntotal, faiss.swig_ptr(bits))
    _, ids = TokenProbe(index).search(q, 10, nprobe=8, selector=sel)
    found = ids[ids >= 0]
    assert len(found) and allowed[found].all()
    want = index.search(q, 10, params=faiss.SearchParametersIVF(nprobe=8, sel=sel))[1]
    np.testing.assert_array_equal(ids, want)


def test_probe_clamps_nprobe_to_nlist():
    # every list probed: an IVF-Flat probe is an exact search
    index, q, x = _index("IVF32,Flat")
    _, ids = TokenProbe(index).search(q, 5, nprobe=1000)
    want = np.argsort(-(q @ x.T), axis=1)[:, :5]
    np.testing.assert_array_equal(np.sort(ids, axis=1), np.sort(want, axis=1))


def test_short_queries_search_wider():
    from xtrieve.config import SearchConfig

    c = SearchConfig(k_prime=64, nprobe=8, short_query_tokens=8)
    assert c.widened(40) == (64, 8) and c.widened(8) == (64, 8)
    assert c.widened(4) == (256, 32) and c.widened(1) == (4096, 512) and c.widened(6) == (113, 14)
    assert SearchConfig(k_prime=64, short_query_tokens=0).widened(1) == (64, 8)


def test_k_prime_grows_with_the_collection_past_its_reference():
    from xtrieve.config import SearchConfig
    from xtrieve.errors import ConfigError

    c = SearchConfig(k_prime=64, k_prime_reference_vectors=1000)
    assert c.scaled_k_prime(0) == 64 and c.scaled_k_prime(1000) == 64
    assert c.scaled_k_prime(2000) == 128 and c.scaled_k_prime(1001) == 65  # rounded up
    assert c.widened(40, 3000) == (192, 8) and c.widened(4, 3000) == (768, 32)
    assert SearchConfig(k_prime=64, k_prime_reference_vectors=0).scaled_k_prime(10 ** 9) == 64
    with pytest.raises(ConfigError, match="k_prime_reference_vectors"):
        SearchConfig(k_prime_reference_vectors=-1)


def test_the_rerank_deepens_for_short_documents():
    from xtrieve.config import SearchConfig
    from xtrieve.errors import ConfigError

    c = SearchConfig(n_rerank=64, rerank_reference_vectors=64)
    assert c.rerank_depth(10, 64) == 64 and c.rerank_depth(10, 700) == 64 and c.rerank_depth(100, 700) == 100
    assert c.rerank_depth(10, 32) == 128 and c.rerank_depth(10, 7.6) == 512 and c.rerank_depth(10, 1) == 512  # at most 8x
    assert c.rerank_depth(1000, 1) == 1000 and c.rerank_depth(10, 0) == 64
    assert SearchConfig(n_rerank=64, rerank_reference_vectors=0).rerank_depth(10, 1) == 64
    with pytest.raises(ConfigError, match="rerank_reference_vectors"):
        SearchConfig(rerank_reference_vectors=-1)


def test_a_collection_of_short_documents_reranks_more_candidates(tmp_path, monkeypatch):
    import xtrieve
    from xtrieve.retrieve.searcher import Searcher

    rng = np.random.default_rng(0)
    docs = [rng.standard_normal((4, 16)).astype(np.float32) for _ in range(600)]
    idx = xtrieve.Index.build_from_embeddings(tmp_path / "short", [f"d{i}" for i in range(600)], docs)
    depths = []
    real = Searcher._exact_scores

    def counted(self, q, qd, cand, centroid_sims):
        depths.append(len(cand))
        return real(self, q, qd, cand, centroid_sims)

    monkeypatch.setattr(Searcher, "_exact_scores", counted)
    idx.search(rng.standard_normal((20, 16)).astype(np.float32), k=10)
    assert depths == [512]  # 64 candidates for documents of 64 vectors; these hold 4
    depths.clear()
    idx.search(rng.standard_normal((20, 16)).astype(np.float32), k=10, config={"rerank_reference_vectors": 0})
    assert depths == [64]


def test_nprobe_rises_when_k_would_exhaust_the_probed_lists():
    from xtrieve.retrieve.probe import PROBED_PER_RETRIEVED

    index, q, _ = _index("IVF32,Flat")  # 3,000 vectors: ~94 per list
    probe = TokenProbe(index)
    assert probe.nprobe_for(10, 4) == 4
    mean_list = index.ntotal / 32
    wanted = probe.nprobe_for(400, 4)
    assert wanted * mean_list >= PROBED_PER_RETRIEVED * 400 > (wanted - 1) * mean_list
    assert probe.nprobe_for(10 ** 6, 4) == 32  # never past every list
    assert TokenProbe(faiss.index_factory(DIM, "Flat", faiss.METRIC_INNER_PRODUCT)).nprobe_for(400, 4) == 4


def test_probe_searches_a_refine_index_with_nprobe_and_selector():
    # a refine index takes IndexRefineSearchParameters, the IVF ones going to its base index
    index, q, x = _index("IVF32,Flat,RFlat")
    probe = TokenProbe(index)
    assert probe.ivf is not None and probe.centroids is None
    _, ids = probe.search(q, 5, nprobe=1000)  # every list: exact
    want = np.argsort(-(q @ x.T), axis=1)[:, :5]
    np.testing.assert_array_equal(np.sort(ids, axis=1), np.sort(want, axis=1))
    allowed = np.zeros(index.ntotal, dtype=bool)
    allowed[1::4] = True
    bits = np.packbits(allowed, bitorder="little")
    sel = faiss.IDSelectorBitmap(index.ntotal, faiss.swig_ptr(bits))
    _, ids = probe.search(q, 10, nprobe=4, selector=sel)
    assert (ids >= 0).all() and allowed[ids].all()
    params = faiss.IndexRefineSearchParameters(base_index_params=faiss.SearchParametersIVF(nprobe=4, sel=sel))
    np.testing.assert_array_equal(ids, index.search(q, 10, params=params)[1])


@pytest.mark.parametrize("factory", ["PCA8,IVF32,Flat", "HNSW16", "Flat,RFlat"])
def test_probe_passes_the_selector_through_other_wrappers(factory):
    index, q, _ = _index(factory)
    allowed = np.arange(index.ntotal) % 3 == 0
    bits = np.packbits(allowed, bitorder="little")
    sel = faiss.IDSelectorBitmap(index.ntotal, faiss.swig_ptr(bits))
    _, ids = TokenProbe(index).search(q, 10, nprobe=8, selector=sel)
    assert (ids >= 0).all() and allowed[ids].all()


def test_a_filter_widens_the_probe_so_the_probed_lists_still_hold_enough_vectors():
    from xtrieve.retrieve.probe import PROBED_PER_RETRIEVED

    rng = np.random.default_rng(3)
    x = rng.standard_normal((4096, 16)).astype(np.float32)
    index = faiss.index_factory(16, "IVF64,Flat", faiss.METRIC_INNER_PRODUCT)
    index.train(x)
    index.add(x)
    probe = TokenProbe(index)
    assert probe.nprobe_for(64, 2) == PROBED_PER_RETRIEVED * 64 // 64  # 64 vectors a list: 2 lists
    assert probe.nprobe_for(64, 2, allowed=0.25) == 8
    assert probe.nprobe_for(64, 2, allowed=0.001) == 16  # at most MAX_FILTER_WIDENING (8) x the unfiltered lists
