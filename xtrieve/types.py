"""Typed results returned by the public API."""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Iterator, SupportsIndex, overload

import numpy as np


@dataclasses.dataclass(frozen=True)
class Hit:
    """One ranked document: its id, its score and its metadata columns."""

    doc_id: str
    score: float
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __hash__(self) -> int:  # (its metadata dict is not hashable; equal hits share id and score)
        return hash((self.doc_id, self.score))


def make_hits(doc_ids: list[str], scores: list[float], metadata: list[dict[str, Any]]) -> list[Hit]:
    """Hits for parallel lists, ~3x faster than calling Hit() for each (a frozen dataclass's
    __init__ sets every field through object.__setattr__; a search returns up to k of them)."""
    new = object.__new__
    out = []
    for doc_id, score, meta in zip(doc_ids, scores, metadata):
        hit = new(Hit)
        fields = hit.__dict__
        fields["doc_id"], fields["score"], fields["metadata"] = doc_id, score, meta
        out.append(hit)
    return out


@dataclasses.dataclass(frozen=True, eq=False)
class Encoded(Sequence[np.ndarray]):
    """What ``Encoder.encode`` returns for a list of texts.

    ``vectors``: one float32 [n_vectors, dim] array per text (documents pooled by the pool
    factor); ``n_tokens``: each text's token vectors before pooling; ``dense``: [n_texts, hidden]
    L2-normalised mean of the backbone's token states, or None when the model does not add a
    dense score (``EncoderConfig.dense_weight`` 0); ``n_truncated``: texts longer than the model
    reads (their tail has no vectors). It is also the sequence of its vectors (``len``, indexing,
    iteration), as PyLate's ``encode`` returns them.
    """

    vectors: list[np.ndarray]
    n_tokens: list[int]
    dense: np.ndarray | None = None
    n_truncated: int = 0

    def __len__(self) -> int:
        return len(self.vectors)

    @overload
    def __getitem__(self, i: SupportsIndex) -> np.ndarray: ...

    @overload
    def __getitem__(self, i: slice) -> list[np.ndarray]: ...

    def __getitem__(self, i: SupportsIndex | slice) -> np.ndarray | list[np.ndarray]:
        return self.vectors[i]

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter(self.vectors)

    def __repr__(self) -> str:
        dense = None if self.dense is None else tuple(self.dense.shape)
        dim = self.vectors[0].shape[1] if self.vectors else None
        counts = self.n_tokens if len(self.n_tokens) <= 8 else [*self.n_tokens[:8], "..."]
        return (f"Encoded({len(self.vectors)} texts, dim={dim}, n_tokens={counts}, dense={dense}, "
                f"n_truncated={self.n_truncated})")


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
    # the fewest vectors the index's model pools a document to (None for an index built from
    # embeddings, or by a model whose config predates the setting)
    pool_min_vectors: int | None = None
    dense_weight: float = 0.0
    # how much of a text the index's model reads (None for an index built from embeddings)
    query_maxlen: int | None = None
    doc_maxlen: int | None = None
    doc_windows: int | None = None
    # the metadata columns, with their Arrow types ("int64", "string", ...); filters can also name
    # doc_id and (where stored) title
    metadata_columns: dict[str, str] = dataclasses.field(default_factory=dict)
    # bytes of the model folder inside the index (not in ``bytes``): a model from a folder is copied
    # whole, backbone included; the packaged default model's backbone stays in its package
    model_bytes: int = 0

    __hash__ = None  # type: ignore[assignment]  # (frozen, but it holds a list and a dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
