"""Filling a merged segment's IVF index by copying codes rather than adding vectors again.

Segments built from the same IVF template share its centroids and codebooks, so a vector's
list and code in the segment it comes from are the ones an add of its original floats
would give. A merge (or a metadata update) can then move the kept vectors' codes list by
list into a copy of the template, renumbered to their new rows, and skip the coarse
assignment (a distance to every centroid) and encoding that dominated its time. The result
is the index a single add of the original vectors in their new order would build, byte
for byte. FAISS's own ``merge_from`` keeps every vector and shifts ids by a constant, so it
cannot drop deleted vectors or renumber the rest to rows.
"""
from __future__ import annotations

import logging
from typing import Any, Iterable

import numpy as np

from xtrieve.faiss_loader import load_faiss
from xtrieve.index import faiss_build

log = logging.getLogger(__name__)

# FAISS classes whose inverted lists hold all of a vector's code (a refine index or IVFPQR
# keeps a second code elsewhere; a transform sits in front of the lists)
COPYABLE_ORDER = ("IndexIVFFlat", "IndexIVFScalarQuantizer", "IndexIVFPQ", "IndexIVFPQFastScan")
COPYABLE = frozenset(COPYABLE_ORDER)
# rough costs on one core (seconds), to choose between copying and adding again: asking a
# source list its length; reading, regrouping and repacking one non-empty source list; moving
# one code; and, for an add, one vector's distance to one centroid (the coarse assignment
# dominates it). Measured: copy 0.15 s against add 1.9 s for 200K vectors into 2,048 lists;
# 55 ms against 17 ms for eight segments of 200 vectors.
SCAN_PER_LIST = 1e-6
COPY_PER_LIST = 2e-5
COPY_PER_VECTOR = 5e-7
ADD_PER_VECTOR_LIST = 4e-9


def copying_pays(nlist: int, n_vectors: int, source_sizes: Iterable[int]) -> bool:
    """Whether copying ``n_vectors`` codes out of sources of the given sizes into ``nlist``
    lists should cost less than adding the vectors again: yes for merges of large segments,
    no for a handful of vectors spread thinly over many lists."""
    sizes = list(source_sizes)
    copy = (nlist * len(sizes) * SCAN_PER_LIST + sum(min(nlist, s) for s in sizes) * COPY_PER_LIST
            + n_vectors * COPY_PER_VECTOR)
    return copy < n_vectors * nlist * ADD_PER_VECTOR_LIST


def copied_index(template, parts: list[tuple[Any, np.ndarray]], n: int):
    """A copy of ``template`` (a trained, empty IVF index) holding ``n`` vectors whose codes are
    copied from ``parts``: (source segment, source rows) pairs whose rows, in order, are the new
    rows 0..n-1 (a source has ``n_vectors`` and ``faiss_index``). None, with nothing changed,
    when the template is not an IVF class whose lists hold whole codes, when adding the vectors
    again costs less (:func:`copying_pays`), or when a source was not built from the same
    trained template (a Flat segment, another factory, a template trained since): the caller then
    adds them."""
    faiss = load_faiss()

    ivf_class = type(faiss.downcast_index(template)).__name__
    by_source: dict[int, tuple[Any, list[np.ndarray], list[np.ndarray]]] = {}
    start = 0
    for source, rows in parts:
        entry = by_source.setdefault(id(source), (source, [], []))
        entry[1].append(np.asarray(rows, dtype=np.int64))
        entry[2].append(np.arange(start, start + len(rows), dtype=np.int64))
        start += len(rows)
    if ivf_class not in COPYABLE or start != n or not copying_pays(
            faiss.extract_index_ivf(template).nlist, n, (s.n_vectors for s, _, _ in by_source.values())):
        return None
    indexes = {key: source.faiss_index for key, (source, _, _) in by_source.items()}
    trained = _trained_state(template)
    if any(not _same_state(_trained_state(index), trained) for index in indexes.values()):
        return None
    out = faiss.clone_index(template)
    ivf = faiss.downcast_index(out)
    packer = ivf.get_CodePacker()
    sources = []
    for key, (_, rows, targets) in by_source.items():
        new_row = np.full(int(indexes[key].ntotal), -1, dtype=np.int64)
        new_row[np.concatenate(rows)] = np.concatenate(targets)
        sources.append((faiss.downcast_index(indexes[key]), new_row))
    total = 0
    for list_no in range(ivf.nlist):  # list by list: only one list's codes are held at a time
        pieces = [piece for source, new_row in sources if (piece := _kept(source, list_no, new_row, packer))]
        if not pieces:
            continue
        ids = np.concatenate([p[0] for p in pieces])
        codes = np.concatenate([p[1] for p in pieces])
        order = np.argsort(ids, kind="stable")  # rows ascending, as an add in row order lists them
        ids, codes = np.ascontiguousarray(ids[order]), codes[order]
        packed = _pack(codes, packer)  # (held by a name: FAISS reads it through a bare pointer)
        ivf.invlists.add_entries(list_no, len(ids), faiss.swig_ptr(ids), faiss.swig_ptr(packed))
        total += len(ids)
    if total != n:  # a source whose lists do not hold each of its rows once: add the vectors instead
        log.warning("copying IVF codes found %d of %d vectors; adding them again", total, n)
        return None
    ivf.ntotal = int(n)
    return out


def _trained_state(index) -> list[np.ndarray] | None:
    """What an IVF index of a copyable class was trained to, as arrays: its class, sizes and
    coding settings, coarse centroids and PQ or scalar-quantizer tables (None for another
    class, a Flat or HNSW segment's say). Equal for two indexes whose codes mean the same."""
    faiss = load_faiss()

    ivf = faiss.downcast_index(index)
    name = type(ivf).__name__
    if name not in COPYABLE or not isinstance(faiss.downcast_index(ivf.quantizer), faiss.IndexFlat):
        return None
    layout = [COPYABLE_ORDER.index(name), ivf.d, ivf.nlist, ivf.code_size, int(ivf.by_residual), ivf.metric_type,
              int(getattr(ivf, "bbs", 0))]
    state = [np.array(layout, dtype=np.int64), faiss_build.ivf_centroids(ivf)]
    if hasattr(ivf, "pq"):
        state += [np.array([ivf.pq.M, ivf.pq.nbits], dtype=np.int64), faiss.vector_to_array(ivf.pq.centroids)]
    if hasattr(ivf, "sq"):
        state += [np.array([ivf.sq.qtype], dtype=np.int64), faiss.vector_to_array(ivf.sq.trained)]
    return state


def _same_state(a: list[np.ndarray] | None, b: list[np.ndarray] | None) -> bool:
    return a is not None and b is not None and len(a) == len(b) and all(
        x.shape == y.shape and np.array_equal(x, y) for x, y in zip(a, b))


def _kept(ivf, list_no: int, new_row: np.ndarray, packer) -> tuple[np.ndarray, np.ndarray] | None:
    """(new rows, flat codes) of the vectors of ``ivf``'s list ``list_no`` that are kept (a new
    row >= 0), or None when there are none."""
    faiss = load_faiss()

    invlists = ivf.invlists
    size = invlists.list_size(list_no)
    if size == 0:
        return None
    ids_ptr = invlists.get_ids(list_no)
    rows = new_row[faiss.rev_swig_ptr(ids_ptr, size)]
    invlists.release_ids(list_no, ids_ptr)
    kept = rows >= 0
    if not kept.any():
        return None
    per_block, block_bytes, code_size = packer.nvec, packer.block_size, packer.code_size
    n_blocks = -(-size // per_block)
    codes_ptr = invlists.get_codes(list_no)
    raw = faiss.rev_swig_ptr(codes_ptr, n_blocks * block_bytes)
    if per_block == 1:
        flat = raw.reshape(size, code_size)[kept]
    else:
        flat = np.empty((n_blocks * per_block, code_size), dtype=np.uint8)
        for b in range(n_blocks):
            packer.unpack_all(faiss.swig_ptr(raw[b * block_bytes:]), faiss.swig_ptr(flat[b * per_block:]))
        flat = flat[:size][kept]
    invlists.release_codes(list_no, codes_ptr)
    return rows[kept], flat


def _pack(codes: np.ndarray, packer) -> np.ndarray:
    """Flat codes [n, code_size] in the lists' layout (blocks of ``packer.nvec`` codes)."""
    faiss = load_faiss()

    per_block = packer.nvec
    if per_block == 1:
        return np.ascontiguousarray(codes)
    n_blocks = -(-len(codes) // per_block)
    flat = np.zeros((n_blocks * per_block, packer.code_size), dtype=np.uint8)
    flat[:len(codes)] = codes
    packed = np.zeros(n_blocks * packer.block_size, dtype=np.uint8)
    for b in range(n_blocks):
        packer.pack_all(faiss.swig_ptr(flat[b * per_block:]), faiss.swig_ptr(packed[b * packer.block_size:]))
    return packed
