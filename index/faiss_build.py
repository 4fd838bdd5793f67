"""FAISS token indexes: factory "auto", the shared trained template, reading and writing.

Every segment's FAISS index holds its vectors in row order, so FAISS ids are vector row
numbers. Factories that need training (IVF, PQ) are trained once, on the first segment
that needs them, and the trained empty index is kept as the index-wide template.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Iterator

import numpy as np

from xtrieve.config import IndexConfig
from xtrieve.errors import ConfigError
from xtrieve.faiss_loader import load_faiss

log = logging.getLogger(__name__)

SAMPLE_PER_CENTROID = 64
KMEANS_ITERATIONS = 10
ADD_CHUNK = 1 << 16
THREADS_ENV = "XTRIEVE_FAISS_BUILD_THREADS"
_THREADS_LOCK = threading.Lock()


@contextlib.contextmanager
def build_threads() -> Iterator[None]:
    """FAISS OpenMP threads while building: 1 unless $XTRIEVE_FAISS_BUILD_THREADS says otherwise.

    Training and adding with several OpenMP threads measured 10-15x slower than one thread
    on small shared machines (spinning threads next to torch's pool).
    """
    faiss = load_faiss()

    value = os.environ.get(THREADS_ENV, "1")
    n = int(value) if value.isdigit() and int(value) > 0 else 1
    with _THREADS_LOCK:
        before = faiss.omp_get_max_threads()
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
    """Number of 4-bit PQ sub-quantizers: 2 * pq_bytes, else dim // 2; a divisor of dim."""
    m = 2 * pq_bytes if pq_bytes else max(1, dim // 2)
    m = min(m, dim)
    while dim % m:
        m -= 1
    return m


def resolve_factory(config: IndexConfig, n_vectors: int, dim: int, template: dict | None) -> str:
    """The factory string for a segment of ``n_vectors`` vectors."""
    if config.faiss_factory != "auto":
        return config.faiss_factory
    if template is not None:  # trained once: even a small segment stores 4-bit codes, not floats
        return template["factory"]
    if n_vectors <= config.flat_max_vectors:
        return "Flat"
    nlist = config.nlist or auto_nlist(n_vectors)
    return f"IVF{nlist},PQ{pq_subquantizers(dim, config.pq_bytes)}x4fs"


def new_index(factory: str, dim: int):
    """An empty inner-product FAISS index; ConfigError for a bad factory string."""
    faiss = load_faiss()

    try:
        return faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else "invalid"
        raise ConfigError(f"invalid FAISS factory {factory!r}: {first}") from None


def needs_training(factory: str, dim: int) -> bool:
    return not new_index(factory, dim).is_trained


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
    with build_threads():
        index.train(sample)
    return index


def fill_index(empty, chunks: Iterable[np.ndarray]):
    """Add vectors chunk by chunk (row order = ids) to a copy of a trained empty index."""
    faiss = load_faiss()

    index = faiss.clone_index(empty)
    with build_threads():
        for chunk in chunks:
            index.add(np.ascontiguousarray(chunk, dtype=np.float32))
    return index


def write_index(index, path: Path) -> None:
    faiss = load_faiss()

    faiss.write_index(index, str(path))


def read_index_from(f: BinaryIO):
    """Read an index from an open file (works after the file was unlinked)."""
    faiss = load_faiss()

    f.seek(0)
    data = np.frombuffer(f.read(), dtype=np.uint8)
    return faiss.deserialize_index(data)


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
    with build_threads():
        return ivf.quantizer.assign(np.ascontiguousarray(vectors, dtype=np.float32), n)
