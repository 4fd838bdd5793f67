"""SegmentVectors gathers: a run of consecutive docs (views) equals doc-by-doc copies."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import xtrieve
from helpers import unit_token_docs
from xtrieve.retrieve.maxsim import Gathered, SegmentVectors, chunk_maxsim


@pytest.mark.parametrize("config", [
    {"vector_storage": "int8"}, {"vector_storage": "float16"},
    {"vector_storage": "int4", "flat_max_vectors": 100, "nlist": 4},  # residuals: per-row IVF lists
])
def test_a_run_of_docs_gathers_as_its_docs_one_by_one(tmp_path, config):
    rng = np.random.default_rng(3)
    docs = unit_token_docs(rng, 40, 32, 2, 12)
    idx = xtrieve.Index.build_from_embeddings(tmp_path / "ix", [f"d{i}" for i in range(40)], docs, config=config)
    vectors = SegmentVectors(idx.snapshot.segments[0])
    assert (vectors.lists is not None) == ("nlist" in config)
    run = np.arange(5, 31)
    whole = vectors.gather_stored(run)
    single = Gathered.joined([vectors.gather_stored(run[i:i + 1]) for i in range(len(run))])
    assert torch.equal(whole.codes, single.codes) and np.array_equal(whole.bounds, single.bounds)
    for name in ("scales", "lists"):
        a, b = getattr(whole, name), getattr(single, name)
        assert (a is None and b is None) or torch.equal(a, b)
    query = torch.from_numpy(unit_token_docs(rng, 1, 32, 12, 13)[0])
    centroid_sims = None if whole.lists is None else vectors.bases @ query.T
    np.testing.assert_array_equal(chunk_maxsim(query, whole, centroid_sims, per_token=False),
                                  chunk_maxsim(query, single, centroid_sims, per_token=False))


@pytest.mark.parametrize("keep, spanned", [
    (lambda n: np.delete(np.arange(n), [3, 17, 40]), True),  # a few left out: scored over the whole run
    (lambda n: np.arange(0, n, 3), False),                   # most left out: gathered as they are
    (lambda n: np.array([9, 2, 30, 31]), False),             # unsorted
])
def test_docs_with_gaps_score_as_each_doc_alone(tmp_path, monkeypatch, keep, spanned):
    rng = np.random.default_rng(5)
    docs = unit_token_docs(rng, 60, 32, 2, 12)
    idx = xtrieve.Index.build_from_embeddings(tmp_path / "ix", [f"d{i}" for i in range(60)], docs)
    vectors = SegmentVectors(idx.snapshot.segments[0])
    chosen = keep(60)
    query = torch.from_numpy(unit_token_docs(rng, 1, 32, 12, 13)[0])
    alone = np.concatenate([vectors.token_maxima(query, np.array([d])) for d in chosen], axis=1)
    gathered = []
    gather = vectors.gather_stored
    monkeypatch.setattr(vectors, "gather_stored", lambda docs: gathered.append(len(docs)) or gather(docs))
    np.testing.assert_array_equal(vectors.token_maxima(query, chosen), alone)
    assert gathered == [60 if spanned else len(chosen)]
    np.testing.assert_array_equal(vectors.maxsim(query, chosen), alone.sum(axis=0))
