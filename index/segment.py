"""One segment: docs.arrow + vectors.arrow (Arrow IPC, uncompressed, mmap) + tokens.faiss.

docs.arrow has one row per document: ``doc_id``, optional ``title``/``text``, metadata
columns and internal columns (``__offset`` first vector row, ``__n_vectors``,
``__n_tokens`` before pooling, and ``__dense``, the document's mean-pooled backbone
embedding as float16, when the model fuses it into the score). vectors.arrow has one
record batch with a FixedSizeList ``vector`` column: float16 [dim]; int8 [dim] plus a float32
``scale`` column; or uint8 [dim/2] packed 4-bit residual codes plus ``scale`` and, when the
segment's FAISS index is an IVF, ``list`` (each vector's IVF list: its centroid is the base
the codes are relative to). See ``xtrieve.index.codecs``. An exact Flat tokens.faiss is written
empty and filled from those codes when read (``faiss_build.refill_flat``).
"""
from __future__ import annotations

import errno
import logging
import os
import shutil
import threading
import weakref
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa

from xtrieve.errors import IndexFormatError, InputError
from xtrieve.faiss_loader import load_faiss
from xtrieve.index import faiss_build
from xtrieve.index.arrow_numpy import as_numpy
from xtrieve.index.codecs import check_int4_dim, decode_int4, list_dtype, quantize_int4, quantize_int8
from xtrieve.index.docs import check_one_type_per_column
from xtrieve.index.fsio import fsync_dir, fsync_file, read_arrow_file, regular, sha256_file
from xtrieve.index.manifest import SegmentEntry
from xtrieve.index.vector_source import Copied, CopiedRows, FileRows

log = logging.getLogger(__name__)
ALLOCATE_CHUNK = 1 << 20

DOCS, VECTORS, FAISS = "docs.arrow", "vectors.arrow", "tokens.faiss"
OFFSET, N_VECTORS, N_TOKENS, DENSE = "__offset", "__n_vectors", "__n_tokens", "__dense"
INTERNAL = (OFFSET, N_VECTORS, N_TOKENS, DENSE)
TEMP_SUFFIX = ".tmp"
CHUNK_ROWS = 1 << 16
# int4 residuals: the nearest centroids a vector is tried against (the best reconstruction wins)
RESIDUAL_CANDIDATES = 3

# builds the FAISS index of a finished segment: (n_vectors, rows(idx), chunks(), origins) ->
# (index, factory[, whether its IVF centroids are the template's, left out of its file]);
# origins: where every vector was copied from, in row order, as (source, its rows) pairs, else None
class SegmentClosed(InputError):
    """A segment's token index (or the IVF template it reads) was needed after its Index was
    closed and had not been read before: a write falls back to what needs neither."""


IndexBuilder = Callable[[int, Callable[[np.ndarray], np.ndarray], Callable[[], Any], "list | None"], tuple]


def _write_ipc(path: Path, table_or_batch) -> None:
    with pa.OSFile(str(path), "wb") as sink:
        with pa.ipc.new_file(sink, table_or_batch.schema) as writer:
            if isinstance(table_or_batch, pa.Table):
                writer.write_table(table_or_batch)
            else:
                writer.write_batch(table_or_batch)


def _fixed_list(flat: np.ndarray, arrow_type: pa.DataType, dim: int) -> pa.Array:
    values = pa.Array.from_buffers(arrow_type, flat.size, [None, pa.py_buffer(flat)])
    return pa.FixedSizeListArray.from_arrays(values, dim)


class SegmentWriter:
    """Streams documents into a new segment folder; new vectors go to a temp file as they come,
    copied documents' vectors stay in their segments (see ``xtrieve.index.vector_source``)."""

    def __init__(self, root: Path, name: str, dim: int, storage: str) -> None:
        self.root, self.name, self.dim, self.storage = root, name, dim, storage
        self.dir = root / name
        if self.dir.exists():  # an orphan of a crashed writer: never named by a manifest
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True)
        # int8 and int4 vectors wait in float32 (float16 storage: in float16, written as they are):
        # float16 flushed values under ~6e-5 to zero, which int8's per-vector scale keeps, and moved
        # int4's extreme values, and so its scales
        self._tmp_dtype = np.float16 if storage == "float16" else np.float32
        self._tmp_path = self.dir / f"vectors.{np.dtype(self._tmp_dtype).name}{TEMP_SUFFIX}"
        self._tmp = open(self._tmp_path, "wb")
        self._tables: list[pa.Table] = []
        self._counts: list[np.ndarray] = []
        self._tokens: list[np.ndarray] = []
        self._dense: list[np.ndarray | None] = []
        self._lists: list[np.ndarray] = []  # int4: IVF list hints per vector (-1: none)
        # (segment, vector rows) of documents copied so far; None once new vectors came
        self._copied: list[tuple[Any, np.ndarray]] | None = []
        self.n_docs = 0
        self.n_vectors = 0

    def append(self, table: pa.Table, vectors: np.ndarray | None, counts: np.ndarray, n_tokens: np.ndarray,
               dense: np.ndarray | None = None, copied: Copied | None = None) -> None:
        """Add documents: their rows (doc_id + stored columns), vectors [sum(counts), dim] and
        (optionally) their dense embeddings [n_docs, hidden]. Documents ``copied`` from a segment
        give no vectors: they are read from there when needed, and its stored and FAISS codes
        are copied where this segment codes them alike."""
        n = int(np.sum(counts))
        rows = None if copied is None else copied.rows()
        if copied is not None and self._copied is not None:
            self._copied.append((copied.segment, rows))
        else:
            for segment, before in self._copied or ():  # new vectors after copied ones: theirs go first
                self._write_floats(segment.decode(before))
            self._copied = None
            self._write_floats(vectors if copied is None else copied.segment.decode(rows))
        if self.storage == "int4":
            hints = None if copied is None else copied.lists(rows)
            self._lists.append(np.full(n, -1, dtype=np.int64) if hints is None else hints)
        self._tables.append(table)
        self._counts.append(np.asarray(counts, dtype=np.int64))
        self._tokens.append(np.asarray(n_tokens, dtype=np.int64))
        self._dense.append(None if dense is None else np.asarray(dense, dtype=np.float16))
        self.n_docs += table.num_rows
        self.n_vectors += n

    def _write_floats(self, vectors: np.ndarray) -> None:
        self._tmp.write(np.ascontiguousarray(vectors, dtype=self._tmp_dtype).tobytes())

    def abort(self) -> None:
        """Drop everything written so far."""
        if not self._tmp.closed:
            self._tmp.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def finish(self, build_index: IndexBuilder) -> SegmentEntry:
        """Write docs.arrow, vectors.arrow, tokens.faiss; fsync; return the manifest entry."""
        self._tmp.flush()
        os.fsync(self._tmp.fileno())
        self._tmp.close()
        n, dim = self.n_vectors, self.dim
        source: FileRows | CopiedRows = CopiedRows(self._copied, dim) if self._copied else \
            FileRows(self._tmp_path, self._tmp_dtype, n, dim)

        def chunks():
            for s in range(0, n, CHUNK_ROWS):
                yield source.chunk(s, s + CHUNK_ROWS)

        index, factory, *shared = build_index(n, source.rows, chunks, source.parts)
        self._write_vectors(source, index)
        faiss_build.write_index(index, self.dir / FAISS, bool(shared and shared[0]))
        del index, source
        self._tmp_path.unlink()
        self._write_docs()
        files = {}
        for base in (DOCS, VECTORS, FAISS):
            path = self.dir / base
            fsync_file(path)
            files[f"{self.name}/{base}"] = sha256_file(path)
        fsync_dir(self.dir)
        fsync_dir(self.root)
        n_tokens = int(sum(int(t.sum()) for t in self._tokens))
        return SegmentEntry(name=self.name, n_docs=self.n_docs, n_tokens=n_tokens, n_vectors=n,
                            faiss=factory, files=files)

    def _write_vectors(self, source: FileRows | CopiedRows, index) -> None:
        """vectors.arrow: copied documents keep their stored codes where their segment codes
        them as this one does (same storage and, for int4, the same IVF centroids); the other
        vectors are quantized."""
        n, dim = self.n_vectors, self.dim
        if self.storage == "float16" and isinstance(source, FileRows):
            batch = pa.record_batch([_fixed_list(source.raw.reshape(-1), pa.float16(), dim)], names=["vector"])
            _write_ipc(self.dir / VECTORS, batch)
            return
        int4 = self.storage == "int4"
        width = check_int4_dim(dim) if int4 else dim
        centroids = faiss_build.ivf_centroids(index) if int4 else None
        dtype = {"float16": np.float16, "int8": np.int8, "int4": np.uint8}[self.storage]
        codes_path = self.dir / f"vectors.codes{TEMP_SUFFIX}"
        _allocate(codes_path, n * width * np.dtype(dtype).itemsize)
        codes = np.memmap(codes_path, dtype=dtype, mode="r+", shape=(n, width)) if n else np.zeros((0, width), dtype)
        scales = None if self.storage == "float16" else np.empty(n, dtype=np.float32)
        lists = None if centroids is None else np.empty(n, dtype=list_dtype(len(centroids)))
        all_hints = np.concatenate(self._lists) if self._lists else np.full(n, -1, dtype=np.int64)
        alike: dict[int, bool] = {}  # id(segment) -> whether its codes are copied
        for start, stop, part in source.spans(CHUNK_ROWS):
            if part is not None and id(part[0]) not in alike:
                alike[id(part[0])] = self._codes_alike(part[0], centroids)
            if part is not None and alike[id(part[0])]:
                segment, rows = part
                codes[start:stop] = segment.vectors_raw[rows]
                if scales is not None:
                    scales[start:stop] = segment.scales[rows]
                if lists is not None:
                    lists[start:stop] = segment.lists[rows]
                continue
            chunk = source.chunk(start, stop)
            if self.storage == "float16":
                codes[start:stop] = chunk
            elif not int4:
                codes[start:stop], scales[start:stop] = quantize_int8(chunk)
            elif lists is None:
                codes[start:stop], scales[start:stop] = quantize_int4(chunk)
            else:
                hints = all_hints[start:stop]
                codes[start:stop], scales[start:stop], lists[start:stop] = \
                    _residual_int4(chunk, index, centroids, np.where(hints < len(centroids), hints, -1))
        if n:
            codes.flush()
        arrow_type = {"float16": pa.float16(), "int8": pa.int8(), "int4": pa.uint8()}[self.storage]
        columns, names = [_fixed_list(codes.reshape(-1), arrow_type, width)], ["vector"]
        if scales is not None:
            columns.append(pa.array(scales))
            names.append("scale")
        if lists is not None:
            columns.append(pa.array(lists))
            names.append("list")
        _write_ipc(self.dir / VECTORS, pa.record_batch(columns, names=names))
        del codes, columns
        codes_path.unlink()

    def _codes_alike(self, segment, centroids: np.ndarray | None) -> bool:
        """Whether ``segment`` stores vectors as this segment will: the same storage and, for
        int4, codes relative to the same IVF centroids (or to none in both)."""
        if segment.codec != self.storage:
            return False
        if self.storage != "int4" or (centroids is None and segment.lists is None):
            return True
        return centroids is not None and segment.lists is not None and np.array_equal(segment.bases, centroids)

    def _write_docs(self) -> None:
        check_one_type_per_column(self._tables)  # InputError naming a column whose values clash
        try:
            table = pa.concat_tables(self._tables, promote_options="permissive")
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise IndexFormatError(f"cannot combine metadata of segment {self.name}: {exc}") from None
        counts = np.concatenate(self._counts)
        offsets = np.zeros(len(counts), dtype=np.int64)
        np.cumsum(counts[:-1], out=offsets[1:])
        table = table.append_column(OFFSET, pa.array(offsets))
        table = table.append_column(N_VECTORS, pa.array(counts.astype(np.int32)))
        table = table.append_column(N_TOKENS, pa.array(np.concatenate(self._tokens).astype(np.int32)))
        with_dense = [d is not None for d in self._dense]
        if any(with_dense):
            if not all(with_dense):
                raise IndexFormatError(f"segment {self.name}: some documents have a dense embedding and some do not")
            dense = np.ascontiguousarray(np.concatenate(self._dense))
            table = table.append_column(DENSE, _fixed_list(dense.reshape(-1), pa.float16(), dense.shape[1]))
        _write_ipc(self.dir / DOCS, table.combine_chunks())


def _allocate(path: Path, size: int) -> None:
    """A file of ``size`` bytes whose blocks are reserved on disk, so a full disk is an OSError
    here rather than a SIGBUS when a memory map writes into a hole of a sparse file."""
    with open(path, "wb") as f:
        if hasattr(os, "posix_fallocate"):
            try:
                os.posix_fallocate(f.fileno(), 0, size)
                return
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):  # a file system without it
                    raise
        zeros = bytes(min(size, ALLOCATE_CHUNK))  # (macOS has no posix_fallocate) written blocks are allocated
        for start in range(0, size, ALLOCATE_CHUNK):
            f.write(zeros[:min(ALLOCATE_CHUNK, size - start)])


def stored_columns(root: Path, name: str) -> pa.Table:
    """A written segment's docs table without the internal columns (doc_id, text, metadata)."""
    docs = read_arrow_file(root / name / DOCS, "segment file")
    return docs.drop_columns([c for c in INTERNAL if c in docs.column_names])


class SegmentCore:
    """The immutable part of a segment, opened once and shared by snapshots."""

    def __init__(self, root: Path, entry: SegmentEntry, dim: int, template: Callable[[], Any] | None = None) -> None:
        self.entry, self.name, self.dim = entry, entry.name, dim
        self._template = template  # () -> the index's IVF template (centroids a segment file leaves out)
        folder = root / entry.name
        docs = read_arrow_file(folder / DOCS, "segment file")
        vectors = read_arrow_file(folder / VECTORS, "segment file")
        if docs.num_rows != entry.n_docs or vectors.num_rows != entry.n_vectors:
            raise IndexFormatError(f"segment {entry.name}: file row counts do not match the manifest")
        self.n_docs, self.n_vectors = entry.n_docs, entry.n_vectors
        self.codec, self.vectors_raw, self.scales, self.lists = _read_vectors(vectors, entry.name, dim, self.n_vectors)
        # cheap checks that also hold an index opened without verifying its checksums together
        missing = [c for c in ("doc_id", N_VECTORS, N_TOKENS) if c not in docs.column_names]
        if missing:
            raise IndexFormatError(f"segment file {folder / DOCS} has no column {', '.join(missing)}")
        try:
            self.vector_counts = as_numpy(docs.column(N_VECTORS)).astype(np.int64)  # each document's stored vectors
            self.n_tokens = as_numpy(docs.column(N_TOKENS))
        except (ValueError, TypeError) as exc:
            raise IndexFormatError(f"corrupt segment file {folder / DOCS}: {exc}") from None
        if (self.vector_counts < 0).any() or int(self.vector_counts.sum()) != self.n_vectors:
            raise IndexFormatError(f"segment file {folder / DOCS}: its documents' vector counts do not add up to "
                                   f"the {self.n_vectors} vectors of {VECTORS}")
        self.offsets = np.zeros(self.n_docs + 1, dtype=np.int64)
        np.cumsum(self.vector_counts, out=self.offsets[1:])
        self.dense = None  # [n_docs, hidden] float16, when the model fuses a dense score
        if DENSE in docs.column_names:
            col = docs.column(DENSE).combine_chunks()
            if col.null_count or not pa.types.is_fixed_size_list(col.type):
                raise IndexFormatError(f"segment {entry.name}: {DENSE} must be a fixed-size list without nulls")
            self.dense = as_numpy(col.values).reshape(self.n_docs, col.type.list_size)
        self.table = docs.drop_columns([c for c in INTERNAL if c in docs.column_names])
        self._faiss_file = open(regular(folder / FAISS), "rb")  # kept open: the file may be unlinked later
        weakref.finalize(self, self._faiss_file.close)  # closed with the last reader of this segment
        self._faiss = None
        self._lock = threading.Lock()

    @cached_property
    def doc_ids(self) -> list[str]:
        return self.table.column("doc_id").to_pylist()

    @cached_property
    def vec_to_doc(self) -> np.ndarray:
        return np.repeat(np.arange(self.n_docs, dtype=np.int32), self.vector_counts)

    @cached_property
    def id_index(self) -> dict[str, int] | None:
        """doc id -> local doc number (deleted ones too), built once per segment: a writer looks
        its new ids up here rather than building a set of every live id on each write (None
        when an id repeats in the segment, which writes never do)."""
        out = {doc_id: local for local, doc_id in enumerate(self.doc_ids)}
        return out if len(out) == self.n_docs else None

    def conformed(self, schema: pa.Schema) -> pa.Table:
        """The docs table under a snapshot-wide schema (cached for the last schema asked)."""
        if self.table.schema.equals(schema):
            return self.table
        cached = getattr(self, "_conformed", None)
        if cached is None or not cached[0].equals(schema):
            cached = (schema, conform(self.table, schema))
            self._conformed = cached
        return cached[1]

    @property
    def faiss_index(self):
        with self._lock:
            if self._faiss is None:
                try:
                    index = faiss_build.read_index_from(self._faiss_file)
                except RuntimeError as exc:  # FAISS's own error for an unreadable index
                    raise IndexFormatError(f"corrupt token index of segment {self.name}: {exc}") from None
                except ValueError:  # its file closed: the index was closed during this search
                    if not self._faiss_file.closed:
                        raise
                    raise SegmentClosed(f"the index was closed while segment {self.name} was read") from None
                if faiss_build.lacks_quantizer(index) and (
                        self._template is None or not faiss_build.attach_quantizer(index, self._template())):
                    template = getattr(self._template, "path", None)
                    raise IndexFormatError(
                        f"token index of segment {self.name} leaves its IVF centroids to a template the index does "
                        "not have" if template is None else f"token index of segment {self.name} leaves its IVF "
                        f"centroids to the template {template}, which is not an IVF index of the same lists and "
                        "dimension (corrupt or replaced)")
                if self.lists is None and index.d == self.dim:
                    faiss_build.refill_flat(index, self.n_vectors, self.decode, CHUNK_ROWS)
                if index.ntotal != self.n_vectors or index.d != self.dim:
                    raise IndexFormatError(f"token index of segment {self.name} holds {index.ntotal} vectors of "
                                           f"{index.d} dimensions, not the segment's {self.n_vectors} of {self.dim}")
                self._faiss = index
            return self._faiss

    @cached_property
    def ivf_list_sizes(self) -> np.ndarray | None:
        """The length of each inverted list of the token index (None when it is not IVF)."""
        index = self.faiss_index
        return faiss_build.list_sizes(index) if load_faiss().try_extract_index_ivf(index) is not None else None

    @cached_property
    def bases(self) -> np.ndarray | None:
        """int4 codes with a ``list`` column: the IVF centroids [nlist, dim] they are relative to."""
        if self.lists is None:
            return None
        centroids = faiss_build.ivf_centroids(self.faiss_index)
        if centroids is None or centroids.shape[1] != self.dim or (len(self.lists) and int(self.lists.max()) >= len(centroids)):
            raise IndexFormatError(f"segment {self.name}: {VECTORS} names IVF lists its {FAISS} does not have")
        return centroids

    def decode(self, rows: np.ndarray | slice) -> np.ndarray:
        """Float32 vectors of the given rows."""
        if self.codec == "int4":
            base = None if self.lists is None else self.bases[self.lists[rows]]
            return decode_int4(self.vectors_raw[rows], self.scales[rows], base)
        out = np.asarray(self.vectors_raw[rows], dtype=np.float32)
        if self.scales is not None:
            out *= self.scales[rows][:, None]
        return out

    def close(self) -> None:
        self._faiss_file.close()


def _residual_int4(x: np.ndarray, index, centroids: np.ndarray, hints: np.ndarray,
                   candidates: int = RESIDUAL_CANDIDATES):
    """int4 codes of x against IVF centroids: (codes, scales, lists). A vector with a hint (a
    list >= 0: where a merge found it) is coded against that centroid, which re-encodes a
    decoded vector to the same codes; the others against whichever of their nearest
    centroids reconstructs them best."""
    hinted = hints >= 0
    near = np.empty((len(x), min(candidates, len(centroids))), dtype=np.int64)  # [n, candidates]
    near[hinted] = hints[hinted, None]
    if not hinted.all():  # (a merge's vectors all have one: no distances to every centroid)
        near[~hinted] = faiss_build.ivf_lists(index, x[~hinted], near.shape[1])
    best = None
    for j in range(near.shape[1]):
        base = centroids[near[:, j]]
        codes, scales = quantize_int4(x, base)
        err = np.square(decode_int4(codes, scales, base) - x).sum(axis=1)
        if best is None:
            best = [codes, scales, near[:, j].copy(), err]
            continue
        better = err < best[3]
        best[0][better], best[1][better], best[2][better], best[3][better] = codes[better], scales[better], near[better, j], err[better]
    return best[0], best[1], best[2]


def _read_vectors(vectors: pa.Table, name: str, dim: int, n: int):
    """(codec, codes, scales or None, IVF lists or None) of a vectors.arrow table, or IndexFormatError."""
    col = vectors.column("vector") if "vector" in vectors.column_names else None
    if col is None or col.num_chunks != 1 or not pa.types.is_fixed_size_list(col.type):
        raise IndexFormatError(f"segment {name}: {VECTORS} must hold one batch of fixed-size vectors")
    value_type, size = col.type.value_type, col.type.list_size
    codec = {pa.float16(): "float16", pa.int8(): "int8", pa.uint8(): "int4"}.get(value_type)
    if codec is None or size != (dim // 2 if codec == "int4" else dim) or (codec == "int4" and dim % 2):
        raise IndexFormatError(f"segment {name}: {VECTORS} holds {value_type}[{size}] vectors, not {dim}-d codes")

    def column(key: str) -> np.ndarray | None:
        return as_numpy(vectors.column(key).chunk(0)) if key in vectors.column_names else None

    scales, lists = column("scale"), column("list")
    if (codec == "float16") != (scales is None) or (lists is not None and (codec != "int4" or lists.dtype.kind != "u")):
        raise IndexFormatError(f"segment {name}: {VECTORS} has columns {vectors.column_names} for {codec} codes")
    return codec, as_numpy(col.chunk(0).values).reshape(n, size), scales, lists


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with ``schema``'s columns: promoted types, missing columns as nulls. A column
    whose values do not convert (an index written before adds checked that) keeps its own type,
    logged: filters still evaluate it per segment."""
    columns, fields = [], []
    for f in schema:
        if f.name in table.column_names:
            col = table.column(f.name)
            if col.type != f.type:
                try:
                    col = col.cast(f.type)
                except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
                    log.warning("metadata column %r keeps its type %s in a segment (not %s: %s)", f.name, col.type,
                                f.type, exc)
            columns.append(col)
            fields.append(pa.field(f.name, col.type))
        else:
            columns.append(pa.nulls(table.num_rows, f.type))
            fields.append(f)
    return pa.Table.from_arrays(columns, schema=pa.schema(fields))


class SegmentReader:
    """What search reads: a segment's mmap-backed arrays plus its tombstones in a snapshot.

    ``table`` follows the snapshot-wide schema (so every segment has the same columns).
    """

    def __init__(self, core: SegmentCore, deleted: np.ndarray, table: pa.Table | None = None) -> None:
        self.core = core
        self.name, self.n_docs, self.n_vectors, self.dim = core.name, core.n_docs, core.n_vectors, core.dim
        self.offsets, self.vectors_raw, self.scales, self.lists = core.offsets, core.vectors_raw, core.scales, core.lists
        self.vector_counts = core.vector_counts
        self.codec = core.codec
        self.dense = core.dense
        self.table = core.table if table is None else table
        self._meta_columns = [c for c in self.table.column_names if c not in ("doc_id", "text")]
        self.deleted = deleted

    @property
    def doc_ids(self) -> list[str]:
        return self.core.doc_ids

    @property
    def vec_to_doc(self) -> np.ndarray:
        return self.core.vec_to_doc

    @property
    def faiss_index(self):
        return self.core.faiss_index

    @property
    def n_tokens(self) -> np.ndarray:
        """Token count before pooling, per local doc."""
        return self.core.n_tokens

    @property
    def n_live(self) -> int:
        return int(self.n_docs - self.deleted.sum())

    @property
    def bases(self) -> np.ndarray | None:
        return self.core.bases

    def decode(self, rows: np.ndarray | slice) -> np.ndarray:
        """Float32 vectors of the given rows."""
        return self.core.decode(rows)

    def doc_vectors(self, local_doc: int) -> np.ndarray:
        return self.decode(slice(int(self.offsets[local_doc]), int(self.offsets[local_doc + 1])))

    def metadata(self, local_doc: int) -> dict[str, Any]:
        """Metadata columns (title included; doc_id and text excluded) of one doc."""
        return {c: self.table.column(c)[local_doc].as_py() for c in self._meta_columns}

    def text(self, local_doc: int) -> str | None:
        return self.table.column("text")[local_doc].as_py() if "text" in self.table.column_names else None
