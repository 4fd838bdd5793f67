"""Tombstone files: deleted-gNNNNNN.arrow holds the deleted local doc numbers of a segment."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from xtrieve.errors import IndexFormatError
from xtrieve.index.arrow_numpy import as_numpy
from xtrieve.index.fsio import fsync_file, sha256_file


def tombstone_name(segment: str, generation: int) -> str:
    return f"{segment}/deleted-g{generation:06d}.arrow"


def write_tombstones(root: Path, rel: str, deleted: np.ndarray) -> str:
    """Write the local doc numbers where ``deleted`` is True; fsync; return the sha256."""
    path = root / rel
    docs = np.nonzero(deleted)[0].astype(np.int32)
    table = pa.table({"doc": pa.array(docs)})
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    fsync_file(path)
    return sha256_file(path)


def read_tombstones(root: Path, rels: list[str], n_docs: int) -> np.ndarray:
    """Boolean mask [n_docs] from the segment's tombstone files (usually zero or one)."""
    mask = np.zeros(n_docs, dtype=bool)
    for rel in rels:
        path = root / rel
        try:
            with pa.memory_map(str(path), "r") as f:
                docs = as_numpy(pa.ipc.open_file(f).read_all().column("doc")).astype(np.int64)
        except FileNotFoundError:
            raise  # a writer may have replaced the snapshot: the store retries
        except (pa.ArrowInvalid, KeyError, OSError) as exc:  # a truncated footer reads out of bounds (OSError)
            raise IndexFormatError(f"corrupt tombstone file {path}: {exc}") from None
        if len(docs) and (docs.min() < 0 or docs.max() >= n_docs):
            raise IndexFormatError(f"corrupt tombstone file {path}: doc number out of range")
        mask[docs] = True
    return mask
