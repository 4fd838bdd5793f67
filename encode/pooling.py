"""Post-hoc token pooling: hierarchical (Ward) clustering of a document's token vectors."""
from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from xtrieve.config import POOL_METHODS
from xtrieve.errors import InputError


def check_pool_factor(pool_factor: Any) -> int:
    """``pool_factor`` if it is an int >= 1 (not a bool; 1 = no pooling), else InputError."""
    if isinstance(pool_factor, bool) or not isinstance(pool_factor, numbers.Integral) or pool_factor < 1:
        raise InputError(f"pool_factor must be an int >= 1 (1 = no pooling), got {pool_factor!r}")
    return int(pool_factor)


def pooled_size(n: int, pool_factor: int, min_vectors: int = 0) -> int:
    """How many vectors Ward pooling leaves of ``n``: ceil(n / pool_factor), but at least
    ``min_vectors`` (all n when fewer)."""
    if pool_factor <= 1 or n <= 1:
        return n
    return min(n, max(1, math.ceil(n / pool_factor), min_vectors))


def pool_document(vectors: np.ndarray, pool_factor: int, method: str = "ward", min_vectors: int = 0) -> np.ndarray:
    """Cluster ``vectors`` [n, dim] into about n / pool_factor vectors (pool_factor 1 returns
    the input unchanged), keeping at least ``min_vectors`` (a shorter document as it is).

    "ward": Ward agglomerative clustering of the vectors into :func:`pooled_size` clusters,
    so near-duplicate tokens merge first; each centroid renormalised. "pylate": as PyLate's
    ``pool_embeddings_hierarchical``: the first vector kept as it is, the others clustered by
    Ward linkage over their cosine distances into max((n - 1) // pool_factor, 1) plain means
    (at least ``min_vectors`` - 1 of them when that is set; PyLate has no floor).
    """
    pool_factor = check_pool_factor(pool_factor)
    if isinstance(min_vectors, bool) or not isinstance(min_vectors, numbers.Integral) or min_vectors < 0:
        raise InputError(f"min_vectors must be an int >= 0 (0 = no floor), got {min_vectors!r}")
    if method not in POOL_METHODS:
        raise InputError(f"pool method must be one of {', '.join(POOL_METHODS)}, got {method!r}")
    n = int(vectors.shape[0])
    if pool_factor == 1 or n <= 1:
        return vectors
    if method == "pylate":
        return _pool_like_pylate(vectors, pool_factor, min_vectors)
    k = pooled_size(n, pool_factor, min_vectors)
    if k >= n:
        return vectors
    x = np.asarray(vectors, dtype=np.float32)
    labels = ward_labels(x.astype(np.float64), k)
    n_clusters = int(labels.max()) + 1
    sums = np.zeros((n_clusters, x.shape[1]), dtype=np.float32)
    np.add.at(sums, labels, x)
    norms = np.linalg.norm(sums, axis=1, keepdims=True)
    return (sums / np.maximum(norms, 1e-12)).astype(np.float32)


def ward_labels(points_or_distances: np.ndarray, k: int) -> np.ndarray:
    """Labels 0..m-1 (m <= k) of Ward agglomerative clustering cut at k clusters, of points
    [n, d] or condensed distances (scipy's ``linkage`` input). One cluster is labelled here:
    scipy before 1.15 cut two points into two clusters when asked for one."""
    from scipy.cluster.hierarchy import fcluster, linkage

    tree = linkage(points_or_distances, method="ward")
    if k <= 1:
        return np.zeros(tree.shape[0] + 1, dtype=np.int32)
    return fcluster(tree, t=k, criterion="maxclust") - 1


def _pool_like_pylate(vectors: np.ndarray, pool_factor: int, min_vectors: int = 0) -> np.ndarray:
    import torch

    rest = np.ascontiguousarray(vectors[1:], dtype=np.float32)
    n = len(rest)
    k = max(n // pool_factor, 1, min_vectors - 1)
    if k >= n:
        return vectors
    rest_t = torch.from_numpy(rest)
    distances = 1 - torch.mm(rest_t, rest_t.t()).numpy()  # float32, as PyLate computes them
    labels = ward_labels(distances[np.triu_indices(n, k=1)], k)
    sums = torch.zeros(k, rest.shape[1]).index_add_(0, torch.from_numpy(labels.astype(np.int64)), rest_t).numpy()
    counts = np.bincount(labels, minlength=k)
    kept = counts > 0  # maxclust may give fewer clusters than asked
    pooled = sums[kept] / counts[kept, None].astype(np.float32)
    return np.concatenate([np.asarray(vectors[:1], dtype=np.float32), pooled]).astype(np.float32)


def pool_documents(docs: list[np.ndarray], pool_factor: int, method: str = "ward",
                   min_vectors: int = 0) -> list[np.ndarray]:
    """Apply :func:`pool_document` to every document."""
    if check_pool_factor(pool_factor) == 1:
        return docs
    return [pool_document(d, pool_factor, method, min_vectors) for d in docs]
