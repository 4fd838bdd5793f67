"""Typed results returned by the public API."""
from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class Hit:
    """One ranked document: its id, its score and its metadata columns."""

    doc_id: str
    score: float
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class IndexInfo:
    """What ``Index.info()`` and ``xtrieve info`` report."""

    path: str
    n_docs: int
    n_deleted: int
    n_tokens: int
    n_vectors: int
    dim: int
    n_segments: int
    bytes: int
    model: str | None
    generation: int
    faiss: list[str]
    vector_storage: str
    pool_factor: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
