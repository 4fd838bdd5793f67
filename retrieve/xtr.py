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


def _run_starts(values: np.ndarray) -> np.ndarray:
    """Where each run of equal values of a sorted array starts (a bool mask; np.diff's prepend
    costs more than the comparison on a search's ~2,000 entries)."""
    out = np.empty(len(values), dtype=bool)
    out[:1] = True
    np.not_equal(values[1:], values[:-1], out=out[1:])
    return out


class RetrievedTable:
    """One query's token retrieval as a table: the candidate doc keys ``cand`` (sorted), each
    query token's lowest retrieved similarity ``floor`` [n_q] (0 for a token that retrieved
    nothing) and, per (query token, candidate) pair that retrieval reached, the best similarity
    among that doc's retrieved tokens. :attr:`best` shows the pairs as a dense [n_q, n_cand]
    matrix (-inf where none of the doc's tokens was retrieved).

    scores, doc_keys: [n_q, k'] retrieved similarities and the global doc key of each
    retrieved token (-1 / -inf where nothing was retrieved).

    The table is kept as its n_q x k' entries, not as the dense matrix: one sort groups them
    by (doc, query token), and an XTR score is a sum over a doc's entries plus its imputed
    rest, so building and scoring cost O(n_q k' log) whatever the number of candidates.
    """

    def __init__(self, scores: np.ndarray, doc_keys: np.ndarray) -> None:
        n_q, width = scores.shape
        self.n_q = n_q
        valid = doc_keys >= 0
        if width and valid.all():  # the usual case: every query token retrieved k' tokens
            self.floor = scores.min(axis=1).astype(np.float32)
            rows = np.repeat(np.arange(n_q), width)
            keys = doc_keys.reshape(-1).astype(np.int64, copy=False)
            retrieved = scores.reshape(-1).astype(np.float32, copy=False)
        else:
            floor = np.where(valid, scores, np.inf).min(axis=1) if width else np.full(n_q, np.inf)
            self.floor = np.where(np.isfinite(floor), floor, 0.0).astype(np.float32)
            rows = np.nonzero(valid)[0]
            keys = doc_keys[valid].astype(np.int64)
            retrieved = scores[valid].astype(np.float32)
        # one sort by (doc, query token): each pair's entries, then each doc's pairs, are runs
        pair_keys = keys * n_q + rows
        order = np.argsort(pair_keys)
        starts = np.flatnonzero(_run_starts(pair_keys[order]))
        firsts = order[starts]
        pair_docs = keys[firsts]
        self.rows = rows[firsts]
        self.values = np.maximum.reduceat(retrieved[order], starts) if len(starts) else np.empty(0, dtype=np.float32)
        new_doc = _run_starts(pair_docs)
        self.cand = pair_docs[new_doc]
        self.cols = np.cumsum(new_doc) - 1  # each pair's candidate column
        # XTR score = sum of the floors + what retrieval adds over them - the gap per missed token
        self._over_floor = np.bincount(self.cols, weights=self.values - self.floor[self.rows],
                                       minlength=len(self.cand)).astype(np.float32)
        self._n_missing = (n_q - np.bincount(self.cols, minlength=len(self.cand))).astype(np.float32)
        self._floor_sum = np.float32(self.floor.sum())

    def __len__(self) -> int:
        return len(self.cand)

    @property
    def best(self) -> np.ndarray:
        """Each query token's best retrieved similarity per candidate [n_q, n_cand] (-inf where missing)."""
        out = np.full((self.n_q, len(self.cand)), -np.inf, dtype=np.float32)
        out[self.rows, self.cols] = self.values
        return out

    def scores(self, gap: float = 0.0) -> np.ndarray:
        """XTR score per candidate: retrieved similarities, and ``floor - gap`` where missing."""
        return self._floor_sum + self._over_floor - np.float32(gap) * self._n_missing

    def missing_gap(self, cols: np.ndarray, exact: np.ndarray) -> float:
        """How far below the floor missing similarities lie: the median of floor - exact over the
        entries of candidates ``cols`` that token retrieval missed, given those candidates' exact
        per-token similarities ``exact`` [n_q, len(cols)]; 0 when none was missed (never negative)."""
        where = np.full(len(self.cand), -1, dtype=np.int64)
        where[cols] = np.arange(len(cols))
        picked = where[self.cols]
        hit = picked >= 0
        missing = np.isfinite(exact)
        missing[self.rows[hit], picked[hit]] = False
        if not missing.any():
            return 0.0
        return max(0.0, float(np.median((self.floor[:, None] - exact)[missing])))


def top_indices(scores: np.ndarray, n: int) -> np.ndarray:
    """Indices of the ``n`` highest scores (in no particular order)."""
    if n >= len(scores):
        return np.arange(len(scores))
    return np.argpartition(-scores, n - 1)[:n]
