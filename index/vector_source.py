"""Where a new segment's vectors come from while it is written.

An add encodes documents, and their float vectors wait in a temp file (:class:`FileRows`).
A merge, compaction or metadata update copies documents that segments already store
(:class:`Copied`); their vectors stay there (:class:`CopiedRows`) and are decoded only when
something needs the floats, so the new segment can take their stored codes, and FAISS codes,
as they are.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, NamedTuple

import numpy as np


def vector_rows(offsets: np.ndarray, docs: np.ndarray) -> np.ndarray:
    """The vector rows of documents ``docs`` (local numbers) of a segment with ``offsets``, in order."""
    docs = np.asarray(docs, dtype=np.int64)
    starts, counts = offsets[docs], offsets[docs + 1] - offsets[docs]
    ends = np.cumsum(counts)
    return np.repeat(starts - (ends - counts), counts) + np.arange(int(ends[-1]) if len(ends) else 0)


class Copied(NamedTuple):
    """Documents copied from a segment: the segment (a SegmentReader), their local numbers and
    whether an int4 re-encoding keeps each vector's IVF list (not when the centroids are new)."""
    segment: Any
    docs: np.ndarray
    keep_lists: bool = True

    def counts(self) -> np.ndarray:
        return np.asarray(self.segment.vector_counts[self.docs], dtype=np.int64)

    def rows(self) -> np.ndarray:
        return vector_rows(self.segment.offsets, self.docs)

    def lists(self, rows: np.ndarray) -> np.ndarray | None:
        """The IVF list each of its vectors (``rows``: :meth:`rows`) has its int4 codes relative to
        in the segment (None: none kept), so that codes re-encoded against that centroid come out
        the same."""
        if not self.keep_lists or getattr(self.segment, "lists", None) is None:
            return None
        return self.segment.lists[rows].astype(np.int64)

    def sliced(self, start: int, stop: int) -> "Copied":
        return Copied(self.segment, self.docs[start:stop], self.keep_lists)


class FileRows:
    """Float vectors an add wrote to a temp file, read back as float32."""

    def __init__(self, path: Path, dtype: Any, n: int, dim: int) -> None:
        self.raw = np.memmap(path, dtype=dtype, mode="r", shape=(n, dim)) if n else np.zeros((0, dim), dtype=dtype)
        self.n, self.parts = n, None  # (parts: no copied documents here)

    def rows(self, idx: np.ndarray) -> np.ndarray:
        return np.asarray(self.raw[idx], dtype=np.float32)

    def chunk(self, start: int, stop: int) -> np.ndarray:
        return np.asarray(self.raw[start:stop], dtype=np.float32)

    def spans(self, size: int) -> Iterator[tuple[int, int, None]]:
        """(start, stop, None) pieces of at most ``size`` rows: none has stored codes."""
        for start in range(0, self.n, size):
            yield start, min(start + size, self.n), None


class CopiedRows:
    """Vectors of copied documents, left in the segments they come from: ``parts`` are
    (segment, its vector rows) pairs whose rows, in order, are the new rows."""

    def __init__(self, parts: list[tuple[Any, np.ndarray]], dim: int) -> None:
        self.parts, self.dim = parts, dim
        self.starts = np.concatenate([[0], np.cumsum([len(rows) for _, rows in parts])]).astype(np.int64)
        self.n = int(self.starts[-1])

    def rows(self, idx: np.ndarray) -> np.ndarray:
        idx = np.asarray(idx, dtype=np.int64)
        out = np.empty((len(idx), self.dim), dtype=np.float32)
        part = np.searchsorted(self.starts, idx, side="right") - 1
        for p in np.unique(part):
            here = part == p
            segment, rows = self.parts[p]
            out[here] = segment.decode(rows[idx[here] - self.starts[p]])
        return out

    def chunk(self, start: int, stop: int) -> np.ndarray:
        return self.rows(np.arange(start, min(stop, self.n)))

    def spans(self, size: int) -> Iterator[tuple[int, int, tuple[Any, np.ndarray]]]:
        """(start, stop, (segment, its rows)) pieces of at most ``size`` rows, one segment each."""
        for (segment, rows), base in zip(self.parts, self.starts):
            for s in range(0, len(rows), size):
                piece = rows[s:s + size]
                yield int(base) + s, int(base) + s + len(piece), (segment, piece)
