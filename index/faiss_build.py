"""FAISS token indexes: factory "auto", the shared trained template, reading and writing.

Every segment's FAISS index holds its vectors in row order, so FAISS ids are vector row
numbers. Factories that need training (IVF, PQ) are trained once, on the first segment
that needs them, and the trained empty index is kept as the index-wide template.
A factory is refused (ConfigError) unless its index scores by inner product, numbers vectors
by row and, once filled, answers a search as the searcher makes it: top-k per query vector,
nprobe for IVF, an ID selector over vector rows for deletes and filters (see ``search_params``).
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import threading
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Iterator

import numpy as np

from xtrieve.config import IndexConfig
from xtrieve.errors import ConfigError
from xtrieve.faiss_loader import load_faiss
from xtrieve.index.fsio import make_room

log = logging.getLogger(__name__)

SAMPLE_PER_CENTROID = 64
MAX_IVF_LISTS = 1 << 20
KMEANS_ITERATIONS = 10
THREADS_ENV = "XTRIEVE_FAISS_BUILD_THREADS"
PARALLEL_WORK = 1 << 24  # ~50 ms on one core: FAISS builds below it run on one thread
CHECK_K = 16  # results asked of the search that checks a freshly built index
_THREADS_LOCK = threading.Lock()


@contextlib.contextmanager
def build_threads(work: int = 0) -> Iterator[None]:
    """FAISS OpenMP threads while building: $XTRIEVE_FAISS_BUILD_THREADS when set, else FAISS's
    own number for ``work`` (vector x centroid distances, about) of at least PARALLEL_WORK, and
    one thread for less. The many small builds of a test suite, or of one-document adds, ran
    10-15x slower on several threads on 2 shared cores (spinning next to torch's pool); a large
    one trains and adds ~1.7x faster on 2 (scifact's 372K vectors into IVF2048: 14.1 -> 8.5 s,
    also right after torch encoded documents).
    """
    faiss = load_faiss()

    value = os.environ.get(THREADS_ENV, "")
    with _THREADS_LOCK:
        before = faiss.omp_get_max_threads()
        n = int(value) if value.isdigit() and int(value) > 0 else (before if work >= PARALLEL_WORK else 1)
        faiss.omp_set_num_threads(n)
        try:
            yield
        finally:
            faiss.omp_set_num_threads(before)


def auto_nlist(n_vectors: int) -> int:
    """About 4 * sqrt(n), rounded to a power of two (at least 16)."""
    target = 4.0 * math.sqrt(max(n_vectors, 1))
    return max(16, 2 ** int(round(math.log2(target))))


def pq_subquantizers(dim: int, pq_bytes: int | None) -> int:
    """Number of 4-bit PQ sub-quantizers: 2 * pq_bytes, else dim // 2; FAISS needs a divisor of
    dim, so the divisor nearest that wish (by ratio; the smaller one on a tie). Rounding only
    down gave a prime dim (97, 101, 127, ...) one sub-quantizer: 4 bits per vector, and token
    retrieval that finds almost nothing (PQ97x4fs, one dimension each, is a valid choice there)."""
    want = min(2 * pq_bytes if pq_bytes else max(1, dim // 2), dim)
    divisors = [m for m in range(1, dim + 1) if dim % m == 0]
    return min(divisors, key=lambda m: (max(m / want, want / m), m))


def resolve_factory(config: IndexConfig, n_vectors: int, dim: int, template: dict | None) -> str:
    """The factory string for a segment of ``n_vectors`` vectors."""
    if config.faiss_factory != "auto" or template is not None:
        # a template was trained once: even a small segment stores 4-bit codes, not floats
        factory = config.faiss_factory if config.faiss_factory != "auto" else template["factory"]
        if config.vector_storage == "int4":
            check_int4_factory(factory, dim)
        return factory
    if n_vectors <= config.flat_max_vectors:
        return "Flat"
    nlist = config.nlist or auto_nlist(n_vectors)
    return f"IVF{nlist},PQ{pq_subquantizers(dim, config.pq_bytes)}x4fs"


def new_index(factory: str, dim: int):
    """An empty inner-product FAISS index; ConfigError for a bad factory string or one whose
    index xtrieve cannot use (another metric, its own ids)."""
    faiss = load_faiss()

    lists = max((int(n) for n in re.findall(r"IVF(\d+)", factory)), default=0)
    if lists > MAX_IVF_LISTS:  # (FAISS allocates the lists as it builds the index: a hostile manifest's 16M took 4 GB)
        raise ConfigError(f"FAISS factory {factory[:60]!r} asks for {lists:,} IVF lists: at most {MAX_IVF_LISTS:,} "
                          f"(they are trained on {SAMPLE_PER_CENTROID} vectors each)")
    try:
        index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        raise ConfigError(f"invalid FAISS factory {factory!r}: {_faiss_message(exc)}") from None
    if index.metric_type != faiss.METRIC_INNER_PRODUCT:
        metric = next((m for m in dir(faiss) if m.startswith("METRIC_") and getattr(faiss, m) == index.metric_type),
                      index.metric_type)
        raise ConfigError(f"FAISS factory {factory!r} builds an index with metric {metric}: xtrieve ranks token "
                          "vectors by inner product")
    if isinstance(faiss.downcast_index(index), faiss.IndexIDMap):  # IndexIDMap2 derives from it
        raise ConfigError(f"FAISS factory {factory!r} maps its own ids: xtrieve numbers FAISS vectors by "
                          "their row, so IDMap is not supported (drop the 'IDMap,' prefix)")
    return index


def check_int4_factory(factory: str, dim: int) -> None:
    """ConfigError when ``factory`` reduces the vectors' dimension (PCA64, ...) before an IVF index:
    int4 codes are residuals against IVF centroids of the vectors' own dimension (a transform
    that keeps it, such as a rotation, leaves centroids the residuals still decode against)."""
    index = new_index(factory, dim)  # kept referenced: the FAISS wrappers below do not own it
    if _ivf_behind_transform(index) and load_faiss().extract_index_ivf(index).d != dim:
        raise ConfigError(f"FAISS factory {factory!r} reduces vectors to another dimension before its IVF lists: "
                          "vector_storage 'int4' needs IVF centroids of the vectors' own dimension "
                          "(drop the reduction, or use vector_storage 'int8')")


def _ivf_behind_transform(index) -> bool:
    """Whether ``index`` holds an IVF index under an IndexPreTransform (possibly inside a refine index)."""
    faiss = load_faiss()

    down = faiss.downcast_index(index)
    if isinstance(down, faiss.IndexPreTransform):
        return faiss.try_extract_index_ivf(down) is not None
    if isinstance(down, faiss.IndexRefine):
        return _ivf_behind_transform(down.base_index)
    return False


def _faiss_message(exc: RuntimeError) -> str:
    """The reason in a FAISS error, without the C++ function, location and failed condition."""
    text = str(exc).strip()
    line = re.sub(r"^Error in .*? at \S+:\d+: ", "", text.splitlines()[-1] if text else "invalid")
    reason = line.rpartition("Error: ")[2]
    return reason.partition(" failed: ")[2] or reason


def _describe(index, factory: str | None) -> str:
    """``factory`` for error messages, else the FAISS class of ``index``."""
    if factory is not None:
        return f"FAISS factory {factory!r}"
    return f"FAISS index {type(load_faiss().downcast_index(index)).__name__}"


def train_template(factory: str, dim: int, n_rows: int, rows: Callable[[np.ndarray], np.ndarray], seed: int = 0):
    """Train an empty index on a sample (<= 64 per IVF list, 10 k-means rounds) drawn with ``rows(indices)``."""
    faiss = load_faiss()

    index = new_index(factory, dim)
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        ivf.cp.niter = KMEANS_ITERATIONS
    limit = SAMPLE_PER_CENTROID * (ivf.nlist if ivf is not None else 256)
    if n_rows > limit:
        pick = np.sort(np.random.default_rng(seed).choice(n_rows, limit, replace=False))
    else:
        pick = np.arange(n_rows)
    sample = np.ascontiguousarray(rows(pick), dtype=np.float32)
    if ivf is not None and len(sample) < ivf.nlist:
        raise ConfigError(f"FAISS factory {factory!r} needs at least {ivf.nlist} vectors to train, got {len(sample)}")
    log.info("training FAISS %s on %d vectors", factory, len(sample))
    try:
        with build_threads(len(sample) * (ivf.nlist * KMEANS_ITERATIONS if ivf is not None else 256)):
            index.train(sample)
    except RuntimeError as exc:
        raise ConfigError(f"FAISS factory {factory!r} failed to train on {len(sample)} vectors: "
                          f"{_faiss_message(exc)}") from None
    return index


def fill_index(empty, chunks: Iterable[np.ndarray], factory: str | None = None):
    """Add vectors chunk by chunk (row order = ids) to a copy of a trained empty index, then
    check that it answers xtrieve's searches (``check_searchable``); errors name ``factory``."""
    faiss = load_faiss()

    first = None
    ivf = faiss.try_extract_index_ivf(empty)
    lists = ivf.nlist if ivf is not None else 1
    try:
        index = faiss.clone_index(empty)
        for chunk in chunks:
            chunk = np.ascontiguousarray(chunk, dtype=np.float32)
            if first is None and len(chunk):
                first = chunk[:1].copy()
            with build_threads(len(chunk) * lists):
                index.add(chunk)
    except RuntimeError as exc:
        raise ConfigError(f"{_describe(empty, factory)} cannot add vectors: {_faiss_message(exc)}") from None
    if first is not None:
        check_searchable(index, first, _describe(empty, factory))
    return index


def search_params(index) -> Callable[[int, Any], Any]:
    """For ``index``, the function (nprobe, selector or None) -> the SearchParameters to pass
    to its search (None when it needs none): nprobe for IVF, under a refine index or a
    transform too, and the selector for the innermost index that filters."""
    faiss = load_faiss()

    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexPreTransform):
        return search_params(index.index)
    if isinstance(index, faiss.IndexRefine):
        base = search_params(index.base_index)

        def refine(nprobe: int, selector):
            params = faiss.IndexRefineSearchParameters(k_factor=index.k_factor)
            inner = base(nprobe, selector)
            if inner is not None:
                params.base_index_params = inner
            return params
        return refine
    if isinstance(index, faiss.IndexIVF):
        def ivf(nprobe: int, selector):
            if selector is None:
                return faiss.SearchParametersIVF(nprobe=nprobe)
            return faiss.SearchParametersIVF(nprobe=nprobe, sel=selector)
        return ivf

    def plain(nprobe: int, selector):
        return None if selector is None else faiss.SearchParameters(sel=selector)
    return plain


def check_searchable(index, query: np.ndarray, name: str) -> None:
    """ConfigError naming ``name`` unless ``index`` answers ``query`` [1, dim] (a stored vector,
    row 0) as the searcher asks, with ``search_params``: plainly, and with a row selector that
    leaves row 0 out, which must not come back. One top-16 search each: cheap next to the add."""
    faiss = load_faiss()

    n = int(index.ntotal)
    k = min(n, CHECK_K)
    bits = np.full((n + 7) // 8, 0xFF, dtype=np.uint8)
    bits[0] = 0xFE  # every row but row 0
    selector = faiss.IDSelectorBitmap(n, faiss.swig_ptr(bits))
    selector.referenced_objects = [bits]
    params = search_params(index)
    for sel, fails in ((None, "cannot be searched with xtrieve's search parameters"),
                       (selector, "cannot search with an ID selector, which xtrieve needs for deletes and broad filters")):
        try:
            with build_threads():
                _, ids = index.search(query, k, params=params(1, sel))
        except RuntimeError as exc:
            raise ConfigError(f"{name} {fails} (FAISS: {_faiss_message(exc)})") from None
        if ((ids < -1) | (ids >= n)).any():
            raise ConfigError(f"{name} returns ids that are not vector row numbers")
        if sel is not None and (ids == 0).any():
            raise ConfigError(f"{name} ignores the ID selector xtrieve uses for deletes and filters")


def list_sizes(index) -> np.ndarray:
    """The length of each inverted list of an IVF index [nlist]."""
    faiss = load_faiss()

    ivf = faiss.extract_index_ivf(index)
    return np.array([ivf.invlists.list_size(i) for i in range(ivf.nlist)], dtype=np.int64)


def is_exact_flat(index) -> bool:
    """Whether ``index`` is a plain inner-product IndexFlat (an exact scan of float32 vectors)."""
    faiss = load_faiss()

    return type(faiss.downcast_index(index)) in (faiss.IndexFlat, faiss.IndexFlatIP) \
        and index.metric_type == faiss.METRIC_INNER_PRODUCT


def write_index(index, path: Path, shared_quantizer: bool = False) -> None:
    """Write an index through Python's file I/O (FAISS's own opens a path in the ANSI code page
    on Windows, where a folder such as C:\\Users\\José cannot be written). ``shared_quantizer``:
    the index's IVF centroids are the template's, so the file leaves them out (see
    :func:`serialize_without_quantizer`). An exact Flat index is written empty: its vectors are
    the segment's stored codes, which :func:`refill_flat` decodes back into it on reading
    (format version 3; a float32 copy was 512 B per 128-d vector beside 132 B of int8 codes)."""
    faiss = load_faiss()

    if is_exact_flat(index) and index.ntotal:
        index = faiss.IndexFlat(index.d, index.metric_type)
    data = serialize_without_quantizer(index) if shared_quantizer else faiss.serialize_index(index)
    with open(make_room(path), "xb") as f:
        f.write(memoryview(data))


def read_index_from(f: BinaryIO):
    """Read an index from an open file (works after the file was unlinked). FAISS trusts the
    sizes its header gives: one asking for more memory than there is raises RuntimeError, as
    FAISS does for a file it cannot read."""
    faiss = load_faiss()

    data = _whole_file(f)
    try:
        return faiss.deserialize_index(data)
    except MemoryError:
        raise RuntimeError(f"its header asks for more memory than is free ({len(data):,} bytes on disk): "
                           "a damaged or crafted file, or too little memory") from None


def _whole_file(f: BinaryIO) -> np.ndarray:
    """A file's bytes, read at explicit offsets where the OS can (processes forked after the file
    was opened share its position: a seek and read of each could interleave)."""
    fd = f.fileno()
    if not hasattr(os, "preadv"):
        f.seek(0)
        return np.frombuffer(f.read(), dtype=np.uint8)
    data = np.empty(os.fstat(fd).st_size, dtype=np.uint8)
    view, done = memoryview(data), 0
    while done < len(data):
        n = os.preadv(fd, [view[done:]], done)
        if n == 0:  # the file shrank: what there is (FAISS names what is missing)
            return data[:done]
        done += n
    return data


def refill_flat(index, n_vectors: int, decode: Callable[[slice], np.ndarray], chunk_rows: int) -> None:
    """Put a segment's ``n_vectors`` decoded vectors back into the empty exact Flat index its
    file holds (see :func:`write_index`); nothing for any other index, or one that holds vectors
    (an index of format version 2 or older stored them)."""
    if index.ntotal or not n_vectors or not is_exact_flat(index):
        return
    for start in range(0, n_vectors, chunk_rows):
        index.add(np.ascontiguousarray(decode(slice(start, min(start + chunk_rows, n_vectors))), dtype=np.float32))


def ivf_centroids(index) -> np.ndarray | None:
    """The coarse centroids [nlist, dim] (float32) of an IVF index, None for other indexes."""
    faiss = load_faiss()

    ivf = faiss.try_extract_index_ivf(index)
    if ivf is None:
        return None
    return np.ascontiguousarray(ivf.quantizer.reconstruct_n(0, ivf.nlist), dtype=np.float32)


def ivf_lists(index, vectors: np.ndarray, n: int = 1) -> np.ndarray:
    """The ``n`` nearest IVF lists of each vector, nearest first: int64 [len(vectors), n]."""
    faiss = load_faiss()

    ivf = faiss.extract_index_ivf(index)
    if vectors.shape[-1] != ivf.d:
        raise ConfigError(f"IVF lists of {ivf.d}-dimensional centroids cannot be assigned to "
                          f"{vectors.shape[-1]}-dimensional vectors (a transform before the IVF index?)")
    with build_threads(len(vectors) * ivf.nlist):
        return ivf.quantizer.assign(np.ascontiguousarray(vectors, dtype=np.float32), n)


def _flat_quantizer(index):
    """The IVF part of ``index`` when its coarse quantizer is a plain IndexFlat, else None."""
    faiss = load_faiss()

    ivf = faiss.try_extract_index_ivf(index)
    if ivf is None or not isinstance(faiss.downcast_index(ivf.quantizer), faiss.IndexFlat):
        return None
    return ivf


def serialize_without_quantizer(index):
    """``index`` serialized with an empty coarse quantizer in place of its centroids: a segment
    built from the IVF template stores only its lists, codes and codebooks (every IVF file held
    the template's nlist x dim float32 centroids, 0.5 MB at 1,024 lists of 128-d, so a
    one-document add of 5 vectors wrote ~550 KB); :func:`attach_quantizer` puts them back."""
    faiss = load_faiss()

    ivf = _flat_quantizer(index)
    if ivf is None:
        return faiss.serialize_index(index)
    kept, own = ivf.quantizer, ivf.own_fields
    empty = faiss.IndexFlat(ivf.d, kept.metric_type)
    ivf.quantizer, ivf.own_fields = empty, False
    try:
        return faiss.serialize_index(index)
    finally:
        ivf.quantizer, ivf.own_fields = kept, own


def lacks_quantizer(index) -> bool:
    """Whether ``index`` is an IVF index written without its centroids (a template's segment)."""
    ivf = _flat_quantizer(index)
    return ivf is not None and ivf.nlist > 0 and ivf.quantizer.ntotal == 0


def attach_quantizer(index, template) -> bool:
    """Give ``index`` (read without its centroids) the coarse quantizer of ``template``, shared,
    not copied; False when the template does not fit (other lists or dimension)."""
    ivf, tivf = _flat_quantizer(index), _flat_quantizer(template)
    if ivf is None or tivf is None or ivf.nlist != tivf.nlist or ivf.d != tivf.d or tivf.quantizer.ntotal != tivf.nlist:
        return False
    ivf.quantizer, ivf.own_fields = tivf.quantizer, False
    index.referenced_objects = [template]  # (the template owns the quantizer: keep it alive)
    return True
