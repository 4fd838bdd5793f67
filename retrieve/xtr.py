"""XTR scoring from token retrieval: best retrieved similarity per query token per doc, a
missing one imputed from that query token's lowest retrieved similarity.

XTR imputes the lowest retrieved similarity itself, an upper bound on the missing one. The
rerank can measure how far below it missing similarities really lie
(:meth:`RetrievedTable.missing_gap`): the first documents it scores exactly show them, and
imputing that much lower ranks the rest of the candidates closer to their MaxSim order.
"""
from __future__ import annotations

import numpy as np


def global_top(scores: np.ndarray, keys: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Keep the top-k columns per row of (scores, keys) [n_q, m] (invalid scores = -inf)."""
    if scores.shape[1] <= k:
        return scores, keys
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return np.take_along_axis(scores, part, axis=1), np.take_along_axis(keys, part, axis=1)


class RetrievedTable:
    """One query's token retrieval as a table: the candidate doc keys ``cand``, each query
    token's best retrieved similarity per candidate ``best`` [n_q, n_cand] (-inf where none of
    the doc's tokens was retrieved) and each query token's lowest retrieved similarity
    ``floor`` [n_q] (0 for a token that retrieved nothing).

    scores, doc_keys: [n_q, k'] retrieved similarities and the global doc key of each
    retrieved token (-1 / -inf where nothing was retrieved).
    """

    def __init__(self, scores: np.ndarray, doc_keys: np.ndarray) -> None:
        n_q = scores.shape[0]
        valid = doc_keys >= 0
        floor = np.where(valid, scores, np.inf).min(axis=1) if scores.shape[1] else np.full(n_q, np.inf)
        self.floor = np.where(np.isfinite(floor), floor, 0.0).astype(np.float32)
        self.cand, inverse = np.unique(doc_keys[valid], return_inverse=True)
        self.best = np.full((n_q, len(self.cand)), -np.inf, dtype=np.float32)
        np.maximum.at(self.best, (np.nonzero(valid)[0], inverse), scores[valid].astype(np.float32))
        self.missing = ~np.isfinite(self.best)
        # XTR score = retrieved sum + imputed sum; the latter is linear in the imputed gap
        self._retrieved = np.where(self.missing, np.float32(0), self.best).sum(axis=0)
        self._floors = self.floor @ self.missing
        self._n_missing = self.missing.sum(axis=0)

    def __len__(self) -> int:
        return len(self.cand)

    def scores(self, gap: float = 0.0) -> np.ndarray:
        """XTR score per candidate: retrieved similarities, and ``floor - gap`` where missing."""
        return self._retrieved + self._floors - np.float32(gap) * self._n_missing

    def missing_gap(self, cols: np.ndarray, exact: np.ndarray) -> float:
        """How far below the floor missing similarities lie: the median of floor - exact over the
        entries of candidates ``cols`` that token retrieval missed, given those candidates' exact
        per-token similarities ``exact`` [n_q, len(cols)]; 0 when none was missed (never negative)."""
        missing = self.missing[:, cols] & np.isfinite(exact)
        if not missing.any():
            return 0.0
        return max(0.0, float(np.median((self.floor[:, None] - exact)[missing])))


def top_indices(scores: np.ndarray, n: int) -> np.ndarray:
    """Indices of the ``n`` highest scores (in no particular order)."""
    if n >= len(scores):
        return np.arange(len(scores))
    return np.argpartition(-scores, n - 1)[:n]
