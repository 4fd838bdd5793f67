"""``xtrieve.Index``: the public facade over the index stage and the Searcher."""
from __future__ import annotations

import contextlib
import gc
import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from xtrieve.config import IndexConfig, SearchConfig
from xtrieve.errors import ConfigError, IndexFormatError, InputError
from xtrieve.types import Encoded, Hit, IndexInfo

if TYPE_CHECKING:
    from xtrieve.encode.encoder import Encoder
    from xtrieve.index.store import Snapshot

log = logging.getLogger(__name__)


def as_encoder(encoder: Any) -> Any:
    """An encoder given as an object, or as a model folder or name (loaded); None stays None."""
    if isinstance(encoder, (str, Path)):
        from xtrieve.encode.encoder import Encoder

        return Encoder.load(encoder)
    if encoder is not None and not all(hasattr(encoder, a) for a in ("encode", "config", "identity")):
        raise InputError(f"encoder must be an Encoder, a model folder or a model name, got {type(encoder).__name__}")
    return encoder


def _size(path: Path) -> int:
    """A file's bytes; 0 for one a later commit removed (or a folder moved away)."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _flag(value: Any, name: str, optional: bool = False) -> bool | None:
    """``value`` as a bool (``optional``: or None), or an InputError (a string such as "false"
    would read as true)."""
    if optional and value is None:
        return None
    if not isinstance(value, (bool, np.bool_)):
        raise InputError(f"{name} must be True or False{' or None' if optional else ''}, got {value!r:.40}")
    return bool(value)


def _index_path(path: Any) -> Path:
    """``path`` (a str or os.PathLike) as a Path, or an InputError naming it."""
    if isinstance(path, (bytes, bool)) or not isinstance(path, (str, os.PathLike)) or not str(path).strip():
        raise InputError(f"path must be a folder path (a non-empty str or Path), got {path!r:.60}")
    return Path(path)


def _encoder_settings(encoder: dict | None) -> dict[str, int | None]:
    """query_maxlen, doc_maxlen, doc_windows and pool_min_vectors of a manifest's encoder entry
    (None without one)."""
    config = (encoder or {}).get("config") or {}
    return {key: config.get(key) for key in ("query_maxlen", "doc_maxlen", "doc_windows", "pool_min_vectors")}


def _metadata_columns(snapshot: Any) -> dict[str, str]:
    """Each metadata column a filter may name, with its type: the segments' (their types
    unified), and those the manifest remembers from documents deleted since."""
    import pyarrow as pa

    from xtrieve.index.docs import column_type, widened_type_name

    columns = {k: v for k, v in snapshot.manifest.columns.items() if not pa.types.is_null(column_type(v))}
    for seg in snapshot.segments:
        for field in seg.table.schema:
            columns[field.name] = widened_type_name(columns.get(field.name), field.type)
    return {name: str(column_type(kind)) for name, kind in sorted(columns.items())
            if name not in ("doc_id", "text", "title")}


def _matching_ids(snapshot: Any, filter: Any) -> list[str]:
    """The ids of the live documents of ``snapshot`` that ``filter`` allows."""
    from xtrieve.retrieve.searcher import Searcher

    allowed = Searcher(snapshot).allowed(filter)
    return [seg.doc_ids[i] for seg, a in zip(snapshot.segments, allowed) for i in np.nonzero(a.docs_mask)[0]]


class Index:
    """A multi-vector index on disk: build/open, add/delete/compact, search.

    Readers never lock; the object takes the writer lock only during add/delete/compact.
    It searches the snapshot it opened (refreshed after its own writes; call
    :meth:`refresh` to see other writers' commits).
    """

    def __init__(self, path: str | Path, encoder: "Encoder | str | Path | None" = None, verify: bool = True,
                 precision: str | None = None, wait: float = 0.0, device: Any = None) -> None:
        from xtrieve.index.lock import check_wait
        from xtrieve.index.store import IndexStore
        from xtrieve.index.writer import check_encoder

        self.path = _index_path(path)
        self._verify = verify = _flag(verify, "verify")
        self._wait = check_wait(wait)
        if precision is not None:
            from xtrieve.encode.precision import check_precision

            check_precision(precision)
            if encoder is not None:
                raise ConfigError("give precision= to Encoder.load for an encoder you pass; Index.open(precision=) "
                                  "sets the precision of the index's own encoder")
        if device is not None:
            from xtrieve.encode.encoder import check_device

            device = check_device(device)
            if encoder is not None:
                raise ConfigError("give device= to Encoder.load for an encoder you pass; Index.open(device=) "
                                  "sets the device of the index's own encoder")
        self._precision, self._device = precision, device
        encoder = as_encoder(encoder)
        self._store = IndexStore.open(self.path, verify=verify)
        self._snapshot = self._store.snapshot()
        check_encoder(self._snapshot.manifest, encoder, self.path)
        self._encoder = encoder
        self._searcher = None
        self._reusable: list = []  # merged segment groups a refresh hands to the next searcher
        self._refresh_lock = threading.Lock()
        # guards the (snapshot, searcher, reusable groups) triple: a refresh swaps it, a search stores
        # the searcher it built only while its snapshot is still the current one
        self._state_lock = threading.Lock()

    # -- construction ------------------------------------------------------------------

    @classmethod
    def build(cls, path: str | Path, docs: Iterable[Any], encoder: "Encoder | str | Path | None" = None,
              config: IndexConfig | Mapping[str, Any] | None = None, *, overwrite: bool = False,
              show_progress: bool | None = None, wait: float = 0.0) -> "Index":
        """Encode ``docs`` (str or {"id"/"_id", "text", "title"?, **metadata}; a DataFrame or
        pyarrow Table: a row per document) into a new index at ``path``. ``encoder``: an
        Encoder, a model folder or name (None: the default model); ``config``: an IndexConfig
        or a dict of its fields; ``overwrite``: replace an index already there in one commit;
        ``show_progress``: a progress bar (None: when stderr is a terminal). ``wait``: as in
        :meth:`open`, for this build and the returned object's writes."""
        from xtrieve.index.lock import check_wait
        from xtrieve.index.writer import create_index

        wait = check_wait(wait)  # (before the model loads)
        path, config = _index_path(path), IndexConfig.of(config)
        overwrite, show_progress = _flag(overwrite, "overwrite"), _flag(show_progress, "show_progress", optional=True)
        encoder = as_encoder(encoder)
        if encoder is None:
            from xtrieve.encode.encoder import Encoder

            encoder = Encoder.load()
        pool_factor = config.pool_factor or int(encoder.config.pool_factor)
        with create_index(path, int(encoder.config.dim), config, encoder, pool_factor, overwrite, wait) as session:
            session.add_documents(docs, encoder, show_progress)
        return cls(path, encoder=encoder, verify=False, wait=wait)

    @classmethod
    def build_from_embeddings(cls, path: str | Path, ids: Sequence[Any], embeddings: Sequence[Any] | np.ndarray,
                              metadata: Sequence[Mapping[str, Any]] | None = None,
                              config: IndexConfig | Mapping[str, Any] | None = None, *, overwrite: bool = False,
                              show_progress: bool | None = None, wait: float = 0.0) -> "Index":
        """A new index over your own token vectors: ``ids`` (str or int), ``embeddings`` (one
        [n_i, dim] array per document, or a 3-D array), ``metadata`` (one dict per document, or
        None); stored as given, no encoder. ``config``, ``overwrite``, ``show_progress`` and
        ``wait`` as in :meth:`build`."""
        from xtrieve.index.docs import check_embedding
        from xtrieve.index.writer import check_embedding_input, create_index

        path, config = _index_path(path), IndexConfig.of(config)
        overwrite, show_progress = _flag(overwrite, "overwrite"), _flag(show_progress, "show_progress", optional=True)
        ids, embeddings, metadata = check_embedding_input(ids, embeddings, metadata)
        dim = check_embedding(embeddings[0], None, f"document {ids[0]!r}").shape[1]
        with create_index(path, dim, config, None, 1, overwrite, wait) as session:
            session.add_embeddings(ids, embeddings, metadata, show_progress)
        return cls(path, verify=False, wait=wait)

    @classmethod
    def open(cls, path: str | Path, encoder: "Encoder | str | Path | None" = None, verify: bool = True,
             precision: str | None = None, wait: float = 0.0, device: Any = None) -> "Index":
        """Open an index; ``encoder`` (optional) must match its model; ``verify``: check every
        file's checksum against the manifest (hashes them all: ``False`` skips it for large indexes).
        ``precision``: "bfloat16" runs the index's own encoder (queries, added documents) in
        bfloat16, faster on CPUs with bfloat16 units (``xtrieve.encode.precision``). ``wait``:
        seconds a write (add, delete, compact) waits for another writer to finish before
        IndexLockedError (default 0: at once; ``math.inf``: as long as it takes). ``device``: where
        the index's own encoder runs ("cpu" by default, "cuda", "cuda:1", "mps"): queries, and the
        documents that :meth:`add` encodes."""
        return cls(path, encoder=encoder, verify=verify, precision=precision, wait=wait, device=device)

    # -- state -------------------------------------------------------------------------

    @property
    def _snapshot(self):
        snap = self.__dict__.get("_snap")
        if snap is None:
            raise InputError(f"index {self.path} is closed")
        return snap

    @_snapshot.setter
    def _snapshot(self, snap) -> None:
        self._snap = snap

    def close(self) -> None:
        """Release the index's open files now (FAISS files, memory-mapped segments once nothing
        else holds them) rather than when the object is collected; later calls are an
        InputError. Leaving a ``with Index.open(...) as idx:`` block closes it too."""
        with self._refresh_lock:
            with self._state_lock:
                self._snap, self._searcher, self._reusable = None, None, []
            self._store.close()
        gc.collect()  # (a memory map held only through a reference cycle closes now, not at some later collection)

    def __enter__(self) -> "Index":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """Pickled as the way to open it again (a worker process: multiprocessing with spawn,
        joblib): its path and options. The copy reads the latest commit and the index's own
        encoder, at the precision and on the device this object's encoder has."""
        self._snapshot  # (a closed index: InputError)
        precision, device = self._precision, self._device
        if self._encoder is not None:
            precision = precision or getattr(self._encoder, "precision", None)
            device = device or getattr(self._encoder, "device", None)
        return (Index, (str(self.path), None, self._verify, precision, self._wait,
                        None if device is None else str(device)))

    @property
    def snapshot(self) -> "Snapshot":
        """The :class:`~xtrieve.index.store.Snapshot` this object searches."""
        return self._snapshot

    @property
    def config(self) -> IndexConfig:
        return self._snapshot.manifest.config

    @property
    def dim(self) -> int:
        return self._snapshot.dim

    @property
    def encoder(self) -> "Encoder | None":
        """The index's encoder, loaded from INDEX/encoder on first use (None without one)."""
        if self._encoder is None and self._snapshot.encoder_identity is not None:
            from xtrieve.encode.encoder import Encoder
            from xtrieve.index.writer import check_encoder

            folder = self.path / self._snapshot.manifest.encoder_dir
            if not folder.is_dir() and self._store.manifest() != self._snapshot.manifest:
                raise IndexFormatError(f"index {self.path}: it was rebuilt since this object's snapshot, whose "
                                       f"encoder folder {folder.name} is gone; call refresh() to search the new index")
            if self._store.verify:
                self.verify_encoder_files()
            encoder = Encoder.load(folder, precision=self._precision or "float32", device=self._device or "cpu")
            check_encoder(self._snapshot.manifest, encoder, self.path)  # a replaced or altered encoder/ folder
            self._encoder = encoder
        return self._encoder

    def verify_encoder_files(self) -> None:
        """IndexFormatError unless the stored encoder's files match the manifest's checksums
        (opening verifies the segments; the encoder is checked when first loaded, or here). An
        index without an encoder, or built before encoder files were listed, has none to check."""
        from xtrieve.index.writer import ENCODER_FILES

        if self._snapshot.encoder_identity is not None:
            self._store.verify_files(self._snapshot.encoder_identity.get(ENCODER_FILES) or {})

    def refresh(self) -> "Index":
        """Pick up the latest commit (including other writers'); cheap when there is none.
        Threads sharing this Index may call it at once: each ends on a commit at least as new
        as the one on disk when it was called."""
        with self._refresh_lock:  # (unlocked, a slower thread could put back an older snapshot)
            stamp = self._store.manifest_stamp()
            if stamp is not None and stamp == self._snapshot.stamp:
                return self
            snap = self._store.snapshot()
            if snap.manifest != self._snapshot.manifest:  # (a replaced index may reach the same generation)
                from xtrieve.index.writer import model_difference

                if model_difference(snap.encoder_identity, self._snapshot.encoder_identity) is not None:
                    self._encoder = None  # the index was rebuilt with another model: load that one
                # the next searcher takes over the merged segment groups still wholly in the snapshot
                from xtrieve.retrieve.segment_groups import core_of

                live = {id(core_of(seg)) for seg in snap.segments}
                with self._state_lock:  # (a search storing the searcher it built waits for the swap)
                    held = self._searcher.merged_groups() if self._searcher is not None else self._reusable
                    self._reusable = [(cores, probe) for cores, probe in held if all(id(c) in live for c in cores)]
                    self._searcher = None
                    self._snapshot = snap
            else:
                self._snapshot.stamp = snap.stamp  # the same commit, rewritten: this stamp stands for it now
        return self

    def warm_up(self) -> "Index":
        """Do a first search's one-time work now (servers, timings): load FAISS, the model and
        every segment's token index, pack the encoder's weights and run one search (torch and
        oneDNN set up their kernels on first use)."""
        import pyarrow.dataset  # noqa: F401  (a pyarrow Expression filter's first search imports it: ~0.2 s)

        self._get_searcher().warm_up()
        if len(self):
            query = "warm up" if self.encoder is not None else np.full((1, self.dim), self.dim ** -0.5, dtype=np.float32)
            self.search(query, k=1)
        return self

    def __len__(self) -> int:
        return self._snapshot.n_docs

    def __repr__(self) -> str:
        snap = self.__dict__.get("_snap")
        if snap is None:
            return f"Index({str(self.path)!r}, closed)"
        return f"Index({str(self.path)!r}, n_docs={snap.n_docs}, generation={snap.generation})"

    # -- writes ------------------------------------------------------------------------

    def add(self, docs: Iterable[Any], encoder: "Encoder | str | Path | None" = None,
            show_progress: bool | None = None, replace: bool = False) -> list[str]:
        """Encode and add documents (as :meth:`build` takes them); returns their ids (assigned
        ones for plain strings). ``encoder``: one matching the index's model, kept for this
        Index's later queries and adds (None: the index's own).

        An id already in the index is an InputError (nothing added), unless ``replace``: then
        the new document replaces the old one in the same commit, so a crash leaves either."""
        from xtrieve.index.writer import check_encoder

        replace, show_progress = _flag(replace, "replace"), _flag(show_progress, "show_progress", optional=True)
        encoder = as_encoder(encoder)
        if encoder is not None:
            check_encoder(self._snapshot.manifest, encoder, self.path)
            self._encoder = encoder
        enc = self.encoder
        if enc is None:
            raise InputError(f"index {self.path} has no encoder (built from embeddings): add token vectors "
                             "with Index.add_embeddings (Python)")
        with self._writing(enc) as session:
            ids = session.add_documents(docs, enc, show_progress, replace=replace)
            session.merge_after_commit()
        return ids

    def add_embeddings(self, ids: Sequence[Any], embeddings: Sequence[Any] | np.ndarray,
                       metadata: Sequence[Mapping[str, Any]] | None = None, show_progress: bool | None = None,
                       replace: bool = False) -> list[str]:
        """Add documents given as token vectors [n_i, dim] (``replace`` as in :meth:`add`)."""
        replace, show_progress = _flag(replace, "replace"), _flag(show_progress, "show_progress", optional=True)
        with self._writing() as session:
            out = session.add_embeddings(ids, embeddings, metadata, show_progress, replace=replace)
            session.merge_after_commit()
        return out

    def delete(self, ids: Iterable[Any] | str | int | None = None, *, filter: Any = None, missing_ok: bool = False) -> int:
        """Delete documents by id (InputError naming unknown ids; nothing changes then; with
        ``missing_ok`` they are skipped), or every live document a metadata ``filter`` matches
        (as in :meth:`search`, evaluated on the latest commit under the writer lock; none
        matched: 0, nothing written). Returns how many."""
        if ids is None and filter is None:
            raise InputError("ids must be an id or an iterable of ids (or give filter=...), got None")
        if ids is not None and filter is not None:
            raise InputError("delete takes ids or a filter, not both")
        with self._writing() as session:
            if filter is not None:
                ids = _matching_ids(session.snapshot(), filter)  # an empty index still checks the filter
                if not ids:
                    return 0
            return session.delete(ids, missing_ok=_flag(missing_ok, "missing_ok"))

    def update_metadata(self, updates: Mapping[Any, Mapping[str, Any]] | None = None, *, filter: Any = None,
                        values: Mapping[str, Any] | None = None, show_progress: bool | None = None) -> int:
        """Change live documents' metadata without encoding them again: ``updates`` maps an id to
        its new values ({"year": 2024}; None clears a column; a key's value, a dict or not,
        replaces the nested columns under it), or ``values`` go to every live document
        ``filter`` matches (evaluated as in :meth:`delete`). Their vectors and text are copied as stored; title and text cannot
        change here (``add(..., replace=True)`` encodes new ones). One commit: an id that is not
        live is an InputError and nothing changes. Returns how many documents changed."""
        from xtrieve.index.docs import check_metadata_updates, check_new_metadata

        show_progress = _flag(show_progress, "show_progress", optional=True)
        if (updates is None) == (filter is None):
            raise InputError("update_metadata takes updates ({id: {column: value}}) or filter= with values=, "
                             "one of the two")
        if updates is not None and values is not None:
            raise InputError("values= goes with filter=; with updates, give each id its own values")
        if filter is not None:
            values = check_new_metadata(values, "values")
        else:
            updates = check_metadata_updates(updates)
        with self._writing() as session:
            if filter is not None:
                ids = _matching_ids(session.snapshot(), filter)
                if not ids:
                    return 0
                updates = dict.fromkeys(ids, values)
            done = session.update_metadata(updates, show_progress)
            session.merge_after_commit()
        return done

    def compact(self) -> None:
        """Merge all segments, drop deleted documents and unreferenced files."""
        with self._writing() as session:
            session.compact()

    @contextlib.contextmanager
    def _writing(self, encoder: Any = None) -> Iterator[Any]:
        """A write session on this index; afterwards this object shows the latest commit, also
        when the write failed (or was interrupted) after committing."""
        from xtrieve.index.writer import open_writer

        self._snapshot  # a closed index: InputError before anything is written
        try:
            with open_writer(self.path, encoder, self._wait, store=self._store) as session:
                yield session
        except BaseException:
            try:
                self._refresh_unless_closed()
            except Exception as exc:  # the write's own error is the one to raise
                log.warning("index %s: refreshing after a failed write failed too (%s)", self.path, exc)
            raise
        self._refresh_unless_closed()

    def _refresh_unless_closed(self) -> None:
        """refresh(), skipped when another thread closed this object during the write (which
        committed: its result stands, and there is no snapshot left to bring up to date)."""
        if self.__dict__.get("_snap") is not None:
            try:
                self.refresh()
            except InputError:
                if self.__dict__.get("_snap") is not None:
                    raise

    # -- reads -------------------------------------------------------------------------

    def info(self) -> IndexInfo:
        """Sizes and settings of the current snapshot."""
        snap = self._snapshot
        m = snap.manifest
        n_tokens = n_vectors = n_deleted = 0
        for seg in snap.segments:
            live = ~seg.deleted
            n_deleted += int(seg.deleted.sum())
            n_tokens += int(seg.n_tokens[live].sum())
            n_vectors += int(seg.vector_counts[live].sum())
        size = sum(_size(self.path / rel) for rel in ("manifest.json", *m.files()))
        model_bytes = 0
        if m.encoder is not None:
            model_dir = self.path / m.encoder_dir
            model_bytes = sum(_size(p) for p in model_dir.rglob("*") if p.is_file() and not p.is_symlink())
        return IndexInfo(
            path=str(self.path), n_docs=snap.n_docs, n_deleted=n_deleted, n_tokens=n_tokens, n_vectors=n_vectors,
            dim=snap.dim, n_segments=len(snap.segments), bytes=size,
            model=(m.encoder or {}).get("name") if m.encoder else None, generation=snap.generation,
            faiss=[s.faiss for s in m.segments], vector_storage=m.config.vector_storage, pool_factor=m.pool_factor,
            dense_weight=m.dense_weight, **_encoder_settings(m.encoder), metadata_columns=_metadata_columns(snap),
            model_bytes=model_bytes,
        )

    def get(self, doc_id: str | int) -> dict[str, Any] | None:
        """Stored columns (doc_id, title/text, metadata) of a live document, or None."""
        if isinstance(doc_id, bool) or not isinstance(doc_id, (str, int, np.integer)):
            raise InputError(f"get takes one document id (a string), got {type(doc_id).__name__}")
        found = self._snapshot.lookup(str(doc_id))
        if found is None:
            return None
        seg = self._snapshot.segments[found[0]]
        return {c: seg.table.column(c)[found[1]].as_py() for c in seg.table.column_names}

    def _query_arrays(self, queries: Sequence[Any]) -> tuple[list[np.ndarray], list[np.ndarray | None]]:
        """Token vectors per query and, for text queries when the model fuses one, a dense embedding."""
        texts = [i for i, q in enumerate(queries) if isinstance(q, str)]
        out: list[Any] = list(queries)
        dense: list[np.ndarray | None] = [None] * len(out)
        if texts:
            enc = self.encoder
            if enc is None:
                raise InputError(f"index {self.path} has no encoder: pass query token vectors [n_q, {self.dim}]")
            from xtrieve.retrieve.threads import idle_core_threads

            with idle_core_threads():  # on the cores other processes leave idle, as the search
                encoded = enc.encode([queries[i] for i in texts], True)
            for row, i in enumerate(texts):
                out[i] = encoded.vectors[row]
                if encoded.dense is not None:
                    dense[i] = encoded.dense[row]
        return out, dense

    def _get_searcher(self):
        from xtrieve.retrieve.searcher import Searcher

        snap, searcher = self._snapshot, self._searcher  # (read once: a refresh may replace them meanwhile)
        if searcher is None or searcher.snapshot is not snap:
            searcher = Searcher(snap, self._encoder, reuse=self._reusable)
            with self._state_lock:
                # kept only while its snapshot is still this object's: a refresh that ran meanwhile
                # would otherwise find, after it returned, a searcher of the older snapshot pinning
                # that snapshot's segments (open files a writer unlinked) and its handed-on groups gone
                if self.__dict__.get("_snap") is snap:
                    self._searcher, self._reusable = searcher, []
        return searcher

    def search_batch(self, queries: Iterable[Any] | np.ndarray, k: int | np.integer = 10, filter: Any = None,
                     exhaustive: bool = False, config: SearchConfig | Mapping[str, Any] | None = None) -> list[list[Hit]]:
        """Top-k hits for each query (a string, or token vectors [n_q, dim]), in the queries'
        order; FAISS calls are shared by the batch. ``filter``, ``exhaustive`` and ``config`` as
        in :meth:`search`, for every query.

        When the index's model adds a dense score, text queries get it; token vectors are
        scored by MaxSim alone.
        """
        from xtrieve.retrieve.searcher import check_k

        check_k(k)  # (before any query is encoded)
        config = SearchConfig.of(config)
        exhaustive = _flag(exhaustive, "exhaustive")
        if isinstance(queries, np.ndarray) and (queries.dtype.kind in "OSU" and queries.ndim == 1 or queries.ndim == 3):
            queries = list(queries)  # texts, or [n_queries, n_tokens, dim] vectors
        if isinstance(queries, (str, np.ndarray)):
            raise InputError("search_batch expects a list of queries; use search() for one")
        if isinstance(queries, Encoded):
            raise InputError("search_batch takes texts or token vectors, not an Encoded batch: pass the texts (a model "
                             "that adds a dense score needs them) or encoded.vectors (MaxSim alone)")
        if isinstance(queries, Mapping):
            raise InputError("search_batch takes a list of queries, not a mapping (it would search its keys): pass "
                             "list(queries.values()); the hits come back in that order")
        if not isinstance(queries, Iterable):
            raise InputError(f"search_batch expects a list of queries, got {type(queries).__name__}")
        queries = list(queries)
        if not queries:
            return []
        arrays, dense = self._query_arrays(queries)
        return self._get_searcher().search(arrays, k, filter, exhaustive, config, dense)

    def search(self, query: Any, k: int | np.integer = 10, filter: Any = None, exhaustive: bool = False,
               config: SearchConfig | Mapping[str, Any] | None = None) -> list[Hit]:
        """Top-k hits for one query (a string or token vectors [n_q, dim]), best first.

        ``filter``: a filter string over the metadata columns (README: Filters) or a pyarrow
        Expression; ``exhaustive``: score every allowed document by exact MaxSim (the ground
        truth) instead of token retrieval and a rerank; ``config``: a SearchConfig or a dict of
        its fields (k', rerank depth, nprobe, ...)."""
        if isinstance(query, (list, tuple)) and query and all(isinstance(q, str) for q in query):
            raise InputError("search expects one query; use search_batch for a list of queries")
        if isinstance(query, str) and not query.strip():
            raise InputError("the query is an empty or whitespace-only text")
        return self.search_batch([query], k, filter, exhaustive, config)[0]
