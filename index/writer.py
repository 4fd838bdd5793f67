"""The writer: build, add, delete, merge and compact, one locked operation at a time.

Every operation writes new files under new names, fsyncs them, then commits by atomically
replacing manifest.json. Files no manifest names are garbage, removed when the next
writer starts and after compact.
"""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import logging
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

import xtrieve
from xtrieve.config import IndexConfig
from xtrieve.errors import ConfigError, IndexFormatError, InputError, ModelMismatchError
from xtrieve.index import faiss_build, faiss_copy
from xtrieve.index.corpus import CorpusFile
from xtrieve.index.docs import (AutoIds, add_metadata, as_index_types, as_records, batched, check_embedding,
                                check_id, check_one_type_per_column, column_type, explicit_ids, name_type, normalize,
                                rows_table, short_list, unify, widened_type_name, without_null_parents)
from xtrieve.index.fsio import fsync_dir, fsync_file, make_room, sha256_file
from xtrieve.index.lock import LOCK_FILE, WriterLock, check_wait
from xtrieve.index.manifest import ENCODER_DIR, ENCODER_DIR_NAME, MANIFEST, Manifest, SegmentEntry, is_committed, read_manifest, write_manifest
from xtrieve.index.merge_policy import live_docs, live_vectors, plan_merge
from xtrieve.index.segment import SegmentClosed, SegmentReader, SegmentWriter, stored_columns
from xtrieve.index.store import IndexStore, Snapshot, StoreClosed
from xtrieve.index.tombstones import tombstone_name, write_tombstones
from xtrieve.index.vector_source import Copied

log = logging.getLogger(__name__)

ENCODE_BATCH = 32
MERGE_CHUNK_DOCS = 4096
TEMPLATE_PREFIX = "ivf_template"
# compact() trains a new IVF template when the collection calls for this many times its lists
# (auto_nlist: ~4 sqrt(vectors), so after ~4x growth); with too few lists each is long and a
# search scans more vectors for a worse top (1,024 lists for 4.8M vectors: +27% latency)
TEMPLATE_GROWTH = 2
OWN_NAMES = (MANIFEST, LOCK_FILE)
SEGMENT_NAME = re.compile(r"seg-\d{6,}")
# what a segment folder may hold of ours (a sync tool's own files there are left alone)
SEGMENT_FILE = re.compile(r"(docs\.arrow|vectors\.arrow|tokens\.faiss|deleted-g\d+\.arrow)(\.tmp.*)?")
# the key of the manifest's encoder identity that lists INDEX/encoder's files with their sha256
ENCODER_FILES = "files"

# a batch of documents ready to store: rows (doc_id + stored columns), vectors, token counts,
# dense embeddings [n_docs, hidden] (None unless the index's model fuses them). Copies (merges,
# metadata updates) give None for vectors and add a 5th item: the Copied documents they are read from
Batch = tuple[pa.Table, "list[np.ndarray] | None", list[int], "np.ndarray | None"]


# EncoderConfig fields that shape stored document vectors or exact scores: an encoder that
# differs in one of them does not match an index (query-side fields such as query_maxlen may)
DOCUMENT_SIDE_FIELDS = ("doc_maxlen", "doc_windows", "doc_window_overlap", "document_prefix", "skiplist_words",
                        "keep_special_tokens", "normalize", "head_bias", "lowercase", "dense_weight",
                        "head_activation", "head_steps", "prompt", "pool_method", "title_separator")


def model_difference(a: dict | None, b: dict | None, pooled: bool = True) -> str | None:
    """What makes two encoder identities different models (None when they are the same): name,
    head checksum, dim, or a document-side config field (where both identities record one;
    pool_method, read as "ward" where one does not, only where documents are ``pooled``)."""
    if a is None or b is None:
        return None if a is b else "one side has no model"
    for key in ("name", "head_sha256", "dim"):
        if a.get(key) != b.get(key):
            return key
    ca, cb = a.get("config") or {}, b.get("config") or {}
    if pooled:  # (identities from before pool_method pooled as "ward")
        ca, cb = ({"pool_method": "ward", **c} for c in (ca, cb))
    for key in DOCUMENT_SIDE_FIELDS:
        if key == "pool_method" and not pooled:
            continue
        if key in ca and key in cb and _as_json(ca[key]) != _as_json(cb[key]):
            return f"config {key} ({ca[key]!r} vs {cb[key]!r})"
    return None


def _as_json(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def check_encoder(manifest: Manifest, encoder: Any, root: Path) -> None:
    """ModelMismatchError unless ``encoder`` matches the index's model (or dim, without one)."""
    if encoder is None:
        return
    ident = encoder.identity()
    if manifest.encoder is None:
        if int(ident.get("dim", encoder.config.dim)) != manifest.dim:
            raise ModelMismatchError(f"encoder dim {ident.get('dim')} differs from index {root} dim {manifest.dim}")
        return
    diff = model_difference(ident, manifest.encoder, pooled=manifest.pool_factor > 1)
    if diff is not None:
        raise ModelMismatchError(
            f"encoder {ident.get('name')!r} (head {str(ident.get('head_sha256'))[:12]}) differs from the model of "
            f"index {root}: {manifest.encoder.get('name')!r} (head {str(manifest.encoder.get('head_sha256'))[:12]}); "
            f"different {diff}")


def collect_garbage(root: Path, manifest: Manifest) -> int:
    """Remove segment folders, tombstones, templates and temp files no manifest names."""
    named = set(manifest.files())
    dirs = {s.name for s in manifest.segments}
    removed, kept = 0, []
    for entry in root.iterdir():
        name = entry.name
        if SEGMENT_NAME.fullmatch(name) and entry.is_dir():
            if name not in dirs:
                removed += _remove(entry, kept)
                continue
            for f in entry.iterdir():  # a live segment's files it no longer names (older tombstones)
                if f"{name}/{f.name}" not in named and SEGMENT_FILE.fullmatch(f.name) and f.is_file():
                    removed += _remove(f, kept)
        elif (name.startswith(TEMPLATE_PREFIX) and name not in named) or name.startswith(f"{MANIFEST}.tmp"):
            removed += _remove(entry, kept)
        elif _is_encoder_dir(entry) and (manifest.encoder is None or name != manifest.encoder_dir):
            removed += _remove(entry, kept)  # a replaced index's encoder, or an unfinished one's
    if removed:
        log.info("removed %d unreferenced file(s) from %s", removed, root)
    if kept:
        log.warning("could not remove %d unreferenced file(s) from %s (%s)", len(kept), root, short_list(kept))
    return removed


def _remove(path: Path, kept: list[str]) -> int:
    """Remove a file or folder: 1, or 0 with its name added to ``kept`` when the OS refuses."""
    try:
        shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink(missing_ok=True)
        return 1
    except FileNotFoundError:
        return 1
    except OSError as exc:
        kept.append(f"{path.name}: {exc.strerror}")
        return 0


def _progress(total: int | None, show: bool | None, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="doc", disable=None if show is None else not show)


class WriteSession:
    """One writer operation on a locked index; ``manifest`` is the last commit."""

    def __init__(self, root: Path, manifest: Manifest, store: IndexStore | None = None) -> None:
        self.root, self.manifest = root, manifest
        # (an open Index's store: its segments, and their id indexes, stay open between writes)
        self._store = store if store is not None else IndexStore(root, verify=False)
        self.config: IndexConfig = manifest.config
        self._template_index = None
        self._pending_template: dict | None = None
        self._retraining = False  # a compaction that trains a new IVF template for a grown collection
        self._snapshot: Snapshot | None = None

    # -- state -------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        if self._snapshot is None or self._snapshot.generation != self.manifest.generation:
            try:
                self._snapshot = self._store._open(self.manifest)
            except StoreClosed:  # the Index was closed during this write: finish it on a store of its own
                self._store = IndexStore(self.root, verify=False)
                self._snapshot = self._store._open(self.manifest)
        return self._snapshot

    def is_live(self, doc_id: str) -> bool:
        return bool(self.manifest.segments) and self.snapshot().lookup(doc_id) is not None

    def commit(self, segments: list[SegmentEntry], **changes: Any) -> Manifest:
        template = self._pending_template or self.manifest.template
        new = Manifest(
            generation=self.manifest.generation + 1, dim=self.manifest.dim, config=self.config,
            encoder=self.manifest.encoder, pool_factor=self.manifest.pool_factor, segments=tuple(segments),
            template=template, next_segment=changes.get("next_segment", self.manifest.next_segment),
            next_auto_id=changes.get("next_auto_id", self.manifest.next_auto_id), xtrieve_version=xtrieve.__version__,
            encoder_dir=self.manifest.encoder_dir, columns=changes.get("columns", self.manifest.columns),
        )
        try:
            write_manifest(self.root, new)
        except BaseException:  # (Ctrl-C too) after the rename, the new manifest is the index: keep to it
            if is_committed(self.root, new):
                self.manifest, self._pending_template = new, None
            raise
        self.manifest, self._pending_template = new, None
        log.info("committed generation %d of %s (%d segments)", new.generation, self.root, len(new.segments))
        return new

    # -- FAISS -------------------------------------------------------------------------

    def _build_faiss(self, n: int, rows: Callable[[np.ndarray], np.ndarray], chunks: Callable[[], Iterator[np.ndarray]],
                     origins: list[tuple[SegmentReader, np.ndarray]] | None = None):
        dim = self.manifest.dim
        factory = faiss_build.resolve_factory(self.config, n, dim, self._current_template())
        empty = faiss_build.new_index(factory, dim)
        shared = False
        if not empty.is_trained:
            empty, shared = self._template(factory, n, rows), True
        # (shared: the template holds the IVF centroids, so the segment's file leaves them out)
        if shared and origins and n:  # (a merge: the vectors' codes may be copied from their segments)
            try:
                index = faiss_copy.copied_index(empty, origins, n)
            except SegmentClosed:  # the Index was closed meanwhile: its floats are still mapped
                index = None
            if index is not None:
                faiss_build.check_searchable(index, rows(np.zeros(1, dtype=np.int64)), f"FAISS factory {factory!r}")
                log.info("copied the IVF codes of %d vectors", n)
                return index, factory, shared
        return faiss_build.fill_index(empty, chunks(), factory), factory, shared

    def _current_template(self) -> dict | None:
        """The IVF template new segments use: one trained in this session, else the index's
        (none while a compaction retrains it)."""
        return self._pending_template or (None if self._retraining else self.manifest.template)

    def _template(self, factory: str, n: int, rows: Callable[[np.ndarray], np.ndarray]):
        if self._template_index is not None and self._template_index[0] == factory:
            return self._template_index[1]
        meta = self._current_template()
        if meta is not None and meta["factory"] == factory:
            IndexStore(self.root, verify=False).verify_files({meta["file"]: meta["sha256"]})
            try:
                with open(self.root / meta["file"], "rb") as f:
                    index = faiss_build.read_index_from(f)
            except RuntimeError as exc:  # FAISS's error for a file it cannot read
                raise IndexFormatError(f"corrupt IVF template {self.root / meta['file']}: {exc}") from None
        else:
            index = faiss_build.train_template(factory, self.manifest.dim, n, rows)
            name = f"{TEMPLATE_PREFIX}-g{self.manifest.generation + 1:06d}.faiss"
            path = self.root / name
            faiss_build.write_index(index, path)
            fsync_file(path)
            fsync_dir(self.root)
            self._pending_template = {"file": name, "sha256": sha256_file(path), "factory": factory}
        self._template_index = (factory, index)
        return index

    # -- writing segments --------------------------------------------------------------

    def _write_segments(self, batches: Iterable[Batch], on_batch: Callable[[int], None] | None = None,
                        check_types: bool = False) -> tuple[list[SegmentEntry], int]:
        """Stream batches into new segments of at most docs_per_segment docs; with ``check_types``,
        check that their metadata and the index's take one type per column."""
        per_segment = self.config.docs_per_segment
        next_segment = self.manifest.next_segment
        entries: list[SegmentEntry] = []
        writer: SegmentWriter | None = None
        try:
            for table, vectors, n_tokens, dense, *more in batches:
                copied: Copied | None = more[0] if more else None
                start, n = 0, table.num_rows
                counts = copied.counts() if copied is not None else np.array([len(v) for v in vectors], dtype=np.int64)
                while start < n:
                    if writer is None:
                        writer = SegmentWriter(self.root, f"seg-{next_segment:06d}", self.manifest.dim, self.config.vector_storage)
                        next_segment += 1
                    take = min(n - start, per_segment - writer.n_docs)
                    stop = start + take
                    writer.append(table.slice(start, take), None if vectors is None else np.concatenate(vectors[start:stop]),
                                  counts[start:stop], np.asarray(n_tokens[start:stop]),
                                  None if dense is None else dense[start:stop],
                                  None if copied is None else copied.sliced(start, stop))
                    start = stop
                    if writer.n_docs >= per_segment:
                        entries.append(writer.finish(self._build_faiss))
                        writer = None
                if on_batch:
                    on_batch(n)
            if writer is not None:
                entries.append(writer.finish(self._build_faiss))
                writer = None
            if check_types and entries:
                old = [seg.table for seg in self.snapshot().segments] if self.manifest.segments else []
                new = [stored_columns(self.root, e.name) for e in entries]
                check_one_type_per_column(old + new, {name for t in new for name in t.column_names})
        except BaseException:
            if writer is not None:
                writer.abort()
            for e in entries:
                shutil.rmtree(self.root / e.name, ignore_errors=True)
            if self._pending_template:
                (self.root / self._pending_template["file"]).unlink(missing_ok=True)
                self._pending_template, self._template_index = None, None
            raise
        return entries, next_segment

    def _schema(self) -> pa.Schema | None:
        """The types new documents must agree with: the segments' columns, and the type the
        manifest records for a column no segment holds a value of (its documents deleted, or
        only nulls left; where pyarrow reads the type back)."""
        schema = pa.schema([])
        for seg in self.snapshot().segments if self.manifest.segments else []:
            schema = unify(schema, seg.table.slice(0, 0))
        for name, kind in self.manifest.columns.items():
            recorded, held = column_type(kind), name_type(schema, name)
            if not pa.types.is_null(recorded) and (held is None or pa.types.is_null(held)):
                schema = pa.schema([f for f in schema if f.name != name] + [pa.field(name, recorded)])
        return schema if schema.names else None

    def _input_check(self, replacing: list[str] | None) -> Callable[[pa.Table], pa.Table]:
        """A check of each batch's rows, run before its documents are encoded: an id repeated in
        the input, or already live (unless ``replacing`` collects it), and metadata types that
        clash are InputErrors; values are read as the index's types where nothing is lost."""
        seen: set[str] = set()
        schema = index_schema = self._schema()

        def check(table: pa.Table) -> pa.Table:
            nonlocal schema
            ids = table.column("doc_id").to_pylist()
            dup = [i for i in ids if self.is_live(i)]
            if dup and replacing is None:
                raise InputError(f"duplicate id(s) already in the index: {short_list(dup)} (add with replace=True, "
                                 "or --replace, to replace them)")
            if replacing is not None:
                replacing.extend(dup)
            again = []
            for i in ids:
                if i in seen:
                    again.append(i)
                seen.add(i)
            if again:
                raise InputError(f"duplicate id(s) in the input: {short_list(again)}")
            known = (schema.names if schema is not None else []) + list(self.manifest.columns)
            table = without_null_parents(table, known)
            table = as_index_types(index_schema, table)  # (the types before this input, not as it goes)
            schema = unify(schema, table, index_schema.names if index_schema is not None else ())
            return table

        return check

    def _dense_checked(self, batches: Iterable[Batch]) -> Iterator[Batch]:
        """The batches, refused without the dense embedding the index's model fuses (one it
        does not fuse is dropped)."""
        fused = self.manifest.dense_weight > 0
        for table, vectors, n_tokens, dense, *hints in batches:
            if fused and dense is None:
                raise InputError("this index's model adds a dense (mean-pooled) score to MaxSim, and these documents "
                                 "come without one: add them as text with the index's encoder")
            yield (table, vectors, n_tokens, dense if fused else None, *hints)  # type: ignore[misc]

    def ingest(self, batches: Callable[[Callable[[pa.Table], pa.Table]], Iterable[Batch]], total: int | None,
               show_progress: bool | None, next_auto_id: Callable[[], int] | None = None,
               replace: bool = False) -> list[str]:
        """Write all batches as new segments and commit them together; returns the ids of live
        documents they replaced (``replace``: an id already live is tombstoned in the same
        commit, else an InputError). ``batches(check)`` yields them, each table passed through
        ``check`` (:meth:`_input_check`) before its documents are encoded. ``next_auto_id``:
        the auto-id counter to commit, read once the batches are consumed."""
        replacing: list[str] | None = [] if replace else None
        with _progress(total, show_progress, "indexing") as bar:
            entries, next_segment = self._write_segments(self._dense_checked(batches(self._input_check(replacing))),
                                                         bar.update, check_types=True)
        if not entries:
            raise InputError("no documents to add (empty input)")
        changes = {} if next_auto_id is None else {"next_auto_id": next_auto_id()}
        kept = self._tombstoned(replacing) if replacing else list(self.manifest.segments)
        self.commit(kept + entries, next_segment=next_segment, columns=self._columns_with(entries), **changes)
        return replacing or []

    def _columns_with(self, entries: list[SegmentEntry]) -> dict[str, str]:
        """The index's metadata columns (name -> Arrow type name) with those of new segments (an
        index written before the manifest listed them: with those of its segments too)."""
        columns = dict(self.manifest.columns)
        tables = [stored_columns(self.root, e.name) for e in entries]
        if self.manifest.segments and not self.manifest.columns:
            tables = [seg.table for seg in self.snapshot().segments] + tables
        for table in tables:
            for f in table.schema:
                if f.name != "text":
                    columns[f.name] = widened_type_name(columns.get(f.name), f.type)
        return dict(sorted(columns.items()))

    # -- operations --------------------------------------------------------------------

    def add_documents(self, docs: Iterable[Any], encoder: Any, show_progress: bool | None = None,
                      replace: bool = False) -> list[str]:
        """Encode and add documents (str or dict); returns their ids. ``replace``: a document
        whose id is live replaces it in the same commit."""
        docs = as_records(docs)
        if isinstance(docs, (str, bytes, dict)):
            raise InputError("docs must be an iterable of documents (str or dict), not a single " + type(docs).__name__)
        if not isinstance(docs, Iterable):
            raise InputError(f"docs must be an iterable of documents (str or dict), got {type(docs).__name__}")
        try:
            total = len(docs)  # type: ignore[arg-type]
        except TypeError:
            total = None
        is_live = self.is_live
        all_ids: list[str] = []
        encode_seconds, n_truncated = [0.0], [0]
        title_separator = getattr(encoder.config, "title_separator", " ")

        def read(check: Callable[[pa.Table], pa.Table], auto_id: AutoIds,
                 seen: set[str]) -> Iterator[tuple[list[str], list[str], pa.Table]]:
            """Each batch's ids, texts for the encoder and checked stored columns."""
            position = 0
            for raw in batched(docs, self.config.batch_size):
                ids, texts, rows = [], [], []
                for doc in raw:
                    doc_id, text, row = normalize(doc, position, auto_id, title_separator)
                    if not isinstance(doc, str) and doc_id in auto_id.given:
                        raise InputError(f"document {position}: id {doc_id!r} was already given automatically to an "
                                         "earlier plain-string document; give ids to all documents or to none")
                    seen.add(doc_id)
                    position += 1
                    ids.append(doc_id)
                    texts.append(text)
                    rows.append(row)
                yield ids, texts, check(rows_table(ids, rows, self.config.store_text))

        # ids given in this input: an auto id skips them (all of a list's, up front; a stream's so far)
        given = explicit_ids(docs) if isinstance(docs, Sequence) else set()

        def auto_ids() -> tuple[AutoIds, set[str]]:
            """A fresh auto-id counter and set of ids seen, for one reading of ``docs``."""
            seen = set(given)
            return AutoIds(lambda doc_id: doc_id in seen or is_live(doc_id), self.manifest.next_auto_id), seen

        if _readable_twice(docs) and (total is None or total > self.config.batch_size):
            # a bad document late in a long input fails now, not after encoding those before it
            log.info("checking %s documents before encoding them", total if total is not None else "the")
            for _ in read(self._input_check([] if replace else None), *auto_ids()):
                pass
        auto_id, seen = auto_ids()

        def batches(check: Callable[[pa.Table], pa.Table]) -> Iterator[Batch]:
            for ids, texts, table in read(check, auto_id, seen):  # bad ids or metadata fail before encoding
                started = time.perf_counter()
                encoded = encoder.encode(texts, False, batch_size=ENCODE_BATCH, pool_factor=self.manifest.pool_factor,
                                         show_progress=False)
                encode_seconds[0] += time.perf_counter() - started
                n_truncated[0] += int(getattr(encoded, "n_truncated", 0))
                vectors = [check_embedding(v, self.manifest.dim, f"document {i!r}")
                           for i, v in zip(ids, encoded.vectors)]
                all_ids.extend(ids)
                yield table, vectors, list(encoded.n_tokens), encoded.dense

        started = time.perf_counter()
        replaced = self.ingest(batches, total, show_progress, next_auto_id=lambda: auto_id.next, replace=replace)
        if n_truncated[0]:
            _warn_truncated(n_truncated[0], len(all_ids), getattr(encoder, "config", None))
        elapsed = time.perf_counter() - started
        log.info("added %d docs (%d of them replacing live ones) in %.1f s: encoding (with pooling) %.1f s, "
                 "indexing %.1f s", len(all_ids), len(replaced), elapsed, encode_seconds[0], elapsed - encode_seconds[0])
        return all_ids

    def add_embeddings(self, ids: list[Any], embeddings: list[Any], metadata: list[dict] | None = None,
                       show_progress: bool | None = None, replace: bool = False) -> list[str]:
        """Add user-supplied token vectors; returns the ids (``replace`` as in :meth:`add_documents`)."""
        ids, embeddings, metadata = check_embedding_input(ids, embeddings, metadata)
        dim = self.manifest.dim
        doc_ids = [check_id(i, f"document {n}") for n, i in enumerate(ids)]

        def batches(check: Callable[[pa.Table], pa.Table]) -> Iterator[Batch]:
            size = self.config.batch_size
            for s in range(0, len(doc_ids), size):
                bid = doc_ids[s:s + size]
                vectors = [check_embedding(e, dim, f"document {i!r}") for i, e in zip(bid, embeddings[s:s + size])]
                rows = [_meta_row(m, i) for i, m in zip(bid, metadata[s:s + size])] if metadata else [{} for _ in bid]
                yield check(rows_table(bid, rows, self.config.store_text)), vectors, [len(v) for v in vectors], None

        replaced = self.ingest(batches, len(doc_ids), show_progress, replace=replace)
        log.info("added %d docs (%d of them replacing live ones)", len(doc_ids), len(replaced))
        return doc_ids

    def delete(self, ids: Iterable[Any], missing_ok: bool = False) -> int:
        """Tombstone documents by id; InputError (nothing changed) if any id is not live, unless
        ``missing_ok``: those are skipped (none live: 0, nothing written)."""
        if isinstance(ids, (str, bytes)) or (isinstance(ids, (int, np.integer)) and not isinstance(ids, bool)):
            ids = [ids]
        if not isinstance(ids, Iterable):
            raise InputError(f"ids must be an id or an iterable of ids, got {type(ids).__name__}")
        wanted = list(dict.fromkeys(check_id(i, f"delete: id {n}") for n, i in enumerate(ids)))
        if not wanted:
            if missing_ok:  # (a sync job's list of ids to remove may be empty)
                return 0
            raise InputError("no ids to delete (missing_ok=True takes an empty list as nothing to do)")
        if missing_ok:
            wanted = [i for i in wanted if self.is_live(i)]
            if not wanted:
                return 0
        self.commit(self._tombstoned(wanted))
        return len(wanted)

    def _located(self, ids: list[str]) -> tuple[Snapshot, dict[int, list[int]]]:
        """The snapshot of the last commit and, per segment number, the local numbers of the
        live documents ``ids`` (distinct); an InputError naming those that are not live."""
        snap = self.snapshot() if self.manifest.segments else None
        found = {i: snap.lookup(i) for i in ids} if snap else {}
        missing = [i for i in ids if found.get(i) is None]
        if missing:
            raise InputError(f"{len(missing)} id(s) not in the index: {short_list(missing)}")
        by_seg: dict[int, list[int]] = {}
        for seg_no, local in found.values():  # type: ignore[misc]
            by_seg.setdefault(seg_no, []).append(local)
        return snap, by_seg  # type: ignore[return-value]

    def _tombstoned(self, ids: list[str]) -> list[SegmentEntry]:
        """The committed segments with ``ids`` (distinct) marked deleted, their tombstone files
        written for the next commit (a segment left with no live document is dropped);
        InputError, nothing written, if any id is not live."""
        snap, by_seg = self._located(ids)
        generation = self.manifest.generation + 1
        segments: list[SegmentEntry] = []
        for no, entry in enumerate(self.manifest.segments):
            if no not in by_seg:
                segments.append(entry)
                continue
            mask = snap.segments[no].deleted.copy()
            mask[by_seg[no]] = True
            if mask.all():
                continue  # the whole segment is gone: just stop naming it
            rel = tombstone_name(entry.name, generation)
            sha = write_tombstones(self.root, rel, mask)
            fsync_dir(self.root / entry.name)
            segments.append(dataclasses.replace(entry, tombstones={rel: sha}, n_deleted=int(mask.sum())))
        return segments

    def _copied_batches(self, parts: Iterable[tuple[SegmentReader, np.ndarray]]) -> Iterator[Batch]:
        """Batches of stored documents as they are: (segment, its local doc numbers) pairs. Their
        vectors stay in the segment (the batch names them with a :class:`Copied`)."""
        keep_lists = not self._retraining  # (new centroids: each vector finds its nearest again)
        for seg, local in parts:
            if seg.lists is not None:
                _ = seg.bases  # (int4 vectors decode against them: read now, should the Index be closed meanwhile)
            for s in range(0, len(local), MERGE_CHUNK_DOCS):
                docs = np.asarray(local[s:s + MERGE_CHUNK_DOCS], dtype=np.int64)
                dense = None if seg.dense is None else np.asarray(seg.dense[docs])
                yield seg.table.take(pa.array(docs)), None, seg.n_tokens[docs].tolist(), dense, Copied(seg, docs, keep_lists)

    def _merge_batches(self, readers: list[SegmentReader]) -> Iterator[Batch]:
        return self._copied_batches((seg, np.nonzero(~seg.deleted)[0]) for seg in readers)

    def update_metadata(self, updates: dict[str, dict[str, Any]], show_progress: bool | None = None) -> int:
        """Give live documents new metadata values without encoding them again (``updates``: id ->
        {column: value}, checked by :func:`check_metadata_updates`): each one's stored vectors,
        text and other columns are copied into a new segment with those values (None clears one;
        a key's value replaces every nested column under it) and its old row is tombstoned, in one
        commit. InputError, nothing written, for an id that is not live."""
        snap, by_seg = self._located(list(updates))

        def edited(table: pa.Table) -> pa.Table:
            ids = table.column("doc_id").to_pylist()
            stored = [c for c in table.column_names if c != "doc_id"]
            news, gones = [], []
            for doc_id in ids:
                keys, new = updates[doc_id], {}
                for key, value in keys.items():
                    add_metadata(new, key, value, f"document {doc_id!r}")
                news.append(new)  # (a key's old nested columns go, but not one this update sets: "a" and "a.c")
                gones.append({c for c in stored if c not in new and any(c == k or c.startswith(k + ".") for k in keys)})
            given = rows_table(ids, news, True)
            columns = {name: table.column(name) for name in table.column_names}
            for name in dict.fromkeys([*given.column_names[1:], *sorted(set().union(*gones))]):
                changed = pa.array([name in n or name in g for n, g in zip(news, gones)])
                values = given.column(name) if name in given.column_names else pa.nulls(len(ids))
                columns[name] = values if name not in columns else _with_changes(name, ids, columns[name], values, changed)
            return pa.table(columns)

        def batches(check: Callable[[pa.Table], pa.Table]) -> Iterator[Batch]:
            parts = ((snap.segments[no], np.sort(np.array(local))) for no, local in sorted(by_seg.items()))
            for table, *rest in self._copied_batches(parts):
                yield (check(edited(table)), *rest)  # type: ignore[misc]

        self.ingest(batches, len(updates), show_progress, replace=True)
        log.info("updated the metadata of %d docs", len(updates))
        return len(updates)

    def merge(self, picks: list[int]) -> None:
        """Merge the given segments (dropping deleted docs) into new ones and commit."""
        # a merge rewrites these files under fresh checksums: never carry a corrupt one over
        IndexStore(self.root, verify=False).verify_files(
            {rel: sha for i in picks for rel, sha in self.manifest.segments[i].all_files().items()})
        snap = self.snapshot()
        readers = [snap.segments[i] for i in picks]
        entries, next_segment = self._write_segments(self._merge_batches(readers))
        keep = [e for i, e in enumerate(self.manifest.segments) if i not in set(picks)]
        log.info("merging %d segments into %d", len(picks), len(entries))
        self.commit(keep + entries, next_segment=next_segment)

    def maybe_merge(self) -> int:
        """Apply the tiered merge policy until no tier is full; returns the merges done."""
        done = 0
        first = self._first_template_merge()
        if first is not None:
            self.merge(first)
            done += 1
        while True:
            picks = plan_merge(list(self.manifest.segments), self.config.merge_factor, self.config.docs_per_segment)
            if picks is None:
                return done
            self.merge(picks)
            done += 1

    def _first_template_merge(self) -> list[int] | None:
        """All segments, when an automatic factory has no IVF template yet and the live
        collection has outgrown flat_max_vectors (so that one merged segment trains it, on a
        sample of the whole collection, as a build of the same documents would), else None.
        Without this, an index grown by small adds stayed Flat until the tiered policy merged
        one segment past flat_max_vectors (~4,100 documents of ~32 vectors, twice the
        threshold), scanning every vector of every segment on each search (15x a build's latency)."""
        config, segs = self.config, self.manifest.segments
        if config.faiss_factory != "auto" or self.manifest.template is not None or len(segs) < 2:
            return None
        if sum(live_vectors(s) for s in segs) <= config.flat_max_vectors:
            return None  # (no merged segment can pass it: the common case, without reading any segment)
        # the vectors of each segment the merge would write (docs_per_segment live documents each,
        # in segment order): an average over them named a merge whose segments all stayed Flat, and
        # with no template trained the next add merged everything again, on every add
        counts = np.concatenate([seg.vector_counts[~seg.deleted] for seg in self.snapshot().segments])
        per_segment = np.add.reduceat(counts, np.arange(0, len(counts), config.docs_per_segment)) if len(counts) else counts
        return list(range(len(segs))) if len(per_segment) and int(per_segment.max()) > config.flat_max_vectors else None

    def merge_after_commit(self) -> None:
        """:meth:`maybe_merge` after a commit it must not undo: a failed merge (a full disk, say)
        leaves the committed segments as they are, is logged, and the next write merges."""
        try:
            self.maybe_merge()
        except Exception as exc:  # (MemoryError too) the commit is made: only this merge is lost
            log.warning("merging segments of %s failed; the commit stands and a later write merges (%s: %s)",
                        self.root, type(exc).__name__, exc)

    def compact(self) -> None:
        """Merge every segment into as few as possible (<= docs_per_segment docs each); an IVF
        template trained when the collection was much smaller is trained again."""
        segs = self.manifest.segments
        outgrown = self._outgrown_template()
        if outgrown is not None:
            log.info("the collection has outgrown its IVF template (%d lists, %d now called for): compacting "
                     "trains a new one", *outgrown)
            self._retraining, self._template_index = True, None
        if len(segs) > 1 or any(s.n_deleted for s in segs) or outgrown is not None:
            try:
                self.merge(list(range(len(segs))))
            finally:
                self._retraining = False
        collect_garbage(self.root, self.manifest)

    def _outgrown_template(self) -> tuple[int, int] | None:
        """(the template's IVF lists, the lists a compacted segment's vectors call for) when
        the second is at least TEMPLATE_GROWTH times the first (automatic factories only)."""
        template, config = self.manifest.template, self.config
        found = re.match(r"IVF(\d+),", template["factory"]) if template else None
        if found is None or config.faiss_factory != "auto" or config.nlist:
            return None
        live = sum(live_docs(s) for s in self.manifest.segments)
        vectors = sum(live_vectors(s) for s in self.manifest.segments)
        per_segment = vectors * min(1.0, config.docs_per_segment / max(live, 1))
        have, want = int(found.group(1)), faiss_build.auto_nlist(int(per_segment))
        return (have, want) if want >= TEMPLATE_GROWTH * have and per_segment > config.flat_max_vectors else None


def _warn_truncated(n: int, total: int, config: Any) -> None:
    """Say (once per add) that documents were cut at the model's length, and how to read more."""
    windows, maxlen = getattr(config, "doc_windows", None), getattr(config, "doc_maxlen", None)
    reads = f"{windows} window(s) of {maxlen} tokens" if windows and maxlen else "its document length"
    more = 2 * windows if isinstance(windows, int) else 4
    log.warning("%d of %d documents are longer than the model reads (%s): the text past that has no vectors, so "
                "no query matches it; to read more of each, build the index with more windows: --encoder-config "
                "doc_windows=%d on xtrieve build (--overwrite for an existing index) or eval, or Encoder.load(config="
                "{'doc_windows': %d})", n, total, reads, more, more)


def _readable_twice(docs: Any) -> bool:
    """Whether ``docs`` gives all its documents again on a second reading (a list, a corpus file)."""
    return isinstance(docs, (Sequence, CorpusFile))


def _with_changes(name: str, ids: list[str], stored: Any, values: Any, changed: pa.Array) -> Any:
    """Column ``name`` as stored, with ``values`` where ``changed``: the other rows as stored (not through
    Python values, which lose a timestamp's nanoseconds, a uint64 past 2**63, float32 and int8
    widths), the new ones in the stored type when they are of its kind; else the whole column
    in the type the new values and the stored ones infer together (and the writer's type
    check then reads them as the index's type where nothing is lost, or names the clash)."""
    have, want = values.type, stored.type
    same_kind = have == want or pa.types.is_null(have) or any(
        test(have) and test(want) for test in (pa.types.is_integer, pa.types.is_floating, pa.types.is_string))
    if pa.types.is_timestamp(have) and pa.types.is_timestamp(want):
        same_kind = have.tz == want.tz
    if same_kind:
        try:
            return pc.if_else(changed, values.cast(want, safe=True), stored)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass  # (an int8 column given 1000)
    merged = [new if c else old for new, old, c in zip(values.to_pylist(), stored.to_pylist(), changed.to_pylist())]
    return rows_table(ids, [{name: v} for v in merged], True).column(name)


def _meta_row(meta: Any, doc_id: str) -> dict[str, Any]:
    if meta is None:
        return {}
    if not isinstance(meta, dict):
        raise InputError(f"document {doc_id!r}: metadata must be a dict, got {type(meta).__name__}")
    row: dict[str, Any] = {}
    for k, v in meta.items():
        add_metadata(row, k, v, f"document {doc_id!r}")
    return row


def check_embedding_input(ids: Any, embeddings: Any, metadata: Any) -> tuple[list, list, list | None]:
    """Lists of equal length, at least one document."""
    if ids is None or embeddings is None:
        raise InputError("ids and embeddings are required")
    one_array = getattr(embeddings, "ndim", None) == 2
    ids, embeddings = _as_list(ids, "ids"), _as_list(embeddings, "embeddings")
    if not ids:
        raise InputError("no documents to add (empty ids)")
    if len(ids) != len(embeddings):
        raise InputError(f"{len(ids)} ids but {len(embeddings)} embeddings" + (
            ": embeddings is one 2-D array; give one [n_tokens, dim] array per document (a list, or a 3-D array)"
            if one_array else ""))
    if metadata is not None:
        metadata = _as_list(as_records(metadata), "metadata")
        if len(metadata) != len(ids):
            raise InputError(f"{len(ids)} ids but {len(metadata)} metadata rows")
    return ids, embeddings, metadata


def _as_list(values: Any, name: str) -> list:
    """A list of one item per document, or an InputError (a str would be one id per character)."""
    if isinstance(values, (str, bytes)):
        raise InputError(f"{name} must be a list with one item per document, got a {type(values).__name__}")
    try:
        return list(values)
    except TypeError:
        raise InputError(f"{name} must be a list with one item per document, got {type(values).__name__}") from None


@contextlib.contextmanager
def _full_disk_named(root: Path) -> Iterator[None]:
    """A full disk (or quota) met while writing names the index: the OS's error names no file."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)) or exc.filename is not None:
            raise
        raise OSError(exc.errno, f"{exc.strerror} (writing the index)", str(root)) from exc


@contextlib.contextmanager
def open_writer(root: str | Path, encoder: Any = None, wait: float = 0.0,
                store: IndexStore | None = None) -> Iterator[WriteSession]:
    """Lock an existing index (waiting up to ``wait`` seconds for another writer), clean its
    garbage, and yield a session on the last commit."""
    root = Path(root)
    read_manifest(root)
    with WriterLock(root, wait), _full_disk_named(root):
        manifest = read_manifest(root)  # re-read under the lock: another writer may have committed
        check_encoder(manifest, encoder, root)
        collect_garbage(root, manifest)
        yield WriteSession(root, manifest, store)


def _is_ours(entry: Path) -> bool:
    """Whether a folder entry has the name and kind of one an index (or an unfinished build) has."""
    name = entry.name
    if name in OWN_NAMES or name.startswith(f"{MANIFEST}.tmp"):
        return True
    if SEGMENT_NAME.fullmatch(name):
        return entry.is_dir()
    return (name.startswith(TEMPLATE_PREFIX) and entry.is_file()) or _is_encoder_dir(entry)


def _is_encoder_dir(entry: Path) -> bool:
    return ENCODER_DIR_NAME.fullmatch(entry.name) is not None and entry.is_dir()


@contextlib.contextmanager
def create_index(root: str | Path, dim: int, config: IndexConfig, encoder: Any = None, pool_factor: int = 1,
                 overwrite: bool = False, wait: float = 0.0) -> Iterator[WriteSession]:
    """Create a new index; the first commit happens inside (session.ingest). ``wait``: seconds
    to wait for another writer's lock on an existing folder.

    Replacing an existing index (``overwrite``) happens in its own folder, under its writer lock:
    the new segments (and encoder) are written under fresh names and one manifest commit swaps
    the whole index, so a crash or a failed build at any point leaves the old index as it was
    and open readers see the new one as a later generation. Without a commit, a new folder is
    removed again and a replaced one keeps its old commit.
    """
    root = Path(root)
    wait = check_wait(wait)
    if config.vector_storage == "int4" and dim % 2:
        raise ConfigError(f"vector_storage 'int4' packs two dimensions per byte: dim must be even, got {dim}")
    if root.exists() and not root.is_dir():
        raise InputError(f"cannot create an index at {root}: it is a file")
    if config.faiss_factory != "auto":  # a bad factory fails now, not once every document is encoded
        faiss_build.new_index(config.faiss_factory, dim)
        if config.vector_storage == "int4":
            faiss_build.check_int4_factory(config.faiss_factory, dim)
    _check_only_ours(root)
    created = not root.exists()
    root.mkdir(parents=True, exist_ok=True)
    with WriterLock(root, wait), _full_disk_named(root):  # (a builder that does not get the lock leaves the folder alone)
        _check_only_ours(root)  # checked again under the lock: another writer may have built here
        old = _replaced_manifest(root, overwrite)
        if old is None:
            _empty(root)
        else:  # before writing: a new file's name may be held by a leftover, or a link planted to lead outside
            collect_garbage(root, old)
        session = None
        try:
            session = _fresh_session(root, old, dim, config, encoder, pool_factor)
            yield session
        finally:
            if session is not None and session.manifest.generation > (old.generation if old else 0):
                collect_garbage(root, session.manifest)  # the replaced index's files
            elif old is not None:
                collect_garbage(root, old)  # the unfinished new files
            elif created:
                shutil.rmtree(root, ignore_errors=True)  # still under the lock: nobody else built here


def _check_only_ours(root: Path) -> None:
    """InputError unless ``root`` is missing, empty, or an index folder (or an unfinished build's,
    which holds the writer lock file) holding only what an index holds: files of index-like names
    in any other folder are the user's."""
    if not root.is_dir():
        return
    entries = list(root.iterdir())
    foreign = sorted(e.name for e in entries if not _is_ours(e))
    if entries and not foreign and not any(e.name in OWN_NAMES for e in entries):
        foreign = sorted(e.name for e in entries)  # index-like names, but no index nor build was here
    if foreign:
        raise InputError(f"cannot create an index at {root}: the folder is not empty (it holds {short_list(foreign)})")


def _replaced_manifest(root: Path, overwrite: bool) -> Manifest | None:
    """The commit an overwrite replaces (None when there is none to keep: no manifest yet, or
    one so damaged that nothing in the folder can be read)."""
    if not (root / MANIFEST).exists():
        if any(e.name != LOCK_FILE for e in root.iterdir()):
            log.info("removing the leftovers of an unfinished build in %s", root)
        return None
    if not overwrite:
        raise InputError(f"an index already exists at {root} (use overwrite=True / --overwrite to replace it)")
    try:
        return read_manifest(root)
    except IndexFormatError as exc:
        log.warning("replacing an index that cannot be read (%s)", exc)
        return None


def _empty(root: Path) -> None:
    for e in root.iterdir():
        if e.name != LOCK_FILE:
            _clear(e)


def _clear(path: Path) -> None:
    """Remove a file, a folder or a link (the link itself: never what it leads to)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        make_room(path)


def _fresh_session(root: Path, old: Manifest | None, dim: int, config: IndexConfig, encoder: Any,
                   pool_factor: int) -> WriteSession:
    """A session whose first commit holds only new segments: generation, segment names and
    encoder folder follow on from the replaced commit ``old`` (if any), so nothing of it is
    overwritten before that commit."""
    generation = old.generation if old else 0
    encoder_dir = ENCODER_DIR if old is None or old.encoder is None or old.encoder_dir != ENCODER_DIR \
        else f"{ENCODER_DIR}-g{generation + 1:06d}"
    identity = None
    if encoder is not None:
        _clear(root / encoder_dir)  # an unfinished build's leftover, never committed
        identity = encoder.identity()
        identity[ENCODER_FILES] = _save_encoder(encoder, root, encoder_dir)
    manifest = Manifest(generation=generation, dim=dim, config=config, encoder=identity, pool_factor=pool_factor,
                        next_segment=old.next_segment if old else 1, xtrieve_version=xtrieve.__version__,
                        encoder_dir=encoder_dir)
    return WriteSession(root, manifest)


def _save_encoder(encoder: Any, root: Path, name: str) -> dict[str, str]:
    """Save the encoder in ``root``/``name`` (fsynced); its files' sha256 by path from ``root``."""
    folder = root / name
    encoder.save(folder)
    checksums = {}
    for dirpath, _, files in os.walk(folder):
        for f in sorted(files):
            fsync_file(Path(dirpath) / f)
            checksums[(Path(dirpath) / f).relative_to(root).as_posix()] = sha256_file(Path(dirpath) / f)
        fsync_dir(Path(dirpath))
    fsync_dir(folder.parent)
    return checksums
