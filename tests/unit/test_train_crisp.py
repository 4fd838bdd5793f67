"""CRISP clustering in the forward pass: gradients reach the head, assignments carry none."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from xtrieve.encode.crisp import cluster_labels, crisp_pool, maxsim, pool_by_labels
from xtrieve.encode.pooling import pool_document, pooled_size


def _docs(seed=0, n=3, L=12, hidden=16, dim=8):
    g = torch.Generator().manual_seed(seed)
    states = torch.randn(n, L, hidden, generator=g)
    lengths = torch.tensor([L, L - 3, 5][:n])
    mask = torch.arange(L)[None, :] < lengths[:, None]
    head = torch.nn.Linear(hidden, dim, bias=False)
    return states, mask, head


@pytest.mark.parametrize("method", ["ward", "kmeans"])
def test_clustering_is_differentiable_wrt_vectors_and_reaches_the_head(method):
    states, mask, head = _docs()
    x = F.normalize(head(states), dim=-1)
    cent, cmask = crisp_pool(x, mask, 3, method)
    # k = ceil(n / 3) centroids per document at most
    for i, n in enumerate(mask.sum(1).tolist()):
        assert 1 <= int(cmask[i].sum()) <= math.ceil(n / 3)
    q = F.normalize(torch.randn(2, 4, 8), dim=-1)
    loss = maxsim(q, torch.ones(2, 4, dtype=torch.bool), cent, cmask).sum()
    loss.backward()
    assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0
    assert torch.allclose(cent.norm(dim=-1)[cmask], torch.ones(int(cmask.sum())), atol=1e-5)


def test_assignment_carries_no_gradient():
    states, mask, head = _docs(1)
    x = F.normalize(head(states), dim=-1)
    labels = cluster_labels(x, mask, 2, "ward")
    assert not labels.requires_grad and labels.dtype == torch.long
    assert bool((labels[~mask] == -1).all())
    # the gradient through crisp_pool equals the gradient with the labels held as constants
    w = torch.randn(*x.shape[:1], int(labels.max()) + 1, 8)
    g1 = torch.autograd.grad((crisp_pool(x, mask, 2, "ward")[0] * w).sum(), head.weight, retain_graph=True)[0]
    g2 = torch.autograd.grad((pool_by_labels(x, labels.clone())[0] * w).sum(), head.weight)[0]
    assert torch.allclose(g1, g2, atol=1e-6)


def test_ward_clustering_matches_the_index_pooling():
    states, mask, head = _docs(2)
    with torch.no_grad():
        x = F.normalize(head(states), dim=-1)
        cent, cmask = crisp_pool(x, mask, 3, "ward")
    for i in range(x.shape[0]):
        n = int(mask[i].sum())
        ref = pool_document(x[i, :n].numpy(), 3)
        got = cent[i][cmask[i]].numpy()
        # same centroids up to cluster order
        assert ref.shape == got.shape
        assert np.allclose(np.sort(ref @ ref.T, axis=None), np.sort(got @ got.T, axis=None), atol=1e-5)
        assert np.allclose((ref @ got.T).max(1), 1.0, atol=1e-5)


def test_training_clusters_keep_the_floor_the_index_keeps():
    states, mask, head = _docs(4)
    with torch.no_grad():
        x = F.normalize(head(states), dim=-1)
        labels = cluster_labels(x, mask, 4, "ward", min_vectors=5)
        cent, cmask = crisp_pool(x, mask, 4, "ward", min_vectors=5)
    for i in range(x.shape[0]):
        n = int(mask[i].sum())
        assert int(labels[i].max()) + 1 == int(cmask[i].sum()) == pooled_size(n, 4, 5) == len(pool_document(x[i, :n].numpy(), 4, min_vectors=5))


def test_pool_factor_one_is_identity_and_maxsim_matches_a_loop():
    states, mask, head = _docs(3)
    x = F.normalize(head(states), dim=-1)
    same, m = crisp_pool(x, mask, 1)
    assert same is x and m is mask
    q = F.normalize(torch.randn(2, 5, 8), dim=-1)
    qm = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]], dtype=torch.bool)
    s = maxsim(q, qm, x, mask, normalize_by_length=False)
    for b in range(2):
        for d in range(x.shape[0]):
            sim = q[b][qm[b]] @ x[d][mask[d]].T
            assert torch.allclose(s[b, d], sim.max(1).values.sum(), atol=1e-5)
