"""Small segments of one IVF template, searched as one FAISS index.

Every FAISS call pays a fixed cost for each query token (look-up tables, result heaps, an
OpenMP region), so an index of several small segments, which incremental adds leave until the
merge policy catches up, spent more on calls than on scanning: scifact in 6 segments took
1.97 ms of token retrieval per query against 0.70 ms in one. Segments whose IVF indexes were
trained from one template (equal centroids and codebooks) merge losslessly: FAISS copies their
inverted lists into one in-memory index and a search scans it in one call, with the same
results up to ties at the k' boundary (6 segments: 3.93 -> 2.68 ms p50 at k = 100, one segment
2.4 ms). Segments of over MAX_SEGMENT_VECTORS vectors are searched alone (their scan outweighs
the fixed cost), and a group stops at MAX_GROUP_VECTORS: the copy holds ~32 B per vector (PQ
codes) and takes ~0.3 us per vector, once, at a snapshot's first search or ``warm_up``. A
snapshot's groups depend on its segments alone (a reader that refreshed after each of many adds
groups as a newly opened one: refreshed readers had kept their old groups and grouped only the
new segments, and searched 2x slower with other results); a refresh keeps the merged probe of
a group whose segments are unchanged.
"""
from __future__ import annotations

import logging

import numpy as np

from xtrieve.faiss_loader import load_faiss
from xtrieve.index.faiss_build import list_sizes
from xtrieve.retrieve.probe import TokenProbe

log = logging.getLogger(__name__)

MAX_SEGMENT_VECTORS = 1 << 19
MAX_GROUP_VECTORS = 1 << 21


class SegmentGroup:
    """Several segments' token indexes merged into one: ``members`` (segment numbers, in row
    order), the merged ``probe``, and ``keys[r]``, the document key of merged row r."""

    def __init__(self, members: list[int], probe: TokenProbe, keys: np.ndarray) -> None:
        self.members = members
        self.probe = probe
        self.keys = keys

    def selector(self, allowed: list, vec_to_doc: list[np.ndarray]):
        """(FAISS selector or None for every row, and whether any row is allowed) for the
        members' allowed documents; ``allowed``/``vec_to_doc`` are the members' in order."""
        if all(a.all_allowed for a in allowed):
            return None, True
        if not any(a.n_allowed for a in allowed):
            return None, False
        return row_selector(np.concatenate([a.docs_mask[v] for a, v in zip(allowed, vec_to_doc)])), True


def row_selector(rows: np.ndarray):
    """A FAISS IDSelectorBitmap passing the vector rows where ``rows`` (bool) is True; it holds
    its own bits."""
    faiss = load_faiss()

    bits = np.packbits(rows, bitorder="little")
    selector = faiss.IDSelectorBitmap(len(rows), faiss.swig_ptr(bits))
    selector.referenced_objects = [bits]
    return selector


def core_of(segment):
    """What the readers of one segment in every snapshot share: its SegmentCore (the segment
    itself for readers without one)."""
    return getattr(segment, "core", segment)


def trained_state(index) -> bytes | None:
    """What, beyond the IVF centroids, an index was trained on (its PQ codebooks or scalar
    quantizer ranges), as bytes to compare; None for index types this module does not merge."""
    faiss = load_faiss()

    ivf = faiss.downcast_index(index)
    if not isinstance(ivf, faiss.IndexIVF):
        return None
    parts = [type(ivf).__name__.encode(), str((ivf.code_size, ivf.metric_type, getattr(ivf, "by_residual", None))).encode()]
    for name, field in (("pq", "centroids"), ("sq", "trained")):
        quantizer = getattr(ivf, name, None)
        if quantizer is not None:
            parts.append(faiss.vector_to_array(getattr(quantizer, field)).tobytes())
    return b"|".join(parts)


def form_groups(cores: list, probes: list[TokenProbe],
                reusable: list[tuple[tuple, TokenProbe]]) -> list[tuple[list[int], TokenProbe]]:
    """(segment numbers, merged probe) of each group of a snapshot whose segments have these
    ``cores`` and ``probes``: segments with equal centroids (one shared tensor) and trained state,
    up to the size limits. The groups depend on the snapshot alone, so a reader that refreshed
    searches as a newly opened one does; an earlier snapshot's merged probe (``reusable``: its
    members' cores and probe) serves a group of exactly its segments."""
    earlier = {tuple(id(core) for core in members): probe for members, probe in reusable}
    buckets: dict[tuple, list[int]] = {}
    for no, probe in enumerate(probes):
        if probe.centroids is None or not 0 < probe.ntotal <= MAX_SEGMENT_VECTORS:
            continue
        state = trained_state(probe.index)
        if state is not None:
            buckets.setdefault((id(probe.centroids), state), []).append(no)
    groups = []
    for members in buckets.values():
        sizes = np.cumsum([probes[no].ntotal for no in members])
        members = members[:int(np.searchsorted(sizes, MAX_GROUP_VECTORS, side="right"))]
        if len(members) > 1:
            members = safe_to_merge([probes[no].index for no in members], members,
                                    [_cached_list_sizes(cores[no], probes[no].index) for no in members])
        if len(members) < 2:
            continue
        merged = earlier.get(tuple(id(cores[no]) for no in members))
        if merged is not None:
            merged = merged.sharing(probes[members[0]].centroids)  # this snapshot's tensor
        else:
            merged = merged_probe([probes[no].index for no in members], probes[members[0]].centroids)
        if merged is not None:
            groups.append((members, merged))
    return groups


def safe_to_merge(indexes: list, members: list[int], sizes: list[np.ndarray] | None = None) -> list[int]:
    """The ``members`` (with their ``indexes``) that merge safely, in order; the rest are searched
    alone. FAISS (up to 1.15 at least) appends a block-packed inverted list (fast-scan IVF) to one
    whose length is a non-zero multiple of its block's size in bytes by copying as many bytes as
    the whole merged list needs, past the end of both buffers: the heap is corrupted and the
    process aborts, or worse. A segment is left out when appending it would meet that case.
    ``sizes``: each index's inverted list lengths, if known (else read here)."""
    faiss = load_faiss()

    lists = faiss.downcast_InvertedLists(faiss.extract_index_ivf(indexes[0]).invlists)
    if not isinstance(lists, faiss.BlockInvertedLists):
        return members
    block = int(lists.block_size)
    chosen, total = [], None
    for i, (no, index) in enumerate(zip(members, indexes)):
        lengths = sizes[i] if sizes is not None else list_sizes(index)
        if total is not None and np.any((total > 0) & (total % block == 0) & (lengths > 0)):
            continue
        chosen.append(no)
        total = lengths if total is None else total + lengths
    return chosen


def _cached_list_sizes(core, index) -> np.ndarray:
    """A segment's inverted list lengths, kept by its SegmentCore across snapshots where it has one."""
    cached = getattr(core, "ivf_list_sizes", None)
    return cached if cached is not None else list_sizes(index)


def merged_probe(indexes: list, centroids) -> TokenProbe | None:
    """One probe over the concatenation of ``indexes`` (row ids shifted by the rows before),
    sharing the ``centroids`` tensor; None when FAISS cannot merge them."""
    faiss = load_faiss()

    try:
        merged = faiss.clone_index(indexes[0])
        for other in indexes[1:]:  # merge_from empties its argument: the segments keep theirs
            merged.merge_from(faiss.clone_index(other), merged.ntotal)
    except RuntimeError as exc:  # FAISS: indexes not compatible for a merge
        log.debug("segments searched one by one: %s", exc)
        return None
    probe = TokenProbe(merged)
    return None if probe.centroids is None else probe.sharing(centroids)
