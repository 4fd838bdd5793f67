"""Helpers shared by the unit tests (on sys.path through pytest's ``pythonpath``)."""
from __future__ import annotations

import numpy as np


def unit_token_docs(rng: np.random.Generator, n: int, dim: int, lo: int = 2, hi: int = 12) -> list[np.ndarray]:
    """n random documents, each [lo..hi) L2-normalised float32 token vectors of ``dim``."""
    out = []
    for _ in range(n):
        x = rng.standard_normal((int(rng.integers(lo, hi)), dim)).astype(np.float32)
        out.append(x / np.linalg.norm(x, axis=1, keepdims=True))
    return out
