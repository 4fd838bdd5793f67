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


class WordHashEncoder:
    """A fake Encoder for index tests: each word -> a fixed random unit vector (seeded by its
    sha256), one vector per word; documents pooled by keeping every pool_factor-th vector.

    With ``dense_weight`` > 0 it also returns a dense embedding (the normalised mean of the
    word vectors), like a model that fuses one into the score.
    """

    def __init__(self, dim: int = 8, name: str = "fake", head: str = "0" * 64, dense_weight: float = 0.0,
                 pool_factor: int = 1):
        from xtrieve.config import EncoderConfig

        self.config = EncoderConfig(dim=dim, dense_weight=dense_weight, pool_factor=pool_factor)
        self.name, self.head = name, head

    def identity(self) -> dict:
        return {"name": self.name, "head_sha256": self.head, "dim": self.config.dim, "config": self.config.to_dict()}

    def save(self, folder) -> None:
        import json
        from pathlib import Path

        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / "fake.json").write_text(json.dumps(self.identity()))

    def word_vector(self, word: str) -> np.ndarray:
        import hashlib

        seed = int.from_bytes(hashlib.sha256(word.lower().encode()).digest()[:4], "little")
        v = np.random.default_rng(seed).standard_normal(self.config.dim)
        return (v / np.linalg.norm(v)).astype(np.float32)

    def encode(self, texts, is_query, batch_size=32, pool_factor=None, show_progress=None):
        from xtrieve.types import Encoded

        assert all(isinstance(t, str) and t.strip() for t in texts)
        vecs = [np.stack([self.word_vector(w) for w in t.split()]) for t in texts]
        dense = None
        if self.config.dense_weight > 0:
            means = np.stack([v.mean(0) for v in vecs])
            dense = means / np.linalg.norm(means, axis=1, keepdims=True)
        pf = 1 if is_query else (pool_factor or self.config.pool_factor)
        return Encoded(vectors=[v[::pf] for v in vecs], n_tokens=[len(v) for v in vecs], dense=dense)

    def encode_queries(self, texts, batch_size=32, show_progress=None):
        return self.encode(texts, True).vectors

    def encode_documents(self, texts, batch_size=32, pool_factor=None, show_progress=None):
        return self.encode(texts, False, pool_factor=pool_factor).vectors
