"""IndexStore: opens consistent snapshots of an index folder (readers never lock)."""
from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa

from xtrieve.errors import IndexFormatError, IndexLockedError, InputError
from xtrieve.index import faiss_build
from xtrieve.index.fsio import regular, sha256_file, safe_join
from xtrieve.index.manifest import MANIFEST, Manifest, read_manifest
from xtrieve.index.segment import SegmentClosed, SegmentCore, SegmentReader
from xtrieve.index.tombstones import read_tombstones

log = logging.getLogger(__name__)


class StoreClosed(InputError):
    """The store was closed (its Index closed): it opens no more segments or templates."""


HASH_WORKERS = 4  # files verified at once on opening

# how long opening a snapshot keeps retrying while writers replace the commit under it, and the
# longest pause between tries (opening verifies new files' checksums: a busy writer can commit
# several times during one try)
OPEN_PATIENCE_S = 30.0
OPEN_MAX_PAUSE_S = 0.05


@dataclass
class Snapshot:
    """One committed generation: segments (immutable files) and their tombstones."""

    path: Path
    manifest: Manifest
    segments: list[SegmentReader]
    _lookup: dict[str, tuple[int, int]] | None = field(default=None, repr=False)
    # the manifest file's bytes, read before it was parsed: while the file holds them, no newer commit
    stamp: bytes | None = field(default=None, repr=False, compare=False)

    @property
    def dim(self) -> int:
        return self.manifest.dim

    @property
    def generation(self) -> int:
        return self.manifest.generation

    @property
    def encoder_identity(self) -> dict | None:
        return self.manifest.encoder

    @property
    def dense_weight(self) -> float:
        return self.manifest.dense_weight

    @property
    def n_docs(self) -> int:
        return sum(s.n_live for s in self.segments)

    def _build_lookup(self) -> dict[str, tuple[int, int]]:
        if self._lookup is None:
            out: dict[str, tuple[int, int]] = {}
            for no, seg in enumerate(self.segments):
                ids = seg.doc_ids
                for local in np.nonzero(~seg.deleted)[0].tolist():
                    out[ids[local]] = (no, local)
            self._lookup = out
        return self._lookup

    def lookup(self, doc_id: str) -> tuple[int, int] | None:
        """(segment number, local doc) of a live document, or None. Asked of each segment's
        id index (built once per segment, shared by the snapshots of one store) until a full
        table is built: a write looks up its few ids in O(segments), where building the table
        took ~40 ms per write at 150K documents (0.25 us a document, on every add and delete)."""
        if self._lookup is not None:
            return self._lookup.get(doc_id)
        for no, seg in enumerate(self.segments):
            ids = seg.core.id_index
            if ids is None:
                return self._build_lookup().get(doc_id)
            local = ids.get(doc_id)
            if local is not None and not seg.deleted[local]:
                return no, local
        return None

    def live_ids(self) -> set[str]:
        return set(self._build_lookup())


class IndexStore:
    """Reads manifests and opens segments, caching the immutable parts between snapshots."""

    def __init__(self, path: str | Path, verify: bool = True) -> None:
        self.path = Path(path)
        self.verify = verify
        self._cores: dict[tuple, SegmentCore] = {}
        self._verified: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        self._template: tuple | None = None  # (sha256, open file, [index once read], lock)
        self.closed = False

    @classmethod
    def open(cls, path: str | Path, verify: bool = True) -> "IndexStore":
        store = cls(path, verify)
        read_manifest(store.path)  # fail early on a folder that is not an index
        return store

    def manifest(self) -> Manifest:
        return read_manifest(self.path)

    def close(self) -> None:
        """Close the segments' open files; a later snapshot opens them again."""
        with self._lock:
            self.closed = True  # (a write racing an Index's close() must not open files into it again)
            for core in self._cores.values():
                core.close()
            self._cores.clear()
            if self._template is not None:
                self._template[1].close()
                self._template = None

    def manifest_stamp(self) -> bytes | None:
        """The manifest file's bytes (a few KB; every commit writes a new generation into it, so
        other bytes): cheaper to compare than opening a snapshot. None when it cannot be read.
        (Its stat would not do: two commits within one mtime tick can leave inode, size and
        mtime alike.)"""
        try:
            return (self.path / MANIFEST).read_bytes()
        except OSError:
            return None

    def snapshot(self) -> Snapshot:
        """Open the current commit; retries if a writer replaced it while opening."""
        deadline, pause = time.monotonic() + OPEN_PATIENCE_S, 0.001
        while True:
            stamp = self.manifest_stamp()  # (taken first: a later commit can only make it differ)
            manifest = read_manifest(self.path)
            try:
                snap = self._open(manifest)
                snap.stamp = stamp
                return snap
            except FileNotFoundError as exc:
                if read_manifest(self.path) == manifest:
                    missing = exc.filename or self._first_missing(manifest) or f"? ({exc})"
                    raise IndexFormatError(
                        f"index {self.path}: file {missing} named by the manifest is missing") from None
            if time.monotonic() > deadline:
                raise IndexLockedError(f"index {self.path}: writers replaced its commit during every attempt to "
                                       f"open it for {OPEN_PATIENCE_S:.0f} s; try again")
            log.debug("manifest changed while opening; retrying")
            time.sleep(pause)
            pause = min(2 * pause, OPEN_MAX_PAUSE_S)

    def _first_missing(self, manifest: Manifest) -> str | None:
        """The first file ``manifest`` names that is not there (None: all are)."""
        for entry in manifest.segments:
            for rel in entry.all_files():
                if not (self.path / rel).is_file():
                    return rel
        return None

    def verify_files(self, files: dict[str, str]) -> None:
        """IndexFormatError unless each file (relative path -> sha256) is present and intact,
        whatever this store's ``verify`` setting (writers check what they are about to rewrite)."""
        for rel, sha in files.items():
            try:
                self._verify_file(rel, sha)
            except FileNotFoundError:
                raise IndexFormatError(f"index {self.path}: file {rel} named by the manifest is missing") from None

    def _verify_file(self, rel: str, sha: str) -> None:
        """FileNotFoundError when missing, IndexFormatError when its sha256 differs; a file once
        found intact is not read again."""
        if (rel, sha) in self._verified:
            return
        path = safe_join(self.path, rel, "file")
        if not path.exists():
            raise FileNotFoundError(2, "missing", str(path))
        if sha256_file(path) != sha:
            raise IndexFormatError(f"checksum mismatch for {path}: the file is corrupt or was modified")
        self._verified.add((rel, sha))

    def _verify_all(self, files: dict[str, str]) -> None:
        """:meth:`_verify_file` for each file, several at once (hashing runs outside the GIL:
        an 80 MB index opened in ~70 instead of ~95 ms on 2 cores)."""
        todo = [(rel, sha) for rel, sha in files.items() if (rel, sha) not in self._verified]
        workers = min(len(todo), os.cpu_count() or 1, HASH_WORKERS)
        if workers <= 1:
            for rel, sha in todo:
                self._verify_file(rel, sha)
            return
        with ThreadPoolExecutor(workers) as pool:
            for done in [pool.submit(self._verify_file, rel, sha) for rel, sha in todo]:
                done.result()  # the first failure (in the manifest's order) is raised

    def _template_reader(self, manifest: Manifest) -> Callable[[], Any] | None:
        """() -> the manifest's IVF template index, read once on first use from a file opened
        now (a later compaction may unlink it while a segment of this commit is still unread)."""
        meta = manifest.template
        if meta is None:
            return None
        if self._template is None or self._template[0] != meta["sha256"]:
            # (the one before stays open for the segments of older snapshots that have not read it
            # yet: a search thread may still hold one; it closes once none does)
            self._template = (meta["sha256"], open(regular(safe_join(self.path, meta["file"], "file")), "rb"), [],
                              threading.Lock())
        _, f, cache, lock = self._template
        path = self.path / meta["file"]

        def read():
            with lock:
                if not cache:
                    try:
                        cache.append(faiss_build.read_index_from(f))
                    except RuntimeError as exc:
                        raise IndexFormatError(f"corrupt IVF template {path}: {exc}") from None
                    except ValueError:  # its file closed: the index was closed during this search
                        if not f.closed:
                            raise
                        raise SegmentClosed(f"the index was closed while its IVF template {path} was read") from None
                    f.close()  # (read once: the index holds it now)
                return cache[0]
        read.path = path  # (named when a segment's lists do not fit it)
        return read

    def _open(self, manifest: Manifest) -> Snapshot:
        with self._lock:
            if self.closed:
                raise StoreClosed(f"index {self.path} is closed")
            named = manifest.files()
            if self.verify:
                self._verify_all(named)
            readers = []
            live_keys = set()
            for entry in manifest.segments:
                key = (entry.name, tuple(sorted(entry.files.items())))
                live_keys.add(key)
                core = self._cores.get(key)
                if core is None:
                    core = SegmentCore(self.path, entry, manifest.dim, self._template_reader(manifest))
                    self._cores[key] = core
                deleted = read_tombstones(self.path, sorted(entry.tombstones), entry.n_docs)
                if int(deleted.sum()) != entry.n_deleted:
                    raise IndexFormatError(f"segment {entry.name}: its tombstone files delete {int(deleted.sum())} "
                                           f"documents, the manifest says {entry.n_deleted}")
                readers.append((core, deleted))
            schema = _unified([core.table.schema for core, _ in readers])
            for key in list(self._cores):  # forget segments this commit no longer names
                if key not in live_keys:
                    del self._cores[key]
            encoder_dir = f"{manifest.encoder_dir}/"
            self._verified = {(rel, sha) for rel, sha in self._verified  # and files (a reader lives long)
                              if named.get(rel) == sha or rel.startswith(encoder_dir)}
            segments = [SegmentReader(core, deleted, core.conformed(schema) if schema else None) for core, deleted in readers]
            return Snapshot(path=self.path, manifest=manifest, segments=segments)


def _unified(schemas: list[pa.Schema]) -> pa.Schema | None:
    """One schema for all segments (types promoted), or None if they cannot be unified."""
    if len(schemas) < 2:
        return None
    try:
        return pa.unify_schemas(schemas, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        log.warning("segments have incompatible metadata columns (%s); filters may fail on some", exc)
        return None
