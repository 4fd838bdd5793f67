"""XTR scoring from token retrieval: best retrieved similarity per query token per doc,
a missing one imputed with that query token's lowest retrieved similarity."""
from __future__ import annotations

import numpy as np


def global_top(scores: np.ndarray, keys: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Keep the top-k columns per row of (scores, keys) [n_q, m] (invalid scores = -inf)."""
    if scores.shape[1] <= k:
        return scores, keys
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return np.take_along_axis(scores, part, axis=1), np.take_along_axis(keys, part, axis=1)


def xtr_scores(scores: np.ndarray, doc_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Candidate doc keys and their XTR scores.

    scores, doc_keys: [n_q, k'] retrieved similarities and the global doc key of each
    retrieved token (-1 / -inf where nothing was retrieved).
    """
    valid = doc_keys >= 0
    if not valid.any():
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    n_q = scores.shape[0]
    # imputation value: the lowest retrieved similarity of each query token (0 if none)
    masked = np.where(valid, scores, np.inf)
    floor = masked.min(axis=1)
    floor = np.where(np.isfinite(floor), floor, 0.0).astype(np.float32)
    cand, inverse = np.unique(doc_keys[valid], return_inverse=True)
    table = np.repeat(floor[:, None], len(cand), axis=1)
    rows = np.nonzero(valid)[0]
    np.maximum.at(table, (rows, inverse), scores[valid].astype(np.float32))
    return cand, table.sum(axis=0)
