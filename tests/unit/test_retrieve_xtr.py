"""XTR scoring: the retrieved table, imputation at the floor and at the measured gap."""
from __future__ import annotations

import numpy as np
import pytest

from xtrieve.config import SearchConfig
from xtrieve.errors import ConfigError
from helpers import unit_token_docs
from xtrieve.retrieve.searcher import MEASURED_FRACTION
from xtrieve.retrieve.xtr import RetrievedTable, top_indices

NEG = -np.inf


def table():
    # 3 query tokens, k' = 3; doc keys 7, 9, 12; token 2 retrieved nothing
    scores = np.array([[0.9, 0.8, 0.5], [0.7, 0.6, NEG], [NEG, NEG, NEG]], dtype=np.float32)
    keys = np.array([[7, 9, 7], [12, 7, -1], [-1, -1, -1]])
    return RetrievedTable(scores, keys)


def test_the_table_keeps_each_tokens_best_and_its_floor():
    t = table()
    assert t.cand.tolist() == [7, 9, 12]
    np.testing.assert_allclose(t.best, [[0.9, 0.8, NEG], [0.6, NEG, 0.7], [NEG, NEG, NEG]], rtol=1e-6)
    np.testing.assert_allclose(t.floor, [0.5, 0.6, 0.0])  # no retrieval: floor 0


@pytest.mark.parametrize("gap", [0.0, 0.25])
def test_scores_impute_the_floor_minus_the_gap(gap):
    t = table()
    want = np.where(np.isfinite(t.best), t.best, (t.floor - gap)[:, None]).sum(axis=0)
    np.testing.assert_allclose(t.scores(gap), want, rtol=1e-6)
    # XTR's own imputation (gap 0) bounds every doc's score from above
    assert np.all(t.scores(0.0) >= t.scores(gap))


def test_the_missing_gap_is_the_median_over_missed_entries_only():
    t = table()
    cols = np.array([0, 2])  # docs 7 and 12
    exact = np.array([[0.9, 0.1], [0.6, 0.7], [0.3, 0.2]], dtype=np.float32)
    # missed: (token 0, doc 12) 0.5 - 0.1; (token 2, doc 7) 0 - 0.3; (token 2, doc 12) 0 - 0.2
    assert t.missing_gap(cols, exact) == 0.0  # median -0.2: never above the floor
    exact[2] = [-0.5, -0.1]  # now: 0.4, 0.5, 0.1 -> median 0.4
    assert t.missing_gap(cols, exact) == pytest.approx(0.4)
    full = RetrievedTable(np.array([[0.9, 0.8]], dtype=np.float32), np.array([[3, 4]]))
    assert full.missing_gap(np.array([0, 1]), np.array([[0.9, 0.8]], dtype=np.float32)) == 0.0
    empty = RetrievedTable(np.full((2, 3), NEG, dtype=np.float32), np.full((2, 3), -1))
    assert len(empty) == 0 and empty.scores().shape == (0,)


def test_top_indices():
    s = np.array([0.1, 0.9, 0.5, 0.7])
    assert sorted(top_indices(s, 2).tolist()) == [1, 3]
    assert sorted(top_indices(s, 9).tolist()) == [0, 1, 2, 3]


def test_imputation_is_a_checked_config_key():
    assert SearchConfig().imputation == "floor"
    with pytest.raises(ConfigError, match="imputation"):
        SearchConfig(imputation="zero")


@pytest.fixture(scope="module")
def ivf_corpus(tmp_path_factory):
    import xtrieve

    rng = np.random.default_rng(3)
    docs = unit_token_docs(rng, 600, 32, 5, 40)
    idx = xtrieve.Index.build_from_embeddings(tmp_path_factory.mktemp("xtr") / "ix", [f"d{i}" for i in range(600)],
                                              docs, config={"flat_max_vectors": 1000, "nlist": 32})
    queries = []
    for i in rng.choice(600, 10, replace=False):
        q = docs[i][:6] + 0.25 * rng.standard_normal((min(6, len(docs[i])), 32)).astype(np.float32)
        queries.append(q / np.linalg.norm(q, axis=1, keepdims=True))
    s = idx._get_searcher()
    assert s._probe(0).centroids is not None  # an IVF segment: token retrieval is approximate
    return s, queries


def test_measured_imputation_reranks_the_budget_in_two_passes_with_exact_scores(ivf_corpus, monkeypatch):
    s, queries = ivf_corpus
    cfg = SearchConfig(k_prime=16, n_rerank=40, nprobe=4, imputation="measured", rerank_reference_vectors=0)
    passes = []
    real = s._exact_scores
    monkeypatch.setattr(s, "_exact_scores", lambda q, qd, cand, sims: passes.append(cand.copy()) or real(q, qd, cand, sims))
    two_passes = 0
    for q in queries:
        passes.clear()
        hits = s.search([q], k=10, config=cfg)[0]
        truth = {h.doc_id: h.score for h in s.search([q], k=600, exhaustive=True)[0]}
        assert all(h.score == pytest.approx(truth[h.doc_id], rel=1e-5, abs=1e-5) for h in hits)
        if len(passes) == 2:  # more candidates than the budget: a quarter first, then the rest
            assert len(passes[0]) == int(40 * MEASURED_FRACTION) and len(passes[1]) == 40 - len(passes[0])
            assert not set(passes[0].tolist()) & set(passes[1].tolist())
            two_passes += 1
        else:
            assert len(passes) == 1
    assert two_passes > 0


def test_measured_imputation_agrees_with_exhaustive_at_least_as_well_as_the_floor(ivf_corpus):
    s, queries = ivf_corpus
    agree, top1 = {}, {}
    for imputation in ("floor", "measured"):
        cfg = SearchConfig(k_prime=16, n_rerank=20, nprobe=4, imputation=imputation)
        overlap, same_first = [], []
        for q in queries:
            fast = [h.doc_id for h in s.search([q], k=10, config=cfg)[0]]
            exact = [h.doc_id for h in s.search([q], k=10, exhaustive=True)[0]]
            same_first.append(fast[0] == exact[0])
            overlap.append(len(set(fast) & set(exact)) / 10)
        agree[imputation], top1[imputation] = np.mean(overlap), np.mean(same_first)
    # random tokens: a hard case for token retrieval (k' 16 of ~13,000 vectors)
    assert agree["measured"] >= agree["floor"] - 0.05 and top1["measured"] >= top1["floor"] - 0.1
    assert top1["measured"] >= 0.8


def test_a_collection_past_the_reference_size_retrieves_a_larger_k_prime(ivf_corpus, monkeypatch):
    s, queries = ivf_corpus
    seen = []
    real = s._retrieve
    monkeypatch.setattr(s, "_retrieve", lambda qs, allowed, k_prime, nprobe: seen.append((k_prime, nprobe))
                        or real(qs, allowed, k_prime, nprobe))
    fixed = SearchConfig(k_prime=16, nprobe=4, short_query_tokens=0, k_prime_reference_vectors=0)
    scaled = fixed.replace(k_prime_reference_vectors=s.n_vectors // 4)
    agree = {}
    for name, cfg in (("fixed", fixed), ("scaled", scaled)):
        seen.clear()
        overlap = []
        for q in queries:
            fast = [h.doc_id for h in s.search([q], k=10, config=cfg)[0]]
            exact = [h.doc_id for h in s.search([q], k=10, exhaustive=True)[0]]
            overlap.append(len(set(fast) & set(exact)) / 10)
        agree[name] = np.mean(overlap)
        assert {k for k, _ in seen} == {cfg.scaled_k_prime(s.n_vectors)}
    assert scaled.scaled_k_prime(s.n_vectors) >= 4 * 16
    assert agree["scaled"] >= agree["fixed"]
