"""Tiered merge policy (Lucene-like): merge merge_factor segments of about one size.

A segment's level is log(live vectors) / log(merge_factor). Levels are grouped from the
largest segment down, each group taking the segments within LEVEL_SPAN of its largest one, so
equal-sized segments never fall on two sides of a fixed boundary (100-document segments of
~4,096 vectors, right at 8^4, piled up by the dozen in two half-filled tiers)."""
from __future__ import annotations

import math

from xtrieve.index.manifest import SegmentEntry

LEVEL_SPAN = 0.75  # (Lucene's LogMergePolicy groups levels so too)
# a segment with more than this share of its documents deleted is rewritten alone when no tier
# is full: a level is a factor of merge_factor, so a large segment with no peers kept up to
# ~7/8 of its documents as tombstoned vectors on disk and in every search's scan until
# compact() (an update-heavy history: 43% of the largest segment dead after 3,000 updates)
DELETES_ALLOWED = 0.33


def live_docs(s: SegmentEntry) -> int:
    return s.n_docs - s.n_deleted


def live_vectors(s: SegmentEntry) -> float:
    return s.n_vectors * live_docs(s) / max(s.n_docs, 1)


def level(s: SegmentEntry, merge_factor: int) -> float:
    return math.log(max(live_vectors(s), 1.0)) / math.log(merge_factor)


def size_groups(segments: list[SegmentEntry], merge_factor: int) -> list[list[int]]:
    """Segment indices in groups of about one size, largest group first, each group's members
    from smallest to largest."""
    order = sorted(range(len(segments)), key=lambda i: -level(segments[i], merge_factor))
    groups: list[list[int]] = []
    while order:
        top = level(segments[order[0]], merge_factor)
        n = next((j for j, i in enumerate(order) if level(segments[i], merge_factor) < top - LEVEL_SPAN), len(order))
        groups.append(order[:n][::-1])
        order = order[n:]
    return groups


def plan_merge(segments: list[SegmentEntry], merge_factor: int, docs_per_segment: int) -> list[int] | None:
    """Indices of segments to merge next (the smallest merge_factor of the smallest full group,
    if together they fit in docs_per_segment; else the segment with the most deleted documents
    among those over DELETES_ALLOWED, rewritten alone), or None."""
    for members in reversed(size_groups(segments, merge_factor)):
        if len(members) < merge_factor:
            continue
        pick = members[:merge_factor]
        if sum(live_docs(segments[i]) for i in pick) <= docs_per_segment:
            return sorted(pick)
    dead = [i for i, s in enumerate(segments)  # (smaller ones merge with their tier soon enough)
            if s.n_docs >= merge_factor and s.n_deleted > DELETES_ALLOWED * s.n_docs]
    if dead:
        return [max(dead, key=lambda i: segments[i].n_deleted)]
    return None
