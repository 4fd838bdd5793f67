"""Post-hoc token pooling: hierarchical (Ward) clustering of a document's token vectors."""
from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from xtrieve.errors import InputError


def check_pool_factor(pool_factor: Any) -> int:
    """``pool_factor`` if it is an int >= 1 (not a bool; 1 = no pooling), else InputError."""
    if isinstance(pool_factor, bool) or not isinstance(pool_factor, numbers.Integral) or pool_factor < 1:
        raise InputError(f"pool_factor must be an int >= 1 (1 = no pooling), got {pool_factor!r}")
    return int(pool_factor)


def pool_document(vectors: np.ndarray, pool_factor: int) -> np.ndarray:
    """Cluster ``vectors`` [n, dim] into ceil(n / pool_factor) renormalised centroids.

    pool_factor 1 returns the input unchanged. Clustering is Ward agglomerative
    clustering, so near-duplicate tokens merge first.
    """
    pool_factor = check_pool_factor(pool_factor)
    n = int(vectors.shape[0])
    if pool_factor == 1 or n <= 1:
        return vectors
    k = max(1, math.ceil(n / pool_factor))
    if k >= n:
        return vectors
    from scipy.cluster.hierarchy import fcluster, linkage

    x = np.asarray(vectors, dtype=np.float32)
    labels = fcluster(linkage(x.astype(np.float64), method="ward"), t=k, criterion="maxclust") - 1
    n_clusters = int(labels.max()) + 1
    sums = np.zeros((n_clusters, x.shape[1]), dtype=np.float32)
    np.add.at(sums, labels, x)
    norms = np.linalg.norm(sums, axis=1, keepdims=True)
    return (sums / np.maximum(norms, 1e-12)).astype(np.float32)


def pool_documents(docs: list[np.ndarray], pool_factor: int) -> list[np.ndarray]:
    """Apply :func:`pool_document` to every document."""
    if check_pool_factor(pool_factor) == 1:
        return docs
    return [pool_document(d, pool_factor) for d in docs]
