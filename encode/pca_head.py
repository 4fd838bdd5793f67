"""Fit a linear head by PCA on backbone token states (the untrained starting head)."""
from __future__ import annotations

import numpy as np
import torch


def fit_pca_head(states: list[np.ndarray], dim: int, max_tokens: int = 400_000, seed: int = 0) -> torch.Tensor:
    """A [dim, hidden] projection onto the top principal directions of the token states.

    Directions are not centred (MaxSim compares raw directions), so this is the SVD of
    the uncentred token matrix: the subspace that keeps most of each vector's energy.
    """
    x = np.concatenate([s for s in states if len(s)], axis=0).astype(np.float32)
    if x.shape[0] > max_tokens:
        x = x[np.random.default_rng(seed).choice(x.shape[0], max_tokens, replace=False)]
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    cov = (x.T @ x) / x.shape[0]
    values, vectors = np.linalg.eigh(cov.astype(np.float64))
    top = vectors[:, np.argsort(values)[::-1][:dim]].T
    return torch.from_numpy(np.ascontiguousarray(top, dtype=np.float32))
