"""Tombstone files: deleted-gNNNNNN.arrow holds the deleted local doc numbers of a segment."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from xtrieve.errors import IndexFormatError
from xtrieve.index.arrow_numpy import as_numpy
from xtrieve.index.fsio import fsync_file, make_room, read_arrow_file, sha256_file


def tombstone_name(segment: str, generation: int) -> str:
    return f"{segment}/deleted-g{generation:06d}.arrow"


def write_tombstones(root: Path, rel: str, deleted: np.ndarray) -> str:
    """Write the local doc numbers where ``deleted`` is True; fsync; return the sha256."""
    path = root / rel
    docs = np.nonzero(deleted)[0].astype(np.int32)
    table = pa.table({"doc": pa.array(docs)})
    with pa.OSFile(str(make_room(path)), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    fsync_file(path)
    return sha256_file(path)


def read_tombstones(root: Path, rels: list[str], n_docs: int) -> np.ndarray:
    """Boolean mask [n_docs] from the segment's tombstone files (usually zero or one)."""
    mask = np.zeros(n_docs, dtype=bool)
    for rel in rels:
        path = root / rel
        table = read_arrow_file(path, "tombstone file")
        if "doc" not in table.column_names:
            raise IndexFormatError(f"corrupt tombstone file {path}: no 'doc' column")
        try:
            docs = as_numpy(table.column("doc")).astype(np.int64)
        except (ValueError, TypeError) as exc:  # nulls, or not numbers
            raise IndexFormatError(f"corrupt tombstone file {path}: {exc}") from None
        if len(docs) and (docs.min() < 0 or docs.max() >= n_docs):
            raise IndexFormatError(f"corrupt tombstone file {path}: doc number out of range")
        mask[docs] = True
    return mask
